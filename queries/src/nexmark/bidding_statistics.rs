//! q15, bidding statistics report: how many bids, distinct bidders and distinct auctions are
//! there each day, in total and per price rank (rank 1 below 10 000, rank 2 below 1 000 000,
//! rank 3 the rest)? As Flink's Nexmark q15 (`GROUP BY DATE_FORMAT(dateTime, 'yyyy-MM-dd')` with
//! `count(*)` and `count(distinct bidder)` / `count(distinct auction)`, each also
//! `filter (where price ...)` per rank), built on the shared [`DailyStats`] aggregate.
//!
//! Where we differ from Flink: Flink's unbounded `GROUP BY` is an updating result, revised with
//! every bid; here each day is a 1-day tumbling event-time window (days are UTC, aligned to the
//! Unix epoch), emitted once, final, when the watermark passes the day's end — a daily report,
//! as a user reading it expects. Distinct counts are exact (sets of the day's bidders and
//! auctions). A bid late for its day (none from the generator, whose input is in order) is
//! dropped and counted, where Flink would update the day's row.
//!
//! [`DailyStats`]: super::DailyStats

use eddy_connectors::nexmark::Event;
use eddy_engine::Stream;
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

use super::daily_stats::{counters_row, per_day, utc_date, DailyStats};

counters_row! {
    /// A q15 row: one day's bid counters.
    pub struct Q15Row {
        /// The UTC day, `YYYY-MM-DD`.
        pub day: String,
    }
}

/// q15: bids, bidders and auctions per day and price rank.
pub fn q15(events: Stream<Event>) -> Stream<Q15Row> {
    per_day(events, "by_day", |_| (), DailyStats::with_distinct())
        .map("q15", |d| Q15Row::new(utc_date(d.start), d.value.counters))
}
