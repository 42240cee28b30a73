//! The NATS connector against the real nats-server (with JetStream) on 127.0.0.1:4222, started
//! by `bash scripts/brokers.sh up`, with nats-py (tests/clients/nats.py) as the client outside
//! Eddy. Each test uses its own subjects and streams and removes its streams. The restart test
//! restarts the server, so it runs alone: the others hold a shared lock, it an exclusive one.

#![cfg(feature = "nats")]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use eddy_connectors::bridge::{BrokerSource, StopRule};
use eddy_connectors::nats::{NatsConfig, NatsSink, NatsSource};
use eddy_connectors::{EventTimeOf, ReplaySource};
use eddy_engine::testing::CollectSink;
use eddy_engine::{
    wall_clock_ms, ConnectorError, DeadLetter, Partition, Pipeline, Record, RunHandle, RunSummary,
    Runtime, Sink, SinkReport, SinkWriter, WatermarkConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[path = "clients/nats_client.rs"]
mod nats_client;
#[path = "clients/slow_proxy.rs"]
mod slow_proxy;

use nats_client::{
    assert_each_once, client, ids_of, number, require_nats, subject, Running, Stream, ADDRESS,
};
use slow_proxy::SlowProxy;

const BROKERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/brokers.sh");

/// Taken shared by every test, exclusively by the one that restarts the server.
static SERVER: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    require_nats();
    SERVER.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    require_nats();
    SERVER.write().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Event {
    id: u64,
    name: String,
    ts: u64,
}

fn events(n: u64) -> Vec<Record<Event>> {
    (0..n)
        .map(|id| {
            let ts = 1_700_000_000_000 + id;
            (
                ts,
                Event {
                    id,
                    name: format!("n{id}"),
                    ts,
                },
            )
        })
        .collect()
}

fn ids(out: &CollectSink<Event>) -> Vec<u64> {
    out.rows().iter().map(|(_, e)| e.id).collect()
}

/// A pipeline reading `source` into `out`, with dead letters in `dead`.
fn pipeline(
    source: NatsSource<Event>,
    out: &CollectSink<Event>,
    dead: &CollectSink<DeadLetter>,
) -> Pipeline {
    let pipeline = Pipeline::new("nats-test");
    pipeline.dead_letters(dead.clone());
    pipeline
        .source("nats", source, WatermarkConfig::default())
        .sink("out", out.clone());
    pipeline
}

/// Joins a run, failing the test if it takes longer than `limit`.
fn join_within(handle: RunHandle, limit: Duration) -> RunSummary {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(handle.join());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("the run did not end within {limit:?}"))
        .expect("the run succeeds")
}

#[test]
fn core_subject_reaches_one_and_two_workers_in_a_queue_group() {
    let _server = shared();
    let n = 2000;
    for workers in [1, 2] {
        let base = subject();
        let source = NatsSource::new(NatsConfig::core(ADDRESS, format!("{base}.*")))
            // The records and the one probe message that found the subscription.
            .stop(StopRule::never().limit(n + 1));
        let (out, dead) = (CollectSink::new(), CollectSink::new());
        let handle = Runtime::new(workers)
            .start(&pipeline(source, &out, &dead))
            .unwrap();
        // Core NATS delivers only to current subscribers: the client probes until the
        // pipeline's subscription answers, then publishes (to a subject the wildcard matches).
        let produced = client(&[
            "produce",
            &format!("{base}.orders"),
            &n.to_string(),
            "--wait-subscribed",
        ]);
        assert!(number(&produced, "probes") >= 1);
        let summary = join_within(handle, Duration::from_secs(60));
        assert_each_once(ids(&out), n, &format!("{workers} workers"));
        let dead = dead.rows();
        assert_eq!(
            dead.len(),
            1,
            "{workers} workers: the probe is the only dead letter"
        );
        let probe = &dead[0].1;
        assert_eq!(probe.raw, r#"{"probe": true}"#);
        assert!(
            probe
                .location
                .starts_with(&format!("subject {base}.orders message ")),
            "{}",
            probe.location
        );
        assert_eq!(
            (probe.kind.as_str(), probe.stage.as_str()),
            ("decode", "nats")
        );
        assert_eq!(summary.dead_lettered(), 1);
    }
}

#[test]
fn jetstream_stream_reaches_one_and_two_workers_and_is_acknowledged() {
    let _server = shared();
    let n = 3000;
    for workers in [1, 2] {
        let stream = Stream::create();
        let before = wall_clock_ms();
        client(&[
            "produce",
            &stream.subject,
            &n.to_string(),
            "--stream",
            &stream.name,
        ]);
        let after = wall_clock_ms();
        let config = NatsConfig::jetstream(ADDRESS, &stream.subject, &stream.name);
        let source = NatsSource::new(config.clone())
            .event_time(EventTimeOf::Broker)
            .stop(StopRule::never().limit(n));
        let (out, dead) = (CollectSink::new(), CollectSink::new());
        let summary = Runtime::new(workers)
            .run(&pipeline(source, &out, &dead))
            .unwrap();
        assert_each_once(ids(&out), n, &format!("{workers} workers"));
        assert_eq!(summary.dead_lettered(), 0);
        for (time, event) in out.rows() {
            assert!(
                (before.saturating_sub(1000)..=after + 1000).contains(&time),
                "record {} is timed {time}, not at its JetStream publish time ({before}..{after})",
                event.id
            );
        }
        // Every message was acknowledged: the durable consumer has nothing pending.
        let deadline = Instant::now() + Duration::from_secs(5);
        let consumer = loop {
            let consumer = stream.consumer("eddy");
            if number(&consumer, "num_ack_pending") == 0 || Instant::now() > deadline {
                break consumer;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(number(&consumer, "num_ack_pending"), 0, "{consumer}");
        assert_eq!(number(&consumer, "num_pending"), 0, "{consumer}");
        assert_eq!(number(&consumer, "delivered"), n, "{consumer}");
        // The durable resumes where it was: a second run gets nothing again.
        let again =
            NatsSource::new(config).stop(StopRule::never().idle_exit(Duration::from_secs(1)));
        let (out, dead) = (CollectSink::new(), CollectSink::new());
        Runtime::new(workers)
            .run(&pipeline(again, &out, &dead))
            .unwrap();
        assert!(
            out.rows().is_empty(),
            "{workers} workers: nothing comes twice"
        );
    }
}

#[test]
fn sink_publishes_to_a_core_subject_and_to_a_stream() {
    let _server = shared();
    let n = 2000;
    // Core: the outside client subscribes first, then Eddy publishes from two workers.
    let subject = subject();
    let consumer = Running::subscribed(&["consume", &subject, &n.to_string(), "--timeout", "60"]);
    let pipeline = Pipeline::new("nats-sink-core");
    pipeline
        .source(
            "events",
            ReplaySource::round_robin(events(n), 2),
            WatermarkConfig::default(),
        )
        .sink("nats", NatsSink::new(NatsConfig::core(ADDRESS, &subject)));
    let summary = Runtime::new(2).run(&pipeline).unwrap();
    assert_eq!(summary.output_rows(), n);
    assert_each_once(ids_of(&consumer.finish()), n, "core");

    // JetStream: the sink creates the stream, every publish is acknowledged, each stored once.
    let stream = Stream::named();
    let pipeline = Pipeline::new("nats-sink-jetstream");
    pipeline
        .source(
            "events",
            ReplaySource::round_robin(events(n), 2),
            WatermarkConfig::default(),
        )
        .sink(
            "nats",
            NatsSink::new(NatsConfig {
                create_stream: true,
                in_flight: 64,
                ..NatsConfig::jetstream(ADDRESS, &stream.subject, &stream.name)
            }),
        );
    let summary = Runtime::new(2).run(&pipeline).unwrap();
    assert_eq!(summary.dead_lettered(), 0);
    assert_eq!(number(&stream.info(), "messages"), n, "stored once each");
    assert_each_once(ids_of(&stream.records(n as usize)), n, "JetStream");
}

/// `commit` waits for every JetStream acknowledgement in flight (and flushes core NATS): what
/// was written is readable before `finish`, and the writer goes on writing. The JetStream
/// publishes pass a proxy that holds them back for 2 s, so only a commit that waits for the
/// server finds them all in the stream.
#[test]
fn a_commit_makes_everything_written_so_far_readable_before_finish() {
    let _server = shared();
    let n = 1000;
    let partition = Partition { index: 0, count: 1 };

    // JetStream: room for every publish in flight, so a write returns without waiting.
    let stream = Stream::named();
    let proxy = SlowProxy::start(ADDRESS);
    let sink = NatsSink::<Event>::new(NatsConfig {
        create_stream: true,
        in_flight: 4 * n as usize,
        ..NatsConfig::jetstream(&proxy.address, &stream.subject, &stream.name)
    });
    let mut writer = sink.open(partition).unwrap();
    proxy.delay(Duration::from_secs(2));
    for round in 1..=2 {
        let mut batch = events(round * n)[((round - 1) * n) as usize..].to_vec();
        writer.write(&mut batch).unwrap();
        writer.commit().unwrap();
        assert!(writer.undeliverable().is_empty(), "round {round}");
        // No waiting: the server acknowledged every one, so the stream holds them all now.
        assert_eq!(
            number(&stream.info(), "messages"),
            round * n,
            "round {round}: stored after commit"
        );
        assert_each_once(
            ids_of(&stream.records((round * n) as usize)),
            round * n,
            &format!("JetStream round {round}, before finish"),
        );
    }
    assert_eq!(writer.finish().unwrap().rows, 2 * n);
    assert_eq!(number(&stream.info(), "messages"), 2 * n, "once each");

    // Core: a subscriber gets everything once the commit's flush returned.
    let subject = subject();
    let sink = NatsSink::<Event>::new(NatsConfig::core(ADDRESS, &subject));
    let mut writer = sink.open(partition).unwrap();
    for round in 1..=2 {
        let consumer =
            Running::subscribed(&["consume", &subject, &n.to_string(), "--timeout", "5"]);
        let mut batch = events(round * n)[((round - 1) * n) as usize..].to_vec();
        writer.write(&mut batch).unwrap();
        writer.commit().unwrap();
        let got: Vec<u64> = ids_of(&consumer.finish())
            .into_iter()
            .map(|id| id - (round - 1) * n)
            .collect();
        assert_each_once(got, n, &format!("core round {round}, before finish"));
    }
    assert_eq!(writer.finish().unwrap().rows, 2 * n);
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Padded {
    id: u64,
    pad: String,
}

#[test]
fn jetstream_sink_dead_letters_what_the_server_refuses() {
    let _server = shared();
    let stream = Stream::named();
    client(&[
        "stream-add",
        &stream.name,
        &stream.subject,
        "--max-msg-size",
        "100",
    ]);
    // Every tenth record is too large for the stream: the server refuses it, for good.
    let records: Vec<Record<Padded>> = (0..200u64)
        .map(|id| {
            let pad = if id % 10 == 3 { 200 } else { 5 };
            (
                id,
                Padded {
                    id,
                    pad: "x".repeat(pad),
                },
            )
        })
        .collect();
    let dead = CollectSink::<DeadLetter>::new();
    let pipeline = Pipeline::new("nats-sink-refused");
    pipeline.dead_letters(dead.clone());
    pipeline
        .source(
            "padded",
            ReplaySource::round_robin(records, 1),
            WatermarkConfig::default(),
        )
        .sink(
            "nats",
            NatsSink::new(NatsConfig::jetstream(
                ADDRESS,
                &stream.subject,
                &stream.name,
            )),
        );
    let summary = Runtime::new(1).run(&pipeline).unwrap();
    assert_eq!(summary.dead_lettered(), 20);
    let mut refused: Vec<u64> = dead
        .rows()
        .iter()
        .map(|(_, letter)| {
            assert_eq!(
                (letter.kind.as_str(), letter.stage.as_str()),
                ("delivery", "nats")
            );
            assert_eq!(
                letter.location,
                format!("stream {} subject {}", stream.name, stream.subject)
            );
            assert!(letter.error.contains("not retried"), "{}", letter.error);
            let record: Value = serde_json::from_str(&letter.raw).unwrap();
            number(&record, "id")
        })
        .collect();
    refused.sort();
    assert_eq!(refused, (0..20).map(|i| i * 10 + 3).collect::<Vec<u64>>());
    assert_eq!(
        number(&stream.info(), "messages"),
        180,
        "the others are stored"
    );
}

#[test]
fn malformed_records_are_dead_lettered_with_their_stream_sequence() {
    let _server = shared();
    let stream = Stream::create();
    let n = 500;
    let produced = client(&[
        "produce",
        &stream.subject,
        &n.to_string(),
        "--stream",
        &stream.name,
        "--bad-every",
        "25",
    ]);
    let bad = produced["bad"].as_array().unwrap();
    assert_eq!(bad.len(), 20);
    let source = NatsSource::new(NatsConfig::jetstream(
        ADDRESS,
        &stream.subject,
        &stream.name,
    ))
    .stop(StopRule::never().limit(n + bad.len() as u64));
    let (out, dead) = (CollectSink::new(), CollectSink::<DeadLetter>::new());
    let summary = Runtime::new(2).run(&pipeline(source, &out, &dead)).unwrap();
    assert_each_once(ids(&out), n, "good records");
    assert_eq!(summary.dead_lettered(), 20);
    let letters: BTreeMap<String, DeadLetter> = dead
        .rows()
        .into_iter()
        .map(|(_, letter)| (letter.location.clone(), letter))
        .collect();
    for published in bad {
        let location = format!("stream {} seq {}", stream.name, number(published, "seq"));
        let letter = letters
            .get(&location)
            .unwrap_or_else(|| panic!("no dead letter at {location}: {letters:?}"));
        let raw = published["raw_hex"].as_str().unwrap();
        assert_eq!(hex(&letter.raw_bytes()), raw, "the bytes as published");
        assert_eq!(
            (letter.kind.as_str(), letter.stage.as_str()),
            ("decode", "nats")
        );
        assert!(!letter.error.is_empty());
    }
    // Dead-lettered messages are acknowledged too: nothing is left for the consumer.
    let deadline = Instant::now() + Duration::from_secs(5);
    while number(&stream.consumer("eddy"), "num_ack_pending") > 0 {
        assert!(Instant::now() < deadline, "{}", stream.consumer("eddy"));
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn jetstream_source_loses_nothing_acknowledged_across_a_server_restart() {
    let _server = exclusive();
    let stream = Stream::create();
    let n = 3000u64;
    let producer = Running::start(&[
        "produce",
        &stream.subject,
        &n.to_string(),
        "--stream",
        &stream.name,
        "--interval-ms",
        "2",
    ]);
    // Messages the server had sent when it stopped come again after the ack wait: keep it
    // shorter than the idle exit, so they come within this run.
    let source = NatsSource::new(NatsConfig {
        ack_wait: Duration::from_secs(2),
        reconnect_timeout: Duration::from_secs(30),
        ..NatsConfig::jetstream(ADDRESS, &stream.subject, &stream.name)
    })
    .stop(StopRule::never().idle_exit(Duration::from_secs(6)));
    let (out, dead) = (CollectSink::new(), CollectSink::new());
    let handle = Runtime::new(2)
        .start(&pipeline(source, &out, &dead))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.rows().len() < 500 {
        assert!(
            Instant::now() < deadline,
            "no records came before the restart"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before_restart = out.rows().len() as u64;
    // In a session of its own and holding none of this process's pipes, so the server
    // outlives the test process and does not keep its output open.
    let restarted = Command::new("setsid")
        .args(["bash", BROKERS, "restart", "nats"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        restarted.success(),
        "bash scripts/brokers.sh restart nats failed: see /tmp/eddy-brokers/nats.log"
    );
    let produced = producer.finish();
    join_within(handle, Duration::from_secs(120));
    assert!(
        before_restart < n,
        "the restart came in the middle of the run ({before_restart} of {n} read before it)"
    );
    let acked: Vec<u64> = produced["acked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_u64().unwrap())
        .collect();
    assert_each_once(acked, n, "JetStream acknowledged every publish");
    // At-least-once: every record JetStream acknowledged arrived; duplicates are allowed.
    let read = ids(&out);
    let mut distinct = read.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let duplicates = read.len() - distinct.len();
    assert_each_once(
        distinct,
        n,
        "every acknowledged record read (duplicates aside)",
    );
    eprintln!(
        "restart test: {} records read, {duplicates} duplicates, {before_restart} before the restart",
        read.len()
    );
}

#[test]
fn an_unreachable_server_is_a_clear_error_within_seconds() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let check = |what: &str, error: ConnectorError, started: Instant| {
        let message = error.to_string();
        assert!(
            message.contains(&address) && message.contains("brokers.sh up"),
            "{what}: {message}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{what} took {:?}",
            started.elapsed()
        );
    };
    for config in [
        NatsConfig::core(&address, "orders"),
        NatsConfig::jetstream(&address, "orders", "ORDERS"),
    ] {
        let started = Instant::now();
        let error = eddy_engine::Source::<Event>::open(
            &NatsSource::new(config.clone()),
            Partition { index: 0, count: 1 },
        )
        .err()
        .expect("no server: the source does not open");
        check("source", error, started);
        let started = Instant::now();
        let error = NatsSink::<Event>::new(config)
            .open(Partition { index: 0, count: 1 })
            .err()
            .expect("no server: the sink does not open");
        check("sink", error, started);
    }
    // Through a whole run, the error names the stage and the address.
    let pipeline = Pipeline::new("unreachable");
    pipeline
        .source(
            "nats",
            NatsSource::<Event>::new(NatsConfig::core(&address, "orders")),
            WatermarkConfig::default(),
        )
        .sink("out", CollectSink::new());
    let started = Instant::now();
    let error = Runtime::new(2).run(&pipeline).err().unwrap().to_string();
    assert!(
        error.contains("nats") && error.contains(&address),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_missing_stream_is_an_error_saying_how_to_create_it() {
    let _server = shared();
    let stream = Stream::named();
    let config = NatsConfig::jetstream(ADDRESS, &stream.subject, &stream.name);
    let error = eddy_engine::Source::<Event>::open(
        &NatsSource::new(config.clone()),
        Partition { index: 0, count: 1 },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        error.contains(&stream.name) && error.contains("create_stream=true"),
        "{error}"
    );
    let error = NatsSink::<Event>::new(config)
        .open(Partition { index: 0, count: 1 })
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("does not exist"), "{error}");
}

/// A sink that takes `per_record` for each record and counts what it has written.
#[derive(Clone)]
struct SlowSink {
    per_record: Duration,
    written: Arc<AtomicU64>,
}

impl Sink<Event> for SlowSink {
    fn describe(&self) -> String {
        "slow (test)".into()
    }

    fn open(&self, _: Partition) -> Result<Box<dyn SinkWriter<Event>>, ConnectorError> {
        Ok(Box::new(self.clone()))
    }
}

impl SinkWriter<Event> for SlowSink {
    fn write(&mut self, batch: &mut Vec<Record<Event>>) -> Result<(), ConnectorError> {
        std::thread::sleep(self.per_record * batch.len() as u32);
        self.written.fetch_add(batch.len() as u64, Ordering::SeqCst);
        batch.clear();
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        Ok(SinkReport::default())
    }
}

#[test]
fn a_slow_sink_leaves_the_messages_in_the_stream() {
    let _server = shared();
    let stream = Stream::create();
    let (n, limit, capacity, batch) = (3000u64, 400u64, 64usize, 32usize);
    client(&[
        "produce",
        &stream.subject,
        &n.to_string(),
        "--stream",
        &stream.name,
    ]);
    let source = NatsSource::<Event>::new(NatsConfig {
        capacity,
        batch,
        ..NatsConfig::jetstream(ADDRESS, &stream.subject, &stream.name)
    })
    .stop(StopRule::never().limit(limit));
    let written = Arc::new(AtomicU64::new(0));
    let pipeline = Pipeline::new("nats-slow");
    pipeline.batch_size(16);
    pipeline
        .source("nats", source, WatermarkConfig::default())
        .sink(
            "slow",
            SlowSink {
                per_record: Duration::from_millis(5),
                written: Arc::clone(&written),
            },
        );
    let handle = Runtime::new(1).start(&pipeline).unwrap();
    // Beyond what the sink has written, the client holds at most the channel, one pull and
    // the pipeline's batches: the rest stays in the stream.
    let slack = capacity as u64 + batch as u64 + 64;
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(500));
        let consumer = stream.consumer("eddy");
        let done = written.load(Ordering::SeqCst);
        let delivered = number(&consumer, "delivered");
        assert!(
            delivered <= done + slack,
            "the client pulled {delivered} messages while the sink had written {done}"
        );
        assert!(
            number(&consumer, "num_pending") >= n - done - slack,
            "{consumer}"
        );
    }
    join_within(handle, Duration::from_secs(30));
    let consumer = stream.consumer("eddy");
    assert!(
        number(&consumer, "delivered") <= limit + slack,
        "after the run: {consumer}"
    );
    assert!(number(&consumer, "num_pending") >= n - limit - slack);
}
