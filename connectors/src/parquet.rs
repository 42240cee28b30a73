//! Parquet output: a sink writing one file per worker, and [`write_parquet`] for one file.
//!
//! The Arrow schema is derived from the row type with `serde_arrow` (strings as `Utf8`, which
//! every reader accepts); fields named in `timestamp_ms` must be `i64` milliseconds since the
//! Unix epoch and are written as `Timestamp(Millisecond, None)`. Files are SNAPPY-compressed,
//! written under a temporary name and renamed into place once complete, so a reader never sees
//! half a file.

use std::fs::File;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::parquet::arrow::ArrowWriter;
use ::parquet::basic::Compression;
use ::parquet::file::properties::WriterProperties;
use arrow_schema::{DataType, Field, FieldRef, Schema, TimeUnit};
use eddy_engine::{
    Change, ConnectorError, FileOutput, Partition, Record, Sink, SinkReport, SinkWriter,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_arrow::schema::{SchemaLike, TracingOptions};
use serde_arrow::ArrayBuilder;

use crate::staged::{finished_twice, Staged};

/// Rows per row group unless [`ParquetSink::row_group_size`] says otherwise.
pub const DEFAULT_ROW_GROUP_SIZE: usize = 65_536;

/// The Arrow fields of rows of type `T` (a struct), traced by `serde_arrow` with strings as
/// `Utf8`; the top-level fields named in `timestamp_ms`, which must be `i64`, become
/// `Timestamp(Millisecond, None)`.
pub fn arrow_fields<T: Serialize + DeserializeOwned>(
    timestamp_ms: &[impl AsRef<str>],
) -> Result<Vec<FieldRef>, ConnectorError> {
    let type_name = std::any::type_name::<T>();
    let options = TracingOptions::default()
        .strings_as_large_utf8(false)
        .sequence_as_large_list(false)
        .bytes_as_large_binary(false);
    let mut fields = Vec::<FieldRef>::from_type::<T>(options).map_err(|e| {
        ConnectorError::user(format!(
            "cannot derive a Parquet schema from {type_name}: {e}; rows must be structs of \
             numbers, strings, booleans, options and lists"
        ))
        .caused_by(e)
    })?;
    for name in timestamp_ms {
        let name = name.as_ref();
        let Some(field) = fields.iter_mut().find(|f| f.name() == name) else {
            let known: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
            return Err(ConnectorError::user(format!(
                "{type_name} has no field '{name}' to write as a timestamp; its fields are {}",
                known.join(", ")
            )));
        };
        if field.data_type() != &DataType::Int64 {
            return Err(ConnectorError::user(format!(
                "field '{name}' of {type_name} is {}, but a timestamp field must be an i64 of \
                 milliseconds since the Unix epoch",
                field.data_type()
            )));
        }
        *field = Arc::new(
            Field::new(
                name,
                DataType::Timestamp(TimeUnit::Millisecond, None),
                field.is_nullable(),
            )
            .with_metadata(field.metadata().clone()),
        );
    }
    Ok(fields)
}

/// One Parquet file being written: rows are serialized into Arrow columns as they come and
/// written as a row group every `row_group_size` rows.
pub(crate) struct ParquetFile {
    staged: Staged,
    writer: ArrowWriter<File>,
    builder: ArrayBuilder,
    buffered: usize,
    row_group_size: usize,
    rows: u64,
}

impl ParquetFile {
    pub(crate) fn create(
        dir: &Path,
        name: &str,
        fields: &[FieldRef],
        row_group_size: usize,
    ) -> Result<Self, ConnectorError> {
        let row_group_size = row_group_size.max(1);
        let builder = ArrayBuilder::from_arrow(fields).map_err(|e| {
            ConnectorError::user(format!(
                "cannot build Arrow columns for {}: {e}",
                dir.join(name).display()
            ))
            .caused_by(e)
        })?;
        let (staged, file) = Staged::create(dir, name)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(row_group_size))
            .build();
        let schema = Arc::new(Schema::new(fields.to_vec()));
        let writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| {
            ConnectorError::user(format!(
                "cannot write the schema of {} as Parquet: {e}",
                staged.dest().display()
            ))
            .caused_by(e)
        })?;
        Ok(ParquetFile {
            staged,
            writer,
            builder,
            buffered: 0,
            row_group_size,
            rows: 0,
        })
    }

    pub(crate) fn push<T: Serialize>(&mut self, row: &T) -> Result<(), ConnectorError> {
        self.builder.push(row).map_err(|e| {
            ConnectorError::user(format!(
                "a {} does not fit the Parquet schema of {}: {e}",
                std::any::type_name::<T>(),
                self.staged.dest().display()
            ))
            .caused_by(e)
        })?;
        self.buffered += 1;
        self.rows += 1;
        if self.buffered >= self.row_group_size {
            self.write_row_group()?;
        }
        Ok(())
    }

    fn write_error(&self, e: ::parquet::errors::ParquetError) -> ConnectorError {
        ConnectorError::external(
            format!(
                "could not write {}; check free disk space",
                self.staged.dest().display()
            ),
            e,
        )
    }

    fn write_row_group(&mut self) -> Result<(), ConnectorError> {
        if self.buffered == 0 {
            return Ok(());
        }
        let batch = self.builder.to_record_batch().map_err(|e| {
            ConnectorError::user(format!(
                "cannot assemble the rows of {} into Arrow columns: {e}",
                self.staged.dest().display()
            ))
            .caused_by(e)
        })?;
        self.buffered = 0;
        if let Err(e) = self.writer.write(&batch) {
            return Err(self.write_error(e));
        }
        if let Err(e) = self.writer.flush() {
            return Err(self.write_error(e));
        }
        Ok(())
    }

    /// Writes the last row group and the footer, and renames the file into place.
    pub(crate) fn finish(mut self) -> Result<(PathBuf, u64), ConnectorError> {
        self.write_row_group()?;
        let ParquetFile {
            staged,
            writer,
            rows,
            ..
        } = self;
        match writer.into_inner() {
            Ok(file) => drop(file),
            Err(e) => {
                return Err(ConnectorError::external(
                    format!(
                        "could not write {}; check free disk space",
                        staged.dest().display()
                    ),
                    e,
                ))
            }
        }
        Ok((staged.commit()?, rows))
    }
}

/// Writes `rows` to the Parquet file `path` (through a temporary file in the same directory,
/// created if missing), with the fields named in `timestamp_ms` as ms timestamps. Returns the
/// number of rows written.
pub fn write_parquet<T: Serialize + DeserializeOwned>(
    path: impl AsRef<Path>,
    rows: &[T],
    timestamp_ms: &[&str],
) -> Result<u64, ConnectorError> {
    let path = path.as_ref();
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Err(ConnectorError::user(format!(
            "{} does not name a file to write; give a path like out/bids.parquet",
            path.display()
        )));
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let fields = arrow_fields::<T>(timestamp_ms)?;
    let mut file = ParquetFile::create(dir, name, &fields, DEFAULT_ROW_GROUP_SIZE)?;
    for row in rows {
        file.push(row)?;
    }
    Ok(file.finish()?.1)
}

/// A sink writing each worker's rows to `{dir}/{prefix}-{worker:05}.parquet`.
///
/// Rows are buffered as Arrow columns and written every [`Self::row_group_size`] rows; the file
/// is renamed into place by [`SinkWriter::finish`] (even with zero rows: a valid file with the
/// schema). Only the data is written, not the record's event time.
#[derive(Debug)]
pub struct ParquetSink<T> {
    pub(crate) dir: PathBuf,
    pub(crate) prefix: String,
    pub(crate) row_group_size: usize,
    timestamp_ms: Vec<String>,
    fields: FieldsOf,
    _marker: PhantomData<fn(T)>,
}

/// Derives a sink's Arrow fields from its timestamp field names.
type FieldsOf = fn(&[String]) -> Result<Vec<FieldRef>, ConnectorError>;

impl<T: Serialize + DeserializeOwned> ParquetSink<T> {
    /// Writes into `dir` (created if missing), naming files `{prefix}-{worker:05}.parquet`.
    pub fn new(dir: impl Into<PathBuf>, prefix: &str) -> Self {
        Self::with_fields(dir.into(), prefix, arrow_fields::<T>)
    }
}

impl<T: Serialize + DeserializeOwned> ParquetSink<Change<T>> {
    /// Writes an updating result as its change log: the row's columns, then `diff` (an `i64`,
    /// +1 for an added row, -1 for a retracted one).
    pub fn changes(dir: impl Into<PathBuf>, prefix: &str) -> Self {
        Self::with_fields(dir.into(), prefix, change_fields::<T>)
    }
}

/// The fields of `T` followed by `diff: Int64`.
fn change_fields<T: Serialize + DeserializeOwned>(
    timestamp_ms: &[String],
) -> Result<Vec<FieldRef>, ConnectorError> {
    let mut fields = arrow_fields::<T>(timestamp_ms)?;
    if fields.iter().any(|f| f.name() == "diff") {
        return Err(ConnectorError::user(format!(
            "{} has a field named 'diff', which the change log needs for its multiplicity; \
             rename the field",
            std::any::type_name::<T>()
        )));
    }
    fields.push(Arc::new(Field::new("diff", DataType::Int64, false)));
    Ok(fields)
}

impl<T> ParquetSink<T> {
    fn with_fields(dir: PathBuf, prefix: &str, fields: FieldsOf) -> Self {
        ParquetSink {
            dir,
            prefix: prefix.to_string(),
            row_group_size: DEFAULT_ROW_GROUP_SIZE,
            timestamp_ms: Vec::new(),
            fields,
            _marker: PhantomData,
        }
    }

    /// Rows per row group (default [`DEFAULT_ROW_GROUP_SIZE`]; zero is taken as one).
    pub fn row_group_size(mut self, rows: usize) -> Self {
        self.row_group_size = rows.max(1);
        self
    }

    /// Writes these `i64` fields (ms since the Unix epoch) as `Timestamp(Millisecond, None)`.
    pub fn timestamp_ms(mut self, fields: &[&str]) -> Self {
        self.timestamp_ms = fields.iter().map(|f| f.to_string()).collect();
        self
    }

    /// The file worker `index` writes.
    pub fn file_name(&self, index: usize) -> String {
        format!("{}-{index:05}.parquet", self.prefix)
    }
}

impl<T> ParquetSink<T> {
    /// The Arrow schema the files will have; an error says why `T` cannot be written.
    pub fn schema(&self) -> Result<Vec<FieldRef>, ConnectorError> {
        (self.fields)(&self.timestamp_ms)
    }
}

impl<T: Serialize + 'static> Sink<T> for ParquetSink<T> {
    fn describe(&self) -> String {
        format!("parquet({}/{}-*.parquet)", self.dir.display(), self.prefix)
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        self.open_file(partition, &self.dir, &self.file_name(partition.index))
    }

    fn files(&self) -> Option<FileOutput> {
        Some(FileOutput {
            dir: self.dir.clone(),
            prefix: self.prefix.clone(),
            extension: "parquet".to_string(),
        })
    }

    fn open_file(
        &self,
        _partition: Partition,
        dir: &Path,
        name: &str,
    ) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        let fields = self.schema()?;
        let file = ParquetFile::create(dir, name, &fields, self.row_group_size)?;
        Ok(Box::new(ParquetWriter {
            file: Some(file),
            _marker: PhantomData,
        }))
    }
}

struct ParquetWriter<T> {
    file: Option<ParquetFile>,
    _marker: PhantomData<fn(T)>,
}

impl<T: Serialize> SinkWriter<T> for ParquetWriter<T> {
    fn write(&mut self, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        let Some(file) = self.file.as_mut() else {
            return Err(finished_twice("a Parquet writer"));
        };
        for (_, row) in batch.iter() {
            file.push(row)?;
        }
        batch.clear();
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        let Some(file) = self.file.take() else {
            return Err(finished_twice("a Parquet writer"));
        };
        let (path, rows) = file.finish()?;
        Ok(SinkReport {
            rows,
            files: vec![path],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use arrow_array::{Array, Int64Array, StringArray, TimestampMillisecondArray, UInt64Array};
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Row {
        name: String,
        count: u64,
        date_time: i64,
        delta: i64,
    }

    fn rows(n: u64) -> Vec<Row> {
        (0..n)
            .map(|i| Row {
                name: format!("row {i}"),
                count: i * 2,
                date_time: 1_700_000_000_000 + i as i64,
                delta: -(i as i64),
            })
            .collect()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn read_back(
        path: &Path,
    ) -> (
        arrow_schema::SchemaRef,
        Vec<arrow_array::RecordBatch>,
        usize,
    ) {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        let groups = builder.metadata().num_row_groups();
        let schema = builder.schema().clone();
        let batches = builder
            .build()
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        (schema, batches, groups)
    }

    #[test]
    fn sink_writes_row_groups_with_utf8_and_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nested/out");
        let sink = ParquetSink::<Row>::new(&out, "q")
            .row_group_size(4)
            .timestamp_ms(&["date_time"]);
        let mut writer = sink.open(Partition { index: 2, count: 3 }).unwrap();
        let mut batch: Vec<Record<Row>> = rows(10).into_iter().map(|r| (0, r)).collect();
        writer.write(&mut batch).unwrap();
        assert!(batch.is_empty());
        assert_eq!(entries(&out), vec![".q-00002.parquet.tmp".to_string()]);
        let report = writer.finish().unwrap();
        let path = out.join("q-00002.parquet");
        assert_eq!(
            report,
            SinkReport {
                rows: 10,
                files: vec![path.clone()]
            }
        );
        assert_eq!(entries(&out), vec!["q-00002.parquet".to_string()]);

        let (schema, batches, groups) = read_back(&path);
        assert_eq!(groups, 3);
        assert_eq!(
            schema.field_with_name("name").unwrap().data_type(),
            &DataType::Utf8
        );
        assert_eq!(
            schema.field_with_name("count").unwrap().data_type(),
            &DataType::UInt64
        );
        assert_eq!(
            schema.field_with_name("date_time").unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        assert_eq!(
            schema.field_with_name("delta").unwrap().data_type(),
            &DataType::Int64
        );
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 10);

        let mut names = Vec::new();
        let mut counts = Vec::new();
        let mut times = Vec::new();
        let mut deltas = Vec::new();
        for b in &batches {
            let col = |n: &str| b.column(b.schema().index_of(n).unwrap()).clone();
            let name = col("name");
            let name = name.as_any().downcast_ref::<StringArray>().unwrap();
            names.extend(name.iter().map(|s| s.unwrap().to_string()));
            let count = col("count");
            counts.extend(
                count
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .unwrap()
                    .values()
                    .iter()
                    .copied(),
            );
            let time = col("date_time");
            times.extend(
                time.as_any()
                    .downcast_ref::<TimestampMillisecondArray>()
                    .unwrap()
                    .values()
                    .iter()
                    .copied(),
            );
            let delta = col("delta");
            deltas.extend(
                delta
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .iter()
                    .copied(),
            );
        }
        let expected = rows(10);
        assert_eq!(
            names,
            expected.iter().map(|r| r.name.clone()).collect::<Vec<_>>()
        );
        assert_eq!(counts, expected.iter().map(|r| r.count).collect::<Vec<_>>());
        assert_eq!(
            times,
            expected.iter().map(|r| r.date_time).collect::<Vec<_>>()
        );
        assert_eq!(deltas, expected.iter().map(|r| r.delta).collect::<Vec<_>>());

        // serde_arrow reads the rows back too.
        let back: Vec<Row> = batches
            .iter()
            .flat_map(|b| serde_arrow::from_record_batch::<Vec<Row>>(b).unwrap())
            .collect();
        assert_eq!(back, expected);
    }

    #[test]
    fn change_log_gets_a_diff_column_after_the_row_columns() {
        let dir = tempfile::tempdir().unwrap();
        let sink =
            ParquetSink::<Change<Row>>::changes(dir.path(), "log").timestamp_ms(&["date_time"]);
        let mut writer = sink.open(Partition { index: 0, count: 1 }).unwrap();
        let rows = rows(3);
        let mut batch: Vec<_> = vec![
            (1, Change::insert(rows[0].clone())),
            (2, Change::retract(rows[0].clone())),
            (2, Change::insert(rows[1].clone())),
        ];
        writer.write(&mut batch).unwrap();
        let report = writer.finish().unwrap();
        let (schema, batches, _) = read_back(&report.files[0]);
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["name", "count", "date_time", "delta", "diff"]);
        let diffs: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                let col = b.column(b.schema().index_of("diff").unwrap()).clone();
                col.as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(diffs, [1, -1, 1]);
        let back: Vec<Change<Row>> = batches
            .iter()
            .flat_map(|b| serde_arrow::from_record_batch::<Vec<Change<Row>>>(b).unwrap())
            .collect();
        assert_eq!(back, batch_rows(&rows));
    }

    fn batch_rows(rows: &[Row]) -> Vec<Change<Row>> {
        vec![
            Change::insert(rows[0].clone()),
            Change::retract(rows[0].clone()),
            Change::insert(rows[1].clone()),
        ]
    }

    #[test]
    fn empty_sink_writes_a_valid_file_with_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let sink = ParquetSink::<Row>::new(dir.path(), "empty").timestamp_ms(&["date_time"]);
        let mut writer = sink.open(Partition { index: 0, count: 1 }).unwrap();
        let report = writer.finish().unwrap();
        assert_eq!(report.rows, 0);
        let (schema, batches, _) = read_back(&report.files[0]);
        assert_eq!(schema.fields().len(), 4);
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
        assert_eq!(entries(dir.path()), vec!["empty-00000.parquet".to_string()]);
    }

    #[test]
    fn write_parquet_writes_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bids.parquet");
        assert_eq!(write_parquet(&path, &rows(7), &["date_time"]).unwrap(), 7);
        let (schema, batches, _) = read_back(&path);
        assert_eq!(
            schema.field_with_name("date_time").unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 7);
        assert_eq!(entries(dir.path()), vec!["bids.parquet".to_string()]);
    }

    #[test]
    fn bad_timestamp_fields_are_user_errors() {
        let err = arrow_fields::<Row>(&["nope"]).unwrap_err();
        assert!(err.what.contains("no field 'nope'"), "{err}");
        let err = arrow_fields::<Row>(&["name"]).unwrap_err();
        assert!(err.what.contains("must be an i64"), "{err}");
        let err = arrow_fields::<u64>(&[] as &[&str]).unwrap_err();
        assert!(err.what.contains("u64"), "{err}");
    }

    #[test]
    fn nexmark_rows_export() {
        use crate::nexmark::{generate_all, AuctionRow, NexmarkConfig, NexmarkTables};
        let events = generate_all(&NexmarkConfig::with_events(200));
        let tables = NexmarkTables::from_events(events.iter().map(|(_, e)| e));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auctions.parquet");
        let n = write_parquet(&path, &tables.auctions, AuctionRow::TIMESTAMP_FIELDS).unwrap();
        assert_eq!(n as usize, tables.auctions.len());
        let (schema, batches, _) = read_back(&path);
        assert_eq!(
            schema.field_with_name("expires").unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        let back: Vec<AuctionRow> = batches
            .iter()
            .flat_map(|b| serde_arrow::from_record_batch::<Vec<AuctionRow>>(b).unwrap())
            .collect();
        assert_eq!(back, tables.auctions);
    }
}
