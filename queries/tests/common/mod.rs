//! Helpers shared by the integration tests: reading Parquet back, a collecting sink,
//! comparing rows order-independently, running a query over generated events in this process,
//! and running it through the `eddy` binary in two processes of one worker each over loopback.

#![allow(dead_code)]

use std::fmt::Debug;
use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use eddy_connectors::nexmark::{generate_all, Event, NexmarkConfig, NexmarkSource};
use eddy_engine::change::consolidate;
use eddy_engine::testing::CollectSink;
use eddy_engine::{
    Change, ConnectorError, Partition, Pipeline, Record, RunSummary, Runtime, Sink, SinkReport,
    SinkWriter, Stream, WatermarkConfig,
};
use eddy_queries::nexmark::Query;
use eddy_queries::output::Output;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::de::DeserializeOwned;

/// Every row of every `*.parquet` file in `dir`, read with the parquet crate's Arrow reader.
pub fn read_parquet_dir<T: DeserializeOwned>(dir: &Path) -> Vec<T> {
    let mut rows = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !name.ends_with(".tmp"),
            "a temporary file was left behind: {name}"
        );
        if !name.ends_with(".parquet") {
            continue;
        }
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            rows.extend(serde_arrow::from_record_batch::<Vec<T>>(&batch).unwrap());
        }
    }
    rows
}

/// Sorts rows by their debug form, so outputs compare whatever order workers wrote them in.
pub fn sorted<T: Debug>(mut rows: Vec<T>) -> Vec<T> {
    rows.sort_by_cached_key(|r| format!("{r:?}"));
    rows
}

/// Asserts two row sets are equal as multisets, with a short, readable difference.
pub fn assert_same_rows<T: Debug + PartialEq>(what: &str, actual: Vec<T>, expected: Vec<T>) {
    let (actual, expected) = (sorted(actual), sorted(expected));
    if actual != expected {
        let missing: Vec<_> = expected
            .iter()
            .filter(|r| !actual.contains(r))
            .take(5)
            .collect();
        let extra: Vec<_> = actual
            .iter()
            .filter(|r| !expected.contains(r))
            .take(5)
            .collect();
        panic!(
            "{what}: {} rows, expected {}\n  missing (first 5): {missing:?}\n  unexpected (first 5): {extra:?}",
            actual.len(),
            expected.len()
        );
    }
}

/// A sink that collects every record (with its event time) into a shared vector.
pub struct Collect<T>(pub Arc<Mutex<Vec<Record<T>>>>);

impl<T> Collect<T> {
    pub fn new() -> (Self, Arc<Mutex<Vec<Record<T>>>>) {
        let rows = Arc::new(Mutex::new(Vec::new()));
        (Collect(Arc::clone(&rows)), rows)
    }
}

struct CollectWriter<T>(Arc<Mutex<Vec<Record<T>>>>, u64);

impl<T: Send + 'static> Sink<T> for Collect<T> {
    fn describe(&self) -> String {
        "collect".into()
    }
    fn open(&self, _: Partition) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        Ok(Box::new(CollectWriter(Arc::clone(&self.0), 0)))
    }
}

impl<T> SinkWriter<T> for CollectWriter<T> {
    fn write(&mut self, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        self.1 += batch.len() as u64;
        self.0.lock().unwrap().append(batch);
        Ok(())
    }
    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        Ok(SinkReport {
            rows: self.1,
            files: Vec::new(),
        })
    }
}

/// Events in the generated-input query tests.
pub const EVENTS: u64 = 60_000;
/// Events per second of event time in those tests: 60 000 events span 60 s, so the windowed
/// queries see many windows and bidders have many sessions, some of several bids.
pub const RATE: usize = 1_000;

/// The generator's configuration for those tests: [`EVENTS`] events at [`RATE`] per second of
/// event time.
pub fn config() -> NexmarkConfig {
    NexmarkConfig {
        events: EVENTS,
        events_per_second: RATE,
        ..Default::default()
    }
}

/// The same events as a `Vec`, for the batch references.
pub fn events() -> Vec<Event> {
    events_of(&config())
}

/// `config`'s events as a `Vec`.
pub fn events_of(config: &NexmarkConfig) -> Vec<Event> {
    generate_all(config).into_iter().map(|(_, e)| e).collect()
}

/// Runs `query` over the generated events at `workers` workers, in a pipeline called `name`;
/// checks every event was read and none was late, and returns what the query emitted.
pub fn run_collecting<T>(
    name: &str,
    query: fn(Stream<Event>) -> Stream<T>,
    workers: usize,
) -> Vec<T>
where
    T: Clone + Send + serde::Serialize + DeserializeOwned + 'static,
{
    let pipeline = Pipeline::new(name);
    let out = CollectSink::new();
    let events = pipeline.source(
        "nexmark",
        NexmarkSource::new(config()),
        WatermarkConfig::default(),
    );
    query(events).sink("sink", out.clone());
    let summary = Runtime::new(workers).run(&pipeline).unwrap();
    assert_eq!(summary.events(), EVENTS);
    assert_eq!(
        summary.late(),
        0,
        "in-order generator input has no late records"
    );
    out.rows().into_iter().map(|(_, row)| row).collect()
}

/// What `query` (whose stages `stream` adds) emits over the generated events, labelled by where
/// it ran: at 1 and 2 workers in this process ([`run_collecting`]), and in two processes
/// ([`run_two_processes`], read back from the Parquet they wrote; a change log's `diff` column
/// reads back into [`Change`]).
pub fn run_everywhere<T>(
    query: Query,
    stream: fn(Stream<Event>) -> Stream<T>,
) -> Vec<(String, Vec<T>)>
where
    T: Clone + Send + serde::Serialize + DeserializeOwned + 'static,
{
    let mut runs: Vec<_> = [1, 2]
        .into_iter()
        .map(|workers| {
            let rows = run_collecting(&query.to_string(), stream, workers);
            (format!("{query}, {workers} workers"), rows)
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(format!("{query}-2p"));
    run_two_processes(query, &config(), &dir, &[]);
    runs.push((format!("{query}, 2 processes"), read_parquet_dir(&dir)));
    runs
}

/// The rows a change log leaves standing, sorted. Panics if some row's running sum goes below
/// zero: a row retracted before it was added, or more often. A row's changes come from the one
/// worker owning its key, in order, so the check holds for a log merged from several workers.
pub fn standing<T: Ord + Clone + Debug>(what: &str, log: Vec<Change<T>>) -> Vec<T> {
    let mut sums = std::collections::BTreeMap::<&T, i64>::new();
    for change in &log {
        let sum = sums.entry(&change.row).or_insert(0);
        *sum += change.diff;
        assert!(
            *sum >= 0,
            "{what}: {:?} is retracted before it is added",
            change.row
        );
    }
    consolidate(log).unwrap()
}

/// `n` free TCP ports on loopback, all different: each is bound until all are found.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Whether the `eddy` binary can generate `config`'s events: it has flags for their number and
/// rate, not for the base time.
pub fn binary_generates(config: &NexmarkConfig) -> bool {
    config.base_time == NexmarkConfig::default().base_time
}

/// How long [`run_two_processes`] waits for its processes before it kills them.
pub const TWO_PROCESS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs `query` through the `eddy` binary in two processes of one worker each, talking over
/// loopback TCP (timely's cluster mode), on `config`'s events (`--events`, `--rate`; the binary
/// generates from the default base time only), `--quiet`, writing under `dir` with the further
/// flags `args` (such as `--format jsonl` or `--side-input FILE`). Panics with the processes'
/// output if either fails; kills both if one fails (its peer might wait for it for ever) or
/// past [`TWO_PROCESS_DEADLINE`].
pub fn run_two_processes(query: Query, config: &NexmarkConfig, dir: &Path, args: &[&str]) {
    assert!(
        binary_generates(config),
        "eddy nexmark run has no flag for the base time"
    );
    let hosts = dir.with_extension("hosts");
    let lines: String = free_ports(2)
        .into_iter()
        .map(|port| format!("127.0.0.1:{port}\n"))
        .collect();
    std::fs::write(&hosts, lines).unwrap();
    // stdout and stderr go to files, so a chatty process never blocks on a full pipe
    let logs: Vec<_> = (0..2)
        .map(|process| dir.with_extension(format!("process{process}.log")))
        .collect();
    let mut children: Vec<_> = logs
        .iter()
        .enumerate()
        .map(|(process, log)| {
            let log = File::create(log).unwrap();
            Command::new(env!("CARGO_BIN_EXE_eddy"))
                .args(["nexmark", "run", &query.to_string(), "--quiet"])
                .args(["--workers", "1", "--processes", "2"])
                .args(["--process", &process.to_string()])
                .args(["--hosts", hosts.to_str().unwrap()])
                .args(["--events", &config.events.to_string()])
                .args(["--rate", &config.events_per_second.to_string()])
                .args(["--out", dir.to_str().unwrap()])
                .args(args)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap()
        })
        .collect();
    let started = std::time::Instant::now();
    let mut statuses = [None, None];
    let failure = loop {
        for (child, status) in children.iter_mut().zip(&mut statuses) {
            if status.is_none() {
                *status = child.try_wait().unwrap();
            }
        }
        if let Some(process) = statuses
            .iter()
            .position(|s| s.is_some_and(|s| !s.success()))
        {
            break Some(format!(
                "process {process} failed ({:?})",
                statuses[process]
            ));
        }
        if statuses.iter().all(Option::is_some) {
            break None;
        }
        if started.elapsed() > TWO_PROCESS_DEADLINE {
            break Some(format!("still running after {TWO_PROCESS_DEADLINE:?}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    if let Some(failure) = failure {
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let output: Vec<String> = logs
            .iter()
            .enumerate()
            .map(|(process, log)| {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                format!("--- process {process}:\n{text}")
            })
            .collect();
        panic!("{query} in 2 processes: {failure}\n{}", output.join("\n"));
    }
}

/// Runs `query` in two processes ([`run_two_processes`], with the further flags `args`) into
/// Parquet under `dir` and asserts its rows are `expected`, in any order.
pub fn assert_two_processes_match<T>(
    query: Query,
    config: &NexmarkConfig,
    dir: &Path,
    args: &[&str],
    expected: Vec<T>,
) where
    T: DeserializeOwned + Debug + PartialEq,
{
    run_two_processes(query, config, dir, args);
    assert_same_rows(
        &format!("{query}, 2 processes {args:?}"),
        read_parquet_dir(dir),
        expected,
    );
}

/// Runs `query` over `config`'s events into Parquet at 1 and 2 workers, and in two processes
/// when the binary can generate them ([`binary_generates`]), and asserts each run's rows are
/// `expected`, in any order. Each in-process run must read every event, find none late and
/// write one file per worker; `check_summary` checks its summary further (say, that a stage's
/// state is empty at the end).
pub fn assert_parquet_matches<T>(
    query: Query,
    config: &NexmarkConfig,
    expected: &[T],
    check_summary: impl Fn(&RunSummary),
) where
    T: DeserializeOwned + Debug + PartialEq + Clone,
{
    let tmp = tempfile::tempdir().unwrap();
    for workers in [1, 2] {
        let what = format!("{query}, {workers} workers");
        let dir = tmp.path().join(format!("{query}-{workers}w"));
        let output = Output::Parquet {
            dir: dir.clone(),
            row_group_size: 4096,
        };
        let summary = Runtime::new(workers)
            .run(&query.pipeline(config.clone(), &output))
            .unwrap();
        assert_eq!(summary.events(), config.events, "{what}");
        assert_eq!(
            summary.late(),
            0,
            "{what}: in-order generator input has no late records"
        );
        assert_eq!(
            summary.files().len(),
            workers,
            "{what}: one file per worker"
        );
        check_summary(&summary);
        assert_same_rows(&what, read_parquet_dir(&dir), expected.to_vec());
    }
    if binary_generates(config) {
        let dir = tmp.path().join(format!("{query}-2p"));
        assert_two_processes_match(query, config, &dir, &[], expected.to_vec());
    }
}

/// The state `summary`'s stage `name` holds at the end of the run.
pub fn stage_state(summary: &RunSummary, name: &str) -> u64 {
    summary
        .stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no stage {name}"))
        .state
}

/// Runs `eddy copy ARGS` to its end: `Ok` with what it said on stderr when it succeeded, `Err`
/// with it (and its stdout) when it failed.
pub fn eddy_copy(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
        .arg("copy")
        .args(args)
        .output()
        .expect("the eddy binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stderr)
    } else {
        Err(format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)))
    }
}

/// Runs `python3` with `args` (a script that reads `path` with pyarrow and prints JSON) and
/// parses what it prints; fails the test with python's error when it fails.
pub fn pyarrow_json<T: DeserializeOwned>(args: &[&std::ffi::OsStr], path: &Path, what: &str) -> T {
    let out = Command::new("python3")
        .args(args)
        .arg(path)
        .output()
        .expect("python3 runs (pyarrow is installed by scripts/test.sh)");
    assert!(
        out.status.success(),
        "{what}: pyarrow could not read {} (is pyarrow installed? `pip install pyarrow`): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `id` column of the Parquet files in `dir`, as pyarrow reads the directory, sorted.
pub fn pyarrow_ids(dir: &Path) -> Vec<u64> {
    let script = "import json, sys, pyarrow.parquet as pq\n\
                  print(json.dumps(pq.read_table(sys.argv[1]).column('id').to_pylist()))";
    let mut ids: Vec<u64> = pyarrow_json(&["-c".as_ref(), script.as_ref()], dir, "ids");
    ids.sort_unstable();
    ids
}

/// What `eddy copy` must say of a broker source URI with a mistyped option, and of one whose
/// broker does not listen.
pub struct SourceErrors {
    /// The URI with the mistyped option.
    pub mistyped: String,
    /// What its error names: the option and one it should have been.
    pub mistyped_says: [&'static str; 2],
    /// The URI of the source at a closed address.
    pub unreachable: fn(std::net::SocketAddr) -> String,
    /// What its error starts with, before the address (`cannot connect to Kafka at`).
    pub unreachable_says: &'static str,
    /// How long finding the broker unreachable may take.
    pub within: std::time::Duration,
}

/// Checks that `eddy copy` fails on both sources of `errors` with messages naming what is
/// wrong, the unreachable one within its time.
pub fn assert_clear_source_errors(errors: SourceErrors) {
    let copy_from = |from: &str| eddy_copy(&["--from", from, "--to", "jsonl:///-"]);
    let said = copy_from(&errors.mistyped).expect_err("a mistyped option must fail");
    assert!(
        errors.mistyped_says.iter().all(|s| said.contains(s)),
        "{said}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let started = std::time::Instant::now();
    let said = copy_from(&(errors.unreachable)(closed)).expect_err("no broker: it must fail");
    assert!(
        said.contains(&format!("{} {closed}", errors.unreachable_says)),
        "{said}"
    );
    assert!(
        started.elapsed() < errors.within,
        "giving up took {:?}",
        started.elapsed()
    );
}

/// Every row of the Parquet files in `dir` as pyarrow reads them (`read_parquet.py --rows`),
/// each as one JSON object.
pub fn pyarrow_rows_json(dir: &Path) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_parquet.py");
    let found: serde_json::Value = pyarrow_json(
        &[script.as_os_str(), "--rows".as_ref()],
        dir,
        "read_parquet.py",
    );
    found["data"]
        .as_array()
        .expect("read_parquet.py --rows lists the rows")
        .iter()
        .map(|row| row.to_string())
        .collect()
}

/// Every row of the Parquet files in `dir` as pyarrow reads them, streamed record batch by
/// record batch (`read_parquet.py --jsonl`): `each` gets each row as one JSON object (keys
/// sorted, so one row is always one string), and no more than a batch is held at once.
pub fn pyarrow_each_row(dir: &Path, mut each: impl FnMut(&str)) {
    use std::io::{BufRead, Read};
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_parquet.py");
    let mut python = Command::new("python3")
        .arg(script)
        .arg("--jsonl")
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (pyarrow is installed by scripts/test.sh)");
    let stdout = std::io::BufReader::new(python.stdout.take().unwrap());
    for line in stdout.lines() {
        each(&line.expect("read_parquet.py --jsonl writes UTF-8 lines"));
    }
    // What it says on stderr is short (an error), so it cannot fill the pipe and block it.
    let mut stderr = String::new();
    python
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = python.wait().unwrap();
    assert!(
        status.success(),
        "pyarrow could not read {} (is pyarrow installed? `pip install pyarrow`): {stderr}",
        dir.display()
    );
}

/// Sends `signal` (`TERM`, `INT`) to `child` with `kill`. A child that has exited but is not
/// yet waited for still has its process id, so this never signals another process.
pub fn signal(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -{signal} {} failed", child.id());
}

/// The seed of a crash test's kill moments: `EDDY_CRASH_SEED`, or the clock; printed so a
/// failing run can be replayed.
pub fn crash_seed() -> u64 {
    let seed = std::env::var("EDDY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("kill moments from EDDY_CRASH_SEED={seed}");
    seed
}

/// The newest complete checkpoint's manifest in the checkpoint directory `checkpoints`.
pub fn newest_manifest(checkpoints: &Path) -> Option<std::path::PathBuf> {
    let dir = std::fs::read_dir(checkpoints.join("manifests")).ok()?;
    dir.map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none())
        .max()
}

/// Kills `child` with SIGKILL if it still runs, and reaps it; says whether it did.
pub fn kill(child: &mut Child) -> bool {
    let running = child.try_wait().unwrap().is_none();
    if running {
        child.kill().unwrap();
    }
    child.wait().unwrap();
    running
}

/// Waits until `child` has completed `n` more checkpoints in `checkpoints` (or ended); says
/// whether it still runs.
pub fn await_checkpoints(child: &mut Child, checkpoints: &Path, n: usize) -> bool {
    let started = std::time::Instant::now();
    let mut newest = newest_manifest(checkpoints);
    let mut seen = 0;
    while seen < n {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        let now = newest_manifest(checkpoints);
        if now != newest {
            newest = now;
            seen += 1;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "no checkpoint completes"
        );
    }
    true
}

/// Waits for `child` to exit, at most `limit` (then kills it and fails the test with what it
/// said), and returns its output.
pub fn wait_at_most(mut child: Child, limit: std::time::Duration) -> std::process::Output {
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "eddy did not exit within {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Where `scripts/brokers.sh` keeps its TLS brokers' CA, certificates and password.
pub fn broker_tls_dir() -> std::path::PathBuf {
    let brokers = std::env::var("EDDY_BROKERS_DIR").unwrap_or_else(|_| "/tmp/eddy-brokers".into());
    std::path::PathBuf::from(brokers).join("tls")
}

/// Fails the test, saying how to start the brokers, when nothing listens on 127.0.0.1:`port`.
pub fn require_tls_broker(what: &str, port: u16) {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(2)).is_ok(),
        "{what} is not reachable at {address}: start the test brokers with \
         `bash scripts/brokers.sh up`"
    );
}

/// A name (topic, stream, client id) no other run uses, starting with `prefix`.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}{}x{nanos}", std::process::id())
}

/// Copies a one-record file to each sink URI of `cases`: each must fail within 15 s (nothing
/// retried that retrying cannot fix), saying its reason, and show no `wrong_password`.
pub fn assert_each_fails_at_once(dir: &Path, cases: &[(String, &str)], wrong_password: &str) {
    let input = dir.join("one.jsonl");
    std::fs::write(&input, "{\"id\": 1}\n").unwrap();
    let from_file = format!("jsonl://{}", input.display());
    for (to, reason) in cases {
        let started = std::time::Instant::now();
        let err = eddy_copy(&["--from", &from_file, "--to", to]).expect_err("the copy fails");
        assert!(err.contains(reason), "{to}: {err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "{to}: took {:?} to fail: it retried what retrying cannot fix",
            started.elapsed()
        );
        assert!(!err.contains(wrong_password), "a password is shown: {err}");
    }
}

/// Writes `orders.jsonl` in `dir`: one `{"id": i, "total": i.5}` line for each `i` of `ids`.
/// The file is returned as a `jsonl://` URI, for `eddy copy --from`.
pub fn orders_jsonl(dir: &Path, ids: std::ops::Range<u64>) -> String {
    let input = dir.join("orders.jsonl");
    let lines: String = ids
        .map(|i| format!("{{\"id\": {i}, \"total\": {i}.5}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    format!("jsonl://{}", input.display())
}

/// `cert_file=` and `key_file=` options for the client certificate `name` (`client`,
/// `rogue-client`) of [`broker_tls_dir`].
pub fn client_cert(name: &str) -> String {
    let tls = broker_tls_dir();
    format!(
        "cert_file={}&key_file={}",
        tls.join(format!("{name}.pem")).display(),
        tls.join(format!("{name}-key.pem")).display()
    )
}

/// `ca_file=` (the test CA) and the client certificate `name`, as in [`client_cert`].
pub fn trusting_ca_with_cert(name: &str) -> String {
    let ca = broker_tls_dir().join("ca.pem");
    format!("ca_file={}&{}", ca.display(), client_cert(name))
}
