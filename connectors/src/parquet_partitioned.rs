//! Parquet output partitioned by event time, Hive style, with partitions marked complete.
//!
//! [`ParquetSink::partitioned`] turns a [`ParquetSink`] into a [`PartitionedParquetSink`]: each
//! record goes to the directory of its event time's day or hour — `dt=YYYY-MM-DD` or
//! `dt=YYYY-MM-DD/hm=HH` (UTC) under the sink's directory — where each worker writes its own
//! `{prefix}-{worker:05}.parquet`. Readers that understand Hive partitioning (pyarrow, Spark,
//! Flink, DuckDB) see `dt` and `hm` as columns.
//!
//! **Completion.** A partition is complete once the watermark has passed its end on every
//! worker: then every worker has closed (renamed into place) its file there, and the sink writes
//! an empty `_SUCCESS` file into the directory, as Flink's `success-file` commit policy does.
//! Workers share their progress through small files under `{dir}/_progress/` (so this works
//! across processes on a shared file system); whichever worker finds every worker past a
//! partition's end writes its `_SUCCESS` (an empty file, created at once: two workers may both
//! write it). At the end of the input every partition is complete;
//! the last worker to finish removes `_progress/`. Readers ignore `_`-prefixed paths.
//!
//! **Late records** — a record whose partition this worker has already closed — are written to a
//! further file in that partition (`{prefix}-{worker:05}-{n}.parquet`), as Flink does; the
//! partition keeps its `_SUCCESS`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use eddy_engine::{ConnectorError, Partition, Record, Sink, SinkReport, SinkWriter};
use serde::Serialize;

use crate::parquet::{ParquetFile, ParquetSink};
use crate::staged::{finished_twice, io_error, Staged};

/// The name of the file that marks a partition complete.
pub const SUCCESS_FILE: &str = "_SUCCESS";
/// The directory, under the sink's, where workers note how far they have written.
const PROGRESS_DIR: &str = "_progress";

/// How records are partitioned by event time (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimePartitioning {
    /// One directory per day: `dt=YYYY-MM-DD`.
    Day,
    /// One directory per hour: `dt=YYYY-MM-DD/hm=HH`.
    Hour,
}

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

impl TimePartitioning {
    /// The length of a partition in ms.
    pub fn period_ms(self) -> u64 {
        match self {
            TimePartitioning::Day => DAY_MS,
            TimePartitioning::Hour => HOUR_MS,
        }
    }

    /// The start (ms since the epoch) of the partition holding `event_time`.
    pub fn start_of(self, event_time: u64) -> u64 {
        event_time - event_time % self.period_ms()
    }

    /// The relative directory of the partition holding `event_time`, e.g. `dt=2023-11-14/hm=22`.
    pub fn path_of(self, event_time: u64) -> PathBuf {
        let days = event_time / DAY_MS;
        let (y, m, d) = civil_from_days(days as i64);
        let dt = PathBuf::from(format!("dt={y:04}-{m:02}-{d:02}"));
        match self {
            TimePartitioning::Day => dt,
            TimePartitioning::Hour => dt.join(format!("hm={:02}", event_time % DAY_MS / HOUR_MS)),
        }
    }

    /// The start of the partition a relative directory names, if it is one of this layout's.
    fn parse(self, dt: &str, hm: Option<&str>) -> Option<u64> {
        let date = dt.strip_prefix("dt=")?;
        let mut parts = date.splitn(3, '-');
        let y: i64 = parts.next()?.parse().ok()?;
        let m: u32 = parts.next()?.parse().ok()?;
        let d: u32 = parts.next()?.parse().ok()?;
        let days = u64::try_from(days_from_civil(y, m, d)).ok()?;
        let hour = match (self, hm) {
            (TimePartitioning::Day, None) => 0,
            (TimePartitioning::Hour, Some(hm)) => hm.strip_prefix("hm=")?.parse::<u64>().ok()?,
            _ => return None,
        };
        (hour < 24).then_some(days * DAY_MS + hour * HOUR_MS)
    }

    /// Every partition directory under `root` with its start time.
    fn partitions(self, root: &Path) -> Vec<(u64, PathBuf)> {
        let mut found = Vec::new();
        for dt in subdirs(root) {
            let Some(dt_name) = file_name(&dt) else {
                continue;
            };
            match self {
                TimePartitioning::Day => {
                    if let Some(start) = self.parse(&dt_name, None) {
                        found.push((start, dt));
                    }
                }
                TimePartitioning::Hour => {
                    for hm in subdirs(&dt) {
                        let start = file_name(&hm).and_then(|hm| self.parse(&dt_name, Some(&hm)));
                        if let Some(start) = start {
                            found.push((start, hm));
                        }
                    }
                }
            }
        }
        found
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

fn file_name(path: &Path) -> Option<String> {
    path.file_name()?.to_str().map(str::to_string)
}

/// (year, month, day) of a day number since 1970-01-01 (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The day number since 1970-01-01 of (year, month, day).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl<T> ParquetSink<T> {
    /// Partitions the output by each record's event time (see the [module docs](self)).
    pub fn partitioned(self, by: TimePartitioning) -> PartitionedParquetSink<T> {
        PartitionedParquetSink { inner: self, by }
    }
}

/// A [`ParquetSink`] writing into event-time partitions and marking complete ones with
/// `_SUCCESS`; made by [`ParquetSink::partitioned`].
#[derive(Debug)]
pub struct PartitionedParquetSink<T> {
    inner: ParquetSink<T>,
    by: TimePartitioning,
}

impl<T: Serialize + 'static> Sink<T> for PartitionedParquetSink<T> {
    fn describe(&self) -> String {
        let layout = match self.by {
            TimePartitioning::Day => "dt=*",
            TimePartitioning::Hour => "dt=*/hm=*",
        };
        format!(
            "parquet({}/{layout}/{}-*.parquet)",
            self.inner.dir.display(),
            self.inner.prefix
        )
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        let fields = self.inner.schema()?;
        let progress = self.inner.dir.join(PROGRESS_DIR);
        fs::create_dir_all(&progress).map_err(|e| {
            io_error(
                format!("could not create the directory {}", progress.display()),
                e,
            )
        })?;
        let writer = PartitionedWriter {
            root: self.inner.dir.clone(),
            prefix: self.inner.prefix.clone(),
            row_group_size: self.inner.row_group_size,
            fields,
            by: self.by,
            worker: partition,
            open: BTreeMap::new(),
            files_in: BTreeMap::new(),
            closed_before: 0,
            report: SinkReport::default(),
            finished: false,
            _marker: PhantomData,
        };
        // A fresh run starts at watermark 0, whatever an earlier run in this directory left.
        writer.note_progress(0)?;
        Ok(Box::new(writer))
    }
}

struct PartitionedWriter<T> {
    root: PathBuf,
    prefix: String,
    row_group_size: usize,
    fields: Vec<arrow_schema::FieldRef>,
    by: TimePartitioning,
    worker: Partition,
    /// The files open, by partition start.
    open: BTreeMap<u64, ParquetFile>,
    /// How many files this worker has opened in each partition it wrote to.
    files_in: BTreeMap<u64, u32>,
    /// This worker has closed every partition that ends at or before this time.
    closed_before: u64,
    report: SinkReport,
    finished: bool,
    _marker: PhantomData<fn(T)>,
}

impl<T> PartitionedWriter<T> {
    fn progress_file(&self, worker: usize) -> String {
        format!("worker-{worker:05}")
    }

    /// Records on disk that this worker has closed every partition ending at or before `upto`.
    fn note_progress(&self, upto: u64) -> Result<(), ConnectorError> {
        let dir = self.root.join(PROGRESS_DIR);
        let (staged, mut file) = Staged::create(&dir, &self.progress_file(self.worker.index))?;
        file.write_all(upto.to_string().as_bytes())
            .map_err(|e| io_error(format!("could not write {}", staged.dest().display()), e))?;
        drop(file);
        staged.commit()?;
        Ok(())
    }

    /// How far every worker has closed its partitions (0 while one has not said).
    fn everyone_closed_before(&self) -> u64 {
        let dir = self.root.join(PROGRESS_DIR);
        (0..self.worker.count)
            .map(|w| {
                fs::read_to_string(dir.join(self.progress_file(w)))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(0)
    }

    /// Writes `_SUCCESS` into every partition that all workers have closed.
    fn commit_complete(&self) -> Result<(), ConnectorError> {
        let upto = self.everyone_closed_before();
        let period = self.by.period_ms();
        for (start, dir) in self.by.partitions(&self.root) {
            let marker = dir.join(SUCCESS_FILE);
            if start.saturating_add(period) <= upto && !marker.exists() {
                // Empty, so creating it is all or nothing: no temporary file to stage, and
                // workers that find the partition complete at the same moment do not race.
                fs::File::create(&marker).map_err(|e| {
                    io_error(
                        format!(
                            "could not create {}; check the directory's permissions",
                            marker.display()
                        ),
                        e,
                    )
                })?;
            }
        }
        if upto == u64::MAX {
            // Every worker is done: the progress notes have served.
            let _ = fs::remove_dir_all(self.root.join(PROGRESS_DIR));
        }
        Ok(())
    }

    fn close(&mut self, file: ParquetFile) -> Result<(), ConnectorError> {
        let (path, rows) = file.finish()?;
        self.report.rows += rows;
        self.report.files.push(path);
        Ok(())
    }

    /// Closes this worker's files of the partitions that end at or before `upto`, notes it, and
    /// commits what every worker has closed.
    fn close_before(&mut self, upto: u64) -> Result<(), ConnectorError> {
        let period = self.by.period_ms();
        let upto = if upto == u64::MAX {
            upto
        } else {
            self.by.start_of(upto)
        };
        if upto <= self.closed_before {
            return Ok(());
        }
        while let Some(entry) = self.open.first_entry() {
            if entry.key().saturating_add(period) > upto {
                break;
            }
            let file = entry.remove();
            self.close(file)?;
        }
        self.closed_before = upto;
        self.note_progress(upto)?;
        self.commit_complete()
    }
}

impl<T: Serialize> SinkWriter<T> for PartitionedWriter<T> {
    fn write(&mut self, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        if self.finished {
            return Err(finished_twice("a partitioned Parquet writer"));
        }
        for (time, row) in batch.drain(..) {
            let start = self.by.start_of(time);
            if !self.open.contains_key(&start) {
                let n = self.files_in.entry(start).or_insert(0);
                let name = if *n == 0 {
                    format!("{}-{:05}.parquet", self.prefix, self.worker.index)
                } else {
                    format!("{}-{:05}-{n}.parquet", self.prefix, self.worker.index)
                };
                *n += 1;
                let dir = self.root.join(self.by.path_of(time));
                let file = ParquetFile::create(&dir, &name, &self.fields, self.row_group_size)?;
                self.open.insert(start, file);
            }
            if let Some(file) = self.open.get_mut(&start) {
                file.push(&row)?;
            }
            // A late record's partition was closed already: close its extra file at once.
            if start.saturating_add(self.by.period_ms()) <= self.closed_before {
                if let Some(file) = self.open.remove(&start) {
                    self.close(file)?;
                }
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: u64) -> Result<(), ConnectorError> {
        self.close_before(watermark)
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        if self.finished {
            return Err(finished_twice("a partitioned Parquet writer"));
        }
        self.close_before(u64::MAX)?;
        self.finished = true;
        Ok(std::mem::take(&mut self.report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for days in [0i64, 1, 59, 365, 10_957, 19_675, 20_000, 30_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        // 1_700_000_000_000 ms is 2023-11-14 22:13:20 UTC.
        assert_eq!(
            TimePartitioning::Hour.path_of(1_700_000_000_000),
            PathBuf::from("dt=2023-11-14/hm=22")
        );
        assert_eq!(
            TimePartitioning::Day.path_of(1_700_000_000_000),
            PathBuf::from("dt=2023-11-14")
        );
        assert_eq!(
            TimePartitioning::Hour.parse("dt=2023-11-14", Some("hm=22")),
            Some(TimePartitioning::Hour.start_of(1_700_000_000_000))
        );
        assert_eq!(
            TimePartitioning::Hour.parse("dt=2023-11-14", Some("hm=24")),
            None
        );
    }

    #[derive(Clone, Debug, Serialize, serde::Deserialize)]
    struct Row {
        n: u64,
    }

    #[test]
    fn partitions_close_on_the_watermark_and_get_success_files() {
        let dir = tempfile::tempdir().unwrap();
        let sink = ParquetSink::<Row>::new(dir.path(), "part").partitioned(TimePartitioning::Hour);
        let base = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS;
        let mut a = sink.open(Partition { index: 0, count: 2 }).unwrap();
        let mut b = sink.open(Partition { index: 1, count: 2 }).unwrap();
        a.write(&mut vec![
            (base + 1, Row { n: 1 }),
            (base + HOUR_MS, Row { n: 2 }),
        ])
        .unwrap();
        b.write(&mut vec![(base + 2, Row { n: 3 })]).unwrap();
        let first = dir.path().join(TimePartitioning::Hour.path_of(base));
        let second = dir
            .path()
            .join(TimePartitioning::Hour.path_of(base + HOUR_MS));
        a.on_watermark(base + HOUR_MS + 5).unwrap();
        assert!(first.join("part-00000.parquet").exists());
        assert!(
            !first.join(SUCCESS_FILE).exists(),
            "worker 1 is not past it"
        );
        b.on_watermark(base + HOUR_MS).unwrap();
        assert!(first.join("part-00001.parquet").exists());
        assert!(first.join(SUCCESS_FILE).exists());
        assert!(!second.join(SUCCESS_FILE).exists());
        // A late record goes to an extra file in its (complete) partition.
        a.write(&mut vec![(base + 3, Row { n: 4 })]).unwrap();
        assert!(first.join("part-00000-1.parquet").exists());
        assert_eq!(a.finish().unwrap().rows, 3);
        assert!(!second.join(SUCCESS_FILE).exists());
        assert_eq!(b.finish().unwrap().rows, 1);
        assert!(second.join(SUCCESS_FILE).exists());
        assert!(!dir.path().join(PROGRESS_DIR).exists());
    }
}
