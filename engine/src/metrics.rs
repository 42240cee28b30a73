//! Per-stage counters, per-worker watermark gauges, and the end-to-end latency histogram.
//!
//! Counters are shared by the workers of a process and updated once per batch, never per
//! record. Gauges ([`WorkerGauge`]) are kept per stage and local worker: the stage's output
//! watermark (its frontier), and for sources their newest event time, idleness and backlog;
//! for windows the oldest open window. The metrics endpoint and the watermark explainer
//! ([`crate::observe`]) read them while the run goes on. The latency of a result is the wall-clock time from the moment it could first be
//! computed — its source emitted it, or, for a result that waits for the watermark (a window's),
//! the last source's watermark passed it — to the moment it reached a sink ([`LatencyClock`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::source::{BacklogProbe, CounterProbe};

/// "Not known" in a gauge.
const UNKNOWN: u64 = u64::MAX;
/// A watermark gauge no operator set: the stage passes its input's watermark on.
const UNREPORTED: u64 = u64::MAX - 1;

/// What one worker's instance of a stage reports: its watermark and, for sources and windows,
/// what holds it.
pub struct WorkerGauge {
    /// The stage's output frontier on this worker (its watermark); `u64::MAX` once finished;
    /// [`UNREPORTED`] for a stage that does not report one (it passes its input's on).
    watermark: AtomicU64,
    /// Sources: the newest event time read (`UNKNOWN` before the first record).
    max_event_time: AtomicU64,
    /// Sources: the wall clock (ms) of the last record read (`UNKNOWN` before the first).
    last_record_ms: AtomicU64,
    /// Sources: the wall clock (ms) since which the reader has had nothing (`UNKNOWN`: active).
    idle_since_ms: AtomicU64,
    /// Sources: reads the records waiting at the source (consumer lag, queue depth), when it
    /// tells.
    backlog: Mutex<Option<BacklogProbe>>,
    /// Sources: reads the connector's own counters, when it keeps some.
    counters: Mutex<Option<CounterProbe>>,
    /// Windows, sessions, joins: when the earliest result still pending on this worker is due
    /// — the end of the oldest open window (`UNKNOWN`: nothing pending).
    open_window_end: AtomicU64,
    /// Windows: the start of that window (`UNKNOWN` for results that are not windows).
    open_window_start: AtomicU64,
}

impl std::fmt::Debug for WorkerGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerGauge")
            .field("reading", &self.read())
            .finish()
    }
}

impl Default for WorkerGauge {
    fn default() -> Self {
        WorkerGauge {
            watermark: AtomicU64::new(UNREPORTED),
            max_event_time: AtomicU64::new(UNKNOWN),
            last_record_ms: AtomicU64::new(UNKNOWN),
            idle_since_ms: AtomicU64::new(UNKNOWN),
            backlog: Mutex::new(None),
            counters: Mutex::new(None),
            open_window_end: AtomicU64::new(UNKNOWN),
            open_window_start: AtomicU64::new(UNKNOWN),
        }
    }
}

fn known(v: &AtomicU64) -> Option<u64> {
    Some(v.load(Ordering::Relaxed)).filter(|v| *v != UNKNOWN)
}

impl WorkerGauge {
    /// Sets the watermark (output frontier) of this worker's instance.
    #[inline]
    pub fn set_watermark(&self, watermark: u64) {
        self.watermark.store(watermark, Ordering::Relaxed);
    }

    /// Notes that a source read records, the newest with event time `max_event_time`, at wall
    /// clock `now_ms`.
    #[inline]
    pub fn note_records(&self, max_event_time: u64, now_ms: u64) {
        // One worker's instance writes its gauge: a load and a store suffice.
        let newest = self.max_event_time.load(Ordering::Relaxed);
        if newest == UNKNOWN || max_event_time > newest {
            self.max_event_time.store(max_event_time, Ordering::Relaxed);
        }
        self.last_record_ms.store(now_ms, Ordering::Relaxed);
        self.idle_since_ms.store(UNKNOWN, Ordering::Relaxed);
    }

    /// Notes that a source's reader had nothing to read at wall clock `now_ms`.
    #[inline]
    pub fn note_idle(&self, now_ms: u64) {
        if self.idle_since_ms.load(Ordering::Relaxed) == UNKNOWN {
            self.idle_since_ms.store(now_ms, Ordering::Relaxed);
        }
    }

    /// Sets how to read the records waiting at the source ([`SourceReader::backlog_probe`];
    /// `None`: it does not tell).
    ///
    /// [`SourceReader::backlog_probe`]: crate::SourceReader::backlog_probe
    pub fn set_backlog_probe(&self, probe: Option<BacklogProbe>) {
        *self.backlog.lock().unwrap_or_else(PoisonError::into_inner) = probe;
    }

    /// Sets how to read the source connector's own counters
    /// ([`SourceReader::counters`](crate::SourceReader::counters)).
    pub fn set_counter_probe(&self, probe: Option<CounterProbe>) {
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner) = probe;
    }

    /// Sets the oldest window still open on this worker, `[start, end)`, or none.
    #[inline]
    pub fn set_open_window(&self, window: Option<(u64, u64)>) {
        let (start, end) = window.unwrap_or((UNKNOWN, UNKNOWN));
        self.open_window_start.store(start, Ordering::Relaxed);
        self.open_window_end.store(end, Ordering::Relaxed);
    }

    /// Sets when the earliest result pending on this worker is due (a session's end, a join
    /// result's time): emitted once the watermark reaches it. `None`: nothing pending.
    #[inline]
    pub fn set_next_due(&self, due: Option<u64>) {
        self.open_window_start.store(UNKNOWN, Ordering::Relaxed);
        self.open_window_end
            .store(due.unwrap_or(UNKNOWN), Ordering::Relaxed);
    }

    fn read(&self) -> WorkerReading {
        WorkerReading {
            watermark: Some(self.watermark.load(Ordering::Relaxed)).filter(|w| *w != UNREPORTED),
            max_event_time: known(&self.max_event_time),
            last_record_ms: known(&self.last_record_ms),
            idle_since_ms: known(&self.idle_since_ms),
            backlog: self
                .backlog
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(|probe| probe()),
            counters: self
                .counters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(|probe| probe())
                .unwrap_or_default(),
            pending: known(&self.open_window_end).map(|end| (known(&self.open_window_start), end)),
        }
    }
}

/// One worker's gauges of one stage at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerReading {
    /// The stage's watermark (output frontier) on this worker, `u64::MAX` once finished; `None`
    /// for a stage that does not report its own: it passes its input's watermark on.
    pub watermark: Option<u64>,
    /// Sources: the newest event time read.
    pub max_event_time: Option<u64>,
    /// Sources: the wall clock (ms since the epoch) of the last record read.
    pub last_record_ms: Option<u64>,
    /// Sources: since when (wall clock, ms) the reader has had nothing to read.
    pub idle_since_ms: Option<u64>,
    /// Sources: records waiting at the source (consumer lag, queue depth), when it tells.
    pub backlog: Option<u64>,
    /// Sources: the connector's own counters, `(name, total so far)`.
    pub counters: Vec<(&'static str, u64)>,
    /// Windows, sessions, joins: the earliest result pending on this worker, as `(start, end)`
    /// of the oldest open window (no start for results that are not windows); it is emitted
    /// once the watermark reaches `end`.
    pub pending: Option<(Option<u64>, u64)>,
}

/// Counters of one stage, summed over the workers of this process, and its per-worker gauges.
#[derive(Debug)]
pub struct StageMetrics {
    records_in: AtomicU64,
    records_out: AtomicU64,
    late: AtomicU64,
    rejected: AtomicU64,
    dead_lettered: AtomicU64,
    state: AtomicI64,
    state_peak: AtomicI64,
    /// Bytes one state entry takes, shallowly (`size_of` of the entry type), when known.
    entry_bytes: AtomicU64,
    /// Sources: the idle timeout after which an idle reader's watermark follows the wall clock
    /// (ms; `UNKNOWN`: none, an idle reader holds the watermark).
    idle_timeout_ms: AtomicU64,
    /// When the stage last logged a dead letter (`None`: never).
    logged_at: Mutex<Option<Instant>>,
    workers: Vec<WorkerGauge>,
}

/// How often a stage logs about its dead letters after the first.
pub(crate) const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Default for StageMetrics {
    fn default() -> Self {
        StageMetrics::new(1)
    }
}

impl StageMetrics {
    /// Counters at zero, with gauges for `local_workers` workers.
    pub fn new(local_workers: usize) -> Self {
        StageMetrics {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            late: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            state: AtomicI64::new(0),
            state_peak: AtomicI64::new(0),
            entry_bytes: AtomicU64::new(0),
            idle_timeout_ms: AtomicU64::new(UNKNOWN),
            logged_at: Mutex::new(None),
            workers: (0..local_workers.max(1))
                .map(|_| WorkerGauge::default())
                .collect(),
        }
    }

    /// The gauges of worker `index` (its index in the run; processes hold consecutive ranges).
    #[inline]
    pub fn worker(&self, index: usize) -> &WorkerGauge {
        &self.workers[index % self.workers.len()]
    }

    /// Every local worker's gauges now, in worker order.
    pub fn workers(&self) -> Vec<WorkerReading> {
        self.workers.iter().map(WorkerGauge::read).collect()
    }

    /// Notes how many bytes one state entry takes (shallowly), for the state-size estimate.
    pub fn set_entry_bytes(&self, bytes: usize) {
        self.entry_bytes.store(bytes as u64, Ordering::Relaxed);
    }

    /// Records written to the dead-letter sink so far.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }

    /// Whether a dead letter should be logged now: `Some(true)` for the stage's first,
    /// `Some(false)` when [`LOG_EVERY`] has passed since the last line, else `None` (and while
    /// another worker is logging).
    pub(crate) fn log_due(&self) -> Option<bool> {
        let mut at = self.logged_at.try_lock().ok()?;
        let now = Instant::now();
        let first = at.is_none();
        if at.is_some_and(|last| now.duration_since(last) < LOG_EVERY) {
            return None;
        }
        *at = Some(now);
        Some(first)
    }

    /// Sources: notes the idle timeout of the stage's readers (`None`: an idle reader holds the
    /// watermark until it reads again).
    pub fn set_idle_timeout(&self, timeout: Option<std::time::Duration>) {
        let ms = timeout.map_or(UNKNOWN, |t| t.as_millis() as u64);
        self.idle_timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// Sources: the readers' idle timeout, if they have one.
    pub fn idle_timeout_ms(&self) -> Option<u64> {
        known(&self.idle_timeout_ms)
    }

    /// The state's size in bytes, estimated as entries × the entry's shallow size, when the
    /// stage told its entry size.
    pub fn state_bytes_estimate(&self) -> Option<u64> {
        let bytes = self.entry_bytes.load(Ordering::Relaxed);
        (bytes > 0).then(|| bytes * self.state())
    }

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
    pub(crate) stages: Vec<(String, String, Arc<StageMetrics>)>,
    latency: Mutex<Histogram<u64>>,
    clock: Mutex<LatencyClock>,
    rejected_examples: Mutex<Vec<String>>,
}

/// How many watermark stamps the latency clock remembers per source instance.
const MAX_STAMPS: usize = 1 << 16;
/// How many rejected records the summary quotes.
const MAX_REJECTED_EXAMPLES: usize = 10;

impl RunMetrics {
    pub(crate) fn new(
        stages: impl IntoIterator<Item = (String, String)>,
        local_workers: usize,
    ) -> Self {
        RunMetrics {
            stages: stages
                .into_iter()
                .map(|(name, kind)| (name, kind, Arc::new(StageMetrics::new(local_workers))))
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
