//! The webhook's write-ahead log (on by default, see [`crate::webhook`]): the records of every
//! request the webhook answers 2xx are appended here and fsynced before the answer, and the
//! log, not the request, is what the reader replays.
//!
//! **Files.** A log is a directory of segments `wal-<seq:020>.log` (seq in decimal, 20 digits,
//! so names sort by seq). A segment starts with the 8 bytes `EDDYWAL1`; then entries, each
//!
//! ```text
//! len: u32 LE | crc: u32 LE (CRC-32 of body) | body: len bytes
//! body = received_ms: u64 LE | rest: u32 LE | location_len: u32 LE | location (UTF-8) | payload
//! ```
//!
//! One entry per record; `rest` counts the entries of the same request after this one (0: its
//! last), so a reader hands over a request's records only once it has read all of them: a
//! request is in the log whole or not at all.
//!
//! One writer at a time holds `DIR/lock` (an exclusive file lock, released by the OS when the
//! process dies). A writer appends to a fresh segment (seq = the largest there + 1) and rolls
//! to the next once a segment is past its size (4 MiB by default). A request's entries are one
//! `write` and one `fsync`; a failed write truncates the segment back and the next append rolls
//! to a new one.
//!
//! **Reading.** A position is `(seq, offset)`: the byte after the last entry read. A tailer
//! reads the live segment (the writer's) only up to what the writer has fsynced, and older
//! segments to their end. An entry that is incomplete or fails its CRC, or a request whose last
//! entry is missing (the process died while writing it, so it was never answered), ends its
//! segment: the rest of it is skipped, with a warning, and reading goes on in the next segment.
//!
//! **The released position.** `DIR/released` holds a position (as JSON) before which every
//! record is durably in some run's output: written (to `released.tmp`, fsynced, renamed over,
//! the directory fsynced, so it is the old position or the new one, never a torn one) when the
//! engine *releases* what the reader read in a run without checkpoints (every sink has
//! committed it: [`SourceReader::released`](eddy_engine::SourceReader::released)), and when a
//! checkpoint completes in a run with them. It only moves forward. A run with nothing to resume
//! from (no checkpoint) starts reading there: at the position if its segment is still there,
//! else at the first segment after it (a run with checkpoints deleted it: it was behind a
//! completed checkpoint), else at the oldest segment. A marker that does not decode, or points
//! past the end of the log, is damage: it is reported and reading starts at the oldest segment
//! (records may be read twice, none is skipped).
//!
//! **Truncation.** Without checkpoints, once a released position is recorded the segments below
//! its segment are deleted. With checkpoints, a checkpoint that holds the reader at `(seq, _)`
//! has everything of the segments below `seq` behind it; the tracker deletes them once the
//! *next* checkpoint completes: the engine keeps the checkpoint before the newest to fall back
//! to, so its position must stay readable.
//!
//! **Which run is which.** The engine releases polls in runs with checkpoints too, right after
//! it has taken them: that is no proof of durability. It tells the reader before the first poll
//! what its releases mean ([`eddy_engine::ReleaseMode`], shared with the tracker as a
//! [`ReleaseMeaning`]); only releases of the commit cycle are recorded. Until told, a release
//! records nothing (what it released then is recorded with the next).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use eddy_engine::ReleaseMode;
use serde::{Deserialize, Serialize};

use crate::bridge::Tracks;

/// The size past which a writer rolls to a new segment.
pub(crate) const SEGMENT_BYTES: u64 = 4 << 20;

/// The first bytes of every segment.
const MAGIC: &[u8; 8] = b"EDDYWAL1";
/// Where a segment's first entry starts.
const FIRST_ENTRY: u64 = MAGIC.len() as u64;
/// An entry's length and CRC.
const FRAME: u64 = 8;
/// The smallest body: the receive time, the entries left and the location's length.
const MIN_BODY: u32 = 16;
/// A length above this is damage, not an entry (bodies are at most `max_body`).
const MAX_BODY: u32 = 256 << 20;
/// The file holding the released position (see the module docs).
const RELEASED: &str = "released";
/// Where the released position is written before it is renamed over [`RELEASED`].
const RELEASED_TMP: &str = "released.tmp";

/// Where a reader of the log is: the byte after the last entry it read, in segment `seq`
/// (offset 0: the segment's start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct WalPosition {
    /// The segment.
    pub seq: u64,
    /// The byte offset in it.
    pub offset: u64,
}

impl WalPosition {
    /// The start of segment `seq`.
    pub fn start_of(seq: u64) -> Self {
        WalPosition { seq, offset: 0 }
    }

    /// The position as checkpoints save it (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a position serializes")
    }

    /// A position [`Self::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// One record of the log: the bytes, where they came from, when they were received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The record's bytes.
    pub payload: Vec<u8>,
    /// Where it came from (`POST /orders from 127.0.0.1:50312 line 3`).
    pub location: String,
    /// When its request was received (ms since the Unix epoch).
    pub received_ms: u64,
}

/// A log file that could not be read or written, and why.
#[derive(Debug)]
pub(crate) struct WalError {
    /// The file (or the log's directory).
    pub path: PathBuf,
    what: String,
    source: Option<io::Error>,
    /// What to do about it, when there is something to say.
    hint: Option<&'static str>,
}

impl WalError {
    fn io(what: impl Into<String>, path: &Path, source: io::Error) -> Self {
        WalError {
            path: path.to_path_buf(),
            what: what.into(),
            source: Some(source),
            hint: None,
        }
    }

    fn damaged(path: &Path, what: impl Into<String>) -> Self {
        WalError {
            path: path.to_path_buf(),
            what: what.into(),
            source: None,
            hint: None,
        }
    }

    fn hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.what, self.path.display())?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        if let Some(hint) = self.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for WalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The file of segment `seq` in `dir`.
pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal-{seq:020}.log"))
}

fn segment_seq(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The segments in `dir`, by seq.
pub(crate) fn segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let listing =
        fs::read_dir(dir).map_err(|e| WalError::io("cannot list the write-ahead log", dir, e))?;
    let mut seqs = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| WalError::io("cannot list the write-ahead log", dir, e))?;
        if let Some(seq) = entry.file_name().to_str().and_then(segment_seq) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Deletes the segments of `dir` below `seq`; the seqs deleted.
pub(crate) fn delete_below(dir: &Path, seq: u64) -> Result<Vec<u64>, WalError> {
    let mut deleted = Vec::new();
    for old in segments(dir)?.into_iter().take_while(|&s| s < seq) {
        let path = segment_path(dir, old);
        match fs::remove_file(&path) {
            Ok(()) => deleted.push(old),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(WalError::io("cannot delete", &path, e)),
        }
    }
    Ok(deleted)
}

/// The released position recorded in `dir` (see the module docs); `None` when there is none.
pub(crate) fn read_released(dir: &Path) -> Result<Option<WalPosition>, WalError> {
    let path = dir.join(RELEASED);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(WalError::io("cannot read", &path, e)),
    };
    WalPosition::decode(&bytes).map(Some).map_err(|e| {
        WalError::damaged(
            &path,
            format!("a released position that does not decode ({e}):"),
        )
    })
}

/// Records `at` as the released position of `dir`: written to a temporary file and fsynced,
/// renamed over the old one, and the directory fsynced.
pub(crate) fn write_released(dir: &Path, at: WalPosition) -> Result<(), WalError> {
    let (tmp, path) = (dir.join(RELEASED_TMP), dir.join(RELEASED));
    let mut file = File::create(&tmp).map_err(|e| WalError::io("cannot create", &tmp, e))?;
    file.write_all(&at.encode())
        .and_then(|()| file.sync_all())
        .map_err(|e| WalError::io("cannot write", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| WalError::io("cannot rename into place", &path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io("cannot sync the directory", dir, e))
}

/// Where a run with no checkpoint to resume from starts reading `dir`, whose running writer
/// started at segment `first`: after the released position `released` (see the module docs),
/// else at the oldest segment. A released position that cannot be right (past the end of its
/// segment, or in a segment not older than this run's) is damage: the error says why, and the
/// caller reads from the oldest segment.
pub(crate) fn start_after(
    dir: &Path,
    released: Option<WalPosition>,
    first: u64,
) -> Result<WalPosition, WalError> {
    let seqs = segments(dir)?;
    let oldest = WalPosition::start_of(seqs.first().copied().unwrap_or(first));
    let Some(released) = released else {
        return Ok(oldest);
    };
    let damaged = |what: String| WalError::damaged(&dir.join(RELEASED), what);
    if released.seq >= first {
        return Err(damaged(format!(
            "a released position in segment {}, not older than this run's first segment \
             ({first}): were segments removed? It is",
            released.seq
        )));
    }
    match seqs.iter().copied().find(|&seq| seq >= released.seq) {
        Some(seq) if seq == released.seq => {
            let path = segment_path(dir, seq);
            let len = fs::metadata(&path)
                .map_err(|e| WalError::io("cannot read", &path, e))?
                .len();
            if released.offset > len {
                return Err(damaged(format!(
                    "a released position (byte {}) beyond the end of {} ({len} bytes), in",
                    released.offset,
                    path.display()
                )));
            }
            Ok(released)
        }
        Some(seq) => Ok(WalPosition::start_of(seq)),
        None => Ok(oldest),
    }
}

/// How far a tailer may read each segment of the running writer: what it has fsynced.
#[derive(Default)]
pub(crate) struct Published {
    ends: Mutex<Ends>,
    /// Notified after every append (and roll): a tailer waiting at the end reads on.
    pub changed: tokio::sync::Notify,
}

/// The writer's segments; the others (below them) are an earlier run's, read to their end.
#[derive(Default)]
struct Ends {
    /// The writer's segment now, and its fsynced length.
    current: u64,
    durable: u64,
    /// The lengths of the writer's earlier segments (it rolled from them).
    sealed: BTreeMap<u64, u64>,
}

/// How far segment `seq` may be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Readable {
    /// The writer's segment, up to this length: more may come.
    Live(u64),
    /// A segment the writer has finished, this long.
    Sealed(u64),
    /// An earlier run's segment: to its end.
    ToEnd,
}

impl Published {
    fn readable(&self, seq: u64) -> Readable {
        let ends = self.ends.lock().unwrap_or_else(PoisonError::into_inner);
        if seq == ends.current {
            Readable::Live(ends.durable)
        } else if let Some(&end) = ends.sealed.get(&seq) {
            Readable::Sealed(end)
        } else {
            Readable::ToEnd
        }
    }

    /// The tailer has gone past `seq`: its sealed length is not needed any more.
    fn passed(&self, seq: u64) {
        let mut ends = self.ends.lock().unwrap_or_else(PoisonError::into_inner);
        ends.sealed.retain(|&s, _| s > seq);
    }
}

/// The log's one writer (see the module docs).
pub(crate) struct WalWriter {
    dir: PathBuf,
    segment_bytes: u64,
    first: u64,
    seq: u64,
    file: File,
    len: u64,
    /// A write failed: the next append starts a new segment.
    broken: bool,
    published: Arc<Published>,
    _lock: File,
}

impl WalWriter {
    /// Takes the log in `dir` (created when missing) and starts a fresh segment, rolling past
    /// `segment_bytes`.
    pub fn create(dir: &Path, segment_bytes: u64) -> Result<Self, WalError> {
        fs::create_dir_all(dir)
            .map_err(|e| WalError::io("cannot create the write-ahead log directory", dir, e))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| WalError::io("cannot open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(WalError::damaged(
                    dir,
                    "another webhook (in this or another process) writes the write-ahead log in",
                )
                .hint(
                    "stop that one, or give this webhook a log of its own (wal=DIR, \
                     WebhookConfig::wal)",
                ))
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(WalError::io("cannot lock", &lock_path, e))
            }
        }
        let seq = segments(dir)?.last().map_or(0, |last| last + 1);
        let file = new_segment(dir, seq)?;
        let published = Arc::new(Published::default());
        *published
            .ends
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Ends {
            current: seq,
            durable: FIRST_ENTRY,
            sealed: BTreeMap::new(),
        };
        Ok(WalWriter {
            dir: dir.to_path_buf(),
            segment_bytes,
            first: seq,
            seq,
            file,
            len: FIRST_ENTRY,
            broken: false,
            published,
            _lock: lock,
        })
    }

    /// The first segment this writer wrote: the ones below are earlier runs'.
    pub fn first_seq(&self) -> u64 {
        self.first
    }

    /// The segment being written.
    pub fn path(&self) -> PathBuf {
        segment_path(&self.dir, self.seq)
    }

    /// What tailers of this writer's segments read up to.
    pub fn published(&self) -> Arc<Published> {
        Arc::clone(&self.published)
    }

    /// Appends `entries` (payload, location, receive time) with one write and one fsync; the
    /// position after them. On an error nothing of them is readable.
    pub fn append<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (&'a [u8], &'a str, u64)>,
    ) -> Result<WalPosition, WalError> {
        if self.broken || self.len >= self.segment_bytes {
            self.roll()?;
        }
        let entries: Vec<_> = entries.into_iter().collect();
        let mut bytes = Vec::new();
        for (i, &(payload, location, received_ms)) in entries.iter().enumerate() {
            let rest = (entries.len() - 1 - i) as u32;
            frame(&mut bytes, payload, location, received_ms, rest);
        }
        let written = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Take back what may have been written, so a later run reading this segment to
            // its end does not read a request that was refused; the next append rolls anyway.
            let _ = self.file.set_len(self.len);
            self.broken = true;
            return Err(WalError::io("cannot write", &self.path(), e));
        }
        self.len += bytes.len() as u64;
        self.published
            .ends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .durable = self.len;
        self.published.changed.notify_one();
        Ok(WalPosition {
            seq: self.seq,
            offset: self.len,
        })
    }

    /// Seals the segment at what was fsynced and starts the next.
    fn roll(&mut self) -> Result<(), WalError> {
        let next = self.seq + 1;
        let file = new_segment(&self.dir, next)?;
        {
            let mut ends = self
                .published
                .ends
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            ends.sealed.insert(self.seq, self.len);
            ends.current = next;
            ends.durable = FIRST_ENTRY;
        }
        self.seq = next;
        self.file = file;
        self.len = FIRST_ENTRY;
        self.broken = false;
        self.published.changed.notify_one();
        Ok(())
    }
}

/// Creates segment `seq` with its magic, fsynced, and its directory entry fsynced.
fn new_segment(dir: &Path, seq: u64) -> Result<File, WalError> {
    let path = segment_path(dir, seq);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(|e| WalError::io("cannot create", &path, e))?;
    file.write_all(MAGIC)
        .and_then(|()| file.sync_all())
        .map_err(|e| WalError::io("cannot write", &path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io("cannot sync the directory", dir, e))?;
    Ok(file)
}

/// Appends one framed entry to `out`.
fn frame(out: &mut Vec<u8>, payload: &[u8], location: &str, received_ms: u64, rest: u32) {
    let mut body = Vec::with_capacity(MIN_BODY as usize + location.len() + payload.len());
    body.extend_from_slice(&received_ms.to_le_bytes());
    body.extend_from_slice(&rest.to_le_bytes());
    body.extend_from_slice(&(location.len() as u32).to_le_bytes());
    body.extend_from_slice(location.as_bytes());
    body.extend_from_slice(payload);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// An entry's record, and how many entries of its request come after it.
fn unframe(body: &[u8]) -> Option<(Entry, u32)> {
    let received_ms = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let rest = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?);
    let location_len = u32::from_le_bytes(body.get(12..16)?.try_into().ok()?) as usize;
    let location = body.get(16..16usize.checked_add(location_len)?)?;
    let entry = Entry {
        payload: body[16 + location_len..].to_vec(),
        location: String::from_utf8_lossy(location).into_owned(),
        received_ms,
    };
    Some((entry, rest))
}

/// What [`WalTail::next_entry`] found.
enum Next {
    /// An entry, the entries of its request after it, and where it ends.
    Entry(Entry, u32, u64),
    /// The readable end of the segment.
    End,
    /// An incomplete or damaged entry: why.
    Torn(String),
}

/// A reader of the log from a position on, segment after segment (see the module docs).
pub(crate) struct WalTail {
    dir: PathBuf,
    at: WalPosition,
    /// The running writer's limits; `None`: every segment is read to its end.
    published: Option<Arc<Published>>,
    /// Segment `at.seq`, positioned at `at.offset`.
    open: Option<BufReader<File>>,
    /// The entries read of a request whose last entry is still to come, and where it starts.
    pending: Vec<(Entry, WalPosition)>,
    pending_from: WalPosition,
    /// The `rest` of the last pending entry.
    pending_rest: Option<u32>,
    /// Where the last torn entry was skipped (warned once).
    warned: Option<WalPosition>,
    /// Every torn entry (or incomplete request) skipped: where it started.
    pub torn: Vec<WalPosition>,
}

impl WalTail {
    /// A reader of `dir` from `at`, within what `published` says the writer has fsynced.
    pub fn new(dir: &Path, at: WalPosition, published: Option<Arc<Published>>) -> Self {
        WalTail {
            dir: dir.to_path_buf(),
            at,
            published,
            open: None,
            pending: Vec::new(),
            pending_from: at,
            pending_rest: None,
            warned: None,
            torn: Vec::new(),
        }
    }

    /// About `max` entries from here on (whole requests: a few more to finish the last one),
    /// each with the position after it; none when everything readable now has been read.
    pub fn read(&mut self, max: usize) -> Result<Vec<(Entry, WalPosition)>, WalError> {
        let mut out = Vec::new();
        while out.len() < max || !self.pending.is_empty() {
            let readable = self
                .published
                .as_ref()
                .map_or(Readable::ToEnd, |p| p.readable(self.at.seq));
            let limit = match readable {
                Readable::Live(end) | Readable::Sealed(end) => Some(end),
                Readable::ToEnd => None,
            };
            let why = match self.next_entry(limit)? {
                // Each entry of a request says one fewer comes after it.
                Next::Entry(_, rest, _)
                    if self
                        .pending_rest
                        .is_some_and(|before| rest.checked_add(1) != Some(before)) =>
                {
                    "an entry out of its request's order".to_string()
                }
                Next::Entry(entry, rest, end) => {
                    if self.pending.is_empty() {
                        self.pending_from = self.at;
                    }
                    self.at.offset = end;
                    self.pending.push((entry, self.at));
                    self.pending_rest = Some(rest);
                    if rest == 0 {
                        out.append(&mut self.pending);
                        self.pending_rest = None;
                    }
                    continue;
                }
                Next::End if matches!(readable, Readable::Live(_)) => break,
                Next::End if self.pending.is_empty() => {
                    if !self.advance()? {
                        break;
                    }
                    continue;
                }
                Next::End => "a request whose last entry is missing".to_string(),
                Next::Torn(why) => why,
            };
            let from = if self.pending.is_empty() {
                self.at
            } else {
                self.pending_from
            };
            // Back to where the skipped part starts: nothing is behind the position that was
            // not returned.
            self.at = from;
            self.pending.clear();
            self.pending_rest = None;
            self.open = None;
            let path = segment_path(&self.dir, self.at.seq);
            if matches!(readable, Readable::Live(_) | Readable::Sealed(_)) {
                // What the writer fsynced is whole: this is damage, not a crash.
                return Err(WalError::damaged(
                    &path,
                    format!("{why} at byte {} of", from.offset),
                ));
            }
            if self.warned != Some(from) {
                self.warned = Some(from);
                self.torn.push(from);
                tracing::warn!(
                    "webhook write-ahead log: {why} at byte {} of {}: the process stopped \
                     while writing it, so its request was never answered; the rest of the \
                     segment is skipped",
                    from.offset,
                    path.display()
                );
            }
            if !self.advance()? {
                break;
            }
        }
        Ok(out)
    }

    /// Moves to the next segment, if there is one.
    fn advance(&mut self) -> Result<bool, WalError> {
        let Some(next) = segments(&self.dir)?
            .into_iter()
            .find(|&seq| seq > self.at.seq)
        else {
            return Ok(false);
        };
        if let Some(published) = &self.published {
            published.passed(self.at.seq);
        }
        self.at = WalPosition::start_of(next);
        self.open = None;
        Ok(true)
    }

    fn next_entry(&mut self, limit: Option<u64>) -> Result<Next, WalError> {
        let path = segment_path(&self.dir, self.at.seq);
        let read_error = |e| WalError::io("cannot read", &path, e);
        if self.open.is_none() {
            let mut file = File::open(&path).map_err(read_error)?;
            let len = file.metadata().map_err(read_error)?.len();
            if self.at.offset > len {
                return Err(WalError::damaged(
                    &path,
                    format!(
                        "the position to read from (byte {}) is beyond the end ({len} bytes) of",
                        self.at.offset
                    ),
                ));
            }
            file.seek(SeekFrom::Start(self.at.offset))
                .map_err(read_error)?;
            self.open = Some(BufReader::with_capacity(1 << 16, file));
        }
        let file = self.open.as_mut().expect("opened above");
        if self.at.offset == 0 {
            let mut magic = [0u8; MAGIC.len()];
            match read_full(file, &mut magic).map_err(read_error)? {
                0 if limit.is_none() => return Ok(Next::End),
                n if n < magic.len() => {
                    self.open = None;
                    return Ok(Next::Torn("an incomplete segment header".into()));
                }
                _ if &magic != MAGIC => {
                    return Err(WalError::damaged(
                        &path,
                        "not a webhook write-ahead log segment (no EDDYWAL1 header):",
                    ))
                }
                _ => self.at.offset = FIRST_ENTRY,
            }
        }
        if limit.is_some_and(|end| self.at.offset >= end) {
            return Ok(Next::End);
        }
        let mut header = [0u8; FRAME as usize];
        match read_full(file, &mut header).map_err(read_error)? {
            0 => return Ok(Next::End),
            n if n < header.len() => return Ok(Next::Torn("an incomplete entry".into())),
            _ => {}
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if !(MIN_BODY..=MAX_BODY).contains(&len) {
            return Ok(Next::Torn(format!("a damaged entry (length {len})")));
        }
        let end = self.at.offset + FRAME + u64::from(len);
        if limit.is_some_and(|limit| end > limit) {
            return Ok(Next::Torn("an entry past the fsynced end".into()));
        }
        // Read as the bytes come, so that a damaged length allocates no more than the file
        // holds.
        let mut body = Vec::new();
        let read = file.take(u64::from(len)).read_to_end(&mut body);
        if read.map_err(read_error)? < len as usize {
            return Ok(Next::Torn("an incomplete entry".into()));
        }
        if crc32fast::hash(&body) != crc {
            return Ok(Next::Torn("an entry failing its CRC".into()));
        }
        match unframe(&body) {
            Some((entry, rest)) => Ok(Next::Entry(entry, rest, end)),
            None => Ok(Next::Torn("a damaged entry (its location)".into())),
        }
    }
}

/// Reads into `buf` until it is full or the file ends: how many bytes were read.
fn read_full(file: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// What the engine's releases mean in this run ([`ReleaseMode`], told to the reader before its
/// first poll): shared by the reader and its [`WalTracker`]. Until told, a release records
/// nothing.
#[derive(Debug, Default)]
pub(crate) struct ReleaseMeaning(AtomicU8);

/// Not told yet, or releases that mean only "taken".
const TAKEN: u8 = 0;
/// The engine's commit cycle: a release means every sink has committed those records.
const COMMITTED: u8 = 1;

impl ReleaseMeaning {
    /// The engine says what its releases mean.
    pub(crate) fn set(&self, mode: ReleaseMode) {
        let meaning = match mode {
            ReleaseMode::Committed => COMMITTED,
            ReleaseMode::Taken | ReleaseMode::Checkpointed => TAKEN,
        };
        self.0.store(meaning, Ordering::Release);
    }

    /// Whether a release means the sinks have committed the records.
    fn committed(&self) -> bool {
        self.0.load(Ordering::Acquire) == COMMITTED
    }
}

/// The reader's position in the log, for checkpoints: the furthest entry it returned. Counts
/// the records of the running writer's segments read (the webhook's backlog is what was
/// appended and not yet read), records the released position, and deletes the segments behind
/// it (without checkpoints) or behind completed checkpoints (with them).
pub(crate) struct WalTracker {
    dir: PathBuf,
    at: WalPosition,
    first: u64,
    read: Arc<AtomicU64>,
    /// The position of the newest completed checkpoint.
    committed: Option<WalPosition>,
    mode: Arc<ReleaseMeaning>,
    /// The furthest position released by the engine.
    released: Option<WalPosition>,
    /// The released position in `DIR/released`.
    recorded: Option<WalPosition>,
}

impl WalTracker {
    /// A tracker starting at `at`, counting into `read` the records of segments from `first`
    /// on; `recorded` is the released position in the log now, and `mode` what the engine's
    /// releases mean.
    pub fn new(
        dir: &Path,
        at: WalPosition,
        first: u64,
        read: Arc<AtomicU64>,
        recorded: Option<WalPosition>,
        mode: Arc<ReleaseMeaning>,
    ) -> Self {
        WalTracker {
            dir: dir.to_path_buf(),
            at,
            first,
            read,
            committed: None,
            mode,
            released: None,
            recorded,
        }
    }

    /// Records `at` as the released position if it is further than the one recorded; whether
    /// it is recorded now. A failure is reported, and tried again with the next release.
    fn record(&mut self, at: WalPosition) -> bool {
        if self.recorded.is_some_and(|r| r >= at) {
            return false;
        }
        match write_released(&self.dir, at) {
            Ok(()) => {
                self.recorded = Some(at);
                true
            }
            Err(error) => {
                tracing::warn!(
                    "webhook write-ahead log: {error}; the released position is recorded with \
                     the next release (a run starting now would read some records again)"
                );
                false
            }
        }
    }

    fn delete_below(&self, seq: u64) {
        if let Err(error) = delete_below(&self.dir, seq) {
            tracing::warn!("webhook write-ahead log: {error}; it is tried again later");
        }
    }
}

impl Tracks<WalPosition> for WalTracker {
    fn note(&mut self, ack: &WalPosition) {
        self.at = self.at.max(*ack);
        if ack.seq >= self.first {
            self.read.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn position(&self) -> Vec<u8> {
        self.at.encode()
    }

    /// Records the checkpoint's position as released, and deletes the segments below the
    /// position of the checkpoint *before* this one: the engine may fall back to that one if
    /// the newest turns out damaged.
    fn committed(&mut self, position: &[u8]) {
        let Ok(position) = WalPosition::decode(position) else {
            return;
        };
        if self.committed.is_some_and(|c| c >= position) {
            return;
        }
        self.record(position);
        let Some(before) = self.committed.replace(position) else {
            return;
        };
        self.delete_below(before.seq);
    }

    /// In a run with a commit cycle, records the furthest of `acks` as released and deletes
    /// the segments below its segment; in one with checkpoints, nothing (their positions and
    /// [`Self::committed`] do that); while it is not known which, remembers it.
    fn released(&mut self, acks: &[WalPosition]) {
        self.released = self.released.max(acks.iter().max().copied());
        if !self.mode.committed() {
            return;
        }
        if let Some(released) = self.released {
            if self.record(released) {
                self.delete_below(released.seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(writer: &mut WalWriter, ids: std::ops::Range<u64>) -> WalPosition {
        let payloads: Vec<(Vec<u8>, String)> = ids
            .map(|i| (format!("{{\"id\": {i}}}").into_bytes(), format!("line {i}")))
            .collect();
        writer
            .append(payloads.iter().map(|(p, l)| (p.as_slice(), l.as_str(), 7)))
            .unwrap()
    }

    fn ids(entries: &[(Entry, WalPosition)]) -> Vec<u64> {
        entries
            .iter()
            .map(|(e, _)| {
                let value: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
                assert_eq!(e.received_ms, 7);
                assert_eq!(e.location, format!("line {}", value["id"]));
                value["id"].as_u64().unwrap()
            })
            .collect()
    }

    fn read_all(tail: &mut WalTail) -> Vec<(Entry, WalPosition)> {
        let mut all = Vec::new();
        loop {
            let batch = tail.read(7).unwrap();
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    }

    #[test]
    fn whole_entries_are_read_once_and_a_torn_one_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = WalWriter::create(dir.path(), 200).unwrap();
        for batch in 0..10 {
            append(&mut first, batch * 3..batch * 3 + 3);
        }
        let last_segment = first.path();
        drop(first);
        assert!(segments(dir.path()).unwrap().len() > 3, "it rolled");
        // A crash in the middle of writing the last entry (id 29).
        let len = fs::metadata(&last_segment).unwrap().len();
        File::options()
            .write(true)
            .open(&last_segment)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        // The next run appends to a fresh segment, while a tailer reads from the oldest.
        let mut second = WalWriter::create(dir.path(), 200).unwrap();
        assert!(second.path() > last_segment);
        let oldest = segments(dir.path()).unwrap()[0];
        let mut tail = WalTail::new(
            dir.path(),
            WalPosition::start_of(oldest),
            Some(second.published()),
        );
        let before = read_all(&mut tail);
        assert_eq!(
            ids(&before),
            (0..27).collect::<Vec<_>>(),
            "the torn entry's request (27..30) is skipped whole: its 27 and 28 are not read"
        );
        assert_eq!(tail.torn.len(), 1, "the torn request is skipped, once");
        assert_eq!(
            tail.torn[0].seq,
            segment_seq(last_segment.file_name().unwrap().to_str().unwrap()).unwrap()
        );
        let end = append(&mut second, 100..102);
        let after = read_all(&mut tail);
        assert_eq!(ids(&after), vec![100, 101]);
        assert_eq!(
            after.last().unwrap().1,
            end,
            "the position after the last entry"
        );
        // Positions go up, and reading from one resumes right after it.
        let all: Vec<_> = before.iter().chain(&after).collect();
        assert!(all.windows(2).all(|w| w[0].1 < w[1].1));
        // From the middle of a request, too.
        let resume_at = before[10].1;
        let mut again = WalTail::new(dir.path(), resume_at, Some(second.published()));
        assert_eq!(
            ids(&read_all(&mut again)),
            (11..27).chain(100..102).collect::<Vec<_>>()
        );
        // Without a writer, every segment is read to its end.
        drop(second);
        let mut offline = WalTail::new(dir.path(), WalPosition::start_of(oldest), None);
        assert_eq!(ids(&read_all(&mut offline)).len(), 29);
        assert_eq!(
            offline.torn, tail.torn,
            "warned once, where the torn request starts"
        );
    }

    mod fuzz {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::*;

        /// Reads `dir` from the start of segment `seq` to the end, offline: the payloads, or
        /// the error that stopped the reading.
        fn read_offline(dir: &Path, seq: u64) -> Result<Vec<Vec<u8>>, WalError> {
            let mut tail = WalTail::new(dir, WalPosition::start_of(seq), None);
            let mut payloads = Vec::new();
            loop {
                let batch = tail.read(5)?;
                if batch.is_empty() {
                    return Ok(payloads);
                }
                payloads.extend(batch.into_iter().map(|(e, _)| e.payload));
            }
        }

        proptest! {
            #[test]
            fn fuzz_wal_segments_give_back_whole_requests_or_skip_them(
                requests in vec(vec(vec(any::<u8>(), 0..40), 1..4), 1..8),
                damage in vec((any::<usize>(), 1u8..), 0..3),
                cut in proptest::option::of(any::<usize>()),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let mut writer = WalWriter::create(dir.path(), SEGMENT_BYTES).unwrap();
                for request in &requests {
                    writer
                        .append(request.iter().map(|p| (p.as_slice(), "here", 7)))
                        .unwrap();
                }
                let (path, seq) = (writer.path(), writer.first_seq());
                drop(writer);
                let mut bytes = fs::read(&path).unwrap();
                for (at, xor) in &damage {
                    let at = FIRST_ENTRY as usize + at % (bytes.len() - FIRST_ENTRY as usize);
                    bytes[at] ^= xor;
                }
                if let Some(cut) = cut {
                    bytes.truncate(FIRST_ENTRY as usize + cut % (bytes.len() - FIRST_ENTRY as usize));
                }
                fs::write(&path, &bytes).unwrap();
                // What is read is the first requests, each whole: the damage ends the segment.
                let read = read_offline(dir.path(), seq).unwrap();
                let mut whole = Vec::new();
                let mut prefixes = vec![whole.clone()];
                for request in &requests {
                    whole.extend(request.iter().cloned());
                    prefixes.push(whole.clone());
                }
                prop_assert!(prefixes.contains(&read), "{read:?}");
                if damage.is_empty() && cut.is_none() {
                    prop_assert_eq!(read, whole);
                }
            }

            #[test]
            fn fuzz_wal_arbitrary_segments_and_positions_never_panic(
                bytes in vec(any::<u8>(), 0..600),
                with_magic in any::<bool>(),
                position in vec(any::<u8>(), 0..40),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let mut segment = if with_magic { MAGIC.to_vec() } else { Vec::new() };
                segment.extend_from_slice(&bytes);
                fs::write(segment_path(dir.path(), 1), segment).unwrap();
                let _ = read_offline(dir.path(), 1);
                let _ = WalPosition::decode(&position);
            }
        }
    }

    #[test]
    fn committed_checkpoints_delete_the_segments_behind_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        // Past the header, every append rolls: one entry per segment.
        let mut writer = WalWriter::create(dir.path(), FIRST_ENTRY + 1).unwrap();
        let positions: Vec<WalPosition> = (0..6).map(|i| append(&mut writer, i..i + 1)).collect();
        let seqs = segments(dir.path()).unwrap();
        assert_eq!(seqs.len(), 6, "one entry per segment at this size");
        let read = Arc::new(AtomicU64::new(0));
        let mut tracker = WalTracker::new(
            dir.path(),
            WalPosition::start_of(seqs[0]),
            writer.first_seq(),
            Arc::clone(&read),
            None,
            Arc::new(meaning(ReleaseMode::Checkpointed)),
        );
        for p in &positions {
            tracker.note(p);
        }
        // With checkpoints, the engine releases what it took at once: that is not durable.
        tracker.released(&positions);
        assert_eq!(read_released(dir.path()).unwrap(), None);
        assert_eq!(read.load(Ordering::Relaxed), 6);
        assert_eq!(WalPosition::decode(&tracker.position()), Ok(positions[5]));
        tracker.committed(&positions[2].encode());
        assert_eq!(segments(dir.path()).unwrap(), seqs, "the first keeps all");
        tracker.committed(&positions[4].encode());
        assert_eq!(
            segments(dir.path()).unwrap(),
            seqs[2..],
            "segments below the one before the newest are gone"
        );
        tracker.committed(&positions[3].encode());
        assert_eq!(segments(dir.path()).unwrap(), seqs[2..], "older: ignored");
        assert_eq!(
            read_released(dir.path()).unwrap(),
            Some(positions[4]),
            "the newest completed checkpoint is released"
        );
    }

    /// A log of one entry per segment (ids 0..6), its positions and segments.
    fn one_per_segment(dir: &Path) -> (WalWriter, Vec<WalPosition>, Vec<u64>) {
        let mut writer = WalWriter::create(dir, FIRST_ENTRY + 1).unwrap();
        let positions: Vec<WalPosition> = (0..6).map(|i| append(&mut writer, i..i + 1)).collect();
        let seqs = segments(dir).unwrap();
        (writer, positions, seqs)
    }

    fn meaning(mode: ReleaseMode) -> ReleaseMeaning {
        let meaning = ReleaseMeaning::default();
        meaning.set(mode);
        meaning
    }

    fn tracker(dir: &Path, seqs: &[u64], mode: &Arc<ReleaseMeaning>) -> WalTracker {
        let (at, read) = (WalPosition::start_of(seqs[0]), Arc::default());
        WalTracker::new(dir, at, seqs[0], read, None, Arc::clone(mode))
    }

    #[test]
    fn releases_of_a_commit_cycle_are_recorded_and_delete_what_is_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (_writer, positions, seqs) = one_per_segment(dir.path());
        let mode = Arc::new(ReleaseMeaning::default());
        let mut tracker = tracker(dir.path(), &seqs, &mode);
        // Not told yet what releases mean: nothing is recorded or deleted.
        tracker.released(&positions[..2]);
        assert_eq!(read_released(dir.path()).unwrap(), None);
        assert_eq!(segments(dir.path()).unwrap(), seqs);
        // Told: the release before is recorded with the next.
        mode.set(ReleaseMode::Committed);
        tracker.released(&positions[2..3]);
        assert_eq!(read_released(dir.path()).unwrap(), Some(positions[2]));
        assert_eq!(segments(dir.path()).unwrap(), seqs[2..], "wholly before it");
        tracker.released(&positions[3..5]);
        assert_eq!(read_released(dir.path()).unwrap(), Some(positions[4]));
        assert_eq!(segments(dir.path()).unwrap(), seqs[4..]);
        assert!(
            !dir.path().join(RELEASED_TMP).exists(),
            "the temporary file was renamed into place"
        );
        // Releases that mean only "taken" record nothing more.
        mode.set(ReleaseMode::Checkpointed);
        tracker.released(&positions[5..]);
        assert_eq!(read_released(dir.path()).unwrap(), Some(positions[4]));
    }

    #[test]
    fn a_run_without_a_checkpoint_starts_after_the_released_position() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, positions, seqs) = one_per_segment(dir.path());
        let first = writer.first_seq() + 6;
        drop(writer);
        let start = |released| start_after(dir.path(), released, first);
        assert_eq!(start(None).unwrap(), WalPosition::start_of(seqs[0]));
        assert_eq!(start(Some(positions[2])).unwrap(), positions[2]);
        // Its segment deleted (behind a completed checkpoint): the next one.
        fs::remove_file(segment_path(dir.path(), seqs[2])).unwrap();
        assert_eq!(
            start(Some(positions[2])).unwrap(),
            WalPosition::start_of(seqs[3])
        );
        // Damage: past the end of its segment, or in a segment of this run.
        let beyond = WalPosition {
            offset: positions[3].offset + 1,
            ..positions[3]
        };
        let error = start(Some(beyond)).unwrap_err().to_string();
        assert!(error.contains("beyond the end"), "{error}");
        let error = start(Some(WalPosition::start_of(first)))
            .unwrap_err()
            .to_string();
        assert!(error.contains("were segments removed"), "{error}");
        // A marker that does not decode is an error, not a panic.
        fs::write(dir.path().join(RELEASED), b"{\"seq\": ").unwrap();
        let error = read_released(dir.path()).unwrap_err().to_string();
        assert!(error.contains("does not decode"), "{error}");
        write_released(dir.path(), positions[4]).unwrap();
        assert_eq!(read_released(dir.path()).unwrap(), Some(positions[4]));
    }

    #[test]
    fn one_writer_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let _writer = WalWriter::create(dir.path(), SEGMENT_BYTES).unwrap();
        let error = WalWriter::create(dir.path(), SEGMENT_BYTES)
            .err()
            .expect("a second writer is refused")
            .to_string();
        assert!(
            error.contains("another webhook")
                && error.contains(&dir.path().display().to_string())
                && error.contains("wal=DIR"),
            "{error}"
        );
    }
}
