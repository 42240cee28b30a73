//! Session windows and count windows against brute-force models: seeded random input (random
//! keys, event times with bounded disorder, late records, random watermark steps and batch
//! sizes) fed to the model and to the pipeline at 1, 2 and 4 workers; named regressions; and
//! the state gauge back at 0 after many sessions.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_engine::testing::{CollectSink, Script};
use eddy_engine::{
    ConnectorError, Partition, Pipeline, ReadStatus, Record, RecordError, RunSummary, Runtime,
    Source, SourceReader, WatermarkConfig,
};
use eddy_operators::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A test value: (key, value).
type Kv = (u64, u64);
/// A result row: the window and the values it took, sorted.
type Row = WindowResult<u64, Vec<u64>>;

/// Collects the values of a window, sorted: shows exactly which records it took.
#[derive(Clone)]
struct Values;

impl Aggregate<Kv> for Values {
    type Acc = Vec<u64>;
    type Out = Vec<u64>;
    fn create(&self) -> Vec<u64> {
        Vec::new()
    }
    fn add(&self, acc: &mut Vec<u64>, value: Kv) {
        acc.push(value.1);
    }
    fn merge(&self, acc: &mut Vec<u64>, other: Vec<u64>) {
        acc.extend(other);
    }
    fn finish(&self, mut acc: Vec<u64>) -> Vec<u64> {
        acc.sort();
        acc
    }
}

/// One step of a test input.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// A record: (event time, (key, value)).
    Record(u64, Kv),
    /// The watermark advances.
    Watermark(u64),
}

fn script(steps: &[Step]) -> Script<Kv> {
    steps.iter().fold(Script::new(), |s, step| match *step {
        Step::Record(e, kv) => s.records([(e, kv)]),
        Step::Watermark(w) => s.watermark(w),
    })
}

/// Each record with its timestamp: the highest watermark before it (0 at first), as the
/// scripted source stamps it whatever the worker count.
fn stamped(steps: &[Step]) -> Vec<(u64, u64, Kv)> {
    let mut w = 0;
    let mut out = Vec::new();
    for step in steps {
        match *step {
            Step::Record(e, kv) => out.push((w, e, kv)),
            Step::Watermark(t) => w = w.max(t),
        }
    }
    out
}

/// Sessions of records `(event time, (key, value))`, from scratch: per key, sort by event time
/// and cut where the step is `gap` or more. Rows with their event time `end - 1`.
fn sessionize(records: &[(u64, Kv)], gap: u64) -> Vec<Record<Row>> {
    let mut by_key: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for &(e, (k, v)) in records {
        by_key.entry(k).or_default().push((e, v));
    }
    let mut rows = Vec::new();
    for (key, mut recs) in by_key {
        recs.sort();
        let mut i = 0;
        while i < recs.len() {
            let mut j = i;
            while j + 1 < recs.len() && recs[j + 1].0 - recs[j].0 < gap {
                j += 1;
            }
            let mut value: Vec<u64> = recs[i..=j].iter().map(|r| r.1).collect();
            value.sort();
            let (start, end) = (recs[i].0, recs[j].0 + gap);
            rows.push((
                end - 1,
                WindowResult {
                    key,
                    start,
                    end,
                    value,
                },
            ));
            i = j + 1;
        }
    }
    rows.sort();
    rows
}

/// The session model: timestamps in order; at each timestamp `W`, the sessions of the records
/// taken so far that end at or before `W` are emitted; a record stamped `W` is late if its own
/// interval `[e, e + gap)` has ended by `W` or it overlaps an emitted session of its key.
/// Returns the rows and the number of late records.
fn session_model(steps: &[Step], gap: u64) -> (Vec<Record<Row>>, u64) {
    let records = stamped(steps);
    let mut stamps: Vec<u64> = records.iter().map(|r| r.0).collect();
    stamps.sort();
    stamps.dedup();
    let mut taken: Vec<(u64, Kv)> = Vec::new();
    let mut late = 0;
    for w in stamps {
        let emitted: Vec<Row> = sessionize(&taken, gap)
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| r.end <= w)
            .collect();
        for &(_, e, kv) in records.iter().filter(|r| r.0 == w) {
            let overlaps_emitted = emitted
                .iter()
                .any(|s| s.key == kv.0 && e < s.end && e + gap > s.start);
            if e + gap <= w || overlaps_emitted {
                late += 1;
            } else {
                taken.push((e, kv));
            }
        }
    }
    (sessionize(&taken, gap), late)
}

/// The count-window model: a record is late if its event time is below its timestamp; per key,
/// the others sorted by (event time, value) cut into runs of `n`; a partial run is dropped.
fn count_model(steps: &[Step], n: usize) -> (Vec<Record<Row>>, u64) {
    let mut late = 0;
    let mut by_key: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for (w, e, (k, v)) in stamped(steps) {
        if e < w {
            late += 1;
        } else {
            by_key.entry(k).or_default().push((e, v));
        }
    }
    let mut rows = Vec::new();
    for (key, mut recs) in by_key {
        recs.sort();
        for chunk in recs.chunks_exact(n) {
            let mut value: Vec<u64> = chunk.iter().map(|r| r.1).collect();
            value.sort();
            let last = chunk[n - 1].0;
            rows.push((
                last,
                WindowResult {
                    key,
                    start: chunk[0].0,
                    end: last + 1,
                    value,
                },
            ));
        }
    }
    rows.sort();
    (rows, late)
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Sessions { gap: u64 },
    Counts { n: u64 },
}

/// Runs `op` over `source` and returns the sorted rows and the summary; checks that every row's
/// event time is its window's `end - 1`.
fn run_op(
    source: impl Source<Kv>,
    op: Op,
    workers: usize,
    batch: usize,
    sink: CollectSink<Row>,
) -> (Vec<Record<Row>>, RunSummary) {
    let pipeline = Pipeline::new("sessions-test");
    pipeline.batch_size(batch);
    let keyed = pipeline
        .source("events", source, WatermarkConfig::default())
        .key_by("by_key", |kv: &Kv| kv.0);
    let out = match op {
        Op::Sessions { gap } => keyed.session_window("windows", gap, Values),
        Op::Counts { n } => keyed.count_window("windows", n, Values),
    };
    out.sink("collect", sink.clone());
    let summary = Runtime::new(workers).run(&pipeline).unwrap();
    let rows = sink.sorted();
    for (t, r) in &rows {
        assert_eq!(*t, r.end - 1, "a row's event time is its window's end - 1");
    }
    (rows, summary)
}

fn run(steps: &[Step], op: Op, workers: usize, batch: usize) -> (Vec<Record<Row>>, RunSummary) {
    run_op(script(steps), op, workers, batch, CollectSink::new())
}

fn stage<'a>(summary: &'a RunSummary, name: &str) -> &'a eddy_engine::StageSnapshot {
    summary.stages.iter().find(|s| s.name == name).unwrap()
}

/// Runs `steps` at 1, 2 and 4 workers and checks rows, late count and final state against the
/// model.
fn check(what: &str, steps: &[Step], op: Op, batch: usize) {
    let (expected, late) = match op {
        Op::Sessions { gap } => session_model(steps, gap),
        Op::Counts { n } => count_model(steps, n as usize),
    };
    for workers in [1, 2, 4] {
        let (rows, summary) = run(steps, op, workers, batch);
        assert_eq!(rows, expected, "{what}, {op:?}, {workers} workers");
        assert_eq!(
            summary.late(),
            late,
            "{what}, {op:?}, {workers} workers: late"
        );
        let windows = stage(&summary, "windows");
        assert_eq!(windows.late, late);
        assert_eq!(windows.records_out, expected.len() as u64);
        assert_eq!(windows.state, 0, "{what}: state left after the run");
    }
}

/// Random input: a clock moving forward, event times up to `disorder` behind it, some records
/// far behind the watermark, and watermarks at random steps, trailing the clock.
fn random_steps(rng: &mut StdRng, scale: u64) -> Vec<Step> {
    let n = rng.gen_range(40..200);
    let keys = rng.gen_range(1..6);
    let disorder = rng.gen_range(0..3 * scale);
    let (mut clock, mut wm) = (0u64, 0u64);
    let mut steps = Vec::new();
    for i in 0..n {
        clock += rng.gen_range(0..scale / 2 + 1);
        let e = if rng.gen_bool(0.1) {
            // Near or behind the watermark: late or not, by the rules.
            wm.saturating_sub(rng.gen_range(0..4 * scale))
        } else {
            clock.saturating_sub(rng.gen_range(0..disorder + 1))
        };
        steps.push(Step::Record(e, (rng.gen_range(0..keys), i)));
        if rng.gen_bool(0.2) {
            wm = wm.max(clock.saturating_sub(rng.gen_range(0..2 * scale)));
            steps.push(Step::Watermark(wm));
        }
    }
    steps
}

#[test]
fn sessions_equal_the_model_on_random_input() {
    for seed in 0..35 {
        let mut rng = StdRng::seed_from_u64(seed);
        let gap = [5, 20, 60][seed as usize % 3];
        let steps = random_steps(&mut rng, 20);
        let batch = rng.gen_range(1..16);
        check(&format!("seed {seed}"), &steps, Op::Sessions { gap }, batch);
    }
}

#[test]
fn count_windows_equal_the_model_on_random_input() {
    for seed in 100..135 {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = rng.gen_range(1..6);
        let steps = random_steps(&mut rng, 20);
        let batch = rng.gen_range(1..16);
        check(&format!("seed {seed}"), &steps, Op::Counts { n }, batch);
    }
}

fn row(key: u64, start: u64, end: u64, value: &[u64]) -> Record<Row> {
    (
        end - 1,
        WindowResult {
            key,
            start,
            end,
            value: value.to_vec(),
        },
    )
}

/// Two open sessions of a key, then a record that arrives later (out of order) between them:
/// one session. Three sessions bridged by two records of one timestamp: one session, whatever
/// the order the workers see them in.
#[test]
fn a_bridging_record_arriving_out_of_order_merges_sessions() {
    let gap = 100;
    let steps = [
        Step::Record(0, (1, 1)),
        Step::Record(150, (1, 2)),
        Step::Record(1_000, (2, 10)),
        Step::Record(1_100, (2, 11)),
        Step::Record(1_200, (2, 12)),
        Step::Watermark(50),
        Step::Record(80, (1, 3)),
        Step::Record(1_150, (2, 13)),
        Step::Record(1_050, (2, 14)),
    ];
    let expected = vec![
        row(1, 0, 250, &[1, 2, 3]),
        row(2, 1_000, 1_300, &[10, 11, 12, 13, 14]),
    ];
    assert_eq!(session_model(&steps, gap), (expected.clone(), 0));
    for batch in [1, 64] {
        for workers in [1, 2, 4] {
            let (rows, summary) = run(&steps, Op::Sessions { gap }, workers, batch);
            assert_eq!(rows, expected, "{workers} workers, batch {batch}");
            assert_eq!(summary.late(), 0);
        }
    }
}

/// A session emitted at watermark 100 takes nothing more: a record inside it is late (rule 2),
/// one whose own interval has ended is late (rule 1), and one after it starts a new session.
#[test]
fn records_into_an_emitted_session_are_late() {
    let gap = 100;
    let steps = [
        Step::Record(0, (1, 1)),
        Step::Record(120, (2, 2)),
        Step::Watermark(150),
        Step::Record(90, (1, 3)), // e + gap = 190 > 150, but [0, 100) was emitted: late
        Step::Record(30, (1, 4)), // 30 + 100 <= 150: late
        Step::Record(100, (1, 5)), // after the emitted session: a new one
        Step::Record(60, (2, 6)), // 160 > 150, key 2's session is open: merges
    ];
    let expected = vec![
        row(1, 0, 100, &[1]),
        row(1, 100, 200, &[5]),
        row(2, 60, 220, &[2, 6]),
    ];
    assert_eq!(session_model(&steps, gap), (expected, 2));
    check("emitted session", &steps, Op::Sessions { gap }, 2);
}

/// Count windows: ties on event time go by value; records below the watermark are late; the
/// partial window at the end is dropped.
#[test]
fn count_windows_order_ties_by_value_and_drop_the_partial_window() {
    let steps = [
        Step::Record(10, (1, 7)),
        Step::Record(10, (1, 3)),
        Step::Record(5, (1, 9)),
        Step::Watermark(8),
        Step::Record(7, (1, 1)), // below the watermark: late
        Step::Record(10, (1, 5)),
        Step::Record(12, (1, 2)),
    ];
    let (expected, late) = count_model(&steps, 2);
    assert_eq!(
        expected,
        vec![row(1, 5, 11, &[3, 9]), row(1, 10, 11, &[5, 7])]
    );
    assert_eq!(late, 1);
    check("ties", &steps, Op::Counts { n: 2 }, 1);
}

/// A source that plays `steps` then, instead of ending, stays quiet (its watermark past every
/// session) until `done` says every result has arrived, or a deadline passes.
struct ThenWait {
    steps: Vec<Step>,
    done: Arc<dyn Fn() -> bool + Send + Sync>,
    gave_up: Arc<AtomicBool>,
}

struct ThenWaitReader {
    inner: Box<dyn SourceReader<Kv>>,
    finished: bool,
    done: Arc<dyn Fn() -> bool + Send + Sync>,
    deadline: Instant,
    gave_up: Arc<AtomicBool>,
}

impl Source<Kv> for ThenWait {
    fn describe(&self) -> String {
        "script, then wait".into()
    }
    fn open(&self, partition: Partition) -> Result<Box<dyn SourceReader<Kv>>, ConnectorError> {
        Ok(Box::new(ThenWaitReader {
            inner: script(&self.steps).open(partition)?,
            finished: false,
            done: Arc::clone(&self.done),
            deadline: Instant::now() + Duration::from_secs(20),
            gave_up: Arc::clone(&self.gave_up),
        }))
    }
}

impl SourceReader<Kv> for ThenWaitReader {
    fn poll(
        &mut self,
        out: &mut Vec<Record<Kv>>,
        max: usize,
        rejected: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError> {
        if !self.finished {
            match self.inner.poll(out, max, rejected)? {
                ReadStatus::Done => self.finished = true,
                status => return Ok(status),
            }
        }
        if (self.done)() {
            return Ok(ReadStatus::Done);
        }
        if Instant::now() > self.deadline {
            self.gave_up.store(true, Ordering::SeqCst);
            return Ok(ReadStatus::Done);
        }
        Ok(ReadStatus::Idle)
    }
    fn watermark(&self) -> Option<u64> {
        self.inner.watermark()
    }
}

/// Many keys, many sessions each: every session is emitted while the input is still open
/// (the watermark closes them, not the end of the input), and the state gauge ends at 0.
#[test]
fn many_sessions_are_emitted_by_the_watermark_and_state_returns_to_zero() {
    let gap = 50;
    let mut rng = StdRng::seed_from_u64(3);
    let mut steps = Vec::new();
    let mut t = 0;
    for i in 0..4_000u64 {
        t += rng.gen_range(0..4);
        // Bursts of activity per key, with pauses longer than the gap between them.
        let key = rng.gen_range(0..200);
        steps.push(Step::Record(t, (key, i)));
        if i % 50 == 0 {
            steps.push(Step::Watermark(t.saturating_sub(20)));
        }
    }
    steps.push(Step::Watermark(t + 10 * gap));
    let (expected, late) = session_model(&steps, gap);
    assert_eq!(late, 0);
    assert!(expected.len() > 1_000, "{} sessions", expected.len());
    for workers in [1, 4] {
        let sink = CollectSink::new();
        let seen = sink.clone();
        let want = expected.len();
        let gave_up = Arc::new(AtomicBool::new(false));
        let source = ThenWait {
            steps: steps.clone(),
            done: Arc::new(move || seen.rows().len() >= want),
            gave_up: Arc::clone(&gave_up),
        };
        let (rows, summary) = run_op(source, Op::Sessions { gap }, workers, 64, sink);
        assert!(
            !gave_up.load(Ordering::SeqCst),
            "sessions waited for the end of the input"
        );
        assert_eq!(rows, expected, "{workers} workers");
        let windows = stage(&summary, "windows");
        assert_eq!(windows.state, 0);
        // 200 keys: open sessions and remembered ends stay near the key count, far below the
        // number of sessions the run goes through (checked at one worker: with several, one
        // worker's source may run ahead of the others' watermarks, and what it read waits)
        assert!(
            windows.state_peak > 0 && (workers > 1 || windows.state_peak <= 2 * 200),
            "{workers} workers: peak state {} for 200 keys",
            windows.state_peak
        );
    }
}
