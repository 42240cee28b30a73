//! A test kit for pipelines: a scripted source that says exactly which records arrive before
//! which watermark, and a sink that collects what the pipeline emits.
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

use std::sync::{Arc, Mutex, PoisonError};

use crate::error::ConnectorError;
use crate::sink::{Sink, SinkReport, SinkWriter};
use crate::source::{Partition, ReadStatus, RecordError, Source, SourceReader};
use crate::time::Record;

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

/// A sink that keeps every record it receives, from every worker of this process, for a test
/// to inspect. Clones share the same records.
#[derive(Clone, Debug)]
pub struct CollectSink<T> {
    rows: Arc<Mutex<Vec<Record<T>>>>,
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

    /// The records received so far, `(event time, value)`, in arrival order.
    pub fn rows(&self) -> Vec<Record<T>> {
        self.rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
        self.rows += batch.len() as u64;
        self.sink
            .rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .append(batch);
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        Ok(SinkReport {
            rows: self.rows,
            files: Vec::new(),
        })
    }
}
