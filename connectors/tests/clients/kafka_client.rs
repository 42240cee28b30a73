//! kafka-python's client (kafka.py beside this file) as the `eddy copy` tests drive it
//! (queries/tests/copy_kafka.rs, queries/tests/graceful_stop.rs), through `#[path]`.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// The broker `bash scripts/brokers.sh up` starts.
pub const BROKER: &str = "127.0.0.1:9092";

/// Fails the test, saying how to start the broker, when Kafka does not answer.
pub fn require_broker() {
    assert!(
        TcpStream::connect_timeout(&BROKER.parse().unwrap(), Duration::from_secs(2)).is_ok(),
        "Kafka is not reachable at {BROKER}: start the test brokers with `bash scripts/brokers.sh up`"
    );
}

/// A topic or group name no other test (or run) uses. Topics are kept: tansu 0.6.0 deletes
/// every topic when asked to delete one.
pub fn unique(what: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("eddy-copy-{what}-{}-{now}", std::process::id())
}

/// Runs kafka-python's client and returns what it printed.
pub fn client(args: &[&str]) -> Value {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../connectors/tests/clients/kafka.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "kafka.py {args:?} failed (is the broker up? bash scripts/brokers.sh up): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("kafka.py prints one JSON object")
}
