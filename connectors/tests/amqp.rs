//! The RabbitMQ connector against a real RabbitMQ on 127.0.0.1:5672 (`bash scripts/brokers.sh
//! up`), with pika (connectors/tests/clients/amqp.py) as the client outside Eddy: pika's records
//! arrive whole through one and two workers, Eddy's published records reach pika whole, bad
//! messages and unroutable records become dead letters, a slow sink leaves the queue in the
//! broker, an unreachable broker fails fast, and a broker restart mid-run loses nothing.
#![cfg(feature = "amqp")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use eddy_connectors::amqp::{AmqpConfig, AmqpSink, AmqpSource};
use eddy_connectors::bridge::{BrokerSource, StopRule};
use eddy_connectors::{EventTimeOf, Format, ReplaySource};
use eddy_engine::testing::CollectSink;
use eddy_engine::{
    ConnectorError, DeadLetter, Partition, Pipeline, Record, RunSummary, Runtime, Sink, SinkReport,
    SinkWriter, Source, WatermarkConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[path = "clients/amqp_client.rs"]
mod amqp_client;
#[path = "clients/slow_proxy.rs"]
mod slow_proxy;

use amqp_client::{client, consume, require_broker, TestQueue, BROKER, CLIENT};
use slow_proxy::SlowProxy;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    total: f64,
}

fn order(id: u64) -> Order {
    Order {
        id,
        customer: format!("c{}", id % 97),
        total: id as f64 * 1.25,
    }
}

/// Every test shares the broker; the restart test takes it alone.
static BROKER_LOCK: RwLock<()> = RwLock::new(());

fn shared_broker() -> RwLockReadGuard<'static, ()> {
    let guard = BROKER_LOCK
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    require_broker();
    guard
}

fn ready(queue: &TestQueue) -> (u64, u64) {
    let answer = client(&["count", &queue.0], "");
    (
        answer["ready"].as_u64().unwrap(),
        answer["consumers"].as_u64().unwrap(),
    )
}

/// Waits (up to 10 s) for the broker to show `ready` messages and no consumer in `queue`:
/// acknowledgements and channel closes are asynchronous.
fn assert_settles(queue: &TestQueue, ready_messages: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = ready(queue);
        if now == (ready_messages, 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "queue {} holds {} ready messages with {} consumers; expected {ready_messages} and 0",
            queue.0,
            now.0,
            now.1
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn source_config(queue: &TestQueue) -> AmqpConfig {
    AmqpConfig::new(BROKER, queue.0.as_str())
}

/// The order ids in messages pika read.
fn message_ids_of(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| {
            let order: Order = serde_json::from_str(m["body"].as_str().unwrap()).unwrap();
            order.id
        })
        .collect()
}

fn ids(rows: &[Record<Order>]) -> Vec<u64> {
    let mut ids: Vec<u64> = rows.iter().map(|(_, o)| o.id).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn records_pika_publishes_arrive_whole_through_one_and_two_workers() {
    let _broker = shared_broker();
    const N: u64 = 3000;
    const BASE: u64 = 1_700_000_000;
    for workers in [1, 2] {
        let queue = TestQueue::new(&format!("in-{workers}"));
        client(
            &[
                "produce",
                &queue.0,
                &N.to_string(),
                "--timestamp",
                &BASE.to_string(),
            ],
            "",
        );
        let pipeline = Pipeline::new("amqp-in");
        let out = CollectSink::new();
        let source = AmqpSource::new(source_config(&queue), Format::Json)
            .event_time(EventTimeOf::Broker)
            .stop(StopRule::never().limit(N));
        pipeline
            .source("orders", source, WatermarkConfig::default())
            .sink("out", out.clone());
        let summary = Runtime::new(workers).run(&pipeline).unwrap();
        let rows = out.rows();
        assert_eq!(
            ids(&rows),
            (0..N).collect::<Vec<_>>(),
            "{workers} workers: every id once"
        );
        for (time, order) in &rows {
            assert_eq!(*time, (BASE + order.id) * 1000, "the AMQP timestamp, in ms");
            assert_eq!(*order, self::order(order.id));
        }
        assert_eq!(summary.rejected(), 0);
        // Everything was acknowledged: nothing is left, and the consumers are gone.
        assert_settles(&queue, 0);
    }
}

#[test]
fn records_eddy_publishes_reach_pika_whole_and_persistent() {
    let _broker = shared_broker();
    const N: u64 = 2000;
    let queue = TestQueue::new("out");
    let records: Vec<Record<Order>> = (0..N)
        .map(|i| ((1_700_000_000 + i) * 1000, order(i)))
        .collect();
    let pipeline = Pipeline::new("amqp-out");
    let dead = CollectSink::<DeadLetter>::new();
    pipeline.dead_letters(dead.clone());
    pipeline
        .source(
            "orders",
            ReplaySource::round_robin(records, 2),
            WatermarkConfig::default(),
        )
        .sink(
            "rabbitmq",
            AmqpSink::new(source_config(&queue), Format::Json),
        );
    let summary = Runtime::new(2).run(&pipeline).unwrap();
    assert_eq!(confirmed(&summary), N, "every record confirmed");
    assert!(dead.rows().is_empty(), "{:?}", dead.rows());

    let messages = consume(&queue, N + 10);
    let mut seen = BTreeSet::new();
    let mut message_ids = BTreeSet::new();
    for message in &messages {
        let order: Order = serde_json::from_str(message["body"].as_str().unwrap()).unwrap();
        assert!(seen.insert(order.id), "id {} arrived twice", order.id);
        assert_eq!(order, self::order(order.id));
        assert_eq!(message["delivery_mode"], 2, "persistent");
        assert_eq!(message["content_type"], "application/json");
        assert_eq!(message["timestamp"], 1_700_000_000 + order.id);
        message_ids.insert(message["message_id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        seen,
        (0..N).collect::<BTreeSet<_>>(),
        "every id, none twice"
    );
    assert_eq!(message_ids.len() as u64, N, "one message id per record");
}

/// `commit` waits for every confirm: what was written is in the queue before `finish`, and
/// the writer goes on writing. The publishes pass a proxy that holds them back for 2 s, so
/// only a commit that waits for the broker finds them all in the queue.
#[test]
fn a_commit_makes_everything_written_so_far_readable_before_finish() {
    let _broker = shared_broker();
    const N: u64 = 2000;
    let queue = TestQueue::new("commit");
    let proxy = SlowProxy::start(BROKER);
    let mut config = AmqpConfig::new(&proxy.address, queue.0.as_str());
    // Room for every publish to wait for its confirm: a write returns without waiting.
    config.in_flight = 4 * N as usize;
    let sink = AmqpSink::<Order>::new(config, Format::Json);
    let mut writer = sink.open(Partition { index: 0, count: 1 }).unwrap();
    proxy.delay(Duration::from_secs(2));
    for round in 0..2 {
        let first = round * N;
        let mut batch: Vec<Record<Order>> = (first..first + N)
            .map(|i| ((1_700_000_000 + i) * 1000, order(i)))
            .collect();
        writer.write(&mut batch).unwrap();
        writer.commit().unwrap();
        assert!(writer.undeliverable().is_empty(), "round {round}");
        // No waiting: the broker confirmed every one, so the queue holds them all now.
        assert_eq!(
            ready(&queue).0,
            N,
            "round {round}: all in the queue after commit"
        );
        let got: BTreeSet<u64> = message_ids_of(&consume(&queue, N)).into_iter().collect();
        assert_eq!(
            got,
            (first..first + N).collect::<BTreeSet<_>>(),
            "round {round}: pika reads every record of the round before finish"
        );
    }
    let report = writer.finish().unwrap();
    assert_eq!(report.rows, 2 * N, "every record confirmed");
    // Nothing more came with finish.
    assert_settles(&queue, 0);
}

#[test]
fn records_no_queue_takes_are_retried_then_dead_lettered() {
    let _broker = shared_broker();
    let mut config = AmqpConfig::new(BROKER, "");
    config.exchange = "amq.direct".into();
    config.routing_key = Some(format!("eddy-test-{}-nowhere", std::process::id()));
    config.retries = 1;
    let records: Vec<Record<Order>> = (0..20).map(|i| (i * 1000, order(i))).collect();
    let pipeline = Pipeline::new("amqp-unroutable");
    let dead = CollectSink::<DeadLetter>::new();
    pipeline.dead_letters(dead.clone());
    pipeline
        .source(
            "orders",
            ReplaySource::new(vec![records]),
            WatermarkConfig::default(),
        )
        .sink("rabbitmq", AmqpSink::new(config, Format::Json));
    let summary = Runtime::new(1).run(&pipeline).unwrap();
    assert_eq!(confirmed(&summary), 0);
    assert_eq!(summary.dead_lettered(), 20);
    let letters = dead.rows();
    let mut dead_ids = BTreeSet::new();
    for (_, letter) in &letters {
        assert_eq!(letter.kind, "delivery");
        assert_eq!(letter.stage, "rabbitmq");
        assert!(
            letter
                .location
                .contains("exchange amq.direct routing key eddy-test-"),
            "{}",
            letter.location
        );
        assert!(
            letter.error.contains("NO_ROUTE") && letter.error.contains("after 2 attempts"),
            "{}",
            letter.error
        );
        let order: Order = serde_json::from_slice(&letter.raw_bytes()).unwrap();
        dead_ids.insert(order.id);
    }
    assert_eq!(dead_ids, (0..20).collect::<BTreeSet<_>>());
}

#[test]
fn malformed_messages_are_dead_lettered_with_their_delivery_tag_and_good_ones_arrive() {
    let _broker = shared_broker();
    let queue = TestQueue::new("bad");
    let bad = [
        "{broken json",
        r#"{"id": "seven", "customer": "c7", "total": 1.0}"#,
        r#"{"id": 7, "customer": "c7"}"#,
        "plain text",
    ];
    let mut lines = String::new();
    let mut good = 0;
    let mut expected_bad = BTreeMap::<&str, usize>::new();
    for i in 0..400u64 {
        if i % 10 == 3 {
            let body = bad[(i as usize / 10) % bad.len()];
            *expected_bad.entry(body).or_default() += 1;
            lines.push_str(body);
        } else {
            lines.push_str(&serde_json::to_string(&order(i)).unwrap());
            good += 1;
        }
        lines.push('\n');
    }
    client(&["publish", &queue.0], &lines);
    let pipeline = Pipeline::new("amqp-bad");
    let dead = CollectSink::<DeadLetter>::new();
    pipeline.dead_letters(dead.clone());
    let out = CollectSink::new();
    let source =
        AmqpSource::new(source_config(&queue), Format::Json).stop(StopRule::never().limit(400));
    pipeline
        .source("orders", source, WatermarkConfig::default())
        .sink("out", out.clone());
    let summary = Runtime::new(2).run(&pipeline).unwrap();
    let got = ids(&out.rows());
    assert_eq!(got.len(), good);
    assert_eq!(got, (0..400).filter(|i| i % 10 != 3).collect::<Vec<_>>());
    assert_eq!(summary.dead_lettered(), 40);
    let mut seen_bad = BTreeMap::<String, usize>::new();
    let mut tags = BTreeSet::new();
    for (_, letter) in dead.rows() {
        assert_eq!(letter.kind, "decode");
        assert_eq!(letter.stage, "orders");
        let prefix = format!("queue {} delivery tag ", queue.0);
        let tag = letter
            .location
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("location '{}' names the queue", letter.location));
        tags.insert(tag.to_string());
        assert!(!letter.error.is_empty());
        *seen_bad.entry(letter.raw.clone()).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = expected_bad
        .into_iter()
        .map(|(body, n)| (body.to_string(), n))
        .collect();
    assert_eq!(seen_bad, expected, "each bad message once, with its bytes");
    assert!(tags.len() > 1, "delivery tags differ: {tags:?}");
    // The bad messages were acknowledged too: they do not come back.
    assert_settles(&queue, 0);
}

/// The rows the sink stage `rabbitmq` reports delivered: confirmed by the broker.
fn confirmed(summary: &RunSummary) -> u64 {
    summary
        .sinks
        .iter()
        .filter(|(stage, _)| stage == "rabbitmq")
        .map(|(_, report)| report.rows)
        .sum()
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn an_unreachable_broker_or_a_wrong_password_fails_fast_with_a_clear_error() {
    let _broker = shared_broker();
    let port = closed_port();
    let address = format!("127.0.0.1:{port}");
    let partition = Partition { index: 0, count: 1 };

    let started = Instant::now();
    let pipeline = Pipeline::new("amqp-unreachable");
    pipeline
        .source(
            "orders",
            AmqpSource::<Order>::new(AmqpConfig::new(&address, "q"), Format::Json),
            WatermarkConfig::default(),
        )
        .sink("out", CollectSink::new());
    let err = Runtime::new(1).run(&pipeline).unwrap_err().to_string();
    assert!(
        err.contains(&format!("cannot connect to RabbitMQ at {address}"))
            && err.contains("bash scripts/brokers.sh up"),
        "{err}"
    );
    let sink = AmqpSink::<Order>::new(AmqpConfig::new(&address, "q"), Format::Json);
    let err = sink
        .open(partition)
        .err()
        .expect("no broker there")
        .to_string();
    assert!(err.contains(&address), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );

    let mut wrong = AmqpConfig::new(BROKER, "q");
    wrong.password = "not-the-password".into();
    let source = AmqpSource::<Order>::new(wrong, Format::Json);
    let err = Source::open(&source, partition)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("refused user 'guest'") && err.contains("password_env="),
        "{err}"
    );

    let missing = TestQueue::new("missing");
    let mut no_declare = source_config(&missing);
    no_declare.declare = false;
    let source = AmqpSource::<Order>::new(no_declare, Format::Json);
    let err = Source::open(&source, partition)
        .err()
        .expect("no such queue")
        .to_string();
    assert!(
        err.contains(&format!("has no queue '{}'", missing.0)) && err.contains("declare=false"),
        "{err}"
    );
}

/// A sink that takes `pause` per record and counts what it wrote.
#[derive(Clone)]
struct SlowSink {
    pause: Duration,
    written: Arc<AtomicU64>,
    inner: CollectSink<Order>,
}

struct SlowWriter {
    sink: SlowSink,
    inner: Box<dyn SinkWriter<Order>>,
}

impl Sink<Order> for SlowSink {
    fn describe(&self) -> String {
        "slow".into()
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SinkWriter<Order>>, ConnectorError> {
        Ok(Box::new(SlowWriter {
            sink: self.clone(),
            inner: self.inner.open(partition)?,
        }))
    }
}

impl SinkWriter<Order> for SlowWriter {
    fn write(&mut self, batch: &mut Vec<Record<Order>>) -> Result<(), ConnectorError> {
        std::thread::sleep(self.sink.pause * batch.len() as u32);
        self.sink
            .written
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.inner.write(batch)
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        self.inner.finish()
    }
}

fn slow_sink(pause: Duration) -> SlowSink {
    SlowSink {
        pause,
        written: Arc::new(AtomicU64::new(0)),
        inner: CollectSink::new(),
    }
}

fn wait_for(what: &str, timeout: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_slow_sink_leaves_the_queue_in_the_broker_and_only_what_was_read_is_acknowledged() {
    let _broker = shared_broker();
    const N: u64 = 4000;
    const LIMIT: u64 = 400;
    const PREFETCH: u16 = 50;
    const BATCH: usize = 16;
    let queue = TestQueue::new("slow");
    client(&["produce", &queue.0, &N.to_string()], "");
    let mut config = source_config(&queue);
    config.prefetch = PREFETCH;
    let sink = slow_sink(Duration::from_millis(5));
    let pipeline = Pipeline::new("amqp-slow");
    pipeline.batch_size(BATCH);
    pipeline
        .source(
            "orders",
            AmqpSource::new(config, Format::Json).stop(StopRule::never().limit(LIMIT)),
            WatermarkConfig::default(),
        )
        .sink("slow", sink.clone());
    let run = Runtime::new(2).start(&pipeline).unwrap();
    wait_for(
        "the slow sink to write 100 records",
        Duration::from_secs(20),
        || sink.written.load(Ordering::Relaxed) >= 100,
    );
    let (ready_now, consumers) = ready(&queue);
    let written = sink.written.load(Ordering::Relaxed);
    assert_eq!(consumers, 2, "one consumer per worker");
    // What left the broker's ready list and is not written yet is at most the two prefetch
    // windows and the batches between the source and the sink.
    let inside_eddy = N - ready_now - written;
    let bound = 2 * u64::from(PREFETCH) + 4 * BATCH as u64;
    assert!(
        inside_eddy <= bound,
        "{inside_eddy} messages inside Eddy (ready {ready_now}, written {written}); at most \
         {bound} expected"
    );
    run.join().unwrap();
    assert_eq!(sink.written.load(Ordering::Relaxed), LIMIT);
    assert_eq!(ids(&sink.inner.rows()).len() as u64, LIMIT);
    // Exactly what was read was acknowledged; the rest went back to the queue.
    assert_settles(&queue, N - LIMIT);
}

#[test]
fn a_broker_restart_mid_run_loses_nothing_the_broker_accepted() {
    let _alone = BROKER_LOCK
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    require_broker();
    const BEFORE: u64 = 2000;
    const DURING: u64 = 1000;
    const PUBLISHED: u64 = 3000;
    let queue = TestQueue::new("restart");
    client(&["produce", &queue.0, &BEFORE.to_string()], "");
    let mut config = source_config(&queue);
    config.prefetch = 100;
    let sink = slow_sink(Duration::from_millis(1));
    let pipeline = Pipeline::new("amqp-restart");
    pipeline.batch_size(50);
    pipeline
        .source(
            "orders",
            AmqpSource::new(config, Format::Json).stop(StopRule::never().limit(BEFORE + DURING)),
            WatermarkConfig::default(),
        )
        .sink("out", sink.clone());
    let run = Runtime::new(2).start(&pipeline).unwrap();
    // Meanwhile Eddy's sink publishes to another queue, paced to span the restart.
    let out_queue = TestQueue::new("restart-out");
    let publishing = Pipeline::new("amqp-restart-out");
    let records: Vec<Record<Order>> = (0..PUBLISHED).map(|i| (i * 1000, order(i))).collect();
    publishing
        .source(
            "orders",
            ReplaySource::new(vec![records]).paced(300.0),
            WatermarkConfig::default(),
        )
        .sink(
            "rabbitmq",
            AmqpSink::new(source_config(&out_queue), Format::Json),
        );
    let publish_run = Runtime::new(1).start(&publishing).unwrap();
    wait_for("the first 300 records", Duration::from_secs(20), || {
        sink.written.load(Ordering::Relaxed) >= 300
    });

    // pika keeps publishing through the restart, retrying what the broker did not confirm.
    let producer = Command::new("python3")
        .arg(CLIENT)
        .args(["produce", &queue.0, &DURING.to_string()])
        .args(["--start", &BEFORE.to_string(), "--rate", "150"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let restart = Command::new("bash")
        .current_dir(&root)
        .args(["scripts/brokers.sh", "restart", "rabbitmq"])
        .output()
        .unwrap();
    assert!(
        restart.status.success(),
        "brokers.sh restart rabbitmq failed: {}",
        String::from_utf8_lossy(&restart.stderr)
    );
    let written_at_restart = sink.written.load(Ordering::Relaxed);
    let produced = producer.wait_with_output().unwrap();
    assert!(
        produced.status.success(),
        "the producer failed: {}",
        String::from_utf8_lossy(&produced.stderr)
    );
    // The run reads as many messages as were published (redeliveries included), so it ends
    // only after it has reconnected and read what came after the restart.
    run.join().expect("the pipeline reconnects and finishes");
    assert!(
        written_at_restart < BEFORE,
        "the restart came mid-run ({written_at_restart} written by then)"
    );

    // Every confirmed message reached Eddy or is still in the queue (for the next reader): at
    // least once, and nothing the broker accepted is lost.
    let got = ids(&sink.inner.rows());
    let left = message_ids_of(&consume(&queue, BEFORE + DURING));
    let distinct: BTreeSet<u64> = got.iter().chain(&left).copied().collect();
    let missing: Vec<u64> = (0..BEFORE + DURING)
        .filter(|id| !distinct.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} confirmed messages were lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(distinct.len() as u64, BEFORE + DURING, "no stray ids");
    let read_distinct = got.iter().collect::<BTreeSet<_>>().len();
    eprintln!(
        "restart: Eddy read {} messages ({read_distinct} distinct, {} redelivered); {} were left \
         in the queue",
        got.len(),
        got.len() - read_distinct,
        left.len()
    );
    assert_settles(&queue, 0);

    let summary = publish_run
        .join()
        .expect("the sink reconnects and finishes");
    assert_eq!(confirmed(&summary), PUBLISHED, "every record confirmed");
    let published = message_ids_of(&consume(&out_queue, 2 * PUBLISHED));
    let distinct: BTreeSet<u64> = published.iter().copied().collect();
    assert_eq!(
        distinct,
        (0..PUBLISHED).collect::<BTreeSet<_>>(),
        "every record Eddy published through the restart reached the queue"
    );
    eprintln!(
        "restart: the sink published {} messages for {PUBLISHED} records",
        published.len()
    );
}
