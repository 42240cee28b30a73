//! A tiny run of the benchmark runner, so it cannot rot: every query through the engine at 1 and
//! 2 workers and through its hand loop, which must agree on the number of result rows, and the
//! report must name every query and target. Timings are not checked.

use eddy_benches::runner::{engine, hand_loop, report, rows_agree};
use eddy_connectors::nexmark::NexmarkConfig;
use eddy_queries::nexmark::Query;

#[test]
fn every_query_runs_and_agrees_with_its_hand_loop() {
    let config = NexmarkConfig::with_events(30_000);
    let mut measurements = Vec::new();
    for query in Query::ALL {
        let hand = hand_loop(query, &config);
        assert!(
            hand.rows > 0,
            "{query}: the hand loop produced nothing, the comparison proves nothing"
        );
        for workers in [1, 2] {
            let m = engine(query, &config, workers, 1024).unwrap();
            assert_eq!(m.events, 30_000, "{query}, {workers} workers");
            assert!(
                rows_agree(&m, &hand),
                "{query}, {workers} workers: engine ({}) and hand loop ({}) disagree",
                m.rows,
                hand.rows
            );
            measurements.push(m);
        }
        measurements.push(hand);
    }
    let md = report(&measurements, "test", "test machine", "today");
    for query in Query::ALL {
        assert!(md.contains(&format!("| {query} | hand loop |")), "{md}");
    }
    assert!(md.contains("q5, 2 workers: ≥ 1.7× one worker"), "{md}");
}
