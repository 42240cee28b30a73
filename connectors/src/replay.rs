//! In-memory replay of prepared records, for tests and benchmarks.
//!
//! Records are moved out of the source, never cloned: each partition can be read once.
//!
//! Either source can be *paced* ([`ReplaySource::paced`], [`PreparedSource::paced`]): records
//! are then released by the wall clock at a fixed offered rate, in small batches (whatever has
//! come due since the last poll), and the reader reports [`ReadStatus::Idle`] while nothing is
//! due, so watermarks follow the released records. Latency benchmarks use it.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use eddy_engine::{
    ConnectorError, Partition, ReadStatus, Record, RecordError, Source, SourceReader,
};

/// A source that replays records held in memory, moving them out as it goes.
///
/// Worker `w` of `count` reads partitions `w, w + count, w + 2 * count, ...` in turn: with as
/// many workers as partitions each reads its own; extra workers read nothing. Each partition is
/// handed out once; opening the same partition again gives an empty reader.
#[derive(Debug)]
pub struct ReplaySource<T> {
    partitions: Mutex<Vec<Option<Vec<Record<T>>>>>,
    total: u64,
    pace: Option<f64>,
}

impl<T> ReplaySource<T> {
    /// Replays `partitions`; partition `i` is read by worker `i` (see the type's docs).
    pub fn new(partitions: Vec<Vec<Record<T>>>) -> Self {
        let total = partitions.iter().map(|p| p.len() as u64).sum();
        ReplaySource {
            partitions: Mutex::new(partitions.into_iter().map(Some).collect()),
            total,
            pace: None,
        }
    }

    /// Releases records by the wall clock at `events_per_second` in all, shared evenly among
    /// the workers (each releases `events_per_second / workers`), from each reader's first
    /// poll on. A rate that is not positive and finite means no pacing.
    pub fn paced(mut self, events_per_second: f64) -> Self {
        self.pace = valid_rate(events_per_second);
        self
    }

    /// Deals `records` round-robin into `workers` partitions (record `i` to partition
    /// `i % workers`), keeping their order within each partition. Zero workers is taken as one.
    pub fn round_robin(records: Vec<Record<T>>, workers: usize) -> Self {
        let workers = workers.max(1);
        let mut partitions: Vec<Vec<Record<T>>> = (0..workers)
            .map(|_| Vec::with_capacity(records.len() / workers + 1))
            .collect();
        for (i, record) in records.into_iter().enumerate() {
            partitions[i % workers].push(record);
        }
        Self::new(partitions)
    }

    /// How many records all partitions held at construction.
    pub fn total(&self) -> u64 {
        self.total
    }
}

impl<T: Send + 'static> Source<T> for ReplaySource<T> {
    fn describe(&self) -> String {
        let partitions = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        format!("replay(partitions={partitions}, records={})", self.total)
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        let mut partitions = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut mine = Vec::new();
        if partition.count > 0 {
            let mut i = partition.index;
            while i < partitions.len() {
                if let Some(records) = partitions[i].take() {
                    mine.push(records);
                }
                i += partition.count;
            }
        }
        Ok(Box::new(ReplayReader {
            pending: mine.into_iter(),
            current: Vec::new().into_iter(),
            pacer: Pacer::for_partition(self.pace, partition),
        }))
    }

    fn expected_records(&self) -> Option<u64> {
        Some(self.total)
    }
}

/// A source whose records each worker prepares when it opens its partition, on its own thread,
/// then replays; for benchmarks that time the engine without the cost of making the input, with
/// records allocated and freed by the same thread, as a real source's are.
pub struct PreparedSource<T> {
    prepare: Box<dyn Fn(Partition) -> Vec<Record<T>> + Send + Sync>,
    expected: Option<u64>,
    what: String,
    pace: Option<f64>,
}

impl<T> PreparedSource<T> {
    /// Each worker calls `prepare` with its partition when it opens the source; `expected` is
    /// the total over all partitions, when known; `what` describes the input.
    pub fn new(
        what: impl Into<String>,
        expected: Option<u64>,
        prepare: impl Fn(Partition) -> Vec<Record<T>> + Send + Sync + 'static,
    ) -> Self {
        PreparedSource {
            prepare: Box::new(prepare),
            expected,
            what: what.into(),
            pace: None,
        }
    }

    /// Releases records by the wall clock at `events_per_second` in all, as
    /// [`ReplaySource::paced`].
    pub fn paced(mut self, events_per_second: f64) -> Self {
        self.pace = valid_rate(events_per_second);
        self
    }
}

impl<T: Send + 'static> Source<T> for PreparedSource<T> {
    fn describe(&self) -> String {
        format!("prepared({})", self.what)
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        Ok(Box::new(ReplayReader {
            pending: Vec::new().into_iter(),
            current: (self.prepare)(partition).into_iter(),
            pacer: Pacer::for_partition(self.pace, partition),
        }))
    }

    fn expected_records(&self) -> Option<u64> {
        self.expected
    }
}

fn valid_rate(events_per_second: f64) -> Option<f64> {
    (events_per_second.is_finite() && events_per_second > 0.0).then_some(events_per_second)
}

/// Releases records by the wall clock: `per_second` of them per second since the first poll,
/// the first at once.
#[derive(Debug)]
struct Pacer {
    per_second: f64,
    start: Option<Instant>,
    released: u64,
}

impl Pacer {
    /// One reader's share of a total rate.
    fn for_partition(total: Option<f64>, partition: Partition) -> Option<Pacer> {
        total.map(|rate| Pacer {
            per_second: rate / partition.count.max(1) as f64,
            start: None,
            released: 0,
        })
    }

    /// How many more records may be released at `now`.
    fn due(&mut self, now: Instant) -> u64 {
        let start = *self.start.get_or_insert(now);
        let allowed = (now.duration_since(start).as_secs_f64() * self.per_second) as u64 + 1;
        allowed.saturating_sub(self.released)
    }
}

/// One worker's partitions, read front to back in O(1) per record.
struct ReplayReader<T> {
    pending: std::vec::IntoIter<Vec<Record<T>>>,
    current: std::vec::IntoIter<Record<T>>,
    pacer: Option<Pacer>,
}

impl<T> ReplayReader<T> {
    fn exhausted(&self) -> bool {
        self.current.as_slice().is_empty() && self.pending.as_slice().iter().all(Vec::is_empty)
    }
}

impl<T> SourceReader<T> for ReplayReader<T> {
    fn poll(
        &mut self,
        out: &mut Vec<Record<T>>,
        max: usize,
        _rejected: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError> {
        let max = match self.pacer.as_mut() {
            Some(pacer) => {
                let due = pacer.due(Instant::now());
                if due == 0 {
                    return Ok(if self.exhausted() {
                        ReadStatus::Done
                    } else {
                        ReadStatus::Idle
                    });
                }
                max.min(usize::try_from(due).unwrap_or(usize::MAX))
            }
            None => max,
        };
        let mut appended = 0;
        while appended < max {
            if self.current.as_slice().is_empty() {
                match self.pending.next() {
                    Some(next) => {
                        self.current = next.into_iter();
                        continue;
                    }
                    None => break,
                }
            }
            let n = self.current.len().min(max - appended);
            out.extend(self.current.by_ref().take(n));
            appended += n;
        }
        if let Some(pacer) = self.pacer.as_mut() {
            pacer.released += appended as u64;
        }
        if appended == 0 && self.current.as_slice().is_empty() && self.pending.as_slice().is_empty()
        {
            Ok(ReadStatus::Done)
        } else {
            Ok(ReadStatus::Ready)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all<T: Send + 'static>(
        source: &ReplaySource<T>,
        index: usize,
        count: usize,
    ) -> Vec<Record<T>> {
        let mut reader = source.open(Partition { index, count }).unwrap();
        let mut out = Vec::new();
        let mut rejected = Vec::new();
        while reader.poll(&mut out, 3, &mut rejected).unwrap() != ReadStatus::Done {}
        assert!(rejected.is_empty());
        out
    }

    /// A type that cannot be cloned: replay must move records.
    #[derive(Debug, PartialEq)]
    struct NoClone(u32);

    #[test]
    fn partitions_are_moved_once() {
        let source = ReplaySource::new(vec![
            vec![(1, NoClone(1)), (2, NoClone(2))],
            vec![(3, NoClone(3))],
        ]);
        assert_eq!(source.expected_records(), Some(3));
        assert_eq!(
            read_all(&source, 0, 2),
            vec![(1, NoClone(1)), (2, NoClone(2))]
        );
        assert_eq!(read_all(&source, 1, 2), vec![(3, NoClone(3))]);
        assert!(
            read_all(&source, 0, 2).is_empty(),
            "a partition is taken once"
        );
    }

    #[test]
    fn fewer_workers_read_several_partitions_and_extra_workers_nothing() {
        let parts = |n: u64| {
            (0..n)
                .map(|i| vec![(i, i), (i, i + 100)])
                .collect::<Vec<_>>()
        };
        let source = ReplaySource::new(parts(3));
        let got: Vec<u64> = read_all(&source, 0, 2).into_iter().map(|r| r.1).collect();
        assert_eq!(got, vec![0, 100, 2, 102]);
        let got: Vec<u64> = read_all(&source, 1, 2).into_iter().map(|r| r.1).collect();
        assert_eq!(got, vec![1, 101]);

        let source = ReplaySource::new(parts(2));
        assert!(read_all(&source, 3, 4).is_empty());
        assert_eq!(read_all(&source, 1, 4).len(), 2);
    }

    #[test]
    fn round_robin_deals_records_in_order() {
        let records: Vec<Record<u64>> = (0..10).map(|i| (i, i)).collect();
        let source = ReplaySource::round_robin(records, 3);
        assert_eq!(source.total(), 10);
        let got: Vec<u64> = read_all(&source, 1, 3).into_iter().map(|r| r.1).collect();
        assert_eq!(got, vec![1, 4, 7]);
        let got: Vec<u64> = read_all(&source, 0, 3).into_iter().map(|r| r.1).collect();
        assert_eq!(got, vec![0, 3, 6, 9]);
    }

    #[test]
    fn paced_source_releases_by_the_wall_clock() {
        // 2 000 records/s over 2 workers: each worker's reader releases 1 000 per second.
        let records: Vec<Record<u64>> = (0..400).map(|i| (i, i)).collect();
        let source = ReplaySource::round_robin(records, 2).paced(2_000.0);
        let mut reader = source.open(Partition { index: 0, count: 2 }).unwrap();
        let (mut out, mut rejected) = (Vec::new(), Vec::new());
        let start = Instant::now();
        assert_eq!(
            reader.poll(&mut out, 1_000, &mut rejected).unwrap(),
            ReadStatus::Ready
        );
        assert_eq!(out.len(), 1, "the first record is released at once");
        let mut idle = 0;
        loop {
            match reader.poll(&mut out, 1_000, &mut rejected).unwrap() {
                ReadStatus::Done => break,
                ReadStatus::Idle => {
                    idle += 1;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                ReadStatus::Ready => {
                    let elapsed = start.elapsed().as_secs_f64();
                    assert!(
                        out.len() as f64 <= elapsed * 1_000.0 + 1.0,
                        "{} records released after {elapsed} s: faster than 1 000/s",
                        out.len()
                    );
                }
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert_eq!(out.len(), 200, "every record of the partition, once");
        assert!(
            elapsed >= 0.199,
            "200 records at 1 000/s took only {elapsed} s"
        );
        assert!(idle > 0, "the reader waited for the clock");
        assert!(
            out.windows(2).all(|w| w[0].1 < w[1].1),
            "order is kept within a partition"
        );
        let unpaced = PreparedSource::new("test", None, |_| (0..10).map(|i| (i, i)).collect())
            .paced(f64::NAN);
        assert_eq!(read_all_prepared(&unpaced).len(), 10, "NaN: no pacing");
    }

    fn read_all_prepared(source: &PreparedSource<u64>) -> Vec<Record<u64>> {
        let mut reader = source.open(Partition { index: 0, count: 1 }).unwrap();
        let (mut out, mut rejected) = (Vec::new(), Vec::new());
        while reader.poll(&mut out, 100, &mut rejected).unwrap() != ReadStatus::Done {}
        out
    }

    #[test]
    fn poll_respects_max() {
        let source = ReplaySource::new(vec![(0..10).map(|i| (i, i)).collect::<Vec<Record<u64>>>()]);
        let mut reader = source.open(Partition { index: 0, count: 1 }).unwrap();
        let mut out = Vec::new();
        let mut rejected = Vec::new();
        assert_eq!(
            reader.poll(&mut out, 4, &mut rejected).unwrap(),
            ReadStatus::Ready
        );
        assert_eq!(out.len(), 4);
        assert_eq!(
            reader.poll(&mut out, 100, &mut rejected).unwrap(),
            ReadStatus::Ready
        );
        assert_eq!(out.len(), 10);
        assert_eq!(
            reader.poll(&mut out, 100, &mut rejected).unwrap(),
            ReadStatus::Done
        );
    }
}
