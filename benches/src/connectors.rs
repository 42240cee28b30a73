//! Records/s through each broker source into the counting sink — 1 KB JSON records on
//! loopback, decoded into JSON values (the path `eddy copy` takes) — beside the broker's own
//! Python client reading the same number of the same records, so the ratio shows whether Eddy
//! or the broker (or its client) is the limit.
//!
//! For each broker: the Python client of its tests (`connectors/tests/clients/*.py
//! bench-produce`) publishes N records, Eddy reads them (`endpoints::source` with a record
//! limit of N, one worker), then the client reads the same N (`bench-consume`, from a second
//! copy of the data where reading consumes it). Eddy's time runs from the moment its workers
//! are ready (connections made) to the last record counted; the client's from its first
//! record to its last. The brokers must be up: `bash scripts/brokers.sh up`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use eddy_connectors::bridge::StopRule;
use eddy_connectors::endpoints::{self, EndpointOptions};
use eddy_connectors::{CountSink, Endpoint, EventTimeOf};
use eddy_engine::{Pipeline, Runtime, WatermarkConfig};

use crate::flink::repo_root;
use crate::latency::mib;
use crate::runner::{peak_rss, reset_peak_rss};

/// One broker's measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectorRun {
    /// The broker and mode (`RabbitMQ`, `Kafka (tansu)`, `NATS JetStream`, `MQTT`).
    pub connector: String,
    /// Records read.
    pub records: u64,
    /// Eddy's seconds for them.
    pub eddy_seconds: f64,
    /// The Python client's seconds for the same number.
    pub client_seconds: f64,
    /// Eddy's peak RSS, when the OS tells.
    pub peak_rss: Option<u64>,
}

impl ConnectorRun {
    /// Eddy's records/s.
    pub fn eddy_rate(&self) -> f64 {
        self.records as f64 / self.eddy_seconds.max(1e-9)
    }

    /// The client's records/s.
    pub fn client_rate(&self) -> f64 {
        self.records as f64 / self.client_seconds.max(1e-9)
    }
}

/// How one broker is driven: its client script, how to make a fresh place for the records,
/// and the source URI Eddy reads them from.
struct Broker {
    name: &'static str,
    script: &'static str,
    /// Client arguments that publish `n` records to `place`.
    produce: fn(&str, u64) -> Vec<String>,
    /// Client arguments that read `n` records from `place` as fast as it can.
    consume: fn(&str, u64) -> Vec<String>,
    /// The URI Eddy reads `place` from.
    uri: fn(&str) -> String,
    /// Whether reading consumes the records (a queue), so the client needs its own copy.
    consuming: bool,
    /// Client arguments to run first (create a topic or stream), if any.
    setup: fn(&str) -> Option<Vec<String>>,
    /// Client arguments that remove what the run left on the broker, if any.
    teardown: fn(&str) -> Vec<Vec<String>>,
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

const BROKERS: &[Broker] = &[
    Broker {
        name: "RabbitMQ (queue)",
        script: "amqp.py",
        produce: |q, n| args(&["bench-produce", q, &n.to_string()]),
        consume: |q, n| args(&["bench-consume", q, &n.to_string()]),
        uri: |q| format!("amqp://127.0.0.1:5672/{q}"),
        consuming: true,
        setup: |_| None,
        teardown: |q| vec![args(&["delete", q])],
    },
    Broker {
        name: "Kafka (tansu, 2 partitions)",
        script: "kafka.py",
        produce: |t, n| args(&["bench-produce", t, &n.to_string()]),
        consume: |t, n| args(&["bench-consume", t, &n.to_string()]),
        uri: |t| format!("kafka://127.0.0.1:9092/{t}?start=earliest&group={t}"),
        consuming: false,
        setup: |t| Some(args(&["create", t, "--partitions", "2"])),
        // tansu 0.6 deletes every topic when asked to delete one: the topic stays.
        teardown: |_| Vec::new(),
    },
    Broker {
        name: "NATS JetStream",
        script: "nats.py",
        produce: |s, n| {
            args(&[
                "bench-produce",
                &n.to_string(),
                "--subject",
                s,
                "--stream",
                s,
            ])
        },
        consume: |s, n| {
            args(&[
                "bench-consume",
                &n.to_string(),
                "--subject",
                s,
                "--stream",
                s,
            ])
        },
        uri: |s| format!("nats://127.0.0.1:4222/{s}?stream={s}&durable={s}"),
        consuming: false,
        setup: |s| Some(args(&["stream-add", s, s])),
        teardown: |s| vec![args(&["stream-rm", s])],
    },
    Broker {
        name: "MQTT (QoS 1, persistent session)",
        script: "mqtt.py",
        produce: |t, n| {
            let sessions = format!("{t}-eddy,{t}-client");
            args(&[
                "bench-produce",
                &n.to_string(),
                "--topic",
                t,
                "--sessions",
                &sessions,
            ])
        },
        consume: |t, n| {
            let client = format!("{t}-client");
            args(&[
                "bench-consume",
                &n.to_string(),
                "--topic",
                t,
                "--client-id",
                &client,
            ])
        },
        uri: |t| format!("mqtt://127.0.0.1:1883/{t}?client_id={t}-eddy"),
        consuming: false,
        setup: |_| None,
        teardown: |t| {
            let (eddy, client) = (format!("{t}-eddy"), format!("{t}-client"));
            vec![
                args(&["forget", "--client-id", &eddy]),
                args(&["forget", "--client-id", &client]),
            ]
        },
    },
];

fn script(name: &str) -> PathBuf {
    repo_root().join("connectors/tests/clients").join(name)
}

/// Runs a client script and returns its JSON answer.
fn client(script_name: &str, arguments: &[String]) -> Result<serde_json::Value> {
    let out = Command::new("python3")
        .arg(script(script_name))
        .args(arguments)
        .output()
        .with_context(|| format!("cannot run python3 {script_name}"))?;
    if !out.status.success() {
        bail!(
            "{script_name} {arguments:?} failed (are the brokers up? bash scripts/brokers.sh up): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let line = line
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line).with_context(|| format!("{script_name} printed no JSON: {line}"))
}

/// Eddy reads `records` records from `uri` into the counting sink: seconds and peak RSS.
fn eddy_reads(uri: &str, records: u64) -> Result<(f64, Option<u64>)> {
    let endpoint: Endpoint = uri.parse()?;
    let options = EndpointOptions {
        stop: StopRule::never().limit(records),
        event_time: EventTimeOf::Arrival,
        ..EndpointOptions::default()
    };
    let pipeline = Pipeline::new("connector-bench");
    pipeline
        .source(
            "broker",
            endpoints::source(&endpoint, &options)?,
            WatermarkConfig::default(),
        )
        .sink("count", CountSink::new());
    reset_peak_rss();
    let summary = Runtime::new(1).run(&pipeline)?;
    if summary.events() != records {
        bail!(
            "Eddy read {} of {records} records from {uri}",
            summary.events()
        );
    }
    Ok((summary.processing.as_secs_f64(), peak_rss()))
}

/// Measures every broker with `records` records each.
pub fn run_all(records: u64) -> Result<Vec<ConnectorRun>> {
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let mut runs = Vec::new();
    for (i, broker) in BROKERS.iter().enumerate() {
        let place = format!("eddy-bench-{stamp}-{i}");
        if let Some(setup) = (broker.setup)(&place) {
            client(broker.script, &setup)?;
        }
        client(broker.script, &(broker.produce)(&place, records))?;
        let (eddy_seconds, peak_rss) = eddy_reads(&(broker.uri)(&place), records)?;
        if broker.consuming {
            client(broker.script, &(broker.produce)(&place, records))?;
        }
        let answer = client(broker.script, &(broker.consume)(&place, records))?;
        let client_seconds = answer["seconds"].as_f64().with_context(|| {
            format!("{} bench-consume gave no seconds: {answer}", broker.script)
        })?;
        for teardown in (broker.teardown)(&place) {
            client(broker.script, &teardown)?;
        }
        let run = ConnectorRun {
            connector: broker.name.to_string(),
            records,
            eddy_seconds,
            client_seconds,
            peak_rss,
        };
        eprintln!(
            "{}: Eddy {:.0} records/s, the Python client {:.0} records/s",
            run.connector,
            run.eddy_rate(),
            run.client_rate()
        );
        runs.push(run);
    }
    Ok(runs)
}

/// The report's section on connectors.
pub fn report(runs: &[ConnectorRun], command: &str) -> String {
    let mut md = String::from("\n## Connectors: records/s from each broker\n\n");
    let _ = writeln!(
        md,
        "Each broker source read N records of about 1 KB of JSON, published beforehand by the \
         broker's Python client (the one its tests use), into the counting sink: one worker, \
         records decoded into JSON values as `eddy copy` does, a record limit of N. Beside it, \
         the same client reading the same N records as fast as it can. Eddy's time is from its \
         workers being ready (connected) to the last record; the client's from its first record \
         to its last. Generated by `{command}`.\n"
    );
    md.push_str("| broker | records | Eddy records/s | Python client records/s | Eddy ÷ client | Eddy MB/s | peak RSS MiB |\n");
    md.push_str("|---|---|---|---|---|---|---|\n");
    for r in runs {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} | {:.1}× | {:.1} | {} |",
            r.connector,
            r.records,
            r.eddy_rate(),
            r.client_rate(),
            r.eddy_rate() / r.client_rate().max(1e-9),
            r.eddy_rate() * 1024.0 / 1e6,
            mib(r.peak_rss),
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_has_a_row_per_broker_with_its_ratio() {
        let run = ConnectorRun {
            connector: "X".into(),
            records: 1000,
            eddy_seconds: 0.01,
            client_seconds: 0.1,
            peak_rss: Some(20 << 20),
        };
        assert_eq!(run.eddy_rate(), 100_000.0);
        let md = report(&[run], "cmd");
        assert!(
            md.contains("| X | 1000 | 100000 | 10000 | 10.0× | 102.4 | 20 |"),
            "{md}"
        );
    }
}
