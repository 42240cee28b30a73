//! q19, auction top-10 price: each auction's 10 highest bids, with their rank — Flink's
//! Nexmark q19:
//!
//! ```sql
//! SELECT * FROM
//! (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number
//!  FROM bid)
//! WHERE rank_number <= 10;
//! ```
//!
//! An updating result with the rank, as Flink's: the bids keyed by auction go through
//! [`Keyed::top_n_updating`] with `n =` [`Q19_TOP`]. When a bid enters an auction's top 10,
//! the rows whose rank changed are retracted and inserted with their new rank, and the bid
//! pushed out (if any) is retracted — so a new best bid of an auction with 10 changes 20 rows,
//! as Flink's rank operator with the row number in its output does. Where ours differs:
//! Flink leaves ties of price to arrival order; here among equal prices the earlier bid ranks
//! first, then the smaller row (bidder, channel, url, extra), so the result is the same at any
//! worker count. State: 10 bids per auction seen, forever (as Flink without a state TTL).

use std::cmp::Reverse;

use eddy_connectors::nexmark::Event;
use eddy_engine::{Change, Stream};
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

use super::last_bid::{bid_rows, Q18Row};

/// How many bids per auction q19 keeps.
pub const Q19_TOP: usize = 10;

/// A q19 row: a bid, every column, and its rank among its auction's bids.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q19Row {
    /// The auction's id.
    pub auction: u64,
    /// The bidder's person id.
    pub bidder: u64,
    /// Price bid.
    pub price: u64,
    /// Channel the bid came through.
    pub channel: String,
    /// URL of the bid.
    pub url: String,
    /// When the bid was made (ms).
    pub date_time: i64,
    /// Padding.
    pub extra: String,
    /// The bid's rank in its auction, 1 to [`Q19_TOP`]: by price descending, then time.
    pub rank_number: u64,
}

impl Q19Row {
    /// Fields holding ms timestamps.
    pub const TIMESTAMP_FIELDS: &'static [&'static str] = &["date_time"];

    /// The row of `bid` at `rank_number`.
    pub fn new(bid: Q18Row, rank_number: u64) -> Self {
        Q19Row {
            auction: bid.auction,
            bidder: bid.bidder,
            price: bid.price,
            channel: bid.channel,
            url: bid.url,
            date_time: bid.date_time,
            extra: bid.extra,
            rank_number,
        }
    }
}

/// q19's ranking score: the higher price first, then the earlier bid.
pub fn q19_score(bid: &Q18Row) -> (u64, Reverse<i64>) {
    (bid.price, Reverse(bid.date_time))
}

/// q19: each auction's 10 highest bids with their rank, as a change log.
pub fn q19(events: Stream<Event>) -> Stream<Change<Q19Row>> {
    bid_rows(events, "q19_bids")
        .key_by("by_auction", |b: &Q18Row| b.auction)
        .top_n_updating("top_bids", Q19_TOP, q19_score)
        .map("q19", |c| Change {
            row: Q19Row::new(c.row.value, c.row.rank),
            diff: c.diff,
        })
}
