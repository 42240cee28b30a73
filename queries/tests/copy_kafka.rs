//! `eddy copy` with Kafka (tansu on 127.0.0.1:9092, `bash scripts/brokers.sh up`), through the
//! real binary and kafka-python (connectors/tests/clients/kafka.py): a topic to Parquet (read
//! back with pyarrow) with its bad messages in a dead-letter topic, a JSON lines file to a keyed
//! topic, and the errors for a mistyped option and an unreachable broker.
//!
//! Topics get unique names and are kept: tansu 0.6.0 deletes every topic when asked to delete
//! one.

#![cfg(feature = "kafka")]

mod common;

use common::{assert_clear_source_errors, eddy_copy, pyarrow_ids, SourceErrors};

#[path = "../../connectors/tests/clients/kafka_client.rs"]
mod kafka_client;

use kafka_client::{client, require_broker, unique, BROKER};

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

#[test]
fn a_topic_copied_to_parquet_with_its_bad_messages_in_a_dead_letter_topic() {
    require_broker();
    let topic = unique("in");
    let dead = unique("dead");
    client(&["create", &topic, "--partitions", "2"]);
    // Broken JSON only: dynamic records have no schema, so a wrong field type is no error.
    let produced = client(&[
        "produce",
        &topic,
        "300",
        "--malformed-every",
        "60",
        "--broken-json-only",
    ]);
    let mut malformed: Vec<String> = produced["malformed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    assert_eq!(malformed.len(), 5);

    let dir = tempfile::tempdir().unwrap();
    let from = format!("kafka://{BROKER}/{topic}?group={}", unique("group"));
    let to = format!("parquet://{}", dir.path().display());
    let dead_uri = format!("kafka://{BROKER}/{dead}");
    eddy_copy(&[
        "--from",
        &from,
        "--to",
        &to,
        "--limit",
        "305",
        "--idle-exit",
        "10s",
        "--workers",
        "2",
        "--dead-letters",
        &dead_uri,
    ])
    .expect("eddy copy succeeds");

    assert_eq!(pyarrow_ids(dir.path()), (0..300).collect::<Vec<u64>>());
    let letters = client(&["consume", &dead, "100", "--timeout", "3"]);
    let mut raw: Vec<String> = letters["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| {
            let letter = &message["value"];
            assert_eq!(letter["kind"], "decode", "{letter}");
            let location = letter["location"].as_str().unwrap();
            assert!(
                location.starts_with("partition ") && location.contains(" offset "),
                "{location}"
            );
            letter["raw"].as_str().unwrap().to_string()
        })
        .collect();
    raw.sort();
    malformed.sort();
    assert_eq!(raw, malformed, "every bad message, once, with its bytes");
}

#[test]
fn a_json_lines_file_copied_to_a_keyed_topic_reaches_kafka_python() {
    require_broker();
    let topic = unique("out");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("orders.jsonl");
    let lines: String = (0..200)
        .map(|i| format!("{{\"id\": {i}, \"customer\": \"c{}\"}}\n", i % 7))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let from = format!("jsonl://{}", input.display());
    let to = format!("kafka://{BROKER}/{topic}?key=customer&partitions=2");
    eddy_copy(&["--from", &from, "--to", &to]).expect("eddy copy succeeds");

    let read = client(&["consume", &topic, "201", "--timeout", "3"]);
    let records = read["records"].as_array().unwrap();
    let mut ids: Vec<u64> = records
        .iter()
        .map(|r| {
            let id = r["value"]["id"].as_u64().unwrap();
            assert_eq!(r["key"], Value::String(format!("c{}", id % 7)), "{r}");
            id
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..200).collect::<Vec<u64>>(), "every line once");
}

#[test]
fn a_mistyped_option_and_an_unreachable_broker_are_clear_errors() {
    assert_clear_source_errors(SourceErrors {
        mistyped: format!("kafka://{BROKER}/t?grup=g"),
        mistyped_says: ["unknown option 'grup'", "group"],
        unreachable: |closed| format!("kafka://{closed}/t?connect_timeout=1s"),
        unreachable_says: "cannot connect to Kafka at",
        within: Duration::from_secs(10),
    });
}

/// The value of `eddy_source_backlog_records` for the copy's source, from a `/metrics` page.
fn backlog(page: &str) -> Option<u64> {
    page.lines()
        .find(|l| l.starts_with("eddy_source_backlog_records{") && l.contains("stage=\"from\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

#[test]
fn the_backlog_metric_shows_the_consumer_lag_while_the_sink_is_blocked() {
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    require_broker();
    let topic = unique("backlog");
    client(&["create", &topic, "--partitions", "1"]);
    client(&["produce", &topic, "20000"]);
    // The sink writes into a pipe that a reader stops reading after a few KB: the worker
    // blocks, the bridge's channel fills (1024 messages) and the rest waits at the broker.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("out.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let release = Arc::new(AtomicBool::new(false));
    let reader = {
        let (fifo, release) = (fifo.clone(), Arc::clone(&release));
        std::thread::spawn(move || {
            let mut pipe = std::fs::File::open(&fifo).unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = pipe.read(&mut buf);
            while !release.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut rest = Vec::new();
            pipe.read_to_end(&mut rest).unwrap();
            rest.iter().filter(|b| **b == b'\n').count()
        })
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let from = format!("kafka://{BROKER}/{topic}?group={}", unique("group"));
    let mut copy = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args([
            "copy",
            "--from",
            &from,
            "--to",
            &format!("jsonl://{}", fifo.display()),
        ])
        .args(["--idle-exit", "3s", "--quiet"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = None;
    while std::time::Instant::now() < deadline {
        let page = ureq::get(&url)
            .config()
            .timeout_global(Some(std::time::Duration::from_secs(5)))
            .build()
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok());
        seen = page.as_deref().and_then(backlog).or(seen);
        // More than the channel holds: the consumer lag librdkafka reports is counted.
        if seen.is_some_and(|b| b > 1024 + 1000) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    release.store(true, Ordering::Relaxed);
    let lines = reader.join().unwrap();
    let status = copy.wait().unwrap();
    assert!(
        seen.is_some_and(|b| b > 1024 + 1000 && b <= 20_000),
        "the backlog while blocked: {seen:?}"
    );
    assert!(status.success());
    assert!(
        lines > 10_000,
        "the copy went on once unblocked: {lines} lines"
    );
}
