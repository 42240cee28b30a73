//! The source trait connectors implement.
//!
//! A [`Source`] is shared by all workers; each worker opens one [`SourceReader`] for its
//! [`Partition`]. A reader produces records with their event times; the engine polls it, stamps the records with the source's watermark and
//! downgrades its capability (see the crate docs). A bounded reader returns
//! [`ReadStatus::Done`] when it is finished, which releases its capability so every window
//! flushes and the run ends.

use crate::error::ConnectorError;
use crate::time::Record;

/// Which share of a source a worker reads: worker `index` of `count`, across all processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    /// This worker's global index, from 0 to `count - 1`.
    pub index: usize,
    /// The number of workers in the whole run.
    pub count: usize,
}

/// What a poll of a reader found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// Records were appended (possibly zero); poll again soon.
    Ready,
    /// Nothing available right now; the engine may advance the watermark by wall clock.
    Idle,
    /// The reader is finished: it will never produce another record.
    Done,
}

/// A record that could not be read (or, from a sink, delivered), with where it was and why.
/// The run goes on without it; with a dead-letter sink configured it is written there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    /// Where the record was: a file and line, a partition and offset, a queue and delivery tag.
    pub location: String,
    /// Why it was rejected.
    pub message: String,
    /// The record's bytes as read (empty when unknown).
    pub raw: Vec<u8>,
}

impl RecordError {
    /// A record at `location` rejected because of `message`.
    pub fn new(location: impl Into<String>, message: impl Into<String>) -> Self {
        RecordError {
            location: location.into(),
            message: message.into(),
            raw: Vec::new(),
        }
    }

    /// The same error, carrying the record's bytes.
    pub fn with_raw(mut self, raw: impl Into<Vec<u8>>) -> Self {
        self.raw = raw.into();
        self
    }
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// A source of records of type `T`, shared by every worker of a run.
pub trait Source<T>: Send + Sync + 'static {
    /// A one-line description for graphs and summaries (e.g. `nexmark(events=1000000)`).
    fn describe(&self) -> String;

    /// Opens this worker's share of the source. Called once per worker.
    fn open(&self, partition: Partition) -> Result<Box<dyn SourceReader<T>>, ConnectorError>;

    /// How many records all partitions together will produce, when known (for progress bars).
    fn expected_records(&self) -> Option<u64> {
        None
    }

    /// Whether the source acknowledges what it reads (a broker message, a webhook's answer, a
    /// committed offset). A run reading such a source without checkpoints commits its sinks
    /// periodically and tells the readers which records are durable
    /// ([`SourceReader::released`]; see [`crate::durability`]). The default, `false`: a
    /// generator, a file.
    fn acknowledges(&self) -> bool {
        false
    }

    /// Reopens this worker's share at positions saved by [`SourceReader::position`] (exactly-
    /// once runs resuming from a checkpoint): see [`SourcePositions`] for which. Sources that
    /// cannot resume keep the default, an error.
    fn open_at(
        &self,
        partition: Partition,
        positions: &SourcePositions,
    ) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        let _ = (partition, positions);
        Err(ConnectorError::user(format!(
            "{} cannot resume from a checkpoint; run it without --checkpoint-dir",
            self.describe()
        )))
    }
}

/// Where the readers of a source were at the checkpoint a run resumes from, as
/// [`Source::open_at`] receives them. With the worker count unchanged, a worker gets only its
/// own old reader's position; otherwise it gets every old reader's, and the source decides
/// which share is whose at the new count (a generator's splits by old worker, a broker's
/// partitions by partition number).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourcePositions {
    /// The worker count of the run that wrote them.
    pub workers: usize,
    /// `(old worker, position)`; a reader that had finished gives where it ended.
    pub positions: Vec<(usize, Vec<u8>)>,
}

impl SourcePositions {
    /// The positions of the old readers worker `partition` takes over when a source's share is
    /// by old reader: its own at an unchanged count, else those of the old workers `i` with
    /// `i % count == index`.
    pub fn by_old_worker(&self, partition: Partition) -> impl Iterator<Item = &[u8]> {
        self.positions
            .iter()
            .filter(move |(i, _)| i % partition.count.max(1) == partition.index)
            .map(|(_, p)| p.as_slice())
    }

    /// Every position handed over.
    pub fn all(&self) -> impl Iterator<Item = &[u8]> {
        self.positions.iter().map(|(_, p)| p.as_slice())
    }
}

/// Reads a source reader's backlog from any thread ([`SourceReader::backlog_probe`]).
pub type BacklogProbe = std::sync::Arc<dyn Fn() -> u64 + Send + Sync>;

/// Reads a source reader's own counters from any thread ([`SourceReader::counters`]).
pub type CounterProbe = std::sync::Arc<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

/// What a release ([`SourceReader::released`]) means in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseMode {
    /// The engine has taken the records; nothing acknowledges (no source of the pipeline
    /// acknowledges, and there are no checkpoints).
    Taken,
    /// Every sink has committed what the records produced (the commit cycle,
    /// [`crate::durability`]).
    Committed,
    /// The engine has taken the records; the run takes checkpoints, and what is durable is
    /// what a completed checkpoint holds ([`SourceReader::committed`]).
    Checkpointed,
}

/// One worker's reader of a source.
pub trait SourceReader<T> {
    /// Appends at most `max` records, each with its event time, to `out`. Records that cannot be read are appended to
    /// `rejected` instead (they are counted and reported; the run goes on). An `Err` is a failure
    /// of the whole reader (an unreadable file, a lost connection).
    fn poll(
        &mut self,
        out: &mut Vec<Record<T>>,
        max: usize,
        rejected: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError>;

    /// The watermark this reader declares, when it knows one (a scripted test source, a broker
    /// that carries watermarks). When `Some`, it replaces the watermark the engine derives from
    /// event times; it must never decrease.
    fn watermark(&self) -> Option<u64> {
        None
    }

    /// Whether the reader has read all its source holds for it now. A reader that returns
    /// [`ReadStatus::Idle`] while behind (a consumer still connecting, a slow broker) is not
    /// idle: the engine does not move its watermark by the wall clock, which would make late
    /// the records still waiting. The default, `true`: the reader cannot tell.
    fn caught_up(&self) -> bool {
        true
    }

    /// How to read the records waiting at the source for this reader, when the source tells:
    /// a Kafka consumer's lag, a queue's depth, records buffered between a broker client and
    /// the worker. The engine keeps the probe and calls it from the metrics endpoint, the
    /// explainer and the live view — on their threads, also while this reader's worker is
    /// busy or blocked (which is when a growing backlog matters) — so it must be cheap (read a
    /// value another task keeps up to date).
    fn backlog_probe(&self) -> Option<BacklogProbe> {
        None
    }

    /// How to read the events this reader's connector counts of its own (a webhook's
    /// connections closed or refused at its cap, say): each `(name, total so far)`, served as
    /// `eddy_source_events_total{event="name"}`. Called like [`backlog_probe`]'s probe, from
    /// other threads, so it must be cheap. One reader of a source that shares one server
    /// between its workers reports them, not each.
    ///
    /// [`backlog_probe`]: Self::backlog_probe
    fn counters(&self) -> Option<CounterProbe> {
        None
    }

    /// Where this reader is: enough for [`Source::open_at`] to go on right after the last
    /// record it returned (a generator's count, a file's byte offset, offsets per partition).
    /// Called when the engine writes a checkpoint part, between polls. `None` (the default):
    /// the reader cannot be checkpointed, and a run with checkpoints refuses to start.
    fn position(&self) -> Option<Vec<u8>> {
        None
    }

    /// How the engine will call [`released`](Self::released) in this run: told once, before
    /// the first poll. A reader that keeps its own record of what is durable (a write-ahead
    /// log) needs to know whether a release means "committed by the sinks" or only "taken".
    /// The default ignores it.
    fn release_mode(&mut self, mode: ReleaseMode) {
        let _ = mode;
    }

    /// The records returned by the first `polls` calls of [`poll`](Self::poll) (counted from
    /// 1, over the reader's life) are durable downstream: in every sink's committed output, or
    /// dead-lettered. A reader of a source that [acknowledges](Source::acknowledges) now
    /// acknowledges them, and only them: a record not released when the run ends (a failure,
    /// an abort) is left to the broker to deliver again. Without checkpoints the engine
    /// releases polls once the sinks have committed past them; with checkpoints, right after
    /// it has taken them. The default does nothing.
    fn released(&mut self, polls: u64) {
        let _ = polls;
    }

    /// The run is stopping ([`RunHandle::stop`](crate::RunHandle::stop)): take nothing new
    /// from outside. Returns whether the reader still holds records it has already
    /// acknowledged (a webhook that answered 2xx for records in its buffer): the engine then
    /// polls it until it reports [`ReadStatus::Done`] and stops it there, holding its
    /// watermark. The default, `false`: it is stopped at once, and what it has not returned is
    /// left to its source to deliver again.
    fn stop(&mut self) -> bool {
        false
    }

    /// A checkpoint holding this reader at `position` (bytes it returned from
    /// [`position`](Self::position)) has completed: whatever is before it will never be read
    /// again, so a reader may forget it (truncate a write-ahead log, commit offsets). The
    /// default does nothing.
    fn committed(&mut self, position: &[u8]) {
        let _ = position;
    }
}

impl<T: 'static> Source<T> for Box<dyn Source<T>> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        (**self).open(partition)
    }

    fn expected_records(&self) -> Option<u64> {
        (**self).expected_records()
    }

    fn acknowledges(&self) -> bool {
        (**self).acknowledges()
    }

    fn open_at(
        &self,
        partition: Partition,
        positions: &SourcePositions,
    ) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        (**self).open_at(partition, positions)
    }
}
