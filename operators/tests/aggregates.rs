//! The aggregate family against a brute-force model: `Count`, `MaxBy`/`MinBy`, `ArgMax`/`ArgMin`,
//! `CountDistinct`, `TopN`, a user-written aggregate, keyed and global, and `top_n_per_window`
//! after a keyed window — over seeded random input (bounded disorder, late records, random
//! watermark steps, idle stretches) at 1, 2 and 4 workers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use common::{random_case, random_spec, stage, window_starts, Arrival, Ev, SEEDS, WORKERS};
use eddy_engine::testing::{CollectSink, Script};
use eddy_engine::{Pipeline, RunSummary, Runtime, Stream, WatermarkConfig};
use eddy_operators::prelude::*;
use eddy_operators::WindowSpec;

/// A user-written aggregate: the spread (largest minus smallest) of `b`.
#[derive(Clone)]
struct Spread;

impl Aggregate<Ev> for Spread {
    type Acc = Option<(u64, u64)>;
    type Out = u64;
    fn create(&self) -> Self::Acc {
        None
    }
    fn add(&self, acc: &mut Self::Acc, value: Ev) {
        let b = value.2;
        *acc = Some(acc.map_or((b, b), |(lo, hi)| (lo.min(b), hi.max(b))));
    }
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc) {
        if let Some((lo, hi)) = other {
            *acc = Some(acc.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        }
    }
    fn finish(&self, acc: Self::Acc) -> u64 {
        acc.map_or(0, |(lo, hi)| hi - lo)
    }
}

/// How many best values `TopN` keeps, and how many keys `top_n_per_window` keeps.
const TOP: usize = 3;
const TOP_KEYS: usize = 2;

// ---- the model: plain loops over the whole input ----

/// Per (key, window start), the values a window takes: those of records stamped before its end.
/// Also how many records no window took (late).
fn model_groups(arrivals: &[Arrival], spec: WindowSpec) -> (BTreeMap<(u64, u64), Vec<Ev>>, u64) {
    let mut groups: BTreeMap<(u64, u64), Vec<Ev>> = BTreeMap::new();
    let mut late = 0;
    for a in arrivals {
        let mut taken = false;
        for start in window_starts(spec, a.t) {
            if a.stamp < start + spec.size() {
                groups.entry((a.ev.0, start)).or_default().push(a.ev);
                taken = true;
            }
        }
        if !taken {
            late += 1;
        }
    }
    (groups, late)
}

/// The same groups without keys (global windows).
fn model_global(groups: &BTreeMap<(u64, u64), Vec<Ev>>) -> BTreeMap<u64, Vec<Ev>> {
    let mut global: BTreeMap<u64, Vec<Ev>> = BTreeMap::new();
    for ((_, start), values) in groups {
        global.entry(*start).or_default().extend(values);
    }
    global
}

fn results<K: Clone, O>(
    groups: &BTreeMap<(K, u64), Vec<Ev>>,
    spec: WindowSpec,
    f: impl Fn(&[Ev]) -> O,
) -> Vec<WindowResult<K, O>> {
    groups
        .iter()
        .map(|((key, start), values)| WindowResult {
            key: key.clone(),
            start: *start,
            end: start + spec.size(),
            value: f(values),
        })
        .collect()
}

fn ties_with_a(values: &[Ev], a: u64) -> Vec<Ev> {
    let mut ties: Vec<Ev> = values.iter().copied().filter(|v| v.1 == a).collect();
    ties.sort();
    ties
}

fn max_by_a(values: &[Ev]) -> Vec<Ev> {
    ties_with_a(values, values.iter().map(|v| v.1).max().unwrap())
}

fn min_by_a(values: &[Ev]) -> Vec<Ev> {
    ties_with_a(values, values.iter().map(|v| v.1).min().unwrap())
}

fn top_by_a(values: &[Ev]) -> Vec<Ev> {
    let mut sorted = values.to_vec();
    sorted.sort_by(|x, y| y.1.cmp(&x.1).then(x.cmp(y)));
    sorted.truncate(TOP);
    sorted
}

fn spread(values: &[Ev]) -> u64 {
    values.iter().map(|v| v.2).max().unwrap() - values.iter().map(|v| v.2).min().unwrap()
}

/// Per window, the `TOP_KEYS` keys with the most records (ties to the smaller key).
fn model_top_keys(
    groups: &BTreeMap<(u64, u64), Vec<Ev>>,
    spec: WindowSpec,
) -> Vec<WindowResult<u64, u64>> {
    let mut by_window: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for ((key, start), values) in groups {
        by_window
            .entry(*start)
            .or_default()
            .push((values.len() as u64, *key));
    }
    let mut out = Vec::new();
    for (start, mut counts) in by_window {
        counts.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
        for (count, key) in counts.into_iter().take(TOP_KEYS) {
            out.push(WindowResult {
                key,
                start,
                end: start + spec.size(),
                value: count,
            });
        }
    }
    out
}

// ---- the pipeline ----

/// A keyed window over a fork of `events`, collected.
fn keyed<A: Aggregate<Ev>>(
    events: &Stream<Ev>,
    name: &str,
    spec: WindowSpec,
    agg: A,
) -> CollectSink<WindowResult<u64, A::Out>>
where
    A::Out: Clone,
{
    let out = CollectSink::new();
    events
        .clone()
        .key_by(&format!("{name}_key"), |e: &Ev| e.0)
        .window(name, spec, agg)
        .sink(&format!("{name}_out"), out.clone());
    out
}

/// A global window over a fork of `events`, collected.
fn global<A: Aggregate<Ev>>(
    events: &Stream<Ev>,
    name: &str,
    spec: WindowSpec,
    agg: A,
) -> CollectSink<WindowResult<(), A::Out>>
where
    A::Out: Clone,
{
    let out = CollectSink::new();
    events
        .clone()
        .window_all(name, spec, agg)
        .sink(&format!("{name}_out"), out.clone());
    out
}

/// Checks each result's event time is its window's end − 1 and the results equal `expected`.
fn assert_results<K: Ord + Clone + Debug, O: Ord + Clone + Debug>(
    label: &str,
    out: &CollectSink<WindowResult<K, O>>,
    mut expected: Vec<WindowResult<K, O>>,
) {
    for (t, r) in out.rows() {
        assert_eq!(t, r.end - 1, "{label}: event time of {r:?}");
    }
    expected.sort();
    assert_eq!(out.values(), expected, "{label}");
}

/// The stages that decide lateness: every window stage.
const WINDOW_STAGES: [&str; 10] = [
    "count", "max_by", "min_by", "arg_max", "arg_min", "distinct", "top", "spread", "g_top",
    "g_max_by",
];

/// Runs one seed at one worker count; returns how many records were late.
fn check_case(seed: u64, workers: usize) -> u64 {
    let case = random_case(seed, 400);
    let spec = random_spec(seed);
    let pipeline = Pipeline::new("aggregates");
    pipeline.batch_size(16);
    let events = pipeline.source("events", case.script.clone(), WatermarkConfig::default());
    let count = CollectSink::new();
    let top_keys = CollectSink::new();
    let counts = events
        .clone()
        .key_by("count_key", |e: &Ev| e.0)
        .window("count", spec, Count);
    counts.clone().sink("count_out", count.clone());
    counts
        .top_n_per_window("top_keys", TOP_KEYS, |r: &WindowResult<u64, u64>| r.value)
        .sink("top_keys_out", top_keys.clone());
    let max_by = keyed(&events, "max_by", spec, MaxBy::new(|e: &Ev| e.1).sorted());
    let min_by = keyed(&events, "min_by", spec, MinBy::new(|e: &Ev| e.1).sorted());
    let arg_max = keyed(&events, "arg_max", spec, ArgMax::new(|e: &Ev| e.1));
    let arg_min = keyed(&events, "arg_min", spec, ArgMin::new(|e: &Ev| e.1));
    let distinct = keyed(&events, "distinct", spec, CountDistinct::new(|e: &Ev| e.2));
    let top = keyed(&events, "top", spec, TopN::new(TOP, |e: &Ev| e.1));
    let spread_out = keyed(&events, "spread", spec, Spread);
    let g_top = global(&events, "g_top", spec, TopN::new(TOP, |e: &Ev| e.1));
    let g_max_by = global(&events, "g_max_by", spec, MaxBy::new(|e: &Ev| e.1).sorted());
    let summary = Runtime::new(workers).run(&pipeline).unwrap();

    let label = |what: &str| format!("{what}, seed {seed}, {workers} workers, {spec:?}");
    let (groups, late) = model_groups(&case.arrivals, spec);
    let globals: BTreeMap<((), u64), Vec<Ev>> = model_global(&groups)
        .into_iter()
        .map(|(start, values)| (((), start), values))
        .collect();
    assert_results(
        &label("count"),
        &count,
        results(&groups, spec, |v| v.len() as u64),
    );
    assert_results(&label("max_by"), &max_by, results(&groups, spec, max_by_a));
    assert_results(&label("min_by"), &min_by, results(&groups, spec, min_by_a));
    assert_results(
        &label("arg_max"),
        &arg_max,
        results(&groups, spec, |v| max_by_a(v).first().copied()),
    );
    assert_results(
        &label("arg_min"),
        &arg_min,
        results(&groups, spec, |v| min_by_a(v).first().copied()),
    );
    assert_results(
        &label("distinct"),
        &distinct,
        results(&groups, spec, |v| {
            v.iter().map(|e| e.2).collect::<BTreeSet<_>>().len() as u64
        }),
    );
    assert_results(&label("top"), &top, results(&groups, spec, top_by_a));
    assert_results(
        &label("spread"),
        &spread_out,
        results(&groups, spec, spread),
    );
    assert_results(&label("g_top"), &g_top, results(&globals, spec, top_by_a));
    assert_results(
        &label("g_max_by"),
        &g_max_by,
        results(&globals, spec, max_by_a),
    );
    assert_results(&label("top_keys"), &top_keys, model_top_keys(&groups, spec));
    check_late_and_state(&summary, late, &label("summary"));
    late
}

fn check_late_and_state(summary: &RunSummary, late: u64, label: &str) {
    for name in WINDOW_STAGES {
        assert_eq!(stage(summary, name).late, late, "{label}: late at {name}");
    }
    assert_eq!(stage(summary, "top_keys").late, 0, "{label}");
    assert_eq!(summary.late(), late * WINDOW_STAGES.len() as u64, "{label}");
    for s in &summary.stages {
        assert_eq!(s.state, 0, "{label}: state left at {}", s.name);
    }
}

#[test]
fn aggregates_equal_the_model_on_random_input() {
    let mut late = 0;
    for seed in SEEDS {
        for workers in WORKERS {
            late += check_case(seed, workers);
        }
    }
    assert!(late > 100, "the input has late records ({late})");
}

// ---- named regression tests ----

/// A hopping window's phase 2 only closed windows by firing them: after a stretch in which a
/// worker held no panes while the watermark passed windows, a record belonging to both a closed
/// window and an open one reopened the closed one — the capability for it lay below the
/// record's timestamp, and the worker panicked. Now such a record goes into the open window
/// only.
#[test]
fn hopping_window_after_an_idle_stretch_takes_only_open_windows() {
    for workers in [1, 2, 4] {
        let pipeline = Pipeline::new("idle");
        let out = CollectSink::new();
        let script = Script::new()
            .records([(2u64, (7u64, 1u64, 0u64))])
            .watermark(16)
            .records([(12, (1, 1, 0)), (14, (7, 1, 0))])
            .watermark(1_000)
            .records([(1_003, (1, 1, 0))]);
        pipeline
            .source("events", script, WatermarkConfig::default())
            .key_by("by_key", |e: &Ev| e.0)
            .window("counts", WindowSpec::hopping(10, 5), Count)
            .sink("out", out.clone());
        let summary = Runtime::new(workers).run(&pipeline).unwrap();
        let w = |key, start, value| WindowResult {
            key,
            start,
            end: start + 10,
            value,
        };
        assert_eq!(
            out.values(),
            vec![
                w(1, 995, 1),
                w(1, 1_000, 1),
                w(1, 10, 1),
                w(7, 0, 1),
                w(7, 10, 1),
            ]
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>(),
            "{workers} workers"
        );
        assert_eq!(summary.late(), 0);
        assert_eq!(stage(&summary, "counts").state, 0);
    }
}

/// Ties at the boundary of `TopN` and `top_n_per_window` resolve the same way at any worker
/// count: the smaller value (or key) wins.
#[test]
fn top_n_ties_at_the_boundary_are_deterministic() {
    for workers in [1, 2, 4] {
        let pipeline = Pipeline::new("ties");
        let records: Vec<(u64, Ev)> = (0..20).rev().map(|k| (5, (k, 1, k % 3))).collect();
        let events = pipeline.source(
            "events",
            Script::new().records(records),
            WatermarkConfig::default(),
        );
        let top = global(
            &events,
            "top",
            WindowSpec::tumbling(10),
            TopN::new(2, |e: &Ev| e.1),
        );
        let keys = CollectSink::new();
        events
            .key_by("by_key", |e: &Ev| e.0)
            .window("counts", WindowSpec::tumbling(10), Count)
            .top_n_per_window("top_keys", 3, |r: &WindowResult<u64, u64>| r.value)
            .sink("keys_out", keys.clone());
        Runtime::new(workers).run(&pipeline).unwrap();
        let value = |r: &WindowResult<(), Vec<Ev>>| r.value.clone();
        assert_eq!(
            top.values().iter().map(value).collect::<Vec<_>>(),
            vec![vec![(0, 1, 0), (1, 1, 1)]]
        );
        let kept: Vec<u64> = keys.values().iter().map(|r| r.key).collect();
        assert_eq!(kept, vec![0, 1, 2], "{workers} workers");
    }
}
