//! Exactly-once from a webhook with a write-ahead log, through the real binary: `eddy copy`
//! listens with `?wal=DIR` and writes Parquet with checkpoints; senders POST NDJSON batches
//! over real HTTP (ureq) and retry what was refused or got no answer, as a real sender would;
//! the process is killed with SIGKILL in the middle of the stream and started again with the
//! same command. The committed Parquet (read back with pyarrow) is checked against what each
//! request was answered.
//!
//! Every record carries the attempt of the request that sent it, so each request is told apart
//! from its retries. What must hold: the records of a request answered 2xx are there exactly
//! once; those of a refused request (429, 503, a refused connection) are not there; those of a
//! request that got no answer (the kill came during it) are there all exactly once or not at
//! all — the log may hold it whole, but never a part of it; and every record was answered 2xx
//! at some attempt, so all are there.

#![cfg(feature = "http")]

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{eddy_copy, newest_manifest, pyarrow_json};

/// Records in all, sent in batches of [`BATCH`] by [`SENDERS`] concurrent senders.
const RECORDS: u64 = 3000;
const BATCH: u64 = 25;
const SENDERS: u64 = 3;
/// How long a sender waits between its batches, so the stream lasts a few checkpoints.
const PACE: Duration = Duration::from_millis(150);

/// What became of one request (one attempt at a batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// 2xx.
    Accepted,
    /// 429 or 503, or the connection was refused (nothing was sent).
    Refused,
    /// No answer: the connection broke while the request was under way.
    Unanswered,
}

/// Every request's answer, by (batch, attempt).
#[derive(Default)]
struct Ledger {
    answers: Mutex<BTreeMap<(u64, u64), Answer>>,
    accepted_records: AtomicU64,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The NDJSON body of attempt `attempt` at batch `batch`: its ids, tagged with the attempt,
/// with the event time `ts` of now.
fn body(batch: u64, attempt: u64) -> String {
    let ts = now_ms();
    (batch * BATCH..(batch + 1) * BATCH)
        .map(|id| format!("{{\"id\": {id}, \"attempt\": {attempt}, \"ts\": {ts}}}\n"))
        .collect()
}

fn post(agent: &ureq::Agent, url: &str, body: String) -> Answer {
    match agent
        .post(url)
        .header("Content-Type", "application/x-ndjson")
        .send(body)
    {
        Ok(response) if response.status().is_success() => Answer::Accepted,
        Ok(mut response) => {
            let status = response.status().as_u16();
            let said = response.body_mut().read_to_string().unwrap_or_default();
            assert!(
                status == 429 || status == 503,
                "the webhook answered {status}: {said}"
            );
            Answer::Refused
        }
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Answer::Refused
        }
        // A reset or closed connection, a timeout: the request may or may not have arrived.
        Err(_) => Answer::Unanswered,
    }
}

/// The batch the test itself sends: half of it when the kill comes, whole after the restart.
const TORN_BATCH: u64 = RECORDS / BATCH - 1;

fn agent() -> ureq::Agent {
    // No pooled connections: each request has its own, so an answer is about that request.
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

/// Sends `batch` until it is answered 2xx, every try a new attempt from `attempt` on.
fn send_batch(agent: &ureq::Agent, url: &str, batch: u64, attempt: u64, ledger: &Ledger) {
    let deadline = Instant::now() + Duration::from_secs(180);
    for attempt in attempt.. {
        assert!(
            Instant::now() < deadline,
            "batch {batch} was never accepted"
        );
        let answer = post(agent, url, body(batch, attempt));
        ledger
            .answers
            .lock()
            .unwrap()
            .insert((batch, attempt), answer);
        if answer == Answer::Accepted {
            ledger.accepted_records.fetch_add(BATCH, Ordering::Relaxed);
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends batches `first, first + SENDERS, ...` (but [`TORN_BATCH`]), pacing itself.
fn sender(url: String, first: u64, ledger: Arc<Ledger>) {
    let agent = agent();
    for batch in (first..TORN_BATCH).step_by(SENDERS as usize) {
        send_batch(&agent, &url, batch, 0, &ledger);
        std::thread::sleep(PACE);
    }
}

/// Starts attempt 0 at [`TORN_BATCH`] by hand and stops halfway through its body: the kill
/// comes while it is under way.
fn start_torn_request(port: u16, ledger: &Ledger) -> TcpStream {
    use std::io::Write;
    let body = body(TORN_BATCH, 0);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..body.len() / 2]
    )
    .unwrap();
    stream.flush().unwrap();
    ledger
        .answers
        .lock()
        .unwrap()
        .insert((TORN_BATCH, 0), Answer::Unanswered);
    stream
}

/// The `eddy copy` of the test: the webhook with its log, to Parquet, with checkpoints.
fn eddy(port: u16, wal: &Path, out: &Path, checkpoints: &Path) -> Child {
    let from = format!("http://127.0.0.1:{port}/events?wal={}", wal.display());
    let to = format!("parquet://{}", out.display());
    Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["copy", "--from", &from, "--to", &to, "--event-time", "ts"])
        .args([
            "--workers",
            "2",
            "--idle-exit",
            "3s",
            "--checkpoint-every",
            "1s",
        ])
        .arg("--checkpoint-dir")
        .arg(checkpoints)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the eddy binary runs")
}

fn await_listening(port: u16, child: &mut Child) {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("eddy copy exited ({status}) before it listened on {address}");
        }
        assert!(
            Instant::now() < deadline,
            "the webhook never listened on {address}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet")
            && !path.file_name().unwrap().to_string_lossy().starts_with('.')
        {
            files.push(path);
        }
    }
    files
}

/// `(id, attempt)` of every committed row in `out`.
fn committed_rows(out: &Path) -> Vec<(u64, u64)> {
    if parquet_files(out).is_empty() {
        return Vec::new();
    }
    let script = "import json, sys, pyarrow.parquet as pq\n\
                  t = pq.read_table(sys.argv[1])\n\
                  print(json.dumps(list(zip(t.column('id').to_pylist(), \
                  t.column('attempt').to_pylist()))))";
    pyarrow_json(&["-c".as_ref(), script.as_ref()], out, "committed rows")
}

fn wait_with_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "eddy copy did not finish within {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_webhook_with_a_write_ahead_log_is_exactly_once_across_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, out, checkpoints) = (
        dir.path().join("wal"),
        dir.path().join("out"),
        dir.path().join("checkpoints"),
    );
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/events");
    let mut first = eddy(port, &wal, &out, &checkpoints);
    await_listening(port, &mut first);

    let ledger = Arc::new(Ledger::default());
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (url, ledger) = (url.clone(), Arc::clone(&ledger));
            std::thread::spawn(move || sender(url, s, ledger))
        })
        .collect();

    // Kill in the middle of the stream, a little after a checkpoint completed (so records
    // answered 2xx since are only in the log), with a request under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = |first: &mut Child| {
        assert!(
            first.try_wait().unwrap().is_none(),
            "eddy copy ended before the kill"
        );
        assert!(Instant::now() < deadline, "no checkpoint completed");
        std::thread::sleep(Duration::from_millis(5));
    };
    while newest_manifest(&checkpoints).is_none()
        || ledger.accepted_records.load(Ordering::Relaxed) < 300
    {
        running(&mut first);
    }
    let seen = newest_manifest(&checkpoints);
    while newest_manifest(&checkpoints) == seen {
        running(&mut first);
    }
    std::thread::sleep(Duration::from_millis(300));
    let torn = start_torn_request(port, &ledger);
    std::thread::sleep(Duration::from_millis(50));
    let accepted_at_kill = ledger.accepted_records.load(Ordering::Relaxed);
    first.kill().unwrap(); // SIGKILL
    drop(torn);
    let killed = first.wait_with_output().unwrap();
    assert!(
        accepted_at_kill < RECORDS,
        "the senders finished before the kill"
    );
    // Records answered 2xx that are not in committed output: only the log has them now.
    let committed_at_kill = committed_rows(&out).len() as u64;
    assert!(
        committed_at_kill < accepted_at_kill,
        "the kill should leave accepted records outside the committed output \
         ({committed_at_kill} committed of {accepted_at_kill} accepted)"
    );

    let second = eddy(port, &wal, &out, &checkpoints);
    // The sender of the torn request retries it, as a new attempt.
    send_batch(&agent(), &url, TORN_BATCH, 1, &ledger);
    for sender in senders {
        sender.join().expect("a sender failed");
    }
    let finished = wait_with_output(second, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(
        finished.status.success(),
        "the restarted eddy copy failed:\n{stderr}\n(the killed one said:\n{})",
        String::from_utf8_lossy(&killed.stderr)
    );

    let mut count: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for row in committed_rows(&out) {
        *count.entry(row).or_default() += 1;
    }
    let answers = ledger.answers.lock().unwrap().clone();
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for (&(batch, attempt), &answer) in &answers {
        let copies: Vec<usize> = (batch * BATCH..(batch + 1) * BATCH)
            .map(|id| count.remove(&(id, attempt)).unwrap_or(0))
            .collect();
        let (all_once, none) = (
            copies.iter().all(|&c| c == 1),
            copies.iter().all(|&c| c == 0),
        );
        let what = format!("batch {batch} attempt {attempt} ({answer:?}): copies {copies:?}");
        match answer {
            Answer::Accepted => assert!(all_once, "{what}: answered 2xx, so exactly once"),
            Answer::Refused => assert!(none, "{what}: refused, so not at all"),
            Answer::Unanswered => {
                assert!(all_once || none, "{what}: whole and once, or not at all");
                *tally
                    .entry(if none {
                        "unanswered, not logged"
                    } else {
                        "unanswered, logged"
                    })
                    .or_default() += 1;
            }
        }
        *tally.entry(answer_name(answer)).or_default() += 1;
    }
    assert!(
        count.is_empty(),
        "rows that no request sent: {:?}",
        count.keys().take(10).collect::<Vec<_>>()
    );
    let accepted: Vec<u64> = answers
        .iter()
        .filter(|(_, &a)| a == Answer::Accepted)
        .map(|(&(batch, _), _)| batch)
        .collect();
    assert_eq!(
        accepted,
        (0..RECORDS / BATCH).collect::<Vec<_>>(),
        "every batch was answered 2xx once"
    );
    assert!(
        !wal.join(format!("wal-{:020}.log", 0)).exists(),
        "the killed run's segment, behind the restarted run's checkpoints, is deleted"
    );
    assert!(
        wal.join("released").exists(),
        "completed checkpoints record their position as released, for a run without them"
    );
    eprintln!(
        "requests: {tally:?}; at the kill {accepted_at_kill} records were answered 2xx and \
         {committed_at_kill} committed"
    );
}

fn answer_name(answer: Answer) -> &'static str {
    match answer {
        Answer::Accepted => "accepted",
        Answer::Refused => "refused",
        Answer::Unanswered => "unanswered",
    }
}

#[test]
fn a_webhook_without_a_log_refuses_checkpoints_and_says_to_keep_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let from = format!("http://127.0.0.1:{port}/events?wal=off");
    let to = format!("parquet://{}", dir.path().join("out").display());
    let checkpoints = dir.path().join("checkpoints");
    let said = eddy_copy(&[
        "--from",
        &from,
        "--to",
        &to,
        "--checkpoint-dir",
        checkpoints.to_str().unwrap(),
        "--idle-exit",
        "1s",
    ])
    .expect_err("a webhook without a log cannot be checkpointed");
    assert!(
        said.contains("cannot be checkpointed") && said.contains("leave out wal=off"),
        "{said}"
    );
    let mistyped = format!("http://127.0.0.1:{port}/events?wall=/tmp/x");
    let said = eddy_copy(&["--from", &mistyped, "--to", "jsonl:///-"])
        .expect_err("a mistyped option must fail");
    assert!(
        said.contains("unknown option 'wall'") && said.contains("wal"),
        "{said}"
    );
}
