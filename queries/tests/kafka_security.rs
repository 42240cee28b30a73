//! Kafka with TLS and SASL, against the brokers `bash scripts/brokers.sh up` starts for it (TLS
//! material and the password of user `eddy` under `$EDDY_BROKERS_DIR/tls`; the server
//! certificate names IP 127.0.0.1 only): tansu 0.6.0, which checks SCRAM-SHA-256 and -512
//! itself, with stunnel in front of it for TLS, since tansu's own TLS is not wired:
//! - 127.0.0.1:9093 SSL with mutual TLS (stunnel requires a client certificate signed by the CA),
//! - 127.0.0.1:9094 SASL_PLAINTEXT (SCRAM),
//! - 127.0.0.1:9095 SASL_SSL (SCRAM over TLS).
//!
//! Each way, records move end to end: `eddy copy` writes a JSON lines file to a new topic (the
//! sink), kafka-python publishes more records to it with the same security, and `eddy copy`
//! reads the topic into Parquet (the source), read back with pyarrow. And the failures that
//! retrying cannot fix — a wrong password, a mechanism the broker does not take, a server
//! certificate no trusted CA signed, one that does not name the host connected to, a client
//! certificate missing or from an untrusted CA, a missing key file — each fail at once with
//! their reason. tansu offers no PLAIN, so no PLAIN password is checked here.

#![cfg(feature = "kafka")]

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    assert_each_fails_at_once, broker_tls_dir, eddy_copy, orders_jsonl, pyarrow_ids,
    require_tls_broker, trusting_ca_with_cert, unique_name,
};

/// SSL with mutual TLS.
const MUTUAL_TLS_PORT: u16 = 9093;
/// SASL_PLAINTEXT with SCRAM.
const SASL_PORT: u16 = 9094;
/// SASL_SSL with SCRAM.
const SASL_TLS_PORT: u16 = 9095;

/// User `eddy` with the password in `password_file`, by `mechanism`.
fn login(mechanism: &str, password_file: &Path) -> String {
    format!(
        "sasl_mechanism={mechanism}&user=eddy&password_file={}",
        password_file.display()
    )
}

/// SCRAM in plain text (the protocol must be named: a password goes over TLS unless told).
fn sasl_plaintext(mechanism: &str, password_file: &Path) -> String {
    format!(
        "security_protocol=SASL_PLAINTEXT&{}",
        login(mechanism, password_file)
    )
}

/// SCRAM over TLS (what `user=` means), trusting the test CA.
fn sasl_ssl(mechanism: &str, password_file: &Path) -> String {
    format!(
        "ca_file={}&{}",
        broker_tls_dir().join("ca.pem").display(),
        login(mechanism, password_file)
    )
}

fn password() -> std::path::PathBuf {
    broker_tls_dir().join("password")
}

/// kafka-python publishing `{"id": i}` for `i` in `first..first+n` to a topic, with the
/// connection settings of a JSON object (kafka-python's own names), waiting for every
/// acknowledgement.
const PUBLISH: &str = r#"
import json, sys
from kafka import KafkaProducer
settings, topic, first, n = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if "password_file" in settings:
    with open(settings.pop("password_file")) as f:
        settings["sasl_plain_password"] = f.read().strip()
producer = KafkaProducer(bootstrap_servers=settings.pop("bootstrap"), acks="all", **settings)
for i in range(first, first + n):
    producer.send(topic, json.dumps({"id": i}).encode()).get(timeout=30)
producer.close()
"#;

/// Publishes ids `first..first+n` to `topic` with kafka-python, connected as `settings` says.
fn publish(settings: &serde_json::Value, topic: &str, first: u64, n: u64) {
    let out = Command::new("python3")
        .args(["-c", PUBLISH, &settings.to_string(), topic])
        .args([first.to_string(), n.to_string()])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "kafka-python could not publish to {topic} ({settings}; is kafka-python installed? bash \
         scripts/brokers.sh up): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Adds the test CA to kafka-python's settings.
fn python_tls(settings: &mut serde_json::Value) {
    settings["ssl_cafile"] = broker_tls_dir().join("ca.pem").display().to_string().into();
}

/// Records through `port` with the options `security` both ways: 100 written by `eddy copy`
/// (which creates the topic), 100 more by kafka-python (connected as `python` says), all 200
/// read back by `eddy copy` into Parquet.
fn round_trip(port: u16, security: &str, mut python: serde_json::Value) {
    require_tls_broker("the Kafka TLS/SASL broker", port);
    let dir = tempfile::tempdir().unwrap();
    let from_file = orders_jsonl(dir.path(), 0..100);
    let topic = unique_name("secure");
    let to_topic = format!("kafka://127.0.0.1:{port}/{topic}?{security}");
    eddy_copy(&["--from", &from_file, "--to", &to_topic]).expect("eddy writes to the topic");

    python["bootstrap"] = format!("127.0.0.1:{port}").into();
    publish(&python, &topic, 100, 100);

    let out = dir.path().join("pq");
    let from_topic = format!(
        "kafka://127.0.0.1:{port}/{topic}?start=earliest&group={}&{security}",
        unique_name("g")
    );
    let to_parquet = format!("parquet://{}", out.display());
    eddy_copy(&[
        "--from",
        &from_topic,
        "--to",
        &to_parquet,
        "--idle-exit",
        "2s",
    ])
    .expect("eddy reads the topic");
    assert_eq!(pyarrow_ids(&out), (0..200).collect::<Vec<u64>>());
}

/// kafka-python's settings for SASL user `eddy` with the test password.
fn python_sasl(protocol: &str, mechanism: &str) -> serde_json::Value {
    serde_json::json!({
        "security_protocol": protocol,
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "eddy",
        "password_file": password().display().to_string(),
    })
}

#[test]
fn records_go_through_kafka_with_mutual_tls() {
    let tls = broker_tls_dir();
    let mut python = serde_json::json!({
        "security_protocol": "SSL",
        "ssl_certfile": tls.join("client.pem").display().to_string(),
        "ssl_keyfile": tls.join("client-key.pem").display().to_string(),
    });
    python_tls(&mut python);
    round_trip(MUTUAL_TLS_PORT, &trusting_ca_with_cert("client"), python);
}

#[test]
fn records_go_through_kafka_with_scram_sha_256() {
    round_trip(
        SASL_PORT,
        &sasl_plaintext("SCRAM-SHA-256", &password()),
        python_sasl("SASL_PLAINTEXT", "SCRAM-SHA-256"),
    );
}

#[test]
fn records_go_through_kafka_with_scram_sha_512() {
    round_trip(
        SASL_PORT,
        &sasl_plaintext("SCRAM-SHA-512", &password()),
        python_sasl("SASL_PLAINTEXT", "SCRAM-SHA-512"),
    );
}

#[test]
fn records_go_through_kafka_with_scram_over_tls() {
    let mut python = python_sasl("SASL_SSL", "SCRAM-SHA-512");
    python_tls(&mut python);
    round_trip(
        SASL_TLS_PORT,
        &sasl_ssl("SCRAM-SHA-512", &password()),
        python,
    );
}

#[test]
fn wrong_credentials_and_certificates_that_do_not_verify_fail_at_once_with_the_reason() {
    for port in [MUTUAL_TLS_PORT, SASL_PORT, SASL_TLS_PORT] {
        require_tls_broker("the Kafka TLS/SASL broker", port);
    }
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let topic = unique_name("secure");
    let tls = broker_tls_dir();
    let at =
        |host: &str, port: u16, options: String| format!("kafka://{host}:{port}/{topic}?{options}");
    let refused = "refused the credentials";
    let tls_failed = "TLS failed";
    let cases = [
        // Wrong passwords, checked by SCRAM.
        (
            at(
                "127.0.0.1",
                SASL_PORT,
                sasl_plaintext("SCRAM-SHA-256", &wrong),
            ),
            refused,
        ),
        (
            at(
                "127.0.0.1",
                SASL_TLS_PORT,
                sasl_ssl("SCRAM-SHA-512", &wrong),
            ),
            refused,
        ),
        // tansu offers SCRAM only.
        (
            at("127.0.0.1", SASL_PORT, sasl_plaintext("PLAIN", &password())),
            "does not take the SASL mechanism",
        ),
        (
            at(
                "127.0.0.1",
                SASL_PORT,
                sasl_plaintext("GSSAPI", &password()),
            ),
            "is not a SASL mechanism",
        ),
        // A CA that did not sign the server's certificate; the system's CAs, which did not
        // either; a host name the certificate does not hold (it names 127.0.0.1).
        (
            at(
                "127.0.0.1",
                SASL_TLS_PORT,
                format!(
                    "ca_file={}&{}",
                    tls.join("rogue-ca.pem").display(),
                    login("SCRAM-SHA-512", &password())
                ),
            ),
            tls_failed,
        ),
        (
            at(
                "127.0.0.1",
                SASL_TLS_PORT,
                login("SCRAM-SHA-512", &password()),
            ),
            tls_failed,
        ),
        (
            at(
                "localhost",
                SASL_TLS_PORT,
                sasl_ssl("SCRAM-SHA-512", &password()),
            ),
            tls_failed,
        ),
        (
            at(
                "localhost",
                MUTUAL_TLS_PORT,
                trusting_ca_with_cert("client"),
            ),
            tls_failed,
        ),
        // Mutual TLS without a client certificate, with one from a CA the broker does not
        // trust, and with a key file that is not there.
        (
            at(
                "127.0.0.1",
                MUTUAL_TLS_PORT,
                format!("ca_file={}", tls.join("ca.pem").display()),
            ),
            tls_failed,
        ),
        (
            at(
                "127.0.0.1",
                MUTUAL_TLS_PORT,
                trusting_ca_with_cert("rogue-client"),
            ),
            tls_failed,
        ),
        (
            at(
                "127.0.0.1",
                MUTUAL_TLS_PORT,
                format!(
                    "ca_file={}&cert_file={}&key_file={}",
                    tls.join("ca.pem").display(),
                    tls.join("client.pem").display(),
                    dir.path().join("no-such-key.pem").display()
                ),
            ),
            "does not exist",
        ),
    ];
    assert_each_fails_at_once(dir.path(), &cases, "not-the-password");

    // The source fails as fast, on a topic that exists.
    let to_topic = at(
        "127.0.0.1",
        SASL_PORT,
        sasl_plaintext("SCRAM-SHA-256", &password()),
    );
    let input = dir.path().join("one.jsonl");
    let from_file = format!("jsonl://{}", input.display());
    eddy_copy(&["--from", &from_file, "--to", &to_topic]).expect("the right password works");
    let started = std::time::Instant::now();
    let from_topic = at(
        "127.0.0.1",
        SASL_PORT,
        sasl_plaintext("SCRAM-SHA-256", &wrong),
    );
    let err = eddy_copy(&["--from", &from_topic, "--to", "jsonl:///-"])
        .expect_err("a wrong password fails the source");
    assert!(
        err.contains(refused) && err.contains("kafka source 127.0.0.1:9094"),
        "{err}"
    );
    assert!(!err.contains("not-the-password"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}
