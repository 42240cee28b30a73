//! MQTT over TLS with a password, against the real broker `bash scripts/brokers.sh up` starts
//! for it (Mosquitto on 127.0.0.1:8883: TLS only, user `eddy`, its password in a file, a server
//! certificate for IP 127.0.0.1 signed by a test CA, all under `$EDDY_BROKERS_DIR/tls`): a JSON
//! lines file published over `mqtts://` and read back, through a persistent session, into
//! Parquet (pyarrow); and the failures that retrying cannot fix — a wrong password, a server
//! certificate no trusted CA signed, one that does not name the host connected to — each
//! failing at once with its reason.

#![cfg(feature = "mqtt")]

mod common;

use std::path::Path;

use common::{
    assert_each_fails_at_once, broker_tls_dir, eddy_copy, pyarrow_ids, require_tls_broker,
    unique_name,
};

const PORT: u16 = 8883;

fn credentials(password_file: &Path) -> String {
    format!(
        "ca_file={}&username=eddy&password_file={}",
        broker_tls_dir().join("ca.pem").display(),
        password_file.display()
    )
}

#[test]
fn records_go_through_mqtt_over_tls_with_a_password_and_back_to_parquet() {
    require_tls_broker("the MQTT TLS broker", PORT);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("orders.jsonl");
    let lines: String = (0..200)
        .map(|i| format!("{{\"id\": {i}, \"total\": {i}.5}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let topic = unique_name("tls-");
    let creds = credentials(&broker_tls_dir().join("nats-password"));
    let from = format!("mqtts://127.0.0.1:{PORT}/{topic}/orders?client_id={topic}&{creds}");
    // The first read creates the persistent session the records then wait in.
    let empty = dir.path().join("empty");
    let to_empty = format!("parquet://{}", empty.display());
    eddy_copy(&["--from", &from, "--to", &to_empty, "--idle-exit", "1s"])
        .expect("subscribe over TLS");
    let to_topic = format!("mqtts://127.0.0.1:{PORT}/{topic}/orders?{creds}");
    let from_file = format!("jsonl://{}", input.display());
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
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let topic = unique_name("tls-");
    let password = broker_tls_dir().join("nats-password");
    let system_cas = format!(
        "tls=true&username=eddy&password_file={}",
        password.display()
    );
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
    ];
    assert_each_fails_at_once(dir.path(), &cases, "not-the-password");
}
