//! Window semantics against a batch reference: out-of-order input within the allowed disorder
//! gives the same result as in-order input, at 1 and 2 workers; records later than that are
//! dropped and counted, or written to the side output.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{assert_same_rows, Collect};
use eddy_connectors::{JsonLinesSink, ReplaySource};
use eddy_engine::{
    ConnectorError, LatePolicy, LateRecord, Partition, Pipeline, ReadStatus, Record, RecordError,
    Runtime, Source, SourceReader, WatermarkConfig,
};
use eddy_operators::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DISORDER: u64 = 500;
const SIZE: u64 = 1_000;
const SLIDE: u64 = 250;

/// A test event: (event time, (key, value)).
type Event = Record<(u64, u64)>;

/// Dense in-order events: (event time, (key, value)).
fn in_order(n: u64) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..n)
        .map(|i| {
            (
                1_000_000 + i * 3,
                (rng.gen_range(0..20), rng.gen_range(0..1_000)),
            )
        })
        .collect()
}

/// The same events, each moved by less than `DISORDER` ms of event time: sort by a jittered
/// time, which never puts an event after one more than `DISORDER` later than it.
fn shuffled(events: &[Event]) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(11);
    let mut keyed: Vec<_> = events
        .iter()
        .map(|e| (e.0 + rng.gen_range(0..DISORDER), *e))
        .collect();
    keyed.sort_by_key(|(jittered, _)| *jittered);
    keyed.into_iter().map(|(_, e)| e).collect()
}

/// The reference: sum of values per key per hopping window, from a plain scan.
fn reference(events: &[Event]) -> Vec<WindowResult<u64, u64>> {
    let mut sums: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for &(t, (key, value)) in events {
        let mut start = t / SLIDE * SLIDE;
        while start + SIZE > t {
            *sums.entry((start, key)).or_default() += value;
            if start < SLIDE {
                break;
            }
            start -= SLIDE;
        }
    }
    sums.into_iter()
        .map(|((start, key), value)| WindowResult {
            key,
            start,
            end: start + SIZE,
            value,
        })
        .collect()
}

/// What the collecting sink gathered.
type Collected = Arc<Mutex<Vec<Record<WindowResult<u64, u64>>>>>;

/// The pipeline under test: per-key sums in hopping windows, collected. Returns the collected
/// results (checking each one's event time is its window's end − 1) and the run's summary.
fn run_sums(
    source: impl Source<(u64, u64)>,
    watermarks: WatermarkConfig,
    workers: usize,
    late: LatePolicy,
    (sink, rows): (Collect<WindowResult<u64, u64>>, Collected),
) -> (Vec<WindowResult<u64, u64>>, eddy_engine::RunSummary) {
    let pipeline = Pipeline::new("window-test");
    pipeline.late_policy(late).batch_size(64);
    pipeline
        .source("events", source, watermarks)
        .key_by("by_key", |e: &(u64, u64)| e.0)
        .window(
            "sums",
            WindowSpec::hopping(SIZE, SLIDE),
            Sum(|e: &(u64, u64)| e.1),
        )
        .sink("collect", sink);
    let summary = Runtime::new(workers).run(&pipeline).unwrap();
    let rows: Vec<_> = std::mem::take(&mut *rows.lock().unwrap());
    for (t, r) in &rows {
        assert_eq!(*t, r.end - 1, "a window result's event time is its end - 1");
    }
    (rows.into_iter().map(|(_, r)| r).collect(), summary)
}

fn run(
    events: Vec<Event>,
    workers: usize,
    late: LatePolicy,
) -> (Vec<WindowResult<u64, u64>>, eddy_engine::RunSummary) {
    let watermarks = WatermarkConfig::bounded(Duration::from_millis(DISORDER));
    let source = ReplaySource::round_robin(events, workers);
    run_sums(source, watermarks, workers, late, Collect::new())
}

#[test]
fn out_of_order_within_disorder_equals_in_order() {
    let events = in_order(20_000);
    let expected = reference(&events);
    for workers in [1, 2] {
        let (in_order_rows, s) = run(events.clone(), workers, LatePolicy::Drop);
        assert_eq!(s.late(), 0);
        assert_same_rows(
            &format!("in order, {workers} workers"),
            in_order_rows,
            expected.clone(),
        );
        let (shuffled_rows, s) = run(shuffled(&events), workers, LatePolicy::Drop);
        assert_eq!(
            s.late(),
            0,
            "records within the allowed disorder are never late"
        );
        assert_same_rows(
            &format!("shuffled, {workers} workers"),
            shuffled_rows,
            expected.clone(),
        );
    }
}

/// Shuffled events plus `count` records far behind the watermark, each placed after enough
/// records that every worker's watermark is past all of its windows.
fn with_late_records(count: usize) -> (Vec<Event>, Vec<Event>) {
    let mut events = shuffled(&in_order(20_000));
    let mut late = Vec::new();
    for i in 0..count {
        let at = 2_000 + i * 1_500;
        let max_before = events[..at].iter().map(|e| e.0).max().unwrap();
        let record = (max_before - 2 * DISORDER - 3 * SIZE, (99, 1_000_000));
        events.insert(at, record);
        late.push(record);
    }
    (events, late)
}

#[test]
fn late_records_are_dropped_and_counted() {
    let (events, late) = with_late_records(6);
    let on_time: Vec<_> = events
        .iter()
        .filter(|e| !late.contains(e))
        .copied()
        .collect();
    for workers in [1, 2] {
        let (rows, summary) = run(events.clone(), workers, LatePolicy::Drop);
        assert_eq!(summary.late(), late.len() as u64, "{workers} workers");
        assert_same_rows(
            &format!("late dropped, {workers} workers"),
            rows,
            reference(&on_time),
        );
    }
}

#[test]
fn late_records_go_to_the_side_output() {
    let (events, late) = with_late_records(4);
    let dir = tempfile::tempdir().unwrap();
    let (_, summary) = run(
        events,
        2,
        LatePolicy::side_output(JsonLinesSink::new(dir.path(), "late")),
    );
    assert_eq!(summary.late(), late.len() as u64);
    let mut side: Vec<LateRecord> = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        side.extend(
            text.lines()
                .map(|l| serde_json::from_str::<LateRecord>(l).unwrap()),
        );
    }
    assert_eq!(side.len(), late.len());
    let mut times: Vec<u64> = side.iter().map(|r| r.event_time).collect();
    times.sort();
    let mut expected: Vec<u64> = late.iter().map(|r| r.0).collect();
    expected.sort();
    assert_eq!(times, expected);
    for r in &side {
        assert_eq!(r.stage, "sums");
        assert!(r.lateness_ms > 0 && r.watermark > r.event_time);
        assert_eq!(r.record, "[99,[99,1000000]]");
    }
}

/// A source whose partition 0 replays `events` and whose other partitions stay quiet (`Idle`)
/// until `done` says the results have all arrived, or a deadline passes.
struct OneBusyPartition {
    events: ReplaySource<(u64, u64)>,
    done: Arc<dyn Fn() -> bool + Send + Sync>,
    gave_up: Arc<AtomicBool>,
}

struct Quiet {
    done: Arc<dyn Fn() -> bool + Send + Sync>,
    deadline: Instant,
    gave_up: Arc<AtomicBool>,
}

impl Source<(u64, u64)> for OneBusyPartition {
    fn describe(&self) -> String {
        "one busy partition".into()
    }
    fn open(
        &self,
        partition: Partition,
    ) -> Result<Box<dyn SourceReader<(u64, u64)>>, ConnectorError> {
        if partition.index == 0 {
            return self.events.open(Partition { index: 0, count: 1 });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        Ok(Box::new(Quiet {
            done: Arc::clone(&self.done),
            deadline,
            gave_up: Arc::clone(&self.gave_up),
        }))
    }
}

impl SourceReader<(u64, u64)> for Quiet {
    fn poll(
        &mut self,
        _: &mut Vec<Event>,
        _: usize,
        _: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError> {
        if (self.done)() {
            return Ok(ReadStatus::Done);
        }
        if Instant::now() > self.deadline {
            self.gave_up.store(true, Ordering::SeqCst);
            return Ok(ReadStatus::Done);
        }
        Ok(ReadStatus::Idle)
    }
}

#[test]
fn an_idle_partition_does_not_stall_windows() {
    // Events of the last minute of wall-clock time, all on worker 0; worker 1's partition is
    // idle and, after the idle timeout, follows the wall clock, so every window can fire.
    let now = eddy_engine::wall_clock_ms();
    let events: Vec<Event> = in_order(20_000)
        .into_iter()
        .map(|(t, x)| (t - 1_000_000 + now - 70_000, x))
        .collect();
    let expected = reference(&events);
    let gave_up = Arc::new(AtomicBool::new(false));
    // Worker 1's partition stays quiet until every result has reached the sink: they can only
    // get there if its watermark, once idle, follows the wall clock past the windows' ends.
    let (sink, rows) = Collect::new();
    let (seen, want) = (Arc::clone(&rows), expected.len());
    let source = OneBusyPartition {
        events: ReplaySource::new(vec![events]),
        done: Arc::new(move || seen.lock().unwrap().len() >= want),
        gave_up: Arc::clone(&gave_up),
    };
    let watermarks = WatermarkConfig {
        max_disorder: Duration::from_millis(DISORDER),
        idle_timeout: Some(Duration::from_millis(50)),
    };
    let (got, summary) = run_sums(source, watermarks, 2, LatePolicy::Drop, (sink, rows));
    assert!(
        !gave_up.load(Ordering::SeqCst),
        "the windows waited for the idle partition to finish"
    );
    assert_eq!(summary.late(), 0);
    assert_same_rows("with an idle partition", got, expected);
}
