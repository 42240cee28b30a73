//! The pika client (amqp.py beside this file) as the RabbitMQ tests drive it, shared by the
//! connector's tests (connectors/tests/amqp.rs) and `eddy copy`'s (queries/tests/copy_amqp.rs)
//! through `#[path]`.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

/// The broker `bash scripts/brokers.sh up` starts.
pub const BROKER: &str = "127.0.0.1:5672";

/// The pika client script.
pub const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../connectors/tests/clients/amqp.py"
);

/// Fails the test, saying how to start the broker, when RabbitMQ does not answer.
pub fn require_broker() {
    if TcpStream::connect_timeout(&BROKER.parse().unwrap(), Duration::from_secs(2)).is_err() {
        panic!("RabbitMQ is not reachable on {BROKER}: run `bash scripts/brokers.sh up`");
    }
}

/// A queue name no other test (or run) uses; deleted when dropped.
pub struct TestQueue(pub String);

impl TestQueue {
    /// A new name, ending in `tag`.
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // The time too: a run killed before cleaning up leaves its queues, and process ids
        // come back.
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        TestQueue(format!(
            "eddy-test-{}-{millis}-{n}-{tag}",
            std::process::id()
        ))
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let _ = Command::new("python3")
            .args([CLIENT, "delete", &self.0])
            .output();
    }
}

/// Runs the pika client with `args` (and `stdin`), returning its JSON answer.
pub fn client(args: &[&str], stdin: &str) -> Value {
    let mut child = Command::new("python3")
        .arg(CLIENT)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs the pika client (bash scripts/brokers.sh up installs pika)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "amqp.py {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "amqp.py {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Reads up to `max` messages from `queue` with pika (waiting 3 s at most for each), as
/// `{"body", "delivery_mode", "timestamp", "content_type", "message_id"}` objects.
pub fn consume(queue: &TestQueue, max: u64) -> Vec<Value> {
    let answer = client(
        &["consume", &queue.0, &max.to_string(), "--timeout", "3"],
        "",
    );
    answer["messages"].as_array().cloned().unwrap_or_default()
}
