//! The MQTT connector against a real Mosquitto on 127.0.0.1:1883 (`bash scripts/brokers.sh up`),
//! with paho-mqtt (tests/clients/mqtt.py) as the client outside Eddy: paho publishes and Eddy
//! reads (one and two workers, into a persistent session while Eddy is away and while it runs),
//! Eddy publishes and paho reads, a broker restart in the middle of reading and of writing,
//! malformed records into the dead-letter sink, records the sink cannot send, an unreachable
//! broker, and a slow sink that leaves the backlog on the broker.
//!
//! The tests run one at a time (one of them restarts the broker).
#![cfg(feature = "mqtt")]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use eddy_connectors::bridge::{BrokerSource, StopRule};
use eddy_connectors::mqtt::{MqttSink, MqttSinkConfig, MqttSource, MqttSourceConfig};
use eddy_connectors::ReplaySource;
use eddy_engine::testing::CollectSink;
use eddy_engine::{
    ConnectorError, DeadLetter, Partition, Pipeline, Record, Runtime, Sink, SinkReport, SinkWriter,
    Source, WatermarkConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[path = "clients/mqtt_client.rs"]
mod mqtt_client;
#[path = "clients/slow_proxy.rs"]
mod slow_proxy;

use mqtt_client::{
    assert_each_once, client, forget, ids, require_mosquitto, unique, Running, BROKER,
};
use slow_proxy::SlowProxy;

const BROKERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/brokers.sh");

/// One test at a time: the restart test would disturb the others' counts.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Reading {
    id: u64,
    value: i64,
}

/// Takes the test lock and checks that Mosquitto is up.
fn broker() -> MutexGuard<'static, ()> {
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    require_mosquitto();
    guard
}

/// A source of `topic` with its own client id (returned), quick to give up on a dead broker.
fn source_config(topic: &str) -> (MqttSourceConfig, String) {
    let client_id = topic.replace('/', "-");
    let mut config = MqttSourceConfig::new(BROKER, &[topic]);
    config.client_id = Some(client_id.clone());
    config.connection.reconnect_timeout = Duration::from_secs(20);
    (config, client_id)
}

/// Opens and closes the source once, so that its session exists and keeps what is published
/// before the pipeline runs.
fn create_session(config: &MqttSourceConfig) {
    let source = MqttSource::<Reading>::new(config.clone());
    drop(source.open(Partition { index: 0, count: 1 }).unwrap());
}

fn received(out: &CollectSink<Reading>) -> Vec<u64> {
    let mut ids: Vec<u64> = out.rows().iter().map(|(_, r)| r.id).collect();
    ids.sort_unstable();
    ids
}

fn readings(n: u64) -> Vec<Record<Reading>> {
    (0..n)
        .map(|id| {
            (
                1_700_000_000_000 + id,
                Reading {
                    id,
                    value: id as i64 * 2,
                },
            )
        })
        .collect()
}

/// Reads `topic` into a collecting sink, stopping by `stop`.
fn reading_pipeline(config: MqttSourceConfig, stop: StopRule) -> (Pipeline, CollectSink<Reading>) {
    let pipeline = Pipeline::new("mqtt-read");
    let out = CollectSink::new();
    pipeline
        .source(
            "mqtt",
            MqttSource::<Reading>::new(config).stop(stop),
            WatermarkConfig::default(),
        )
        .sink("out", out.clone());
    (pipeline, out)
}

#[test]
fn paho_publishes_and_eddy_reads_every_record_once() {
    let _broker = broker();
    const N: u64 = 2000;
    for workers in [1, 2] {
        let topic = unique("read");
        let (config, client_id) = source_config(&topic);
        create_session(&config);
        let count = N.to_string();
        let stop = StopRule::never()
            .limit(N)
            .idle_exit(Duration::from_secs(10));
        let (pipeline, out) = reading_pipeline(config, stop);
        if workers == 1 {
            // Published while Eddy is away: the persistent session keeps it.
            let sent = client(&["produce", "--topic", &topic, "--count", &count]);
            assert_eq!(ids(&sent["acked"]).len() as u64, N);
            Runtime::new(workers).run(&pipeline).unwrap();
        } else {
            // Published while the pipeline runs.
            let run = Runtime::new(workers).start(&pipeline).unwrap();
            let sent = client(&["produce", "--topic", &topic, "--count", &count]);
            assert_eq!(ids(&sent["acked"]).len() as u64, N);
            run.join().unwrap();
        }
        assert_each_once(&received(&out), N, &format!("{workers} workers"));
        // Everything was acknowledged: the session holds nothing more.
        let rest = client(&[
            "consume",
            "--topic",
            &topic,
            "--client-id",
            &client_id,
            "--persistent",
            "--no-subscribe",
            "--idle",
            "1",
        ]);
        assert_eq!(
            rest["count"], 0,
            "{workers} workers: left in the session: {rest}"
        );
        forget(&client_id);
    }
}

#[test]
fn eddy_publishes_and_paho_reads_every_record_once() {
    let _broker = broker();
    const N: u64 = 2000;
    for workers in [1, 2] {
        let topic = unique("write");
        let count = N.to_string();
        let args = [
            "consume", "--topic", &topic, "--count", &count, "--idle", "10",
        ];
        let consumer = Running::subscribed(&args);
        let pipeline = Pipeline::new("mqtt-write");
        pipeline
            .source(
                "readings",
                ReplaySource::round_robin(readings(N), workers),
                WatermarkConfig::default(),
            )
            .sink(
                "mqtt",
                MqttSink::<Reading>::new(MqttSinkConfig::new(BROKER, &topic)),
            );
        let summary = Runtime::new(workers).run(&pipeline).unwrap();
        assert_eq!(summary.output_rows(), N);
        let got = consumer.finish();
        assert_each_once(&ids(&got["ids"]), N, &format!("{workers} workers"));
        assert_eq!(got["dups"], 0);
    }
}

/// `commit` waits for every PUBACK in flight without disconnecting: what was written is in
/// the subscribers' sessions before `finish`, and the writer goes on writing. The publishes
/// pass a proxy that holds them back for 2 s, and the reader gives up after 0.5 s without a
/// message, so only a commit that waits for the broker lets it read them all.
#[test]
fn a_commit_makes_everything_written_so_far_readable_before_finish() {
    let _broker = broker();
    const N: u64 = 1000;
    let topic = unique("commit");
    // Two persistent sessions keep what is published: one read after each commit.
    let sessions: Vec<String> = (1..=2)
        .map(|round| format!("{}-reader-{round}", topic.replace('/', "-")))
        .collect();
    for session in &sessions {
        client(&["subscribe", "--topic", &topic, "--client-id", session]);
    }
    let proxy = SlowProxy::start(BROKER);
    let mut config = MqttSinkConfig::new(&proxy.address, &topic);
    // Room for every publish to await its PUBACK: a write returns without waiting.
    config.max_inflight = 2 * N as u16;
    let sink = MqttSink::<Reading>::new(config);
    let mut writer = sink.open(Partition { index: 0, count: 1 }).unwrap();
    proxy.delay(Duration::from_secs(2));
    let all = readings(2 * N);
    for (round, session) in (1..=2).zip(&sessions) {
        let mut batch = all[((round - 1) * N) as usize..(round * N) as usize].to_vec();
        writer.write(&mut batch).unwrap();
        writer.commit().unwrap();
        assert!(writer.undeliverable().is_empty(), "round {round}");
        // Everything written so far waits in the session: read it while the writer is open.
        let count = (round * N).to_string();
        let got = client(&[
            "consume",
            "--topic",
            &topic,
            "--client-id",
            session,
            "--persistent",
            "--no-subscribe",
            "--count",
            &count,
            "--idle",
            "0.5",
        ]);
        assert_each_once(
            &ids(&got["ids"]),
            round * N,
            &format!("round {round}, before finish"),
        );
    }
    assert_eq!(writer.finish().unwrap().rows, 2 * N);
    for session in &sessions {
        forget(session);
    }
}

#[test]
fn a_broker_restart_loses_nothing_the_broker_acknowledged() {
    let _broker = broker();
    restart_while_reading();
    restart_while_writing();
}

fn restart_broker() {
    let out = Command::new("bash")
        .args([BROKERS, "restart", "mosquitto"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restarting Mosquitto failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// paho publishes at QoS 1 while Eddy reads; Mosquitto restarts in the middle. Every message
/// paho got a PUBACK for reaches the pipeline; some may arrive twice (at-least-once).
fn restart_while_reading() {
    const N: u64 = 1500;
    let topic = unique("restart-read");
    let (config, client_id) = source_config(&topic);
    create_session(&config);
    let stop = StopRule::never().idle_exit(Duration::from_secs(8));
    let (pipeline, out) = reading_pipeline(config, stop);
    let run = Runtime::new(1).start(&pipeline).unwrap();
    let count = N.to_string();
    let args = [
        "produce",
        "--topic",
        &topic,
        "--count",
        &count,
        "--delay-ms",
        "2",
    ];
    let producer = Running::spawn(&args);
    std::thread::sleep(Duration::from_millis(1200));
    restart_broker();
    let sent = producer.finish();
    run.join().unwrap();
    let acked = ids(&sent["acked"]);
    assert!(
        acked.len() as u64 > N / 2,
        "paho got few PUBACKs: {}",
        acked.len()
    );
    let got = received(&out);
    let mut distinct = got.clone();
    distinct.dedup();
    let missing: Vec<u64> = acked
        .iter()
        .filter(|id| distinct.binary_search(id).is_err())
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged by the broker but lost: {missing:?}"
    );
    eprintln!(
        "restart while reading: {} acknowledged, {} received, {} twice",
        acked.len(),
        got.len(),
        got.len() - distinct.len()
    );
    forget(&client_id);
}

/// Eddy publishes at QoS 1, slowly, while Mosquitto restarts; paho reads through a persistent
/// session. Every record reaches paho: the sink publishes again what was not acknowledged.
fn restart_while_writing() {
    const N: u64 = 1500;
    let topic = unique("restart-write");
    let reader_id = format!("{}-reader", topic.replace('/', "-"));
    let count = N.to_string();
    let args = [
        "consume",
        "--topic",
        &topic,
        "--count",
        &count,
        "--idle",
        "20",
        "--client-id",
        &reader_id,
        "--persistent",
    ];
    let consumer = Running::subscribed(&args);
    let pipeline = Pipeline::new("mqtt-write-restart");
    let mut config = MqttSinkConfig::new(BROKER, &topic);
    config.connection.reconnect_timeout = Duration::from_secs(20);
    pipeline
        .source(
            "readings",
            ReplaySource::round_robin(readings(N), 1).paced(500.0),
            WatermarkConfig::default(),
        )
        .sink("mqtt", MqttSink::<Reading>::new(config));
    let run = Runtime::new(1).start(&pipeline).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    restart_broker();
    let summary = run.join().unwrap();
    assert_eq!(summary.output_rows(), N);
    let got = consumer.finish();
    let mut distinct = ids(&got["ids"]);
    let all = distinct.len();
    distinct.dedup();
    assert_each_once(&distinct, N, "read by paho, duplicates aside");
    eprintln!(
        "restart while writing: {N} published, {all} read, {} twice",
        all - distinct.len()
    );
    forget(&reader_id);
}

#[test]
fn malformed_records_are_dead_lettered_with_their_location() {
    let _broker = broker();
    let topic = unique("malformed");
    let (config, client_id) = source_config(&topic);
    create_session(&config);
    // Every 10th message is bad: alternately not JSON, and an id that is not a number.
    let sent = client(&[
        "produce",
        "--topic",
        &topic,
        "--count",
        "300",
        "--bad-every",
        "10",
    ]);
    let dead = CollectSink::<DeadLetter>::new();
    let stop = StopRule::never()
        .limit(300)
        .idle_exit(Duration::from_secs(5));
    let (pipeline, out) = reading_pipeline(config, stop);
    pipeline.dead_letters(dead.clone());
    let summary = Runtime::new(1).run(&pipeline).unwrap();
    assert_eq!(
        received(&out),
        ids(&sent["acked"]),
        "every good record arrives"
    );
    let mut bad: Vec<String> = sent["bad"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    assert_eq!(bad.len(), 30);
    let letters = dead.values();
    assert_eq!(letters.len(), 30, "{letters:?}");
    assert_eq!(summary.dead_lettered(), 30);
    let prefix = format!("topic {topic} packet id ");
    for letter in &letters {
        assert_eq!(
            (letter.kind.as_str(), letter.stage.as_str()),
            ("decode", "mqtt")
        );
        assert!(letter.location.starts_with(&prefix), "{}", letter.location);
        assert!(letter.error.contains("not valid JSON"), "{}", letter.error);
    }
    let mut raw: Vec<String> = letters.iter().map(|l| l.raw.clone()).collect();
    raw.sort();
    bad.sort();
    assert_eq!(raw, bad, "each dead letter carries its message's bytes");
    // Dead-lettered messages are acknowledged too: nothing comes back.
    let rest = client(&[
        "consume",
        "--topic",
        &topic,
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
fn records_the_sink_cannot_send_are_dead_lettered_and_the_rest_arrive() {
    let _broker = broker();
    let base = unique("by-field");
    let filter = format!("{base}/#");
    let args = [
        "consume", "--topic", &filter, "--count", "50", "--idle", "10",
    ];
    let consumer = Running::subscribed(&args);
    // Records name their topic: a good one, none, a wildcard, or one too large to send.
    let records: Vec<Record<Value>> = (0..100u64)
        .map(|id| {
            let record = match id % 4 {
                0 => json!({"id": id, "room": format!("{base}/kitchen")}),
                1 => json!({"id": id}),
                2 => json!({"id": id, "room": format!("{base}/hall")}),
                _ if id == 3 => {
                    json!({"id": id, "room": format!("{base}/hall"), "pad": "x".repeat(2000)})
                }
                _ => json!({"id": id, "room": format!("{base}/+")}),
            };
            (id, record)
        })
        .collect();
    let mut config = MqttSinkConfig::new(BROKER, "");
    config.topic_field = Some("room".into());
    config.connection.max_packet_size = 1024;
    let dead = CollectSink::<DeadLetter>::new();
    let pipeline = Pipeline::new("mqtt-by-field");
    pipeline.dead_letters(dead.clone());
    pipeline
        .source(
            "records",
            ReplaySource::round_robin(records, 1),
            WatermarkConfig::default(),
        )
        .sink("mqtt", MqttSink::<Value>::new(config));
    Runtime::new(1).run(&pipeline).unwrap();
    let got = consumer.finish();
    let expected: Vec<u64> = (0..100).filter(|id| id % 2 == 0).collect();
    assert_eq!(ids(&got["ids"]), expected);
    let topics: BTreeMap<String, u64> = serde_json::from_value(got["topics"].clone()).unwrap();
    assert_eq!(
        topics,
        BTreeMap::from([
            (format!("{base}/hall"), 25),
            (format!("{base}/kitchen"), 25)
        ])
    );
    let letters = dead.values();
    assert_eq!(letters.len(), 50, "{letters:?}");
    let errors = |needle: &str| letters.iter().filter(|l| l.error.contains(needle)).count();
    assert_eq!(errors("has no topic field 'room'"), 25);
    assert_eq!(errors("not a topic to publish to"), 24);
    assert_eq!(errors("more than max_packet_size=1024"), 1);
    for letter in &letters {
        assert_eq!(
            (letter.kind.as_str(), letter.stage.as_str()),
            ("delivery", "mqtt")
        );
        assert!(
            letter.location.contains("writer 0 record "),
            "{}",
            letter.location
        );
        assert!(letter.raw.contains("\"id\""), "{}", letter.raw);
    }
}

#[test]
fn an_unreachable_broker_is_a_clear_error_within_seconds() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let source = MqttSource::<Reading>::new(MqttSourceConfig::new(address.clone(), &["a/#"]));
    let error = source
        .open(Partition { index: 0, count: 1 })
        .err()
        .expect("no broker there");
    let message = error.to_string();
    assert!(
        message.contains(&address) && message.contains("brokers.sh up"),
        "{message}"
    );
    let sink = MqttSink::<Reading>::new(MqttSinkConfig::new(address.clone(), "a/b"));
    let message = sink
        .open(Partition { index: 0, count: 1 })
        .err()
        .expect("no broker there")
        .to_string();
    assert!(message.contains(&address), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A sink that takes `delay` per record.
#[derive(Clone)]
struct SlowSink {
    delay: Duration,
    out: CollectSink<Reading>,
}

struct SlowWriter {
    delay: Duration,
    inner: Box<dyn SinkWriter<Reading>>,
}

impl Sink<Reading> for SlowSink {
    fn describe(&self) -> String {
        "slow".into()
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SinkWriter<Reading>>, ConnectorError> {
        Ok(Box::new(SlowWriter {
            delay: self.delay,
            inner: self.out.open(partition)?,
        }))
    }
}

impl SinkWriter<Reading> for SlowWriter {
    fn write(&mut self, batch: &mut Vec<Record<Reading>>) -> Result<(), ConnectorError> {
        std::thread::sleep(self.delay * batch.len() as u32);
        self.inner.write(batch)
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        self.inner.finish()
    }
}

#[test]
fn a_slow_sink_leaves_the_backlog_on_the_broker() {
    let _broker = broker();
    const N: u64 = 3000;
    const READ: u64 = 300;
    const CAPACITY: usize = 50;
    let topic = unique("slow");
    let (mut config, client_id) = source_config(&topic);
    config.capacity = CAPACITY;
    create_session(&config);
    client(&["produce", "--topic", &topic, "--count", &N.to_string()]);
    let out = CollectSink::new();
    let source = MqttSource::<Reading>::new(config).stop(StopRule::never().limit(READ));
    let stats = source.stats();
    let pipeline = Pipeline::new("mqtt-slow");
    pipeline.batch_size(10);
    pipeline
        .source("mqtt", source, WatermarkConfig::default())
        .sink(
            "slow",
            SlowSink {
                delay: Duration::from_millis(5),
                out: out.clone(),
            },
        );
    let run = Runtime::new(1).start(&pipeline).unwrap();
    // Watch what Eddy holds while the sink crawls (300 records at 5 ms each).
    let mut most = 0;
    let started = Instant::now();
    while out.rows().len() < READ as usize && started.elapsed() < Duration::from_secs(30) {
        most = most.max(stats.held());
        std::thread::sleep(Duration::from_millis(2));
    }
    run.join().unwrap();
    let eddy = received(&out);
    assert_eq!(eddy.len() as u64, READ);
    // At most the bridge channel, the hand-over queue of 64, and a few batches on their way
    // (parsed by rumqttc, being handed on by the reader): the client
    // stops reading from the connection when the queues are full, and TCP flow control holds
    // the rest at the broker — however many wait there. (Mosquitto 2.0's own in-flight
    // window, max_inflight_messages, would bound it too, but it lets more through with every
    // acknowledgement.) Plus what the sink wrote and has not committed, not acknowledged yet:
    // up to two commit intervals (1 s each) at 5 ms a record.
    let bound = CAPACITY as u64 + 64 + 100 + 400;
    assert!(
        most >= CAPACITY as u64,
        "the channel never filled ({most} held): the sink was not the bottleneck"
    );
    assert!(most <= bound, "Eddy held {most} messages (bound {bound})");
    eprintln!("slow sink: Eddy held at most {most} of {N} messages (bound {bound})");
    // The rest stayed on the broker, in the session: paho drains it.
    let rest = client(&[
        "consume",
        "--topic",
        &topic,
        "--client-id",
        &client_id,
        "--persistent",
        "--no-subscribe",
        "--idle",
        "2",
    ]);
    assert!(rest["count"].as_u64().unwrap() >= N - READ, "{rest}");
    let mut all: Vec<u64> = eddy.iter().copied().chain(ids(&rest["ids"])).collect();
    all.sort_unstable();
    all.dedup();
    assert_each_once(&all, N, "read by Eddy or left in the session");
    forget(&client_id);
}
