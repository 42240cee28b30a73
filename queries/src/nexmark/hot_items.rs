//! q5, hot items: in each 10-second window, starting every 2 seconds, which auctions received
//! the most bids? Emits every auction tied for the most, with its bid count and the window.
//!
//! Two windows: a hopping window counts bids per auction; its results (event time `end - 1`)
//! fall into a 2-second tumbling window per original window, which keeps the auctions with the
//! maximum count.

use eddy_connectors::nexmark::Event;
use eddy_engine::Stream;
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

use eddy_connectors::nexmark::timestamp_ms as ms;

/// q5's window length (ms).
pub const Q5_WINDOW: u64 = 10_000;
/// q5's window slide (ms).
pub const Q5_SLIDE: u64 = 2_000;

/// A q5 row: a hot auction in a window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q5Row {
    /// The auction's id.
    pub auction: u64,
    /// Its bids in the window: the window's maximum.
    pub num: u64,
    /// The window's start (ms).
    pub window_start: i64,
    /// The window's end (ms, exclusive).
    pub window_end: i64,
}

impl Q5Row {
    /// Fields holding ms timestamps.
    pub const TIMESTAMP_FIELDS: &'static [&'static str] = &["window_start", "window_end"];
}

/// q5: the auctions with the most bids per hopping window.
pub fn q5(events: Stream<Event>) -> Stream<Q5Row> {
    events
        .flat_map("bid_auctions", |e| match e {
            Event::Bid(b) => Some(b.auction as u64),
            _ => None,
        })
        .key_by("by_auction", |auction| *auction)
        .window(
            "bid_counts",
            WindowSpec::hopping(Q5_WINDOW, Q5_SLIDE),
            Count,
        )
        .window_all(
            "hottest",
            WindowSpec::tumbling(Q5_SLIDE),
            MaxBy::new(|c: &WindowResult<u64, u64>| c.value),
        )
        .flat_map("q5", |hottest| {
            hottest.value.into_iter().map(|c| Q5Row {
                auction: c.key,
                num: c.value,
                window_start: ms(c.start),
                window_end: ms(c.end),
            })
        })
}
