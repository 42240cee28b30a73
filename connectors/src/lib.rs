//! # eddy-connectors
//!
//! Eddy's sources and sinks, implementing the engine's [`Source`](eddy_engine::Source) and
//! [`Sink`](eddy_engine::Sink) traits.
//!
//! ## Modules
//!
//! - [`nexmark`]: the Nexmark benchmark's event generator as a deterministic, partitioned
//!   source ([`NexmarkSource`]), in-memory generation, and flat rows for export.
//! - [`nexmark_csv`]: [`NexmarkCsvSource`], the same events read back from CSV files (the
//!   side-by-side benchmark's input).
//! - [`replay`]: [`ReplaySource`] and [`PreparedSource`], which replay records held in memory (moving, never
//!   cloning them), for tests and benchmarks.
//! - [`jsonl`]: [`JsonLinesSource`], one JSON object per line.
//! - [`files`]: [`CsvSource`], and [`LinesSink`] ([`JsonLinesSink`]) writing JSON lines or CSV
//!   per worker, to one file or to standard output.
//! - [`parquet_dynamic`]: [`DynamicParquetSink`], Parquet of JSON records with a schema
//!   inferred from the first rows.
//! - [`endpoints`]: sources and sinks of JSON records opened from URIs (`eddy copy`).
//! - [`parquet`]: [`ParquetSink`], one Parquet file per worker with a schema derived from the row
//!   type, and [`write_parquet`] for a single file.
//! - [`parquet_partitioned`]: [`PartitionedParquetSink`], Parquet partitioned by event-time day
//!   or hour (`dt=YYYY-MM-DD/hm=HH`), with a `_SUCCESS` file once the watermark passes a
//!   partition's end.
//! - [`side_input`]: bounded tables read from a CSV or JSON-lines file, for lookup joins.
//! - [`table`]: [`TableSink`], a pretty table of (a sample of) the results on stdout.
//! - [`count`]: [`CountSink`], which counts rows and discards them, for benchmarks.
//! - [`mod@format`]: JSON, CSV and raw bytes, decoded into the pipeline's types through serde.
//! - [`event_time`]: where a source takes each record's event time from ([`EventTimeOf`]).
//! - [`bridge`]: the tokio runtime broker and HTTP clients run on, and the bounded channel
//!   between a client task and the workers' readers (backpressure, acknowledgements).
//! - [`uri`]: endpoint URIs for `eddy copy` ([`Endpoint`]).
//! - `webhook` and `http_sink` (feature `http`): an HTTP webhook source (`WebhookSource`:
//!   signed or token-checked POSTs of JSON or NDJSON, fsynced in a write-ahead log before the
//!   2xx, 429 when the pipeline is behind) and a sink that POSTs records to a URL with retries
//!   (`HttpSink`).
//! - `kafka` (feature `kafka`): Kafka through librdkafka, a source whose workers share the
//!   topic's partitions and commit processed offsets to a consumer group, and a keyed sink
//!   whose delivery reports are checked (`KafkaSource`, `KafkaSink`).
//! - `amqp` (feature `amqp`): RabbitMQ (AMQP 0.9.1), a queue consumer acknowledged after
//!   hand-off with bounded prefetch, and a publisher with confirms (`AmqpSource`, `AmqpSink`).
//! - `nats` (feature `nats`): NATS core subjects and JetStream streams, source and sink
//!   (`NatsSource`, `NatsSink`).
//! - `mqtt` (feature `mqtt`): MQTT 3.1.1 topic filters at QoS 1 with a persistent session and
//!   manual acknowledgements, and a QoS 1 publisher (`MqttSource`, `MqttSink`).
//!
//! File sinks write under a temporary name (`.{name}.tmp`) and rename the file into place when
//! the writer finishes, so a reader never sees half a file; a writer dropped unfinished removes
//! its temporary file.

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod bridge;
pub mod count;
mod csv_records;
pub mod endpoints;
pub mod event_time;
pub mod files;
pub mod format;
#[cfg(test)]
mod fuzz;
#[cfg(feature = "http")]
pub mod http_sink;
pub mod jsonl;
#[cfg(feature = "kafka")]
pub mod kafka;
mod lines;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
pub mod nexmark;
pub mod nexmark_csv;
pub mod parquet;
pub mod parquet_dynamic;
pub mod parquet_partitioned;
pub mod replay;
pub mod side_input;
pub mod table;
#[cfg(any(feature = "http", feature = "amqp"))]
mod tls;
pub mod uri;
#[cfg(feature = "http")]
pub mod webhook;
#[cfg(feature = "http")]
mod webhook_wal;

mod staged;

pub use crate::bridge::BrokerSource;
pub use crate::count::CountSink;
pub use crate::event_time::EventTimeOf;
pub use crate::files::{CsvSource, JsonLinesSink, LinesSink};
pub use crate::format::{CsvOptions, Format};
pub use crate::jsonl::JsonLinesSource;
pub use crate::lines::DEFAULT_MAX_RECORD_SIZE;
pub use crate::nexmark::{NexmarkConfig, NexmarkSource};
pub use crate::nexmark_csv::{NexmarkCsvSource, NexmarkTable};
pub use crate::parquet::{write_parquet, ParquetSink};
pub use crate::parquet_dynamic::DynamicParquetSink;
pub use crate::parquet_partitioned::{PartitionedParquetSink, TimePartitioning};
pub use crate::replay::{PreparedSource, ReplaySource};
pub use crate::side_input::SideInputFile;
pub use crate::table::TableSink;
pub use crate::uri::Endpoint;

/// `tracing` filter directives that keep the broker clients' own logs free of credentials:
/// lapin logs the AMQP login frame, password included (as bytes), at `trace` in
/// `lapin::io_loop`. A binary that lets `RUST_LOG` turn on `trace` should add these after it
/// (`EnvFilter::add_directive`), as `eddy` does; each caps one client module at `debug`.
pub const LOG_DIRECTIVES_HIDING_SECRETS: &[&str] = &["lapin::io_loop=debug"];
