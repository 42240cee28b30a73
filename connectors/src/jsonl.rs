//! JSON lines: a source reading one JSON object per line, and a sink writing them.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use eddy_engine::{
    ConnectorError, Partition, ReadStatus, Record, RecordError, Sink, SinkReport, SinkWriter,
    Source, SourceReader,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::staged::{finished_twice, io_error, Staged};

/// A source of JSON lines files: each non-blank line is a JSON object holding its event time
/// in a named top-level field, as an integer of milliseconds since the Unix epoch (strings,
/// RFC 3339 or otherwise, are not accepted), and deserialized into `T`.
///
/// File `i` is read by worker `i % count`. A line that is not valid JSON, lacks the time field
/// or does not fit `T` is rejected (reported with its `path:line`) and the run goes on.
#[derive(Debug)]
pub struct JsonLinesSource<T> {
    paths: Vec<PathBuf>,
    time_field: String,
    _marker: PhantomData<fn() -> T>,
}

impl<T> JsonLinesSource<T> {
    /// Reads `paths`, taking each record's event time from the field `time_field`.
    pub fn new(paths: impl IntoIterator<Item = impl Into<PathBuf>>, time_field: &str) -> Self {
        JsonLinesSource {
            paths: paths.into_iter().map(Into::into).collect(),
            time_field: time_field.to_string(),
            _marker: PhantomData,
        }
    }

    /// The files read.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

impl<T: DeserializeOwned + 'static> Source<T> for JsonLinesSource<T> {
    fn describe(&self) -> String {
        match self.paths.as_slice() {
            [one] => format!("jsonl({})", one.display()),
            paths => format!("jsonl({} files)", paths.len()),
        }
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        let count = partition.count.max(1);
        let mine: Vec<PathBuf> = self
            .paths
            .iter()
            .enumerate()
            .filter(|(i, _)| i % count == partition.index)
            .map(|(_, p)| p.clone())
            .collect();
        // Fail early, before the run starts, on a file that is not there.
        for path in &mine {
            check_readable(path)?;
        }
        Ok(Box::new(JsonLinesReader {
            pending: mine.into_iter(),
            current: None,
            time_field: self.time_field.clone(),
            line: Vec::new(),
            _marker: PhantomData,
        }))
    }
}

fn check_readable(path: &Path) -> Result<(), ConnectorError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(ConnectorError::user(format!(
            "{} is a directory, not a JSON lines file; check --input",
            path.display()
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(open_error(path, e)),
    }
}

fn open_error(path: &Path, e: io::Error) -> ConnectorError {
    match e.kind() {
        io::ErrorKind::NotFound => {
            ConnectorError::user(format!("no such file: {}; check --input", path.display()))
                .caused_by(e)
        }
        io::ErrorKind::PermissionDenied => ConnectorError::user(format!(
            "permission denied reading {}; check the file's permissions",
            path.display()
        ))
        .caused_by(e),
        _ => io_error(format!("could not open {}", path.display()), e),
    }
}

struct OpenFile {
    path: PathBuf,
    reader: BufReader<File>,
    line: u64,
}

struct JsonLinesReader<T> {
    pending: std::vec::IntoIter<PathBuf>,
    current: Option<OpenFile>,
    time_field: String,
    /// The line being parsed (reused).
    line: Vec<u8>,
    _marker: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> JsonLinesReader<T> {
    /// Parses one line into a record; `Err` is why it is rejected.
    fn parse(&self, line: &[u8]) -> Result<Record<T>, String> {
        let value: Value =
            serde_json::from_slice(line).map_err(|e| format!("not valid JSON: {e}"))?;
        let Value::Object(object) = &value else {
            return Err(format!("expected a JSON object, found {}", kind(&value)));
        };
        let time = match object.get(&self.time_field) {
            None => return Err(format!("missing the time field '{}'", self.time_field)),
            Some(t) => t.as_u64().ok_or_else(|| {
                format!(
                    "the time field '{}' must be an integer of milliseconds since the Unix epoch, found {t}",
                    self.time_field
                )
            })?,
        };
        let data = T::deserialize(value)
            .map_err(|e| format!("does not fit {}: {e}", std::any::type_name::<T>()))?;
        Ok((time, data))
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<T: DeserializeOwned> SourceReader<T> for JsonLinesReader<T> {
    fn poll(
        &mut self,
        out: &mut Vec<Record<T>>,
        max: usize,
        rejected: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError> {
        let before = out.len();
        let mut lines = 0;
        while lines < max {
            let Some(file) = self.current.as_mut() else {
                match self.pending.next() {
                    Some(path) => {
                        let f = File::open(&path).map_err(|e| open_error(&path, e))?;
                        self.current = Some(OpenFile {
                            path,
                            reader: BufReader::with_capacity(1 << 16, f),
                            line: 0,
                        });
                        continue;
                    }
                    None => break,
                }
            };
            self.line.clear();
            let n = file.reader.read_until(b'\n', &mut self.line).map_err(|e| {
                io_error(
                    format!(
                        "could not read {} after line {}",
                        file.path.display(),
                        file.line
                    ),
                    e,
                )
            })?;
            if n == 0 {
                self.current = None;
                continue;
            }
            file.line += 1;
            lines += 1;
            let text = self.line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            match self.parse(text) {
                Ok(record) => out.push(record),
                Err(message) => {
                    let location = match &self.current {
                        Some(f) => format!("{}:{}", f.path.display(), f.line),
                        None => String::new(),
                    };
                    rejected.push(RecordError::new(location, message).with_raw(text));
                }
            }
        }
        let exhausted = self.current.is_none() && self.pending.as_slice().is_empty();
        if exhausted && out.len() == before {
            Ok(ReadStatus::Done)
        } else {
            Ok(ReadStatus::Ready)
        }
    }
}

/// A sink writing each worker's records as JSON lines to `{dir}/{prefix}-{worker:05}.jsonl`:
/// one JSON object per line (the data only, not the event time). The file is written under a
/// temporary name and renamed into place when the writer finishes, so a reader never sees half
/// a file. The directory is created if missing.
#[derive(Debug)]
pub struct JsonLinesSink<T> {
    dir: PathBuf,
    prefix: String,
    _marker: PhantomData<fn(T)>,
}

impl<T> JsonLinesSink<T> {
    /// Writes into `dir`, naming files `{prefix}-{worker:05}.jsonl`.
    pub fn new(dir: impl Into<PathBuf>, prefix: &str) -> Self {
        JsonLinesSink {
            dir: dir.into(),
            prefix: prefix.to_string(),
            _marker: PhantomData,
        }
    }

    /// The file worker `index` writes.
    pub fn file_name(&self, index: usize) -> String {
        format!("{}-{index:05}.jsonl", self.prefix)
    }
}

impl<T: Serialize + 'static> Sink<T> for JsonLinesSink<T> {
    fn describe(&self) -> String {
        format!("jsonl({}/{}-*.jsonl)", self.dir.display(), self.prefix)
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        let (staged, file) = Staged::create(&self.dir, &self.file_name(partition.index))?;
        Ok(Box::new(JsonLinesWriter {
            out: Some((staged, BufWriter::with_capacity(1 << 16, file))),
            rows: 0,
            _marker: PhantomData,
        }))
    }
}

struct JsonLinesWriter<T> {
    out: Option<(Staged, BufWriter<File>)>,
    rows: u64,
    _marker: PhantomData<fn(T)>,
}

impl<T: Serialize> SinkWriter<T> for JsonLinesWriter<T> {
    fn write(&mut self, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        let Some((staged, w)) = self.out.as_mut() else {
            return Err(finished_twice("a JSON lines writer"));
        };
        for (_, data) in batch.iter() {
            serde_json::to_writer(&mut *w, data).map_err(|e| {
                if e.is_io() {
                    io_error(
                        format!(
                            "could not write {}; check free disk space",
                            staged.dest().display()
                        ),
                        e.into(),
                    )
                } else {
                    ConnectorError::user(format!(
                        "a {} cannot be written as JSON to {}: {e}",
                        std::any::type_name::<T>(),
                        staged.dest().display()
                    ))
                }
            })?;
            w.write_all(b"\n").map_err(|e| {
                io_error(
                    format!(
                        "could not write {}; check free disk space",
                        staged.dest().display()
                    ),
                    e,
                )
            })?;
        }
        self.rows += batch.len() as u64;
        batch.clear();
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        let Some((staged, w)) = self.out.take() else {
            return Err(finished_twice("a JSON lines writer"));
        };
        let file = w.into_inner().map_err(|e| {
            io_error(
                format!(
                    "could not write {}; check free disk space",
                    staged.dest().display()
                ),
                e.into_error(),
            )
        })?;
        drop(file);
        let path = staged.commit()?;
        Ok(SinkReport {
            rows: self.rows,
            files: vec![path],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Click {
        ts: u64,
        user: String,
        n: u32,
    }

    fn read_all<T: DeserializeOwned + 'static>(
        source: &JsonLinesSource<T>,
        partition: Partition,
    ) -> (Vec<Record<T>>, Vec<RecordError>) {
        let mut reader = source.open(partition).unwrap();
        let (mut out, mut rejected) = (Vec::new(), Vec::new());
        while reader.poll(&mut out, 2, &mut rejected).unwrap() != ReadStatus::Done {}
        (out, rejected)
    }

    #[test]
    fn reads_good_lines_and_rejects_bad_ones_with_locations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clicks.jsonl");
        std::fs::write(
            &path,
            concat!(
                "{\"ts\": 1000, \"user\": \"ann\", \"n\": 1}\n",
                "\n",
                "{\"ts\": 2000, \"user\": \"bob\", \"n\": 2\n",
                "{\"user\": \"cy\", \"n\": 3}\n",
                "{\"ts\": 3000, \"user\": \"dee\", \"n\": 4}",
            ),
        )
        .unwrap();
        let source = JsonLinesSource::<Click>::new([&path], "ts");
        let (records, rejected) = read_all(&source, Partition { index: 0, count: 1 });
        let users: Vec<(u64, &str)> = records.iter().map(|(t, c)| (*t, c.user.as_str())).collect();
        assert_eq!(users, vec![(1000, "ann"), (3000, "dee")]);
        assert_eq!(rejected.len(), 2);
        let shown = path.display().to_string();
        assert_eq!(rejected[0].location, format!("{shown}:3"));
        assert!(
            rejected[0].message.contains("not valid JSON"),
            "{}",
            rejected[0]
        );
        assert_eq!(rejected[1].location, format!("{shown}:4"));
        assert!(rejected[1].message.contains("missing the time field 'ts'"));
    }

    #[test]
    fn rejects_wrong_types_and_non_integer_times() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        std::fs::write(
            &path,
            "{\"ts\": \"2024-01-01\", \"user\": \"a\", \"n\": 1}\n{\"ts\": 5, \"user\": 7, \"n\": 1}\n[1]\n",
        )
        .unwrap();
        let source = JsonLinesSource::<Click>::new([&path], "ts");
        let (records, rejected) = read_all(&source, Partition { index: 0, count: 1 });
        assert!(records.is_empty());
        assert_eq!(rejected.len(), 3);
        assert!(rejected[0].message.contains("must be an integer"));
        assert!(rejected[1].message.contains("does not fit"));
        assert!(rejected[2].message.contains("expected a JSON object"));
    }

    #[test]
    fn files_are_dealt_to_workers_and_missing_files_are_user_errors() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..3)
            .map(|i| dir.path().join(format!("{i}.jsonl")))
            .collect();
        for (i, p) in paths.iter().enumerate() {
            std::fs::write(
                p,
                format!("{{\"ts\": {i}, \"user\": \"u{i}\", \"n\": 0}}\n"),
            )
            .unwrap();
        }
        let source = JsonLinesSource::<Click>::new(paths.clone(), "ts");
        let (w0, _) = read_all(&source, Partition { index: 0, count: 2 });
        let (w1, _) = read_all(&source, Partition { index: 1, count: 2 });
        assert_eq!(w0.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(w1.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1]);

        let missing = dir.path().join("nope.jsonl");
        let source = JsonLinesSource::<Click>::new([&missing], "ts");
        let Err(error) = source.open(Partition { index: 0, count: 1 }) else {
            panic!("a missing file must fail");
        };
        assert_eq!(error.fault, eddy_engine::Fault::User);
        assert!(error.what.contains("no such file"), "{error}");
        assert!(error.what.contains("nope.jsonl"), "{error}");
    }

    #[test]
    fn sink_round_trips_through_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let sink = JsonLinesSink::<Click>::new(&out, "clicks");
        let mut writer = sink.open(Partition { index: 1, count: 2 }).unwrap();
        let clicks: Vec<Record<Click>> = (0..5)
            .map(|i| {
                let c = Click {
                    ts: i * 10,
                    user: format!("u{i}"),
                    n: i as u32,
                };
                (c.ts, c)
            })
            .collect();
        let mut batch = clicks.clone();
        writer.write(&mut batch).unwrap();
        let report = writer.finish().unwrap();
        let file = out.join("clicks-00001.jsonl");
        assert_eq!(
            report,
            SinkReport {
                rows: 5,
                files: vec![file.clone()]
            }
        );
        let names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["clicks-00001.jsonl".to_string()],
            "no .tmp left"
        );

        let source = JsonLinesSource::<Click>::new([&file], "ts");
        let (back, rejected) = read_all(&source, Partition { index: 0, count: 1 });
        assert!(rejected.is_empty());
        assert_eq!(back, clicks);
    }

    #[test]
    fn unfinished_sink_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let sink = JsonLinesSink::<Click>::new(dir.path(), "x");
        let writer = sink.open(Partition { index: 0, count: 1 }).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(writer);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
