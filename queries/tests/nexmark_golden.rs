//! Every query against its batch reference, over the same generated events, read back from
//! the Parquet the pipeline wrote: 1 worker, 2 workers, and 2 processes of 1 worker on loopback.

mod common;

use common::{assert_parquet_matches, config, events};
use eddy_queries::nexmark::{Q0Row, Q1Row, Q2Row, Q5Row, Q7Row, Query};
use eddy_queries::reference;

fn check<T>(query: Query, expected: Vec<T>)
where
    T: serde::de::DeserializeOwned + std::fmt::Debug + PartialEq + Clone,
{
    assert!(
        !expected.is_empty(),
        "the reference of {query} is empty: the test would prove nothing"
    );
    assert_parquet_matches(query, &config(), &expected, |_| {});
}

#[test]
fn q0_pass_through() {
    check::<Q0Row>(Query::Q0, reference::q0(&events()));
}

#[test]
fn q1_currency_conversion() {
    check::<Q1Row>(Query::Q1, reference::q1(&events()));
}

#[test]
fn q2_selection() {
    check::<Q2Row>(Query::Q2, reference::q2(&events()));
}

#[test]
fn q5_hot_items() {
    check::<Q5Row>(Query::Q5, reference::q5(&events()));
}

#[test]
fn q7_highest_bid() {
    check::<Q7Row>(Query::Q7, reference::q7(&events()));
}
