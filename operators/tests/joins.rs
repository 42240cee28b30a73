//! The windowed, interval and as-of joins against brute-force models: seeded random inputs on
//! both sides (keys, event times out of order, late records, random watermark steps), at 1, 2
//! and 4 workers; and state that drains once the watermark has passed.

use eddy_engine::testing::{CollectSink, Script};
use eddy_engine::{
    LatePolicy, LateRecord, Pipeline, Record, RunSummary, Runtime, Stream, WatermarkConfig,
};
use eddy_operators::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A record of either side: `(key, id)`; ids are unique per side.
type Row = (u64, u32);

/// One side's input: the script the pipeline reads and, for the models, every record with the
/// timestamp the script gives it (the last watermark before it).
struct Input {
    script: Script<Row>,
    /// `(stamp, event time, row)`.
    records: Vec<(u64, u64, Row)>,
}

/// Random input: `n` records over `keys` keys, event times up to `disorder` ms behind a rising
/// clock, watermarks rising in random steps (trailing the clock by up to `disorder` ms), and
/// about one record in `late_one_in` placed behind the watermark.
fn input(rng: &mut StdRng, n: usize, keys: u64, disorder: u64, late_one_in: u32) -> Input {
    let (mut clock, mut watermark) = (0u64, 0u64);
    let mut script = Script::new();
    let mut records = Vec::new();
    for id in 0..n as u32 {
        if rng.gen_ratio(1, 6) {
            watermark = watermark.max(clock.saturating_sub(rng.gen_range(0..=disorder)));
            script = script.watermark(watermark);
        }
        clock += rng.gen_range(0..30);
        let time = if rng.gen_ratio(1, late_one_in) {
            watermark.saturating_sub(rng.gen_range(1..=3 * disorder))
        } else {
            clock.saturating_sub(rng.gen_range(0..=disorder))
        };
        let row = (rng.gen_range(0..keys), id);
        script = script.records([(time, row)]);
        records.push((watermark, time, row));
    }
    Input { script, records }
}

/// Runs `join` over the two scripted sources; returns its output, sorted, the run's summary
/// and the late records the side output received.
fn run<O: eddy_engine::Data + Clone + Ord>(
    workers: usize,
    left: &Input,
    right: &Input,
    join: impl FnOnce(Keyed<u64, Row>, Keyed<u64, Row>) -> Stream<O>,
) -> (Vec<Record<O>>, RunSummary, Vec<LateRecord>) {
    let pipeline = Pipeline::new("join test");
    let late = CollectSink::new();
    pipeline
        .late_policy(LatePolicy::side_output(late.clone()))
        .batch_size(7);
    let l = pipeline
        .source("left", left.script.clone(), WatermarkConfig::default())
        .key_by("left_by_key", |r: &Row| r.0);
    let r = pipeline
        .source("right", right.script.clone(), WatermarkConfig::default())
        .key_by("right_by_key", |r: &Row| r.0);
    let out = CollectSink::new();
    join(l, r).sink("out", out.clone());
    let summary = Runtime::new(workers).run(&pipeline).unwrap();
    let late = late.rows().into_iter().map(|(_, l)| l).collect();
    (out.sorted(), summary, late)
}

/// The join stage's state gauge: `(at the end, at its peak)`.
fn stage_state(summary: &RunSummary, name: &str) -> (u64, u64) {
    let stage = summary
        .stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no stage named {name}"));
    (stage.state, stage.state_peak)
}

/// Checks the late records the side output got: the model's, by event time, from the join.
fn assert_late(summary: &RunSummary, late: &[LateRecord], mut expected: Vec<u64>, what: &str) {
    assert_eq!(summary.late(), expected.len() as u64, "{what}: late count");
    let mut got: Vec<u64> = late.iter().map(|l| l.event_time).collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "{what}: late records' event times");
    assert!(late.iter().all(|l| l.stage == "join"), "{what}: late stage");
}

// ---------------------------------------------------------------------------------------------
// Models: loops over the whole input.

/// The windows `[start, end)` containing `time`.
fn windows_of(spec: WindowSpec, time: u64) -> Vec<(u64, u64)> {
    let mut windows = Vec::new();
    let mut start = time / spec.slide() * spec.slide();
    while start + spec.size() > time {
        windows.push((start, start + spec.size()));
        match start.checked_sub(spec.slide()) {
            Some(s) => start = s,
            None => break,
        }
    }
    windows
}

type WindowOut = WindowJoined<u64, Row, Row>;

fn window_model(
    spec: WindowSpec,
    left: &Input,
    right: &Input,
) -> (Vec<Record<WindowOut>>, Vec<u64>) {
    let mut out = Vec::new();
    for &(a_stamp, a_time, a) in &left.records {
        for &(b_stamp, b_time, b) in &right.records {
            if a.0 != b.0 {
                continue;
            }
            for (start, end) in windows_of(spec, a_time) {
                if start <= b_time && b_time < end && a_stamp < end && b_stamp < end {
                    let joined = WindowJoined {
                        key: a.0,
                        start,
                        end,
                        a,
                        b,
                    };
                    out.push((end - 1, joined));
                }
            }
        }
    }
    out.sort();
    let late = left
        .records
        .iter()
        .chain(&right.records)
        .filter(|(stamp, time, _)| windows_of(spec, *time).iter().all(|(_, end)| end <= stamp))
        .map(|(_, time, _)| *time)
        .collect();
    (out, late)
}

/// On time for the interval and as-of joins: not behind the watermark it arrived at.
fn on_time(records: &[(u64, u64, Row)]) -> impl Iterator<Item = (u64, Row)> + '_ {
    records
        .iter()
        .filter(|(stamp, time, _)| time >= stamp)
        .map(|(_, time, row)| (*time, *row))
}

fn behind(left: &Input, right: &Input) -> Vec<u64> {
    left.records
        .iter()
        .chain(&right.records)
        .filter(|(stamp, time, _)| time < stamp)
        .map(|(_, time, _)| *time)
        .collect()
}

fn interval_model(
    lower: u64,
    upper: u64,
    left: &Input,
    right: &Input,
) -> Vec<Record<(u64, Row, Row)>> {
    let mut out = Vec::new();
    for (a_time, a) in on_time(&left.records) {
        for (b_time, b) in on_time(&right.records) {
            if a.0 == b.0 && a_time <= b_time + lower && b_time <= a_time + upper {
                out.push((a_time.max(b_time), (a.0, a, b)));
            }
        }
    }
    out.sort();
    out
}

fn asof_model(left: &Input, right: &Input) -> Vec<Record<(u64, Row, Option<Row>)>> {
    let mut out = Vec::new();
    for (a_time, a) in on_time(&left.records) {
        let latest = on_time(&right.records)
            .filter(|(b_time, b)| b.0 == a.0 && *b_time <= a_time)
            .max()
            .map(|(_, b)| b);
        out.push((a_time, (a.0, a, latest)));
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Random tests.

const SEEDS: u64 = 30;
const WORKERS: [usize; 3] = [1, 2, 4];

fn inputs(seed: u64) -> (Input, Input) {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = rng.gen_range(20..120);
    let keys = rng.gen_range(1..6);
    let disorder = rng.gen_range(0..400);
    // One key more on the left: its records meet nothing (as-of: `None`).
    let left = input(&mut rng, n, keys + 1, disorder, 10);
    let m = rng.gen_range(20..120);
    let right = input(&mut rng, m, keys, disorder, 10);
    (left, right)
}

fn check_window_join(seed: u64, spec: WindowSpec) {
    let (left, right) = inputs(seed);
    let (expected, late) = window_model(spec, &left, &right);
    for workers in WORKERS {
        let what = format!("window join {spec:?}, seed {seed}, {workers} workers");
        let (got, summary, late_rows) = run(workers, &left, &right, |l, r| {
            l.window_join("join", r, spec)
        });
        assert_eq!(got, expected, "{what}");
        assert_late(&summary, &late_rows, late.clone(), &what);
        assert_eq!(
            stage_state(&summary, "join").0,
            0,
            "{what}: state at the end"
        );
    }
}

#[test]
fn window_join_tumbling_matches_model() {
    for seed in 0..SEEDS {
        check_window_join(seed, WindowSpec::tumbling(200));
    }
}

#[test]
fn window_join_hopping_matches_model() {
    for seed in 100..100 + SEEDS {
        check_window_join(seed, WindowSpec::hopping(300, 100));
    }
}

#[test]
fn interval_join_matches_model() {
    for seed in 200..200 + SEEDS {
        let (left, right) = inputs(seed);
        let mut rng = StdRng::seed_from_u64(seed);
        let (lower, upper) = (rng.gen_range(0..300), rng.gen_range(0..300));
        let expected = interval_model(lower, upper, &left, &right);
        for workers in WORKERS {
            let what =
                format!("interval join [-{lower}, +{upper}], seed {seed}, {workers} workers");
            let (got, summary, late_rows) = run(workers, &left, &right, |l, r| {
                l.interval_join("join", r, lower, upper)
            });
            assert_eq!(got, expected, "{what}");
            assert_late(&summary, &late_rows, behind(&left, &right), &what);
            assert_eq!(
                stage_state(&summary, "join").0,
                0,
                "{what}: state at the end"
            );
        }
    }
}

#[test]
fn asof_join_matches_model() {
    for seed in 300..300 + SEEDS {
        let (left, right) = inputs(seed);
        let expected = asof_model(&left, &right);
        for workers in WORKERS {
            let what = format!("as-of join, seed {seed}, {workers} workers");
            let (got, summary, late_rows) =
                run(workers, &left, &right, |l, r| l.asof_join("join", r));
            assert_eq!(got, expected, "{what}");
            assert_late(&summary, &late_rows, behind(&left, &right), &what);
            assert_eq!(
                stage_state(&summary, "join").0,
                0,
                "{what}: state at the end"
            );
        }
    }
}

/// Ties in event time on the right side: the greatest record wins, whatever the arrival order.
#[test]
fn asof_join_breaks_ties_by_the_greatest_record() {
    let left = Input {
        script: Script::new().records([(10, (1, 0))]),
        records: vec![(0, 10, (1, 0))],
    };
    let right_rows = [
        (5, (1, 7)),
        (5, (1, 9)),
        (5, (1, 8)),
        (3, (1, 99)),
        (11, (1, 100)),
    ];
    let right = Input {
        script: Script::new().records(right_rows),
        records: right_rows.iter().map(|&(t, r)| (0, t, r)).collect(),
    };
    for workers in WORKERS {
        let (got, _, _) = run(workers, &left, &right, |l, r| l.asof_join("join", r));
        assert_eq!(got, vec![(10, (1, (1, 0), Some((1, 9))))]);
        assert_eq!(got, asof_model(&left, &right));
    }
}

/// An interval pair carries the later of its two event times; the bounds are inclusive.
#[test]
fn interval_join_stamps_pairs_with_the_later_event_time() {
    let left = Input {
        script: Script::new().records([(100, (1, 0))]).watermark(1_000),
        records: vec![(0, 100, (1, 0))],
    };
    let right = Input {
        script: Script::new().records([(90, (1, 0)), (130, (1, 1)), (200, (1, 2))]),
        records: vec![(0, 90, (1, 0)), (0, 130, (1, 1)), (0, 200, (1, 2))],
    };
    let (got, _, _) = run(2, &left, &right, |l, r| l.interval_join("join", r, 10, 50));
    assert_eq!(
        got,
        vec![(100, (1, (1, 0), (1, 0))), (130, (1, (1, 0), (1, 1)))]
    );
}

// ---------------------------------------------------------------------------------------------
// State.

/// Many windows over many keys, in order, with the watermark close behind: every window is
/// fired and every record evicted, so the joins hold nothing at the end.
#[test]
fn window_and_interval_join_state_drains() {
    // The joins hold the records of the windows (intervals) the watermark has not passed: a few
    // hundred at any moment, far below the 6 000 records of the run. The bound is checked at one
    // worker: with several, one worker's source may run ahead of the others' watermarks (there
    // is no flow control between sources yet), and what it read waits in the join's state.
    const STATE_BOUND: u64 = 600;
    let mut rng = StdRng::seed_from_u64(7);
    let (left, right) = (
        input(&mut rng, 3_000, 50, 50, 1_000),
        input(&mut rng, 3_000, 50, 50, 1_000),
    );
    for workers in WORKERS {
        let (got, summary, _) = run(workers, &left, &right, |l, r| {
            l.window_join("join", r, WindowSpec::hopping(100, 50))
        });
        assert_eq!(
            got,
            window_model(WindowSpec::hopping(100, 50), &left, &right).0
        );
        let (end, peak) = stage_state(&summary, "join");
        assert_eq!(end, 0, "window join, {workers} workers");
        assert!(
            peak > 0 && (workers > 1 || peak <= STATE_BOUND),
            "window join, {workers} workers: peak state {peak} of 6 000 records"
        );
        let (got, summary, _) = run(workers, &left, &right, |l, r| {
            l.interval_join("join", r, 20, 30)
        });
        assert_eq!(got, interval_model(20, 30, &left, &right));
        let (end, peak) = stage_state(&summary, "join");
        assert_eq!(end, 0, "interval join, {workers} workers");
        assert!(
            peak > 0 && (workers > 1 || peak <= STATE_BOUND),
            "interval join, {workers} workers: peak state {peak} of 6 000 records"
        );
    }
}
