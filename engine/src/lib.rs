//! # eddy-engine
//!
//! The engine under every Eddy pipeline: a [`Pipeline`] is a description — a graph of named
//! stages — that each timely worker instantiates; a [`Runtime`] runs it on W worker threads in
//! one process or across P processes with timely's cluster mode.
//!
//! ## The time model
//!
//! Every record carries its exact event time (milliseconds since the Unix epoch) beside its data,
//! as a [`Record`]: `(event_time, data)`. A record's *timely timestamp* is not its event time: it
//! is the watermark of the source at the moment the record was emitted. A source holds one
//! capability at its watermark — the largest event time it has seen minus the allowed disorder,
//! following the wall clock once idle for an idle timeout ([`WatermarkTracker`]) — and downgrades it as
//! the watermark rises. So the input frontier of every operator *is* the pipeline's watermark,
//! computed by timely's progress tracking across all sources, workers and processes.
//!
//! A window `[s, e)` takes a record stamped `t` exactly when `t < e`; it is complete, and
//! emitted, once the operator's input frontier reaches `e`. A record whose event time is below
//! the watermark when read is still stamped with the current watermark, so a window that is still
//! open takes it; a record none of whose windows is open is *late* and follows the pipeline's
//! [`LatePolicy`]: dropped and counted, or written to a side-output sink.
//!
//! ## Modules
//!
//! - [`pipeline`]: [`Pipeline`], [`Stream`], stage descriptions and the hook operators build on.
//! - [`time`]: event time, records, watermarks.
//! - [`source`] and [`sink`]: the traits connectors implement.
//! - [`runtime`]: [`Runtime`], [`RunHandle`], [`RunSummary`].
//! - [`checkpoint`]: exactly-once checkpoints, their store and recovery.
//! - [`durability`]: acknowledgement after the sinks commit, and graceful stops.
//! - [`metrics`]: per-stage counters, per-worker watermark gauges, the latency histogram.
//! - [`observe`]: the Prometheus metrics endpoint and the watermark explainer.
//! - [`error`]: the engine's error types.

pub mod change;
pub mod checkpoint;
pub mod dead_letter;
pub mod durability;
pub mod error;
pub mod metrics;
pub mod observe;
pub mod pipeline;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod testing;
pub mod time;

mod late;
mod operators;

pub use change::Change;
pub use checkpoint::{
    CheckpointError, CheckpointReport, CheckpointStore, Checkpointer, LocalDir, StageCheckpoint,
};
pub use dead_letter::{DeadLetter, DeadLetterKind};
pub use durability::Hold;
pub use error::{ConnectorError, EngineError, Fault};
pub use late::{LatePolicy, LateRecord};
pub use metrics::{StageMetrics, StageSnapshot, StateGauge, WorkerGauge, WorkerReading};
pub use observe::Observer;
pub use pipeline::{Data, Pipeline, Records, StageContext, StageInfo, Stream};
pub use runtime::{Cluster, RunHandle, RunSummary, Runtime};
pub use sink::{FileOutput, Sink, SinkReport, SinkWriter};
pub use source::{
    BacklogProbe, CounterProbe, Partition, ReadStatus, RecordError, ReleaseMode, Source,
    SourcePositions, SourceReader,
};
pub use time::{wall_clock_ms, EventTime, Record, WatermarkConfig, WatermarkTracker};

/// Re-export of timely, so operator crates build on the same version as the engine.
pub use timely;
