//! NATS over TLS with a password, against the real server `bash scripts/brokers.sh up` starts
//! for it (127.0.0.1:4223: TLS required, user `eddy`, a password in a file, a server
//! certificate for IP 127.0.0.1 signed by a test CA, all under `$EDDY_BROKERS_DIR/tls`): a JSON
//! lines file copied into a JetStream stream over `tls://`, read back into Parquet (pyarrow),
//! and the failures that retrying cannot fix — a wrong password, a server certificate no
//! trusted CA signed, one that does not name the host connected to — each failing at once with
//! its reason.

#![cfg(feature = "nats")]

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{eddy_copy, pyarrow_ids};

/// Where the TLS server's CA and password are.
fn tls_dir() -> PathBuf {
    let brokers = std::env::var("EDDY_BROKERS_DIR").unwrap_or_else(|_| "/tmp/eddy-brokers".into());
    PathBuf::from(brokers).join("tls")
}

fn require_tls_server() {
    assert!(
        TcpStream::connect_timeout(&"127.0.0.1:4223".parse().unwrap(), Duration::from_secs(2))
            .is_ok(),
        "the NATS TLS server is not reachable at 127.0.0.1:4223: start the test brokers with \
         `bash scripts/brokers.sh up`"
    );
}

/// A stream and subject no other run uses.
fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("TLS{}x{nanos}", std::process::id())
}

/// `tls://` URI of the subject `name.orders` in stream `name` on `host`, with `extra` options.
fn uri(host: &str, name: &str, extra: &str) -> String {
    format!("tls://{host}:4223/{name}.orders?stream={name}&{extra}")
}

fn credentials(password_file: &std::path::Path) -> String {
    let tls = tls_dir();
    format!(
        "ca_file={}&user=eddy&password_file={}",
        tls.join("ca.pem").display(),
        password_file.display()
    )
}

#[test]
fn records_go_through_nats_over_tls_with_a_password_and_back_to_parquet() {
    require_tls_server();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("orders.jsonl");
    let lines: String = (0..200)
        .map(|i| format!("{{\"id\": {i}, \"total\": {i}.5}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let name = unique();
    let creds = credentials(&tls_dir().join("nats-password"));
    let from_file = format!("jsonl://{}", input.display());
    let to_stream = uri("127.0.0.1", &name, &format!("create_stream=true&{creds}"));
    eddy_copy(&["--from", &from_file, "--to", &to_stream]).expect("copy into the TLS stream");

    let out = dir.path().join("pq");
    let from_stream = uri("127.0.0.1", &name, &format!("deliver=all&{creds}"));
    let to_parquet = format!("parquet://{}", out.display());
    eddy_copy(&[
        "--from",
        &from_stream,
        "--to",
        &to_parquet,
        "--idle-exit",
        "2s",
    ])
    .expect("copy out of the TLS stream");
    assert_eq!(pyarrow_ids(&out), (0..200).collect::<Vec<u64>>());
}

#[test]
fn a_wrong_password_and_certificates_that_do_not_verify_fail_at_once_with_the_reason() {
    require_tls_server();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("one.jsonl");
    std::fs::write(&input, "{\"id\": 1}\n").unwrap();
    let from_file = format!("jsonl://{}", input.display());
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let name = unique();
    let right = credentials(&tls_dir().join("nats-password"));
    let no_ca = format!(
        "user=eddy&password_file={}",
        tls_dir().join("nats-password").display()
    );
    let cases = [
        (
            uri("127.0.0.1", &name, &credentials(&wrong)),
            "refused the credentials",
        ),
        (uri("127.0.0.1", &name, &no_ca), "TLS failed"),
        // The certificate names 127.0.0.1, not localhost.
        (uri("localhost", &name, &right), "TLS failed"),
    ];
    for (to, reason) in cases {
        let started = Instant::now();
        let err = eddy_copy(&["--from", &from_file, "--to", &to]).expect_err("the copy fails");
        assert!(err.contains(reason), "{to}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{to}: took {:?} to fail: it retried what retrying cannot fix",
            started.elapsed()
        );
        assert!(
            !err.contains("not-the-password"),
            "a password is shown: {err}"
        );
    }
}
