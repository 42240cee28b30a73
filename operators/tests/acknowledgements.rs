//! Stateful stages hold acknowledgements: without checkpoints, a source that acknowledges
//! (a broker queue) is told a record is durable only once its effect is committed in the sinks.
//! For a window, that is once the window has fired *and* the sink has committed its result,
//! not merely once the sink's frontier has passed the record's stamp.
//!
//! The source here acknowledges like a broker source and, at every release, checks the sink's
//! committed output: every released record's window (or session) must be in it. It runs at 1
//! and 2 workers (the window's keys are exchanged, so a worker's records are held by the other
//! worker's stage), with watermarks that advance slowly enough for many commits mid-run.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use eddy_engine::{
    ConnectorError, Partition, Pipeline, ReadStatus, Record, RecordError, Runtime, Sink,
    SinkReport, SinkWriter, Source, SourceReader, Stream, WatermarkConfig,
};
use eddy_operators::prelude::*;

/// A test value: (key, id).
type Kv = (u64, u64);
/// A result row: a window or session of a key and how many records it took.
type Row = WindowResult<u64, u64>;

/// One step of the input.
#[derive(Clone, Debug)]
enum Step {
    Records(Vec<Record<Kv>>),
    /// The watermark advances; the source then idles a while, so that sinks commit.
    Watermark(u64),
}

/// What the source, the sink and the test share.
#[derive(Default)]
struct Ledger {
    /// Rows the sink has committed.
    committed: Vec<Row>,
    /// Records released to the source, and whether the source had ended by then.
    released: Vec<(Record<Kv>, bool)>,
    /// Released records whose window or session was not committed at their release.
    violations: Vec<String>,
}

type Shared = Arc<Mutex<Ledger>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `rows` hold the result a record `(event time, (key, id))` went into.
type Covers = fn(&[Row], &Record<Kv>) -> bool;

/// A source that acknowledges what it reads, read by worker 0 only.
#[derive(Clone)]
struct Acked {
    steps: Vec<Step>,
    shared: Shared,
    covers: Covers,
}

impl Source<Kv> for Acked {
    fn describe(&self) -> String {
        "acknowledging script (test)".into()
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SourceReader<Kv>>, ConnectorError> {
        let steps = if partition.index == 0 {
            self.steps.clone()
        } else {
            Vec::new()
        };
        Ok(Box::new(AckedReader {
            steps: steps.into_iter(),
            watermark: 0,
            idle_until: None,
            polls: Vec::new(),
            released: 0,
            ended: false,
            shared: Arc::clone(&self.shared),
            covers: self.covers,
        }))
    }

    fn acknowledges(&self) -> bool {
        true
    }
}

struct AckedReader {
    steps: std::vec::IntoIter<Step>,
    watermark: u64,
    idle_until: Option<Instant>,
    /// The records of each poll so far.
    polls: Vec<Vec<Record<Kv>>>,
    released: usize,
    ended: bool,
    shared: Shared,
    covers: Covers,
}

impl SourceReader<Kv> for AckedReader {
    fn poll(
        &mut self,
        out: &mut Vec<Record<Kv>>,
        _max: usize,
        _rejected: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError> {
        let status = if self.idle_until.is_some_and(|t| Instant::now() < t) {
            ReadStatus::Idle
        } else {
            self.idle_until = None;
            match self.steps.next() {
                Some(Step::Records(records)) => {
                    out.extend(records);
                    ReadStatus::Ready
                }
                Some(Step::Watermark(w)) => {
                    self.watermark = w;
                    self.idle_until = Some(Instant::now() + Duration::from_millis(15));
                    ReadStatus::Ready
                }
                None => {
                    self.ended = true;
                    ReadStatus::Done
                }
            }
        };
        self.polls.push(out.clone());
        Ok(status)
    }

    fn watermark(&self) -> Option<u64> {
        Some(self.watermark)
    }

    fn released(&mut self, polls: u64) {
        let mut ledger = lock(&self.shared);
        for poll in self.released..polls as usize {
            for record in &self.polls[poll] {
                if !(self.covers)(&ledger.committed, record) {
                    let violation =
                        format!("record {record:?} was released before its result was committed");
                    ledger.violations.push(violation);
                }
                ledger.released.push((*record, self.ended));
            }
        }
        self.released = self.released.max(polls as usize);
    }
}

/// A sink that commits what it was given on [`SinkWriter::commit`] and at its finish.
#[derive(Clone)]
struct Committing {
    shared: Shared,
}

impl Sink<Row> for Committing {
    fn describe(&self) -> String {
        "committing collector (test)".into()
    }

    fn open(&self, _partition: Partition) -> Result<Box<dyn SinkWriter<Row>>, ConnectorError> {
        Ok(Box::new(CommittingWriter {
            shared: Arc::clone(&self.shared),
            pending: Vec::new(),
            rows: 0,
        }))
    }
}

struct CommittingWriter {
    shared: Shared,
    pending: Vec<Row>,
    rows: u64,
}

impl SinkWriter<Row> for CommittingWriter {
    fn write(&mut self, batch: &mut Vec<Record<Row>>) -> Result<(), ConnectorError> {
        self.rows += batch.len() as u64;
        self.pending.extend(batch.drain(..).map(|(_, row)| row));
        Ok(())
    }

    fn commit(&mut self) -> Result<(), ConnectorError> {
        lock(&self.shared).committed.append(&mut self.pending);
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        self.commit()?;
        Ok(SinkReport {
            rows: self.rows,
            files: Vec::new(),
        })
    }
}

/// 600 records of 4 keys over 12 s of event time, a few out of order, the watermark advancing
/// 250 ms at a time.
fn steps() -> Vec<Step> {
    let mut steps = Vec::new();
    let mut id = 0;
    for slice in 0..48u64 {
        let records = (0..12u64)
            .map(|i| {
                id += 1;
                let event_time = slice * 250 + (i * 37) % 250 + 150;
                (event_time, (id % 4, id))
            })
            .collect();
        steps.push(Step::Records(records));
        steps.push(Step::Watermark(slice * 250 + 100));
    }
    steps
}

/// How many records `steps` hold.
fn count(steps: &[Step]) -> usize {
    steps
        .iter()
        .map(|s| match s {
            Step::Records(r) => r.len(),
            Step::Watermark(_) => 0,
        })
        .sum()
}

/// The pipeline: `build` over the acknowledging source into the committing sink.
fn pipeline(shared: &Shared, covers: Covers, build: fn(Stream<Kv>) -> Stream<Row>) -> Pipeline {
    let pipeline = Pipeline::new("acknowledgements");
    let source = Acked {
        steps: steps(),
        shared: Arc::clone(shared),
        covers,
    };
    let input = pipeline.source("acked", source, WatermarkConfig::default());
    build(input).sink(
        "out",
        Committing {
            shared: Arc::clone(shared),
        },
    );
    pipeline
}

/// Runs the pipeline at `workers` workers, and checks that every record was released, only
/// once its result was committed, and that many were released before the input ended.
fn check(workers: usize, covers: Covers, build: fn(Stream<Kv>) -> Stream<Row>) {
    let shared = Shared::default();
    let records = count(&steps());
    let pipeline = pipeline(&shared, covers, build);
    Runtime::new(workers)
        .commit_every(Duration::from_millis(2))
        .run(&pipeline)
        .expect("the pipeline runs");
    let ledger = lock(&shared);
    let early = &ledger.violations;
    assert!(
        early.is_empty(),
        "{workers} worker(s): {} of {records} records released too early, first: {:?}",
        early.len(),
        &early[..early.len().min(3)]
    );
    assert_eq!(ledger.released.len(), records, "every record is released");
    let early = ledger.released.iter().filter(|(_, ended)| !ended).count();
    assert!(
        early >= records / 2,
        "{workers} worker(s): only {early} of {records} records were released before the input \
         ended: the commit cycle did not run mid-run"
    );
}

fn window_covers(rows: &[Row], (event_time, (key, _)): &Record<Kv>) -> bool {
    rows.iter()
        .any(|r| r.key == *key && r.start <= *event_time && *event_time < r.end)
}

fn windows(input: Stream<Kv>) -> Stream<Row> {
    input
        .key_by("by_key", |kv: &Kv| kv.0)
        .window("per_second", WindowSpec::tumbling(1_000), Count)
}

/// Every hopping window (2 s every 500 ms) a record belongs to is committed.
fn hopping_covers(rows: &[Row], (event_time, (key, _)): &Record<Kv>) -> bool {
    let last = event_time / 500 * 500;
    (0..4u64)
        .filter_map(|i| last.checked_sub(i * 500))
        .all(|start| rows.iter().any(|r| r.key == *key && r.start == start))
}

fn hopping(input: Stream<Kv>) -> Stream<Row> {
    input
        .key_by("by_key", |kv: &Kv| kv.0)
        .window("hopping", WindowSpec::hopping(2_000, 500), Count)
}

fn sessions(input: Stream<Kv>) -> Stream<Row> {
    input
        .key_by("by_key", |kv: &Kv| kv.0)
        .session_window("sessions", 60, Count)
}

/// The stream joined with itself in 1 s windows: every record pairs at least with itself, so
/// each window of a key with records has a result.
fn window_join(input: Stream<Kv>) -> Stream<Row> {
    let left = input.clone().key_by("left", |kv: &Kv| kv.0);
    let right = input.key_by("right", |kv: &Kv| kv.0);
    left.window_join("pairs", right, WindowSpec::tumbling(1_000))
        .map("as_rows", |j: WindowJoined<u64, Kv, Kv>| WindowResult {
            key: j.key,
            start: j.start,
            end: j.end,
            value: 1,
        })
}

#[test]
fn a_window_join_holds_its_records_until_its_pairs_are_committed() {
    for workers in [1, 2] {
        check(workers, window_covers, window_join);
    }
}

#[test]
fn a_window_holds_its_records_until_its_result_is_committed() {
    for workers in [1, 2] {
        check(workers, window_covers, windows);
    }
}

#[test]
fn a_hopping_window_holds_its_records_until_their_last_window_is_committed() {
    // A record is in four windows: it is released only once the last of them is committed.
    for workers in [1, 2] {
        check(workers, hopping_covers, hopping);
    }
}

#[test]
fn a_session_holds_its_records_until_it_is_committed() {
    for workers in [1, 2] {
        check(workers, window_covers, sessions);
    }
}

#[test]
fn a_graceful_stop_releases_nothing_of_the_windows_still_open() {
    for workers in [1, 2] {
        let shared = Shared::default();
        let records = count(&steps());
        let pipeline = pipeline(&shared, window_covers, windows);
        let run = Runtime::new(workers)
            .commit_every(Duration::from_millis(2))
            .start(&pipeline)
            .expect("the pipeline starts");
        std::thread::sleep(Duration::from_millis(300));
        run.stop();
        run.join().expect("the run stops gracefully");
        let ledger = lock(&shared);
        let early = &ledger.violations;
        assert!(
            early.is_empty(),
            "{workers} worker(s): {} records released with their window open, first: {:?}",
            early.len(),
            &early[..early.len().min(3)]
        );
        let released = ledger.released.len();
        assert!(
            released > 0 && released < records,
            "{workers} worker(s): {released} of {records} records released by a stop 300 ms in"
        );
    }
}
