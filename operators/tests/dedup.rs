//! `dedup_window` and `dedup_ttl` against a brute-force model over seeded random input (bounded
//! disorder, late records, random watermark steps, idle stretches) at 1, 2 and 4 workers.

mod common;

use std::collections::BTreeMap;

use common::{random_case, stage, window_starts, Arrival, Ev, SEEDS, WORKERS};
use eddy_engine::testing::{CollectSink, Script};
use eddy_engine::{Pipeline, Record, Runtime, WatermarkConfig};
use eddy_operators::prelude::*;

// ---- the model ----

/// The first record (smallest event time, then smallest value) per key and window among those
/// a window takes (stamped before its end); and how many records no window took.
fn model_first(arrivals: &[Arrival], spec: WindowSpec) -> (Vec<WindowResult<u64, Ev>>, u64) {
    let mut first: BTreeMap<(u64, u64), (u64, Ev)> = BTreeMap::new();
    let mut late = 0;
    for a in arrivals {
        let mut taken = false;
        for start in window_starts(spec, a.t) {
            if a.stamp < start + spec.size() {
                taken = true;
                let best = first.entry((a.ev.0, start)).or_insert((a.t, a.ev));
                if (a.t, a.ev) < *best {
                    *best = (a.t, a.ev);
                }
            }
        }
        if !taken {
            late += 1;
        }
    }
    let results = first
        .into_iter()
        .map(|((key, start), (_, value))| WindowResult {
            key,
            start,
            end: start + spec.size(),
            value,
        })
        .collect();
    (results, late)
}

/// The records `dedup_ttl` passes: the records not behind their timestamp, per key in order of
/// (event time, value), each passing unless one of its key passed less than `ttl` before it.
/// Also how many records were late.
fn model_ttl(arrivals: &[Arrival], ttl: u64) -> (Vec<Record<(u64, Ev)>>, u64) {
    let late = arrivals.iter().filter(|a| a.t < a.stamp).count() as u64;
    let mut on_time: Vec<(u64, Ev)> = arrivals
        .iter()
        .filter(|a| a.t >= a.stamp)
        .map(|a| (a.t, a.ev))
        .collect();
    on_time.sort();
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    let mut passed = Vec::new();
    for (t, ev) in on_time {
        if last.get(&ev.0).is_none_or(|&l| t - l >= ttl) {
            last.insert(ev.0, t);
            passed.push((t, (ev.0, ev)));
        }
    }
    passed.sort();
    (passed, late)
}

fn spec_for(seed: u64) -> WindowSpec {
    match seed % 3 {
        0 => WindowSpec::tumbling(100),
        1 => WindowSpec::tumbling(23),
        _ => WindowSpec::hopping(60, 20),
    }
}

fn ttl_for(seed: u64) -> u64 {
    [0, 1, 40, 300][(seed % 4) as usize]
}

#[test]
fn dedup_equals_the_model_on_random_input() {
    let (mut late_window, mut late_ttl) = (0, 0);
    for seed in SEEDS {
        let case = random_case(seed, 400);
        let (spec, ttl) = (spec_for(seed), ttl_for(seed));
        let (expected_first, late_first) = model_first(&case.arrivals, spec);
        let (expected_passed, late_passed) = model_ttl(&case.arrivals, ttl);
        late_window += late_first;
        late_ttl += late_passed;
        for workers in WORKERS {
            let label = format!("seed {seed}, {workers} workers, {spec:?}, ttl {ttl}");
            let pipeline = Pipeline::new("dedup");
            pipeline.batch_size(16);
            let events = pipeline.source("events", case.script.clone(), WatermarkConfig::default());
            let first = CollectSink::new();
            let passed = CollectSink::new();
            events
                .clone()
                .key_by("first_key", |e: &Ev| e.0)
                .dedup_window("first", spec)
                .sink("first_out", first.clone());
            events
                .key_by("ttl_key", |e: &Ev| e.0)
                .dedup_ttl("ttl", ttl)
                .into_stream()
                .sink("ttl_out", passed.clone());
            let summary = Runtime::new(workers).run(&pipeline).unwrap();

            for (t, r) in first.rows() {
                assert_eq!(t, r.end - 1, "{label}: event time of {r:?}");
            }
            assert_eq!(first.values(), expected_first, "{label}: dedup_window");
            assert_eq!(passed.sorted(), expected_passed, "{label}: dedup_ttl");
            assert_eq!(stage(&summary, "first").late, late_first, "{label}");
            assert_eq!(stage(&summary, "ttl").late, late_passed, "{label}");
            assert_eq!(summary.late(), late_first + late_passed, "{label}");
            for s in &summary.stages {
                assert_eq!(s.state, 0, "{label}: state left at {}", s.name);
            }
        }
    }
    assert!(
        late_window > 50 && late_ttl > 50,
        "the input has late records"
    );
}

/// The rule at its edges: a repeat exactly `ttl` after the last passed record passes; one just
/// inside is suppressed and does not extend the time-to-live; equal event times go by value.
#[test]
fn dedup_ttl_edges() {
    for workers in [1, 2, 4] {
        let pipeline = Pipeline::new("ttl-edges");
        let passed = CollectSink::new();
        let script = Script::new().records([
            (100u64, (1u64, 0u64, 9u64)),
            (100, (1, 0, 3)),
            (149, (1, 0, 0)),
            (150, (1, 0, 1)),
            (160, (1, 0, 2)),
            (199, (1, 0, 3)),
            (205, (1, 0, 4)),
            (120, (2, 0, 0)),
        ]);
        pipeline
            .source("events", script, WatermarkConfig::default())
            .key_by("by_key", |e: &Ev| e.0)
            .dedup_ttl("ttl", 50)
            .into_stream()
            .sink("out", passed.clone());
        Runtime::new(workers).run(&pipeline).unwrap();
        assert_eq!(
            passed.sorted(),
            vec![
                (100, (1, (1, 0, 3))),
                (120, (2, (2, 0, 0))),
                (150, (1, (1, 0, 1))),
                (205, (1, (1, 0, 4))),
            ],
            "{workers} workers"
        );
    }
}

/// A record behind the watermark it arrives at is late for `dedup_ttl` even when it would have
/// passed; for `dedup_window` only when its window has closed.
#[test]
fn dedup_late_records() {
    for workers in [1, 2] {
        let pipeline = Pipeline::new("dedup-late");
        let (first, passed) = (CollectSink::new(), CollectSink::new());
        let script = Script::new()
            .records([(10u64, (1u64, 0u64, 5u64))])
            .watermark(50)
            .records([(40, (1, 0, 1)), (5, (1, 0, 0)), (60, (1, 0, 2))]);
        let events = pipeline.source("events", script, WatermarkConfig::default());
        events
            .clone()
            .key_by("first_key", |e: &Ev| e.0)
            .dedup_window("first", WindowSpec::tumbling(100))
            .sink("first_out", first.clone());
        events
            .key_by("ttl_key", |e: &Ev| e.0)
            .dedup_ttl("ttl", 1_000)
            .into_stream()
            .sink("ttl_out", passed.clone());
        let summary = Runtime::new(workers).run(&pipeline).unwrap();
        assert_eq!(
            first.values(),
            vec![WindowResult {
                key: 1,
                start: 0,
                end: 100,
                value: (1, 0, 0)
            }]
        );
        assert_eq!(stage(&summary, "first").late, 0);
        assert_eq!(passed.sorted(), vec![(10, (1, (1, 0, 5)))]);
        assert_eq!(stage(&summary, "ttl").late, 2);
    }
}
