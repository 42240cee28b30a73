//! JSON lines: a source reading one JSON object per line (the sink is
//! [`LinesSink`](crate::files::LinesSink), whose default format is JSON lines).

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use eddy_engine::{
    wall_clock_ms, ConnectorError, Partition, ReadStatus, Record, RecordError, Source, SourceReader,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::event_time::{time_value, EventTimeOf};
use crate::staged::io_error;

/// A source of JSON lines files: each non-blank line is a JSON object, deserialized into `T`,
/// with its event time from a named top-level field (integer milliseconds since the Unix epoch
/// or an RFC 3339 string) or as [`EventTimeOf`] says. The path `-` reads standard input.
///
/// File `i` is read by worker `i % count`. A line that is not valid JSON, lacks the time field
/// or does not fit `T` is rejected (reported with its `path:line` and its bytes) and the run
/// goes on.
#[derive(Debug)]
pub struct JsonLinesSource<T> {
    paths: Vec<PathBuf>,
    event_time: EventTimeOf<T>,
    _marker: PhantomData<fn() -> T>,
}

impl<T> JsonLinesSource<T> {
    /// Reads `paths`, taking each record's event time from the field `time_field`.
    pub fn new(paths: impl IntoIterator<Item = impl Into<PathBuf>>, time_field: &str) -> Self {
        Self::with_event_time(paths, EventTimeOf::Field(time_field.to_string()))
    }

    /// Reads `paths`, taking each record's event time as `event_time` says.
    pub fn with_event_time(
        paths: impl IntoIterator<Item = impl Into<PathBuf>>,
        event_time: EventTimeOf<T>,
    ) -> Self {
        JsonLinesSource {
            paths: paths.into_iter().map(Into::into).collect(),
            event_time,
            _marker: PhantomData,
        }
    }

    /// The files read.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

impl<T: DeserializeOwned + Serialize + 'static> Source<T> for JsonLinesSource<T> {
    fn describe(&self) -> String {
        describe_files("jsonl", &self.paths)
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        let mine = files_of(&self.paths, partition)?;
        Ok(Box::new(JsonLinesReader {
            pending: mine.into_iter(),
            current: None,
            event_time: self.event_time.clone(),
            line: Vec::new(),
            _marker: PhantomData,
        }))
    }
}

/// `kind(path)`, or `kind(N files)`: a file source's description.
pub(crate) fn describe_files(kind: &str, paths: &[PathBuf]) -> String {
    match paths {
        [one] => format!("{kind}({})", one.display()),
        paths => format!("{kind}({} files)", paths.len()),
    }
}

/// The files worker `partition` reads: file `i` goes to worker `i % count`. Fails early, before
/// the run starts, on a file that is not there.
pub(crate) fn files_of(
    paths: &[PathBuf],
    partition: Partition,
) -> Result<Vec<PathBuf>, ConnectorError> {
    let count = partition.count.max(1);
    let mine: Vec<PathBuf> = paths
        .iter()
        .enumerate()
        .filter(|(i, _)| i % count == partition.index)
        .map(|(_, p)| p.clone())
        .collect();
    for path in &mine {
        check_readable(path)?;
    }
    Ok(mine)
}

/// Fails, with a message saying what to fix, when `path` is not a readable file (`-` is
/// standard input).
pub(crate) fn check_readable(path: &Path) -> Result<(), ConnectorError> {
    if is_stdio(path) {
        return Ok(());
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(ConnectorError::user(format!(
            "{} is a directory, not a file to read; check the path",
            path.display()
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(open_error(path, e)),
    }
}

/// Whether `path` is `-`: standard input or output.
pub(crate) fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Opens `path` for reading, buffered (`-`: standard input).
pub(crate) fn open_input(path: &Path) -> Result<Box<dyn BufRead>, ConnectorError> {
    if is_stdio(path) {
        return Ok(Box::new(BufReader::with_capacity(1 << 16, io::stdin())));
    }
    let file = File::open(path).map_err(|e| open_error(path, e))?;
    Ok(Box::new(BufReader::with_capacity(1 << 16, file)))
}

fn open_error(path: &Path, e: io::Error) -> ConnectorError {
    match e.kind() {
        io::ErrorKind::NotFound => {
            ConnectorError::user(format!("no such file: {}; check the path", path.display()))
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
    reader: Box<dyn BufRead>,
    line: u64,
}

struct JsonLinesReader<T> {
    pending: std::vec::IntoIter<PathBuf>,
    current: Option<OpenFile>,
    event_time: EventTimeOf<T>,
    /// The line being parsed (reused).
    line: Vec<u8>,
    _marker: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned + Serialize + 'static> JsonLinesReader<T> {
    /// Parses one line into a record; `Err` is why it is rejected.
    fn parse(&self, line: &[u8]) -> Result<Record<T>, String> {
        let value: Value =
            serde_json::from_slice(line).map_err(|e| format!("not valid JSON: {e}"))?;
        let Value::Object(object) = &value else {
            return Err(format!("expected a JSON object, found {}", kind(&value)));
        };
        let field_time = match &self.event_time {
            // The common case, read from the parsed object before it becomes a `T`.
            EventTimeOf::Field(name) => Some(match object.get(name) {
                None => return Err(format!("missing the time field '{name}'")),
                Some(t) => time_value(t).ok_or_else(|| {
                    format!(
                        "the time field '{name}' must be integer milliseconds since the Unix \
                         epoch or an RFC 3339 string, found {t}"
                    )
                })?,
            }),
            _ => None,
        };
        let data = T::deserialize(value)
            .map_err(|e| format!("does not fit {}: {e}", std::any::type_name::<T>()))?;
        let time = match field_time {
            Some(time) => time,
            None => self.event_time.of(&data, None, wall_clock_ms())?,
        };
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

impl<T: DeserializeOwned + Serialize + 'static> SourceReader<T> for JsonLinesReader<T> {
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
                        let reader = open_input(&path)?;
                        self.current = Some(OpenFile {
                            path,
                            reader,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::JsonLinesSink;
    use eddy_engine::{Sink, SinkReport};
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Click {
        ts: u64,
        user: String,
        n: u32,
    }

    fn read_all<T: DeserializeOwned + Serialize + 'static>(
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
        assert!(rejected[0].message.contains("must be integer milliseconds"));
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
