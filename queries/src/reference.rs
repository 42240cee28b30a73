//! Obviously-correct batch versions of the queries: the same events in a `Vec`, sorted,
//! grouped and scanned, with no streaming, no watermarks and no workers. Tests compare the
//! pipelines' output with these.

use std::collections::{BTreeMap, BTreeSet};

mod daily_stats;
pub use daily_stats::*;

use eddy_connectors::nexmark::{Auction, Bid, Event};

mod latest_and_top;
pub use latest_and_top::*;

mod special;
pub use special::*;

use crate::nexmark::{
    q3_state, Q0Row, Q11Row, Q1Row, Q2Row, Q3Row, Q4Row, Q5Row, Q6Row, Q7Row, Q8Row, Q9Row,
    EUROS_PER_DOLLAR, Q11_GAP, Q2_MODULUS, Q3_CATEGORY, Q5_SLIDE, Q5_WINDOW, Q6_LAST, Q7_WINDOW,
    Q8_WINDOW,
};

mod stateless_udf;
pub use stateless_udf::*;

fn bids(events: &[Event]) -> impl Iterator<Item = &Bid> {
    events.iter().filter_map(|e| match e {
        Event::Bid(b) => Some(b),
        _ => None,
    })
}

/// q0: every bid.
pub fn q0(events: &[Event]) -> Vec<Q0Row> {
    bids(events).map(Q0Row::from).collect()
}

/// q1: every bid with its price × 0.908.
pub fn q1(events: &[Event]) -> Vec<Q1Row> {
    bids(events)
        .map(|b| Q1Row {
            auction: b.auction as u64,
            bidder: b.bidder as u64,
            price: b.price as f64 * EUROS_PER_DOLLAR,
            date_time: b.date_time as i64,
            extra: b.extra.clone(),
        })
        .collect()
}

/// q2: bids on auctions whose id is a multiple of 123.
pub fn q2(events: &[Event]) -> Vec<Q2Row> {
    bids(events)
        .filter(|b| (b.auction as u64).is_multiple_of(Q2_MODULUS))
        .map(|b| Q2Row {
            auction: b.auction as u64,
            price: b.price as u64,
        })
        .collect()
}

/// q5: for every window `[s, s + 10 s)` with `s` a multiple of 2 s, count each auction's bids
/// and keep the auctions with the maximum count.
pub fn q5(events: &[Event]) -> Vec<Q5Row> {
    let mut counts: BTreeMap<(u64, u64), u64> = BTreeMap::new(); // (window start, auction)
    for b in bids(events) {
        let t = b.date_time;
        let mut start = t / Q5_SLIDE * Q5_SLIDE;
        loop {
            if start + Q5_WINDOW > t {
                *counts.entry((start, b.auction as u64)).or_default() += 1;
            }
            if start < Q5_SLIDE {
                break;
            }
            start -= Q5_SLIDE;
            if start + Q5_WINDOW <= t {
                break;
            }
        }
    }
    let mut max: BTreeMap<u64, u64> = BTreeMap::new();
    for (&(start, _), &n) in &counts {
        let m = max.entry(start).or_default();
        *m = (*m).max(n);
    }
    counts
        .into_iter()
        .filter(|((start, _), n)| max[start] == *n)
        .map(|((start, auction), num)| Q5Row {
            auction,
            num,
            window_start: start as i64,
            window_end: (start + Q5_WINDOW) as i64,
        })
        .collect()
}

/// q7: for every 10 s tumbling window, the bids with the window's highest price.
pub fn q7(events: &[Event]) -> Vec<Q7Row> {
    let mut by_window: BTreeMap<u64, Vec<&Bid>> = BTreeMap::new();
    for b in bids(events) {
        by_window
            .entry(b.date_time / Q7_WINDOW * Q7_WINDOW)
            .or_default()
            .push(b);
    }
    let mut rows = Vec::new();
    for (start, window) in by_window {
        let highest = window
            .iter()
            .map(|b| b.price)
            .max()
            .expect("windows here are never empty");
        for b in window.into_iter().filter(|b| b.price == highest) {
            rows.push(Q7Row {
                auction: b.auction as u64,
                price: b.price as u64,
                bidder: b.bidder as u64,
                date_time: b.date_time as i64,
                extra: b.extra.clone(),
                window_start: start as i64,
                window_end: (start + Q7_WINDOW) as i64,
            });
        }
    }
    rows
}

/// q11: per bidder, the bid times sorted and cut where two consecutive bids are 10 s or more
/// apart; a row per run with its count, first bid time and last bid time + 10 s.
pub fn q11(events: &[Event]) -> Vec<Q11Row> {
    let mut times: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for b in bids(events) {
        times.entry(b.bidder as u64).or_default().push(b.date_time);
    }
    let mut rows = Vec::new();
    for (bidder, mut ts) in times {
        ts.sort();
        let mut start = 0;
        for i in 1..=ts.len() {
            if i == ts.len() || ts[i] - ts[i - 1] >= Q11_GAP {
                rows.push(Q11Row {
                    bidder,
                    bid_count: (i - start) as u64,
                    window_start: ts[start] as i64,
                    window_end: (ts[i - 1] + Q11_GAP) as i64,
                });
                start = i;
            }
        }
    }
    rows
}

/// q8: for every person, the 10 s tumbling window of their registration, when they created an
/// auction in that window; one row per person and window.
pub fn q8(events: &[Event]) -> Vec<Q8Row> {
    // (seller, window start) of every auction
    let mut sellers: BTreeSet<(u64, u64)> = BTreeSet::new();
    for e in events {
        if let Event::Auction(a) = e {
            sellers.insert((a.seller as u64, a.date_time / Q8_WINDOW * Q8_WINDOW));
        }
    }
    let mut rows: BTreeSet<Q8Row> = BTreeSet::new();
    for e in events {
        if let Event::Person(p) = e {
            let start = p.date_time / Q8_WINDOW * Q8_WINDOW;
            if sellers.contains(&(p.id as u64, start)) {
                rows.insert(Q8Row {
                    id: p.id as u64,
                    name: p.name.clone(),
                    starttime: start as i64,
                });
            }
        }
    }
    rows.into_iter().collect()
}

/// q3: every (auction in category 10, its seller) pair whose seller lives in OR, ID or CA:
/// the people by id, then one look-up per auction.
pub fn q3(events: &[Event]) -> Vec<Q3Row> {
    let mut people: BTreeMap<usize, Vec<&eddy_connectors::nexmark::Person>> = BTreeMap::new();
    for e in events {
        if let Event::Person(p) = e {
            people.entry(p.id).or_default().push(p);
        }
    }
    let mut rows = Vec::new();
    for e in events {
        let Event::Auction(a) = e else { continue };
        if a.category != Q3_CATEGORY {
            continue;
        }
        for p in people.get(&a.seller).into_iter().flatten() {
            if q3_state(&p.state) {
                rows.push(Q3Row {
                    name: p.name.clone(),
                    city: p.city.clone(),
                    state: p.state.clone(),
                    id: a.id as u64,
                });
            }
        }
    }
    rows.sort();
    rows
}

// q4, q6 and q9: winning bids.

/// Each auction with its winning bid: the bids on it made within `[date_time, expires]`, the
/// highest price winning, then the earliest, then the lowest bidder, then the smallest `extra`.
/// Auctions without such a bid are left out. Bids are indexed by auction first.
fn winners(events: &[Event]) -> Vec<(&Auction, &Bid)> {
    let mut bids_of: std::collections::HashMap<usize, Vec<&Bid>> = Default::default();
    for b in bids(events) {
        bids_of.entry(b.auction).or_default().push(b);
    }
    let mut winners = Vec::new();
    for e in events {
        let Event::Auction(a) = e else { continue };
        let lifetime = a.date_time..=a.expires;
        let best = bids_of
            .get(&a.id)
            .into_iter()
            .flatten()
            .filter(|b| lifetime.contains(&b.date_time))
            .min_by(|x, y| {
                (std::cmp::Reverse(x.price), x.date_time, x.bidder, &x.extra).cmp(&(
                    std::cmp::Reverse(y.price),
                    y.date_time,
                    y.bidder,
                    &y.extra,
                ))
            });
        if let Some(b) = best {
            winners.push((a, *b));
        }
    }
    winners
}

/// q9: every auction with a bid in its lifetime, with its winning bid.
pub fn q9(events: &[Event]) -> Vec<Q9Row> {
    winners(events)
        .into_iter()
        .map(|(a, b)| Q9Row {
            id: a.id as u64,
            item_name: a.item_name.clone(),
            description: a.description.clone(),
            initial_bid: a.initial_bid as u64,
            reserve: a.reserve as u64,
            date_time: a.date_time as i64,
            expires: a.expires as i64,
            seller: a.seller as u64,
            category: a.category as u64,
            extra: a.extra.clone(),
            auction: b.auction as u64,
            bidder: b.bidder as u64,
            price: b.price as u64,
            bid_date_time: b.date_time as i64,
            bid_extra: b.extra.clone(),
        })
        .collect()
}

/// q4: per category, the integer average of its auctions' winning prices.
pub fn q4(events: &[Event]) -> Vec<Q4Row> {
    let mut prices: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (a, b) in winners(events) {
        prices
            .entry(a.category as u64)
            .or_default()
            .push(b.price as u64);
    }
    prices
        .into_iter()
        .map(|(category, p)| Q4Row {
            category,
            avg_price: p.iter().sum::<u64>() / p.len() as u64,
        })
        .collect()
}

/// q6: per seller, the integer average of the winning prices of its last [`Q6_LAST`] auctions
/// in order of expiry, then id.
pub fn q6(events: &[Event]) -> Vec<Q6Row> {
    let mut closed: BTreeMap<u64, Vec<(u64, u64, u64)>> = BTreeMap::new(); // (expires, id, price)
    for (a, b) in winners(events) {
        closed
            .entry(a.seller as u64)
            .or_default()
            .push((a.expires, a.id as u64, b.price as u64));
    }
    closed
        .into_iter()
        .map(|(seller, mut auctions)| {
            auctions.sort();
            let last = &auctions[auctions.len().saturating_sub(Q6_LAST)..];
            Q6Row {
                seller,
                avg_price: last.iter().map(|x| x.2).sum::<u64>() / last.len() as u64,
            }
        })
        .collect()
}
