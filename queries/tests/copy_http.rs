//! `eddy copy` over HTTP, through the real binary, twice: one `eddy copy` listens as a webhook
//! and writes Parquet (read back with pyarrow); another reads a JSON lines file and POSTs it
//! there in signed batches. Eddy to Eddy, no test code in between.

#![cfg(feature = "http")]

mod common;

use common::wait_at_most;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
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
