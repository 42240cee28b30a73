//! `eddy example orders` against the real brokers (`bash scripts/brokers.sh up`): orders
//! published to RabbitMQ with pika and clicks to Kafka with kafka-python; the pipeline's
//! Parquet (read back with pyarrow) equals the batch reference of the windowed join, and every
//! large order — and only those — reaches the alert webhook (a real HTTP server: Eddy's own
//! webhook source, in this test). Malformed orders land in the dead-letter file.

#![cfg(all(feature = "amqp", feature = "kafka", feature = "http"))]

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eddy_connectors::bridge::StopRule;
use eddy_connectors::webhook::{WebhookConfig, WebhookSource};
use eddy_connectors::EventTimeOf;
use eddy_engine::testing::CollectSink;
use eddy_engine::{Pipeline, Runtime, WatermarkConfig};
use eddy_queries::examples::orders::{reference, Click, Order, OrderClick};

#[path = "../../connectors/tests/clients/amqp_client.rs"]
#[allow(dead_code)] // the queue helpers this test does not use
mod amqp_client;

use amqp_client::{require_broker, TestQueue};

const WINDOW_MS: u64 = 10_000;
const THRESHOLD: f64 = 150.0;

/// Runs a client script with `stdin`, returning its JSON answer.
fn client(script: &str, args: &[&str], stdin: &str) -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../connectors/tests/clients/");
    let mut child = Command::new("python3")
        .arg(format!("{path}{script}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script} {args:?} failed (is the broker up? bash scripts/brokers.sh up): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn lines<T: serde::Serialize>(records: &[T]) -> String {
    records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect()
}

fn parquet_rows(dir: &std::path::Path) -> Vec<OrderClick> {
    let script = "import json, sys, pyarrow as pa, pyarrow.parquet as pq\n\
                  t = pq.read_table(sys.argv[1])\n\
                  assert str(t.schema.field('window_start').type) == 'timestamp[ms]', t.schema\n\
                  ms = lambda n: str(t.schema.field(n).type).startswith('timestamp')\n\
                  cols = {n: t[n].cast(pa.int64()) if ms(n) else t[n] for n in t.column_names}\n\
                  print(json.dumps(pa.table(cols).to_pylist()))";
    let out = Command::new("python3")
        .args(["-c", script, dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sorted(mut rows: Vec<OrderClick>) -> Vec<OrderClick> {
    rows.sort_by(|a, b| {
        (a.order_id, a.click_ts, &a.page)
            .partial_cmp(&(b.order_id, b.click_ts, &b.page))
            .unwrap()
    });
    rows
}

#[test]
fn orders_and_clicks_are_joined_into_parquet_and_large_orders_call_the_webhook() {
    require_broker();
    let tag = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let queue = TestQueue::new("example-orders");
    let topic = format!("example-clicks-{tag}");
    client("kafka.py", &["create", &topic, "--partitions", "2"], "");

    // Ten minutes of activity ending a minute ago: 120 orders and 600 clicks of 12 customers.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let base = now - 11 * 60_000;
    let orders: Vec<Order> = (0..120)
        .map(|i| Order {
            order_id: i,
            customer: format!("c{}", i % 12),
            total: (i * 37 % 200) as f64 + 0.5,
            ts: base + i * 5_000,
        })
        .collect();
    let clicks: Vec<Click> = (0..600)
        .map(|i| Click {
            customer: format!("c{}", (i * 7) % 12),
            page: format!("/p/{}", i % 9),
            ts: base + i * 1_000,
        })
        .collect();
    let mut order_lines = lines(&orders);
    order_lines.push_str("{\"order_id\": \"not a number\"}\nnot json at all\n");
    client("amqp.py", &["publish", &queue.0], &order_lines);
    client("kafka.py", &["publish", &topic], &lines(&clicks));

    // The alert receiver: a real webhook, collecting what it is sent, with its write-ahead
    // log in the test's directory (not the default one).
    let receiver_log = tempfile::tempdir().unwrap();
    let receiver = WebhookSource::<Order>::bind(
        WebhookConfig {
            stop: StopRule::never().idle_exit(Duration::from_secs(8)),
            ..WebhookConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), "/big-orders")
        }
        .wal(receiver_log.path()),
        EventTimeOf::Arrival,
    )
    .unwrap();
    let alert_url = receiver.url().to_string();
    let alerts = CollectSink::new();
    let receiving = Pipeline::new("alerts");
    receiving
        .source("alerts", receiver, WatermarkConfig::default())
        .sink("collected", alerts.clone());
    let receiving = Runtime::new(1).start(&receiving).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pairs");
    let dead = dir.path().join("dead.jsonl");
    let run = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["example", "orders"])
        .args(["--orders", &format!("amqp://127.0.0.1:5672/{}", queue.0)])
        .args([
            "--clicks",
            &format!("kafka://127.0.0.1:9092/{topic}?start=earliest&group=example-{tag}"),
        ])
        .args(["--out", out.to_str().unwrap()])
        .args(["--alert", &alert_url])
        .args(["--threshold", &THRESHOLD.to_string()])
        .args(["--window", "10s", "--idle-exit", "3s", "--workers", "2"])
        .args(["--dead-letters", &format!("jsonl://{}", dead.display())])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "eddy example orders failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );

    let expected = reference(&orders, &clicks, WINDOW_MS);
    assert!(
        expected.len() >= 50,
        "the reference has {} pairs: too few to prove much",
        expected.len()
    );
    assert_eq!(
        sorted(parquet_rows(&out)),
        sorted(expected),
        "the Parquet pairs"
    );

    receiving.join().unwrap();
    let mut got: Vec<u64> = alerts.rows().iter().map(|(_, o)| o.order_id).collect();
    got.sort();
    let large: Vec<u64> = orders
        .iter()
        .filter(|o| o.total > THRESHOLD)
        .map(|o| o.order_id)
        .collect();
    assert!(!large.is_empty());
    assert_eq!(
        got, large,
        "every large order, and only those, called the webhook once"
    );

    // A single-file sink: worker 0 writes dead.jsonl, worker 1 dead.jsonl.1.
    let letters: Vec<serde_json::Value> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("dead.jsonl")
        })
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(letters
        .iter()
        .all(|d| d["stage"] == "orders" && d["kind"] == "decode"));
    assert!(letters
        .iter()
        .all(|d| d["location"].as_str().unwrap().contains("delivery tag")));
}
