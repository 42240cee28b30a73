//! The paho-mqtt client (mqtt.py beside this file) as the MQTT tests drive it, shared by the
//! connector's tests (connectors/tests/mqtt.rs) and `eddy copy`'s (queries/tests/copy_mqtt.rs)
//! through `#[path]`.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

/// The Mosquitto `bash scripts/brokers.sh up` starts.
pub const BROKER: &str = "127.0.0.1:1883";

/// The paho-mqtt client script.
const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../connectors/tests/clients/mqtt.py"
);

/// Fails the test, saying how to start the broker, when Mosquitto does not answer.
pub fn require_mosquitto() {
    if let Err(e) = TcpStream::connect_timeout(&BROKER.parse().unwrap(), Duration::from_secs(2)) {
        panic!("no MQTT broker at {BROKER} ({e}): start it with `bash scripts/brokers.sh up`");
    }
}

/// A topic no other test (or run) uses: `eddy-test/PID-N/WHAT`.
pub fn unique(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // The time too: a run killed before cleaning up leaves its sessions, and process ids come
    // back.
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!(
        "eddy-test/{}-{millis}-{}/{what}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn python(args: &[&str]) -> Command {
    let mut command = Command::new("python3");
    command.arg(CLIENT).args(args);
    command
}

/// The JSON the client printed last, once it exited successfully.
fn answer(ok: bool, stdout: &[u8], stderr: &[u8], args: &[&str]) -> Value {
    let stdout = String::from_utf8_lossy(stdout);
    assert!(
        ok,
        "mqtt.py {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("mqtt.py {args:?} printed {stdout:?}: {e}"))
}

/// Runs the client to the end and returns its JSON answer.
pub fn client(args: &[&str]) -> Value {
    let out = python(args)
        .output()
        .expect("python3 runs (paho-mqtt comes with scripts/brokers.sh up)");
    answer(out.status.success(), &out.stdout, &out.stderr, args)
}

/// Makes the broker discard the persistent session `client_id`.
pub fn forget(client_id: &str) {
    client(&["forget", "--client-id", client_id]);
}

/// A client running beside the test.
pub struct Running {
    child: Child,
    stdout: BufReader<ChildStdout>,
    args: Vec<String>,
}

impl Running {
    /// Starts the client.
    pub fn spawn(args: &[&str]) -> Self {
        let mut child = python(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Running {
            child,
            stdout,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Starts a `consume`, returning once the broker confirmed its subscription.
    pub fn subscribed(args: &[&str]) -> Self {
        let mut running = Running::spawn(args);
        let mut line = String::new();
        running.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "mqtt.py {args:?} did not subscribe");
        running
    }

    /// Waits for the client to end and returns its JSON answer.
    pub fn finish(mut self) -> Value {
        let mut rest = Vec::new();
        self.stdout.read_to_end(&mut rest).unwrap();
        let out = self.child.wait_with_output().unwrap();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        answer(out.status.success(), &rest, &out.stderr, &args)
    }
}

/// A JSON list of ids, sorted.
pub fn ids(value: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = value
        .as_array()
        .unwrap_or_else(|| panic!("{value} is not a list of ids"))
        .iter()
        .map(|id| id.as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

/// Fails unless `got` (sorted) is `0..n`, each once, saying what is missing or twice.
pub fn assert_each_once(got: &[u64], n: u64, what: &str) {
    if got.iter().copied().eq(0..n) {
        return;
    }
    let missing: Vec<u64> = (0..n).filter(|id| got.binary_search(id).is_err()).collect();
    let twice: Vec<u64> = got
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    panic!(
        "{what}: {} records for {n} ids; missing {} (first {:?}), twice {} (first {:?})",
        got.len(),
        missing.len(),
        &missing[..missing.len().min(10)],
        twice.len(),
        &twice[..twice.len().min(10)]
    );
}
