//! The sink trait connectors implement.
//!
//! A [`Sink`] is shared by all workers; each worker opens one [`SinkWriter`] and the engine
//! hands it every batch that reaches the sink, then calls [`SinkWriter::finish`] once the sink's
//! input frontier is empty (every upstream stage is done). In between, it tells the writer of
//! each advance of the watermark ([`SinkWriter::on_watermark`]).

use std::path::{Path, PathBuf};

use crate::error::ConnectorError;
use crate::source::{Partition, RecordError};
use crate::time::Record;

/// What a sink writer did, reported in the run summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkReport {
    /// Rows written.
    pub rows: u64,
    /// Files finished and renamed into place.
    pub files: Vec<PathBuf>,
}

/// A sink of records of type `T`, shared by every worker of a run.
pub trait Sink<T>: Send + Sync + 'static {
    /// A one-line description for graphs and summaries (e.g. `parquet(out/q5)`).
    fn describe(&self) -> String;

    /// Opens this worker's writer. Called once per worker.
    fn open(&self, partition: Partition) -> Result<Box<dyn SinkWriter<T>>, ConnectorError>;

    /// For sinks that write files: where and how, so that exactly-once runs can write one file
    /// per worker and checkpoint interval and publish it when its checkpoint completes. `None`
    /// (the default): the sink writes as it goes, at least once under checkpoints.
    fn files(&self) -> Option<FileOutput> {
        None
    }

    /// Opens a writer of exactly one file, `dir/name` (written under a temporary name and
    /// renamed to it by [`SinkWriter::finish`]). Only called when [`Sink::files`] is `Some`.
    fn open_file(
        &self,
        partition: Partition,
        dir: &Path,
        name: &str,
    ) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        let _ = (partition, dir, name);
        Err(ConnectorError::user(format!(
            "{} does not write files one by one",
            self.describe()
        )))
    }
}

/// Where a file sink writes: result files are `{dir}/{prefix}-*.{extension}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileOutput {
    /// The output directory.
    pub dir: PathBuf,
    /// The result files' name prefix.
    pub prefix: String,
    /// Their extension, without the dot.
    pub extension: String,
}

/// One worker's writer of a sink.
pub trait SinkWriter<T> {
    /// Writes a batch of records; the writer may drain `batch`.
    fn write(&mut self, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError>;

    /// Writes a batch stamped `stamp` (the watermark it was emitted at: every record of it is
    /// in the output once the sink's watermark passes `stamp`). The default calls
    /// [`write`](Self::write); a writer that cares when records were emitted (the test kit's
    /// collecting sink) overrides it.
    fn write_at(&mut self, stamp: u64, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        let _ = stamp;
        self.write(batch)
    }

    /// Called when the sink's watermark (the least time of its input frontier) advances to
    /// `watermark`, after the batches stamped before it: no record of a batch at an earlier
    /// time will come. Writers that close time partitions use it; the default does nothing.
    fn on_watermark(&mut self, watermark: u64) -> Result<(), ConnectorError> {
        let _ = watermark;
        Ok(())
    }

    /// Makes every record written so far durable at the destination: wait until the broker
    /// confirmed every publish still in flight, the receiver answered every request, the
    /// bytes are on disk. The engine calls it before it lets the sources acknowledge the
    /// records that produced this output (see [`crate::durability`]), so a writer that
    /// returns `Ok` must not lose them afterwards. The default does nothing: for writers whose
    /// [`write`](Self::write) returns only once its records are durable. File sinks need not
    /// implement it: the engine rolls them ([`Sink::files`]), closing the open file and
    /// renaming it into place.
    fn commit(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Called once, after the last batch: flush, close and make the output visible.
    fn finish(&mut self) -> Result<SinkReport, ConnectorError>;

    /// Records the writer gave up delivering since it was last asked (a receiver that refused
    /// them, retries exhausted), each with where it was sent and why. The engine asks after
    /// every call above, counts them on the sink's stage and writes them to the dead-letter
    /// sink; writers that never give up a record keep the default, which has none.
    fn undeliverable(&mut self) -> Vec<RecordError> {
        Vec::new()
    }
}

impl<T: 'static> Sink<T> for Box<dyn Sink<T>> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        (**self).open(partition)
    }

    fn files(&self) -> Option<FileOutput> {
        (**self).files()
    }

    fn open_file(
        &self,
        partition: Partition,
        dir: &Path,
        name: &str,
    ) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        (**self).open_file(partition, dir, name)
    }
}
