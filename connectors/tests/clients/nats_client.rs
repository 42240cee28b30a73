//! The nats-py client (nats.py beside this file) as the NATS tests drive it, shared by the
//! connector's tests (connectors/tests/nats.rs) and `eddy copy`'s (queries/tests/copy_nats.rs)
//! through `#[path]`.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

/// The server `bash scripts/brokers.sh up` starts.
pub const ADDRESS: &str = "127.0.0.1:4222";

/// The nats-py client script.
pub const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../connectors/tests/clients/nats.py"
);

/// Fails the test, saying how to start the server, when NATS does not answer.
pub fn require_nats() {
    if TcpStream::connect_timeout(&ADDRESS.parse().unwrap(), Duration::from_secs(2)).is_err() {
        panic!("NATS is not reachable at {ADDRESS}: run `bash scripts/brokers.sh up`");
    }
}

/// A name no other test (or run) uses: `PREFIX_PID_MILLIS_N` (the time, because a run killed
/// before cleaning up leaves its streams, and process ids come back).
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        millis(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// A subject no other test uses: `eddy.test.PID.N`.
pub fn subject() -> String {
    unique("eddy.test").replace('_', ".")
}

/// Runs the client to completion; its JSON answer (the last line of its output).
pub fn client(args: &[&str]) -> Value {
    let output = Command::new("python3")
        .arg(CLIENT)
        .args(args)
        .output()
        .expect("python3 runs");
    answer(
        output.status.success(),
        &output.stdout,
        &output.stderr,
        args,
    )
}

fn answer(ok: bool, stdout: &[u8], stderr: &[u8], args: &[&str]) -> Value {
    let stdout = String::from_utf8_lossy(stdout);
    assert!(
        ok,
        "nats.py {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("nats.py {args:?} said {last:?}: {e}"))
}

/// A client running in the background.
pub struct Running {
    child: Child,
    stdout: BufReader<ChildStdout>,
    args: Vec<String>,
}

impl Running {
    /// Starts the client with `args`.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new("python3")
            .arg(CLIENT)
            .args(args)
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

    /// Starts a consuming client and waits until it says it is subscribed.
    pub fn subscribed(args: &[&str]) -> Self {
        let mut running = Running::start(args);
        let mut line = String::new();
        running.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), r#"{"ready": true}"#, "nats.py {args:?}");
        running
    }

    /// Waits for the client to finish; its JSON answer.
    pub fn finish(mut self) -> Value {
        let mut rest = Vec::new();
        self.stdout.read_to_end(&mut rest).unwrap();
        let output = self.child.wait_with_output().unwrap();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        answer(output.status.success(), &rest, &output.stderr, &args)
    }
}

/// A JetStream stream for one test, removed when the test ends.
pub struct Stream {
    /// The stream's name.
    pub name: String,
    /// The subject it is bound to.
    pub subject: String,
}

impl Stream {
    /// A new stream on a new subject, created by the outside client.
    pub fn create() -> Self {
        let stream = Stream::named();
        client(&["stream-add", &stream.name, &stream.subject]);
        stream
    }

    /// A name and subject for a stream that does not exist yet.
    pub fn named() -> Self {
        Stream {
            name: unique("EDDY_TEST"),
            subject: subject(),
        }
    }

    /// `stream-info`: messages, first_seq, last_seq.
    pub fn info(&self) -> Value {
        client(&["stream-info", &self.name])
    }

    /// `consumer-info` of the durable consumer `durable`.
    pub fn consumer(&self, durable: &str) -> Value {
        client(&["consumer-info", &self.name, durable])
    }

    /// Every record the stream holds (`consume --stream`), expecting `n`.
    pub fn records(&self, n: usize) -> Value {
        client(&[
            "consume",
            &self.subject,
            &n.to_string(),
            "--stream",
            &self.name,
            "--timeout",
            "60",
        ])
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = Command::new("python3")
            .args([CLIENT, "stream-rm", &self.name])
            .output();
    }
}

/// The unsigned integer `field` of `value`.
pub fn number(value: &Value, field: &str) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {value}"))
}

/// The ids of the records of a `consume` answer.
pub fn ids_of(consumed: &Value) -> Vec<u64> {
    consumed["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| number(r, "id"))
        .collect()
}

/// Asserts that `ids` are 0..n, each once, naming what is missing or doubled.
pub fn assert_each_once(mut ids: Vec<u64>, n: u64, what: &str) {
    ids.sort_unstable();
    let mut doubled: Vec<u64> = ids
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    doubled.dedup();
    let missing: Vec<u64> = (0..n).filter(|id| ids.binary_search(id).is_err()).collect();
    let stray: Vec<u64> = ids.iter().copied().filter(|id| *id >= n).collect();
    assert!(
        doubled.is_empty() && missing.is_empty() && stray.is_empty(),
        "{what}: {} records; missing {:?}, twice {:?}, not sent {:?} (at most 20 of each)",
        ids.len(),
        &missing[..missing.len().min(20)],
        &doubled[..doubled.len().min(20)],
        &stray[..stray.len().min(20)],
    );
}
