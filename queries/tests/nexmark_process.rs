//! q4, q6 and q9 (the winning-bid queries, on keyed process functions) against their batch
//! references over the same generated events, at 1 and 2 workers and in two processes. The
//! updating results (q4, q6) are compared after consolidating their change logs.

use eddy_connectors::nexmark::Event;
use eddy_engine::{Change, Stream};
use eddy_queries::nexmark::{q4, q6, q9, Q4Row, Q6Row, Q9Row, Query};
use eddy_queries::reference;

mod common;

use common::{assert_same_rows, events, run_everywhere, standing};

fn sorted<T: Ord>(mut rows: Vec<T>) -> Vec<T> {
    rows.sort();
    rows
}

#[test]
fn q9_winning_bids_match_the_reference() {
    let expected = reference::q9(&events());
    assert!(
        expected.len() > 100,
        "the reference has rows: {}",
        expected.len()
    );
    for (run, got) in run_everywhere::<Q9Row>(Query::Q9, q9) {
        assert_same_rows(&run, got, expected.clone());
    }
}

fn check_changes<T>(
    query: Query,
    stream: fn(Stream<Event>) -> Stream<Change<T>>,
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
        "the {query} reference has rows: {}",
        expected.len()
    );
    for (run, log) in run_everywhere(query, stream) {
        assert!(
            log.iter().filter(|c| c.diff < 0).count() > expected.len(),
            "{run}: the rows are updated as auctions close"
        );
        assert_eq!(standing(&run, log), expected, "{run}");
    }
}

#[test]
fn q4_average_price_per_category_matches_the_reference() {
    check_changes::<Q4Row>(Query::Q4, q4, reference::q4(&events()), 5);
}

#[test]
fn q6_average_selling_price_per_seller_matches_the_reference() {
    check_changes::<Q6Row>(Query::Q6, q6, reference::q6(&events()), 100);
}
