//! q18 (last bid per bidder and auction), q19 (each auction's top-10 bids) and q20 (bids on
//! category-10 auctions with their auction) against their batch references over the same
//! generated events, at 1 and 2 workers and in two processes. q18 and q19 are change logs,
//! compared after consolidation; q20's rows are final.

use eddy_connectors::nexmark::Event;
use eddy_engine::{Change, Stream};
use eddy_queries::nexmark::{q18, q19, q20, Q18Row, Q19Row, Q20Row, Query, Q19_TOP};
use eddy_queries::reference;

mod common;

use common::{assert_same_rows, events, run_everywhere, standing};

fn sorted<T: Ord>(mut rows: Vec<T>) -> Vec<T> {
    rows.sort();
    rows
}

/// Runs an updating query everywhere: its consolidated change log must equal the reference,
/// and it must have retracted rows (the result was updated, not only appended).
fn check_changes<T>(query: Query, stream: fn(Stream<Event>) -> Stream<Change<T>>, expected: Vec<T>)
where
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
        expected.len() > 1_000,
        "the {query} reference has rows: {}",
        expected.len()
    );
    for (run, log) in run_everywhere(query, stream) {
        let retractions = log.iter().filter(|c| c.diff < 0).count();
        assert!(
            retractions > 100,
            "{run}: rows are replaced ({retractions} retractions)"
        );
        assert!(
            log.iter().all(|c| c.diff == 1 || c.diff == -1),
            "{run}: one change per row and step"
        );
        let standing = standing(&run, log);
        assert_eq!(standing.len(), expected.len(), "{run}: rows");
        assert!(standing == expected, "{run}: rows differ");
    }
}

#[test]
fn q18_last_bid_matches_the_reference() {
    let expected: Vec<Q18Row> = reference::q18(&events());
    check_changes(Query::Q18, q18, expected);
}

#[test]
fn q19_top_bids_match_the_reference() {
    let expected: Vec<Q19Row> = reference::q19(&events());
    assert!(
        expected.iter().any(|r| r.rank_number == Q19_TOP as u64),
        "some auction has a full top 10"
    );
    check_changes(Query::Q19, q19, expected);
}

#[test]
fn q20_expand_bid_matches_the_reference() {
    let expected: Vec<Q20Row> = reference::q20(&events());
    assert!(
        expected.len() > 1_000,
        "the reference has rows: {}",
        expected.len()
    );
    for (run, got) in run_everywhere(Query::Q20, q20) {
        assert_same_rows(&run, got, expected.clone());
    }
}
