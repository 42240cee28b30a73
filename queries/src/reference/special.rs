//! References for the queries that need a special capability: q10 (partitioned log), q12
//! (processing-time windows) and q13 (side input join).

use std::collections::{BTreeMap, HashMap};

use eddy_connectors::nexmark::Event;

use super::bids;
use crate::nexmark::{Q10Row, Q13Row, Q13_KEYS};

/// q10: every bid, as logged (the partition is the hour of `date_time`).
pub fn q10(events: &[Event]) -> Vec<Q10Row> {
    bids(events)
        .map(|b| Q10Row {
            auction: b.auction as u64,
            bidder: b.bidder as u64,
            price: b.price as u64,
            date_time: b.date_time as i64,
            extra: b.extra.clone(),
        })
        .collect()
}

/// q12's reproducible part: each bidder's bids summed over all processing-time windows, i.e. the
/// number of bids each bidder made.
pub fn q12_totals(events: &[Event]) -> BTreeMap<u64, u64> {
    let mut totals = BTreeMap::new();
    for b in bids(events) {
        *totals.entry(b.bidder as u64).or_default() += 1;
    }
    totals
}

/// q13: every bid whose `auction % 10000` is in `table`, with its value.
pub fn q13(events: &[Event], table: &HashMap<u64, String>) -> Vec<Q13Row> {
    bids(events)
        .filter_map(|b| {
            let value = table.get(&(b.auction as u64 % Q13_KEYS))?;
            Some(Q13Row {
                auction: b.auction as u64,
                bidder: b.bidder as u64,
                price: b.price as u64,
                date_time: b.date_time as i64,
                value: value.clone(),
            })
        })
        .collect()
}
