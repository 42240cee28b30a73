//! Secrets are never printed. A webhook `eddy copy` whose signing secret comes from a file and
//! whose bearer token comes from an environment variable receives signed batches from a second
//! `eddy copy` (its HTTP sink signing with the same secret and token), one forged request and
//! one record without its event time (a dead letter), at `RUST_LOG=trace`, with its metrics
//! endpoint scraped; then pipelines that fail on their configuration are run with a password
//! and the token in their URIs and options. Everything the processes wrote — stdout, stderr,
//! the output, the dead letters, `/metrics` and `/explain` — is searched for the secret, the
//! token and the password, and none is found.

#![cfg(feature = "http")]

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::wait_at_most;

const SECRET: &str = "s3cret-signing-key-6b1f";
const TOKEN: &str = "t0ken-bearer-91ac";
const PASSWORD: &str = "pa55word-c0ffee";

fn eddy(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eddy"));
    command
        .args(args)
        .env("HOOK_TOKEN", TOKEN)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file under `dir`, as text.
fn files_under(dir: &Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all.push_str(&files_under(&path));
        } else {
            all.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    all
}

fn get(url: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut answer = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    answer.body_mut().read_to_string().unwrap()
}

fn assert_no_secret(what: &str, said: &str) {
    for secret in [SECRET, TOKEN, PASSWORD] {
        assert!(
            !said.contains(secret),
            "{what} shows a secret ({secret}):\n{said}"
        );
    }
}

#[test]
fn no_secret_is_ever_printed_by_a_run_that_works_or_one_that_fails() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("hook-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let input = dir.path().join("orders.jsonl");
    let mut lines: String = (0..200)
        .map(|i| format!("{{\"id\": {i}, \"ts\": {}}}\n", 1_000 + i))
        .collect();
    lines.push_str("{\"id\": 999}\n"); // no event time: a dead letter at the webhook
    std::fs::write(&input, lines).unwrap();

    let (address, metrics) = (free_address(), free_address());
    let options = format!("secret_file={}&token_env=HOOK_TOKEN", secret_file.display());
    let listen = format!("http://{address}/orders?{options}");
    let out = dir.path().join("out");
    let dead = dir.path().join("dead");
    let (to, dead_letters) = (
        format!("jsonl://{}", out.join("rows.jsonl").display()),
        format!("jsonl://{}", dead.join("letters.jsonl").display()),
    );
    let metrics_addr = metrics.to_string();
    let mut receiver = eddy(&[
        "copy",
        "--from",
        &listen,
        "--to",
        &to,
        "--event-time",
        "ts",
        "--dead-letters",
        &dead_letters,
        "--idle-exit",
        "3s",
        "--metrics-addr",
        &metrics_addr,
    ])
    .env("EDDY_STATE_DIR", dir.path().join("state"))
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        assert!(receiver.try_wait().unwrap().is_none(), "the webhook exited");
        assert!(Instant::now() < deadline, "the webhook never listened");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A forged request: the right token, a wrong signature.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut forged = agent
        .post(&format!("http://{address}/orders"))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .header("X-Eddy-Signature", "sha256=00")
        .header("Content-Type", "application/json")
        .send("{\"id\": 5000, \"ts\": 1}")
        .unwrap();
    assert_eq!(forged.status(), 401);
    let refusal = forged.body_mut().read_to_string().unwrap();

    let from_file = format!("jsonl://{}", input.display());
    let post = format!("http://{address}/orders?batch=50&{options}");
    let sender = eddy(&["copy", "--from", &from_file, "--to", &post])
        .output()
        .unwrap();
    assert!(sender.status.success(), "{}", text(&sender));
    let scraped = format!(
        "{}\n{}",
        get(&format!("http://{metrics}/metrics")),
        get(&format!("http://{metrics}/explain"))
    );
    let received = wait_at_most(receiver, Duration::from_secs(60));
    assert!(received.status.success(), "{}", text(&received));

    let rows = files_under(&out);
    assert_eq!(rows.lines().count(), 200, "every signed record arrived");
    let letters = files_under(&dead);
    assert!(
        letters.contains("999"),
        "the record without ts is a dead letter"
    );

    // Pipelines that fail on their configuration, and one whose sink cannot be reached (its
    // records are undeliverable), with the password and the token about.
    let password_file = dir.path().join("amqp-password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    let failing: Vec<Vec<String>> = vec![
        vec![
            "--to".into(),
            format!("amqp://user:{PASSWORD}@127.0.0.1:5672/q?bogus=1"),
        ],
        vec![
            "--to".into(),
            format!("amqp://127.0.0.1:5672/q?password={PASSWORD}"),
        ],
        vec![
            "--to".into(),
            format!(
                "amqp://127.0.0.1:1/q?password_file={}&connect_timeout=1s",
                password_file.display()
            ),
        ],
        vec!["--to".into(), format!("http://127.0.0.1:1/x?token={TOKEN}")],
    ];
    let unreachable = "http://127.0.0.1:1/x?token_env=HOOK_TOKEN&retries=0&timeout=1s";
    let mut said_by_failures = String::new();
    for args in &failing {
        let mut all = vec!["copy", "--from", from_file.as_str()];
        all.extend(args.iter().map(String::as_str));
        let run = eddy(&all).output().unwrap();
        assert!(
            !run.status.success(),
            "{all:?} should fail:\n{}",
            text(&run)
        );
        said_by_failures.push_str(&text(&run));
    }
    let run = eddy(&["copy", "--from", &from_file, "--to", unreachable])
        .output()
        .unwrap();
    said_by_failures.push_str(&text(&run));

    assert_no_secret("the webhook's refusal", &refusal);
    assert_no_secret("the receiving copy", &text(&received));
    assert_no_secret("the sending copy", &text(&sender));
    assert_no_secret("the output", &rows);
    assert_no_secret("the dead letters", &letters);
    assert_no_secret("/metrics and /explain", &scraped);
    assert_no_secret("the failing runs", &said_by_failures);
    assert!(
        said_by_failures.contains("amqp://user:***@127.0.0.1:5672/q"),
        "a URI with a password is shown with it hidden:\n{said_by_failures}"
    );
}
