//! NATS over TLS with each kind of credentials, against the real servers `bash scripts/brokers.sh
//! up` starts for them (all TLS only, with a server certificate for IP 127.0.0.1 signed by a test
//! CA, everything under `$EDDY_BROKERS_DIR/tls`):
//! - 127.0.0.1:4223: user `eddy` with a password from a file, or a user NKey (`nkey.seed`);
//! - 127.0.0.1:4224: mutual TLS (a client certificate signed by the test CA) and a token;
//! - 127.0.0.1:4225: decentralised auth, an operator and an account preloaded, a `.creds` file.
//!
//! For each, a JSON lines file is copied into a JetStream stream and read back into Parquet
//! (pyarrow). The failures that retrying cannot fix — a wrong password or token, credentials the
//! server does not know, a server certificate no trusted CA signed, one that does not name the
//! host connected to, a missing or untrusted client certificate — each fail at once with their
//! reason.

#![cfg(feature = "nats")]

mod common;

use std::path::Path;

use common::{
    assert_each_fails_at_once, broker_tls_dir, client_cert, eddy_copy, orders_jsonl, pyarrow_ids,
    require_tls_broker, unique_name,
};

/// TLS, and a password or an NKey.
const PASSWORD_PORT: u16 = 4223;
/// Mutual TLS and a token.
const MUTUAL_TLS_PORT: u16 = 4224;
/// Operator mode: `.creds` files.
const CREDS_PORT: u16 = 4225;

/// `tls://` URI of the subject `name.orders` in stream `name` on `host:port`, trusting the test
/// CA, with `extra` options.
fn uri(host: &str, port: u16, name: &str, extra: &str) -> String {
    uri_as("tls", host, port, name, extra)
}

/// [`uri`] with another scheme.
fn uri_as(scheme: &str, host: &str, port: u16, name: &str, extra: &str) -> String {
    format!(
        "{scheme}://{host}:{port}/{name}.orders?stream={name}&ca_file={}&{extra}",
        tls("ca.pem")
    )
}

/// A file of `scripts/brokers.sh`'s TLS directory, as a URI option value.
fn tls(file: &str) -> String {
    broker_tls_dir().join(file).display().to_string()
}

fn password(file: &Path) -> String {
    format!("user=eddy&password_file={}", file.display())
}

/// Copies 200 records into a new stream on `port` and back out into Parquet, with `credentials`
/// both ways, and checks that every record came back.
fn round_trip(port: u16, credentials: &str) {
    round_trip_as("tls", port, credentials);
}

/// [`round_trip`] with URIs of `scheme`.
fn round_trip_as(scheme: &str, port: u16, credentials: &str) {
    require_tls_broker("the NATS TLS server", port);
    let dir = tempfile::tempdir().unwrap();
    let from_file = orders_jsonl(dir.path(), 0..200);
    let name = unique_name("TLS");
    let to_stream = uri_as(
        scheme,
        "127.0.0.1",
        port,
        &name,
        &format!("create_stream=true&{credentials}"),
    );
    eddy_copy(&["--from", &from_file, "--to", &to_stream]).expect("copy into the TLS stream");

    let out = dir.path().join("pq");
    let from_stream = uri_as(
        scheme,
        "127.0.0.1",
        port,
        &name,
        &format!("deliver=all&{credentials}"),
    );
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
fn records_go_through_nats_over_tls_with_a_password_and_back_to_parquet() {
    round_trip(PASSWORD_PORT, &password(&broker_tls_dir().join("password")));
}

#[test]
fn a_server_that_requires_tls_gets_it_on_a_nats_uri() {
    round_trip_as(
        "nats",
        PASSWORD_PORT,
        &password(&broker_tls_dir().join("password")),
    );
}

#[test]
fn records_go_through_nats_over_tls_with_an_nkey_seed() {
    round_trip(PASSWORD_PORT, &format!("nkey_file={}", tls("nkey.seed")));
}

#[test]
fn records_go_through_nats_with_mutual_tls_and_a_token() {
    round_trip(
        MUTUAL_TLS_PORT,
        &format!("{}&token_file={}", client_cert("client"), tls("token")),
    );
}

#[test]
fn records_go_through_nats_with_a_creds_file() {
    round_trip(CREDS_PORT, &format!("creds_file={}", tls("user.creds")));
}

#[test]
fn wrong_credentials_and_certificates_that_do_not_verify_fail_at_once_with_the_reason() {
    for port in [PASSWORD_PORT, MUTUAL_TLS_PORT, CREDS_PORT] {
        require_tls_broker("the NATS TLS server", port);
    }
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-secret");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let name = unique_name("TLS");
    let right = password(&broker_tls_dir().join("password"));
    let token = format!("token_file={}", tls("token"));
    let mutual = |cert: &str| format!("{}&{token}", client_cert(cert));
    let cases = [
        (
            uri("127.0.0.1", PASSWORD_PORT, &name, &password(&wrong)),
            "refused the credentials",
        ),
        // A creds file the password server has no operator for.
        (
            uri(
                "127.0.0.1",
                PASSWORD_PORT,
                &name,
                &format!("creds_file={}", tls("user.creds")),
            ),
            "refused the credentials",
        ),
        // An NKey the creds server's account did not sign.
        (
            uri(
                "127.0.0.1",
                CREDS_PORT,
                &name,
                &format!("nkey_file={}", tls("nkey.seed")),
            ),
            "refused the credentials",
        ),
        (
            uri(
                "127.0.0.1",
                MUTUAL_TLS_PORT,
                &name,
                &format!("{}&token_file={}", client_cert("client"), wrong.display()),
            ),
            "refused the credentials",
        ),
        // No client certificate, and one from a CA the server does not trust.
        (
            uri("127.0.0.1", MUTUAL_TLS_PORT, &name, &token),
            "TLS failed",
        ),
        (
            uri("127.0.0.1", MUTUAL_TLS_PORT, &name, &mutual("rogue-client")),
            "TLS failed",
        ),
        // A server certificate signed by a CA the client does not trust.
        (
            format!(
                "tls://127.0.0.1:{PASSWORD_PORT}/{name}.orders?stream={name}&ca_file={}&{right}",
                tls("rogue-ca.pem")
            ),
            "TLS failed",
        ),
        // The certificate names 127.0.0.1, not localhost.
        (uri("localhost", PASSWORD_PORT, &name, &right), "TLS failed"),
    ];
    assert_each_fails_at_once(dir.path(), &cases, "not-the-password");
}
