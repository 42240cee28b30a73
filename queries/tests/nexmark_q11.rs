//! q11 (user sessions) against its batch reference, over the same generated events, read back
//! from the Parquet the pipeline wrote, at 1 and 2 workers and in two processes.

mod common;

use common::{assert_parquet_matches, config, events, stage_state};
use eddy_queries::nexmark::{Q11Row, Query, Q11_GAP};
use eddy_queries::reference;

#[test]
fn q11_user_sessions() {
    let expected: Vec<Q11Row> = reference::q11(&events());
    assert!(
        expected.iter().any(|r| r.bid_count > 1),
        "no session has two bids: the test would not see sessions merge"
    );
    assert!(
        expected
            .iter()
            .all(|r| r.window_end - r.window_start >= Q11_GAP as i64),
        "a session lasts at least the gap"
    );
    assert_parquet_matches(Query::Q11, &config(), &expected, |summary| {
        assert_eq!(
            stage_state(summary, "bid_sessions"),
            0,
            "sessions left open after the run"
        );
    });
}
