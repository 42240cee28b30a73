//! q17, auction statistics report: for each auction and day, how many bids were made, in total
//! and per price rank (rank 1 below 10 000, rank 2 below 1 000 000, rank 3 the rest), and the
//! prices' minimum, maximum, average and sum? As Flink's Nexmark q17 (`GROUP BY auction,
//! DATE_FORMAT(dateTime, 'yyyy-MM-dd')`), built on the shared [`DailyStats`] aggregate without
//! its distinct counts. `avg_price` is an integer, the sum divided by the count rounded down, as
//! Flink's `avg` of a `BIGINT`.
//!
//! Where we differ from Flink: Flink's unbounded `GROUP BY` is an updating result; here each
//! (auction, day) is a 1-day tumbling event-time window (days are UTC, aligned to the Unix
//! epoch), emitted once, final, when the watermark passes the day's end. A bid late for its day
//! (none from the generator) is dropped and counted.
//!
//! [`DailyStats`]: super::DailyStats

use eddy_connectors::nexmark::Event;
use eddy_engine::Stream;
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

use super::daily_stats::{per_day, utc_date, DailyStats};

/// A q17 row: one auction's bids in one day.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q17Row {
    /// The auction's id.
    pub auction: u64,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Bids.
    pub total_bids: u64,
    /// Bids of rank 1 (price below 10 000).
    pub rank1_bids: u64,
    /// Bids of rank 2 (price from 10 000 to below 1 000 000).
    pub rank2_bids: u64,
    /// Bids of rank 3 (price from 1 000 000).
    pub rank3_bids: u64,
    /// The lowest price.
    pub min_price: u64,
    /// The highest price.
    pub max_price: u64,
    /// The average price, rounded down.
    pub avg_price: u64,
    /// The prices' sum.
    pub sum_price: u64,
}

impl Q17Row {
    /// Fields holding ms timestamps: none (the day is a string).
    pub const TIMESTAMP_FIELDS: &'static [&'static str] = &[];
}

/// q17: bids and prices per auction and day.
pub fn q17(events: Stream<Event>) -> Stream<Q17Row> {
    per_day(
        events,
        "by_auction",
        |b| b.auction as u64,
        DailyStats::counts(),
    )
    .map("q17", |d| {
        let s = d.value;
        let c = s.counters;
        Q17Row {
            auction: d.key,
            day: utc_date(d.start),
            total_bids: c.total_bids,
            rank1_bids: c.rank1_bids,
            rank2_bids: c.rank2_bids,
            rank3_bids: c.rank3_bids,
            min_price: s.min_price,
            max_price: s.max_price,
            // a window fires only with a bid in it: the count is never 0
            avg_price: s.sum_price / c.total_bids.max(1),
            sum_price: s.sum_price,
        }
    })
}
