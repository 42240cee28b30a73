//! Files of records as lines: CSV input ([`CsvSource`]) and output of JSON lines or CSV
//! ([`LinesSink`]), and the `jsonl://`, `csv://` and `parquet://` endpoints of `eddy copy`.
//!
//! **CSV input.** Each row is a record: with a header row (the default) its columns are matched
//! to `T`'s fields by name (for dynamic records, a JSON object keyed by the header, numbers
//! read as numbers); without one, by position. A row that does not fit — not UTF-8, more or
//! fewer fields than the header has columns (without a header, than the file's first row),
//! longer than `max_record_size`, or opening a quote
//! that does not close — is rejected with its `path:line` and its text, and the run goes on at
//! the next line. File `i` is read by worker `i % count`; the path `-` reads standard input. Runs with checkpoints resume at the byte offset of the next
//! row, the header read again from the file's first line (see [`crate::jsonl`]'s docs).
//!
//! **Output.** A [`LinesSink`] writes JSON lines or CSV (with a header row) either per worker
//! into a directory (`{dir}/{prefix}-{worker:05}.{jsonl,csv}`) or into one named file (worker
//! `i > 0` writes `{path}.{i}`), or to standard output (`-`); a device or pipe such as
//! `/dev/null` is written in place by every worker. Files are written under a
//! temporary name and renamed into place when complete. A CSV sink takes its header from the
//! first record; a dynamic record whose fields differ from the header is not written and goes
//! to the dead-letter sink.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use eddy_engine::{
    wall_clock_ms, ConnectorError, FileOutput, Partition, ReadStatus, Record, RecordError, Sink,
    SinkReport, SinkWriter, Source, SourcePositions, SourceReader,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::csv_records::{CsvRecords, Next};
use crate::endpoints::{max_record_size, DynSink, DynSource, EndpointOptions};
use crate::event_time::EventTimeOf;
use crate::format::{csv_row, is_dynamic, CsvOptions, Format};
use crate::jsonl::{
    describe_files, is_stdio, open_input, open_input_at, FileQueue, JsonLinesSource, Offset,
};
use crate::lines::DEFAULT_MAX_RECORD_SIZE;
use crate::parquet_dynamic::DynamicParquetSink;
use crate::staged::{finished_twice, io_error, Staged};
use crate::uri::Endpoint;

/// A source of CSV files (see the module docs).
#[derive(Debug)]
pub struct CsvSource<T> {
    paths: Vec<PathBuf>,
    header: bool,
    delimiter: u8,
    max_record_size: usize,
    event_time: EventTimeOf<T>,
}

impl<T> CsvSource<T> {
    /// Reads `paths` (each with a header row), timing records as `event_time` says.
    pub fn new(
        paths: impl IntoIterator<Item = impl Into<PathBuf>>,
        event_time: EventTimeOf<T>,
    ) -> Self {
        CsvSource {
            paths: paths.into_iter().map(Into::into).collect(),
            header: true,
            delimiter: b',',
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            event_time,
        }
    }

    /// Whether the files start with a header row (default true); without one, columns match
    /// `T`'s fields by position (dynamic records name them `c0`, `c1`, ...).
    pub fn header(mut self, header: bool) -> Self {
        self.header = header;
        self
    }

    /// The field delimiter (default `,`).
    pub fn delimiter(mut self, delimiter: u8) -> Self {
        self.delimiter = delimiter;
        self
    }

    /// The largest record taken, in bytes (default [`DEFAULT_MAX_RECORD_SIZE`], 1 MiB); a
    /// longer one is rejected and reading goes on at the next line.
    pub fn max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = bytes;
        self
    }
}

impl<T: DeserializeOwned + Serialize + 'static> Source<T> for CsvSource<T> {
    fn describe(&self) -> String {
        describe_files("csv", &self.paths)
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        let files = FileQueue::fresh(&self.paths, partition)?;
        Ok(Box::new(self.reader(files)))
    }

    /// Reopens this worker's files (file `i` for worker `i % count`) where the old readers'
    /// positions say, reading each resumed file's header row again from its start.
    fn open_at(
        &self,
        partition: Partition,
        positions: &SourcePositions,
    ) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        let files = FileQueue::resumed(&self.describe(), &self.paths, partition, positions)?;
        Ok(Box::new(self.reader(files)))
    }
}

impl<T> CsvSource<T> {
    fn reader(&self, files: FileQueue) -> CsvReader<T> {
        CsvReader {
            files,
            current: None,
            header: self.header,
            delimiter: self.delimiter,
            max_record_size: self.max_record_size,
            event_time: self.event_time.clone(),
            fields: csv::ByteRecord::new(),
        }
    }
}

struct OpenCsv {
    path: PathBuf,
    records: CsvRecords,
    columns: Vec<String>,
    headers: Option<csv::StringRecord>,
    /// How many fields every row has: the header's columns, or without a header the first
    /// row's fields.
    width: Option<usize>,
}

struct CsvReader<T> {
    files: FileQueue,
    /// The current file of `files`, once opened.
    current: Option<OpenCsv>,
    header: bool,
    delimiter: u8,
    max_record_size: usize,
    event_time: EventTimeOf<T>,
    /// The fields of the row being read (reused).
    fields: csv::ByteRecord,
}

impl<T: DeserializeOwned + Serialize + 'static> CsvReader<T> {
    /// Opens the current file of the queue at its next row (reading its header row first);
    /// `false` when every file is done.
    fn open_next(&mut self) -> Result<bool, ConnectorError> {
        let Some((path, next)) = self.files.current() else {
            return Ok(false);
        };
        let path = path.to_path_buf();
        let records = |input, at| CsvRecords::new(input, self.delimiter, self.max_record_size, at);
        let mut headers = None;
        let mut reading = None;
        if self.header {
            let mut first = records(open_input(&path)?, Offset::default());
            let mut fields = csv::ByteRecord::new();
            match first
                .next_record(&mut fields)
                .map_err(|e| read_error(&path, e))?
            {
                Next::Record { .. } => {
                    let row = csv::StringRecord::from_byte_record(fields).map_err(|e| {
                        ConnectorError::user(format!(
                            "{}: the header row is not valid UTF-8 ({}); save the file as UTF-8",
                            path.display(),
                            e.utf8_error()
                        ))
                    })?;
                    headers = Some(row);
                }
                Next::Rejected { line, message } => {
                    return Err(ConnectorError::user(format!(
                        "{}:{line}: the header row cannot be read: {message}",
                        path.display()
                    )))
                }
                Next::End => headers = Some(csv::StringRecord::new()),
            }
            if next.byte == 0 {
                reading = Some(first);
            }
        }
        let records = match reading {
            Some(records) => records,
            None => records(open_input_at(&path, next.byte)?, next),
        };
        self.current = Some(OpenCsv {
            columns: headers
                .as_ref()
                .map(|h| h.iter().map(str::to_string).collect())
                .unwrap_or_default(),
            width: headers.as_ref().map(csv::StringRecord::len),
            headers,
            path,
            records,
        });
        Ok(true)
    }

    /// The row in `fields` as a record; `Err` is why it is rejected.
    fn parse(
        file: &mut OpenCsv,
        fields: csv::ByteRecord,
        event_time: &EventTimeOf<T>,
    ) -> Result<Record<T>, String> {
        let width = *file.width.get_or_insert(fields.len());
        if fields.len() != width {
            return Err(match &file.headers {
                Some(headers) => format!(
                    "this row has {} fields, but the header has {} columns ({}); every row \
                     needs one field per column",
                    fields.len(),
                    headers.len(),
                    headers.iter().collect::<Vec<_>>().join(",")
                ),
                None => format!(
                    "this row has {} fields, but the file's first row has {width}; without a \
                     header, every row needs as many fields as the first",
                    fields.len()
                ),
            });
        }
        let row = csv::StringRecord::from_byte_record(fields)
            .map_err(|e| format!("this row is not valid UTF-8 ({})", e.utf8_error()))?;
        let record: T = match (&file.headers, is_dynamic::<T>()) {
            (Some(headers), false) => row
                .deserialize(Some(headers))
                .map_err(|e| format!("this CSV row does not fit the record: {e}"))?,
            _ => csv_row(&file.columns, &row)?,
        };
        let time = event_time.of(&record, None, wall_clock_ms())?;
        Ok((time, record))
    }
}

fn read_error(path: &Path, e: io::Error) -> ConnectorError {
    io_error(format!("could not read {}", path.display()), e)
}

impl<T: DeserializeOwned + Serialize + 'static> SourceReader<T> for CsvReader<T> {
    fn poll(
        &mut self,
        out: &mut Vec<Record<T>>,
        max: usize,
        rejected: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError> {
        let mut rows = 0;
        while rows < max {
            if self.current.is_none() && !self.open_next()? {
                return Ok(if rows == 0 {
                    ReadStatus::Done
                } else {
                    ReadStatus::Ready
                });
            }
            let file = self.current.as_mut().expect("a file is open");
            let next = file
                .records
                .next_record(&mut self.fields)
                .map_err(|e| read_error(&file.path, e))?;
            let (line, result) = match next {
                Next::End => {
                    self.current = None;
                    self.files.finish_current();
                    continue;
                }
                Next::Rejected { line, message } => (line, Err(message)),
                Next::Record { line } => {
                    let fields = std::mem::take(&mut self.fields);
                    (line, Self::parse(file, fields, &self.event_time))
                }
            };
            rows += 1;
            match result {
                Ok(record) => out.push(record),
                Err(message) => {
                    let location = format!("{}:{line}", file.path.display());
                    rejected.push(RecordError::new(location, message).with_raw(file.records.raw()));
                }
            }
        }
        Ok(ReadStatus::Ready)
    }

    fn position(&self) -> Option<Vec<u8>> {
        let reading = self.current.as_ref().map(|file| file.records.next_offset());
        self.files.position(reading)
    }
}

/// Where a [`LinesSink`] writes.
#[derive(Clone, Debug)]
enum Target {
    /// `{dir}/{prefix}-{worker:05}.{ext}` per worker.
    Dir { dir: PathBuf, prefix: String },
    /// One file (worker `i > 0` writes `{path}.{i}`).
    File(PathBuf),
    /// Standard output.
    Stdout,
}

/// A sink writing records as lines of JSON or CSV (see the module docs).
#[derive(Debug)]
pub struct LinesSink<T> {
    target: Target,
    format: Format,
    _marker: PhantomData<fn(T)>,
}

/// The sink of JSON lines files: a [`LinesSink`] in its default format.
pub type JsonLinesSink<T> = LinesSink<T>;

impl<T> LinesSink<T> {
    fn extension(&self) -> &'static str {
        match self.format {
            Format::Csv(_) => "csv",
            _ => "jsonl",
        }
    }

    /// JSON lines into `dir` (created if missing), one file per worker named
    /// `{prefix}-{worker:05}.jsonl`.
    pub fn new(dir: impl Into<PathBuf>, prefix: &str) -> Self {
        LinesSink {
            target: Target::Dir {
                dir: dir.into(),
                prefix: prefix.to_string(),
            },
            format: Format::Json,
            _marker: PhantomData,
        }
    }

    /// Records in `format` (JSON or CSV) into the file `path` (`-`: standard output).
    pub fn file(path: impl Into<PathBuf>, format: Format) -> Self {
        let path = path.into();
        LinesSink {
            target: if is_stdio(&path) {
                Target::Stdout
            } else {
                Target::File(path)
            },
            format,
            _marker: PhantomData,
        }
    }

    /// The same sink writing `format` (JSON or CSV).
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// The file worker `index` writes, relative to the sink's directory (or the file itself).
    pub fn file_name(&self, index: usize) -> String {
        let ext = self.extension();
        match &self.target {
            Target::Dir { prefix, .. } => format!("{prefix}-{index:05}.{ext}"),
            Target::File(path) => {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                let name = name.unwrap_or_else(|| "out".to_string());
                if index == 0 {
                    name
                } else {
                    format!("{name}.{index}")
                }
            }
            Target::Stdout => "-".to_string(),
        }
    }
}

impl<T: Serialize + 'static> Sink<T> for LinesSink<T> {
    fn describe(&self) -> String {
        match &self.target {
            Target::Dir { dir, .. } => format!(
                "{}({}/{})",
                self.format,
                dir.display(),
                self.file_name(0).replace("00000", "*")
            ),
            Target::File(path) => format!("{}({})", self.format, path.display()),
            Target::Stdout => format!("{}(stdout)", self.format),
        }
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        let out = match &self.target {
            Target::Stdout => Out::Stdout(BufWriter::new(io::stdout())),
            Target::Dir { dir, .. } => {
                let (staged, file) = Staged::create(dir, &self.file_name(partition.index))?;
                Out::File(staged, BufWriter::with_capacity(1 << 16, file))
            }
            // A device or a pipe (`/dev/null`, a FIFO) is written as it is, by every worker:
            // renaming a finished file over it would replace it.
            Target::File(path) if is_special(path) => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| {
                        io_error(format!("could not open {} for writing", path.display()), e)
                    })?;
                Out::Special(path.clone(), BufWriter::with_capacity(1 << 16, file))
            }
            Target::File(path) => {
                let dir = match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                let (staged, file) = Staged::create(dir, &self.file_name(partition.index))?;
                Out::File(staged, BufWriter::with_capacity(1 << 16, file))
            }
        };
        Ok(self.writer(out))
    }

    fn files(&self) -> Option<FileOutput> {
        match &self.target {
            Target::Dir { dir, prefix } => Some(FileOutput {
                dir: dir.clone(),
                prefix: prefix.clone(),
                extension: self.extension().to_string(),
            }),
            Target::File(_) | Target::Stdout => None,
        }
    }

    fn open_file(
        &self,
        _partition: Partition,
        dir: &Path,
        name: &str,
    ) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        let (staged, file) = Staged::create(dir, name)?;
        Ok(self.writer(Out::File(staged, BufWriter::with_capacity(1 << 16, file))))
    }
}

impl<T: Serialize + 'static> LinesSink<T> {
    fn writer(&self, out: Out) -> Box<dyn SinkWriter<T>> {
        Box::new(LinesWriter {
            out: Some(out),
            format: self.format.clone(),
            header: None,
            line: Vec::new(),
            rows: 0,
            undeliverable: Vec::new(),
            _marker: PhantomData,
        })
    }
}

enum Out {
    File(Staged, BufWriter<File>),
    /// A device or pipe, written in place.
    Special(PathBuf, BufWriter<File>),
    Stdout(BufWriter<io::Stdout>),
}

/// Whether `path` exists and is not a regular file (a device, a FIFO): it must be written in
/// place, never replaced.
fn is_special(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

impl Out {
    fn name(&self) -> String {
        match self {
            Out::File(staged, _) => staged.dest().display().to_string(),
            Out::Special(path, _) => path.display().to_string(),
            Out::Stdout(_) => "standard output".to_string(),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Out::File(_, w) | Out::Special(_, w) => w.write_all(bytes),
            Out::Stdout(w) => w.write_all(bytes),
        }
    }
}

struct LinesWriter<T> {
    out: Option<Out>,
    format: Format,
    /// A CSV sink's header, once the first record has set it.
    header: Option<Vec<String>>,
    line: Vec<u8>,
    rows: u64,
    undeliverable: Vec<RecordError>,
    _marker: PhantomData<fn(T)>,
}

impl<T: Serialize + 'static> LinesWriter<T> {
    /// For a CSV sink: the header line to write before `record` (the first), or why `record`
    /// does not fit the header already written.
    fn csv_header(&mut self, record: &T) -> Result<Option<Vec<u8>>, String> {
        let Format::Csv(options) = &self.format else {
            return Ok(None);
        };
        let fields = field_names(record)?;
        match &self.header {
            None => {
                let header = Format::Csv(CsvOptions {
                    delimiter: options.delimiter,
                    ..CsvOptions::default()
                });
                let mut line = Vec::new();
                header.encode(
                    &Value::Array(fields.iter().cloned().map(Value::String).collect()),
                    &mut line,
                )?;
                self.header = Some(fields);
                Ok(Some(line))
            }
            Some(header) if *header == fields => Ok(None),
            Some(header) => Err(format!(
                "its fields ({}) differ from the CSV header ({})",
                fields.join(", "),
                header.join(", ")
            )),
        }
    }
}

/// The top-level field names of a record, in order.
fn field_names<T: Serialize>(record: &T) -> Result<Vec<String>, String> {
    match serde_json::to_value(record).map_err(|e| e.to_string())? {
        Value::Object(object) => Ok(object.keys().cloned().collect()),
        other => Err(format!(
            "a CSV row must be a record with named fields, not {other}"
        )),
    }
}

impl<T: Serialize + 'static> SinkWriter<T> for LinesWriter<T> {
    fn write(&mut self, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        if self.out.is_none() {
            return Err(finished_twice("a lines writer"));
        }
        for (_, record) in batch.drain(..) {
            self.line.clear();
            let encoded = self.csv_header(&record).and_then(|header| {
                if let Some(header) = header {
                    self.line.extend_from_slice(&header);
                    self.line.push(b'\n');
                }
                self.format.encode(&record, &mut self.line)
            });
            let out = self.out.as_mut().expect("checked above");
            if let Err(message) = encoded {
                let raw = serde_json::to_vec(&record).unwrap_or_default();
                self.undeliverable
                    .push(RecordError::new(out.name(), message).with_raw(raw));
                continue;
            }
            self.line.push(b'\n');
            out.write_all(&self.line).map_err(|e| {
                io_error(
                    format!("could not write {}; check free disk space", out.name()),
                    e,
                )
            })?;
            self.rows += 1;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        let Some(out) = self.out.take() else {
            return Err(finished_twice("a lines writer"));
        };
        let name = out.name();
        let flush_error =
            |e: io::Error| io_error(format!("could not write {name}; check free disk space"), e);
        let files = match out {
            Out::Stdout(mut w) => {
                w.flush().map_err(flush_error)?;
                Vec::new()
            }
            Out::Special(_, mut w) => {
                w.flush().map_err(flush_error)?;
                Vec::new()
            }
            Out::File(staged, w) => {
                let file = w.into_inner().map_err(|e| flush_error(e.into_error()))?;
                drop(file);
                vec![staged.commit()?]
            }
        };
        Ok(SinkReport {
            rows: self.rows,
            files,
        })
    }

    fn undeliverable(&mut self) -> Vec<RecordError> {
        std::mem::take(&mut self.undeliverable)
    }
}

/// The `jsonl://` and `csv://` sources.
pub(crate) fn endpoint_source(
    e: &Endpoint,
    o: &EndpointOptions,
) -> Result<DynSource, ConnectorError> {
    let path = file_path(e)?;
    let max_record_size = max_record_size(e)?;
    match e.scheme.as_str() {
        "csv" => {
            e.check_params(&["header", "delimiter", "max_record_size"])?;
            let header = e.parse_param::<bool>("header")?.unwrap_or(true);
            Ok(Box::new(
                CsvSource::new([path], o.event_time.clone())
                    .header(header)
                    .delimiter(delimiter(e)?)
                    .max_record_size(max_record_size),
            ))
        }
        _ => {
            e.check_params(&["max_record_size"])?;
            Ok(Box::new(
                JsonLinesSource::with_event_time([path], o.event_time.clone())
                    .max_record_size(max_record_size),
            ))
        }
    }
}

/// The `jsonl://`, `csv://` and `parquet://` sinks.
pub(crate) fn endpoint_sink(e: &Endpoint, _o: &EndpointOptions) -> Result<DynSink, ConnectorError> {
    let path = file_path(e)?;
    match e.scheme.as_str() {
        "parquet" => {
            e.check_params(&["row_group_size", "prefix"])?;
            if is_stdio(&path) {
                return Err(ConnectorError::user(format!(
                    "{e}: Parquet cannot be written to standard output; name a directory"
                )));
            }
            let prefix = e.param("prefix").unwrap_or("part");
            let rows = e.parse_param::<usize>("row_group_size")?;
            let sink = DynamicParquetSink::new(path, prefix);
            Ok(Box::new(match rows {
                Some(rows) => sink.row_group_size(rows),
                None => sink,
            }))
        }
        "csv" => {
            e.check_params(&["delimiter"])?;
            let format = Format::Csv(CsvOptions {
                delimiter: delimiter(e)?,
                ..CsvOptions::default()
            });
            Ok(Box::new(LinesSink::file(path, format)))
        }
        _ => {
            e.check_params(&[])?;
            Ok(Box::new(LinesSink::file(path, Format::Json)))
        }
    }
}

fn file_path(e: &Endpoint) -> Result<PathBuf, ConnectorError> {
    if e.path.is_empty() {
        return Err(ConnectorError::user(format!(
            "{e}: the URI names no path: write {}:///PATH (or {}:///- for standard input or output)",
            e.scheme, e.scheme
        )));
    }
    Ok(PathBuf::from(&e.path))
}

fn delimiter(e: &Endpoint) -> Result<u8, ConnectorError> {
    match e.param("delimiter") {
        None => Ok(b','),
        Some("tab" | "\\t" | "\t") => Ok(b'\t'),
        Some(d) if d.len() == 1 => Ok(d.as_bytes()[0]),
        Some(d) => Err(ConnectorError::user(format!(
            "{e}: option delimiter={d} must be one character (or 'tab')"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::jsonl::resume_testing::assert_resumes_exactly;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Trip {
        id: u64,
        city: String,
        ts: u64,
    }

    fn read_all<T: DeserializeOwned + Serialize + 'static>(
        source: &dyn Source<T>,
    ) -> (Vec<Record<T>>, Vec<RecordError>) {
        let mut reader = source.open(Partition { index: 0, count: 1 }).unwrap();
        let (mut out, mut rejected) = (Vec::new(), Vec::new());
        while reader.poll(&mut out, 2, &mut rejected).unwrap() != ReadStatus::Done {}
        (out, rejected)
    }

    #[test]
    fn csv_rows_match_fields_by_header_and_bad_rows_are_rejected_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trips.csv");
        std::fs::write(
            &path,
            "ts,id,city\n10,1,Oslo\n20,x,Rome\n30,3,\"Bergen, NO\"\n40,4\n",
        )
        .unwrap();
        let source = CsvSource::<Trip>::new([&path], EventTimeOf::extract(|t: &Trip| Some(t.ts)));
        let (rows, rejected) = read_all(&source);
        assert_eq!(
            rows,
            vec![
                (
                    10,
                    Trip {
                        id: 1,
                        city: "Oslo".into(),
                        ts: 10
                    }
                ),
                (
                    30,
                    Trip {
                        id: 3,
                        city: "Bergen, NO".into(),
                        ts: 30
                    }
                ),
            ]
        );
        let locations: Vec<_> = rejected.iter().map(|r| r.location.clone()).collect();
        let shown = path.display();
        assert_eq!(locations, vec![format!("{shown}:3"), format!("{shown}:5")]);
        assert_eq!(rejected[0].raw, b"20,x,Rome");

        let dynamic = CsvSource::<Value>::new([&path], EventTimeOf::field("ts"));
        let (rows, _) = read_all(&dynamic);
        assert_eq!(
            rows[0].1,
            serde_json::json!({"ts": 10, "id": 1, "city": "Oslo"})
        );
        assert_eq!(rows[1].1["id"], "x", "a dynamic record takes any value");
    }

    #[test]
    fn csv_and_jsonl_files_round_trip_through_the_sink_and_bad_rows_are_undeliverable() {
        let dir = tempfile::tempdir().unwrap();
        for (format, name) in [
            (Format::Csv(CsvOptions::default()), "out.csv"),
            (Format::Json, "out.jsonl"),
        ] {
            let path = dir.path().join(name);
            let sink = LinesSink::<Value>::file(&path, format.clone());
            let mut writer = sink.open(Partition { index: 0, count: 1 }).unwrap();
            let mut batch = vec![
                (1, serde_json::json!({"id": 1, "city": "Oslo"})),
                (2, serde_json::json!({"id": 2, "town": "Rome"})),
                (3, serde_json::json!({"id": 3, "city": "Bergen, NO"})),
            ];
            writer.write(&mut batch).unwrap();
            let failed = writer.undeliverable();
            let report = writer.finish().unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            match format {
                Format::Csv(_) => {
                    assert_eq!(text, "id,city\n1,Oslo\n3,\"Bergen, NO\"\n");
                    assert_eq!(report.rows, 2);
                    assert_eq!(failed.len(), 1);
                    assert!(
                        failed[0].message.contains("differ from the CSV header"),
                        "{}",
                        failed[0]
                    );
                }
                _ => {
                    assert_eq!(text.lines().count(), 3);
                    assert!(failed.is_empty());
                }
            }
        }
        let typed = dir.path().join("typed.csv");
        let sink = LinesSink::<Trip>::file(&typed, Format::Csv(CsvOptions::default()));
        let mut writer = sink.open(Partition { index: 1, count: 2 }).unwrap();
        writer
            .write(&mut vec![(
                5,
                Trip {
                    id: 9,
                    city: "Ulm".into(),
                    ts: 5,
                },
            )])
            .unwrap();
        let report = writer.finish().unwrap();
        assert_eq!(report.files, vec![dir.path().join("typed.csv.1")]);
        let source = CsvSource::<Trip>::new(
            [&report.files[0]],
            EventTimeOf::extract(|t: &Trip| Some(t.ts)),
        );
        assert_eq!(
            read_all(&source).0,
            vec![(
                5,
                Trip {
                    id: 9,
                    city: "Ulm".into(),
                    ts: 5
                }
            )]
        );
    }

    #[test]
    fn a_device_is_written_in_place_never_replaced() {
        let sink = LinesSink::<Value>::file("/dev/null", Format::Json);
        for index in 0..2 {
            let mut writer = sink.open(Partition { index, count: 2 }).unwrap();
            writer
                .write(&mut vec![(1, serde_json::json!({"a": 1}))])
                .unwrap();
            assert_eq!(writer.finish().unwrap().rows, 1);
        }
        let meta = std::fs::metadata("/dev/null").unwrap();
        assert!(!meta.is_file(), "/dev/null is still a device");
        assert!(!Path::new("/dev/null.1").exists());
    }

    #[test]
    fn file_endpoints_check_their_options() {
        let o = EndpointOptions::default();
        let bad: Endpoint = "csv:///tmp/x.csv?delimter=;".parse().unwrap();
        let err = endpoint_sink(&bad, &o).err().unwrap().to_string();
        assert!(err.contains("unknown option 'delimter'"), "{err}");
        let none: Endpoint = "jsonl://".parse().unwrap();
        assert!(endpoint_source(&none, &o).is_err());
        let stdout: Endpoint = "parquet:///-".parse().unwrap();
        assert!(endpoint_sink(&stdout, &o).is_err());
    }
    /// A CSV file of `n` trips (`ts` from `first`): with a header row when `header`, quoted
    /// fields holding the delimiter and a line break, CRLF line ends, and a bad row.
    fn trips_file(path: &Path, header: bool, first: u64, n: u64) {
        let mut text = String::new();
        if header {
            text.push_str("ts,id,city\r\n");
        }
        for i in 0..n {
            let city = match i % 3 {
                0 => "Oslo".to_string(),
                1 => "\"Bergen, NO\"".to_string(),
                _ => format!("\"two\nlines {i}\""),
            };
            text.push_str(&format!("{},{i},{city}\r\n", first + i));
            if i == 3 {
                text.push_str("x,not-a-number,Rome\r\n");
            }
        }
        std::fs::write(path, text).unwrap();
    }

    /// A dynamic trip's time: its `ts` column, or the first one without a header.
    fn dynamic_time(trip: &Value) -> Option<u64> {
        trip.get("ts").or_else(|| trip.get("c0"))?.as_u64()
    }

    #[test]
    fn csv_positions_resume_right_after_the_last_row_at_any_worker_count() {
        let dir = tempfile::tempdir().unwrap();
        for header in [true, false] {
            let paths: Vec<PathBuf> = (0..4)
                .map(|i| dir.path().join(format!("{i}-{header}.csv")))
                .collect();
            for (i, path) in paths.iter().enumerate() {
                trips_file(path, header, i as u64 * 100, 3 + i as u64 * 2);
            }
            let typed =
                CsvSource::<Trip>::new(paths.clone(), EventTimeOf::extract(|t: &Trip| Some(t.ts)))
                    .header(header);
            let dynamic =
                CsvSource::<Value>::new(paths, EventTimeOf::extract(dynamic_time)).header(header);
            if header {
                assert_resumes_exactly(&typed, 12, 2);
                assert_resumes_exactly(&typed, 4, 5);
            }
            assert_resumes_exactly(&dynamic, 12, 2);
        }
    }

    #[test]
    fn a_resumed_csv_file_knows_its_header_and_its_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trips.csv");
        trips_file(&path, true, 0, 8);
        let source = CsvSource::<Trip>::new([&path], EventTimeOf::extract(|t: &Trip| Some(t.ts)));
        let mut reader = source.open(Partition { index: 0, count: 1 }).unwrap();
        let (mut out, mut rejected) = (Vec::new(), Vec::new());
        reader.poll(&mut out, 3, &mut rejected).unwrap();
        let position: Value = serde_json::from_slice(&reader.position().unwrap()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // The header, "0,0,Oslo", "1,1,Bergen", "2,2,two\nlines 2": four records, the last
        // ending with the fourth CRLF, on line 5.
        let end = text.match_indices("\r\n").nth(3).unwrap().0;
        let file = &position["files"][0];
        assert_eq!(file["file"], 0);
        assert_eq!(file["path"], path.display().to_string());
        assert_eq!(file["byte"], end + 2, "{position}");
        assert_eq!(file["line"], 5, "{position}");
        let positions = SourcePositions {
            workers: 1,
            positions: vec![(0, serde_json::to_vec(&position).unwrap())],
        };
        let mut reader = source
            .open_at(Partition { index: 0, count: 1 }, &positions)
            .unwrap();
        let (mut rest, mut rejected) = (Vec::new(), Vec::new());
        while reader.poll(&mut rest, 10, &mut rejected).unwrap() != ReadStatus::Done {}
        let ids: Vec<u64> = rest.iter().map(|(_, t)| t.id).collect();
        assert_eq!(ids, vec![3, 4, 5, 6, 7], "columns matched by the header");
        assert_eq!(rest[2].1.city, "two\nlines 5");
        // The bad row keeps the line number an uninterrupted read gives it.
        let (_, whole) = read_all(&source);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].location, whole[0].location);
    }

    /// A CSV file of `n` rows `i,name-i,i` under the header `id,name,n`, with row `i` replaced
    /// by `bad(i)` where it says.
    fn rows_file(path: &Path, n: u64, bad: impl Fn(u64) -> Option<String>) {
        let mut text = String::from("id,name,n\n");
        for i in 0..n {
            let row = bad(i).unwrap_or_else(|| format!("{i},name-{i},{i}"));
            text.push_str(&row);
            text.push('\n');
        }
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn an_unterminated_quote_rejects_its_line_alone_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quote.csv");
        rows_file(&path, 1000, |i| {
            (i == 10).then(|| "10,\"unterminated,5".to_string())
        });
        let source = CsvSource::<Value>::new([&path], EventTimeOf::field("n"));
        let (rows, rejected) = read_all(&source);
        assert_eq!(rows.len(), 999);
        assert!(rows
            .iter()
            .all(|(_, r)| r["name"].as_str().unwrap().len() < 10));
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].location, format!("{}:12", path.display()));
        assert_eq!(rejected[0].raw, b"10,\"unterminated,5");
        assert!(
            rejected[0]
                .message
                .contains("does not close before the end of the input"),
            "{}",
            rejected[0]
        );

        // A quote that stays open past max_record_size: the same, before the input ends.
        let source = CsvSource::<Value>::new([&path], EventTimeOf::field("n")).max_record_size(64);
        let (rows, rejected) = read_all(&source);
        assert_eq!((rows.len(), rejected.len()), (999, 1));
        assert!(
            rejected[0]
                .message
                .contains("within max_record_size (64 bytes)"),
            "{}",
            rejected[0]
        );
    }

    #[test]
    fn quoted_line_breaks_still_join_lines_and_long_records_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.csv");
        rows_file(&path, 6, |i| match i {
            1 => Some("1,\"two\r\nlines, \"\"quoted\"\"\",1".to_string()),
            3 => Some(format!("3,{},3", "x".repeat(100))),
            // 51 bytes over two lines: read whole (within the limit and a line break), then
            // rejected.
            4 => Some(format!("4,\"{}\n{}\",4", "y".repeat(20), "z".repeat(24))),
            _ => None,
        });
        let source = CsvSource::<Value>::new([&path], EventTimeOf::field("n")).max_record_size(50);
        let (rows, rejected) = read_all(&source);
        let ids: Vec<i64> = rows
            .iter()
            .map(|(_, r)| r["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, vec![0, 1, 2, 5]);
        assert_eq!(rows[1].1["name"], "two\r\nlines, \"quoted\"");
        let shown = path.display();
        let located: Vec<_> = rejected.iter().map(|r| r.location.clone()).collect();
        assert_eq!(located, vec![format!("{shown}:6"), format!("{shown}:7")]);
        assert!(
            rejected[0]
                .message
                .contains("the record is 104 bytes, over the limit of 50"),
            "{}",
            rejected[0]
        );
        assert!(
            rejected[1].message.contains("the record is 51 bytes"),
            "{}",
            rejected[1]
        );
        assert_eq!(
            rejected[1].raw.len(),
            51,
            "a record within the kept length is kept whole"
        );
    }

    #[test]
    fn ragged_rows_are_rejected_not_padded_nor_given_invented_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ragged.csv");
        rows_file(&path, 4, |i| match i {
            1 => Some("1,name-1,1,extra,more".to_string()),
            2 => Some("2,name-2".to_string()),
            _ => None,
        });
        let source = CsvSource::<Value>::new([&path], EventTimeOf::field("n"));
        let (rows, rejected) = read_all(&source);
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|(_, r)| r.as_object().unwrap().len() == 3));
        let messages: Vec<_> = rejected.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(messages.len(), 2);
        assert!(
            messages[0]
                .starts_with("this row has 5 fields, but the header has 3 columns (id,name,n)"),
            "{messages:?}"
        );
        assert!(
            messages[1].starts_with("this row has 2 fields"),
            "{messages:?}"
        );
        assert_eq!(rejected[1].raw, b"2,name-2");
    }

    #[test]
    fn without_a_header_every_row_needs_as_many_fields_as_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("headless.csv");
        std::fs::write(&path, "0,a,10\n1,b,11,extra\n2,c\n3,d,13\n").unwrap();
        let source = CsvSource::<Value>::new([&path], EventTimeOf::Arrival).header(false);
        let (rows, rejected) = read_all(&source);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows.iter().all(|(_, r)| r.as_object().unwrap().len() == 3));
        let messages: Vec<_> = rejected.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].starts_with("this row has 4 fields, but the file's first row has 3"),
            "{messages:?}"
        );
        assert!(
            messages[1].starts_with("this row has 2 fields"),
            "{messages:?}"
        );
    }

    #[test]
    fn rejected_records_keep_positions_exact_for_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..3)
            .map(|i| dir.path().join(format!("{i}.csv")))
            .collect();
        for (f, path) in paths.iter().enumerate() {
            rows_file(path, 9 + f as u64, |i| match i % 4 {
                1 => Some(format!("{i},{},{i}", "x".repeat(80))),
                2 if i == 2 => Some(format!("{i},\"open,{i}")),
                3 => Some(format!("{i},\"a\nb\",{i}")),
                _ => None,
            });
        }
        let source = CsvSource::<Value>::new(paths, EventTimeOf::field("n")).max_record_size(64);
        assert_resumes_exactly(&source, 10, 2);
    }

    #[test]
    fn csv_from_standard_input_cannot_be_checkpointed() {
        let source = CsvSource::<Value>::new(["-"], EventTimeOf::field("ts"));
        let reader = source.open(Partition { index: 0, count: 1 }).unwrap();
        assert_eq!(reader.position(), None);
        let Err(error) = source.open_at(
            Partition { index: 0, count: 1 },
            &SourcePositions::default(),
        ) else {
            panic!("standard input cannot resume");
        };
        assert!(
            error.what.contains("standard input (-) cannot be resumed"),
            "{error}"
        );
    }
}
