//! `split`: each record goes to the side its function picks, with its event time, or nowhere;
//! the two sides together are exactly what the function kept, at 1 and 2 workers.

mod common;

use common::{random_case, stage, Ev};
use eddy_engine::testing::CollectSink;
use eddy_engine::{Pipeline, Runtime, WatermarkConfig};
use eddy_operators::prelude::*;

/// Records with an even `a` to the first side (their key), odd ones to the second (`a` and `b`),
/// and records with `b == 0` nowhere.
fn side(ev: Ev) -> Option<Split<u64, (u64, u64)>> {
    match ev {
        (_, _, 0) => None,
        (key, a, _) if a % 2 == 0 => Some(Split::First(key)),
        (_, a, b) => Some(Split::Second((a, b))),
    }
}

#[test]
fn split_sends_each_record_to_the_side_it_names_with_its_event_time() {
    for seed in 0..5 {
        let case = random_case(seed, 2_000);
        let mut first_expected = Vec::new();
        let mut second_expected = Vec::new();
        for arrival in &case.arrivals {
            match side(arrival.ev) {
                Some(Split::First(a)) => first_expected.push((arrival.t, a)),
                Some(Split::Second(b)) => second_expected.push((arrival.t, b)),
                None => {}
            }
        }
        first_expected.sort_unstable();
        second_expected.sort_unstable();
        assert!(!first_expected.is_empty() && !second_expected.is_empty());
        for workers in [1, 2] {
            let label = format!("seed {seed}, {workers} workers");
            let pipeline = Pipeline::new("split");
            pipeline.batch_size(16);
            let (first, second) = pipeline
                .source("events", case.script.clone(), WatermarkConfig::default())
                .split("route", side);
            let (first_out, second_out) = (CollectSink::new(), CollectSink::new());
            first.sink("first_out", first_out.clone());
            second.sink("second_out", second_out.clone());
            let summary = Runtime::new(workers).run(&pipeline).unwrap();

            let mut got_first = first_out.rows();
            got_first.sort_unstable();
            let mut got_second = second_out.rows();
            got_second.sort_unstable();
            assert_eq!(got_first, first_expected, "{label}: first side");
            assert_eq!(got_second, second_expected, "{label}: second side");
            let routed = stage(&summary, "route");
            assert_eq!(routed.records_in, case.arrivals.len() as u64, "{label}");
            assert_eq!(
                routed.records_out,
                (first_expected.len() + second_expected.len()) as u64,
                "{label}: what neither side wants is dropped by the routing stage"
            );
        }
    }
}
