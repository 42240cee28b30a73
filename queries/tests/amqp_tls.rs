//! RabbitMQ over TLS, against the real node `bash scripts/brokers.sh up` starts for it
//! (rabbitmq_tls on 127.0.0.1:5671: AMQPS only, a server certificate for IP 127.0.0.1 signed by
//! a test CA, client certificates checked against that CA, user `eddy` with a password in a
//! file, and the EXTERNAL mechanism taking the user from the client certificate's CN, all under
//! `$EDDY_BROKERS_DIR/tls`). Records published with pika over TLS are read over `amqps://` into
//! Parquet (pyarrow), logged in with a password and with a client certificate (EXTERNAL, the
//! sink's records too); and the failures that retrying cannot fix — a wrong password, a server
//! certificate no trusted CA signed, one that does not name the host connected to, a client
//! certificate the broker does not trust, EXTERNAL without a certificate, a missing key file —
//! each fail at once with their reason.

#![cfg(feature = "amqp")]

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    assert_each_fails_at_once, broker_tls_dir, eddy_copy, orders_jsonl, pyarrow_ids,
    require_tls_broker, unique_name,
};

const PORT: u16 = 5671;

/// pika over TLS, logged in as eddy with the broker's password (read from its file by the
/// script, never on a command line): `publish QUEUE START END` declares `QUEUE` durable and
/// publishes records `{"id": i, "total": i + 0.5}` for i in START..END with publisher confirms;
/// `delete QUEUE` deletes it.
const PIKA: &str = r#"
import json, ssl, sys, pika
port, ca, password_file, command, queue = sys.argv[1:6]
with open(password_file) as f:
    password = f.read().strip()
connection = pika.BlockingConnection(pika.ConnectionParameters(
    host="127.0.0.1", port=int(port),
    ssl_options=pika.SSLOptions(ssl.create_default_context(cafile=ca), "127.0.0.1"),
    credentials=pika.PlainCredentials("eddy", password), connection_attempts=1,
    socket_timeout=5))
channel = connection.channel()
if command == "publish":
    channel.queue_declare(queue=queue, durable=True)
    channel.confirm_delivery()
    for i in range(int(sys.argv[6]), int(sys.argv[7])):
        channel.basic_publish("", queue, json.dumps({"id": i, "total": i + 0.5}),
                              pika.BasicProperties(delivery_mode=2), mandatory=True)
else:
    channel.queue_delete(queue=queue)
connection.close()
"#;

/// Runs [`PIKA`] with `args`; whether it succeeded, and what it said on stderr.
fn pika(args: &[&str]) -> (bool, String) {
    let tls = broker_tls_dir();
    let out = Command::new("python3")
        .args(["-c", PIKA, &PORT.to_string()])
        .arg(tls.join("ca.pem"))
        .arg(tls.join("password"))
        .args(args)
        .output()
        .expect("python3 runs pika (bash scripts/brokers.sh up installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A queue name no other run uses, starting with `prefix`; the queue is deleted when dropped.
struct TestQueue(String);

impl TestQueue {
    fn new(prefix: &str) -> Self {
        TestQueue(unique_name(prefix))
    }

    /// Publishes the records with ids `ids` with pika over TLS.
    fn publish(&self, ids: std::ops::Range<u64>) {
        let (start, end) = (ids.start.to_string(), ids.end.to_string());
        let (published, said) = pika(&["publish", &self.0, &start, &end]);
        assert!(published, "pika could not publish over TLS: {said}");
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        pika(&["delete", &self.0]);
    }
}

/// `amqps://HOST:5671/QUEUE?ca_file=...&OPTIONS`.
fn uri(host: &str, queue: &str, options: &str) -> String {
    let ca = broker_tls_dir().join("ca.pem");
    format!(
        "amqps://{host}:{PORT}/{queue}?ca_file={}&{options}",
        ca.display()
    )
}

/// The password login's options, its password from `password_file`.
fn password(password_file: &Path) -> String {
    format!("user=eddy&password_file={}", password_file.display())
}

/// The EXTERNAL login's options with the client certificate `name`.pem and its key.
fn external(name: &str) -> String {
    let tls = broker_tls_dir();
    format!(
        "auth_mechanism=external&cert_file={}&key_file={}",
        tls.join(format!("{name}.pem")).display(),
        tls.join(format!("{name}-key.pem")).display()
    )
}

/// Reads `from` into Parquet under `dir` until it is idle, and returns the ids read.
fn read_to_parquet(from: &str, dir: &Path) -> Vec<u64> {
    let to = format!("parquet://{}", dir.display());
    eddy_copy(&["--from", from, "--to", &to, "--idle-exit", "2s"]).expect("read over amqps");
    pyarrow_ids(dir)
}

#[test]
fn records_published_with_pika_over_tls_reach_parquet_over_amqps_with_a_password() {
    require_tls_broker("the RabbitMQ TLS node", PORT);
    let queue = TestQueue::new("eddy-tls-");
    queue.publish(0..300);
    let dir = tempfile::tempdir().unwrap();
    let from = uri(
        "127.0.0.1",
        &queue.0,
        &password(&broker_tls_dir().join("password")),
    );
    assert_eq!(
        read_to_parquet(&from, &dir.path().join("pq")),
        (0..300).collect::<Vec<u64>>()
    );
}

#[test]
fn records_go_through_amqps_with_a_client_certificate_as_the_login() {
    require_tls_broker("the RabbitMQ TLS node", PORT);
    let queue = TestQueue::new("eddy-mtls-");
    let dir = tempfile::tempdir().unwrap();
    // Half from pika, half from Eddy's sink logged in by its certificate (EXTERNAL).
    queue.publish(0..150);
    let from_file = orders_jsonl(dir.path(), 150..300);
    let by_certificate = uri("127.0.0.1", &queue.0, &external("client"));
    eddy_copy(&["--from", &from_file, "--to", &by_certificate])
        .expect("publish over amqps with EXTERNAL");
    assert_eq!(
        read_to_parquet(&by_certificate, &dir.path().join("pq")),
        (0..300).collect::<Vec<u64>>()
    );
}

#[test]
fn a_wrong_login_and_certificates_that_do_not_verify_fail_at_once_with_the_reason() {
    require_tls_broker("the RabbitMQ TLS node", PORT);
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let right = password(&broker_tls_dir().join("password"));
    let queue = unique_name("eddy-tls-fail-");
    let rogue_ca = format!(
        "amqps://127.0.0.1:{PORT}/{queue}?ca_file={}&{right}",
        broker_tls_dir().join("rogue-ca.pem").display()
    );
    let no_key = format!(
        "auth_mechanism=external&cert_file={}&key_file={}",
        broker_tls_dir().join("client.pem").display(),
        dir.path().join("no-such-key.pem").display()
    );
    let at = format!("RabbitMQ at 127.0.0.1:{PORT}");
    let cases = [
        (
            uri("127.0.0.1", &queue, &password(&wrong)),
            format!("{at} refused user 'eddy'"),
        ),
        (rogue_ca, format!("{at}: TLS failed")),
        // The certificate names 127.0.0.1, not localhost.
        (
            uri("localhost", &queue, &right),
            format!("RabbitMQ at localhost:{PORT}: TLS failed"),
        ),
        // A client certificate from a CA the broker does not trust: it ends the handshake.
        (
            uri("127.0.0.1", &queue, &external("rogue-client")),
            format!("{at}: TLS failed"),
        ),
        (
            uri("127.0.0.1", &queue, "auth_mechanism=external"),
            "auth_mechanism=external logs in with a client certificate".to_string(),
        ),
        (
            uri("127.0.0.1", &queue, &no_key),
            format!("{at}: key_file="),
        ),
    ];
    let cases: Vec<(String, &str)> = cases
        .iter()
        .map(|(to, reason)| (to.clone(), reason.as_str()))
        .collect();
    assert_each_fails_at_once(dir.path(), &cases, "not-the-password");
}
