//! Where a query's results go: one choice for every query, whatever its row type.

use std::path::PathBuf;

use eddy_connectors::{CountSink, JsonLinesSink, ParquetSink, TableSink, TimePartitioning};
use eddy_engine::{Change, Data, Stream};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A sink for query results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Parquet files `DIR/part-NNNNN.parquet`, one per worker.
    Parquet {
        /// The output directory (created if missing).
        dir: PathBuf,
        /// Rows per row group.
        row_group_size: usize,
    },
    /// JSON-lines files `DIR/part-NNNNN.jsonl`, one per worker.
    JsonLines {
        /// The output directory (created if missing).
        dir: PathBuf,
    },
    /// A table of the first rows on stdout.
    Table,
    /// Count the rows and discard them (benchmarks).
    Count,
}

/// The file name prefix of result files.
pub const PART_PREFIX: &str = "part";

impl Output {
    /// Attaches this sink, named `name`, to `stream`. `timestamp_fields` are written as
    /// millisecond timestamps where the format has them.
    pub fn attach<T: Data + Serialize>(
        &self,
        stream: Stream<T>,
        name: &str,
        timestamp_fields: &[&str],
    ) {
        match self {
            Output::Parquet {
                dir,
                row_group_size,
            } => stream.sink(
                name,
                ParquetSink::new(dir, PART_PREFIX)
                    .row_group_size(*row_group_size)
                    .timestamp_ms(timestamp_fields),
            ),
            Output::JsonLines { dir } => stream.sink(name, JsonLinesSink::new(dir, PART_PREFIX)),
            Output::Table => stream.sink(name, TableSink::new()),
            Output::Count => stream.sink(name, CountSink::new()),
        }
    }

    /// Attaches this sink to an updating result: Parquet and JSON lines get the change log with
    /// a `diff` column (+1 added, -1 retracted); the table shows the rows standing at the end.
    pub fn attach_changes<T: Data + Serialize + DeserializeOwned>(
        &self,
        stream: Stream<Change<T>>,
        name: &str,
        timestamp_fields: &[&str],
    ) {
        match self {
            Output::Parquet {
                dir,
                row_group_size,
            } => stream.sink(
                name,
                ParquetSink::changes(dir, PART_PREFIX)
                    .row_group_size(*row_group_size)
                    .timestamp_ms(timestamp_fields),
            ),
            Output::JsonLines { dir } => stream.sink(name, JsonLinesSink::new(dir, PART_PREFIX)),
            Output::Table => stream.sink(name, TableSink::changes()),
            Output::Count => stream.sink(name, CountSink::new()),
        }
    }

    /// Attaches this sink, partitioning Parquet output by each record's event time
    /// (`dt=YYYY-MM-DD[/hm=HH]` directories, each marked `_SUCCESS` once the watermark passes
    /// its end; see [`eddy_connectors::PartitionedParquetSink`]). Other formats are written as by
    /// [`Output::attach`].
    pub fn attach_partitioned<T: Data + Serialize>(
        &self,
        stream: Stream<T>,
        name: &str,
        timestamp_fields: &[&str],
        by: TimePartitioning,
    ) {
        match self {
            Output::Parquet {
                dir,
                row_group_size,
            } => stream.sink(
                name,
                ParquetSink::new(dir, PART_PREFIX)
                    .row_group_size(*row_group_size)
                    .timestamp_ms(timestamp_fields)
                    .partitioned(by),
            ),
            _ => self.attach(stream, name, timestamp_fields),
        }
    }
}
