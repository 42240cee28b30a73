//! Per-stage counters and the end-to-end latency histogram.
//!
//! Counters are shared by the workers of a process and updated once per batch, never per
//! record. The latency of a result is the wall-clock time from the moment it could first be
//! computed — its source emitted it, or, for a result that waits for the watermark (a window's),
//! the last source's watermark passed it — to the moment it reached a sink ([`LatencyClock`]).

use std::collections::{BTreeMap, VecDeque};
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
    dead_lettered: AtomicU64,
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

    /// Counts records the stage rejected: a source could not read them, a user function failed
    /// on them, a sink could not deliver them.
    #[inline]
    pub fn add_rejected(&self, n: usize) {
        self.rejected.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts records the stage wrote to the dead-letter sink.
    #[inline]
    pub fn add_dead_lettered(&self, n: usize) {
        self.dead_lettered.fetch_add(n as u64, Ordering::Relaxed);
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
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
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
    /// Records rejected: a source could not read them (malformed), a user function failed on
    /// them, a sink could not deliver them.
    pub rejected: u64,
    /// Records (rejected or late) written to the dead-letter sink.
    pub dead_lettered: u64,
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
    clock: Mutex<LatencyClock>,
    rejected_examples: Mutex<Vec<String>>,
}

/// How many watermark stamps the latency clock remembers per source instance.
const MAX_STAMPS: usize = 1 << 16;
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
            clock: Mutex::new(LatencyClock::default()),
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

    /// Registers one source instance (a source stage on one worker) with the latency clock and
    /// returns its slot.
    pub(crate) fn register_source(&self, worker: usize) -> usize {
        self.clock().register(worker)
    }

    /// Notes that source instance `slot` emitted records at watermark `stamp` now.
    pub(crate) fn note_stamp(&self, slot: usize, stamp: u64, now: Instant) {
        self.clock().emitted(slot, stamp, now);
    }

    /// Notes that source instance `slot` advanced its watermark to `watermark` now
    /// (`u64::MAX`: it finished).
    pub(crate) fn note_watermark(&self, slot: usize, watermark: u64, now: Instant) {
        self.clock().passed(slot, watermark, now);
    }

    /// When a result stamped `stamp`, reaching a sink on `worker`, could first have been
    /// computed (see [`LatencyClock::ready`]).
    pub(crate) fn stamp_instant(&self, stamp: u64, worker: usize) -> Option<Instant> {
        self.clock().ready(stamp, worker)
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, LatencyClock> {
        self.clock.lock().unwrap_or_else(PoisonError::into_inner)
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

/// What the latency clock knows of one source instance.
#[derive(Debug, Default)]
struct SourceClock {
    worker: usize,
    /// The first instant it emitted records at each stamp (its watermark then).
    emitted: BTreeMap<u64, Instant>,
    /// Its watermark's advances, in order: the watermark and when it was reached.
    passed: VecDeque<(u64, Instant)>,
}

impl SourceClock {
    /// The first instant this instance's watermark was above `stamp`, if it has been.
    fn passed_above(&self, stamp: u64) -> Option<Instant> {
        let i = self.passed.partition_point(|(w, _)| *w <= stamp);
        self.passed.get(i).map(|(_, at)| *at)
    }

    /// The first instant this instance emitted at the greatest stamp at or below `stamp`.
    fn emitted_at_or_below(&self, stamp: u64) -> Option<Instant> {
        self.emitted.range(..=stamp).next_back().map(|(_, at)| *at)
    }
}

/// The wall-clock history of every source's watermark in this process, from which a sink
/// tells how long a result took.
///
/// A result stamped `s` could first be computed at the later of two instants: when a source
/// first emitted records at (or just below) `s` — on the sink's own worker when one did, since
/// records not exchanged stay on their worker — and, once every source's watermark has passed
/// `s`, the instant the last of them did. The second is the moment a window ending at `s + 1`
/// became complete, so a window's result is timed from its close, not from its first record:
/// what is measured is the engine's delay beyond the window's own wait. A record passed through
/// without waiting reaches the sink before its source's watermark moves on, so it is timed from
/// its emission. Sources of other processes are not seen: across processes the clock starts at
/// the last local source's watermark.
#[derive(Debug, Default)]
pub(crate) struct LatencyClock {
    sources: Vec<SourceClock>,
}

impl LatencyClock {
    fn register(&mut self, worker: usize) -> usize {
        self.sources.push(SourceClock {
            worker,
            ..SourceClock::default()
        });
        self.sources.len() - 1
    }

    fn emitted(&mut self, slot: usize, stamp: u64, now: Instant) {
        let source = &mut self.sources[slot];
        source.emitted.entry(stamp).or_insert(now);
        if source.emitted.len() > MAX_STAMPS {
            source.emitted.pop_first();
        }
    }

    fn passed(&mut self, slot: usize, watermark: u64, now: Instant) {
        let source = &mut self.sources[slot];
        if source.passed.back().is_none_or(|(w, _)| *w < watermark) {
            source.passed.push_back((watermark, now));
            if source.passed.len() > MAX_STAMPS {
                source.passed.pop_front();
            }
        }
    }

    fn ready(&self, stamp: u64, worker: usize) -> Option<Instant> {
        let first_emitted = |local: bool| {
            self.sources
                .iter()
                .filter(|s| !local || s.worker == worker)
                .filter_map(|s| s.emitted_at_or_below(stamp))
                .min()
        };
        let emitted = first_emitted(true).or_else(|| first_emitted(false));
        let all_passed = self
            .sources
            .iter()
            .map(|s| s.passed_above(stamp))
            .collect::<Option<Vec<_>>>()
            .and_then(|passed| passed.into_iter().max());
        match (emitted, all_passed) {
            (Some(e), Some(p)) => Some(e.max(p)),
            (e, p) => e.or(p),
        }
    }
}

/// A histogram of latencies in microseconds, from 1 µs to one hour.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_window_result_is_timed_from_the_last_source_passing_it() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut clock = LatencyClock::default();
        let (a, b) = (clock.register(0), clock.register(1));
        clock.emitted(a, 5, at(0));
        clock.emitted(b, 5, at(3));
        clock.passed(a, 5, at(0));
        clock.passed(b, 5, at(3));
        // A record passed through at stamp 5 on worker 1: from its own source's emission.
        assert_eq!(clock.ready(5, 1), Some(at(3)));
        // On worker 0, from worker 0's source; no source has passed 5 yet.
        assert_eq!(clock.ready(5, 0), Some(at(0)));
        clock.passed(a, 10, at(10));
        assert_eq!(clock.ready(9, 0), Some(at(0)), "b has not passed 9 yet");
        clock.passed(b, 12, at(17));
        // A window [0, 10) stamped 9 closed when the slower source passed 9, at 17.
        assert_eq!(clock.ready(9, 0), Some(at(17)));
        assert_eq!(clock.ready(9, 1), Some(at(17)));
        // A finished source has passed everything.
        clock.passed(a, u64::MAX, at(20));
        clock.passed(b, u64::MAX, at(25));
        assert_eq!(clock.ready(100, 0), Some(at(25)));
    }
}
