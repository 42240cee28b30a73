//! q14, calculation with a user-defined function: the bids whose price in euros
//! (`price × 0.908`) lies strictly between 1 000 000 and 50 000 000, each with its price in
//! euros, whether it was made in the day (08:00–18:59), at night (20:00–06:59) or at another time
//! (the hours 7 and 19), and how many `c`s its `extra` holds, counted by a user function.
//!
//! A user function is an ordinary Rust function; a query hands it, or a closure calling it, to
//! `filter` and `map`, as q14 does with [`count_char`]:
//!
//! ```
//! use eddy_connectors::nexmark::Bid;
//! use eddy_engine::Stream;
//! use eddy_operators::prelude::*;
//!
//! /// The user's function: how many times `c` occurs in `s`.
//! fn count_char(s: &str, c: char) -> u64 {
//!     s.chars().filter(|&x| x == c).count() as u64
//! }
//!
//! /// The bids with more than three `c`s, as (auction, c count).
//! fn c_heavy(bids: Stream<Bid>) -> Stream<(usize, u64)> {
//!     bids.filter("c_heavy", |b| count_char(&b.extra, 'c') > 3)
//!         .map("c_counts", |b| (b.auction, count_char(&b.extra, 'c')))
//! }
//! ```
//!
//! Where we differ from Flink: the price is an `f64` (Flink's `DECIMAL(23, 3)`), though the
//! range test is exact, in integers, as Flink's decimal one is; the hour is the UTC hour of the
//! bid's time, as Flink's `HOUR` of a zoneless timestamp made from epoch milliseconds;
//! `bid_time_type` holds Flink's strings (`dayTime`, `nightTime`, `otherTime`), named by the
//! enum [`BidTimeType`]; columns are in snake case.

use std::borrow::Cow;

use eddy_connectors::nexmark::{Bid, Event};
use eddy_engine::Stream;
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

use super::{bids, EUROS_PER_DOLLAR};
use eddy_connectors::nexmark::timestamp_ms as ms;

/// q14 keeps bids whose price in euros is above this (exclusive).
pub const Q14_MIN_EUROS: u64 = 1_000_000;
/// q14 keeps bids whose price in euros is below this (exclusive).
pub const Q14_MAX_EUROS: u64 = 50_000_000;

/// When in the day a bid was made, by its UTC hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BidTimeType {
    /// 08:00 to 18:59.
    DayTime,
    /// 20:00 to 06:59.
    NightTime,
    /// The hours 7 and 19.
    OtherTime,
}

impl BidTimeType {
    /// The time type of an hour of the day (0–23), by Flink's q14 `CASE`.
    pub fn of_hour(hour: u64) -> Self {
        if (8..=18).contains(&hour) {
            BidTimeType::DayTime
        } else if hour <= 6 || hour >= 20 {
            BidTimeType::NightTime
        } else {
            BidTimeType::OtherTime
        }
    }

    /// The time type of a time in ms since the Unix epoch, by its UTC hour.
    pub fn of_time(date_time_ms: u64) -> Self {
        Self::of_hour(date_time_ms / 3_600_000 % 24)
    }

    /// Flink's name for it: `dayTime`, `nightTime` or `otherTime`.
    pub fn as_str(self) -> &'static str {
        match self {
            BidTimeType::DayTime => "dayTime",
            BidTimeType::NightTime => "nightTime",
            BidTimeType::OtherTime => "otherTime",
        }
    }
}

/// A q14 row: a bid in the price range with its computed columns.
#[derive(Clone, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct Q14Row {
    /// The auction's id.
    pub auction: u64,
    /// The bidder's id.
    pub bidder: u64,
    /// The price in euros: dollars × 0.908.
    pub price: f64,
    /// When in the day the bid was made: `dayTime`, `nightTime` or `otherTime`
    /// ([`BidTimeType::as_str`]; a string, as Parquet and Flink have it, that borrows one of
    /// the three names, so making a row does not allocate it).
    pub bid_time_type: Cow<'static, str>,
    /// When the bid was made (ms).
    pub date_time: i64,
    /// Padding.
    pub extra: String,
    /// How many `c`s `extra` holds, by the user function [`count_char`].
    pub c_counts: u64,
}

impl Q14Row {
    /// Fields holding ms timestamps.
    pub const TIMESTAMP_FIELDS: &'static [&'static str] = &["date_time"];

    /// The row of a bid: q14's `SELECT`, calling the user function [`count_char`].
    pub fn from_bid(b: Bid) -> Self {
        Q14Row {
            auction: b.auction as u64,
            bidder: b.bidder as u64,
            price: b.price as f64 * EUROS_PER_DOLLAR,
            bid_time_type: Cow::Borrowed(BidTimeType::of_time(b.date_time).as_str()),
            date_time: ms(b.date_time),
            c_counts: count_char(&b.extra, 'c'),
            extra: b.extra,
        }
    }
}

/// q14's user function: how many times `c` occurs in `s` (Flink's `count_char`).
pub fn count_char(s: &str, c: char) -> u64 {
    s.chars().filter(|&x| x == c).count() as u64
}

/// q14's `WHERE`: the price in euros strictly between [`Q14_MIN_EUROS`] and
/// [`Q14_MAX_EUROS`], computed exactly (`price × 908` against the bounds × 1000).
pub fn q14_price_in_range(b: &Bid) -> bool {
    let milli_euros = b.price as u128 * 908;
    milli_euros > Q14_MIN_EUROS as u128 * 1000 && milli_euros < Q14_MAX_EUROS as u128 * 1000
}

/// q14: the bids in the price range, with their time of day and `c` count.
pub fn q14(events: Stream<Event>) -> Stream<Q14Row> {
    bids(events)
        .filter("q14_price_range", q14_price_in_range)
        .map("q14", Q14Row::from_bid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_follow_flinks_case() {
        let types: Vec<&str> = (0..24).map(|h| BidTimeType::of_hour(h).as_str()).collect();
        let mut expected = vec!["nightTime"; 7];
        expected.push("otherTime");
        expected.extend(["dayTime"; 11]);
        expected.push("otherTime");
        expected.extend(["nightTime"; 4]);
        assert_eq!(types, expected);
        // 1 700 000 000 000 ms is 2023-11-14 22:13:20 UTC
        assert_eq!(
            BidTimeType::of_time(1_700_000_000_000),
            BidTimeType::NightTime
        );
        assert_eq!(
            BidTimeType::of_time(1_700_000_000_000 + 10 * 3_600_000),
            BidTimeType::DayTime
        );
    }

    #[test]
    fn count_char_counts_characters() {
        assert_eq!(count_char("", 'c'), 0);
        assert_eq!(count_char("abc", 'c'), 1);
        assert_eq!(count_char("cccxc", 'c'), 4);
        assert_eq!(count_char("éccé", 'é'), 2);
        assert_eq!(count_char("CC", 'c'), 0);
    }

    #[test]
    fn price_range_is_exact_and_strict() {
        let bid = |price| Bid {
            auction: 1,
            bidder: 1,
            price,
            channel: String::new(),
            url: String::new(),
            date_time: 0,
            extra: String::new(),
        };
        // 0.908 × 1 101 322 = 1 000 000.376; 0.908 × 1 101 321 = 999 999.468
        assert!(q14_price_in_range(&bid(1_101_322)));
        assert!(!q14_price_in_range(&bid(1_101_321)));
        // 0.908 × 55 066 079 = 49 999 999.732; 0.908 × 55 066 080 = 50 000 000.64
        assert!(q14_price_in_range(&bid(55_066_079)));
        assert!(!q14_price_in_range(&bid(55_066_080)));
        // no overflow on absurd prices
        assert!(!q14_price_in_range(&bid(usize::MAX)));
    }
}
