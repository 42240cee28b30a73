//! `eddy copy` with MQTT (Mosquitto on 127.0.0.1:1883, `bash scripts/brokers.sh up`), through
//! the real binary and paho-mqtt: a wildcard filter's persistent session to Parquet (read back
//! with pyarrow) with its bad messages on a dead-letter topic, a JSON lines file to a topic, and
//! the errors for a mistyped option and an unreachable broker.

#![cfg(feature = "mqtt")]

mod common;

use common::{assert_clear_source_errors, eddy_copy, pyarrow_ids, SourceErrors};

use std::time::Duration;

use serde_json::Value;

#[path = "../../connectors/tests/clients/mqtt_client.rs"]
mod mqtt_client;

use mqtt_client::{
    assert_each_once, client, forget, ids, require_mosquitto, unique, Running, BROKER,
};

#[test]
fn a_filter_copied_to_parquet_with_its_bad_messages_on_a_dead_letter_topic() {
    require_mosquitto();
    let base = unique("copy-in");
    let client_id = base.replace('/', "-");
    // The persistent session Eddy reads through, created before anything is published.
    client(&[
        "subscribe",
        "--topic",
        &format!("{base}/#"),
        "--client-id",
        &client_id,
    ]);
    let sent = client(&[
        "produce",
        "--topic",
        &format!("{base}/orders"),
        "--count",
        "300",
        "--bad-every",
        "50",
    ]);
    let bad = sent["bad"].as_array().unwrap().len();
    assert_eq!(bad, 6);
    let dead_topic = unique("copy-dead");
    let dead_args = [
        "consume",
        "--topic",
        &dead_topic,
        "--messages",
        "6",
        "--idle",
        "30",
    ];
    let dead = Running::subscribed(&dead_args);

    let dir = tempfile::tempdir().unwrap();
    // '#' is written %23 in a URI.
    let from = format!("mqtt://{BROKER}/{base}/%23?client_id={client_id}");
    let to = format!("parquet://{}", dir.path().display());
    let dead_uri = format!("mqtt://{BROKER}/{dead_topic}");
    eddy_copy(&[
        "--from",
        &from,
        "--to",
        &to,
        "--workers",
        "2",
        "--idle-exit",
        "3s",
        "--dead-letters",
        &dead_uri,
    ])
    .expect("eddy copy succeeds");

    let good = ids(&sent["acked"]);
    assert_eq!(
        pyarrow_ids(dir.path()),
        good,
        "every good record in Parquet, once"
    );
    let letters = dead.finish();
    let raw = letters["raw"].as_array().unwrap();
    assert_eq!(raw.len(), bad, "{letters}");
    // Messages that are not JSON do not decode at the source; records whose id is a string
    // decode (the copy's records are dynamic) but do not fit the Parquet column.
    let mut kinds = Vec::new();
    for letter in raw {
        let letter: Value = serde_json::from_str(letter.as_str().unwrap()).unwrap();
        let location = letter["location"].as_str().unwrap();
        match (
            letter["kind"].as_str().unwrap(),
            letter["stage"].as_str().unwrap(),
        ) {
            ("decode", "from") => assert!(
                location.starts_with(&format!("topic {base}/orders packet id ")),
                "{letter}"
            ),
            ("delivery", "to") => assert!(location.ends_with(".parquet"), "{letter}"),
            _ => panic!("unexpected dead letter {letter}"),
        }
        kinds.push(letter["kind"].as_str().unwrap().to_string());
    }
    kinds.sort();
    assert_eq!(
        kinds,
        ["decode", "decode", "decode", "delivery", "delivery", "delivery"]
    );
    // The copy acknowledged what it read: the session holds nothing more.
    let rest = client(&[
        "consume",
        "--topic",
        &format!("{base}/#"),
        "--client-id",
        &client_id,
        "--persistent",
        "--no-subscribe",
        "--idle",
        "1",
    ]);
    assert_eq!(rest["count"], 0, "{rest}");
    forget(&client_id);
}

#[test]
fn a_json_lines_file_copied_to_a_topic_reaches_paho() {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("orders.jsonl");
    let lines: String = (0..400)
        .map(|i| format!("{{\"id\": {i}, \"total\": {i}.25}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let topic = unique("copy-out");
    let args = [
        "consume", "--topic", &topic, "--count", "400", "--idle", "10",
    ];
    let consumer = Running::subscribed(&args);
    eddy_copy(&[
        "--from",
        &format!("jsonl://{}", input.display()),
        "--to",
        &format!("mqtt://{BROKER}/{topic}"),
    ])
    .expect("eddy copy succeeds");
    let got = consumer.finish();
    assert_each_once(&ids(&got["ids"]), 400, "read by paho");
}

#[test]
fn a_mistyped_option_and_an_unreachable_broker_are_clear_errors() {
    require_mosquitto();
    assert_clear_source_errors(SourceErrors {
        mistyped: format!("mqtt://{BROKER}/orders?client_idd=x"),
        mistyped_says: ["unknown option 'client_idd'", "client_id"],
        unreachable: |closed| format!("mqtt://{closed}/orders"),
        unreachable_says: "cannot connect to the MQTT broker at",
        within: Duration::from_secs(8),
    });
}
