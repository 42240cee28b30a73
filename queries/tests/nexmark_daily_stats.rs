//! q15, q16 and q17 (daily bid statistics) against their batch references over the same
//! generated events, read back from the Parquet the pipelines wrote, at 1 and 2 workers: once
//! with the generator's default base time (the events fall in one UTC day), also in two
//! processes, and once starting 30 s before a UTC midnight (they fall in two, so day boundaries
//! are exercised; the `eddy` binary has no flag for the base time, so in-process only).

mod common;

use std::fmt::Debug;

use common::{assert_parquet_matches, events_of, stage_state};
use eddy_connectors::nexmark::{Event, NexmarkConfig};
use eddy_queries::nexmark::{Q15Row, Q16Row, Q17Row, Query, DAY_MS};
use eddy_queries::reference;
use serde::de::DeserializeOwned;

/// The standard test configuration, starting at `base_time` when given.
fn config(base_time: Option<u64>) -> NexmarkConfig {
    let config = common::config();
    NexmarkConfig {
        base_time: base_time.unwrap_or(config.base_time),
        ..config
    }
}

/// 30 s before the first UTC midnight after the default base time: 60 s of events span it.
fn before_midnight() -> u64 {
    let base = NexmarkConfig::default().base_time;
    (base / DAY_MS + 1) * DAY_MS - 30_000
}

/// Runs `query` at 1 and 2 workers over `config`'s events, and in two processes when `config`
/// has the default base time, and compares its rows with `reference`'s; `least_rows` guards
/// against a vacuous comparison. Returns the rows.
fn check<T>(
    query: Query,
    config: &NexmarkConfig,
    reference: fn(&[Event]) -> Vec<T>,
    least_rows: usize,
) -> Vec<T>
where
    T: DeserializeOwned + Debug + PartialEq + Clone,
{
    let expected = reference(&events_of(config));
    eprintln!("{query} reference: {} rows", expected.len());
    assert!(
        expected.len() >= least_rows,
        "{query}: the reference has {} rows: the test would prove little",
        expected.len()
    );
    assert_parquet_matches(query, config, &expected, |summary| {
        assert_eq!(
            stage_state(summary, "daily_stats"),
            0,
            "the window holds nothing once the input has ended"
        );
    });
    expected
}

#[test]
fn q15_bidding_statistics() {
    let one_day = check(Query::Q15, &config(None), reference::q15, 1);
    assert_eq!(one_day.len(), 1);
    assert!(one_day[0].rank1_bidders > 0 && one_day[0].rank2_auctions > 0);
    let two_days = check(
        Query::Q15,
        &config(Some(before_midnight())),
        reference::q15,
        2,
    );
    let days: Vec<&str> = two_days.iter().map(|r: &Q15Row| r.day.as_str()).collect();
    assert_eq!(days, ["2023-11-14", "2023-11-15"]);
}

#[test]
fn q16_channel_statistics() {
    check(Query::Q16, &config(None), reference::q16, 100);
    let rows = check(
        Query::Q16,
        &config(Some(before_midnight())),
        reference::q16,
        100,
    );
    let minutes = |day: &str| -> Vec<String> {
        let mut m: Vec<String> = rows
            .iter()
            .filter(|r: &&Q16Row| r.day == day)
            .map(|r| r.minute.clone())
            .collect();
        m.dedup();
        m
    };
    assert!(minutes("2023-11-14").iter().all(|m| m == "23:59"));
    assert!(minutes("2023-11-15").iter().all(|m| m == "00:00"));
}

#[test]
fn q17_auction_statistics() {
    check(Query::Q17, &config(None), reference::q17, 100);
    let rows = check(
        Query::Q17,
        &config(Some(before_midnight())),
        reference::q17,
        100,
    );
    // some auctions are bid on both sides of midnight
    let both: Vec<&Q17Row> = rows
        .iter()
        .filter(|r| {
            rows.iter()
                .any(|s| s.auction == r.auction && s.day != r.day)
        })
        .collect();
    assert!(!both.is_empty(), "no auction spans midnight");
}
