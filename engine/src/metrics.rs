//! Per-stage counters and the end-to-end latency histogram.
//!
//! Counters are shared by the workers of a process and updated once per batch, never per
//! record. The latency of a result is the wall-clock time from the moment a source first emitted
//! records at the result's timestamp (its watermark) to the moment the result reached a sink.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use hdrhistogram::Histogram;

/// Counters of one stage, summed over the workers of this process.
#[derive(Debug, Default)]
pub struct StageMetrics {
    records_in: AtomicU64,
    records_out: AtomicU64,
    late: AtomicU64,
    rejected: AtomicU64,
    state: AtomicI64,
    state_peak: AtomicI64,
}

impl StageMetrics {
    /// Counts records that entered the stage.
    #[inline]
    pub fn add_in(&self, n: usize) {
        self.records_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts records the stage emitted.
    #[inline]
    pub fn add_out(&self, n: usize) {
        self.records_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts late records (dropped or sent to the side output).
    #[inline]
    pub fn add_late(&self, n: usize) {
        self.late.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts records a source could not read.
    #[inline]
    pub fn add_rejected(&self, n: usize) {
        self.rejected.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Changes the number of entries (keys, open windows, buffered records) the stage holds in
    /// state, summed over the workers of this process. Operators usually go through a
    /// [`StateGauge`].
    #[inline]
    pub fn add_state(&self, delta: i64) {
        let now = self.state.fetch_add(delta, Ordering::Relaxed) + delta;
        if delta > 0 {
            self.state_peak.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// The number of entries the stage holds in state now, in this process.
    pub fn state(&self) -> u64 {
        self.state.load(Ordering::Relaxed).max(0) as u64
    }

    fn snapshot(&self, name: &str, kind: &str) -> StageSnapshot {
        StageSnapshot {
            name: name.to_string(),
            kind: kind.to_string(),
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            state: self.state(),
            state_peak: self.state_peak.load(Ordering::Relaxed).max(0) as u64,
        }
    }
}

/// A stage's counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageSnapshot {
    /// The stage's name.
    pub name: String,
    /// What kind of stage it is (`source`, `map`, `window`, `sink`, ...).
    pub kind: String,
    /// Records in.
    pub records_in: u64,
    /// Records out.
    pub records_out: u64,
    /// Late records (dropped or side-output).
    pub late: u64,
    /// Records a source could not read (malformed).
    pub rejected: u64,
    /// Entries held in state when the snapshot was taken (0 once a bounded run has ended).
    pub state: u64,
    /// The most entries the stage held in state at any moment so far (summed over the workers
    /// of this process): what a test of bounded state checks.
    pub state_peak: u64,
}

/// One operator instance's share of its stage's state gauge: it reports the size of its state
/// and the gauge applies the change. Dropping it withdraws its share.
#[derive(Debug)]
pub struct StateGauge {
    metrics: Arc<StageMetrics>,
    current: usize,
}

impl StateGauge {
    /// A gauge share starting at zero.
    pub fn new(metrics: Arc<StageMetrics>) -> Self {
        StateGauge {
            metrics,
            current: 0,
        }
    }

    /// Reports that this operator instance now holds `entries` entries in state.
    #[inline]
    pub fn set(&mut self, entries: usize) {
        if entries != self.current {
            self.metrics.add_state(entries as i64 - self.current as i64);
            self.current = entries;
        }
    }
}

impl Drop for StateGauge {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// The metrics of one run in this process.
#[derive(Debug)]
pub(crate) struct RunMetrics {
    stages: Vec<(String, String, Arc<StageMetrics>)>,
    latency: Mutex<Histogram<u64>>,
    stamps: Mutex<BTreeMap<u64, Instant>>,
    rejected_examples: Mutex<Vec<String>>,
}

/// How many watermark stamps the latency clock remembers.
const MAX_STAMPS: usize = 1 << 17;
/// How many rejected records the summary quotes.
const MAX_REJECTED_EXAMPLES: usize = 10;

impl RunMetrics {
    pub(crate) fn new(stages: impl IntoIterator<Item = (String, String)>) -> Self {
        RunMetrics {
            stages: stages
                .into_iter()
                .map(|(name, kind)| (name, kind, Arc::new(StageMetrics::default())))
                .collect(),
            latency: Mutex::new(new_histogram()),
            stamps: Mutex::new(BTreeMap::new()),
            rejected_examples: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn stage(&self, index: usize) -> Arc<StageMetrics> {
        Arc::clone(&self.stages[index].2)
    }

    pub(crate) fn snapshot(&self) -> Vec<StageSnapshot> {
        self.stages
            .iter()
            .map(|(name, kind, m)| m.snapshot(name, kind))
            .collect()
    }

    /// Notes that a source first emitted records at watermark `stamp` now.
    pub(crate) fn note_stamp(&self, stamp: u64, now: Instant) {
        let mut stamps = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        stamps.entry(stamp).or_insert(now);
        if stamps.len() > MAX_STAMPS {
            stamps.pop_first();
        }
    }

    /// When a source first emitted records at a watermark at or below `stamp`.
    pub(crate) fn stamp_instant(&self, stamp: u64) -> Option<Instant> {
        let stamps = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        stamps.range(..=stamp).next_back().map(|(_, at)| *at)
    }

    pub(crate) fn merge_latency(&self, local: &Histogram<u64>) {
        let mut h = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        h.add(local)
            .expect("latency histograms share their bounds; this is a bug");
    }

    pub(crate) fn latency(&self) -> Histogram<u64> {
        self.latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn note_rejected(&self, example: String) {
        let mut ex = self
            .rejected_examples
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if ex.len() < MAX_REJECTED_EXAMPLES {
            ex.push(example);
        }
    }

    pub(crate) fn rejected_examples(&self) -> Vec<String> {
        self.rejected_examples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A histogram of latencies in microseconds, from 1 µs to one hour.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}
