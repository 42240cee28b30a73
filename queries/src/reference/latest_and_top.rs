//! Batch references for q18, q19 and q20: each bidder's last bid per auction, each auction's
//! top-10 bids, and the bids on category-10 auctions with their auction.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use eddy_connectors::nexmark::{Auction, Event};

use super::bids;
use crate::nexmark::{Q18Row, Q19Row, Q20Row, Q19_TOP, Q20_CATEGORY};

/// q18: per (bidder, auction), the bid with the latest time; among bids of the same time the
/// smallest row.
pub fn q18(events: &[Event]) -> Vec<Q18Row> {
    let mut last: BTreeMap<(u64, u64), Q18Row> = BTreeMap::new();
    for b in bids(events) {
        let row = Q18Row::from(b.clone());
        let key = (row.bidder, row.auction);
        match last.get(&key) {
            Some(kept) if (kept.date_time, Reverse(kept)) >= (row.date_time, Reverse(&row)) => {}
            _ => {
                last.insert(key, row);
            }
        }
    }
    last.into_values().collect()
}

/// q19: per auction, its bids sorted by price descending, then time ascending, then row
/// ascending; the first 10, numbered from 1.
pub fn q19(events: &[Event]) -> Vec<Q19Row> {
    let mut by_auction: BTreeMap<u64, Vec<Q18Row>> = BTreeMap::new();
    for b in bids(events) {
        by_auction
            .entry(b.auction as u64)
            .or_default()
            .push(Q18Row::from(b.clone()));
    }
    let mut rows = Vec::new();
    for (_, mut bids) in by_auction {
        bids.sort_by(|x, y| {
            (Reverse(x.price), x.date_time, x).cmp(&(Reverse(y.price), y.date_time, y))
        });
        for (i, bid) in bids.into_iter().take(Q19_TOP).enumerate() {
            rows.push(Q19Row::new(bid, i as u64 + 1));
        }
    }
    rows
}

/// q20: Flink's plain inner join — every bid whose auction (any time in the input) is in
/// category 10, with that auction's columns.
pub fn q20(events: &[Event]) -> Vec<Q20Row> {
    let mut auctions: BTreeMap<u64, &Auction> = BTreeMap::new();
    for e in events {
        if let Event::Auction(a) = e {
            if a.category as u64 == Q20_CATEGORY {
                auctions.insert(a.id as u64, a);
            }
        }
    }
    let mut rows = Vec::new();
    for b in bids(events) {
        if let Some(a) = auctions.get(&(b.auction as u64)) {
            rows.push(Q20Row {
                auction: b.auction as u64,
                bidder: b.bidder as u64,
                price: b.price as u64,
                channel: b.channel.clone(),
                url: b.url.clone(),
                bid_date_time: b.date_time as i64,
                bid_extra: b.extra.clone(),
                item_name: a.item_name.clone(),
                description: a.description.clone(),
                initial_bid: a.initial_bid as u64,
                reserve: a.reserve as u64,
                auction_date_time: a.date_time as i64,
                expires: a.expires as i64,
                seller: a.seller as u64,
                category: a.category as u64,
                auction_extra: a.extra.clone(),
            });
        }
    }
    rows
}
