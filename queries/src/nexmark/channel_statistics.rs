//! q16, channel statistics report: for each channel and day, how many bids, distinct bidders
//! and distinct auctions, in total and per price rank, and the latest minute of the day with a
//! bid? As Flink's Nexmark q16 (q15's counters `GROUP BY channel, DATE_FORMAT(dateTime,
//! 'yyyy-MM-dd')`, plus `max(DATE_FORMAT(dateTime, 'HH:mm'))` as `minute`), built on the shared
//! [`DailyStats`] aggregate. `minute` is the `HH:mm` of the channel's latest bid that day: the
//! greatest `HH:mm` string is the latest time's.
//!
//! Where we differ from Flink: Flink's unbounded `GROUP BY` is an updating result; here each
//! (channel, day) is a 1-day tumbling event-time window (days and minutes in UTC, days aligned
//! to the Unix epoch), emitted once, final, when the watermark passes the day's end. Distinct
//! counts are exact. A bid late for its day (none from the generator) is dropped and counted.
//!
//! [`DailyStats`]: super::DailyStats

use eddy_connectors::nexmark::Event;
use eddy_engine::Stream;
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

use super::daily_stats::{counters_row, per_day, utc_date, utc_hour_minute, DailyStats};

counters_row! {
    /// A q16 row: one channel's bid counters in one day.
    pub struct Q16Row {
        /// The channel.
        pub channel: String,
        /// The UTC day, `YYYY-MM-DD`.
        pub day: String,
        /// The UTC `HH:mm` of the channel's latest bid that day.
        pub minute: String,
    }
}

/// q16: bids, bidders and auctions per channel, day and price rank.
pub fn q16(events: Stream<Event>) -> Stream<Q16Row> {
    per_day(
        events,
        "by_channel",
        |b| b.channel.clone(),
        DailyStats::with_distinct(),
    )
    .map("q16", |d| {
        let (day, minute) = (utc_date(d.start), utc_hour_minute(d.value.last_bid));
        Q16Row::new(d.key, day, minute, d.value.counters)
    })
}
