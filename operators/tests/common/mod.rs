//! Shared by the operator tests: seeded random input as a [`Script`], with each record's
//! timestamp (the watermark it arrives at) known, and the windows an event time belongs to.

#![allow(dead_code)]

use eddy_engine::testing::Script;
use eddy_engine::{RunSummary, StageSnapshot};
use eddy_operators::WindowSpec;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A test event: (key, a, b), with `a` and `b` in small ranges so that ties are common.
pub type Ev = (u64, u64, u64);

/// One input record as the pipeline sees it.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    /// Event time.
    pub t: u64,
    /// Timestamp: the watermark when it arrived (the largest watermark step before it).
    pub stamp: u64,
    /// The event.
    pub ev: Ev,
}

/// A random input: the script to run and the same records with their timestamps.
pub struct Case {
    /// Feeds the pipeline.
    pub script: Script<Ev>,
    /// The records, in script order, with their timestamps.
    pub arrivals: Vec<Arrival>,
}

/// `n` random records: event times moving forward with bounded disorder (a random bound per
/// seed), occasional idle stretches (a jump in event time), some records far behind the
/// watermark (late), and random watermark steps trailing the largest event time, now and then
/// jumping ahead of it.
pub fn random_case(seed: u64, n: usize) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    let keys = rng.gen_range(1..10);
    let disorder = rng.gen_range(0..200);
    let (mut now, mut watermark) = (1_000u64, 0u64);
    let mut script = Script::new();
    let mut batch = Vec::new();
    let mut arrivals = Vec::new();
    for _ in 0..n {
        now += rng.gen_range(0..15);
        if rng.gen_bool(0.02) {
            now += rng.gen_range(0..2_000);
        }
        let t = if watermark > 0 && rng.gen_bool(0.05) {
            watermark.saturating_sub(rng.gen_range(1..400))
        } else {
            now.saturating_sub(rng.gen_range(0..=disorder))
        };
        let ev = (
            rng.gen_range(0..keys),
            rng.gen_range(0..4),
            rng.gen_range(0..6),
        );
        batch.push((t, ev));
        arrivals.push(Arrival {
            t,
            stamp: watermark,
            ev,
        });
        if rng.gen_bool(0.1) {
            let next = if rng.gen_bool(0.03) {
                now + rng.gen_range(0..1_000)
            } else {
                now.saturating_sub(rng.gen_range(0..=2 * disorder + 1))
            };
            if next > watermark {
                script = script.records(std::mem::take(&mut batch)).watermark(next);
                watermark = next;
            }
        }
    }
    Case {
        script: script.records(batch),
        arrivals,
    }
}

/// The window starts `[s, s + size)` that contain event time `t`, smallest first.
pub fn window_starts(spec: WindowSpec, t: u64) -> Vec<u64> {
    let (size, slide) = (spec.size(), spec.slide());
    let mut starts = Vec::new();
    let mut s = t / slide * slide;
    while s + size > t {
        starts.push(s);
        if s < slide {
            break;
        }
        s -= slide;
    }
    starts.reverse();
    starts
}

/// A window spec chosen by the seed: tumbling or hopping, several pane shapes.
pub fn random_spec(seed: u64) -> WindowSpec {
    match seed % 4 {
        0 => WindowSpec::tumbling(100),
        1 => WindowSpec::hopping(100, 25),
        2 => WindowSpec::hopping(90, 60),
        _ => WindowSpec::tumbling(37),
    }
}

/// A stage's counters in a run's summary.
pub fn stage<'a>(summary: &'a RunSummary, name: &str) -> &'a StageSnapshot {
    summary
        .stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no stage named {name}"))
}

/// The seeds the random tests run.
pub const SEEDS: std::ops::Range<u64> = 0..32;
/// The worker counts the random tests run at.
pub const WORKERS: [usize; 3] = [1, 2, 4];
