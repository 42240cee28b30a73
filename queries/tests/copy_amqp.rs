//! `eddy copy` with RabbitMQ (127.0.0.1:5672, `bash scripts/brokers.sh up`), through the real
//! binary and pika: a queue to Parquet (read back with pyarrow) with its bad messages in a
//! dead-letter queue, a JSON lines file to a queue, and the errors for a mistyped option and an
//! unreachable broker.

#![cfg(feature = "amqp")]

mod common;

use common::{assert_clear_source_errors, eddy_copy, pyarrow_ids, SourceErrors};

use std::time::Duration;

use serde_json::Value;

#[path = "../../connectors/tests/clients/amqp_client.rs"]
mod amqp_client;

use amqp_client::{client, consume, require_broker, TestQueue, BROKER};

#[test]
fn a_queue_copied_to_parquet_with_its_bad_messages_in_a_dead_letter_queue() {
    require_broker();
    let queue = TestQueue::new("copy-in");
    let dead = TestQueue::new("copy-dead");
    let bad = ["{not json", "[1, 2", "just text", "{\"id\": ", "}"];
    let mut lines = String::new();
    for i in 0..300 {
        lines.push_str(&format!(
            "{{\"id\": {i}, \"customer\": \"c{}\", \"total\": {i}.5}}\n",
            i % 7
        ));
        if i % 60 == 0 {
            lines.push_str(bad[i / 60]);
            lines.push('\n');
        }
    }
    // Well-formed, but over the URI's max_record_size: a dead letter too.
    let oversized = format!("{{\"id\": 1000, \"pad\": \"{}\"}}", "x".repeat(300));
    lines.push_str(&oversized);
    lines.push('\n');
    client(&["publish", &queue.0], &lines);

    let dir = tempfile::tempdir().unwrap();
    let from = format!(
        "amqp://{BROKER}/{}?prefetch=100&max_record_size=200",
        queue.0
    );
    let to = format!("parquet://{}", dir.path().display());
    let dead_uri = format!("amqp://{BROKER}/{}", dead.0);
    let args = [
        "--from",
        &from,
        "--to",
        &to,
        "--limit",
        "306",
        "--workers",
        "2",
        "--dead-letters",
        &dead_uri,
    ];
    eddy_copy(&args).expect("eddy copy succeeds");

    assert_eq!(pyarrow_ids(dir.path()), (0..300).collect::<Vec<u64>>());
    let letters = consume(&dead, 100);
    let mut raw: Vec<String> = letters
        .iter()
        .map(|message| {
            let letter: Value = serde_json::from_str(message["body"].as_str().unwrap()).unwrap();
            assert_eq!(letter["kind"], "decode");
            let location = letter["location"].as_str().unwrap();
            assert!(
                location.starts_with(&format!("queue {} delivery tag ", queue.0)),
                "{location}"
            );
            letter["raw"].as_str().unwrap().to_string()
        })
        .collect();
    raw.sort();
    let mut expected: Vec<String> = bad.iter().map(|b| b.to_string()).collect();
    expected.push(oversized);
    expected.sort();
    assert_eq!(raw, expected, "every bad message, once, with its bytes");
    let left = client(&["count", &queue.0], "");
    assert_eq!(left["ready"], 0, "the copy acknowledged what it read");
}

#[test]
fn a_json_lines_file_copied_to_a_queue_reaches_pika() {
    require_broker();
    let queue = TestQueue::new("copy-out");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("orders.jsonl");
    let lines: String = (0..400)
        .map(|i| format!("{{\"id\": {i}, \"total\": {i}.25}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let from = format!("jsonl://{}", input.display());
    let to = format!("amqp://{BROKER}/{}", queue.0);
    eddy_copy(&["--from", &from, "--to", &to]).expect("eddy copy succeeds");

    let mut ids: Vec<u64> = consume(&queue, 1000)
        .iter()
        .map(|message| {
            assert_eq!(message["delivery_mode"], 2, "persistent");
            let record: Value = serde_json::from_str(message["body"].as_str().unwrap()).unwrap();
            record["id"].as_u64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..400).collect::<Vec<u64>>(), "every record once");
}

#[test]
fn a_mistyped_option_and_an_unreachable_broker_are_clear_errors() {
    require_broker();
    assert_clear_source_errors(SourceErrors {
        mistyped: format!("amqp://{BROKER}/orders?prefech=10"),
        mistyped_says: ["unknown option 'prefech'", "prefetch"],
        unreachable: |closed| format!("amqp://{closed}/orders"),
        unreachable_says: "cannot connect to RabbitMQ at",
        within: Duration::from_secs(6),
    });
}
