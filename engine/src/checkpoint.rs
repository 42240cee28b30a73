//! Exactly-once checkpoints: frontier-aligned cuts, the store that keeps them, the coordinator
//! that completes them, and recovery.
//!
//! ## The cut
//!
//! Timestamps are watermarks, so a frontier value `W` is a consistent cut of the whole pipeline
//! (DESIGN.md §4). The checkpoint *boundaries* are the multiples of the interval
//! ([`Runtime::checkpoint`](crate::Runtime::checkpoint), in event-time milliseconds) and
//! `u64::MAX` (the end of the input). Every *participant* — each source reader, stateful
//! operator and sink, on every worker — writes a *part* whenever its frontier moves from `lo`
//! to `hi` across at least one boundary; the part is valid for every boundary `W` in
//! `(lo, hi]`:
//! - a source writes its reader's position after the last record it stamped below `hi`, with
//!   the watermark it now holds: everything before is stamped `< W`, everything after `>= W`;
//! - a stateful operator writes its state and the records it has stashed but not yet folded;
//!   restored for `W`, it keeps the stashed records stamped `< W` and forgets every result
//!   stamped `< W` (those are already downstream: in the next stage's part for `W`);
//! - a sink closes the output files holding the records stamped below each boundary up to `hi`
//!   (one file per worker and interval, kept under the checkpoint directory's `pending/`) and
//!   writes an empty part.
//!
//! The coordinator (a thread of process 0) completes checkpoint `W` — the largest boundary every
//! participant has a part for — by writing `manifests/W` last (temporary name, fsync, rename).
//! Only then are the pending files with records stamped `< W` renamed into the output
//! directories. Older checkpoints are pruned; the one before the newest is kept, so a damaged
//! newest checkpoint falls back to it.
//!
//! ## Recovery
//!
//! At start, the newest manifest whose parts are all readable (magic, version, length and CRC
//! are checked) is the restore point `W`: pending files stamped below `W` are renamed into place
//! (a crash between the manifest and the renames), every other pending file is removed, and
//! result files of later intervals are removed from the output directories. Operators restore
//! their state by stable stage name and key, sources reopen at their positions. With another
//! worker count, each worker takes the entries whose key routes to it, and the source positions
//! of the old workers `i` with `i % workers == index`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::pipeline::Failures;
use crate::source::Partition;

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The checkpoint directory could not be read or written.
    #[error(
        "could not {action} {}: {source}; check the checkpoint directory's path, permissions and \
         free space",
        .path.display()
    )]
    Io {
        /// What was being done (`write`, `read`, `rename`, ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A checkpoint file is damaged: truncated, of another format version, or failing its CRC.
    #[error("damaged checkpoint file {}: {reason}", .path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A part's state does not decode as the stage's state (the pipeline changed since).
    #[error(
        "the checkpoint state of stage '{stage}' ({}) does not decode: {reason}; a checkpoint \
         can only be restored by the pipeline that wrote it (use a new --checkpoint-dir after \
         changing the pipeline)",
        .path.display()
    )]
    Decode {
        /// The stage.
        stage: String,
        /// The part file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// The directory holds checkpoints this run cannot use.
    #[error("{0}")]
    Incompatible(String),
}

/// Where checkpoint files live: a small interface so that an object store can replace the local
/// directory. Names are `/`-separated relative paths. Output files being staged (see the module
/// docs) are local files under [`CheckpointStore::local_dir`] whatever the store.
pub trait CheckpointStore: Send + Sync + 'static {
    /// Writes `bytes` under `name` atomically: a reader sees the whole file or none.
    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), CheckpointError>;
    /// Reads the file `name`.
    fn get(&self, name: &str) -> Result<Vec<u8>, CheckpointError>;
    /// Every file whose name starts with `prefix` (a directory path ending in `/`), with its
    /// size and modification time.
    fn list(&self, prefix: &str) -> Result<Vec<StoredFile>, CheckpointError>;
    /// Removes the file `name` (no error if it is gone).
    fn delete(&self, name: &str) -> Result<(), CheckpointError>;
    /// Where `name` is, for messages.
    fn path_of(&self, name: &str) -> PathBuf;
    /// The local directory for staged output files.
    fn local_dir(&self) -> PathBuf;
}

/// A file in a [`CheckpointStore`].
#[derive(Clone, Debug)]
pub struct StoredFile {
    /// Its name, relative to the store's root.
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// A [`CheckpointStore`] in a local directory.
#[derive(Clone, Debug)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    /// The store in `root` (created when missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, CheckpointError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_error("create", &root))?;
        Ok(LocalDir { root })
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io {
        action,
        path,
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory: write, fsync,
/// rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_error("create", dir))?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(io_error("create", &tmp))?;
    file.write_all(bytes).map_err(io_error("write", &tmp))?;
    file.sync_all().map_err(io_error("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io_error("rename", &tmp))
}

impl CheckpointStore for LocalDir {
    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), CheckpointError> {
        write_atomic(&self.root.join(name), bytes)
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, CheckpointError> {
        let path = self.root.join(name);
        fs::read(&path).map_err(io_error("read", &path))
    }

    fn list(&self, prefix: &str) -> Result<Vec<StoredFile>, CheckpointError> {
        let mut found = Vec::new();
        let mut dirs = vec![self.root.join(prefix)];
        while let Some(dir) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("list", &dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io_error("list", &dir))?;
                let path = entry.path();
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_none_or(|e| e != "tmp") {
                    let Ok(rel) = path.strip_prefix(&self.root) else {
                        continue;
                    };
                    found.push(StoredFile {
                        name: rel.to_string_lossy().replace('\\', "/"),
                        bytes: meta.len(),
                        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    });
                }
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    fn delete(&self, name: &str) -> Result<(), CheckpointError> {
        let path = self.root.join(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn local_dir(&self) -> PathBuf {
        self.root.clone()
    }
}

/// The first bytes of every checkpoint file.
const MAGIC: &[u8; 8] = b"EDDYCKPT";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 4 + 8;

/// Wraps `payload` in the checkpoint file header: magic, version, CRC-32 and length.
fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks the header of a checkpoint file read from `path` and returns its payload.
fn unseal(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, CheckpointError> {
    let damaged = |reason: String| CheckpointError::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < HEADER {
        return Err(damaged(format!(
            "truncated: {} bytes, shorter than the {HEADER}-byte header",
            bytes.len()
        )));
    }
    if &bytes[..8] != MAGIC {
        return Err(damaged("not an Eddy checkpoint file (wrong magic)".into()));
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let version = word(8);
    if version != FORMAT_VERSION {
        return Err(damaged(format!(
            "format version {version}; this build of Eddy reads version {FORMAT_VERSION}"
        )));
    }
    let crc = word(12);
    let len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != len {
        return Err(damaged(format!(
            "truncated: the header says {len} bytes of state, the file holds {}",
            payload.len()
        )));
    }
    if crc32fast::hash(payload) != crc {
        return Err(damaged("its CRC-32 does not match its contents".into()));
    }
    Ok(payload.to_vec())
}

/// The next checkpoint boundary above `t`: a multiple of `every`, or `u64::MAX`.
pub(crate) fn boundary_above(every: u64, t: u64) -> u64 {
    (t / every).saturating_add(1).saturating_mul(every)
}

/// Whether moving a frontier from `from` to `to` crosses a boundary: `(from, to]` holds one.
pub(crate) fn crosses(every: u64, from: u64, to: u64) -> bool {
    to > from && (to == u64::MAX || to / every > from / every)
}

/// The largest boundary in `(lo, hi]`, if any.
fn largest_boundary(every: u64, lo: u64, hi: u64) -> Option<u64> {
    if hi == u64::MAX {
        return (lo < u64::MAX).then_some(u64::MAX);
    }
    let b = hi / every * every;
    (b > lo).then_some(b)
}

/// The participant name of operator `part` of a stage with several.
pub(crate) fn part_stage(stage: &str, part: &str) -> String {
    format!("{stage}/{part}")
}

/// A stage name as one path component: letters, digits, `_`, `-` and `.` kept, others as `%XX`.
fn escape(stage: &str) -> String {
    let mut out = String::with_capacity(stage.len());
    for b in stage.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && !out.is_empty()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn part_name(stage: &str, worker: usize, lo: u64, hi: u64) -> String {
    format!("parts/{}/{worker:05}/{lo:020}-{hi:020}", escape(stage))
}

/// `(stage dir, worker, lo, hi)` of a part's name.
fn parse_part(name: &str) -> Option<(&str, usize, u64, u64)> {
    let rest = name.strip_prefix("parts/")?;
    let mut it = rest.rsplitn(3, '/');
    let range = it.next()?;
    let worker = it.next()?.parse().ok()?;
    let stage = it.next()?;
    let (lo, hi) = range.split_once('-')?;
    Some((stage, worker, lo.parse().ok()?, hi.parse().ok()?))
}

fn manifest_name(checkpoint: u64) -> String {
    format!("manifests/{checkpoint:020}")
}

/// A complete checkpoint: the boundary, and the part of every participant.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Manifest {
    pipeline: String,
    checkpoint: u64,
    every_ms: u64,
    workers: usize,
    /// Part names by escaped stage name and worker.
    parts: BTreeMap<String, BTreeMap<usize, String>>,
    bytes: u64,
}

/// A pipeline's file sink, as the checkpoint machinery sees it: where its staged files wait and
/// where they go.
#[derive(Clone, Debug)]
pub(crate) struct FileSinkDirs {
    /// The sink's stage name.
    pub(crate) stage: String,
    /// The output directory.
    pub(crate) dir: PathBuf,
    /// The result files' name prefix.
    pub(crate) prefix: String,
}

impl FileSinkDirs {
    fn pending(&self, root: &Path) -> PathBuf {
        pending_dir(root, &self.stage)
    }
}

/// Where a file sink's closed result files wait for their checkpoint.
fn pending_dir(root: &Path, stage: &str) -> PathBuf {
    root.join("pending").join(escape(stage))
}

/// The name of the result file of `worker` for the interval ending at `end`.
pub(crate) fn segment_file_name(prefix: &str, worker: usize, end: u64, extension: &str) -> String {
    format!("{prefix}-{worker:05}-{end:020}.{extension}")
}

/// The interval end of a result file named by [`segment_file_name`] with `prefix`.
fn segment_end(prefix: &str, file_name: &str) -> Option<u64> {
    let rest = file_name.strip_prefix(prefix)?.strip_prefix('-')?;
    let (worker, rest) = rest.split_once('-')?;
    let (end, _extension) = rest.split_once('.')?;
    (worker.len() == 5 && end.len() == 20 && worker.bytes().all(|b| b.is_ascii_digit()))
        .then(|| end.parse().ok())
        .flatten()
}

/// What a run resumed from.
#[derive(Clone, Debug)]
pub(crate) struct Restored {
    pub(crate) checkpoint: u64,
    workers: usize,
    parts: BTreeMap<String, BTreeMap<usize, String>>,
}

/// What the summary and the metrics endpoint say about checkpoints.
#[derive(Debug, Default)]
pub struct CheckpointStats {
    taken: AtomicU64,
    last: AtomicU64,
    last_duration_us: AtomicU64,
    max_duration_us: AtomicU64,
    total_duration_us: AtomicU64,
    last_bytes: AtomicU64,
    max_bytes: AtomicU64,
    last_at: Mutex<Option<Instant>>,
    restored: Mutex<Option<(u64, Duration)>>,
    skipped: Mutex<Vec<String>>,
}

/// A reading of [`CheckpointStats`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointReport {
    /// Checkpoints completed by this run (process 0 completes them).
    pub taken: u64,
    /// The newest complete checkpoint (a boundary in event-time ms; `u64::MAX`: the end).
    pub last: Option<u64>,
    /// How long the newest took, from its first part to its manifest.
    pub last_duration: Duration,
    /// The longest any took.
    pub max_duration: Duration,
    /// Their mean.
    pub mean_duration: Duration,
    /// The newest one's size (all its parts), bytes.
    pub last_bytes: u64,
    /// The largest one's size, bytes.
    pub max_bytes: u64,
    /// Time since the newest completed.
    pub age: Option<Duration>,
    /// The checkpoint this run resumed from, and how long restoring took (directory clean-up
    /// and every worker's state loaded).
    pub resumed: Option<(u64, Duration)>,
    /// Newer checkpoints that could not be used, each with why.
    pub skipped: Vec<String>,
}

/// A checkpoint boundary for people: a watermark, or the end of the input.
fn boundary_text(w: u64) -> String {
    if w == u64::MAX {
        "the end of the input".to_string()
    } else {
        format!("watermark {w}")
    }
}

impl std::fmt::Display for CheckpointReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.last {
            Some(last) => write!(
                f,
                "checkpoints: {} taken, the last at {}; size up to {} bytes; duration mean {:.1} \
                 ms, max {:.1} ms",
                self.taken,
                boundary_text(last),
                self.max_bytes,
                self.mean_duration.as_secs_f64() * 1e3,
                self.max_duration.as_secs_f64() * 1e3
            )?,
            None => write!(f, "checkpoints: none completed by this process")?,
        }
        if let Some((at, took)) = self.resumed {
            write!(
                f,
                "\nresumed from the checkpoint at {}; recovery took {:.1} ms",
                boundary_text(at),
                took.as_secs_f64() * 1e3
            )?;
        }
        for skipped in &self.skipped {
            write!(f, "\nskipped a checkpoint: {skipped}")?;
        }
        Ok(())
    }
}

impl CheckpointStats {
    /// A reading now.
    pub fn report(&self) -> CheckpointReport {
        let taken = self.taken.load(Ordering::Relaxed);
        let us = |a: &AtomicU64| Duration::from_micros(a.load(Ordering::Relaxed));
        CheckpointReport {
            taken,
            last: (taken > 0).then(|| self.last.load(Ordering::Relaxed)),
            last_duration: us(&self.last_duration_us),
            max_duration: us(&self.max_duration_us),
            mean_duration: us(&self.total_duration_us) / taken.max(1) as u32,
            last_bytes: self.last_bytes.load(Ordering::Relaxed),
            max_bytes: self.max_bytes.load(Ordering::Relaxed),
            age: self
                .last_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .map(|at| at.elapsed()),
            resumed: *self.restored.lock().unwrap_or_else(PoisonError::into_inner),
            skipped: self
                .skipped
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    fn note_taken(&self, checkpoint: u64, took: Duration, bytes: u64) {
        let us = took.as_micros() as u64;
        self.taken.fetch_add(1, Ordering::Relaxed);
        self.last.store(checkpoint, Ordering::Relaxed);
        self.last_duration_us.store(us, Ordering::Relaxed);
        self.max_duration_us.fetch_max(us, Ordering::Relaxed);
        self.total_duration_us.fetch_add(us, Ordering::Relaxed);
        self.last_bytes.store(bytes, Ordering::Relaxed);
        self.max_bytes.fetch_max(bytes, Ordering::Relaxed);
        *self.last_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }
}

/// The checkpoint machinery of one process: the store, the interval, what the run resumed from.
pub(crate) struct Checkpoints {
    store: Arc<dyn CheckpointStore>,
    pipeline: String,
    pub(crate) every: u64,
    pub(crate) restored: Option<Restored>,
    pub(crate) stats: Arc<CheckpointStats>,
    failures: Failures,
    /// Stages whose state failed to restore or save: the coordinator completes no more
    /// checkpoints once any participant failed.
    failed: Arc<AtomicBool>,
    /// Writes the parts, off the workers' threads.
    writer: PartWriter,
    /// The newest complete checkpoint (0: none yet): set by the coordinator in process 0, read
    /// from the store at most every [`COMMITTED_REFRESH`] in the other processes.
    committed: AtomicU64,
    committed_read: Mutex<Option<Instant>>,
    /// Whether this process runs the coordinator (process 0).
    coordinates: bool,
}

/// How often a process without the coordinator looks for newly completed checkpoints.
const COMMITTED_REFRESH: Duration = Duration::from_millis(500);

impl Checkpoints {
    /// Opens the store and finds the newest usable checkpoint. Process 0 (`clean_up`) then
    /// makes the store and the output directories agree with it (module docs, Recovery); it
    /// runs before the workers connect, so no participant of this run has written yet.
    pub(crate) fn open(
        store: Arc<dyn CheckpointStore>,
        pipeline: &str,
        every: u64,
        sinks: &[FileSinkDirs],
        clean_up: bool,
        failures: Failures,
    ) -> Result<Self, CheckpointError> {
        let started = Instant::now();
        let stats = Arc::new(CheckpointStats::default());
        let manifests = store.list("manifests/")?;
        let mut usable = Vec::new();
        for file in manifests.iter().rev() {
            match read_manifest(&*store, &file.name) {
                Ok(m) if m.pipeline != pipeline => {
                    return Err(CheckpointError::Incompatible(format!(
                        "the checkpoint directory {} holds checkpoints of pipeline '{}', not '{}'; \
                         give each pipeline its own --checkpoint-dir",
                        store.local_dir().display(),
                        m.pipeline,
                        pipeline
                    )))
                }
                Ok(m) => {
                    usable.push(m);
                    if usable.len() == 2 {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(
                        "checkpoint {} is not usable: {error}; trying the one before",
                        file.name
                    );
                    stats
                        .skipped
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(error.to_string());
                    if clean_up {
                        let aside = format!("damaged/{}", file.name.replace('/', "-"));
                        store.put(&aside, &store.get(&file.name)?)?;
                        store.delete(&file.name)?;
                    }
                }
            }
        }
        let restored = usable.first().map(|m| Restored {
            checkpoint: m.checkpoint,
            workers: m.workers,
            parts: m.parts.clone(),
        });
        if clean_up {
            let keep: BTreeSet<&String> = usable
                .iter()
                .flat_map(|m| m.parts.values().flat_map(|w| w.values()))
                .collect();
            for file in store.list("parts/")? {
                if !keep.contains(&file.name) {
                    store.delete(&file.name)?;
                }
            }
            for file in manifests.iter().rev().skip(usable.len()) {
                if usable
                    .iter()
                    .all(|m| manifest_name(m.checkpoint) != file.name)
                {
                    store.delete(&file.name)?;
                }
            }
            let at = restored.as_ref().map_or(0, |r| r.checkpoint);
            for sink in sinks {
                settle_sink(&store.local_dir(), sink, at)?;
            }
        }
        if let Some(r) = &restored {
            tracing::info!(
                "resuming from the checkpoint at {} in {}",
                boundary_text(r.checkpoint),
                store.local_dir().display()
            );
            *stats
                .restored
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some((r.checkpoint, started.elapsed()));
        }
        let failed = Arc::new(AtomicBool::new(false));
        Ok(Checkpoints {
            writer: PartWriter::start(
                Arc::clone(&store),
                Arc::clone(&failures),
                Arc::clone(&failed),
            ),
            store,
            pipeline: pipeline.to_string(),
            every: every.max(1),
            stats,
            failures,
            failed,
            committed: AtomicU64::new(restored.as_ref().map_or(0, |r| r.checkpoint)),
            committed_read: Mutex::new(None),
            coordinates: clean_up,
            restored,
        })
    }

    /// The newest complete checkpoint, if any.
    fn committed(&self, coordinated_here: bool) -> Option<u64> {
        if !coordinated_here {
            let mut read = self
                .committed_read
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if read.is_none_or(|at| at.elapsed() >= COMMITTED_REFRESH) {
                *read = Some(Instant::now());
                let newest = self.store.list("manifests/").ok().and_then(|files| {
                    let name = files.last()?.name.clone();
                    name.strip_prefix("manifests/")?.parse::<u64>().ok()
                });
                if let Some(w) = newest {
                    self.committed.fetch_max(w, Ordering::Relaxed);
                }
            }
        }
        Some(self.committed.load(Ordering::Relaxed)).filter(|&w| w > 0)
    }

    /// Adds time spent restoring on the workers (state loaded) to the recovery time.
    pub(crate) fn note_recovery(&self, took: Duration) {
        if let Some((_, total)) = self
            .stats
            .restored
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            *total += took;
        }
    }

    fn fail(&self, error: CheckpointError) {
        fail(&self.failures, &self.failed, error);
    }

    /// Waits until every part handed over is written (at the end of this process's run).
    pub(crate) fn flush(&self) {
        self.writer.flush();
    }

    /// Tries to complete the next checkpoint. Returns the boundary completed, if any.
    fn complete_next(
        &self,
        participants: &[String],
        workers: usize,
        sinks: &[FileSinkDirs],
        last: Option<u64>,
    ) -> Result<Option<u64>, CheckpointError> {
        let files = self.store.list("parts/")?;
        // Parts by (escaped stage, worker). Only this run's parts count: every one it writes
        // starts at or after the checkpoint it resumed from, while the parts kept from the run
        // before (for falling back) start below it — valid in that run's execution, which
        // after a restore at another worker count stamped records differently.
        let floor = self.restored.as_ref().map_or(0, |r| r.checkpoint);
        let mut by_participant: PartsByParticipant<'_> = BTreeMap::new();
        for file in &files {
            let Some((stage, worker, lo, hi)) = parse_part(&file.name) else {
                continue;
            };
            if lo >= floor {
                by_participant
                    .entry((stage, worker))
                    .or_default()
                    .push((lo, hi, file));
            }
        }
        let expected: Vec<(String, usize)> = participants
            .iter()
            .flat_map(|s| (0..workers).map(move |w| (escape(s), w)))
            .collect();
        if expected.is_empty() {
            return Ok(None);
        }
        let mut candidates: Vec<u64> = by_participant
            .values()
            .flatten()
            .filter_map(|(lo, hi, _)| largest_boundary(self.every, *lo, *hi))
            .filter(|b| last.is_none_or(|l| *b > l))
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        'candidate: for &w in candidates.iter().rev() {
            let mut chosen = Vec::with_capacity(expected.len());
            for (stage, worker) in &expected {
                let part = by_participant
                    .get(&(stage.as_str(), *worker))
                    .and_then(|parts| parts.iter().find(|(lo, hi, _)| *lo < w && w <= *hi));
                match part {
                    Some((_, _, file)) => chosen.push((stage.clone(), *worker, *file)),
                    None => continue 'candidate,
                }
            }
            self.commit(w, workers, chosen, sinks)?;
            return Ok(Some(w));
        }
        Ok(None)
    }

    /// Writes the manifest of checkpoint `w`, renames the sinks' files into place, prunes.
    fn commit(
        &self,
        w: u64,
        workers: usize,
        chosen: Vec<(String, usize, &StoredFile)>,
        sinks: &[FileSinkDirs],
    ) -> Result<(), CheckpointError> {
        // The cut began when the first participant crossed `w`; a part valid up to the end
        // (an idle or finished reader's) may be much older and says nothing about this one.
        let crossing = chosen
            .iter()
            .filter(|(_, _, f)| parse_part(&f.name).is_some_and(|(_, _, _, hi)| hi < u64::MAX))
            .map(|(_, _, f)| f.modified)
            .min();
        let first_written = crossing
            .or_else(|| chosen.iter().map(|(_, _, f)| f.modified).max())
            .unwrap_or_else(SystemTime::now);
        let bytes = chosen.iter().map(|(_, _, f)| f.bytes).sum();
        let mut parts: BTreeMap<String, BTreeMap<usize, String>> = BTreeMap::new();
        for (stage, worker, file) in &chosen {
            parts
                .entry(stage.clone())
                .or_default()
                .insert(*worker, file.name.clone());
        }
        let manifest = Manifest {
            pipeline: self.pipeline.clone(),
            checkpoint: w,
            every_ms: self.every,
            workers,
            parts,
            bytes,
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        self.store.put(&manifest_name(w), &seal(&json))?;
        self.committed.fetch_max(w, Ordering::Relaxed);
        let took = SystemTime::now()
            .duration_since(first_written)
            .unwrap_or_default();
        self.stats.note_taken(w, took, bytes);
        let line = format!(
            "checkpoint at {} complete: {} parts, {bytes} bytes, {:.1} ms from its first part",
            boundary_text(w),
            chosen.len(),
            took.as_secs_f64() * 1e3
        );
        if self.stats.taken.load(Ordering::Relaxed) == 1 {
            tracing::info!("{line} (later ones are logged at debug level)");
        } else {
            tracing::debug!("{line}");
        }
        for sink in sinks {
            publish(&sink.pending(&self.store.local_dir()), sink, w)?;
        }
        self.prune(&manifest)
    }

    /// Keeps the newest two manifests and the parts they name; removes parts no later
    /// checkpoint can use.
    fn prune(&self, newest: &Manifest) -> Result<(), CheckpointError> {
        let manifests = self.store.list("manifests/")?;
        let mut keep: BTreeSet<String> = newest
            .parts
            .values()
            .flat_map(|w| w.values().cloned())
            .collect();
        if manifests.len() >= 2 {
            let previous = &manifests[manifests.len() - 2];
            if let Ok(m) = read_manifest(&*self.store, &previous.name) {
                keep.extend(m.parts.values().flat_map(|w| w.values().cloned()));
            }
            for old in &manifests[..manifests.len() - 2] {
                self.store.delete(&old.name)?;
            }
        }
        for file in self.store.list("parts/")? {
            let stale = parse_part(&file.name).is_some_and(|(_, _, _, hi)| hi < newest.checkpoint);
            if stale && !keep.contains(&file.name) {
                self.store.delete(&file.name)?;
            }
        }
        Ok(())
    }
}

/// Records a checkpoint failure: the run ends with it, and no checkpoint completes after it.
fn fail(failures: &Failures, failed: &AtomicBool, error: CheckpointError) {
    failed.store(true, Ordering::Relaxed);
    failures
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(EngineError::Checkpoint(error));
}

/// Writes parts on a thread of its own, so a worker that saves its state hands the bytes over
/// and goes on instead of waiting for the disk; parts of one participant are written in the
/// order they were saved. A part appears in the store (renamed into place after its fsync)
/// only once it is durable, so the coordinator never counts one that is not. The queue is
/// bounded: workers wait when the disk falls far behind.
struct PartWriter {
    queue: Mutex<Option<std::sync::mpsc::SyncSender<NamedPart>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A part's name and its sealed bytes.
type NamedPart = (String, Vec<u8>);

/// Parts handed over and not yet written, at most.
const PART_QUEUE: usize = 256;

impl PartWriter {
    fn start(store: Arc<dyn CheckpointStore>, failures: Failures, failed: Arc<AtomicBool>) -> Self {
        let (queue, parts) = std::sync::mpsc::sync_channel::<NamedPart>(PART_QUEUE);
        let thread = std::thread::Builder::new()
            .name("eddy-parts".into())
            .spawn(move || {
                for (name, bytes) in parts {
                    if failed.load(Ordering::Relaxed) {
                        continue;
                    }
                    if let Err(error) = store.put(&name, &bytes) {
                        fail(&failures, &failed, error);
                    }
                }
            })
            .expect("the checkpoint part writer thread starts");
        PartWriter {
            queue: Mutex::new(Some(queue)),
            thread: Mutex::new(Some(thread)),
        }
    }

    fn write(&self, name: String, bytes: Vec<u8>) {
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = queue.as_ref() {
            // The writer thread lives until `flush`: a send fails only after it.
            let _ = queue.send((name, bytes));
        }
    }

    fn flush(&self) {
        drop(
            self.queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        if let Some(thread) = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = thread.join();
        }
    }
}

/// Reads and checks a manifest and every part it names.
fn read_manifest(store: &dyn CheckpointStore, name: &str) -> Result<Manifest, CheckpointError> {
    let path = store.path_of(name);
    let payload = unseal(&path, &store.get(name)?)?;
    let manifest: Manifest =
        serde_json::from_slice(&payload).map_err(|e| CheckpointError::Damaged {
            path: path.clone(),
            reason: format!("the manifest does not parse: {e}"),
        })?;
    for part in manifest.parts.values().flat_map(|w| w.values()) {
        let bytes = store.get(part).map_err(|e| match e {
            CheckpointError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                CheckpointError::Damaged {
                    path: store.path_of(part),
                    reason: format!("missing: checkpoint {name} names it"),
                }
            }
            other => other,
        })?;
        unseal(&store.path_of(part), &bytes)?;
    }
    Ok(manifest)
}

/// Renames the staged result files of intervals ending at or before `w` into the output
/// directory. A file already renamed (by an earlier attempt) is skipped.
fn publish(pending: &Path, sink: &FileSinkDirs, w: u64) -> Result<(), CheckpointError> {
    let entries = match fs::read_dir(pending) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("list", pending)(e)),
    };
    let mut created = false;
    for entry in entries {
        let entry = entry.map_err(io_error("list", pending))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if segment_end(&sink.prefix, &name).is_some_and(|end| end <= w) {
            if !created {
                fs::create_dir_all(&sink.dir).map_err(io_error("create", &sink.dir))?;
                created = true;
            }
            let to = sink.dir.join(&name);
            match fs::rename(entry.path(), &to) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_error("rename", &entry.path())(e))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Makes a file sink's directories agree with checkpoint `at` before a run: staged files of
/// intervals up to `at` published, later ones and unfinished ones removed, and result files of
/// intervals after `at` removed from the output directory (a newer checkpoint that turned out
/// damaged may have published them).
fn settle_sink(root: &Path, sink: &FileSinkDirs, at: u64) -> Result<(), CheckpointError> {
    let pending = sink.pending(root);
    publish(&pending, sink, at)?;
    remove_where(&pending, |_| true)?;
    remove_where(&sink.dir, |name| {
        segment_end(&sink.prefix, name).is_some_and(|end| end > at)
    })
}

fn remove_where(dir: &Path, doomed: impl Fn(&str) -> bool) -> Result<(), CheckpointError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error("list", dir))?;
        if entry.file_type().is_ok_and(|t| t.is_file())
            && doomed(&entry.file_name().to_string_lossy())
        {
            fs::remove_file(entry.path()).map_err(io_error("remove", &entry.path()))?;
        }
    }
    Ok(())
}

/// Parts `(lo, hi, file)` by escaped stage name and worker.
type PartsByParticipant<'a> = BTreeMap<(&'a str, usize), Vec<(u64, u64, &'a StoredFile)>>;

/// Process 0's coordinator thread: completes checkpoints as their parts arrive.
pub(crate) struct Coordinator {
    thread: Option<JoinHandle<()>>,
    finishing: Arc<AtomicBool>,
    /// The run was stopped: no checkpoint at the end of the input will come, only the one at the
    /// boundary the sources stopped at.
    stopped: Arc<AtomicBool>,
}

/// How often the coordinator looks for new parts.
const COORDINATOR_POLL: Duration = Duration::from_millis(20);
/// How long the coordinator waits, once this process's workers are done, for the other
/// processes' last parts.
const FINAL_WAIT: Duration = Duration::from_secs(60);

impl Coordinator {
    pub(crate) fn start(
        checkpoints: Arc<Checkpoints>,
        participants: Vec<String>,
        workers: usize,
        sinks: Vec<FileSinkDirs>,
    ) -> Self {
        let finishing = Arc::new(AtomicBool::new(false));
        let finish = Arc::clone(&finishing);
        let stopped = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopped);
        let thread = std::thread::Builder::new()
            .name("eddy-checkpoints".into())
            .spawn(move || {
                let mut last = checkpoints.restored.as_ref().map(|r| r.checkpoint);
                let mut finishing_since = None;
                loop {
                    if checkpoints.failed.load(Ordering::Relaxed) || last == Some(u64::MAX) {
                        return;
                    }
                    let failed = !checkpoints
                        .failures
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .is_empty();
                    if failed {
                        return;
                    }
                    match checkpoints.complete_next(&participants, workers, &sinks, last) {
                        Ok(Some(w)) => {
                            last = Some(w);
                            continue;
                        }
                        Ok(None) => {}
                        Err(error) => {
                            checkpoints.fail(error);
                            return;
                        }
                    }
                    if finish.load(Ordering::Relaxed) {
                        if stop.load(Ordering::Relaxed) {
                            // Stopped: every part of this process is written now, so one more
                            // look completes the checkpoint at the stop (the readers read on to
                            // a boundary); the next run resumes from the newest.
                            loop {
                                match checkpoints.complete_next(
                                    &participants,
                                    workers,
                                    &sinks,
                                    last,
                                ) {
                                    Ok(Some(w)) => last = Some(w),
                                    Ok(None) => return,
                                    Err(error) => return checkpoints.fail(error),
                                }
                            }
                        }
                        let since = *finishing_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > FINAL_WAIT {
                            checkpoints.fail(CheckpointError::Incompatible(format!(
                                "the final checkpoint did not complete within {FINAL_WAIT:?} of \
                                 this process's end: parts of other processes are missing; run \
                                 the job again to finish it"
                            )));
                            return;
                        }
                    }
                    std::thread::sleep(COORDINATOR_POLL);
                }
            })
            .expect("the checkpoint coordinator thread starts");
        Coordinator {
            thread: Some(thread),
            finishing,
            stopped,
        }
    }

    /// Waits, after this process's workers finished, for the final checkpoint to complete;
    /// after a stop (`stopped`), only for the checkpoints whose parts are all there (the one at
    /// the boundary the sources stopped at, when every process reached it).
    pub(crate) fn finish(mut self, stopped: bool) {
        self.stopped.store(stopped, Ordering::Relaxed);
        self.finishing.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One participant's handle on checkpoints (a stage on one worker), from
/// [`StageContext::checkpoint`](crate::StageContext::checkpoint).
#[derive(Clone)]
pub struct StageCheckpoint {
    shared: Arc<Checkpoints>,
    stage: Arc<str>,
    partition: Partition,
}

impl StageCheckpoint {
    pub(crate) fn new(shared: Arc<Checkpoints>, stage: Arc<str>, partition: Partition) -> Self {
        StageCheckpoint {
            shared,
            stage,
            partition,
        }
    }

    /// The checkpoint boundary the run resumed from, if it did: the stage's state is restored
    /// as of the cut there, and every result it would emit stamped below it is already
    /// downstream.
    pub fn restored_at(&self) -> Option<u64> {
        self.shared.restored.as_ref().map(|r| r.checkpoint)
    }

    /// The newest complete checkpoint, if one completed (or was resumed from): sources tie
    /// what they may forget to it (see [`SourceReader::committed`](crate::SourceReader::committed)).
    pub fn committed(&self) -> Option<u64> {
        self.shared.committed(self.shared.coordinates)
    }

    /// The worker count of the run that wrote the checkpoint resumed from (0 if none).
    pub fn restored_workers(&self) -> usize {
        self.shared.restored.as_ref().map_or(0, |r| r.workers)
    }

    /// Whether the frontier moving from `from` to `to` crosses a checkpoint boundary, so that
    /// the stage must [`save`](Self::save) its state (before it folds anything stamped at or
    /// after `from`).
    pub fn crosses(&self, from: u64, to: u64) -> bool {
        crosses(self.shared.every, from, to)
    }

    /// The handle of operator `part` of this stage, for a stage whose operators each write a
    /// part ([`Stream::checkpointed_parts`](crate::Stream::checkpointed_parts)).
    pub fn part(&self, part: &str) -> StageCheckpoint {
        StageCheckpoint {
            shared: Arc::clone(&self.shared),
            stage: Arc::from(part_stage(&self.stage, part)),
            partition: self.partition,
        }
    }

    /// The checkpoint interval (event-time ms).
    pub fn every(&self) -> u64 {
        self.shared.every
    }

    /// The first checkpoint boundary above `t`.
    pub fn boundary_above(&self, t: u64) -> u64 {
        boundary_above(self.shared.every, t)
    }

    /// Writes this stage's part for the boundaries in `(from, to]`: `entries` is its whole
    /// state, each entry encoded on its own (so a restore at another worker count can route
    /// entries by key). A failure ends the run with the error.
    pub fn save<E: Serialize>(&self, from: u64, to: u64, entries: impl IntoIterator<Item = E>) {
        let mut payload = vec![0u8; 8];
        let mut count = 0u64;
        for entry in entries {
            if let Err(e) = bincode::serialize_into(&mut payload, &entry) {
                let path = self.shared.store.path_of(&self.part_name(from, to));
                return self.shared.fail(CheckpointError::Decode {
                    stage: self.stage.to_string(),
                    path,
                    reason: format!("encoding failed: {e}"),
                });
            }
            count += 1;
        }
        payload[..8].copy_from_slice(&count.to_le_bytes());
        self.save_bytes(from, to, &payload);
    }

    pub(crate) fn save_bytes(&self, from: u64, to: u64, payload: &[u8]) {
        let name = self.part_name(from, to);
        self.shared.writer.write(name, seal(payload));
    }

    fn part_name(&self, from: u64, to: u64) -> String {
        part_name(&self.stage, self.partition.index, from, to)
    }

    /// The entries of this stage's restored state that belong to this worker: all of its own
    /// part when the worker count is unchanged; otherwise the entries of every old part whose
    /// `route` (the key's hash, as the stage exchanges by) modulo the worker count is this
    /// worker's index. Empty when the run did not resume. A failure ends the run with the
    /// error.
    pub fn restore<E: DeserializeOwned>(&self, route: impl Fn(&E) -> u64) -> Vec<E> {
        let started = Instant::now();
        let rescaled = self
            .shared
            .restored
            .as_ref()
            .is_some_and(|r| r.workers != self.partition.count);
        let mut out = Vec::new();
        for (_, name, payload) in self.restored_parts(|_| true) {
            if let Err(error) = decode_entries(&payload, |e: E| {
                if !rescaled
                    || (route(&e) % self.partition.count as u64) as usize == self.partition.index
                {
                    out.push(e);
                }
            }) {
                self.shared.fail(CheckpointError::Decode {
                    stage: self.stage.to_string(),
                    path: self.shared.store.path_of(&name),
                    reason: error.to_string(),
                });
                return Vec::new();
            }
        }
        self.shared
            .note_recovery_of(self.partition.index, started.elapsed());
        out
    }

    /// The restored parts of this stage this worker reads: `(old worker, part name, payload)`,
    /// its own when the worker count is unchanged, else those of the old workers `keep` takes.
    pub(crate) fn restored_parts(
        &self,
        keep: impl Fn(usize) -> bool,
    ) -> Vec<(usize, String, Vec<u8>)> {
        let Some(restored) = &self.shared.restored else {
            return Vec::new();
        };
        let Some(parts) = restored.parts.get(&escape(&self.stage)) else {
            return Vec::new();
        };
        let same = restored.workers == self.partition.count;
        let mut out = Vec::new();
        for (&worker, name) in parts {
            let mine = if same {
                worker == self.partition.index
            } else {
                keep(worker)
            };
            if !mine {
                continue;
            }
            let read = self
                .shared
                .store
                .get(name)
                .and_then(|bytes| unseal(&self.shared.store.path_of(name), &bytes));
            match read {
                Ok(payload) => out.push((worker, name.clone(), payload)),
                Err(error) => {
                    self.shared.fail(error);
                    return Vec::new();
                }
            }
        }
        out
    }

    /// Where the file sink `stage` stages its closed result files.
    pub(crate) fn pending_dir(&self, stage: &str) -> PathBuf {
        pending_dir(&self.shared.store.local_dir(), stage)
    }

    pub(crate) fn decode_failed(&self, name: &str, reason: String) {
        self.shared.fail(CheckpointError::Decode {
            stage: self.stage.to_string(),
            path: self.shared.store.path_of(name),
            reason,
        });
    }
}

/// What a stateful operator keeps of checkpoints on one worker: the checkpoint the run resumed
/// from, and the frontier its state is the fold up to. From
/// [`StageContext::checkpointer`](crate::StageContext::checkpointer); inert without
/// checkpoints.
///
/// The pattern: when the operator is built, [`restore`](Self::restore) its entries; in every
/// activation, once the input is taken in (stashed) and before anything is folded, call
/// [`at_frontier`](Self::at_frontier) with the input frontier; send nothing stamped below
/// [`resumed_at`](Self::resumed_at).
pub struct Checkpointer {
    checkpoint: Option<StageCheckpoint>,
    resumed_at: u64,
    folded: u64,
}

impl Checkpointer {
    pub(crate) fn new(checkpoint: Option<StageCheckpoint>) -> Self {
        let resumed_at = checkpoint
            .as_ref()
            .and_then(|c| c.restored_at())
            .unwrap_or(0);
        Checkpointer {
            checkpoint,
            resumed_at,
            folded: resumed_at,
        }
    }

    /// The checkpoint the run resumed from (0: none): results stamped below it were sent
    /// before it.
    pub fn resumed_at(&self) -> u64 {
        self.resumed_at
    }

    /// The entries of this worker's restored state ([`StageCheckpoint::restore`]); empty when
    /// the run did not resume.
    pub fn restore<E: DeserializeOwned>(&self, route: impl Fn(&E) -> u64) -> Vec<E> {
        match &self.checkpoint {
            Some(c) if self.resumed_at > 0 => c.restore(route),
            _ => Vec::new(),
        }
    }

    /// The input frontier is `limit`: if it crossed a checkpoint boundary since the last call,
    /// writes the part `entries` gives (the whole state, the stash included); from now on the
    /// state is the fold up to `limit`.
    pub fn at_frontier<E: Serialize, I: IntoIterator<Item = E>>(
        &mut self,
        limit: u64,
        entries: impl FnOnce() -> I,
    ) {
        if let Some(c) = self
            .checkpoint
            .as_ref()
            .filter(|c| c.crosses(self.folded, limit))
        {
            c.save(self.folded, limit, entries());
        }
        self.folded = self.folded.max(limit);
    }
}

impl Checkpoints {
    /// Worker 0 of each process adds its restore time to the recovery time (the workers
    /// restore in parallel, so one worker's time stands for all).
    fn note_recovery_of(&self, worker: usize, took: Duration) {
        if worker == 0 {
            self.note_recovery(took);
        }
    }
}

/// Decodes the entries of a payload written by [`StageCheckpoint::save`], handing each to `f`.
fn decode_entries<E: DeserializeOwned>(
    payload: &[u8],
    mut f: impl FnMut(E),
) -> Result<(), bincode::Error> {
    use bincode::Options;
    // As `bincode::deserialize` reads, but from the slice: a damaged length is an error, never
    // an allocation of that length.
    let options = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes();
    let mut decoder = bincode::Deserializer::from_slice(payload, options);
    let count = u64::deserialize(&mut decoder)?;
    for _ in 0..count {
        f(E::deserialize(&mut decoder)?);
    }
    Ok(())
}

/// Encodes a value as a part's payload (sources' positions).
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serialize(value).expect("checkpoint values serialize")
}

/// Decodes a value written by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_and_crossings() {
        assert!(crosses(10, 9, 10));
        assert!(!crosses(10, 10, 19));
        assert!(crosses(10, 10, 20));
        assert!(crosses(10, 10, u64::MAX));
        assert!(!crosses(10, 5, 5));
        assert_eq!(largest_boundary(10, 5, 27), Some(20));
        assert_eq!(largest_boundary(10, 20, 27), None);
        assert_eq!(largest_boundary(10, 20, u64::MAX), Some(u64::MAX));
        assert_eq!(boundary_above(10, 19), 20);
        assert_eq!(boundary_above(10, 20), 30);
        assert_eq!(boundary_above(10, u64::MAX - 1), u64::MAX);
    }

    #[test]
    fn names_round_trip() {
        let name = part_name("bid counts/x", 3, 7, u64::MAX);
        assert_eq!(
            parse_part(&name),
            Some(("bid%20counts%2Fx", 3, 7, u64::MAX))
        );
        let file = segment_file_name("part", 2, 1_700_000_010_000, "parquet");
        assert_eq!(segment_end("part", &file), Some(1_700_000_010_000));
        assert_eq!(segment_end("part", "part-00002.parquet"), None);
        assert_eq!(segment_end("part", ".part-00002-x.parquet.tmp"), None);
    }

    #[test]
    fn damaged_files_are_named_with_what_is_wrong() {
        let path = Path::new("/ckpt/parts/x");
        let sealed = seal(b"state");
        assert_eq!(unseal(path, &sealed).unwrap(), b"state");
        let truncated = unseal(path, &sealed[..sealed.len() - 1])
            .unwrap_err()
            .to_string();
        assert!(
            truncated.contains("/ckpt/parts/x") && truncated.contains("truncated"),
            "{truncated}"
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(unseal(path, &flipped)
            .unwrap_err()
            .to_string()
            .contains("CRC"));
        let mut version = sealed;
        version[8] = 9;
        assert!(unseal(path, &version)
            .unwrap_err()
            .to_string()
            .contains("format version 9"));
    }

    #[test]
    fn entries_round_trip() {
        let mut payload = vec![0u8; 8];
        for e in [(1u64, "a".to_string()), (2, "b".to_string())] {
            bincode::serialize_into(&mut payload, &e).unwrap();
        }
        payload[..8].copy_from_slice(&2u64.to_le_bytes());
        let mut out: Vec<(u64, String)> = Vec::new();
        decode_entries(&payload, |e| out.push(e)).unwrap();
        assert_eq!(out, vec![(1, "a".into()), (2, "b".into())]);
    }

    /// Property tests over what checkpoint recovery reads from disk (docs/reliability.md):
    /// arbitrary or damaged bytes are an error naming the file, never a panic, and a sealed
    /// file comes back exactly or not at all.
    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn fuzz_checkpoint_files_unseal_or_are_named_damaged(
                bytes in proptest::collection::vec(any::<u8>(), 0..256),
                payload in proptest::collection::vec(any::<u8>(), 0..256),
                flip in any::<usize>(),
                cut in any::<usize>(),
            ) {
                let path = Path::new("/ckpt/parts/x");
                if let Err(e) = unseal(path, &bytes) {
                    prop_assert!(e.to_string().contains("/ckpt/parts/x"));
                }
                let sealed = seal(&payload);
                prop_assert_eq!(unseal(path, &sealed).unwrap(), payload.clone());
                // One flipped bit anywhere, or a cut anywhere, is caught.
                let mut flipped = sealed.clone();
                let bit = flip % (flipped.len() * 8);
                flipped[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(unseal(path, &flipped).is_err());
                let cut = cut % sealed.len();
                prop_assert!(unseal(path, &sealed[..cut]).is_err());
            }

            #[test]
            fn fuzz_manifests_parse_or_fail_cleanly(
                text in "\\PC{0,200}",
                checkpoint in any::<u64>(),
                workers in any::<usize>(),
                mangle in any::<usize>(),
            ) {
                let _ = serde_json::from_str::<Manifest>(&text);
                let manifest = Manifest {
                    pipeline: text.clone(),
                    checkpoint,
                    every_ms: 10,
                    workers,
                    parts: BTreeMap::from([(
                        escape(&text),
                        BTreeMap::from([(0, part_name(&text, 0, 0, checkpoint))]),
                    )]),
                    bytes: 0,
                };
                let json = serde_json::to_vec(&manifest).unwrap();
                let back: Manifest = serde_json::from_slice(&json).unwrap();
                prop_assert_eq!(back.checkpoint, checkpoint);
                prop_assert_eq!(&back.parts, &manifest.parts);
                // A manifest cut anywhere does not parse, and says so.
                let cut = mangle % json.len();
                prop_assert!(serde_json::from_slice::<Manifest>(&json[..cut]).is_err());
            }

            #[test]
            fn fuzz_part_names_round_trip_and_others_are_not_parts(
                stage in "\\PC{0,40}",
                worker in 0usize..100_000,
                lo in any::<u64>(),
                hi in any::<u64>(),
                other in "\\PC{0,80}",
            ) {
                let escaped = escape(&stage);
                let name = part_name(&stage, worker, lo, hi);
                prop_assert_eq!(
                    parse_part(&name),
                    Some((escaped.as_str(), worker, lo, hi))
                );
                let _ = parse_part(&other);
                let _ = segment_end("part", &other);
            }

            #[test]
            fn fuzz_part_payloads_decode_or_fail_cleanly(
                bytes in proptest::collection::vec(any::<u8>(), 0..256),
                entries in proptest::collection::vec((any::<u64>(), "\\PC{0,20}"), 0..8),
                cut in any::<usize>(),
            ) {
                let mut decoded: Vec<(u64, String)> = Vec::new();
                let _ = decode_entries(&bytes, |e: (u64, String)| decoded.push(e));
                let _ = decode::<Vec<(u64, String)>>(&bytes);
                let _ = decode::<String>(&bytes);
                let mut payload = encode(&(entries.len() as u64));
                for entry in &entries {
                    payload.extend(encode(entry));
                }
                let mut back = Vec::new();
                decode_entries(&payload, |e: (u64, String)| back.push(e)).unwrap();
                prop_assert_eq!(&back, &entries);
                let cut = cut % payload.len();
                let mut partial = Vec::new();
                prop_assert!(decode_entries(&payload[..cut], |e: (u64, String)| partial.push(e)).is_err());
                prop_assert!(partial.len() <= entries.len());
            }
        }
    }
}
