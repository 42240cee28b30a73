//! Checkpoints of the operators no Nexmark query uses (count windows, top-N per window, the
//! deduplications, the updating aggregates): each runs in this process with checkpoints until
//! its source fails abruptly part-way — the run ends with the error, its last checkpoints
//! incomplete, files of later intervals left pending, as after a crash — then runs again from
//! the same checkpoint directory (at 1 worker, and at 2: a rescale) and must write exactly the
//! rows of an uninterrupted run without checkpoints; a run after that, from the final
//! checkpoint, reads nothing. The exactly-once tests of the `eddy`
//! binary (`queries/tests/exactly_once.rs`) kill real processes; these cover what they cannot
//! reach.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_engine::{
    Change, ConnectorError, FileOutput, Partition, Pipeline, ReadStatus, Record, RecordError,
    Runtime, Sink, SinkReport, SinkWriter, Source, SourcePositions, SourceReader, Stream,
    WatermarkConfig,
};
use eddy_operators::prelude::*;
use serde::Serialize;

/// Records `(key, value)` with event times 0, 1, 2, ... ms (a few out of order), read by
/// worker `i` of `n` at the indices `i, i + n, ...`; with `fail_at`, a reader fails once it
/// has returned that many records and a checkpoint holding it has completed (until then it
/// waits, idle: checkpoints complete in the background, and a failure before the first one
/// would leave nothing to resume from).
#[derive(Clone)]
struct Numbers {
    records: Arc<Vec<Record<(u64, u64)>>>,
    fail_at: Option<usize>,
    /// Once a reader has returned this many records, it idles this long (a stop comes then).
    pause: Option<(usize, Duration)>,
}

impl Numbers {
    fn new(n: u64, fail_at: Option<usize>) -> Self {
        let records = (0..n)
            .map(|i| {
                // Every 7th record 3 ms behind: disorder the watermark allows.
                let t = if i % 7 == 0 { i.saturating_sub(3) } else { i };
                (t, (i * 31 % 13, i * 17 % 101))
            })
            .collect();
        Numbers {
            records: Arc::new(records),
            fail_at,
            pause: None,
        }
    }
}

struct NumbersReader {
    source: Numbers,
    /// The next index to read, and the stride.
    next: usize,
    step: usize,
    returned: usize,
    /// Whether a checkpoint holding this reader has completed.
    committed: bool,
    /// When the pause began.
    paused: Option<Instant>,
}

impl Source<(u64, u64)> for Numbers {
    fn describe(&self) -> String {
        "numbers".into()
    }

    fn open(&self, p: Partition) -> Result<Box<dyn SourceReader<(u64, u64)>>, ConnectorError> {
        Ok(Box::new(NumbersReader {
            source: self.clone(),
            next: p.index,
            step: p.count,
            returned: 0,
            committed: false,
            paused: None,
        }))
    }

    /// One old reader per new worker at most in these tests (1 → 1, 1 → 2 with the second
    /// reading the odd indices the first had not reached).
    fn open_at(
        &self,
        p: Partition,
        positions: &SourcePositions,
    ) -> Result<Box<dyn SourceReader<(u64, u64)>>, ConnectorError> {
        let nexts: Vec<usize> = positions
            .all()
            .map(|b| serde_json::from_slice(b).expect("a position we wrote"))
            .collect();
        let from = *nexts.iter().min().expect("one old reader");
        // Resume the old stride split by the new worker count.
        let next = from + p.index;
        Ok(Box::new(NumbersReader {
            source: Numbers {
                fail_at: None,
                ..self.clone()
            },
            next,
            step: p.count,
            returned: 0,
            committed: false,
            paused: None,
        }))
    }
}

impl SourceReader<(u64, u64)> for NumbersReader {
    fn poll(
        &mut self,
        out: &mut Vec<Record<(u64, u64)>>,
        max: usize,
        _rejected: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError> {
        if self.source.fail_at.is_some_and(|at| self.returned >= at) {
            if !self.committed {
                return Ok(ReadStatus::Idle);
            }
            return Err(ConnectorError::user(
                "the test's source fails here, as a crash would",
            ));
        }
        if let Some((_, pause)) = self.source.pause.filter(|(at, _)| self.returned >= *at) {
            if self.paused.get_or_insert_with(Instant::now).elapsed() < pause {
                return Ok(ReadStatus::Idle);
            }
        }
        let records = &self.source.records;
        let mut n = 0;
        while n < max.min(100) && self.next < records.len() {
            out.push(records[self.next]);
            self.next += self.step;
            n += 1;
        }
        self.returned += n;
        Ok(if n == 0 {
            ReadStatus::Done
        } else {
            ReadStatus::Ready
        })
    }

    fn position(&self) -> Option<Vec<u8>> {
        // Only used at one worker before the failure: the next index is the whole position.
        Some(serde_json::to_vec(&self.next).unwrap())
    }

    fn committed(&mut self, _position: &[u8]) {
        self.committed = true;
    }
}

/// JSON lines into a directory, one file per writer: a file sink as the engine's exactly-once
/// publishing expects (`files`, `open_file`; a file appears under its name when finished).
struct Lines<T> {
    dir: PathBuf,
    _marker: std::marker::PhantomData<fn(T)>,
}

struct LinesWriter {
    tmp: PathBuf,
    to: PathBuf,
    out: Option<BufWriter<File>>,
    rows: u64,
}

impl<T: Serialize + 'static> Sink<T> for Lines<T> {
    fn describe(&self) -> String {
        format!("lines({})", self.dir.display())
    }

    fn open(&self, p: Partition) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        self.open_file(p, &self.dir.clone(), &format!("rows-{:05}.jsonl", p.index))
    }

    fn files(&self) -> Option<FileOutput> {
        Some(FileOutput {
            dir: self.dir.clone(),
            prefix: "rows".into(),
            extension: "jsonl".into(),
        })
    }

    fn open_file(
        &self,
        _p: Partition,
        dir: &Path,
        name: &str,
    ) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        fs::create_dir_all(dir).unwrap();
        let tmp = dir.join(format!(".{name}.tmp"));
        Ok(Box::new(LinesWriter {
            out: Some(BufWriter::new(File::create(&tmp).unwrap())),
            tmp,
            to: dir.join(name),
            rows: 0,
        }))
    }
}

impl<T: Serialize> SinkWriter<T> for LinesWriter {
    fn write(&mut self, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        let out = self.out.as_mut().unwrap();
        for (_, row) in batch.drain(..) {
            serde_json::to_writer(&mut *out, &row).unwrap();
            out.write_all(b"\n").unwrap();
            self.rows += 1;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        self.out.take().unwrap().flush().unwrap();
        fs::rename(&self.tmp, &self.to).unwrap();
        Ok(SinkReport {
            rows: self.rows,
            files: vec![self.to.clone()],
        })
    }
}

/// Every line of every finished file in `dir`, as a multiset.
fn rows(dir: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        for line in fs::read_to_string(&path).unwrap().lines() {
            *counts.entry(line.to_string()).or_default() += 1;
        }
    }
    counts
}

const EVENTS: u64 = 40_000;

/// The rows of a change log summed per row (`diff` taken out): the result standing at the
/// end, without the changes that led to it.
fn net(changes: &BTreeMap<String, usize>) -> BTreeMap<String, i64> {
    let mut standing = BTreeMap::new();
    for (line, n) in changes {
        let mut row: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).unwrap();
        let diff = row.remove("diff").and_then(|d| d.as_i64()).unwrap();
        *standing
            .entry(serde_json::Value::Object(row).to_string())
            .or_default() += diff * *n as i64;
    }
    standing.retain(|_, d| *d != 0);
    standing
}

/// Runs the pipeline `build` makes over [`Numbers`] three ways — uninterrupted without
/// checkpoints; with checkpoints every 500 ms of event time, failing after a third, a half or
/// two thirds of the records; and resumed at `workers` — and compares the rows written. An updating result's
/// change log depends on how records were stamped, which another worker count changes: there
/// the rows standing at the end are compared ([`net`]).
fn crash_and_resume<T, F>(what: &str, workers: usize, build: F)
where
    T: Serialize + eddy_engine::Data,
    F: Fn(Stream<(u64, u64)>) -> Stream<T>,
{
    for fail_at in [EVENTS / 3, EVENTS / 2, EVENTS * 2 / 3] {
        crash_at_and_resume(what, workers, fail_at as usize, &build);
    }
}

/// The pipeline `what`: `build` over `source` (5 ms of disorder) into JSON lines in `out`.
fn numbers_pipeline<T, F>(what: &str, source: Numbers, out: &Path, build: &F) -> Pipeline
where
    T: Serialize + eddy_engine::Data,
    F: Fn(Stream<(u64, u64)>) -> Stream<T>,
{
    let p = Pipeline::new(what);
    let watermarks = WatermarkConfig {
        max_disorder: Duration::from_millis(5),
        idle_timeout: None,
    };
    let stream = p.source("numbers", source, watermarks);
    build(stream).sink(
        "out",
        Lines::<T> {
            dir: out.to_path_buf(),
            _marker: std::marker::PhantomData,
        },
    );
    p
}

/// A test's directory, its reference output (an uninterrupted run without checkpoints) and the
/// paths of the output and checkpoints to compare with it.
fn with_reference<T, F>(what: &str, workers: usize, build: &F) -> [PathBuf; 4]
where
    T: Serialize + eddy_engine::Data,
    F: Fn(Stream<(u64, u64)>) -> Stream<T>,
{
    let dir = tempfile_dir(what, workers);
    let (reference, out, checkpoints) = (
        dir.join("reference"),
        dir.join("out"),
        dir.join("checkpoints"),
    );
    let pipeline = numbers_pipeline(what, Numbers::new(EVENTS, None), &reference, build);
    Runtime::new(1).run(&pipeline).unwrap();
    [dir, reference, out, checkpoints]
}

fn crash_at_and_resume<T, F>(what: &str, workers: usize, fail_at: usize, build: &F)
where
    T: Serialize + eddy_engine::Data,
    F: Fn(Stream<(u64, u64)>) -> Stream<T>,
{
    let [dir, reference, out, checkpoints] = with_reference(what, workers, build);
    let pipeline = |source: Numbers, out: &Path| numbers_pipeline(what, source, out, build);
    let crashed = Runtime::new(1)
        .checkpoint(&checkpoints, Duration::from_millis(500))
        .run(&pipeline(Numbers::new(EVENTS, Some(fail_at)), &out));
    assert!(crashed.is_err(), "{what}: the failing run did not fail");
    let resumed = Runtime::new(workers)
        .checkpoint(&checkpoints, Duration::from_millis(500))
        .run(&pipeline(Numbers::new(EVENTS, None), &out))
        .unwrap();
    let report = resumed.checkpoints.clone().unwrap();
    let (at, _) = report.resumed.expect("the second run resumed");
    assert!(
        at > 0 && at < EVENTS,
        "{what}: resumed from {at}, not from the middle of the run"
    );
    let (expected, got) = (rows(&reference), rows(&out));
    assert!(!expected.is_empty(), "{what}: no rows");
    let updating = expected.keys().all(|line| line.contains("\"diff\":"));
    if updating && workers > 1 {
        assert_eq!(
            net(&got),
            net(&expected),
            "{what} at {workers} workers: the resumed result differs from an uninterrupted run's"
        );
    } else {
        assert_eq!(
            got, expected,
            "{what} at {workers} workers: the resumed output differs from an uninterrupted run's"
        );
    }
    // The job has finished: a run from its final checkpoint reads nothing and ends at once,
    // the output untouched.
    let again = Runtime::new(workers)
        .checkpoint(&checkpoints, Duration::from_millis(500))
        .run(&pipeline(Numbers::new(EVENTS, None), &out))
        .unwrap();
    let at = again
        .checkpoints
        .as_ref()
        .and_then(|c| c.resumed)
        .map(|(at, _)| at);
    assert_eq!(at, Some(u64::MAX), "{what}: not resumed at the end");
    assert_eq!(again.events(), 0, "{what}: a finished job read again");
    assert_eq!(rows(&out), got, "{what}: a finished job's output changed");
    let _ = fs::remove_dir_all(&dir);
}

fn tempfile_dir(what: &str, workers: usize) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "eddy-checkpoints-{what}-{workers}-{}-{nanos}",
        std::process::id()
    ));
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn keyed(s: Stream<(u64, u64)>) -> Keyed<u64, (u64, u64)> {
    s.key_by("by_key", |r: &(u64, u64)| r.0)
}

/// The value of a record: its second field.
type ValueOf = fn(&(u64, u64)) -> u64;

/// The sum of the values.
fn total() -> Sum<ValueOf> {
    Sum(|r: &(u64, u64)| r.1)
}

#[test]
fn count_windows_resume_exactly_once() {
    for workers in [1, 2] {
        crash_and_resume("count_window", workers, |s| {
            keyed(s).count_window("pairs", 2, total())
        });
    }
}

#[test]
fn top_n_per_window_resumes_exactly_once() {
    for workers in [1, 2] {
        crash_and_resume("top_n", workers, |s| {
            keyed(s)
                .window("sums", WindowSpec::hopping(1_000, 250), total())
                .top_n_per_window("top", 3, |r: &WindowResult<u64, u64>| r.value)
        });
    }
}

#[test]
fn dedups_resume_exactly_once() {
    for workers in [1, 2] {
        crash_and_resume("dedup_window", workers, |s| {
            keyed(s).dedup_window("first", WindowSpec::tumbling(700))
        });
        crash_and_resume("dedup_ttl", workers, |s| {
            keyed(s).dedup_ttl("quiet", 20).into_stream()
        });
    }
}

#[test]
fn updating_aggregates_resume_exactly_once() {
    for workers in [1, 2] {
        crash_and_resume("aggregate_updating", workers, |s| -> Stream<Change<_>> {
            keyed(s).aggregate_updating("totals", total())
        });
        crash_and_resume("window_updating", workers, |s| -> Stream<Change<_>> {
            keyed(s).window_updating("window_totals", WindowSpec::tumbling(400), Count)
        });
    }
}

#[test]
fn a_stop_takes_a_final_checkpoint_where_it_stopped_and_the_next_run_resumes_there() {
    // The reader idles for a while after 10 000 records (event times up to about 10 000 ms,
    // the watermark 5 ms behind); the stop comes then. With checkpoints every 500 ms it reads on
    // to the next boundary, 10 000, and the checkpoint there completes before the run ends:
    // the next run resumes from it, not from 9 500.
    for workers in [1, 2] {
        let what = "stop_with_checkpoint";
        let build = |s| keyed(s).window("sums", WindowSpec::tumbling(300), total());
        let [dir, reference, out, checkpoints] = with_reference(what, workers, &build);
        let pipeline = |source: Numbers, out: &Path| numbers_pipeline(what, source, out, &build);
        let mut paused = Numbers::new(EVENTS, None);
        paused.pause = Some((10_000, Duration::from_millis(500)));
        let run = Runtime::new(1)
            .checkpoint(&checkpoints, Duration::from_millis(500))
            .start(&pipeline(paused, &out))
            .unwrap();
        while run.progress().0 < 10_000 {
            std::thread::sleep(Duration::from_millis(5));
        }
        run.stop();
        let stopped = run.join().unwrap();
        assert!(stopped.stopped, "{what}: the run was not stopped");
        let last = stopped.checkpoints.as_ref().and_then(|c| c.last);
        assert_eq!(
            last,
            Some(10_000),
            "{what}: the stop's final checkpoint is not the boundary after the stop"
        );
        let read_before = stopped.events();
        let resumed = Runtime::new(workers)
            .checkpoint(&checkpoints, Duration::from_millis(500))
            .run(&pipeline(Numbers::new(EVENTS, None), &out))
            .unwrap();
        let at = resumed.checkpoints.as_ref().and_then(|c| c.resumed);
        assert_eq!(
            at.map(|(at, _)| at),
            Some(10_000),
            "{what}: resumed elsewhere"
        );
        assert!(
            read_before + resumed.events() <= EVENTS + 200,
            "{what}: {} + {} records read for {EVENTS}: the resumed run read again what the \
             stopped one had",
            read_before,
            resumed.events()
        );
        assert_eq!(
            rows(&out),
            rows(&reference),
            "{what} at {workers} workers: stopped and resumed, the output differs from an \
             uninterrupted run's"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
