//! NATS over TLS with a password, against the real server `bash scripts/brokers.sh up` starts
//! for it (127.0.0.1:4223: TLS required, user `eddy`, a password in a file, a server
//! certificate for IP 127.0.0.1 signed by a test CA, all under `$EDDY_BROKERS_DIR/tls`): a JSON
//! lines file copied into a JetStream stream over `tls://`, read back into Parquet (pyarrow),
//! and the failures that retrying cannot fix — a wrong password, a server certificate no
//! trusted CA signed, one that does not name the host connected to — each failing at once with
//! its reason.

#![cfg(feature = "nats")]

mod common;

use std::path::Path;

use common::{
    assert_each_fails_at_once, broker_tls_dir, eddy_copy, pyarrow_ids, require_tls_broker,
    unique_name,
};

const PORT: u16 = 4223;

/// `tls://` URI of the subject `name.orders` in stream `name` on `host`, with `extra` options.
fn uri(host: &str, name: &str, extra: &str) -> String {
    format!("tls://{host}:{PORT}/{name}.orders?stream={name}&{extra}")
}

fn credentials(password_file: &Path) -> String {
    format!(
        "ca_file={}&user=eddy&password_file={}",
        broker_tls_dir().join("ca.pem").display(),
        password_file.display()
    )
}

#[test]
fn records_go_through_nats_over_tls_with_a_password_and_back_to_parquet() {
    require_tls_broker("the NATS TLS server", PORT);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("orders.jsonl");
    let lines: String = (0..200)
        .map(|i| format!("{{\"id\": {i}, \"total\": {i}.5}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let name = unique_name("TLS");
    let creds = credentials(&broker_tls_dir().join("nats-password"));
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
    require_tls_broker("the NATS TLS server", PORT);
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let name = unique_name("TLS");
    let password = broker_tls_dir().join("nats-password");
    let no_ca = format!("user=eddy&password_file={}", password.display());
    let cases = [
        (
            uri("127.0.0.1", &name, &credentials(&wrong)),
            "refused the credentials",
        ),
        (uri("127.0.0.1", &name, &no_ca), "TLS failed"),
        // The certificate names 127.0.0.1, not localhost.
        (
            uri("localhost", &name, &credentials(&password)),
            "TLS failed",
        ),
    ];
    assert_each_fails_at_once(dir.path(), &cases, "not-the-password");
}
