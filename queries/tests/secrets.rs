//! Secrets are never printed. A webhook `eddy copy` whose signing secret comes from a file and
//! whose bearer token comes from an environment variable receives signed batches from a second
//! `eddy copy` (its HTTP sink signing with the same secret and token), one forged request and
//! one record without its event time (a dead letter), at `RUST_LOG=trace`, with its metrics
//! endpoint scraped; then pipelines that fail on their configuration are run with a password
//! and the token in their URIs and options. Everything the processes wrote — stdout, stderr,
//! the output, the dead letters, `/metrics` and `/explain` — is searched for the secret, the
//! token and the password, and none is found (as text, or as bytes the way a client library's
//! frame dump would show them). The same holds for the passwords and tokens of the TLS brokers
//! `scripts/brokers.sh` starts (NATS, MQTT, RabbitMQ, Kafka with SCRAM over TLS), used and
//! refused at `RUST_LOG=trace`.

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
        assert_not_shown(what, said, secret);
    }
}

/// Fails if `said` holds `secret` as text, or as its bytes the way a `Debug` of a byte slice
/// prints them (`[112, 97, ...]`: how a client library logging a frame would show it).
fn assert_not_shown(what: &str, said: &str, secret: &str) {
    let bytes: Vec<String> = secret.bytes().map(|b| b.to_string()).collect();
    for form in [secret.to_string(), bytes.join(", ")] {
        assert!(
            !said.contains(&form),
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

/// The TLS brokers' password and token (made by `scripts/brokers.sh` in its TLS directory), and a
/// wrong password: none is printed at `RUST_LOG=trace` by a run that connects with them, nor by
/// one that the broker refuses.
#[cfg(all(
    feature = "nats",
    feature = "mqtt",
    feature = "amqp",
    feature = "kafka"
))]
#[test]
fn broker_passwords_and_tokens_are_never_printed_at_trace_level() {
    let tls = common::broker_tls_dir();
    for port in [4223, 4224, 8883, 5671, 9095] {
        common::require_tls_broker("a TLS broker of scripts/brokers.sh", port);
    }
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, format!("{PASSWORD}\n")).unwrap();
    let input = dir.path().join("orders.jsonl");
    std::fs::write(&input, "{\"id\": 1}\n{\"id\": 2}\n").unwrap();
    let from_file = format!("jsonl://{}", input.display());
    let file = |name: &str| tls.join(name).display().to_string();
    let stream = common::unique_name("SECRETS");
    let nats = |port: u16, credentials: &str| {
        format!(
            "tls://127.0.0.1:{port}/{stream}.x?stream={stream}&create_stream=true&ca_file={}&\
             {credentials}",
            file("ca.pem")
        )
    };
    let password = format!("user=eddy&password_file={}", file("password"));
    let token = format!(
        "token_file={}&cert_file={}&key_file={}",
        file("token"),
        file("client.pem"),
        file("client-key.pem")
    );
    let mqtt = |credentials: &str| {
        format!(
            "mqtts://127.0.0.1:8883/{stream}?ca_file={}&{credentials}",
            file("ca.pem")
        )
    };
    let amqp = |credentials: &str| {
        format!(
            "amqps://127.0.0.1:5671/{stream}?ca_file={}&{credentials}",
            file("ca.pem")
        )
    };
    // SCRAM over TLS: librdkafka's own log lines included (RUST_LOG=trace takes them all).
    let kafka = |credentials: &str| {
        format!(
            "kafka://127.0.0.1:9095/{stream}?ca_file={}&sasl_mechanism=SCRAM-SHA-256&\
             {credentials}",
            file("ca.pem")
        )
    };
    let wrong_password = format!("user=eddy&password_file={}", wrong.display());
    let working = [
        nats(4223, &password),
        nats(4224, &token),
        mqtt(&password),
        amqp(&password),
        kafka(&password),
    ];
    let refused = [
        nats(4223, &wrong_password),
        mqtt(&wrong_password),
        amqp(&wrong_password),
        kafka(&wrong_password),
    ];
    let secrets = [
        std::fs::read_to_string(tls.join("password")).unwrap(),
        std::fs::read_to_string(tls.join("token")).unwrap(),
    ];
    for (to, works) in working
        .iter()
        .map(|to| (to, true))
        .chain(refused.iter().map(|to| (to, false)))
    {
        let run = eddy(&["copy", "--from", &from_file, "--to", to])
            .output()
            .unwrap();
        let said = text(&run);
        assert_eq!(run.status.success(), works, "{to}:\n{said}");
        assert_no_secret(to, &said);
        for secret in &secrets {
            assert_not_shown(to, &said, secret.trim());
        }
    }
}
