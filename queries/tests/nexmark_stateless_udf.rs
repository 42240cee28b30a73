//! q14 (calculation with a user function), q21 (add channel id) and q22 (URL directories)
//! against their batch references, over the same generated events, read back from the Parquet
//! the pipeline wrote, at 1 and 2 workers and (from the default base time) in two processes.

mod common;

use std::collections::BTreeSet;
use std::fmt::Debug;

use common::{assert_parquet_matches, config, events_of, EVENTS};
use eddy_connectors::nexmark::{Event, NexmarkConfig};
use eddy_queries::nexmark::{Q14Row, Q21Row, Q22Row, Query};
use eddy_queries::reference;
use serde::de::DeserializeOwned;

fn bid_count(events: &[Event]) -> usize {
    events.iter().filter(|e| matches!(e, Event::Bid(_))).count()
}

/// Runs `query` at 1 and 2 workers, and in two processes when the binary can generate
/// `config`'s events, into Parquet and compares its rows with `expected`.
fn assert_matches_reference<T>(query: Query, config: &NexmarkConfig, expected: &[T])
where
    T: DeserializeOwned + Debug + PartialEq + Clone,
{
    assert_parquet_matches(query, config, expected, |summary| {
        assert!(
            summary.stages.iter().all(|s| s.state == 0),
            "{query} keeps no state"
        );
    });
}

#[test]
fn q14_calculation() {
    let config = config();
    let events = events_of(&config);
    let expected = reference::q14(&events);
    eprintln!(
        "q14 reference: {} of {} bids",
        expected.len(),
        bid_count(&events)
    );
    assert!(
        expected.len() > 1_000 && expected.len() < bid_count(&events),
        "the price range keeps some bids, not all"
    );
    assert!(expected.iter().any(|r| r.c_counts > 0));
    assert!(expected.iter().any(|r| r.c_counts == 0));
    assert_matches_reference::<Q14Row>(Query::Q14, &config, &expected);
}

/// q14 over most of a day, so every time type occurs: 60 000 events at one a second from
/// 04:00 UTC run to 20:40.
#[test]
fn q14_over_a_day_has_every_time_type() {
    let four_am = 1_700_000_000_000 / 86_400_000 * 86_400_000 + 4 * 3_600_000;
    let config = NexmarkConfig {
        events: EVENTS,
        events_per_second: 1,
        base_time: four_am,
    };
    let events = events_of(&config);
    let expected = reference::q14(&events);
    let types: BTreeSet<&str> = expected.iter().map(|r| &*r.bid_time_type).collect();
    assert_eq!(types, BTreeSet::from(["dayTime", "nightTime", "otherTime"]));
    assert_matches_reference::<Q14Row>(Query::Q14, &config, &expected);
}

#[test]
fn q21_add_channel_id() {
    let config = config();
    let events = events_of(&config);
    let expected = reference::q21(&events);
    let bids = bid_count(&events);
    eprintln!("q21 reference: {} of {bids} bids", expected.len());
    assert!(
        expected.len() < bids,
        "some bids have no channel id and are dropped"
    );
    // each well-known channel, and ids from the URL
    for id in ["0", "1", "2", "3"] {
        assert!(
            expected.iter().any(|r| r.channel_id == id),
            "no bid of channel {id}"
        );
    }
    let from_url = expected
        .iter()
        .filter(|r| r.channel.starts_with("channel-"))
        .count();
    assert!(from_url > 1_000, "{from_url} ids from URLs");
    assert_matches_reference::<Q21Row>(Query::Q21, &config, &expected);
}

#[test]
fn q22_url_directories() {
    let config = config();
    let events = events_of(&config);
    let expected = reference::q22(&events);
    assert_eq!(expected.len(), bid_count(&events), "a row per bid");
    assert!(expected
        .iter()
        .all(|r| r.dir1.is_some() && r.dir2.is_some() && r.dir3.is_some()));
    let dirs: BTreeSet<&str> = expected.iter().filter_map(|r| r.dir1.as_deref()).collect();
    assert!(
        dirs.len() > 100,
        "{} distinct first directories",
        dirs.len()
    );
    assert_matches_reference::<Q22Row>(Query::Q22, &config, &expected);
}
