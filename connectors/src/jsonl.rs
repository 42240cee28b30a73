//! JSON lines: a source reading one JSON object per line (the sink is
//! [`LinesSink`](crate::files::LinesSink), whose default format is JSON lines).
//!
//! **Checkpoints.** The file sources (this one and [`CsvSource`](crate::files::CsvSource))
//! resume where they were: a reader's position lists each of its files with whether it is read
//! to the end and the byte offset (and line number) of its next record, so a resumed reader
//! seeks straight there. At another worker count, file `i` goes to worker `i % count` as in a
//! fresh run, and resumes from the old position that lists it; a file no old position lists
//! belonged to an old reader that had finished, so it is done. Standard input (`-`) cannot be
//! resumed: a run with checkpoints reading it refuses to start.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use eddy_engine::{
    wall_clock_ms, ConnectorError, Partition, ReadStatus, Record, RecordError, Source,
    SourcePositions, SourceReader,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event_time::{time_value, EventTimeOf};
use crate::lines::{
    oversized, without_break, LineEnd, Lines, DEFAULT_MAX_RECORD_SIZE, KEPT_OF_OVERSIZED,
};
use crate::staged::io_error;

/// A source of JSON lines files: each non-blank line is a JSON object, deserialized into `T`,
/// with its event time from a named top-level field (integer milliseconds since the Unix epoch
/// or an RFC 3339 string) or as [`EventTimeOf`] says. The path `-` reads standard input.
///
/// File `i` is read by worker `i % count`. A line that is not valid JSON, lacks the time field,
/// does not fit `T` or is longer than [`max_record_size`](Self::max_record_size) is rejected
/// (reported with its `path:line` and its bytes) and the run goes on at the next line. Runs with checkpoints resume at the byte offset of the next line (see the module
/// docs).
#[derive(Debug)]
pub struct JsonLinesSource<T> {
    paths: Vec<PathBuf>,
    event_time: EventTimeOf<T>,
    max_record_size: usize,
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
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            _marker: PhantomData,
        }
    }

    /// The longest line taken, in bytes without its line break (default
    /// [`DEFAULT_MAX_RECORD_SIZE`], 1 MiB); a longer one is rejected, without ever being held
    /// in memory whole, and reading goes on at the next line.
    pub fn max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = bytes;
        self
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
        let files = FileQueue::fresh(&self.paths, partition)?;
        Ok(Box::new(self.reader(files)))
    }

    /// Reopens this worker's files (file `i` for worker `i % count`) where the old readers'
    /// positions say (see the module docs).
    fn open_at(
        &self,
        partition: Partition,
        positions: &SourcePositions,
    ) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        let files = FileQueue::resumed(&self.describe(), &self.paths, partition, positions)?;
        Ok(Box::new(self.reader(files)))
    }
}

impl<T> JsonLinesSource<T> {
    fn reader(&self, files: FileQueue) -> JsonLinesReader<T> {
        JsonLinesReader {
            files,
            current: None,
            event_time: self.event_time.clone(),
            max_record_size: self.max_record_size,
            line: Vec::new(),
            _marker: PhantomData,
        }
    }
}

/// `kind(path)`, or `kind(N files)`: a file source's description.
pub(crate) fn describe_files(kind: &str, paths: &[PathBuf]) -> String {
    match paths {
        [one] => format!("{kind}({})", one.display()),
        paths => format!("{kind}({} files)", paths.len()),
    }
}

/// The indices of the files worker `partition` reads: file `i` goes to worker `i % count`.
fn indices_of(files: usize, partition: Partition) -> impl Iterator<Item = usize> {
    let count = partition.count.max(1);
    (0..files).filter(move |i| i % count == partition.index)
}

/// How far a file source's reader has read one of its files: an entry of its checkpoint
/// position, `{"files": [FileAt, ...]}` as JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileAt {
    /// The file's index among the source's paths (its worker is `file % count`).
    pub file: usize,
    /// Its path, to check that a run resumes reading the same files.
    pub path: String,
    /// Whether it is read to the end.
    #[serde(default, skip_serializing_if = "is_false")]
    pub done: bool,
    /// Where its next record starts, when not done (all zero: not started).
    #[serde(flatten)]
    pub next: Offset,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where a record starts in a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Offset {
    /// Its byte offset.
    #[serde(default)]
    pub byte: u64,
    /// The lines before it (so that rejected records keep their line numbers).
    #[serde(default)]
    pub line: u64,
}

/// A file source reader's checkpoint position.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct FilesPosition {
    files: Vec<FileAt>,
}

/// One reader's files, in the order it reads them, with how far each is read: what the file
/// sources' readers save as their positions and resume from.
#[derive(Debug)]
pub(crate) struct FileQueue {
    paths: Vec<PathBuf>,
    at: Vec<FileAt>,
    /// The file being read, or the next one to open: the files before it are done.
    next: usize,
}

impl FileQueue {
    /// The files worker `partition` reads in a fresh run (file `i` goes to worker
    /// `i % count`), each from its start. Fails early, before the run starts, on a file that
    /// is not there.
    pub(crate) fn fresh(paths: &[PathBuf], partition: Partition) -> Result<Self, ConnectorError> {
        let mut queue = FileQueue {
            paths: Vec::new(),
            at: Vec::new(),
            next: 0,
        };
        for i in indices_of(paths.len(), partition) {
            check_readable(&paths[i])?;
            queue.push(i, &paths[i], FileAt::default());
        }
        Ok(queue)
    }

    /// The files worker `partition` reads when the run resumes from `positions` (`what`: the
    /// source, for messages): the same files as a fresh run's, each from where the old reader
    /// that had it (at the old worker count: `i % old count`) was. A file that no position
    /// lists, of an old reader that reported none, is done.
    pub(crate) fn resumed(
        what: &str,
        paths: &[PathBuf],
        partition: Partition,
        positions: &SourcePositions,
    ) -> Result<Self, ConnectorError> {
        let old_count = positions.workers.max(1);
        let mut listed: BTreeMap<usize, FileAt> = BTreeMap::new();
        let mut reported = BTreeSet::new();
        for (old, bytes) in &positions.positions {
            let position: FilesPosition = serde_json::from_slice(bytes).map_err(|e| {
                ConnectorError::user(format!(
                    "{what}: a checkpoint position does not decode ({e}); was the checkpoint \
                     written by another source? Use a new --checkpoint-dir"
                ))
            })?;
            reported.insert(*old);
            for at in position.files {
                match paths.get(at.file) {
                    Some(path) if path.to_string_lossy() == at.path => {}
                    now => {
                        let now = now.map_or_else(
                            || format!("only {} files", paths.len()),
                            |p| p.display().to_string(),
                        );
                        return Err(ConnectorError::user(format!(
                            "{what}: the checkpoint was taken reading {} as file {} of the \
                             source, but this run reads {now} there; resume with the same \
                             input files in the same order, or use a new --checkpoint-dir",
                            at.path,
                            at.file + 1
                        )));
                    }
                }
                listed.insert(at.file, at);
            }
        }
        let mut queue = FileQueue {
            paths: Vec::new(),
            at: Vec::new(),
            next: 0,
        };
        for i in indices_of(paths.len(), partition) {
            let path = &paths[i];
            if is_stdio(path) {
                return Err(stdin_cannot_resume(what));
            }
            let at = match listed.remove(&i) {
                Some(at) => at,
                None if reported.contains(&(i % old_count)) => {
                    return Err(ConnectorError::user(format!(
                        "{what}: the checkpoint's positions do not name {} (file {} of the \
                         source); was the checkpoint written reading other files? Use a new \
                         --checkpoint-dir",
                        path.display(),
                        i + 1
                    )))
                }
                // Its old reader had read all its files.
                None => FileAt {
                    done: true,
                    ..FileAt::default()
                },
            };
            if !at.done {
                check_readable(path)?;
                let len = std::fs::metadata(path)
                    .map_err(|e| open_error(path, e))?
                    .len();
                if len < at.next.byte {
                    return Err(ConnectorError::user(format!(
                        "{what}: {} has {len} bytes, but the checkpoint had read it to byte {}: \
                         the file changed since; restore it, or use a new --checkpoint-dir",
                        path.display(),
                        at.next.byte
                    )));
                }
            }
            queue.push(i, path, at);
        }
        // The files done come first: `next` is the first one not done.
        let (done, rest): (Vec<_>, Vec<_>) = queue
            .paths
            .into_iter()
            .zip(queue.at)
            .partition(|(_, at)| at.done);
        queue.next = done.len();
        (queue.paths, queue.at) = done.into_iter().chain(rest).unzip();
        Ok(queue)
    }

    fn push(&mut self, file: usize, path: &Path, at: FileAt) {
        self.paths.push(path.to_path_buf());
        self.at.push(FileAt {
            file,
            path: path.to_string_lossy().into_owned(),
            ..at
        });
    }

    /// The file being read or to be opened next, and where its next record starts (when it
    /// is opened: where to start); `None` once every file is done.
    pub(crate) fn current(&self) -> Option<(&Path, Offset)> {
        let at = self.at.get(self.next)?;
        Some((&self.paths[self.next], at.next))
    }

    /// Marks the current file read to the end: the next one becomes current.
    pub(crate) fn finish_current(&mut self) {
        if let Some(at) = self.at.get_mut(self.next) {
            at.done = true;
            at.next = Offset::default();
            self.next += 1;
        }
    }

    /// Whether every file is done.
    pub(crate) fn is_done(&self) -> bool {
        self.next >= self.at.len()
    }

    /// The checkpoint position: every file, the current one at `reading` (where its next
    /// record starts) when it is open. `None` when a file is standard input, which cannot be
    /// resumed.
    pub(crate) fn position(&self, reading: Option<Offset>) -> Option<Vec<u8>> {
        if self.paths.iter().any(|p| is_stdio(p)) {
            return None;
        }
        let mut files = self.at.clone();
        if let (Some(at), Some(offset)) = (files.get_mut(self.next), reading) {
            at.next = offset;
        }
        Some(serde_json::to_vec(&FilesPosition { files }).expect("positions serialize"))
    }
}

/// The error of a resumed file source asked to read standard input.
fn stdin_cannot_resume(what: &str) -> ConnectorError {
    ConnectorError::user(format!(
        "{what}: standard input (-) cannot be resumed from a checkpoint; read a file, or run \
         without --checkpoint-dir"
    ))
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

/// Opens the file `path` for reading from byte `byte` on, buffered (from `0`: as
/// [`open_input`]). Standard input cannot start anywhere but at its beginning.
pub(crate) fn open_input_at(path: &Path, byte: u64) -> Result<Box<dyn BufRead>, ConnectorError> {
    if byte == 0 {
        return open_input(path);
    }
    if is_stdio(path) {
        return Err(stdin_cannot_resume("standard input"));
    }
    let mut file = File::open(path).map_err(|e| open_error(path, e))?;
    file.seek(SeekFrom::Start(byte)).map_err(|e| {
        io_error(
            format!("could not seek to byte {byte} of {}", path.display()),
            e,
        )
    })?;
    Ok(Box::new(BufReader::with_capacity(1 << 16, file)))
}

pub(crate) fn open_error(path: &Path, e: io::Error) -> ConnectorError {
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
    lines: Lines,
    /// Where the next line starts (`line`: the lines before it).
    next: Offset,
}

struct JsonLinesReader<T> {
    files: FileQueue,
    /// The current file of `files`, once opened.
    current: Option<OpenFile>,
    event_time: EventTimeOf<T>,
    max_record_size: usize,
    /// The line being parsed (reused).
    line: Vec<u8>,
    _marker: PhantomData<fn() -> T>,
}

/// Parses one line into a record timed as `event_time` says; `Err` is why it is rejected.
fn parse<T: DeserializeOwned + Serialize + 'static>(
    event_time: &EventTimeOf<T>,
    line: &[u8],
) -> Result<Record<T>, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(object) = &value else {
        return Err(format!("expected a JSON object, found {}", kind(&value)));
    };
    let field_time = match event_time {
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
        None => event_time.of(&data, None, wall_clock_ms())?,
    };
    Ok((time, data))
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
                match self.files.current() {
                    Some((path, next)) => {
                        let input = open_input_at(path, next.byte)?;
                        self.current = Some(OpenFile {
                            path: path.to_path_buf(),
                            lines: Lines::new(input),
                            next,
                        });
                        continue;
                    }
                    None => break,
                }
            };
            self.line.clear();
            let read_error = |e| {
                io_error(
                    format!(
                        "could not read {} after line {}",
                        file.path.display(),
                        file.next.line
                    ),
                    e,
                )
            };
            let limit = self.max_record_size.saturating_add(2);
            let end = file
                .lines
                .read_line(&mut self.line, limit)
                .map_err(read_error)?;
            if end == LineEnd::Eof && self.line.is_empty() {
                self.current = None;
                self.files.finish_current();
                continue;
            }
            let mut size = self.line.len() as u64;
            if end == LineEnd::Cut {
                size += file.lines.skip_line().map_err(read_error)?;
            }
            file.next.byte += size;
            file.next.line += 1;
            lines += 1;
            let location = || format!("{}:{}", file.path.display(), file.next.line);
            let text = without_break(&self.line);
            if end == LineEnd::Cut || text.len() > self.max_record_size {
                let size = match end {
                    LineEnd::Cut => size - file.lines.break_len() as u64,
                    _ => text.len() as u64,
                };
                let kept = &text[..text.len().min(KEPT_OF_OVERSIZED)];
                rejected.push(
                    RecordError::new(location(), oversized(size, self.max_record_size))
                        .with_raw(kept),
                );
                continue;
            }
            let text = text.trim_ascii();
            if text.is_empty() {
                continue;
            }
            match parse(&self.event_time, text) {
                Ok(record) => out.push(record),
                Err(message) => {
                    rejected.push(RecordError::new(location(), message).with_raw(text));
                }
            }
        }
        if self.files.is_done() && out.len() == before {
            Ok(ReadStatus::Done)
        } else {
            Ok(ReadStatus::Ready)
        }
    }

    fn position(&self) -> Option<Vec<u8>> {
        self.files.position(self.current.as_ref().map(|f| f.next))
    }
}

/// Test helpers for the file sources' checkpoint positions, shared with [`crate::files`].
#[cfg(test)]
pub(crate) mod resume_testing {
    use eddy_engine::{Partition, ReadStatus, Source, SourcePositions, SourceReader};

    /// What a reader returned: its records (debug-formatted) and its rejected records'
    /// locations.
    pub(crate) type Read = (Vec<String>, Vec<String>);

    /// Polls `reader` (`max` records a poll) at most `polls` times or to its end; says
    /// whether it is done.
    fn drain<T: std::fmt::Debug>(
        reader: &mut dyn SourceReader<T>,
        polls: usize,
        max: usize,
        read: &mut Read,
    ) -> bool {
        let (mut out, mut rejected) = (Vec::new(), Vec::new());
        for _ in 0..polls {
            let status = reader.poll(&mut out, max, &mut rejected).unwrap();
            read.0.extend(out.drain(..).map(|r| format!("{r:?}")));
            read.1.extend(rejected.drain(..).map(|r| r.location));
            if status == ReadStatus::Done {
                return true;
            }
        }
        false
    }

    /// Reads `source` at `old` workers, worker `w` stopping after `polls[w]` polls of `max`
    /// records (or at its end), then resumes it at `new` workers from the positions the old
    /// readers left, handed over as the engine does (a finished reader leaves none; at an
    /// unchanged count a worker gets only its own), and reads to the end. Returns everything
    /// read, sorted: it must be what one uninterrupted reader reads.
    pub(crate) fn read_resumed<T: std::fmt::Debug + 'static>(
        source: &dyn Source<T>,
        old: usize,
        polls: &[usize],
        new: usize,
        max: usize,
    ) -> Read {
        let mut read = Read::default();
        let mut positions = Vec::new();
        for (index, &stop) in polls.iter().enumerate().take(old) {
            let mut reader = source.open(Partition { index, count: old }).unwrap();
            assert!(reader.position().is_some(), "a file reader has a position");
            if !drain(&mut *reader, stop, max, &mut read) {
                positions.push((index, reader.position().unwrap()));
            }
        }
        for index in 0..new {
            let handed = SourcePositions {
                workers: old,
                positions: positions
                    .iter()
                    .filter(|(w, _)| old != new || *w == index)
                    .cloned()
                    .collect(),
            };
            let mut reader = source
                .open_at(Partition { index, count: new }, &handed)
                .unwrap();
            assert!(drain(&mut *reader, usize::MAX, max, &mut read));
        }
        read.0.sort();
        read.1.sort();
        read
    }

    /// Checks [`read_resumed`] against one uninterrupted reader for every worker count from 1
    /// to 3 before and after, and every stopping point up to `polls` polls of `max` records.
    pub(crate) fn assert_resumes_exactly<T: std::fmt::Debug + 'static>(
        source: &dyn Source<T>,
        polls: usize,
        max: usize,
    ) {
        let mut whole = Read::default();
        let mut reader = source.open(Partition { index: 0, count: 1 }).unwrap();
        assert!(drain(&mut *reader, usize::MAX, max, &mut whole));
        whole.0.sort();
        whole.1.sort();
        assert!(!whole.0.is_empty());
        for old in 1..=3 {
            for new in 1..=3 {
                for cut in 0..=polls {
                    // Each old worker stops at another point; some finish.
                    let stops: Vec<usize> = (0..old).map(|w| (cut + w * 3) % (polls + 1)).collect();
                    let got = read_resumed(source, old, &stops, new, max);
                    assert_eq!(
                        got, whole,
                        "{old} workers stopped after {stops:?} polls, resumed at {new}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::resume_testing::assert_resumes_exactly;
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
    /// `n` lines of clicks (`ts` from `first`), with a blank line and a bad one among them.
    fn clicks_file(path: &Path, first: u64, n: u64) {
        let mut text = String::new();
        for i in 0..n {
            text.push_str(&format!(
                "{{\"ts\": {}, \"user\": \"u{i}\", \"n\": {i}}}\n",
                first + i
            ));
            if i == 2 {
                text.push_str("\n{\"ts\": \"bad\"}\n");
            }
        }
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_line_over_max_record_size_is_rejected_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.jsonl");
        let exact = format!("{{\"ts\": 1, \"user\": \"{}\", \"n\": 1}}", "a".repeat(10));
        let max = exact.len();
        let long = format!(
            "{{\"ts\": 2, \"user\": \"{}\", \"n\": 2}}",
            "b".repeat(10_000)
        );
        let text = format!("{exact}\r\n{long}\n{{\"ts\": 3, \"user\": \"c\", \"n\": 3}}\n{long}");
        std::fs::write(&path, text).unwrap();
        let source = JsonLinesSource::<Click>::new([&path], "ts").max_record_size(max);
        let (records, rejected) = read_all(&source, Partition { index: 0, count: 1 });
        assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 3]);
        let shown = path.display();
        let located: Vec<_> = rejected.iter().map(|r| r.location.clone()).collect();
        assert_eq!(located, vec![format!("{shown}:2"), format!("{shown}:4")]);
        let size = long.len();
        assert!(
            rejected[0].message.contains(&format!(
                "the record is {size} bytes, over the limit of {max}"
            )),
            "{}",
            rejected[0]
        );
        // Its start: what was read before the limit.
        let raw = &rejected[0].raw;
        assert!(long.as_bytes().starts_with(raw) && raw.len() > max && raw.len() <= max + 2);
        assert!(rejected[1].message.contains(&format!("{size} bytes")));

        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push('\n');
        for i in 0..6 {
            text.push_str(&format!(
                "{{\"ts\": {}, \"user\": \"u\", \"n\": 0}}\n",
                10 + i
            ));
            text.push_str(&long);
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        assert_resumes_exactly(&source, 8, 2);
    }

    #[test]
    fn positions_resume_right_after_the_last_line_at_any_worker_count() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..4)
            .map(|i| dir.path().join(format!("{i}.jsonl")))
            .collect();
        for (i, path) in paths.iter().enumerate() {
            clicks_file(path, i as u64 * 100, 3 + i as u64 * 2);
        }
        let source = JsonLinesSource::<Click>::new(paths, "ts");
        assert_resumes_exactly(&source, 12, 2);
        assert_resumes_exactly(&source, 5, 5);
    }

    #[test]
    fn a_position_names_each_file_with_its_next_byte_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
        clicks_file(&a, 0, 2);
        clicks_file(&b, 10, 5);
        let first_line = std::fs::read_to_string(&b).unwrap().find('\n').unwrap() + 1;
        let source = JsonLinesSource::<Click>::new([&a, &b], "ts");
        let mut reader = source.open(Partition { index: 0, count: 1 }).unwrap();
        let (mut out, mut rejected) = (Vec::new(), Vec::new());
        // Both lines of a.jsonl, then one of b.jsonl.
        reader.poll(&mut out, 2, &mut rejected).unwrap();
        reader.poll(&mut out, 1, &mut rejected).unwrap();
        assert_eq!(out.len(), 3);
        let position: Value = serde_json::from_slice(&reader.position().unwrap()).unwrap();
        assert_eq!(
            position,
            serde_json::json!({"files": [
                {"file": 0, "path": a.display().to_string(), "done": true, "byte": 0, "line": 0},
                {"file": 1, "path": b.display().to_string(), "byte": first_line, "line": 1},
            ]})
        );
        // Resumed there, a bad line keeps its line number.
        let positions = SourcePositions {
            workers: 1,
            positions: vec![(0, serde_json::to_vec(&position).unwrap())],
        };
        let mut reader = source
            .open_at(Partition { index: 0, count: 1 }, &positions)
            .unwrap();
        let (mut out, mut rejected) = (Vec::new(), Vec::new());
        while reader.poll(&mut out, 10, &mut rejected).unwrap() != ReadStatus::Done {}
        let times: Vec<u64> = out.iter().map(|r| r.0).collect();
        assert_eq!(times, vec![11, 12, 13, 14]);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].location, format!("{}:5", b.display()));
    }

    #[test]
    fn standard_input_cannot_be_checkpointed_nor_resumed() {
        let source = JsonLinesSource::<Click>::new(["-"], "ts");
        let reader = source.open(Partition { index: 0, count: 1 }).unwrap();
        assert_eq!(reader.position(), None);
        let positions = SourcePositions {
            workers: 1,
            positions: Vec::new(),
        };
        let Err(error) = source.open_at(Partition { index: 0, count: 1 }, &positions) else {
            panic!("standard input cannot resume");
        };
        assert_eq!(error.fault, eddy_engine::Fault::User);
        assert!(
            error.what.contains("standard input (-) cannot be resumed"),
            "{error}"
        );
        // Another worker, reading no standard input, is not affected.
        let reader = source.open(Partition { index: 1, count: 2 }).unwrap();
        assert!(reader.position().is_some());
    }

    #[test]
    fn positions_of_other_files_or_changed_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
        clicks_file(&a, 0, 6);
        clicks_file(&b, 0, 6);
        let source = JsonLinesSource::<Click>::new([&a], "ts");
        let mut reader = source.open(Partition { index: 0, count: 1 }).unwrap();
        reader.poll(&mut Vec::new(), 4, &mut Vec::new()).unwrap();
        let positions = SourcePositions {
            workers: 1,
            positions: vec![(0, reader.position().unwrap())],
        };
        let open_at = |source: &JsonLinesSource<Click>, positions: &SourcePositions| match source
            .open_at(Partition { index: 0, count: 1 }, positions)
        {
            Ok(_) => panic!("must be refused"),
            Err(error) => error.what,
        };
        let other = JsonLinesSource::<Click>::new([&b], "ts");
        let said = open_at(&other, &positions);
        assert!(said.contains("the checkpoint was taken reading"), "{said}");
        assert!(
            said.contains("a.jsonl") && said.contains("b.jsonl"),
            "{said}"
        );

        std::fs::write(&a, "{}\n").unwrap();
        let said = open_at(&source, &positions);
        assert!(said.contains("the file changed since"), "{said}");

        let garbage = SourcePositions {
            workers: 1,
            positions: vec![(0, b"[1, 2]".to_vec())],
        };
        let said = open_at(&source, &garbage);
        assert!(said.contains("does not decode"), "{said}");
    }
}
