//! q15, q16 and q17: the bids grouped by (key, UTC day) in a map, then each group's columns
//! computed as the SQL spells them, one filter and one pass per column.

use std::collections::{BTreeMap, BTreeSet};

use eddy_connectors::nexmark::{Bid, Event};

use super::bids;
use crate::nexmark::{utc_date, utc_hour_minute, BidCounters, Q15Row, Q16Row, Q17Row, DAY_MS};

/// A price filter of the SQL.
type Filter = fn(usize) -> bool;

/// No filter, then `price < 10000`, `price >= 10000 and price < 1000000`, `price >= 1000000`.
const FILTERS: [Filter; 4] = [
    |_| true,
    |p| p < 10_000,
    |p| (10_000..1_000_000).contains(&p),
    |p| p >= 1_000_000,
];

/// The bids grouped by (`key`, day number).
fn groups<K: Ord>(events: &[Event], key: impl Fn(&Bid) -> K) -> BTreeMap<(K, u64), Vec<&Bid>> {
    let mut groups: BTreeMap<(K, u64), Vec<&Bid>> = BTreeMap::new();
    for b in bids(events) {
        groups
            .entry((key(b), b.date_time / DAY_MS))
            .or_default()
            .push(b);
    }
    groups
}

/// `count(*) filter (where ...)`.
fn count(group: &[&Bid], filter: Filter) -> u64 {
    group.iter().filter(|b| filter(b.price)).count() as u64
}

/// `count(distinct field) filter (where ...)`.
fn distinct(group: &[&Bid], filter: Filter, field: fn(&Bid) -> usize) -> u64 {
    let values: BTreeSet<usize> = group
        .iter()
        .filter(|b| filter(b.price))
        .map(|b| field(b))
        .collect();
    values.len() as u64
}

/// q15's and q16's twelve counters over one group.
fn counters(group: &[&Bid]) -> BidCounters {
    let [all, rank1, rank2, rank3] = FILTERS;
    let bidder: fn(&Bid) -> usize = |b| b.bidder;
    let auction: fn(&Bid) -> usize = |b| b.auction;
    BidCounters {
        total_bids: count(group, all),
        rank1_bids: count(group, rank1),
        rank2_bids: count(group, rank2),
        rank3_bids: count(group, rank3),
        total_bidders: distinct(group, all, bidder),
        rank1_bidders: distinct(group, rank1, bidder),
        rank2_bidders: distinct(group, rank2, bidder),
        rank3_bidders: distinct(group, rank3, bidder),
        total_auctions: distinct(group, all, auction),
        rank1_auctions: distinct(group, rank1, auction),
        rank2_auctions: distinct(group, rank2, auction),
        rank3_auctions: distinct(group, rank3, auction),
    }
}

/// q15: per UTC day, the counters of its bids.
pub fn q15(events: &[Event]) -> Vec<Q15Row> {
    groups(events, |_| ())
        .into_iter()
        .map(|(((), day), group)| Q15Row::new(utc_date(day * DAY_MS), counters(&group)))
        .collect()
}

/// q16: per channel and UTC day, the greatest `HH:mm` of its bids and their counters.
pub fn q16(events: &[Event]) -> Vec<Q16Row> {
    groups(events, |b| b.channel.clone())
        .into_iter()
        .map(|((channel, day), group)| {
            let minute = group
                .iter()
                .map(|b| utc_hour_minute(b.date_time))
                .max()
                .expect("groups are never empty");
            Q16Row::new(channel, utc_date(day * DAY_MS), minute, counters(&group))
        })
        .collect()
}

/// q17: per auction and UTC day, bid counts per rank and the prices' min, max, integer average
/// and sum.
pub fn q17(events: &[Event]) -> Vec<Q17Row> {
    let [all, rank1, rank2, rank3] = FILTERS;
    groups(events, |b| b.auction as u64)
        .into_iter()
        .map(|((auction, day), group)| {
            let prices: Vec<u64> = group.iter().map(|b| b.price as u64).collect();
            let sum: u64 = prices.iter().sum();
            Q17Row {
                auction,
                day: utc_date(day * DAY_MS),
                total_bids: count(&group, all),
                rank1_bids: count(&group, rank1),
                rank2_bids: count(&group, rank2),
                rank3_bids: count(&group, rank3),
                min_price: *prices.iter().min().expect("groups are never empty"),
                max_price: *prices.iter().max().expect("groups are never empty"),
                avg_price: sum / prices.len() as u64,
                sum_price: sum,
            }
        })
        .collect()
}
