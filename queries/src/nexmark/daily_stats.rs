//! What q15, q16 and q17 share: bid statistics per UTC day and some grouping key.
//!
//! Each of the three groups bids by a key (nothing for q15, the channel for q16, the auction for
//! q17) and by day, and counts them by price rank — rank 1 below 10 000, rank 2 from 10 000 to
//! below 1 000 000, rank 3 from 1 000 000 — as Flink's `count(*) filter (where ...)`. One
//! aggregate, [`DailyStats`], computes every such counter, optionally the exact distinct
//! bidders and auctions per rank (q15, q16), the price's minimum, maximum and sum (q17) and the
//! latest bid's time (q16's `minute`). [`per_day`] is the shared pipeline: the bids keyed by the
//! query's key, in 1-day tumbling event-time windows aligned to the Unix epoch, so days are UTC
//! days. Each (key, day) is emitted once, final, when the watermark passes the day's end.
//!
//! The day is written as Flink's `DATE_FORMAT(dateTime, 'yyyy-MM-dd')` writes it, in UTC
//! ([`utc_date`]); q16's `minute` as `'HH:mm'` ([`utc_hour_minute`]).

use std::collections::HashMap;

use eddy_connectors::nexmark::{Bid, Event};
use eddy_engine::Stream;
use eddy_operators::keyed::Key;
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

use super::bids;

/// A day in ms: the window of q15, q16 and q17.
pub const DAY_MS: u64 = 86_400_000;
/// The lowest price of rank 2 (rank 1 is below it).
pub const RANK2_MIN_PRICE: u64 = 10_000;
/// The lowest price of rank 3.
pub const RANK3_MIN_PRICE: u64 = 1_000_000;

/// The rank of a price: 1, 2 or 3.
pub fn price_rank(price: u64) -> usize {
    if price < RANK2_MIN_PRICE {
        1
    } else if price < RANK3_MIN_PRICE {
        2
    } else {
        3
    }
}

/// The UTC date of a time in ms since the Unix epoch, as `YYYY-MM-DD` (Flink's
/// `DATE_FORMAT(t, 'yyyy-MM-dd')` in UTC).
pub fn utc_date(ms: u64) -> String {
    let (year, month, day) = civil_from_days(ms / DAY_MS);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The UTC hour and minute of a time in ms since the Unix epoch, as `HH:mm`.
pub fn utc_hour_minute(ms: u64) -> String {
    let in_day = ms % DAY_MS;
    format!("{:02}:{:02}", in_day / 3_600_000, in_day / 60_000 % 60)
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // shift the epoch to 0000-03-01, so a leap day ends its (400-year) era and (4-year) cycle
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097; // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11]: March is 0
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// The bid counters of q15 and q16, named as Flink's columns: bids, distinct bidders and
/// distinct auctions, in total and per price rank.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BidCounters {
    /// Bids.
    pub total_bids: u64,
    /// Bids of rank 1 (price below 10 000).
    pub rank1_bids: u64,
    /// Bids of rank 2 (price from 10 000 to below 1 000 000).
    pub rank2_bids: u64,
    /// Bids of rank 3 (price from 1 000 000).
    pub rank3_bids: u64,
    /// Distinct bidders.
    pub total_bidders: u64,
    /// Distinct bidders of rank-1 bids.
    pub rank1_bidders: u64,
    /// Distinct bidders of rank-2 bids.
    pub rank2_bidders: u64,
    /// Distinct bidders of rank-3 bids.
    pub rank3_bidders: u64,
    /// Distinct auctions bid on.
    pub total_auctions: u64,
    /// Distinct auctions with rank-1 bids.
    pub rank1_auctions: u64,
    /// Distinct auctions with rank-2 bids.
    pub rank2_auctions: u64,
    /// Distinct auctions with rank-3 bids.
    pub rank3_auctions: u64,
}

/// The statistics of one key's bids in one day: [`DailyStats`]'s result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayStats {
    /// The counters; the distinct counts are 0 unless the aggregate counts them.
    pub counters: BidCounters,
    /// The lowest price.
    pub min_price: u64,
    /// The highest price.
    pub max_price: u64,
    /// The prices' sum (saturating).
    pub sum_price: u64,
    /// The latest bid's time (ms).
    pub last_bid: u64,
}

/// [`DailyStats`]'s accumulator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DailyAcc {
    /// Bids per rank (index 0 is rank 1).
    bids: [u64; 3],
    min_price: u64,
    max_price: u64,
    sum_price: u64,
    last_bid: u64,
    /// Each distinct bidder with the ranks it bid at: bit `r - 1` for rank `r`.
    bidders: HashMap<u64, u8>,
    /// Each distinct auction with the ranks it was bid at.
    auctions: HashMap<u64, u8>,
}

/// Merges `other`'s values-with-rank-bits into `acc`, the bits or-ed.
fn merge_ranks(acc: &mut HashMap<u64, u8>, mut other: HashMap<u64, u8>) {
    if other.len() > acc.len() {
        std::mem::swap(acc, &mut other);
    }
    for (value, ranks) in other {
        *acc.entry(value).or_default() |= ranks;
    }
}

/// The distinct values in total and per rank, as `(total, [rank 1, rank 2, rank 3])`.
fn count_ranks(values: &HashMap<u64, u8>) -> (u64, [u64; 3]) {
    let mut per_rank = [0; 3];
    for ranks in values.values() {
        for (r, n) in per_rank.iter_mut().enumerate() {
            *n += u64::from(ranks >> r & 1);
        }
    }
    (values.len() as u64, per_rank)
}

/// The aggregate of q15, q16 and q17 over one key's bids in a window: counters per price rank,
/// price statistics and the latest bid's time, and, when made with
/// [`DailyStats::with_distinct`], the exact distinct bidders and auctions per rank (a map of
/// each distinct value to the ranks it was seen at, so memory grows with the distinct values
/// per key and day).
#[derive(Clone, Copy, Debug)]
pub struct DailyStats {
    distinct: bool,
}

impl DailyStats {
    /// Counts bids and price statistics only (q17).
    pub const fn counts() -> Self {
        DailyStats { distinct: false }
    }

    /// Also counts distinct bidders and auctions (q15, q16).
    pub const fn with_distinct() -> Self {
        DailyStats { distinct: true }
    }
}

impl Aggregate<Bid> for DailyStats {
    type Acc = DailyAcc;
    type Out = DayStats;

    fn create(&self) -> DailyAcc {
        DailyAcc {
            bids: [0; 3],
            min_price: u64::MAX,
            max_price: 0,
            sum_price: 0,
            last_bid: 0,
            bidders: HashMap::new(),
            auctions: HashMap::new(),
        }
    }

    #[inline]
    fn add(&self, acc: &mut DailyAcc, bid: Bid) {
        let price = bid.price as u64;
        let rank = price_rank(price);
        acc.bids[rank - 1] += 1;
        acc.min_price = acc.min_price.min(price);
        acc.max_price = acc.max_price.max(price);
        acc.sum_price = acc.sum_price.saturating_add(price);
        acc.last_bid = acc.last_bid.max(bid.date_time);
        if self.distinct {
            let bit = 1 << (rank - 1);
            *acc.bidders.entry(bid.bidder as u64).or_default() |= bit;
            *acc.auctions.entry(bid.auction as u64).or_default() |= bit;
        }
    }

    fn merge(&self, acc: &mut DailyAcc, other: DailyAcc) {
        for (n, m) in acc.bids.iter_mut().zip(other.bids) {
            *n += m;
        }
        acc.min_price = acc.min_price.min(other.min_price);
        acc.max_price = acc.max_price.max(other.max_price);
        acc.sum_price = acc.sum_price.saturating_add(other.sum_price);
        acc.last_bid = acc.last_bid.max(other.last_bid);
        merge_ranks(&mut acc.bidders, other.bidders);
        merge_ranks(&mut acc.auctions, other.auctions);
    }

    fn finish(&self, acc: DailyAcc) -> DayStats {
        let [rank1_bids, rank2_bids, rank3_bids] = acc.bids;
        let (total_bidders, [rank1_bidders, rank2_bidders, rank3_bidders]) =
            count_ranks(&acc.bidders);
        let (total_auctions, [rank1_auctions, rank2_auctions, rank3_auctions]) =
            count_ranks(&acc.auctions);
        DayStats {
            counters: BidCounters {
                total_bids: rank1_bids + rank2_bids + rank3_bids,
                rank1_bids,
                rank2_bids,
                rank3_bids,
                total_bidders,
                rank1_bidders,
                rank2_bidders,
                rank3_bidders,
                total_auctions,
                rank1_auctions,
                rank2_auctions,
                rank3_auctions,
            },
            min_price: acc.min_price,
            max_price: acc.max_price,
            sum_price: acc.sum_price,
            last_bid: acc.last_bid,
        }
    }
}

/// The shared pipeline: the bids keyed by `key` (stage `by`), aggregated by `stats` per key in
/// 1-day tumbling event-time windows (stage `daily_stats`), each emitted when the watermark
/// passes the day's end. The result's `start` is the day's first ms.
pub(super) fn per_day<K: Key>(
    events: Stream<Event>,
    by: &str,
    key: impl Fn(&Bid) -> K + Clone + Send + Sync + 'static,
    stats: DailyStats,
) -> Stream<WindowResult<K, DayStats>> {
    bids(events)
        .key_by(by, key)
        .window("daily_stats", WindowSpec::tumbling(DAY_MS), stats)
}

/// Declares a row of q15 or q16: the given leading fields, then the twelve [`BidCounters`]
/// columns, and `fn new(leading fields..., counters)`.
macro_rules! counters_row {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
            /// Bids.
            pub total_bids: u64,
            /// Bids of rank 1 (price below 10 000).
            pub rank1_bids: u64,
            /// Bids of rank 2 (price from 10 000 to below 1 000 000).
            pub rank2_bids: u64,
            /// Bids of rank 3 (price from 1 000 000).
            pub rank3_bids: u64,
            /// Distinct bidders.
            pub total_bidders: u64,
            /// Distinct bidders of rank-1 bids.
            pub rank1_bidders: u64,
            /// Distinct bidders of rank-2 bids.
            pub rank2_bidders: u64,
            /// Distinct bidders of rank-3 bids.
            pub rank3_bidders: u64,
            /// Distinct auctions bid on.
            pub total_auctions: u64,
            /// Distinct auctions with rank-1 bids.
            pub rank1_auctions: u64,
            /// Distinct auctions with rank-2 bids.
            pub rank2_auctions: u64,
            /// Distinct auctions with rank-3 bids.
            pub rank3_auctions: u64,
        }

        impl $name {
            /// Fields holding ms timestamps: none (the day and minute are strings).
            pub const TIMESTAMP_FIELDS: &'static [&'static str] = &[];

            /// The row of the leading fields and `c`.
            pub fn new($($field: $ty,)* c: $crate::nexmark::BidCounters) -> Self {
                $name {
                    $($field,)*
                    total_bids: c.total_bids,
                    rank1_bids: c.rank1_bids,
                    rank2_bids: c.rank2_bids,
                    rank3_bids: c.rank3_bids,
                    total_bidders: c.total_bidders,
                    rank1_bidders: c.rank1_bidders,
                    rank2_bidders: c.rank2_bidders,
                    rank3_bidders: c.rank3_bidders,
                    total_auctions: c.total_auctions,
                    rank1_auctions: c.rank1_auctions,
                    rank2_auctions: c.rank2_auctions,
                    rank3_auctions: c.rank3_auctions,
                }
            }
        }
    };
}
pub(super) use counters_row;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(DAY_MS - 1), "1970-01-01");
        assert_eq!(utc_date(DAY_MS), "1970-01-02");
        assert_eq!(utc_date(1_700_000_000_000), "2023-11-14");
        assert_eq!(utc_date(951_782_400_000), "2000-02-29");
        assert_eq!(utc_date(4_107_542_400_000), "2100-03-01");
        assert_eq!(utc_hour_minute(1_700_000_000_000), "22:13");
        assert_eq!(utc_hour_minute(DAY_MS - 1), "23:59");
        assert_eq!(utc_hour_minute(DAY_MS), "00:00");
    }

    #[test]
    fn dates_agree_with_counting_days_one_by_one() {
        let (mut year, mut month, mut day) = (1970, 1, 1);
        for days in 0..200_000 {
            assert_eq!(
                utc_date(days * DAY_MS + 12_345),
                format!("{year:04}-{month:02}-{day:02}")
            );
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let length = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > length {
                (day, month) = (1, month + 1);
                if month > 12 {
                    (month, year) = (1, year + 1);
                }
            }
        }
    }

    #[test]
    fn ranks_follow_the_sql_filters() {
        assert_eq!(price_rank(0), 1);
        assert_eq!(price_rank(9_999), 1);
        assert_eq!(price_rank(10_000), 2);
        assert_eq!(price_rank(999_999), 2);
        assert_eq!(price_rank(1_000_000), 3);
    }

    /// Pseudo-random bids over few bidders and auctions, so distinct values repeat across
    /// ranks.
    fn some_bids(n: usize, seed: u64) -> Vec<Bid> {
        let mut x = seed;
        let mut next = move || {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) as usize
        };
        (0..n)
            .map(|_| Bid {
                auction: next() % 13,
                bidder: next() % 17,
                price: [5_000, 10_000, 99_999, 1_000_000, 3][next() % 5] + next() % 7,
                channel: String::new(),
                url: String::new(),
                date_time: 1_700_000_000_000 + (next() % 1_000) as u64,
                extra: String::new(),
            })
            .collect()
    }

    #[test]
    fn merge_agrees_with_add() {
        for stats in [DailyStats::counts(), DailyStats::with_distinct()] {
            for seed in 0..20 {
                let bids = some_bids(60, seed);
                let mut all = stats.create();
                for b in bids.clone() {
                    stats.add(&mut all, b);
                }
                let all = stats.finish(all);
                // split in three at seed-dependent points, merged in both orders
                let (i, j) = (seed as usize % 20, 20 + seed as usize * 3 % 40);
                let mut parts: Vec<DailyAcc> = [&bids[..i], &bids[i..j], &bids[j..]]
                    .into_iter()
                    .map(|part| {
                        let mut acc = stats.create();
                        for b in part.iter().cloned() {
                            stats.add(&mut acc, b);
                        }
                        acc
                    })
                    .collect();
                let mut forward = stats.create();
                for p in parts.clone() {
                    stats.merge(&mut forward, p);
                }
                assert_eq!(stats.finish(forward), all, "{stats:?}, seed {seed}");
                parts.reverse();
                let mut backward = parts.remove(0);
                for p in parts {
                    stats.merge(&mut backward, p);
                }
                assert_eq!(stats.finish(backward), all, "{stats:?}, seed {seed}");
            }
        }
    }

    #[test]
    fn counts_every_rank_and_distinct_value() {
        let bid = |auction, bidder, price, date_time| Bid {
            auction,
            bidder,
            price,
            channel: String::new(),
            url: String::new(),
            date_time,
            extra: String::new(),
        };
        let stats = DailyStats::with_distinct();
        let mut acc = stats.create();
        for b in [
            bid(1, 10, 50, 7),
            bid(1, 10, 20_000, 9),
            bid(2, 11, 60, 3),
            bid(2, 10, 2_000_000, 5),
        ] {
            stats.add(&mut acc, b);
        }
        let s = stats.finish(acc);
        assert_eq!(
            s.counters,
            BidCounters {
                total_bids: 4,
                rank1_bids: 2,
                rank2_bids: 1,
                rank3_bids: 1,
                total_bidders: 2,
                rank1_bidders: 2,
                rank2_bidders: 1,
                rank3_bidders: 1,
                total_auctions: 2,
                rank1_auctions: 2,
                rank2_auctions: 1,
                rank3_auctions: 1,
            }
        );
        assert_eq!(
            (s.min_price, s.max_price, s.sum_price, s.last_bid),
            (50, 2_000_000, 2_020_110, 9)
        );
    }
}
