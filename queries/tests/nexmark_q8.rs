//! q8 (new users) against its batch reference, over the same generated events, read back from
//! the Parquet the pipeline wrote, at 1 and 2 workers and in two processes.

mod common;

use common::{assert_parquet_matches, config, events, stage_state};
use eddy_queries::nexmark::{Q8Row, Query};
use eddy_queries::reference;

/// The standard events: 60 000 over 60 s, six 10 s windows and a half.
#[test]
fn q8_new_users() {
    let expected: Vec<Q8Row> = reference::q8(&events());
    eprintln!("q8 reference: {} rows", expected.len());
    assert!(
        expected.len() >= 10,
        "the reference has {} rows: the test would prove little",
        expected.len()
    );
    assert_parquet_matches(Query::Q8, &config(), &expected, |summary| {
        assert_eq!(
            stage_state(summary, "new_users"),
            0,
            "the join holds nothing once the input has ended"
        );
    });
}
