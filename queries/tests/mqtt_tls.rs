//! MQTT over TLS, against the real broker `bash scripts/brokers.sh up` starts for it (Mosquitto,
//! TLS only, a server certificate for IP 127.0.0.1 signed by a test CA, all under
//! `$EDDY_BROKERS_DIR/tls`): on 127.0.0.1:8883 user `eddy` with its password in a file, on
//! 127.0.0.1:8884 mutual TLS, the client certificate's CN being the user. Each way, a JSON lines
//! file is published over `mqtts://` and read back, through a persistent session, into Parquet
//! (pyarrow); and the failures that retrying cannot fix — a wrong password, a server certificate
//! no trusted CA signed, one that does not name the host connected to, a client certificate
//! missing or from an untrusted CA — each fail at once with their reason.

#![cfg(feature = "mqtt")]

mod common;

use std::path::Path;

use common::{
    assert_each_fails_at_once, broker_tls_dir, eddy_copy, orders_jsonl, pyarrow_ids,
    require_tls_broker, trusting_ca_with_cert, unique_name,
};

/// TLS and a password.
const PORT: u16 = 8883;
/// Mutual TLS.
const MUTUAL_TLS_PORT: u16 = 8884;

fn credentials(password_file: &Path) -> String {
    format!(
        "ca_file={}&user=eddy&password_file={}",
        broker_tls_dir().join("ca.pem").display(),
        password_file.display()
    )
}

#[test]
fn records_go_through_mqtt_over_tls_with_a_password_and_back_to_parquet() {
    round_trip(PORT, &credentials(&broker_tls_dir().join("password")));
}

#[test]
fn records_go_through_mqtt_with_mutual_tls() {
    round_trip(MUTUAL_TLS_PORT, &trusting_ca_with_cert("client"));
}

/// Publishes 200 records to a new topic on `port` and reads them back through a persistent
/// session into Parquet, with `creds` both ways, and checks that every record came back.
fn round_trip(port: u16, creds: &str) {
    require_tls_broker("the MQTT TLS broker", port);
    let dir = tempfile::tempdir().unwrap();
    let from_file = orders_jsonl(dir.path(), 0..200);
    let topic = unique_name("tls-");
    let from = format!("mqtts://127.0.0.1:{port}/{topic}/orders?client_id={topic}&{creds}");
    // The first read creates the persistent session the records then wait in.
    let empty = dir.path().join("empty");
    let to_empty = format!("parquet://{}", empty.display());
    eddy_copy(&["--from", &from, "--to", &to_empty, "--idle-exit", "1s"])
        .expect("subscribe over TLS");
    let to_topic = format!("mqtts://127.0.0.1:{port}/{topic}/orders?{creds}");
    eddy_copy(&["--from", &from_file, "--to", &to_topic]).expect("publish over TLS");
    let out = dir.path().join("pq");
    let to_parquet = format!("parquet://{}", out.display());
    eddy_copy(&["--from", &from, "--to", &to_parquet, "--idle-exit", "2s"])
        .expect("read back over TLS");
    assert_eq!(pyarrow_ids(&out), (0..200).collect::<Vec<u64>>());
}

#[test]
fn a_wrong_password_and_certificates_that_do_not_verify_fail_at_once_with_the_reason() {
    require_tls_broker("the MQTT TLS broker", PORT);
    require_tls_broker("the MQTT mutual TLS listener", MUTUAL_TLS_PORT);
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let topic = unique_name("tls-");
    let password = broker_tls_dir().join("password");
    let system_cas = format!("tls=true&user=eddy&password_file={}", password.display());
    let cases = [
        (
            format!("mqtts://127.0.0.1:{PORT}/{topic}?{}", credentials(&wrong)),
            "refused the connection",
        ),
        (
            format!("mqtt://127.0.0.1:{PORT}/{topic}?{system_cas}"),
            "TLS with the MQTT broker",
        ),
        // The certificate names 127.0.0.1, not localhost.
        (
            format!(
                "mqtts://localhost:{PORT}/{topic}?{}",
                credentials(&password)
            ),
            "TLS with the MQTT broker",
        ),
        // No client certificate, and one from a CA the broker does not trust.
        (
            format!(
                "mqtts://127.0.0.1:{MUTUAL_TLS_PORT}/{topic}?ca_file={}",
                broker_tls_dir().join("ca.pem").display()
            ),
            "TLS with the MQTT broker",
        ),
        (
            format!(
                "mqtts://127.0.0.1:{MUTUAL_TLS_PORT}/{topic}?{}",
                trusting_ca_with_cert("rogue-client")
            ),
            "TLS with the MQTT broker",
        ),
    ];
    assert_each_fails_at_once(dir.path(), &cases, "not-the-password");
}
