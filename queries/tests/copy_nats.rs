//! `eddy copy` with NATS (127.0.0.1:4222 with JetStream, `bash scripts/brokers.sh up`), through
//! the real binary and nats-py: a JetStream stream to Parquet (read back with pyarrow) with its
//! bad messages in a dead-letter stream, a JSON lines file to a core subject and to a stream,
//! and the errors for a mistyped option and an unreachable server.

#![cfg(feature = "nats")]

mod common;

use common::{assert_clear_source_errors, eddy_copy, pyarrow_ids, SourceErrors};

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

#[path = "../../connectors/tests/clients/nats_client.rs"]
mod nats_client;

use nats_client::{
    assert_each_once, client, ids_of, number, require_nats, subject, Running, Stream, ADDRESS,
};

#[test]
fn a_stream_copied_to_parquet_with_its_bad_messages_in_a_dead_letter_stream() {
    require_nats();
    let stream = Stream::create();
    let produced = client(&[
        "produce",
        &stream.subject,
        "300",
        "--stream",
        &stream.name,
        "--bad-every",
        "60",
        "--bad-kinds",
        "json,bytes",
    ]);
    let bad = produced["bad"].as_array().unwrap();
    assert_eq!(bad.len(), 5);
    let dead = Stream::named();

    let dir = tempfile::tempdir().unwrap();
    let from = format!(
        "nats://{ADDRESS}/{}?stream={}&durable=copy",
        stream.subject, stream.name
    );
    let to = format!("parquet://{}", dir.path().display());
    let dead_uri = format!(
        "nats://{ADDRESS}/{}?stream={}&create_stream=true",
        dead.subject, dead.name
    );
    eddy_copy(&[
        "--from",
        &from,
        "--to",
        &to,
        "--limit",
        "305",
        "--workers",
        "2",
        "--dead-letters",
        &dead_uri,
    ])
    .unwrap();

    assert_each_once(pyarrow_ids(dir.path()), 300, "Parquet");
    let letters = dead.records(bad.len());
    let locations: BTreeSet<String> = letters["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|letter: &Value| {
            assert_eq!(letter["kind"], "decode", "{letter}");
            letter["location"].as_str().unwrap().to_string()
        })
        .collect();
    let expected: BTreeSet<String> = bad
        .iter()
        .map(|b| format!("stream {} seq {}", stream.name, number(b, "seq")))
        .collect();
    assert_eq!(
        locations, expected,
        "every bad message, once, at its sequence"
    );
    let consumer = stream.consumer("copy");
    assert_eq!(
        (
            number(&consumer, "num_pending"),
            number(&consumer, "num_ack_pending")
        ),
        (0, 0),
        "the copy acknowledged what it read: {consumer}"
    );
}

#[test]
fn a_json_lines_file_copied_to_a_subject_and_to_a_stream_reaches_nats_py() {
    require_nats();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("orders.jsonl");
    let lines: String = (0..400)
        .map(|i| format!("{{\"id\": {i}, \"total\": {i}.25}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let from = format!("jsonl://{}", input.display());

    let subject = subject();
    let consumer = Running::subscribed(&["consume", &subject, "400", "--timeout", "60"]);
    eddy_copy(&[
        "--from",
        &from,
        "--to",
        &format!("nats://{ADDRESS}/{subject}"),
    ])
    .unwrap();
    assert_each_once(ids_of(&consumer.finish()), 400, "core subject");

    let stream = Stream::named();
    let to = format!(
        "nats://{ADDRESS}/{}?stream={}&create_stream=true",
        stream.subject, stream.name
    );
    eddy_copy(&["--from", &from, "--to", &to]).unwrap();
    assert_eq!(number(&stream.info(), "messages"), 400);
    assert_each_once(ids_of(&stream.records(400)), 400, "stream");
}

#[test]
fn a_mistyped_option_and_an_unreachable_server_are_clear_errors() {
    require_nats();
    assert_clear_source_errors(SourceErrors {
        mistyped: format!("nats://{ADDRESS}/orders?stream=ORDERS&durabel=x"),
        mistyped_says: ["unknown option 'durabel'", "durable"],
        unreachable: |closed| format!("nats://{closed}/orders"),
        unreachable_says: "cannot connect to NATS at",
        within: Duration::from_secs(8),
    });
}
