//! q4, q6 and q9 (the winning-bid queries, on keyed process functions) against their batch
//! references over the same generated events, at 1 and 2 workers. The updating results (q4,
//! q6) are compared after consolidating their change logs.

use eddy_connectors::nexmark::Event;
use eddy_engine::change::consolidate;
use eddy_engine::{Change, Stream};
use eddy_queries::nexmark::{q4, q6, q9, Q4Row, Q6Row, Q9Row};
use eddy_queries::reference;

mod common;

use common::{events, run_collecting};

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
        let got: Vec<Q9Row> = sorted(run_collecting("nexmark-process", q9, workers));
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
        let log = run_collecting("nexmark-process", query, workers);
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
