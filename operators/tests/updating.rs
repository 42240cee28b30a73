//! Updating-mode operators against brute-force models, on seeded random input at 1, 2 and 4
//! workers.
//!
//! Every test checks the whole change log, not only its sum: the changes stamped `<= T`,
//! summed, must be the model evaluated on the records stamped `<= T`, for every `T` at which
//! anything changes (so every intermediate state the pipeline shows is one the model passes
//! through), and at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use eddy_engine::change::consolidate;
use eddy_engine::testing::{CollectSink, Script};
use eddy_engine::timely::dataflow::operators::Inspect;
use eddy_engine::{Change, LatePolicy, Pipeline, Record, RunSummary, Runtime, WatermarkConfig};
use eddy_operators::prelude::*;
use eddy_operators::updating::{fold_records, join_records};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WORKERS: [usize; 3] = [1, 2, 4];

/// A record of the random input: `(key, value)` with its event time and the timestamp the
/// scripted source gives it (the watermark before the step it arrives in).
#[derive(Clone, Copy, Debug)]
struct Input {
    event_time: u64,
    stamp: u64,
    key: u64,
    value: u64,
}

/// Random input in watermark steps: each step's records arrive stamped with the previous
/// watermark; their event times lie around it (bounded disorder), a few well behind it (late).
fn random_input(rng: &mut StdRng, steps: usize, keys: u64) -> (Vec<Input>, Vec<u64>) {
    let mut inputs = Vec::new();
    let mut watermarks = Vec::new();
    let mut watermark = 0u64;
    for _ in 0..steps {
        for _ in 0..rng.gen_range(0..6) {
            let event_time = if rng.gen_bool(0.15) {
                watermark.saturating_sub(rng.gen_range(0..60))
            } else {
                watermark + rng.gen_range(0..25)
            };
            inputs.push(Input {
                event_time,
                stamp: watermark,
                key: rng.gen_range(0..keys),
                value: rng.gen_range(0..8),
            });
        }
        watermark += rng.gen_range(1..20);
        watermarks.push(watermark);
    }
    (inputs, watermarks)
}

/// The script of `inputs`: each record is placed after the watermark it is stamped with.
fn script(inputs: &[Input], watermarks: &[u64]) -> Script<(u64, u64)> {
    let mut script = Script::new();
    let mut next = 0;
    let mut current = 0;
    for &w in watermarks {
        let batch: Vec<Record<(u64, u64)>> = inputs[next..]
            .iter()
            .take_while(|r| r.stamp == current)
            .map(|r| (r.event_time, (r.key, r.value)))
            .collect();
        next += batch.len();
        script = script.records(batch).watermark(w);
        current = w;
    }
    assert_eq!(
        next,
        inputs.len(),
        "every record is stamped with a watermark"
    );
    script
}

/// Checks a change log against a model: at every time at which the log changes, at every
/// stamp, and at the end, the changes up to that time sum to the model at that time.
fn check_log<T: Ord + Clone + std::fmt::Debug>(
    what: &str,
    log: &[Record<Change<T>>],
    stamps: impl IntoIterator<Item = u64>,
    model: impl Fn(u64) -> Vec<T>,
) {
    let mut times: Vec<u64> = log.iter().map(|(t, _)| *t).chain(stamps).collect();
    times.push(u64::MAX);
    times.sort_unstable();
    times.dedup();
    for t in times {
        let prefix = log
            .iter()
            .filter(|(at, _)| *at <= t)
            .map(|(_, c)| c.clone());
        let standing = consolidate(prefix).unwrap_or_else(|e| panic!("{what}, at {t}: {e}"));
        let mut expected = model(t);
        expected.sort();
        assert_eq!(standing, expected, "{what}: the result standing at {t}");
    }
}

type Side = (u64, u64);
type JoinRow = Joined<u64, Option<Side>, Option<Side>>;

/// The join model: every record alive at `t` (stamped `<= t`; with a TTL, `t < e + ttl`),
/// joined by nested loops.
fn join_model(
    left: &[Input],
    right: &[Input],
    kind: JoinKind,
    ttl: Option<u64>,
    t: u64,
) -> Vec<JoinRow> {
    let alive = |r: &&Input| {
        r.stamp <= t && ttl.is_none_or(|ttl| r.event_time + ttl > t && r.event_time + ttl > r.stamp)
    };
    let l: Vec<&Input> = left.iter().filter(alive).collect();
    let r: Vec<&Input> = right.iter().filter(alive).collect();
    let mut rows = Vec::new();
    for a in &l {
        for b in &r {
            if a.key == b.key {
                rows.push(Joined {
                    key: a.key,
                    left: Some((a.key, a.value)),
                    right: Some((b.key, b.value)),
                });
            }
        }
    }
    if kind != JoinKind::Inner {
        for a in &l {
            if !r.iter().any(|b| b.key == a.key) {
                rows.push(Joined {
                    key: a.key,
                    left: Some((a.key, a.value)),
                    right: None,
                });
            }
        }
    }
    if kind == JoinKind::FullOuter {
        for b in &r {
            if !l.iter().any(|a| a.key == b.key) {
                rows.push(Joined {
                    key: b.key,
                    left: None,
                    right: Some((b.key, b.value)),
                });
            }
        }
    }
    rows
}

fn run_join(
    left: &[Input],
    right: &[Input],
    watermarks: &[u64],
    kind: JoinKind,
    ttl: Option<u64>,
    workers: usize,
) -> (Vec<Record<Change<JoinRow>>>, RunSummary) {
    let pipeline = Pipeline::new("join");
    let l = pipeline
        .source("left", script(left, watermarks), WatermarkConfig::default())
        .key_by("left_key", |r: &Side| r.0);
    let r = pipeline
        .source(
            "right",
            script(right, watermarks),
            WatermarkConfig::default(),
        )
        .key_by("right_key", |r: &Side| r.0);
    let out = CollectSink::new();
    match ttl {
        Some(ttl) => l.join_updating_ttl("join", r, kind, ttl),
        None => l.join_updating("join", r, kind),
    }
    .sink("out", out.clone());
    let summary = Runtime::new(workers).run(&pipeline).unwrap();
    (out.rows(), summary)
}

fn join_property(kind: JoinKind, ttl: Option<u64>) {
    for seed in 0..12u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let (inputs, watermarks) = random_input(&mut rng, 25, 4);
        let (left, right): (Vec<Input>, Vec<Input>) =
            inputs.into_iter().partition(|_| rng.gen_bool(0.5));
        let late = ttl.map_or(0, |ttl| {
            left.iter()
                .chain(&right)
                .filter(|r| r.event_time + ttl <= r.stamp)
                .count() as u64
        });
        for workers in WORKERS {
            let what = format!("{kind:?} join, ttl {ttl:?}, seed {seed}, {workers} workers");
            let (log, summary) = run_join(&left, &right, &watermarks, kind, ttl, workers);
            assert_eq!(summary.late(), late, "{what}: late records");
            check_log(&what, &log, watermarks.iter().copied(), |t| {
                join_model(&left, &right, kind, ttl, t)
            });
        }
    }
}

#[test]
fn inner_join_matches_the_model_at_every_step() {
    join_property(JoinKind::Inner, None);
}

#[test]
fn left_outer_join_matches_the_model_at_every_step() {
    join_property(JoinKind::LeftOuter, None);
}

#[test]
fn full_outer_join_matches_the_model_at_every_step() {
    join_property(JoinKind::FullOuter, None);
}

#[test]
fn ttl_joins_match_the_model_at_every_step() {
    join_property(JoinKind::Inner, Some(30));
    join_property(JoinKind::FullOuter, Some(45));
}

#[test]
fn left_outer_row_is_retracted_when_its_match_arrives_and_back_when_the_match_expires() {
    // left (5, key 1) at stamp 0; right (10, key 1) at stamp 20; ttl 30: right expires at 40,
    // left at 35.
    let pipeline = Pipeline::new("left outer");
    let l = pipeline
        .source(
            "left",
            Script::new()
                .records([(5, (1u64, 100u64))])
                .watermark(20)
                .watermark(60),
            WatermarkConfig::default(),
        )
        .key_by("left_key", |r: &Side| r.0);
    let r = pipeline
        .source(
            "right",
            Script::new()
                .watermark(20)
                .records([(22, (1u64, 200u64))])
                .watermark(60),
            WatermarkConfig::default(),
        )
        .key_by("right_key", |r: &Side| r.0);
    let out = CollectSink::new();
    l.join_updating_ttl("join", r, JoinKind::LeftOuter, 30)
        .sink("out", out.clone());
    Runtime::new(2).run(&pipeline).unwrap();
    let alone = Joined {
        key: 1,
        left: Some((1, 100)),
        right: None,
    };
    let pair = Joined {
        key: 1,
        left: Some((1, 100)),
        right: Some((1, 200)),
    };
    let mut expected = vec![
        (0, Change::insert(alone.clone())),
        (20, Change::retract(alone)),
        (20, Change::insert(pair.clone())),
        // The left record expires at 5 + 30: its pair goes, and it does not stand alone.
        (35, Change::retract(pair)),
    ];
    expected.sort();
    assert_eq!(out.sorted(), expected);
}

/// Sum of values per key over the records stamped `<= t`.
fn aggregate_model(inputs: &[Input], t: u64) -> Vec<Aggregated<u64, u64>> {
    let mut sums: BTreeMap<u64, u64> = BTreeMap::new();
    for r in inputs.iter().filter(|r| r.stamp <= t) {
        *sums.entry(r.key).or_default() += r.value;
    }
    sums.into_iter()
        .map(|(key, value)| Aggregated { key, value })
        .collect()
}

#[test]
fn aggregate_updating_matches_the_model_at_every_step() {
    for seed in 0..15u64 {
        let mut rng = StdRng::seed_from_u64(100 + seed);
        let (inputs, watermarks) = random_input(&mut rng, 30, 5);
        for workers in WORKERS {
            let pipeline = Pipeline::new("aggregate");
            let out = CollectSink::new();
            pipeline
                .source(
                    "in",
                    script(&inputs, &watermarks),
                    WatermarkConfig::default(),
                )
                .key_by("key", |r: &Side| r.0)
                .aggregate_updating("sums", Sum(|r: &Side| r.1))
                .sink("out", out.clone());
            let summary = Runtime::new(workers).run(&pipeline).unwrap();
            let what = format!("aggregate, seed {seed}, {workers} workers");
            assert_eq!(summary.late(), 0, "{what}: nothing is late");
            check_log(&what, &out.rows(), watermarks.iter().copied(), |t| {
                aggregate_model(&inputs, t)
            });
        }
    }
}

/// The windowed sum per key and window, over the records stamped `<= t` that their window
/// takes (stamp `< end + allowed`); and the records no window takes.
fn window_model(
    inputs: &[Input],
    spec: WindowSpec,
    allowed: u64,
    t: u64,
) -> (Vec<WindowResult<u64, u64>>, u64) {
    let mut sums: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut late = 0;
    for r in inputs.iter().filter(|r| r.stamp <= t) {
        let mut taken = false;
        let mut start = 0;
        while start <= r.event_time {
            let end = start + spec.size();
            if r.event_time < end && r.stamp < end + allowed {
                *sums.entry((r.key, start)).or_default() += r.value;
                taken = true;
            }
            start += spec.slide();
        }
        late += u64::from(!taken);
    }
    let rows = sums
        .into_iter()
        .map(|((key, start), value)| WindowResult {
            key,
            start,
            end: start + spec.size(),
            value,
        })
        .collect();
    (rows, late)
}

#[test]
fn window_updating_matches_the_model_at_every_step() {
    for seed in 0..15u64 {
        let mut rng = StdRng::seed_from_u64(200 + seed);
        let (inputs, watermarks) = random_input(&mut rng, 30, 4);
        let spec = if seed % 2 == 0 {
            WindowSpec::tumbling(20)
        } else {
            WindowSpec::hopping(30, 10)
        };
        let allowed = [0, 15, 40][seed as usize % 3];
        for workers in WORKERS {
            let pipeline = Pipeline::new("window");
            pipeline.late_policy(LatePolicy::correct(allowed));
            let out = CollectSink::new();
            pipeline
                .source(
                    "in",
                    script(&inputs, &watermarks),
                    WatermarkConfig::default(),
                )
                .key_by("key", |r: &Side| r.0)
                .window_updating("sums", spec, Sum(|r: &Side| r.1))
                .sink("out", out.clone());
            let summary = Runtime::new(workers).run(&pipeline).unwrap();
            let what = format!("{spec:?}, allowed {allowed}, seed {seed}, {workers} workers");
            let (_, late) = window_model(&inputs, spec, allowed, u64::MAX);
            assert_eq!(summary.late(), late, "{what}: late records");
            check_log(&what, &out.rows(), watermarks.iter().copied(), |t| {
                window_model(&inputs, spec, allowed, t).0
            });
        }
    }
}

#[test]
fn correct_policy_corrects_within_the_allowed_lateness_and_counts_beyond_it() {
    let script = Script::new()
        .records([(5, (1u64, 1u64))])
        .watermark(10) // the window [0, 10) has passed: its result stands, 1
        .records([(7, (1, 1))]) // 5 ms behind its window's end, within 20: a correction
        .watermark(30) // [0, 10) is closed for good
        .records([(8, (1, 1))]); // late
    for workers in WORKERS {
        let pipeline = Pipeline::new("correct");
        pipeline.late_policy(LatePolicy::correct(20));
        let out = CollectSink::new();
        pipeline
            .source("in", script.clone(), WatermarkConfig::default())
            .key_by("key", |r: &Side| r.0)
            .window_updating("counts", WindowSpec::tumbling(10), Count)
            .sink("out", out.clone());
        let summary = Runtime::new(workers).run(&pipeline).unwrap();
        let result = |value| WindowResult {
            key: 1u64,
            start: 0,
            end: 10,
            value,
        };
        let mut expected = vec![
            (0, Change::insert(result(1))),
            (10, Change::retract(result(1))),
            (10, Change::insert(result(2))),
        ];
        expected.sort();
        assert_eq!(out.sorted(), expected, "{workers} workers");
        assert_eq!(summary.late(), 1, "{workers} workers");
    }
}

#[test]
fn without_correct_policy_a_record_after_the_window_end_is_late() {
    let pipeline = Pipeline::new("drop");
    let out = CollectSink::new();
    pipeline
        .source(
            "in",
            Script::new()
                .records([(5, (1u64, 1u64))])
                .watermark(10)
                .records([(7, (1, 1))]),
            WatermarkConfig::default(),
        )
        .key_by("key", |r: &Side| r.0)
        .window_updating("counts", WindowSpec::tumbling(10), Count)
        .sink("out", out.clone());
    let summary = Runtime::new(2).run(&pipeline).unwrap();
    let row = WindowResult {
        key: 1u64,
        start: 0,
        end: 10,
        value: 1u64,
    };
    assert_eq!(out.sorted(), vec![(0, Change::insert(row))]);
    assert_eq!(summary.late(), 1);
}

/// A long run of steady input; the stage's state gauge, read whenever the output's frontier
/// moves, must stay far below the input size.
fn steady_input(steps: u64, per_step: u64) -> (Vec<Input>, Vec<u64>) {
    let mut inputs = Vec::new();
    for step in 0..steps {
        for i in 0..per_step {
            inputs.push(Input {
                event_time: step * 10 + i,
                stamp: step * 10,
                key: (step * per_step + i) % 50,
                value: i,
            });
        }
    }
    let watermarks = (1..=steps).map(|s| s * 10).collect();
    (inputs, watermarks)
}

#[test]
fn ttl_join_state_stays_bounded() {
    let (inputs, watermarks) = steady_input(300, 4);
    for workers in WORKERS {
        let pipeline = Pipeline::new("bounded join");
        let l = pipeline
            .source(
                "left",
                script(&inputs, &watermarks),
                WatermarkConfig::default(),
            )
            .key_by("left_key", |r: &Side| r.0)
            .into_stream();
        let r = pipeline
            .source(
                "right",
                script(&inputs, &watermarks),
                WatermarkConfig::default(),
            )
            .key_by("right_key", |r: &Side| r.0)
            .into_stream();
        let peak = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&peak);
        let out = CollectSink::new();
        l.stage2(r, "join", "join", String::new(), move |l, r, stage| {
            let seen = Arc::clone(&seen);
            join_records(l, r, stage.clone(), JoinKind::FullOuter, Some(50)).inspect_core(
                move |_| {
                    seen.fetch_max(stage.metrics().state(), Ordering::Relaxed);
                },
            )
        })
        .sink("out", out.clone());
        let summary = Runtime::new(workers).run(&pipeline).unwrap();
        let peak = peak.load(Ordering::Relaxed);
        // Alive at any watermark: about 50 ms of records (5 steps of 4) per side.
        assert!(
            peak > 0 && peak <= 80,
            "{workers} workers: peak state {peak} of {} records",
            2 * inputs.len()
        );
        let state = summary
            .stages
            .iter()
            .find(|s| s.name == "join")
            .unwrap()
            .state;
        assert_eq!(state, 0, "nothing is held after the run");
        // Everything expired: the result is empty again.
        assert_eq!(
            consolidate(out.rows().into_iter().map(|(_, c)| c)),
            Ok(vec![])
        );
    }
}

#[test]
fn window_updating_state_stays_bounded() {
    let (inputs, watermarks) = steady_input(300, 4);
    for workers in WORKERS {
        let pipeline = Pipeline::new("bounded window");
        pipeline.late_policy(LatePolicy::correct(30));
        let peak = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&peak);
        let out = CollectSink::new();
        pipeline
            .source(
                "in",
                script(&inputs, &watermarks),
                WatermarkConfig::default(),
            )
            .key_by("key", |r: &Side| r.0)
            .into_stream()
            .stage("sums", "window", String::new(), move |input, stage| {
                let seen = Arc::clone(&seen);
                let spec = WindowSpec::tumbling(20);
                fold_records(
                    input,
                    stage.clone(),
                    Some(spec),
                    Count,
                    |key, start, value| WindowResult {
                        key,
                        start,
                        end: start + 20,
                        value,
                    },
                )
                .inspect_core(move |_| {
                    seen.fetch_max(stage.metrics().state(), Ordering::Relaxed);
                })
            })
            .sink("out", out.clone());
        Runtime::new(workers).run(&pipeline).unwrap();
        let peak = peak.load(Ordering::Relaxed);
        // Open at any watermark: windows ending within 30 ms after it, each with at most
        // 8 keys; the run has 1200 records in 150 windows.
        assert!(
            peak > 0 && peak <= 40,
            "{workers} workers: peak state {peak} slots"
        );
        assert_eq!(
            consolidate(out.rows().into_iter().map(|(_, c)| c))
                .unwrap()
                .len(),
            inputs
                .iter()
                .map(|r| (r.key, r.event_time / 20))
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        );
    }
}
