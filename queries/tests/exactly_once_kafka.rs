//! Exactly-once end to end against a real broker: Nexmark events in a Kafka topic (tansu on
//! 127.0.0.1:9092, `bash scripts/brokers.sh up`), q7 over them through the `eddy` binary with
//! checkpoints, killed with SIGKILL or stopped with SIGTERM and restarted (at 1 and 2 workers),
//! and the committed
//! Parquet (read back with pyarrow) compared with q7 over the same events from the generator:
//! the same rows, none twice, none missing. The source resumes at the topic offsets saved in
//! the checkpoint, whatever the consumer group had committed.

#![cfg(feature = "kafka")]

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{await_checkpoints, kill, newest_manifest, pyarrow_rows_json, signal};
use eddy_connectors::nexmark::{generate_all, NexmarkConfig};

const BROKER: &str = "127.0.0.1:9092";
const EVENTS: u64 = 60_000;
/// Events per second of event time: 60 000 events span 300 s, 30 q7 windows.
const RATE: usize = 200;

fn kafka_py(args: &[&str], stdin: Option<&[u8]>) -> serde_json::Value {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../connectors/tests/clients/kafka.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kafka.py {args:?} failed (is the broker up? bash scripts/brokers.sh up): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("kafka.py prints one JSON object")
}

fn q7(out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.args(["nexmark", "run", "q7", "--quiet", "--format", "parquet"])
        .args(["--events", &EVENTS.to_string(), "--rate", &RATE.to_string()])
        .arg("--out")
        .arg(out)
        .args(extra);
    cmd
}

fn rows(dir: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for row in pyarrow_rows_json(dir) {
        *counts.entry(row).or_default() += 1;
    }
    counts
}

/// What the attempts of the test in `dir` printed.
fn attempts_said(dir: &Path) -> String {
    let said: Vec<String> = (0..3)
        .map(|a| {
            let path = dir.join(format!("attempt-{a}.out"));
            format!("attempt {a}:\n{}", fs::read_to_string(path).unwrap())
        })
        .collect();
    said.join("\n")
}

#[test]
fn kafka_to_q7_to_parquet_exactly_once_across_kills() {
    assert!(
        TcpStream::connect_timeout(&BROKER.parse().unwrap(), Duration::from_secs(2)).is_ok(),
        "Kafka is not reachable at {BROKER}: start the test brokers with `bash scripts/brokers.sh up`"
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let topic = format!("eddy-exactly-once-{}-{nanos}", std::process::id());
    // One partition keeps the events in event-time order, as the generator emits them, so
    // both runs see no late record and must agree row for row.
    kafka_py(&["create", &topic, "--partitions", "1"], None);
    let config = NexmarkConfig {
        events: EVENTS,
        events_per_second: RATE,
        ..Default::default()
    };
    let mut lines = Vec::new();
    for (_, event) in generate_all(&config) {
        serde_json::to_writer(&mut lines, &event).unwrap();
        lines.push(b'\n');
    }
    let published = kafka_py(&["publish", &topic], Some(&lines));
    assert_eq!(published["published"].as_u64(), Some(EVENTS), "{published}");

    let dir = tempfile::tempdir().unwrap();
    let (reference, out, checkpoints) = (
        dir.path().join("reference"),
        dir.path().join("out"),
        dir.path().join("checkpoints"),
    );
    let status = q7(&reference, &[]).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    let expected = rows(&reference);
    assert!(
        expected.len() >= 20,
        "the reference has {} rows",
        expected.len()
    );

    let uri = format!("kafka://{BROKER}/{topic}?start=earliest&group={topic}");
    let checkpointed = |workers: usize| {
        let mut cmd = q7(
            &out,
            &[
                "--source",
                &uri,
                "--idle-exit",
                "3s",
                "--checkpoint-every",
                "5s",
            ],
        );
        cmd.arg("--checkpoint-dir")
            .arg(&checkpoints)
            .args(["--workers", &workers.to_string()]);
        cmd
    };
    let mut kills = 0;
    for (attempt, workers) in [1, 2, 1].into_iter().enumerate() {
        // What each attempt said, for the message should the rows differ.
        let said = File::create(dir.path().join(format!("attempt-{attempt}.out"))).unwrap();
        let mut child = checkpointed(workers)
            .stdout(said.try_clone().unwrap())
            .stderr(said)
            .spawn()
            .unwrap();
        // Kill once this attempt has completed 1 + attempt more checkpoints.
        if await_checkpoints(&mut child, &checkpoints, attempt + 1) {
            std::thread::sleep(Duration::from_millis(40 * attempt as u64));
        }
        if attempt == 1 && child.try_wait().unwrap().is_none() {
            // A graceful stop: it reads on to the next checkpoint boundary, checkpoints there
            // and exits 0; the next attempt resumes from that checkpoint.
            let before = newest_manifest(&checkpoints);
            signal(&child, "TERM");
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "SIGTERM: {status}\n{}",
                attempts_said(dir.path())
            );
            assert_ne!(
                newest_manifest(&checkpoints),
                before,
                "the stop completed no checkpoint where it stopped\n{}",
                attempts_said(dir.path())
            );
            kills += 1;
        } else {
            kills += usize::from(kill(&mut child));
        }
    }
    assert!(
        kills >= 2,
        "only {kills} kills landed mid-run:\n{}",
        attempts_said(dir.path())
    );
    let done = checkpointed(2).output().unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&done.stderr)
    );
    // Mid-run, or at the end of the input when the last attempt finished before its kill.
    assert!(
        stdout.contains("resumed from the checkpoint at"),
        "{stdout}"
    );
    let got = rows(&out);
    if got != expected {
        panic!(
            "q7 over Kafka with {kills} kills differs from q7 over the generator: {} rows, {} \
             expected\n{}\nthe last run:\n{stdout}",
            got.len(),
            expected.len(),
            attempts_said(dir.path())
        );
    }
}
