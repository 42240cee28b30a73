//! q7, highest bid: in each 10-second tumbling window, the bids with the highest price (all of
//! them when several share it), with the window.

use eddy_connectors::nexmark::{Bid, Event};
use eddy_engine::Stream;
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

use super::bids;
use eddy_connectors::nexmark::timestamp_ms as ms;

/// q7's window length (ms).
pub const Q7_WINDOW: u64 = 10_000;

/// A q7 row: a highest bid of a window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q7Row {
    /// The auction's id.
    pub auction: u64,
    /// The price: the window's highest.
    pub price: u64,
    /// The bidder's id.
    pub bidder: u64,
    /// When the bid was made (ms).
    pub date_time: i64,
    /// Padding.
    pub extra: String,
    /// The window's start (ms).
    pub window_start: i64,
    /// The window's end (ms, exclusive).
    pub window_end: i64,
}

impl Q7Row {
    /// Fields holding ms timestamps.
    pub const TIMESTAMP_FIELDS: &'static [&'static str] =
        &["date_time", "window_start", "window_end"];
}

/// q7: the highest bids per tumbling window.
pub fn q7(events: Stream<Event>) -> Stream<Q7Row> {
    bids(events)
        .window_all(
            "highest",
            WindowSpec::tumbling(Q7_WINDOW),
            MaxBy::new(|b: &Bid| b.price),
        )
        .flat_map("q7", |highest| {
            let (start, end) = (ms(highest.start), ms(highest.end));
            highest.value.into_iter().map(move |b| Q7Row {
                auction: b.auction as u64,
                price: b.price as u64,
                bidder: b.bidder as u64,
                date_time: ms(b.date_time),
                extra: b.extra,
                window_start: start,
                window_end: end,
            })
        })
}
