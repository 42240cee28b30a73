//! Parquet of dynamic records (JSON objects whose fields are known only at run time), as
//! `eddy copy --to parquet:///DIR` writes them.
//!
//! The files take their schema from the first batch of records any worker of the process
//! receives (so every worker's file has the same schema and the directory reads as one
//! table): every top-level field seen becomes a nullable column, typed `Int64`, `UInt64`
//! (integers, one of them above `i64::MAX`, none negative), `Float64` (integers and floats
//! mixed), `Boolean` or `Utf8`; nested objects and arrays, and fields whose values mix kinds
//! (among them integers above `i64::MAX` with negative integers or floats, which no number
//! column holds exactly), become `Utf8` columns holding their JSON text. Later records fill
//! missing fields with nulls; a record with a field the schema lacks, or a value its column
//! cannot hold exactly (a string in an `Int64` column, an integer above `i64::MAX` in an
//! `Int64` or `Float64` column, a negative one in a `UInt64` column), does not fit: it is not
//! written and goes to the dead-letter sink with the reason. Files are renamed into place when complete, as every Parquet file Eddy writes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arrow_schema::{DataType, Field, FieldRef};
use eddy_engine::{
    ConnectorError, FileOutput, Partition, Record, RecordError, Sink, SinkReport, SinkWriter,
};
use serde_json::{Map, Value};

use crate::parquet::{ParquetFile, DEFAULT_ROW_GROUP_SIZE};
use crate::staged::finished_twice;

/// A sink of dynamic records to `{dir}/{prefix}-{worker:05}.parquet`, with a schema inferred
/// from the first records (see the module docs).
#[derive(Debug)]
pub struct DynamicParquetSink {
    dir: PathBuf,
    prefix: String,
    row_group_size: usize,
    /// The columns, once the first batch has set them: shared by the workers.
    schema: Arc<Mutex<Option<Columns>>>,
}

/// Columns by name and kind, in order.
type Columns = Vec<(String, Kind)>;

impl DynamicParquetSink {
    /// Writes into `dir` (created if missing), naming files `{prefix}-{worker:05}.parquet`.
    pub fn new(dir: impl Into<PathBuf>, prefix: &str) -> Self {
        DynamicParquetSink {
            dir: dir.into(),
            prefix: prefix.to_string(),
            row_group_size: DEFAULT_ROW_GROUP_SIZE,
            schema: Arc::default(),
        }
    }

    /// Rows per row group (default [`DEFAULT_ROW_GROUP_SIZE`]).
    pub fn row_group_size(mut self, rows: usize) -> Self {
        self.row_group_size = rows.max(1);
        self
    }
}

impl Sink<Value> for DynamicParquetSink {
    fn describe(&self) -> String {
        format!("parquet({}/{}-*.parquet)", self.dir.display(), self.prefix)
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SinkWriter<Value>>, ConnectorError> {
        let name = format!("{}-{:05}.parquet", self.prefix, partition.index);
        self.open_file(partition, &self.dir, &name)
    }

    fn files(&self) -> Option<FileOutput> {
        Some(FileOutput {
            dir: self.dir.clone(),
            prefix: self.prefix.clone(),
            extension: "parquet".to_string(),
        })
    }

    /// One file of an exactly-once run; every file of the process shares the schema the first
    /// records set (after a restart: the first records read again).
    fn open_file(
        &self,
        _partition: Partition,
        dir: &Path,
        name: &str,
    ) -> Result<Box<dyn SinkWriter<Value>>, ConnectorError> {
        Ok(Box::new(DynamicWriter {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            row_group_size: self.row_group_size,
            schema: Arc::clone(&self.schema),
            file: None,
            columns: Vec::new(),
            finished: false,
            undeliverable: Vec::new(),
        }))
    }
}

/// The kind of a column, as inferred from the values seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Only nulls so far.
    Null,
    Bool,
    /// Integers, all within `i64`.
    Int,
    /// Integers, none negative, some above `i64::MAX`.
    UInt,
    Float,
    /// Strings, or JSON text for nested values and mixed kinds.
    Text,
}

impl Kind {
    fn of(value: &Value) -> Kind {
        match value {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(n) if n.is_i64() => Kind::Int,
            Value::Number(n) if n.is_u64() => Kind::UInt,
            Value::Number(_) => Kind::Float,
            _ => Kind::Text,
        }
    }

    /// The kind of a column holding values of both kinds; `negative`: whether the column
    /// holds a negative integer (which an unsigned column cannot hold).
    fn widen(self, other: Kind, negative: bool) -> Kind {
        match (self, other) {
            (a, b) if a == b => a,
            (Kind::Null, b) => b,
            (a, Kind::Null) => a,
            (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => Kind::Float,
            (Kind::Int, Kind::UInt) | (Kind::UInt, Kind::Int) if !negative => Kind::UInt,
            _ => Kind::Text,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::UInt => DataType::UInt64,
            Kind::Float => DataType::Float64,
            Kind::Null | Kind::Text => DataType::Utf8,
        }
    }
}

/// The columns the first records imply, in the order their fields first appear.
fn infer(rows: &[Record<Value>]) -> Vec<(String, Kind)> {
    // Each column with whether it holds a negative integer.
    let mut columns: Vec<(String, Kind, bool)> = Vec::new();
    for (_, row) in rows {
        let Value::Object(object) = row else { continue };
        for (name, value) in object {
            let is_negative = value.as_i64().is_some_and(|n| n < 0);
            match columns.iter_mut().find(|(n, _, _)| n == name) {
                Some((_, kind, negative)) => {
                    *negative |= is_negative;
                    *kind = kind.widen(Kind::of(value), *negative);
                }
                None => columns.push((name.clone(), Kind::of(value), is_negative)),
            }
        }
    }
    columns
        .into_iter()
        .map(|(name, kind, _)| (name, kind))
        .collect()
}

/// `row` as an object with exactly `columns`, each value of its column's type; or why it does
/// not fit.
fn conform(columns: &[(String, Kind)], row: &Value) -> Result<Value, String> {
    let Value::Object(object) = row else {
        return Err(format!("a Parquet row must be a JSON object, not {row}"));
    };
    if let Some(extra) = object
        .keys()
        .find(|k| !columns.iter().any(|(n, _)| n == *k))
    {
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        return Err(format!(
            "field '{extra}' is not in the Parquet schema taken from the first rows ({})",
            names.join(", ")
        ));
    }
    let mut out = Map::with_capacity(columns.len());
    for (name, kind) in columns {
        let value = object.get(name).unwrap_or(&Value::Null);
        let fitted = match (kind, value) {
            (_, Value::Null) => Value::Null,
            (Kind::Text | Kind::Null, Value::String(_)) => value.clone(),
            (Kind::Text | Kind::Null, other) => Value::String(other.to_string()),
            (Kind::Float, Value::Number(n)) if !n.is_u64() || n.is_i64() => {
                n.as_f64().map_or(Value::Null, Value::from)
            }
            (Kind::UInt, Value::Number(n)) if n.is_u64() => value.clone(),
            (k, v) if Kind::of(v) == *k => value.clone(),
            (k, v) => {
                let exactly = if Kind::of(v) == Kind::UInt {
                    ", which cannot hold an integer above i64::MAX exactly"
                } else {
                    ""
                };
                return Err(format!(
                    "field '{name}' is {v}, but its Parquet column is {} (from the first \
                     rows){exactly}",
                    k.data_type()
                ));
            }
        };
        out.insert(name.clone(), fitted);
    }
    Ok(Value::Object(out))
}

struct DynamicWriter {
    dir: PathBuf,
    name: String,
    row_group_size: usize,
    schema: Arc<Mutex<Option<Columns>>>,
    file: Option<ParquetFile>,
    columns: Vec<(String, Kind)>,
    finished: bool,
    undeliverable: Vec<RecordError>,
}

impl DynamicWriter {
    fn create(&mut self, columns: Vec<(String, Kind)>) -> Result<(), ConnectorError> {
        let fields: Vec<FieldRef> = columns
            .iter()
            .map(|(name, kind)| Arc::new(Field::new(name, kind.data_type(), true)))
            .collect();
        self.file = Some(ParquetFile::create(
            &self.dir,
            &self.name,
            &fields,
            self.row_group_size,
        )?);
        self.columns = columns;
        Ok(())
    }
}

impl SinkWriter<Value> for DynamicWriter {
    fn write(&mut self, batch: &mut Vec<Record<Value>>) -> Result<(), ConnectorError> {
        if self.finished {
            return Err(finished_twice("a Parquet writer"));
        }
        if self.file.is_none() && !batch.is_empty() {
            let columns = self
                .schema
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert_with(|| infer(batch))
                .clone();
            self.create(columns)?;
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        for (_, row) in batch.drain(..) {
            match conform(&self.columns, &row) {
                Ok(fitted) => file.push(&fitted)?,
                Err(message) => {
                    let location = self.dir.join(&self.name).display().to_string();
                    let raw = serde_json::to_vec(&row).unwrap_or_default();
                    self.undeliverable
                        .push(RecordError::new(location, message).with_raw(raw));
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        if std::mem::replace(&mut self.finished, true) {
            return Err(finished_twice("a Parquet writer"));
        }
        // No record at all: nothing to infer a schema from, so no file.
        let Some(file) = self.file.take() else {
            return Ok(SinkReport::default());
        };
        let (path, rows) = file.finish()?;
        Ok(SinkReport {
            rows,
            files: vec![path],
        })
    }

    fn undeliverable(&mut self) -> Vec<RecordError> {
        std::mem::take(&mut self.undeliverable)
    }
}

#[cfg(test)]
mod tests {
    use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use serde_json::json;

    use super::*;

    #[test]
    fn schema_from_the_first_rows_and_rows_that_do_not_fit_are_undeliverable() {
        let dir = tempfile::tempdir().unwrap();
        let sink = DynamicParquetSink::new(dir.path(), "copy").row_group_size(2);
        let mut writer = sink.open(Partition { index: 0, count: 1 }).unwrap();
        let mut first = vec![
            (
                1,
                json!({"id": 1, "price": 2, "name": "a", "tags": ["x"], "ok": true}),
            ),
            (2, json!({"id": 2, "price": 2.5, "name": null, "ok": false})),
        ];
        writer.write(&mut first).unwrap();
        let mut later = vec![
            (3, json!({"id": 3, "name": "c"})),
            (4, json!({"id": "four"})),
            (5, json!({"id": 5, "colour": "red"})),
            (6, json!({"id": 6, "tags": {"nested": 1}})),
        ];
        writer.write(&mut later).unwrap();
        let failed = writer.undeliverable();
        let report = writer.finish().unwrap();
        assert_eq!(report.rows, 4);
        assert_eq!(failed.len(), 2);
        assert!(
            failed[0].message.contains("field 'id' is \"four\""),
            "{}",
            failed[0]
        );
        assert!(
            failed[1]
                .message
                .contains("'colour' is not in the Parquet schema"),
            "{}",
            failed[1]
        );

        let file = std::fs::File::open(&report.files[0]).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let schema = reader.schema().clone();
        let types: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        assert_eq!(
            types,
            vec![
                ("id".into(), DataType::Int64),
                ("price".into(), DataType::Float64),
                ("name".into(), DataType::Utf8),
                ("tags".into(), DataType::Utf8),
                ("ok".into(), DataType::Boolean),
            ]
        );
        let rows: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 4);
    }

    #[test]
    fn every_worker_writes_the_schema_the_first_batch_set() {
        let dir = tempfile::tempdir().unwrap();
        let sink = DynamicParquetSink::new(dir.path(), "copy");
        let mut first = sink.open(Partition { index: 0, count: 2 }).unwrap();
        let mut second = sink.open(Partition { index: 1, count: 2 }).unwrap();
        first.write(&mut vec![(1, json!({"id": 1}))]).unwrap();
        // Alone, this batch would make `id` a string column; it does not fit the shared one.
        second
            .write(&mut vec![(2, json!({"id": "two"})), (3, json!({"id": 3}))])
            .unwrap();
        assert_eq!(second.undeliverable().len(), 1);
        for mut writer in [first, second] {
            let report = writer.finish().unwrap();
            let file = std::fs::File::open(&report.files[0]).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
            assert_eq!(reader.schema().field(0).data_type(), &DataType::Int64);
        }
    }

    /// The type of each column of the file `sink` writes from `first`, then `later`, and the
    /// reasons of the records that did not fit.
    fn typed_columns(first: Vec<Value>, later: Vec<Value>) -> (Vec<DataType>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let sink = DynamicParquetSink::new(dir.path(), "copy");
        let mut writer = sink.open(Partition { index: 0, count: 1 }).unwrap();
        writer
            .write(&mut first.into_iter().map(|v| (0, v)).collect())
            .unwrap();
        writer
            .write(&mut later.into_iter().map(|v| (0, v)).collect())
            .unwrap();
        let failed = writer.undeliverable();
        let report = writer.finish().unwrap();
        let file = std::fs::File::open(&report.files[0]).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let types = reader
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        (types, failed.into_iter().map(|f| f.message).collect())
    }

    #[test]
    fn integers_above_i64_max_make_unsigned_columns_or_dead_letters_never_doubles() {
        let max = u64::MAX;
        let (types, failed) = typed_columns(
            vec![json!({"n": 1}), json!({"n": max})],
            vec![json!({"n": -1}), json!({"n": 2})],
        );
        assert_eq!(types, vec![DataType::UInt64]);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].contains("field 'n' is -1"), "{failed:?}");

        let (types, failed) = typed_columns(
            vec![json!({"n": 1})],
            vec![json!({"n": max}), json!({"n": 3})],
        );
        assert_eq!(types, vec![DataType::Int64]);
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0].contains("18446744073709551615") && failed[0].contains("above i64::MAX"),
            "{failed:?}"
        );

        let (types, failed) = typed_columns(vec![json!({"x": 0.5})], vec![json!({"x": max})]);
        assert_eq!(types, vec![DataType::Float64]);
        assert!(
            failed[0].contains("cannot hold an integer above i64::MAX"),
            "{failed:?}"
        );

        // No number column holds both: the values are kept exactly, as JSON text.
        for mixed in [json!(-1), json!(0.5)] {
            let (types, failed) =
                typed_columns(vec![json!({"n": mixed}), json!({"n": max})], Vec::new());
            assert_eq!(types, vec![DataType::Utf8], "{mixed}");
            assert!(failed.is_empty());
        }
    }

    #[test]
    fn a_writer_with_no_rows_writes_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let sink = DynamicParquetSink::new(dir.path(), "copy");
        let mut writer = sink.open(Partition { index: 0, count: 1 }).unwrap();
        assert_eq!(writer.finish().unwrap(), SinkReport::default());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
