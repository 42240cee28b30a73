//! `top_n_updating` against a brute-force model over seeded random input (bounded disorder,
//! late records, random watermark steps, idle stretches) at 1, 2 and 4 workers: the exact
//! change log, stamped, and the late count; plus its edges (ties, duplicates, a value that
//! enters and leaves within one step).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{random_case, stage, Arrival, Ev, SEEDS, WORKERS};
use eddy_engine::change::consolidate;
use eddy_engine::testing::{CollectSink, Script};
use eddy_engine::{Change, Pipeline, Record, Runtime, WatermarkConfig};
use eddy_operators::prelude::*;

/// One change of the operator's output.
type RankChange = Change<Ranked<u64, Ev>>;

/// The score the tests rank by: the event's middle field (0..4, so ties are common).
fn score(e: &Ev) -> u64 {
    e.1
}

/// A key's `n` best among `values`, brute force: everything sorted by score descending, then
/// value ascending.
fn best(values: &[Ev], n: usize) -> Vec<Ev> {
    let mut all = values.to_vec();
    all.sort_by(|a, b| score(b).cmp(&score(a)).then(a.cmp(b)));
    all.truncate(n);
    all
}

/// The change log the operator must emit: for each event time `t` of an on-time record, per
/// key, the ranking over the records with event time `< t` against the ranking over those
/// `≤ t`, rank by rank (retracting what changed, inserting the new); and the late count.
fn model(arrivals: &[Arrival], n: usize) -> (Vec<Record<RankChange>>, u64) {
    let late = arrivals.iter().filter(|a| a.t < a.stamp).count() as u64;
    let on_time: Vec<&Arrival> = arrivals.iter().filter(|a| a.t >= a.stamp).collect();
    let times: BTreeSet<u64> = on_time.iter().map(|a| a.t).collect();
    let keys: BTreeSet<u64> = on_time.iter().map(|a| a.ev.0).collect();
    let mut log = Vec::new();
    for &t in &times {
        for &key in &keys {
            let upto = |inclusive: bool| -> Vec<Ev> {
                let values: Vec<Ev> = on_time
                    .iter()
                    .filter(|a| a.ev.0 == key && (a.t < t || (inclusive && a.t == t)))
                    .map(|a| a.ev)
                    .collect();
                best(&values, n)
            };
            let (before, after) = (upto(false), upto(true));
            for rank in 0..before.len().max(after.len()) {
                if before.get(rank) == after.get(rank) {
                    continue;
                }
                let row = |value: Ev| Ranked {
                    key,
                    rank: rank as u64 + 1,
                    value,
                };
                if let Some(&old) = before.get(rank) {
                    log.push((t, Change::retract(row(old))));
                }
                if let Some(&new) = after.get(rank) {
                    log.push((t, Change::insert(row(new))));
                }
            }
        }
    }
    log.sort();
    (log, late)
}

#[test]
fn top_n_updating_equals_the_model_on_random_input() {
    let (mut late, mut retractions) = (0, 0);
    for seed in SEEDS {
        let case = random_case(seed, 300);
        let n = [1, 2, 3, 5][(seed % 4) as usize];
        let (expected, expected_late) = model(&case.arrivals, n);
        late += expected_late;
        retractions += expected.iter().filter(|(_, c)| c.diff < 0).count();
        for workers in WORKERS {
            let label = format!("seed {seed}, n {n}, {workers} workers");
            let pipeline = Pipeline::new("top-n");
            pipeline.batch_size(16);
            let out = CollectSink::new();
            pipeline
                .source("events", case.script.clone(), WatermarkConfig::default())
                .key_by("by_key", |e: &Ev| e.0)
                .top_n_updating("top", n, score)
                .sink("out", out.clone());
            let summary = Runtime::new(workers).run(&pipeline).unwrap();
            assert_eq!(out.sorted(), expected, "{label}: change log");
            assert_eq!(stage(&summary, "top").late, expected_late, "{label}: late");
        }
    }
    assert!(late > 50, "the input has late records: {late}");
    assert!(retractions > 100, "rankings change: {retractions}");
}

/// One key, `n = 2`, score the middle field. Within one step the changes are consolidated: a
/// value that enters and is pushed out again emits nothing; equal scores go to the smaller
/// value; a duplicate takes two ranks; a value below the top `n` changes nothing.
#[test]
fn top_n_updating_edges() {
    for workers in [1, 2, 4] {
        let pipeline = Pipeline::new("top-n-edges");
        let out = CollectSink::new();
        let script = Script::new().records([
            (10u64, (1u64, 1u64, 5u64)),
            (10, (1, 2, 0)),
            // step 20: (1,3,0) enters at rank 1, (1,4,0) then takes rank 1 and pushes (1,3,0)
            // to rank 2; (1,2,0) leaves. Net: two ranks change.
            (20, (1, 3, 0)),
            (20, (1, 4, 0)),
            // step 30: (1,0,0) is below the top 2: nothing
            (30, (1, 0, 0)),
            // step 40: a duplicate of the best takes rank 2
            (40, (1, 4, 0)),
            // step 50: ties with the best at score 4 but larger than it: below both copies
            (50, (1, 4, 1)),
        ]);
        pipeline
            .source("events", script, WatermarkConfig::default())
            .key_by("by_key", |e: &Ev| e.0)
            .top_n_updating("top", 2, score)
            .sink("out", out.clone());
        Runtime::new(workers).run(&pipeline).unwrap();
        let r = |rank, value| Ranked {
            key: 1,
            rank,
            value,
        };
        let mut expected = vec![
            (10, Change::insert(r(1, (1, 2, 0)))),
            (10, Change::insert(r(2, (1, 1, 5)))),
            (20, Change::retract(r(1, (1, 2, 0)))),
            (20, Change::retract(r(2, (1, 1, 5)))),
            (20, Change::insert(r(1, (1, 4, 0)))),
            (20, Change::insert(r(2, (1, 3, 0)))),
            (40, Change::retract(r(2, (1, 3, 0)))),
            (40, Change::insert(r(2, (1, 4, 0)))),
        ];
        expected.sort();
        assert_eq!(out.sorted(), expected, "{workers} workers");
        let standing = consolidate(out.values()).unwrap();
        assert_eq!(standing, vec![r(1, (1, 4, 0)), r(2, (1, 4, 0))]);
    }
}

/// `n = 1` keeps the best record per key, keys apart; a late record (which would have been
/// the best) is counted and changes nothing.
#[test]
fn top_1_keeps_the_best_per_key_and_drops_late_records() {
    let pipeline = Pipeline::new("latest");
    let out = CollectSink::new();
    let script = Script::new()
        .records([(5u64, (1u64, 0u64, 0u64)), (7, (2, 0, 0))])
        .watermark(6)
        .records([(9, (1, 0, 1)), (3, (1, 0, 9))]);
    pipeline
        .source("events", script, WatermarkConfig::default())
        .map("stamp", |e: Ev| (e.0, e.2))
        .key_by("by_key", |e: &(u64, u64)| e.0)
        .top_n_updating("latest", 1, |e: &(u64, u64)| e.1)
        .sink("out", out.clone());
    let summary = Runtime::new(2).run(&pipeline).unwrap();
    let mut latest: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for c in consolidate(out.values()).unwrap() {
        assert_eq!(c.rank, 1);
        latest.insert(c.key, c.value);
    }
    assert_eq!(latest, BTreeMap::from([(1, (1, 1)), (2, (2, 0))]));
    assert_eq!(
        stage(&summary, "latest").late,
        1,
        "the record at 3 < 6 is late"
    );
}
