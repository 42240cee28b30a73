//! Keyed process functions against brute-force models: the issue's example ("alert when a
//! user's third failed payment arrives within 10 minutes of the first") over seeded random
//! input with disorder and late records at 1, 2 and 4 workers; timers (per-key counts emitted by
//! a timer, deleted timers, the order of timers and records); and the state gauge staying
//! bounded while keys come and go.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use eddy_engine::testing::{CollectSink, Script};
use eddy_engine::timely::dataflow::operators::Inspect;
use eddy_engine::{Pipeline, Record, RunSummary, Runtime, Stream, WatermarkConfig};
use eddy_operators::prelude::*;
use eddy_operators::process::process_records;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

const WORKERS: [usize; 3] = [1, 2, 4];

// ---------------------------------------------------------------------------------------------
// A random script: records with bounded disorder, random watermark steps, some late records.
// ---------------------------------------------------------------------------------------------

/// One step of a random script, kept so the model sees exactly what the pipeline sees.
#[derive(Clone, Debug)]
enum Step<T> {
    Record(u64, T),
    Watermark(u64),
}

/// `n` records made by `value` at event times advancing by up to `gap` ms, each moved back by
/// up to `disorder` ms; watermark steps trailing the largest time by `disorder`; about 1 in 20
/// records is late (up to `2 * disorder` behind the watermark).
fn random_steps<T>(
    rng: &mut StdRng,
    n: usize,
    gap: u64,
    disorder: u64,
    mut value: impl FnMut(&mut StdRng) -> T,
) -> Vec<Step<T>> {
    let mut steps = Vec::new();
    let mut clock = 1_000_000;
    let mut watermark = 0;
    for _ in 0..n {
        clock += rng.gen_range(0..gap);
        let t = if watermark > 0 && rng.gen_bool(0.05) {
            watermark - rng.gen_range(1..=(2 * disorder).min(watermark))
        } else {
            clock - rng.gen_range(0..disorder)
        };
        steps.push(Step::Record(t, value(rng)));
        if rng.gen_bool(0.2) {
            watermark = watermark.max(clock - disorder);
            steps.push(Step::Watermark(watermark));
        }
    }
    steps
}

fn script<T: Clone>(steps: &[Step<T>]) -> Script<T> {
    steps.iter().fold(Script::new(), |s, step| match step {
        Step::Record(t, v) => s.records([(*t, v.clone())]),
        Step::Watermark(w) => s.watermark(*w),
    })
}

/// The records that are on time, and how many are late: a record is late when its event time
/// is below the watermark it arrives at (the last watermark step before it).
fn on_time<T: Clone>(steps: &[Step<T>]) -> (Vec<Record<T>>, u64) {
    let (mut records, mut late, mut watermark) = (Vec::new(), 0, 0);
    for step in steps {
        match step {
            Step::Watermark(w) => watermark = watermark.max(*w),
            Step::Record(t, _) if *t < watermark => late += 1,
            Step::Record(t, v) => records.push((*t, v.clone())),
        }
    }
    (records, late)
}

/// Runs `build` over the script at `workers` workers; returns the sorted output and summary.
fn run<T, U>(
    steps: &[Step<T>],
    workers: usize,
    build: impl FnOnce(Stream<T>) -> Stream<U>,
) -> (Vec<Record<U>>, RunSummary)
where
    T: Clone + Send + Sync + Serialize + serde::de::DeserializeOwned + 'static,
    U: Clone + Ord + Send + Serialize + serde::de::DeserializeOwned + 'static,
{
    let pipeline = Pipeline::new("process-test");
    let out = CollectSink::new();
    build(pipeline.source("input", script(steps), WatermarkConfig::default()))
        .sink("out", out.clone());
    let summary = Runtime::new(workers).run(&pipeline).unwrap();
    (out.sorted(), summary)
}

// ---------------------------------------------------------------------------------------------
// The example: the third failed payment within 10 minutes of the first.
// ---------------------------------------------------------------------------------------------

const TEN_MINUTES: u64 = 600_000;

/// A payment attempt.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Payment {
    user: u64,
    ok: bool,
    id: u64,
}

/// An alert: a user's third failed payment at `third`, within 10 minutes of the first at `first`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Alert {
    user: u64,
    first: u64,
    third: u64,
}

/// The failures of a user's current episode: since the first failure, at most 10 minutes ago.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Episode {
    first: Option<u64>,
    failures: u32,
}

/// A failure opens an episode (with a timer that ends it 10 minutes later); the third failure
/// of an episode raises an alert and ends it; a successful payment ends it.
#[derive(Clone)]
struct ThirdFailure;

impl KeyedProcess<u64, Payment> for ThirdFailure {
    type State = Episode;
    type Out = Alert;

    fn on_record(
        &mut self,
        user: &u64,
        t: u64,
        payment: Payment,
        episode: &mut Episode,
        ctx: &mut ProcessContext<Alert>,
    ) {
        match episode.first {
            _ if payment.ok => {
                if let Some(first) = episode.first {
                    ctx.delete_timer(first + TEN_MINUTES);
                }
                ctx.clear_state();
            }
            None => {
                *episode = Episode {
                    first: Some(t),
                    failures: 1,
                };
                ctx.set_timer(t + TEN_MINUTES);
            }
            Some(first) => {
                episode.failures += 1;
                if episode.failures == 3 {
                    ctx.emit(Alert {
                        user: *user,
                        first,
                        third: t,
                    });
                    ctx.delete_timer(first + TEN_MINUTES);
                    ctx.clear_state();
                }
            }
        }
    }

    fn on_timer(
        &mut self,
        _user: &u64,
        _t: u64,
        _episode: &mut Episode,
        ctx: &mut ProcessContext<Alert>,
    ) {
        ctx.clear_state();
    }
}

/// The model: per user, the on-time payments sorted by (event time, payment), scanned once.
fn third_failure_model(records: &[Record<Payment>]) -> Vec<Record<Alert>> {
    let mut by_user: BTreeMap<u64, Vec<Record<Payment>>> = BTreeMap::new();
    for r in records {
        by_user.entry(r.1.user).or_default().push(r.clone());
    }
    let mut alerts = Vec::new();
    for (user, mut payments) in by_user {
        payments.sort();
        let mut episode: Option<(u64, u32)> = None;
        for (t, p) in payments {
            if episode.is_some_and(|(first, _)| t > first + TEN_MINUTES) {
                episode = None;
            }
            if p.ok {
                episode = None;
                continue;
            }
            let (first, failures) = episode.map_or((t, 1), |(f, n)| (f, n + 1));
            if failures == 3 {
                alerts.push((
                    t,
                    Alert {
                        user,
                        first,
                        third: t,
                    },
                ));
                episode = None;
            } else {
                episode = Some((first, failures));
            }
        }
    }
    alerts.sort();
    alerts
}

fn alerts(payments: Stream<Payment>) -> Stream<Alert> {
    payments
        .key_by("by_user", |p: &Payment| p.user)
        .process("third_failure", ThirdFailure)
}

#[test]
fn third_failed_payment_within_ten_minutes_matches_the_model() {
    let (mut alerts_seen, mut late_seen) = (0, 0);
    for seed in 0..30 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut id = 0;
        let steps = random_steps(&mut rng, 150, 120_000, 300_000, |rng| {
            id += 1;
            Payment {
                user: rng.gen_range(0..4),
                ok: rng.gen_bool(0.15),
                id,
            }
        });
        let (records, late) = on_time(&steps);
        let expected = third_failure_model(&records);
        alerts_seen += expected.len();
        late_seen += late;
        for workers in WORKERS {
            let (got, summary) = run(&steps, workers, alerts);
            assert_eq!(got, expected, "seed {seed}, {workers} workers");
            assert_eq!(summary.late(), late, "seed {seed}, {workers} workers: late");
        }
    }
    assert!(alerts_seen > 30, "the inputs raise alerts: {alerts_seen}");
    assert!(late_seen > 30, "the inputs have late records: {late_seen}");
}

/// Regression-style pinned case: ties at one instant (two failures and a success at the same
/// ms) are ordered by value (failures first), and a failure exactly 10 minutes after the first
/// still counts while one a millisecond later starts a new episode.
#[test]
fn third_failure_edges() {
    let p = |user, ok, id| Payment { user, ok, id };
    let steps = vec![
        // exactly 10 minutes after the first still counts
        Step::Record(1_000, p(1, false, 1)),
        Step::Record(2_000, p(1, false, 2)),
        Step::Record(1_000 + TEN_MINUTES, p(1, false, 3)),
        // a millisecond later does not: the episode has lapsed
        Step::Record(5_000, p(2, false, 4)),
        Step::Record(6_000, p(2, false, 5)),
        Step::Record(5_001 + TEN_MINUTES, p(2, false, 6)),
        // a failure and a success at the same ms: the failure (smaller value) goes first
        Step::Record(1_000, p(4, false, 7)),
        Step::Record(2_000, p(4, false, 8)),
        Step::Record(3_000, p(4, true, 9)),
        Step::Record(3_000, p(4, false, 10)),
        Step::Watermark(1_000_000),
        Step::Record(10_000, p(3, false, 11)),
    ];
    let (records, late) = on_time(&steps);
    assert_eq!(late, 1);
    let expected = third_failure_model(&records);
    let alert = |user, first, third| (third, Alert { user, first, third });
    assert_eq!(
        expected,
        vec![alert(4, 1_000, 3_000), alert(1, 1_000, 1_000 + TEN_MINUTES)]
    );
    for workers in WORKERS {
        let (got, summary) = run(&steps, workers, alerts);
        assert_eq!(got, expected, "{workers} workers");
        assert_eq!(summary.late(), 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Timers.
// ---------------------------------------------------------------------------------------------

/// Counts a key's records per second of event time; a timer at the second's last ms emits the
/// count and clears the state.
#[derive(Clone)]
struct CountPerSecond;

impl KeyedProcess<u64, (u64, u64)> for CountPerSecond {
    type State = u64;
    type Out = (u64, u64, u64);

    fn on_record(
        &mut self,
        _key: &u64,
        t: u64,
        _record: (u64, u64),
        count: &mut u64,
        ctx: &mut ProcessContext<(u64, u64, u64)>,
    ) {
        *count += 1;
        ctx.set_timer(t / 1_000 * 1_000 + 999);
    }

    fn on_timer(
        &mut self,
        key: &u64,
        t: u64,
        count: &mut u64,
        ctx: &mut ProcessContext<(u64, u64, u64)>,
    ) {
        ctx.emit((*key, t / 1_000, *count));
        *count = 0;
    }
}

#[test]
fn a_timer_emits_each_keys_count_per_second() {
    for seed in 100..130 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut id = 0;
        let steps = random_steps(&mut rng, 200, 300, 1_500, |rng| {
            id += 1;
            (rng.gen_range(0..6), id)
        });
        let (records, late) = on_time(&steps);
        let mut counts: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        for (t, (key, _)) in &records {
            *counts.entry((t / 1_000, *key)).or_default() += 1;
        }
        let mut expected: Vec<_> = counts
            .into_iter()
            .map(|((second, key), n)| (second * 1_000 + 999, (key, second, n)))
            .collect();
        expected.sort();
        for workers in WORKERS {
            let (got, summary) = run(&steps, workers, |s| {
                s.key_by("by_key", |r: &(u64, u64)| r.0)
                    .process("count_per_second", CountPerSecond)
            });
            assert_eq!(got, expected, "seed {seed}, {workers} workers");
            assert_eq!(summary.late(), late, "seed {seed}, {workers} workers: late");
        }
    }
}

/// A command for [`Commands`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Command {
    /// Append the argument to the key's log.
    Append(u64),
    /// Set a timer.
    Set(u64),
    /// Delete a timer.
    Delete(u64),
    /// Clear the key's state.
    Clear,
}

/// Keeps a log per key; a timer emits `(key, timer time, log)`.
#[derive(Clone)]
struct Commands;

type Fired = (u64, u64, Vec<u64>);

impl KeyedProcess<u64, (u64, Command)> for Commands {
    type State = Vec<u64>;
    type Out = Fired;

    fn on_record(
        &mut self,
        _key: &u64,
        _t: u64,
        (_, command): (u64, Command),
        log: &mut Vec<u64>,
        ctx: &mut ProcessContext<Fired>,
    ) {
        match command {
            Command::Append(x) => log.push(x),
            Command::Set(t) => ctx.set_timer(t),
            Command::Delete(t) => ctx.delete_timer(t),
            Command::Clear => ctx.clear_state(),
        }
    }

    fn on_timer(&mut self, key: &u64, t: u64, log: &mut Vec<u64>, ctx: &mut ProcessContext<Fired>) {
        assert_eq!(ctx.watermark(), t, "a timer's call runs at its time");
        ctx.emit((*key, t, log.clone()));
    }
}

fn run_commands(records: Vec<Record<(u64, Command)>>, workers: usize) -> Vec<Record<Fired>> {
    let steps: Vec<_> = records
        .into_iter()
        .map(|(t, c)| Step::Record(t, c))
        .collect();
    run(&steps, workers, |s| {
        s.key_by("by_key", |r: &(u64, Command)| r.0)
            .process("commands", Commands)
    })
    .0
}

#[test]
fn a_deleted_timer_does_not_fire_and_a_timer_set_twice_fires_once() {
    use Command::*;
    let records = vec![
        // key 1: timer at 50 set twice, fires once with the log as it stands at 50
        (10, (1, Set(50))),
        (20, (1, Set(50))),
        (30, (1, Append(7))),
        // key 2: timer at 50 set, then deleted: never fires
        (10, (2, Set(50))),
        (40, (2, Delete(50))),
        (60, (2, Append(1))),
        // key 3: timer at 80 deleted and set again: fires
        (10, (3, Set(80))),
        (20, (3, Delete(80))),
        (30, (3, Set(80))),
        // key 4: deleting a timer never set does nothing
        (10, (4, Delete(90))),
    ];
    for workers in WORKERS {
        assert_eq!(
            run_commands(records.clone(), workers),
            vec![(50, (1, 50, vec![7])), (80, (3, 80, vec![]))],
            "{workers} workers"
        );
    }
}

#[test]
fn a_timer_at_t_sees_the_records_up_to_t_and_not_after() {
    use Command::*;
    let records = vec![
        (10, (1, Set(30))),
        (30, (1, Append(30))),
        (31, (1, Append(31))),
        (29, (1, Append(29))),
        // a timer set for a passed time fires at the time of the call that set it, after it
        (40, (2, Append(1))),
        (40, (2, Set(5))),
        (40, (2, Append(2))),
        // clearing the state empties the log the timer sees
        (10, (3, Append(1))),
        (20, (3, Clear)),
        (20, (3, Set(25))),
        (21, (3, Append(2))),
    ];
    for workers in WORKERS {
        assert_eq!(
            run_commands(records.clone(), workers),
            vec![
                (25, (3, 25, vec![2])),
                (30, (1, 30, vec![29, 30])),
                (40, (2, 40, vec![1, 2])),
            ],
            "{workers} workers"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// State stays bounded.
// ---------------------------------------------------------------------------------------------

/// Counts a key's records for 1.5 s from its first one; a timer then emits the count and, if
/// `forget`, clears the key's state.
#[derive(Clone)]
struct CountForAWhile {
    forget: bool,
}

impl KeyedProcess<u64, (u64, u64)> for CountForAWhile {
    type State = u64;
    type Out = (u64, u64);

    fn on_record(
        &mut self,
        _key: &u64,
        t: u64,
        _record: (u64, u64),
        count: &mut u64,
        ctx: &mut ProcessContext<(u64, u64)>,
    ) {
        if *count == 0 {
            ctx.set_timer(t + 1_500);
        }
        *count += 1;
    }

    fn on_timer(
        &mut self,
        key: &u64,
        _t: u64,
        count: &mut u64,
        ctx: &mut ProcessContext<(u64, u64)>,
    ) {
        ctx.emit((*key, *count));
        if self.forget {
            ctx.clear_state();
        }
    }
}

/// Runs [`CountForAWhile`] over `seconds` seconds of 100 records a second on 20 keys new each
/// second, a watermark every second, and returns the largest value of the stage's state gauge
/// seen while it ran (read at every batch and frontier change of its output) and the rows.
fn largest_state(seconds: u64, workers: usize, forget: bool) -> (u64, usize) {
    let mut script = Script::new();
    for s in 0..seconds {
        let records: Vec<_> = (0..100u64)
            .map(|i| (s * 1_000 + i * 10, (s * 20 + i % 20, i)))
            .collect();
        script = script.records(records).watermark((s + 1) * 1_000);
    }
    let largest = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&largest);
    let pipeline = Pipeline::new("bounded");
    let out = CollectSink::new();
    pipeline
        .source("input", script, WatermarkConfig::default())
        .key_by("by_key", |r: &(u64, u64)| r.0)
        .into_stream()
        .stage("count", "process", String::new(), move |input, stage| {
            let gauge = stage.clone();
            let seen = Arc::clone(&seen);
            process_records(input, stage, CountForAWhile { forget }).inspect_core(move |_| {
                seen.fetch_max(gauge.metrics().state(), Ordering::Relaxed);
            })
        })
        .sink("out", out.clone());
    Runtime::new(workers).run(&pipeline).unwrap();
    (largest.load(Ordering::Relaxed), out.rows().len())
}

#[test]
fn state_stays_bounded_when_keys_are_cleared() {
    for workers in [1, 2] {
        let (largest, rows) = largest_state(300, workers, true);
        assert_eq!(rows, 300 * 20, "one count per key");
        // A key holds state and a timer for 1.5 s: about 30 keys at a time, 60 entries.
        assert!(largest > 0, "the gauge counts state");
        assert!(
            largest <= 120,
            "{workers} workers: state grew to {largest} over 6 000 keys"
        );
    }
}

#[test]
fn the_gauge_sees_state_that_is_never_cleared() {
    let (largest, rows) = largest_state(300, 1, false);
    assert_eq!(rows, 300 * 20);
    assert!(
        largest > 5_000,
        "6 000 keys keep their state: gauge {largest}"
    );
}
