//! Helpers shared by the integration tests: reading Parquet back, a collecting sink,
//! comparing rows order-independently, and running a query over generated events.

#![allow(dead_code)]

use std::fmt::Debug;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};

use eddy_connectors::nexmark::{generate_all, Event, NexmarkConfig, NexmarkSource};
use eddy_engine::testing::CollectSink;
use eddy_engine::{
    ConnectorError, Partition, Pipeline, Record, Runtime, Sink, SinkReport, SinkWriter, Stream,
    WatermarkConfig,
};
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

/// The generator's configuration for those tests: 60 000 events at 1 000 per second of event
/// time.
pub fn config() -> NexmarkConfig {
    NexmarkConfig {
        events: EVENTS,
        events_per_second: 1_000,
        ..Default::default()
    }
}

/// The same events as a `Vec`, for the batch references.
pub fn events() -> Vec<Event> {
    generate_all(&config())
        .into_iter()
        .map(|(_, e)| e)
        .collect()
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
