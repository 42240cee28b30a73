//! The Kafka source and sink against the real broker `bash scripts/brokers.sh up` starts on
//! 127.0.0.1:9092 (tansu, a Kafka-protocol broker), with kafka-python
//! (tests/clients/kafka.py) as the outside client that publishes and reads.
//!
//! Each test uses topics and consumer groups of its own (named after the process, the time and
//! a counter); see [`Topic`] for why they are kept. The broker-restart and memory tests hold
//! the broker to themselves (a lock the other tests share), since a restart or a memory reading
//! would disturb them.

#![cfg(feature = "kafka")]

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use eddy_connectors::bridge::{BrokerSource, StopRule};
use eddy_connectors::kafka::{
    KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig, StartOffset,
};
use eddy_engine::testing::{CollectSink, Script};
use eddy_engine::{
    ConnectorError, DeadLetter, Partition, Pipeline, Record, RunSummary, Runtime, Sink, SinkReport,
    SinkWriter, WatermarkConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const BROKERS: &str = "127.0.0.1:9092";

/// What the Python client publishes: `{"id", "ts", "value"}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Reading {
    id: u64,
    ts: u64,
    value: i64,
}

/// Shared by the tests; held exclusively by those that restart the broker or read memory.
static BROKER: RwLock<()> = RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    broker_is_up();
    BROKER.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    broker_is_up();
    BROKER.write().unwrap_or_else(|e| e.into_inner())
}

fn broker_is_up() {
    let reachable = TcpStream::connect_timeout(&BROKERS.parse().unwrap(), Duration::from_secs(2));
    assert!(
        reachable.is_ok(),
        "Kafka is not reachable at {BROKERS}: start the test brokers with `bash scripts/brokers.sh up`"
    );
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn client_command(args: &[&str]) -> Command {
    let mut command = Command::new("python3");
    command
        .arg(root().join("tests/clients/kafka.py"))
        .args(args);
    command
}

fn parse_client(args: &[&str], out: Output) -> Value {
    assert!(
        out.status.success(),
        "kafka.py {args:?} failed (is the broker up? bash scripts/brokers.sh up):\n{}\n{}",
        tail(&out.stdout),
        tail(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("kafka.py prints one JSON object")
}

/// The end of a client's output, for failure messages.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let start = text.len().saturating_sub(2000);
    let start = (start..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

/// Runs the Python client and returns what it printed.
fn client(args: &[&str]) -> Value {
    let out = client_command(args).output().expect("python3 runs");
    parse_client(args, out)
}

/// `bash scripts/brokers.sh COMMAND kafka`.
fn brokers_sh(command: &str) {
    let out = Command::new("bash")
        .arg(root().join("../scripts/brokers.sh"))
        .args([command, "kafka"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "brokers.sh {command} kafka: {}",
        tail(&out.stderr)
    );
}

/// A topic of this test run. Topics are not deleted afterwards: tansu 0.6.0's DeleteTopics
/// deletes every topic of the broker (its `topic_delete_by.sql` matches on the cluster only),
/// which would pull the topics from under the tests running beside. Unique names keep runs
/// apart; `bash scripts/brokers.sh stop kafka && rm -rf /tmp/eddy-brokers/kafka && bash
/// scripts/brokers.sh start kafka` empties the broker.
struct Topic(String);

impl Topic {
    fn create(test: &str, partitions: u32) -> Topic {
        let topic = Topic::named(test);
        client(&["create", &topic.0, "--partitions", &partitions.to_string()]);
        topic
    }

    /// A unique name, not created (the sink creates it).
    fn named(test: &str) -> Topic {
        Topic(unique(test))
    }
}

fn unique(what: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!(
        "eddy-{what}-{}-{now}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn ids(value: &Value, field: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = value[field]
        .as_array()
        .unwrap_or_else(|| panic!("no '{field}' in {value}"))
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

fn source_config(topic: &Topic, group: &str) -> KafkaSourceConfig {
    let mut config = KafkaSourceConfig::new(BROKERS, &topic.0);
    config.group = group.to_string();
    config
}

/// Runs a pipeline from `source` into a collecting sink, with dead letters collected too.
fn run<S: eddy_engine::Source<Reading>>(
    source: S,
    workers: usize,
) -> (Result<RunSummary, String>, Vec<Reading>, Vec<DeadLetter>) {
    let pipeline = Pipeline::new("kafka-test");
    let out = CollectSink::new();
    let dead = CollectSink::new();
    pipeline.dead_letters(dead.clone());
    pipeline
        .source("kafka", source, WatermarkConfig::default())
        .sink("out", out.clone());
    let result = Runtime::new(workers)
        .run(&pipeline)
        .map_err(|e| format!("{e:#}"));
    (result, out.values(), dead.values())
}

/// The group's committed offsets, summed over the partitions (none committed: 0), and as the
/// client printed them.
fn committed(topic: &Topic, group: &str) -> (u64, Value) {
    let offsets = client(&["committed", &topic.0, group]);
    let sum = offsets
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap_or(0))
        .sum();
    (sum, offsets)
}

#[test]
fn records_published_by_python_arrive_once_with_one_and_two_workers() {
    let _broker = shared();
    const N: u64 = 3000;
    let topic = Topic::create("read", 3);
    let produced = client(&["produce", &topic.0, &N.to_string()]);
    assert_eq!(ids(&produced, "acked"), (0..N).collect::<Vec<_>>());
    for workers in [1, 2] {
        let group = unique("group");
        let source = KafkaSource::new(source_config(&topic, &group)).stop(
            StopRule::never()
                .limit(N)
                .idle_exit(Duration::from_secs(10)),
        );
        let (result, values, dead) = run(source, workers);
        let summary = result.unwrap();
        let got: Vec<u64> = values.iter().map(|r| r.id).collect();
        assert_eq!(
            got,
            (0..N).collect::<Vec<_>>(),
            "{workers} workers: every record once"
        );
        assert!(dead.is_empty(), "{dead:?}");
        assert_eq!(summary.events(), N);
        assert_eq!(
            committed(&topic, &group).1,
            client(&["end-offsets", &topic.0]),
            "{workers} workers: the group committed every partition to its end"
        );
    }
}

#[test]
fn records_eddy_publishes_are_read_by_python_once_with_their_keys() {
    let _broker = shared();
    const N: u64 = 2000;
    // The sink creates the topic, with two partitions.
    let topic = Topic::named("write");
    let mut config = KafkaSinkConfig::new(BROKERS, &topic.0).key("id");
    config.partitions = 2;
    let records: Vec<Record<Reading>> = (0..N)
        .map(|id| {
            (
                id,
                Reading {
                    id,
                    ts: id,
                    value: -(id as i64),
                },
            )
        })
        .collect();
    let pipeline = Pipeline::new("kafka-sink-test");
    let dead = CollectSink::<DeadLetter>::new();
    pipeline.dead_letters(dead.clone());
    pipeline
        .source(
            "script",
            Script::new().records(records),
            WatermarkConfig::default(),
        )
        .sink("kafka", KafkaSink::new(config));
    let summary = Runtime::new(2).run(&pipeline).unwrap();
    assert_eq!(
        summary.output_rows(),
        N,
        "every delivery report said delivered"
    );
    assert!(dead.values().is_empty());
    let read = client(&["consume", &topic.0, &(N + 1).to_string(), "--timeout", "3"]);
    let records = read["records"].as_array().unwrap();
    let mut got: Vec<u64> = Vec::new();
    let mut partitions = BTreeMap::<u64, u64>::new();
    for r in records {
        let id = r["value"]["id"].as_u64().unwrap();
        assert_eq!(r["key"], Value::String(id.to_string()), "keyed by id: {r}");
        assert_eq!(r["value"]["value"], -(id as i64));
        *partitions
            .entry(r["partition"].as_u64().unwrap())
            .or_default() += 1;
        got.push(id);
    }
    got.sort_unstable();
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "all N, none twice");
    assert_eq!(
        partitions.len(),
        2,
        "keys spread over both partitions: {partitions:?}"
    );
}

/// `commit` flushes the producer and waits for every delivery report: what was written is
/// readable before `finish`, and the writer goes on writing.
#[test]
fn a_commit_makes_everything_written_so_far_readable_before_finish() {
    let _broker = shared();
    const N: u64 = 1000;
    let topic = Topic::create("commit", 2);
    let mut config = KafkaSinkConfig::new(BROKERS, &topic.0);
    // librdkafka would hold the records back this long: only the commit's flush sends them
    // within the test's waits. (It must be less than the delivery timeout.)
    config.delivery_timeout = Duration::from_secs(60);
    config
        .connection
        .rdkafka
        .insert("linger.ms".into(), "20000".into());
    let sink = KafkaSink::<Reading>::new(config);
    let mut writer = sink.open(Partition { index: 0, count: 1 }).unwrap();
    for round in 1..=2 {
        let mut batch: Vec<Record<Reading>> = ((round - 1) * N..round * N).map(reading).collect();
        writer.write(&mut batch).unwrap();
        writer.commit().unwrap();
        assert!(writer.undeliverable().is_empty(), "round {round}");
        let ends: u64 = client(&["end-offsets", &topic.0])
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(ends, round * N, "round {round}: in the topic after commit");
        let total = round * N;
        let read = client(&[
            "consume",
            &topic.0,
            &(total + 1).to_string(),
            "--timeout",
            "3",
        ]);
        let mut got: Vec<u64> = read["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["value"]["id"].as_u64().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(
            got,
            (0..total).collect::<Vec<_>>(),
            "round {round}: every record once, before finish"
        );
    }
    assert_eq!(writer.finish().unwrap().rows, 2 * N);
}

#[test]
fn compressed_batches_are_read_and_written() {
    let _broker = shared();
    const N: u64 = 500;
    let all: Vec<u64> = (0..N).collect();
    let read_all = |topic: &Topic| {
        let source = KafkaSource::new(source_config(topic, &unique("group"))).stop(
            StopRule::never()
                .limit(N)
                .idle_exit(Duration::from_secs(10)),
        );
        let (result, values, dead) = run(source, 1);
        result.unwrap();
        assert!(dead.is_empty(), "{dead:?}");
        values.iter().map(|r| r.id).collect::<Vec<u64>>()
    };
    // gzip from kafka-python, read by Eddy.
    let gzipped = Topic::create("gzip-in", 2);
    client(&[
        "produce",
        &gzipped.0,
        &N.to_string(),
        "--compression",
        "gzip",
    ]);
    assert_eq!(read_all(&gzipped), all, "gzip batches from kafka-python");
    // gzip from Eddy, read by kafka-python; zstd from Eddy, read by Eddy.
    for codec in ["gzip", "zstd"] {
        let topic = Topic::create(&format!("{codec}-out"), 2);
        let mut config = KafkaSinkConfig::new(BROKERS, &topic.0);
        config
            .connection
            .rdkafka
            .insert("compression.type".into(), codec.into());
        let pipeline = Pipeline::new("kafka-compressed-sink");
        pipeline
            .source(
                "script",
                Script::new().records((0..N).map(reading)),
                WatermarkConfig::default(),
            )
            .sink("kafka", KafkaSink::new(config));
        assert_eq!(Runtime::new(1).run(&pipeline).unwrap().output_rows(), N);
        let mut ids: Vec<u64> = if codec == "gzip" {
            let read = client(&["consume", &topic.0, &(N + 1).to_string(), "--timeout", "3"]);
            read["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["value"]["id"].as_u64().unwrap())
                .collect()
        } else {
            read_all(&topic)
        };
        ids.sort_unstable();
        assert_eq!(ids, all, "{codec} batches from Eddy");
    }
}

#[test]
fn malformed_records_go_to_the_dead_letters_with_their_partition_and_offset() {
    let _broker = shared();
    const N: u64 = 1000;
    let topic = Topic::create("malformed", 2);
    let produced = client(&[
        "produce",
        &topic.0,
        &N.to_string(),
        "--malformed-every",
        "100",
    ]);
    let mut malformed: Vec<String> = produced["malformed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(malformed.len(), 10);
    let source = KafkaSource::new(source_config(&topic, &unique("group"))).stop(
        StopRule::never()
            .limit(N + 10)
            .idle_exit(Duration::from_secs(10)),
    );
    let (result, values, dead) = run(source, 2);
    result.unwrap();
    let got: Vec<u64> = values.iter().map(|r| r.id).collect();
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "every good record, once");
    let mut raw: Vec<String> = dead.iter().map(|d| d.raw.clone()).collect();
    raw.sort();
    malformed.sort();
    assert_eq!(raw, malformed, "each malformed message, with its bytes");
    for letter in &dead {
        assert_eq!(
            (letter.kind.as_str(), letter.stage.as_str()),
            ("decode", "kafka")
        );
        let words: Vec<&str> = letter.location.split(' ').collect();
        assert!(
            words.len() == 4
                && words[0] == "partition"
                && words[1].parse::<u32>().is_ok_and(|p| p < 2)
                && words[2] == "offset"
                && words[3].parse::<u64>().is_ok(),
            "location: {letter:?}"
        );
        assert!(
            letter.error.contains("JSON") || letter.error.contains("invalid type"),
            "{letter:?}"
        );
    }
}

#[test]
fn a_consumer_group_run_stopped_halfway_lets_the_next_run_read_exactly_the_rest() {
    let _broker = shared();
    const N: u64 = 2000;
    let topic = Topic::create("commit", 2);
    client(&["produce", &topic.0, &N.to_string()]);
    let group = unique("group");
    let first = KafkaSource::new(source_config(&topic, &group)).stop(
        StopRule::never()
            .limit(N / 2)
            .idle_exit(Duration::from_secs(10)),
    );
    let (result, first, _) = run(first, 1);
    result.unwrap();
    assert_eq!(first.len() as u64, N / 2);
    let (sum, offsets) = committed(&topic, &group);
    assert_eq!(sum, N / 2, "what was handed over, no more: {offsets}");
    let mut config = source_config(&topic, &group);
    config.start = StartOffset::Committed;
    let second = KafkaSource::new(config).stop(StopRule::never().idle_exit(Duration::from_secs(3)));
    let (result, second, _) = run(second, 2);
    result.unwrap();
    assert_eq!(second.len() as u64, N / 2, "exactly the rest");
    let mut all: Vec<u64> = first.iter().chain(&second).map(|r| r.id).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..N).collect::<Vec<_>>(),
        "together: every record once"
    );
    assert_eq!(
        committed(&topic, &group).1,
        client(&["end-offsets", &topic.0])
    );
}

#[test]
fn a_broker_restart_mid_run_loses_nothing_the_broker_acknowledged() {
    let _broker = exclusive();
    const N: u64 = 3000;
    let topic = Topic::create("restart", 2);
    let group = unique("group");
    // Python publishes for about 6 s while the broker restarts.
    let producer: Child = client_command(&["produce", &topic.0, &N.to_string(), "--rate", "500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let source = KafkaSource::new(source_config(&topic, &group))
        .stop(StopRule::never().idle_exit(Duration::from_secs(6)));
    let pipeline_thread = std::thread::spawn(move || run(source, 2));
    std::thread::sleep(Duration::from_secs(2));
    brokers_sh("restart");
    let produced = parse_client(&["produce"], producer.wait_with_output().unwrap());
    let acked = ids(&produced, "acked");
    assert_eq!(
        acked.len() as u64,
        N,
        "the producer's retries got every record in"
    );
    let (result, values, dead) = pipeline_thread.join().unwrap();
    result.unwrap();
    assert!(dead.is_empty(), "{dead:?}");
    let mut got: Vec<u64> = values.iter().map(|r| r.id).collect();
    got.sort_unstable();
    let read = got.len();
    got.dedup();
    assert_eq!(got, acked, "every acknowledged record arrived");
    eprintln!(
        "restart test: {read} records read for {} published ({} twice: written twice by a \
         producer retry or read again after the restart, as at-least-once allows)",
        acked.len(),
        read - got.len()
    );
    // The commits after the restart reached the broker too: every partition to its end (which
    // may count a record twice, if the producer's retry wrote it again).
    assert_eq!(
        committed(&topic, &group).1,
        client(&["end-offsets", &topic.0])
    );
}

#[test]
fn an_unreachable_broker_is_a_clear_error_within_seconds() {
    let _broker = shared();
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let address = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let mut config = KafkaSourceConfig::new(&address, "nowhere");
    config.connection.connect_timeout = Duration::from_secs(2);
    let (result, values, _) = run(KafkaSource::new(config), 1);
    let error = result.unwrap_err();
    assert!(values.is_empty());
    assert!(
        error.contains(&format!("cannot connect to Kafka at {address}"))
            && error.contains("brokers.sh up"),
        "{error}"
    );
    let mut config = KafkaSinkConfig::new(&address, "nowhere");
    config.connection.connect_timeout = Duration::from_secs(2);
    let pipeline = Pipeline::new("kafka-sink-unreachable");
    pipeline
        .source(
            "script",
            Script::new().records([(1, 1u64)]),
            WatermarkConfig::default(),
        )
        .sink("kafka", KafkaSink::new(config));
    let error = format!("{:#}", Runtime::new(1).run(&pipeline).unwrap_err());
    assert!(
        error.contains(&format!("cannot connect to Kafka at {address}")),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_broker_down_longer_than_the_reconnect_timeout_fails_the_run_naming_it() {
    let _broker = exclusive();
    let topic = Topic::create("dead", 1);
    let mut config = source_config(&topic, &unique("group"));
    config.reconnect_timeout = Duration::from_secs(3);
    config.commit_interval = Duration::from_millis(200);
    let source = KafkaSource::<Reading>::new(config);
    let pipeline_thread = std::thread::spawn(move || run(source, 1));
    std::thread::sleep(Duration::from_secs(1));
    // The clock starts before the stop: the source may see the broker go while `stop` still
    // waits for the process to exit.
    let stopped = Instant::now();
    brokers_sh("stop");
    let (result, ..) = pipeline_thread.join().unwrap();
    let failed_after = stopped.elapsed();
    brokers_sh("start");
    let error = result.unwrap_err();
    assert!(
        error.contains(&format!("Kafka at {BROKERS} has not answered"))
            && error.contains("reconnect_timeout 3s"),
        "{error}"
    );
    assert!(
        failed_after >= Duration::from_secs(3) && failed_after < Duration::from_secs(15),
        "failed {failed_after:?} after the broker stopped"
    );
}

#[test]
fn a_missing_topic_is_a_clear_error() {
    let _broker = shared();
    let topic = Topic::named("missing");
    let (result, ..) = run(KafkaSource::new(source_config(&topic, "eddy")), 1);
    let error = result.unwrap_err();
    assert!(
        error.contains(&format!("topic {} does not exist", topic.0)),
        "{error}"
    );
}

/// A sink that takes `delay` per record: slower than any source.
#[derive(Clone)]
struct SlowSink {
    delay: Duration,
    rows: Arc<Mutex<u64>>,
}

impl Sink<Value> for SlowSink {
    fn describe(&self) -> String {
        "slow (test)".into()
    }

    fn open(&self, _: Partition) -> Result<Box<dyn SinkWriter<Value>>, ConnectorError> {
        Ok(Box::new(self.clone()))
    }
}

impl SinkWriter<Value> for SlowSink {
    fn write(&mut self, batch: &mut Vec<Record<Value>>) -> Result<(), ConnectorError> {
        std::thread::sleep(self.delay * batch.len() as u32);
        *self.rows.lock().unwrap() += batch.len() as u64;
        batch.clear();
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        Ok(SinkReport::default())
    }
}

/// This process's resident memory, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

#[test]
fn a_slow_sink_keeps_memory_bounded_and_commits_only_what_it_was_given() {
    let _broker = exclusive();
    // 40 MiB of 1 KB records, far more than the source may hold (about 4 MiB of librdkafka
    // prefetch and 1024 messages in the channel per worker).
    const N: u64 = 40_000;
    const READ: u64 = 2_000;
    const BOUND_MIB: f64 = 24.0;
    let topic = Topic::create("slow", 2);
    client(&["bench-produce", &topic.0, &N.to_string()]);
    let group = unique("group");
    let source = KafkaSource::<Value>::new(source_config(&topic, &group)).stop(
        StopRule::never()
            .limit(READ)
            .idle_exit(Duration::from_secs(10)),
    );
    let sink = SlowSink {
        delay: Duration::from_micros(1500),
        rows: Arc::default(),
    };
    let pipeline = Pipeline::new("kafka-slow-sink");
    pipeline
        .source("kafka", source, WatermarkConfig::default())
        .sink("slow", sink.clone());
    let baseline = rss_mib();
    let handle = Runtime::new(1).start(&pipeline).unwrap();
    let run = std::thread::spawn(move || handle.join());
    let mut peak = baseline;
    while !run.is_finished() {
        peak = peak.max(rss_mib());
        std::thread::sleep(Duration::from_millis(20));
    }
    let summary = run.join().unwrap().unwrap();
    assert_eq!(summary.rejected(), 0, "{:?}", summary.rejected_examples);
    let grew = peak - baseline;
    eprintln!("slow sink: resident memory grew {grew:.1} MiB over {baseline:.1} MiB while {READ} of {N} 1 KB records went through");
    assert!(
        grew < BOUND_MIB,
        "memory grew {grew:.1} MiB, over the {BOUND_MIB} MiB bound, for a 40 MiB topic"
    );
    assert_eq!(*sink.rows.lock().unwrap(), READ);
    let (sum, offsets) = committed(&topic, &group);
    assert_eq!(
        sum, READ,
        "only the records handed to the pipeline are committed, not what was prefetched: {offsets}"
    );
}

fn reading(id: u64) -> Record<Reading> {
    (
        id,
        Reading {
            id,
            ts: id,
            value: 0,
        },
    )
}

#[test]
fn records_librdkafka_refuses_go_to_the_dead_letters_and_the_rest_is_delivered() {
    let _broker = shared();
    let topic = Topic::create("refused", 2);
    // Records over librdkafka's message.max.bytes are refused when sent.
    let mut config = KafkaSinkConfig::new(BROKERS, &topic.0);
    config
        .connection
        .rdkafka
        .insert("message.max.bytes".into(), "1000".into());
    // Raw text records, every other one too big.
    config.format = eddy_connectors::Format::Raw;
    let pipeline = Pipeline::new("kafka-sink-too-big");
    let dead = CollectSink::<DeadLetter>::new();
    pipeline.dead_letters(dead.clone());
    let texts: Vec<Record<String>> = (0..10u64)
        .map(|i| {
            (
                i,
                if i % 2 == 0 {
                    "x".repeat(2000)
                } else {
                    format!("small {i}")
                },
            )
        })
        .collect();
    pipeline
        .source(
            "script",
            Script::new().records(texts),
            WatermarkConfig::default(),
        )
        .sink("kafka", KafkaSink::new(config));
    let summary = Runtime::new(1).run(&pipeline).unwrap();
    assert_eq!(summary.output_rows(), 5, "the small ones are delivered");
    let dead = dead.values();
    assert_eq!(dead.len(), 5, "the big ones are dead letters: {dead:?}");
    for letter in &dead {
        assert_eq!(
            (letter.kind.as_str(), letter.stage.as_str()),
            ("delivery", "kafka")
        );
        assert_eq!(letter.location, format!("topic {}", topic.0));
        assert_eq!(letter.raw, "x".repeat(2000));
        assert!(letter.error.contains("refused"), "{letter:?}");
    }
}

/// A source that emits its records once `open` is set, for a sink to send them when the test
/// says; `polled` tells the test the dataflow runs (its sinks are open).
#[derive(Clone)]
struct Gate {
    open: Arc<AtomicBool>,
    polled: Arc<AtomicBool>,
    records: Vec<Record<Reading>>,
}

impl eddy_engine::Source<Reading> for Gate {
    fn describe(&self) -> String {
        "gate (test)".into()
    }

    fn open(
        &self,
        _: Partition,
    ) -> Result<Box<dyn eddy_engine::SourceReader<Reading>>, ConnectorError> {
        Ok(Box::new(self.clone()))
    }
}

impl eddy_engine::SourceReader<Reading> for Gate {
    fn poll(
        &mut self,
        out: &mut Vec<Record<Reading>>,
        _max: usize,
        _rejected: &mut Vec<eddy_engine::RecordError>,
    ) -> Result<eddy_engine::ReadStatus, ConnectorError> {
        self.polled.store(true, Ordering::Release);
        if !self.open.load(Ordering::Acquire) {
            return Ok(eddy_engine::ReadStatus::Idle);
        }
        out.append(&mut self.records);
        Ok(eddy_engine::ReadStatus::Done)
    }
}

#[test]
fn records_sent_while_the_broker_is_down_go_to_the_dead_letters_after_the_delivery_timeout() {
    let _broker = exclusive();
    let topic = Topic::create("down", 2);
    let records: Vec<Record<Reading>> = (0..50).map(reading).collect();
    let gate = Gate {
        open: Arc::default(),
        polled: Arc::default(),
        records: records.clone(),
    };
    let mut config = KafkaSinkConfig::new(BROKERS, &topic.0);
    config.delivery_timeout = Duration::from_secs(2);
    let pipeline = Pipeline::new("kafka-sink-broker-down");
    let dead = CollectSink::<DeadLetter>::new();
    pipeline.dead_letters(dead.clone());
    pipeline
        .source("gate", gate.clone(), WatermarkConfig::default())
        .sink("kafka", KafkaSink::new(config));
    let handle = Runtime::new(1).start(&pipeline).unwrap();
    // Once the sink has opened (it checked the broker), the broker goes away.
    while !gate.polled.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(10));
    }
    brokers_sh("stop");
    gate.open.store(true, Ordering::Release);
    let started = Instant::now();
    let result = handle.join();
    let waited = started.elapsed();
    brokers_sh("start");
    let summary = result.unwrap();
    assert_eq!(summary.output_rows(), 0);
    assert!(
        waited >= Duration::from_secs(2),
        "librdkafka retried for the delivery timeout: {waited:?}"
    );
    let dead = dead.values();
    assert_eq!(dead.len(), records.len(), "{dead:?}");
    let mut raw: Vec<Reading> = dead
        .iter()
        .map(|d| serde_json::from_str(&d.raw).unwrap())
        .collect();
    raw.sort();
    let mut sent: Vec<Reading> = records.into_iter().map(|(_, r)| r).collect();
    sent.sort();
    assert_eq!(raw, sent, "each dead letter carries its record's bytes");
    for letter in &dead {
        assert_eq!(letter.kind, "delivery");
        assert!(
            letter.location.starts_with(&format!("topic {}", topic.0)),
            "{letter:?}"
        );
        assert!(letter.error.contains("timed out"), "{letter:?}");
    }
}
