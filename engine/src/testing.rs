//! A test kit for pipelines: a scripted source that says exactly which records arrive before
//! which watermark, a sink that collects what the pipeline emits and when, a check that
//! streaming and batch runs agree, and an assertion that prints a readable diff. The guide is
//! docs/testing.md.
//!
//! - [`Script`]: "these records, then watermark T, then these". With several workers the
//!   records are dealt round-robin and every worker passes every watermark.
//! - [`CollectSink`]: keeps every record with the watermark it was emitted at, so a test
//!   asserts what the pipeline had emitted once the watermark reached `T`
//!   ([`CollectSink::by_watermark`]) and what it emits in all ([`CollectSink::sorted`]).
//! - [`assert_same_records`]: compares two multisets of records and panics with what is
//!   missing and what is unexpected.
//! - [`assert_streaming_matches_batch`]: runs one pipeline over a script as scripted and over
//!   all its records at once, on 1 and 2 workers, and asserts the results agree.
//!
//! ```
//! use eddy_engine::testing::{CollectSink, Script};
//! use eddy_engine::{Pipeline, Runtime, WatermarkConfig};
//!
//! let pipeline = Pipeline::new("doubling");
//! let script = Script::new().records([(10, 1u64), (20, 2)]).watermark(100).records([(5, 3)]);
//! let out = CollectSink::new();
//! pipeline
//!     .source("numbers", script, WatermarkConfig::default())
//!     .stage("double", "map", String::new(), |input, _| {
//!         use eddy_engine::timely::dataflow::operators::vec::Map;
//!         input.map(|(t, x)| (t, x * 2))
//!     })
//!     .sink("out", out.clone());
//! Runtime::new(2).run(&pipeline).unwrap();
//! assert_eq!(out.sorted(), vec![(5, 6), (10, 2), (20, 4)]);
//! ```

use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::ConnectorError;
use crate::pipeline::{Data, Pipeline, Stream};
use crate::runtime::Runtime;
use crate::sink::{Sink, SinkReport, SinkWriter};
use crate::source::{Partition, ReadStatus, RecordError, Source, SourceReader};
use crate::time::{Record, WatermarkConfig};

/// One step of a script.
#[derive(Clone, Debug)]
enum Step<T> {
    Record(Record<T>),
    Watermark(u64),
}

/// A scripted source: records and watermarks in the order a test gives them. With several
/// workers, records are dealt round-robin over the workers and every worker passes every
/// watermark, so the pipeline sees the same watermark sequence whatever the worker count.
/// After the last step the source ends (its watermark becomes infinite).
#[derive(Clone, Debug)]
pub struct Script<T> {
    steps: Vec<Step<T>>,
}

impl<T> Default for Script<T> {
    fn default() -> Self {
        Script { steps: Vec::new() }
    }
}

impl<T> Script<T> {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `(event time, value)` that arrive next.
    pub fn records(mut self, records: impl IntoIterator<Item = Record<T>>) -> Self {
        self.steps.extend(records.into_iter().map(Step::Record));
        self
    }

    /// The watermark advances to `t`: later records with event times before `t` are late.
    /// A watermark below an earlier one is ignored (watermarks never go back).
    pub fn watermark(mut self, t: u64) -> Self {
        self.steps.push(Step::Watermark(t));
        self
    }

    /// The same records with no watermark until the end: the whole input at once, as a batch
    /// job sees it (nothing is late).
    pub fn all_at_once(&self) -> Self
    where
        T: Clone,
    {
        Script {
            steps: self
                .steps
                .iter()
                .filter(|s| matches!(s, Step::Record(_)))
                .cloned()
                .collect(),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Source<T> for Script<T> {
    fn describe(&self) -> String {
        format!("script of {} steps", self.steps.len())
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        let mut record_index = 0;
        let steps = self
            .steps
            .iter()
            .filter(|step| match step {
                Step::Record(_) => {
                    record_index += 1;
                    (record_index - 1) % partition.count == partition.index
                }
                Step::Watermark(_) => true,
            })
            .cloned()
            .collect::<Vec<_>>();
        Ok(Box::new(ScriptReader {
            steps: steps.into_iter(),
            watermark: 0,
        }))
    }

    fn expected_records(&self) -> Option<u64> {
        Some(
            self.steps
                .iter()
                .filter(|s| matches!(s, Step::Record(_)))
                .count() as u64,
        )
    }
}

struct ScriptReader<T> {
    steps: std::vec::IntoIter<Step<T>>,
    watermark: u64,
}

impl<T> SourceReader<T> for ScriptReader<T> {
    fn poll(
        &mut self,
        out: &mut Vec<Record<T>>,
        max: usize,
        _rejected: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError> {
        while out.len() < max {
            match self.steps.next() {
                Some(Step::Record(record)) => out.push(record),
                Some(Step::Watermark(t)) => {
                    self.watermark = self.watermark.max(t);
                    return Ok(ReadStatus::Ready);
                }
                None => return Ok(ReadStatus::Done),
            }
        }
        Ok(ReadStatus::Ready)
    }

    fn watermark(&self) -> Option<u64> {
        Some(self.watermark)
    }
}

/// A record with the watermark it was emitted at.
type Stamped<T> = (u64, Record<T>);

/// A sink that keeps every record it receives, from every worker of this process, with the
/// watermark it was emitted at, for a test to inspect. Clones share the same records.
#[derive(Clone, Debug)]
pub struct CollectSink<T> {
    rows: Arc<Mutex<Vec<Stamped<T>>>>,
}

impl<T> Default for CollectSink<T> {
    fn default() -> Self {
        CollectSink {
            rows: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl<T: Clone> CollectSink<T> {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    fn stamped(&self) -> Vec<Stamped<T>> {
        self.rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The records received so far, `(event time, value)`, in arrival order.
    pub fn rows(&self) -> Vec<Record<T>> {
        self.stamped().into_iter().map(|(_, r)| r).collect()
    }

    /// The records received so far, sorted (arrival order differs between runs and workers).
    pub fn sorted(&self) -> Vec<Record<T>>
    where
        T: Ord,
    {
        let mut rows = self.rows();
        rows.sort();
        rows
    }

    /// The values received so far, without event times, sorted.
    pub fn values(&self) -> Vec<T>
    where
        T: Ord,
    {
        let mut values: Vec<T> = self.rows().into_iter().map(|(_, v)| v).collect();
        values.sort();
        values
    }

    /// What the pipeline had emitted once the watermark reached `watermark`: the records
    /// stamped below it, sorted. A window `[s, e)` is in `by_watermark(e)`; a record a
    /// stateless stage passed on after the script's `watermark(t)` is not in `by_watermark(t)`.
    /// The same at any number of workers.
    pub fn by_watermark(&self, watermark: u64) -> Vec<Record<T>>
    where
        T: Ord,
    {
        let mut rows: Vec<Record<T>> = self
            .stamped()
            .into_iter()
            .filter(|(stamp, _)| *stamp < watermark)
            .map(|(_, r)| r)
            .collect();
        rows.sort();
        rows
    }
}

impl<T: Clone + Send + 'static> Sink<T> for CollectSink<T> {
    fn describe(&self) -> String {
        "collect (test)".into()
    }

    fn open(&self, _partition: Partition) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        Ok(Box::new(CollectWriter {
            sink: self.clone(),
            rows: 0,
        }))
    }
}

struct CollectWriter<T> {
    sink: CollectSink<T>,
    rows: u64,
}

impl<T: Clone + Send + 'static> SinkWriter<T> for CollectWriter<T> {
    fn write(&mut self, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        self.write_at(0, batch)
    }

    fn write_at(&mut self, stamp: u64, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        self.rows += batch.len() as u64;
        self.sink
            .rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(batch.drain(..).map(|r| (stamp, r)));
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        Ok(SinkReport {
            rows: self.rows,
            files: Vec::new(),
        })
    }
}

/// Asserts that `actual` and `expected` hold the same records, counted with multiplicity, in
/// any order. On a difference it panics with `what`, the records missing from `actual` and
/// those not expected, one per line, sorted.
pub fn assert_same_records<T: Ord + Clone + Debug>(what: &str, actual: &[T], expected: &[T]) {
    let (mut actual, mut expected) = (actual.to_vec(), expected.to_vec());
    actual.sort();
    expected.sort();
    if actual == expected {
        return;
    }
    let (mut missing, mut unexpected) = (Vec::new(), Vec::new());
    let (mut a, mut e) = (actual.iter().peekable(), expected.iter().peekable());
    loop {
        match (a.peek(), e.peek()) {
            (Some(x), Some(y)) if x == y => {
                a.next();
                e.next();
            }
            (Some(x), Some(y)) if x < y => unexpected.push(a.next().expect("peeked")),
            (Some(_), Some(_)) | (None, Some(_)) => missing.push(e.next().expect("peeked")),
            (Some(_), None) => unexpected.push(a.next().expect("peeked")),
            (None, None) => break,
        }
    }
    let list = |records: &[&T]| {
        if records.is_empty() {
            "    (none)\n".to_string()
        } else {
            records.iter().map(|r| format!("    {r:?}\n")).collect()
        }
    };
    panic!(
        "{what}: {} records, {} expected\n  missing (expected, not emitted):\n{}  unexpected \
         (emitted, not expected):\n{}",
        actual.len(),
        expected.len(),
        list(&missing),
        list(&unexpected)
    );
}

/// Runs the pipeline `build` makes over `script` as scripted (records interleaved with
/// watermarks: streaming) and over all its records at once ([`Script::all_at_once`]: batch),
/// each on 1 and 2 workers, and asserts that the four outputs are the same records
/// ([`assert_same_records`]). Returns them, sorted. Use it on scripts without late records:
/// a late record is dropped when streaming but not in a batch.
pub fn assert_streaming_matches_batch<I, O, F>(script: &Script<I>, build: F) -> Vec<Record<O>>
where
    I: Data + Clone + Sync,
    O: Data + Clone + Ord + Debug,
    F: Fn(Stream<I>) -> Stream<O>,
{
    let run = |script: Script<I>, workers: usize| {
        let pipeline = Pipeline::new("streaming-vs-batch");
        let out = CollectSink::new();
        build(pipeline.source("script", script, WatermarkConfig::default()))
            .sink("out", out.clone());
        if let Err(error) = Runtime::new(workers).run(&pipeline) {
            panic!("the pipeline failed on {workers} worker(s): {error}");
        }
        out.sorted()
    };
    let streaming = run(script.clone(), 1);
    for (mode, input, workers) in [
        ("streaming", script.clone(), 2),
        ("batch", script.all_at_once(), 1),
        ("batch", script.all_at_once(), 2),
    ] {
        let what = format!("{mode} on {workers} worker(s) vs streaming on 1 worker");
        assert_same_records(&what, &run(input, workers), &streaming);
    }
    streaming
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let payload = std::panic::catch_unwind(f).expect_err("it should have panicked");
        match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => payload
                .downcast::<&str>()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        }
    }

    #[test]
    fn a_wrong_expectation_fails_with_a_readable_diff() {
        let message = panic_message(|| {
            assert_same_records(
                "by watermark 100",
                &[(99, (1, 0, 6)), (99, (2, 0, 7))],
                &[(99, (1, 0, 7)), (99, (2, 0, 7))],
            )
        });
        assert_eq!(
            message,
            "by watermark 100: 2 records, 2 expected\n  missing (expected, not emitted):\n    \
             (99, (1, 0, 7))\n  unexpected (emitted, not expected):\n    (99, (1, 0, 6))\n"
        );
    }

    #[test]
    fn multiplicity_counts() {
        let message = panic_message(|| assert_same_records("twice", &[1, 1, 2], &[1, 2]));
        assert!(
            message.contains("unexpected (emitted, not expected):\n    1\n"),
            "{message}"
        );
        assert!(
            message.contains("missing (expected, not emitted):\n    (none)\n"),
            "{message}"
        );
        assert_same_records("same", &[2, 1, 1], &[1, 1, 2]);
    }

    #[test]
    fn by_watermark_holds_what_was_stamped_below_it_at_any_worker_count() {
        for workers in [1, 2] {
            let pipeline = Pipeline::new("stamps");
            let out = CollectSink::new();
            let script = Script::new()
                .records([(10, 1u64), (20, 2)])
                .watermark(100)
                .records([(50, 3)]);
            pipeline
                .source("numbers", script, WatermarkConfig::default())
                .sink("out", out.clone());
            Runtime::new(workers).run(&pipeline).unwrap();
            assert_eq!(
                out.by_watermark(100),
                vec![(10, 1), (20, 2)],
                "{workers} workers"
            );
            assert_eq!(out.by_watermark(101), vec![(10, 1), (20, 2), (50, 3)]);
            assert_eq!(out.sorted().len(), 3);
        }
    }

    #[test]
    fn streaming_and_batch_disagree_when_a_record_is_late() {
        use timely::dataflow::channels::pact::Pipeline as Local;
        use timely::dataflow::operators::generic::Operator;
        // A stage that drops records stamped after their event time: late ones, when streaming.
        let script = Script::new()
            .records([(10, 1u64)])
            .watermark(100)
            .records([(50, 2)]);
        let message = panic_message(|| {
            assert_streaming_matches_batch(&script, |s| {
                s.stage("on_time", "filter", String::new(), |input, _| {
                    input.unary(Local, "on_time", |_, _| {
                        |input, output| {
                            input.for_each(|cap, data| {
                                let stamp = cap.least().copied().unwrap_or(0);
                                data.retain(|(t, _)| *t >= stamp);
                                output.session(&cap).give_container(data);
                            })
                        }
                    })
                })
            });
        });
        assert!(
            message.starts_with(
                "batch on 1 worker(s) vs streaming on 1 worker: 2 records, 1 expected"
            ),
            "{message}"
        );
        assert!(
            message.contains("unexpected (emitted, not expected):\n    (50, 2)\n"),
            "{message}"
        );
    }
}
