//! q4, q6 and q9 (the winning-bid queries, on keyed process functions) against their batch
//! references over the same generated events, at 1 and 2 workers. The updating results (q4,
//! q6) are compared after consolidating their change logs.

use eddy_connectors::nexmark::{generate_all, Event, NexmarkConfig, NexmarkSource};
use eddy_engine::change::consolidate;
use eddy_engine::testing::CollectSink;
use eddy_engine::{Change, Pipeline, Runtime, Stream, WatermarkConfig};
use eddy_queries::nexmark::{q4, q6, q9, Q4Row, Q6Row, Q9Row};
use eddy_queries::reference;

const EVENTS: u64 = 60_000;

fn config() -> NexmarkConfig {
    NexmarkConfig {
        events: EVENTS,
        events_per_second: 1_000,
        ..Default::default()
    }
}

fn events() -> Vec<Event> {
    generate_all(&config())
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

/// Runs `query` over the generated events at `workers` workers; returns what it emitted.
fn run<T>(query: fn(Stream<Event>) -> Stream<T>, workers: usize) -> Vec<T>
where
    T: Clone + Send + serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    let pipeline = Pipeline::new("nexmark-process");
    let out = CollectSink::new();
    let events = pipeline.source(
        "nexmark",
        NexmarkSource::new(config()),
        WatermarkConfig::default(),
    );
    query(events).sink("sink", out.clone());
    let summary = Runtime::new(workers).run(&pipeline).unwrap();
    assert_eq!(summary.events(), EVENTS);
    assert_eq!(
        summary.late(),
        0,
        "in-order generator input has no late records"
    );
    out.rows().into_iter().map(|(_, row)| row).collect()
}

fn sorted<T: Ord>(mut rows: Vec<T>) -> Vec<T> {
    rows.sort();
    rows
}

#[test]
fn q9_winning_bids_match_the_reference() {
    let expected = sorted(reference::q9(&events()));
    assert!(
        expected.len() > 100,
        "the reference has rows: {}",
        expected.len()
    );
    for workers in [1, 2] {
        let got: Vec<Q9Row> = sorted(run(q9, workers));
        assert_eq!(got.len(), expected.len(), "q9, {workers} workers: rows");
        assert!(got == expected, "q9, {workers} workers: rows differ");
    }
}

fn check_changes<T>(
    name: &str,
    query: fn(Stream<Event>) -> Stream<Change<T>>,
    expected: Vec<T>,
    least_rows: usize,
) where
    T: Ord
        + Clone
        + std::fmt::Debug
        + Send
        + serde::Serialize
        + serde::de::DeserializeOwned
        + 'static,
{
    let expected = sorted(expected);
    assert!(
        expected.len() >= least_rows,
        "the {name} reference has rows: {}",
        expected.len()
    );
    for workers in [1, 2] {
        let log = run(query, workers);
        assert!(
            log.iter().filter(|c| c.diff < 0).count() > expected.len(),
            "{name}: the rows are updated as auctions close"
        );
        let standing = consolidate(log).unwrap();
        assert_eq!(standing, expected, "{name}, {workers} workers");
    }
}

#[test]
fn q4_average_price_per_category_matches_the_reference() {
    check_changes::<Q4Row>("q4", q4, reference::q4(&events()), 5);
}

#[test]
fn q6_average_selling_price_per_seller_matches_the_reference() {
    check_changes::<Q6Row>("q6", q6, reference::q6(&events()), 100);
}
