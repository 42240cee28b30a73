//! `eddy copy` over HTTP, through the real binary: one `eddy copy` listens as a webhook and
//! writes Parquet (read back with pyarrow); another reads a JSON lines file and POSTs it there
//! in signed batches. Eddy to Eddy, no test code in between. Then the webhook's write-ahead
//! log, on by default: a copy killed with SIGKILL loses nothing it answered 2xx (the next run
//! reads it), a copy that ended leaves the next run only what is new, and `wal=off` warns.
//! Every webhook keeps its log under the test's own `EDDY_STATE_DIR` (or `wal=DIR`), never
//! under `$HOME`.

#![cfg(feature = "http")]

mod common;

use common::{pyarrow_ids, wait_at_most};

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "copy-test-secret";
const TOKEN: &str = "copy-test-token";

fn eddy(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eddy"));
    command
        .args(args)
        .env("HOOK_SECRET", SECRET)
        .env("HOOK_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn eddy_copy_from_a_file_to_an_eddy_copy_webhook_to_parquet() {
    let n = 500;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("orders.jsonl");
    let lines: String = (0..n)
        .map(|i| {
            format!(
                "{{\"id\": {i}, \"customer\": \"c{}\", \"total\": {i}.5}}\n",
                i % 7
            )
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let out = dir.path().join("pq");
    let listen = format!("http://{address}/orders?secret_env=HOOK_SECRET&token_env=HOOK_TOKEN");
    let to_parquet = format!("parquet://{}", out.display());
    let limit = n.to_string();
    let receiver = eddy(&[
        "copy",
        "--from",
        &listen,
        "--to",
        &to_parquet,
        "--limit",
        &limit,
        "--workers",
        "2",
        "--idle-exit",
        "30s",
    ])
    .env("EDDY_STATE_DIR", dir.path().join("state"))
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the webhook never listened on {address}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let from_file = format!("jsonl://{}", input.display());
    let post =
        format!("http://{address}/orders?batch=50&secret_env=HOOK_SECRET&token_env=HOOK_TOKEN");
    let sender = eddy(&["copy", "--from", &from_file, "--to", &post])
        .output()
        .unwrap();
    ok(&sender, "eddy copy to the webhook");
    let received = wait_at_most(receiver, Duration::from_secs(60));
    ok(&received, "eddy copy from the webhook");

    let script = "import json, sys, pyarrow.parquet as pq\n\
                  t = pq.read_table(sys.argv[1])\n\
                  print(json.dumps(sorted(t.column('id').to_pylist())))";
    let read = Command::new("python3")
        .args(["-c", script, out.to_str().unwrap()])
        .output()
        .expect("python3 runs (pyarrow is installed by scripts/test.sh)");
    ok(&read, "pyarrow");
    let ids: Vec<u64> = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(ids, (0..n).collect::<Vec<u64>>(), "every record once");
}

fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Waits until `child` listens on `address`; fails if it exits first.
fn await_listening(address: SocketAddr, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
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

/// `eddy copy --from http://ADDRESS/ORDERS --to parquet://OUT ARGS` with its state (the
/// webhook's default log directory) under `state`.
fn receive(address: SocketAddr, orders: &str, out: &Path, state: &Path, args: &[&str]) -> Child {
    let from = format!("http://{address}{orders}");
    let to = format!("parquet://{}", out.display());
    eddy(&["copy", "--from", &from, "--to", &to])
        .args(args)
        .env("EDDY_STATE_DIR", state)
        .spawn()
        .unwrap()
}

/// POSTs the records of `ids` to `url` in NDJSON batches of 50; each must be answered 200.
fn post_ids(url: &str, ids: Range<u64>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let ids: Vec<u64> = ids.collect();
    for batch in ids.chunks(50) {
        let body: String = batch
            .iter()
            .map(|id| format!("{{\"id\": {id}, \"note\": \"n{id}\"}}\n"))
            .collect();
        let answer = agent
            .post(url)
            .header("Content-Type", "application/x-ndjson")
            .send(&body)
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert_eq!(answer.status(), 200);
    }
}

/// The default log directory of the webhook on `address` and `/orders`, under `state`.
fn log_dir(state: &Path, address: SocketAddr) -> PathBuf {
    state
        .join("webhook")
        .join(format!("127.0.0.1-{}_orders", address.port()))
}

fn segment(log: &Path, seq: u64) -> PathBuf {
    log.join(format!("wal-{seq:020}.log"))
}

/// The Parquet files renamed into place under `dir` (not the hidden temporary ones).
fn committed_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".parquet") && !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_copy_from_a_webhook_killed_with_sigkill_loses_nothing_it_answered_2xx() {
    let n = 300;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let address = free_address();
    let url = format!("http://{address}/orders");
    // No wal= option: the log is the default one. The sinks commit once an hour, so nothing
    // the first run reads is committed (or released) before the kill.
    let first_out = dir.path().join("first");
    let mut first = receive(
        address,
        "/orders",
        &first_out,
        &state,
        &["--commit-every", "1h"],
    );
    await_listening(address, &mut first);
    post_ids(&url, 0..n);
    first.kill().unwrap(); // SIGKILL
    let killed = first.wait_with_output().unwrap();
    assert_eq!(
        committed_files(&first_out),
        Vec::<String>::new(),
        "the killed run committed nothing"
    );
    let log = log_dir(&state, address);
    assert!(
        segment(&log, 0).exists(),
        "the default log directory for the address and path holds what was answered 2xx: {}",
        log.display()
    );
    assert!(!log.join("released").exists(), "nothing was released");

    // The same webhook again reads every record the killed one answered 2xx.
    let second_out = dir.path().join("second");
    let second = receive(
        address,
        "/orders",
        &second_out,
        &state,
        &["--idle-exit", "3s"],
    );
    let second = wait_at_most(second, Duration::from_secs(60));
    assert!(
        second.status.success(),
        "the second copy failed:\n{}\n(the killed one said:\n{})",
        String::from_utf8_lossy(&second.stderr),
        String::from_utf8_lossy(&killed.stderr)
    );
    assert_eq!(
        pyarrow_ids(&second_out),
        (0..n).collect::<Vec<u64>>(),
        "every id answered 2xx, once"
    );
}

#[test]
fn a_second_copy_from_the_same_webhook_reads_only_what_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let address = free_address();
    let url = format!("http://{address}/orders");
    let log = log_dir(&state, address);
    let run = |out: &Path, ids: Range<u64>| {
        let mut copy = receive(address, "/orders", out, &state, &["--idle-exit", "3s"]);
        await_listening(address, &mut copy);
        post_ids(&url, ids);
        let copy = wait_at_most(copy, Duration::from_secs(60));
        ok(&copy, "eddy copy from the webhook");
    };
    let first = dir.path().join("first");
    run(&first, 0..100);
    assert_eq!(pyarrow_ids(&first), (0..100).collect::<Vec<u64>>());
    assert!(
        log.join("released").exists(),
        "the run recorded what its sinks committed"
    );
    assert!(segment(&log, 0).exists());

    let second = dir.path().join("second");
    run(&second, 100..150);
    assert_eq!(
        pyarrow_ids(&second),
        (100..150).collect::<Vec<u64>>(),
        "only the new records: nothing of the first run is read again"
    );
    assert!(
        !segment(&log, 0).exists(),
        "the first run's segment, wholly released, is deleted"
    );
    assert!(segment(&log, 1).exists());
}

#[test]
fn wal_off_warns_and_a_log_that_cannot_be_had_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let address = free_address();
    let out = dir.path().join("out");
    let mut copy = receive(
        address,
        "/orders?wal=off",
        &out,
        &state,
        &["--idle-exit", "2s"],
    );
    await_listening(address, &mut copy);
    post_ids(&format!("http://{address}/orders"), 0..20);
    let copy = wait_at_most(copy, Duration::from_secs(60));
    ok(&copy, "eddy copy from a webhook with wal=off");
    let said = String::from_utf8_lossy(&copy.stderr);
    assert!(
        said.contains("write-ahead log is off (wal=off)")
            && said.contains("a crash of this process loses"),
        "{said}"
    );
    assert_eq!(pyarrow_ids(&out), (0..20).collect::<Vec<u64>>());
    assert!(!state.join("webhook").exists(), "no log was kept");

    // No directory for the default log: an error saying what to do, before anything runs.
    let from = format!("http://{}/orders", free_address());
    let failed = eddy(&["copy", "--from", &from, "--to", "jsonl:///-"])
        .env_remove("EDDY_STATE_DIR")
        .env_remove("XDG_STATE_HOME")
        .env_remove("HOME")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "{said}");
    assert!(
        said.contains("wal=DIR") && said.contains("wal=off"),
        "{said}"
    );

    // One webhook at a time writes a log: a second is refused, naming the directory.
    let shared = dir.path().join("shared");
    let (a, b) = (free_address(), free_address());
    let with_log = |address: SocketAddr| format!("http://{address}/x?wal={}", shared.display());
    let mut holder = eddy(&["copy", "--from", &with_log(a), "--to", "jsonl:///-"])
        .spawn()
        .unwrap();
    await_listening(a, &mut holder);
    let refused = eddy(&["copy", "--from", &with_log(b), "--to", "jsonl:///-"])
        .output()
        .unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("another webhook") && said.contains(&shared.display().to_string()),
        "{said}"
    );
}
