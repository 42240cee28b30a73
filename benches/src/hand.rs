//! Hand-written loops: each query as the plainest fast Rust over a `Vec` of in-order events,
//! consuming it (records are moved, as in the pipeline). They return how many rows the query
//! produced, so the optimizer cannot drop the work, and so the runner can check they agree
//! with the pipeline.

mod daily_stats;
mod latest_and_top;
mod special;
mod stateless_udf;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hint::black_box;

use eddy_connectors::nexmark::{BidRow, Event};
use eddy_engine::Record;
use eddy_queries::nexmark::{q3_state, Q1Row, Q2Row, Query, Q3_CATEGORY, Q6_LAST};
use rustc_hash::FxHashMap;

/// Runs the hand-written loop of `query` over `events`; returns the number of result rows.
pub fn run(query: Query, events: Vec<Record<Event>>) -> u64 {
    match query {
        Query::Q0 => count_rows(events, |e| match e {
            Event::Bid(b) => Some(BidRow::from(b)),
            _ => None,
        }),
        Query::Q1 => count_rows(events, |e| match e {
            Event::Bid(b) => Some(Q1Row {
                auction: b.auction as u64,
                bidder: b.bidder as u64,
                price: b.price as f64 * 0.908,
                date_time: b.date_time as i64,
                extra: b.extra,
            }),
            _ => None,
        }),
        Query::Q2 => count_rows(events, |e| match e {
            Event::Bid(b) if (b.auction as u64).is_multiple_of(123) => Some(Q2Row {
                auction: b.auction as u64,
                price: b.price as u64,
            }),
            _ => None,
        }),
        Query::Q3 => q3(events),
        Query::Q4 => q4(events),
        Query::Q5 => q5(events),
        Query::Q6 => q6(events),
        Query::Q7 => q7(events),
        Query::Q8 => q8(events),
        Query::Q9 => q9(events),
        Query::Q10 => special::q10(events),
        Query::Q11 => q11(events),
        Query::Q12 => special::q12(events),
        Query::Q13 => special::q13(events),
        Query::Q14 => stateless_udf::q14(events),
        Query::Q15 => daily_stats::q15(events),
        Query::Q16 => daily_stats::q16(events),
        Query::Q17 => daily_stats::q17(events),
        Query::Q18 => latest_and_top::q18(events),
        Query::Q19 => latest_and_top::q19(events),
        Query::Q20 => latest_and_top::q20(events),
        Query::Q21 => stateless_udf::q21(events),
        Query::Q22 => stateless_udf::q22(events),
    }
}

fn count_rows<R>(events: Vec<Record<Event>>, f: impl Fn(Event) -> Option<R>) -> u64 {
    let mut rows = 0;
    for (_, e) in events {
        if let Some(row) = f(e) {
            black_box(&row);
            rows += 1;
        }
    }
    rows
}

/// q5 by 2-second panes of per-auction counts; a window is the sum of its five panes.
fn q5(events: Vec<Record<Event>>) -> u64 {
    const SIZE: u64 = 10_000;
    const SLIDE: u64 = 2_000;
    let mut panes: BTreeMap<u64, FxHashMap<u64, u64>> = BTreeMap::new();
    let mut rows = 0;
    let mut next_start = 0;
    let mut fire = |panes: &mut BTreeMap<u64, FxHashMap<u64, u64>>, until: u64| {
        // fire, in order, every window [s, s + SIZE) with s + SIZE <= until that holds a pane
        while let Some(&first) = panes.keys().next() {
            let start = if first >= SIZE {
                ((first - SIZE) / SLIDE + 1) * SLIDE
            } else {
                0
            }
            .max(next_start);
            if start + SIZE > until {
                break;
            }
            let mut counts: FxHashMap<u64, u64> = FxHashMap::default();
            for (_, pane) in panes.range(start..start + SIZE) {
                for (&auction, &n) in pane {
                    *counts.entry(auction).or_default() += n;
                }
            }
            let max = counts.values().copied().max().unwrap_or(0);
            rows += counts.values().filter(|&&n| n == max).count() as u64;
            next_start = start + SLIDE;
            while panes
                .first_key_value()
                .is_some_and(|(&p, _)| p < next_start)
            {
                panes.pop_first();
            }
        }
    };
    for (t, e) in events {
        if let Event::Bid(b) = e {
            fire(&mut panes, t);
            *panes
                .entry(t / SLIDE * SLIDE)
                .or_default()
                .entry(b.auction as u64)
                .or_default() += 1;
        }
    }
    fire(&mut panes, u64::MAX);
    rows
}

/// q7 over in-order bids: the running maximum of the current 10 s window, with its ties.
fn q7(events: Vec<Record<Event>>) -> u64 {
    const SIZE: u64 = 10_000;
    let mut window = None;
    let mut best: Vec<eddy_connectors::nexmark::Bid> = Vec::new();
    let mut rows = 0;
    for (t, e) in events {
        if let Event::Bid(b) = e {
            let w = t / SIZE;
            if window != Some(w) {
                rows += best.len() as u64;
                black_box(&best);
                best.clear();
                window = Some(w);
            }
            match best.first().map(|x| b.price.cmp(&x.price)) {
                None | Some(std::cmp::Ordering::Greater) => {
                    best.clear();
                    best.push(b);
                }
                Some(std::cmp::Ordering::Equal) => best.push(b),
                Some(std::cmp::Ordering::Less) => {}
            }
        }
    }
    rows + best.len() as u64
}

/// q3 as a symmetric hash join of the qualifying people and auctions, over all time.
fn q3(events: Vec<Record<Event>>) -> u64 {
    let mut people: FxHashMap<usize, (String, String, String)> = FxHashMap::default();
    let mut auctions: FxHashMap<usize, Vec<usize>> = FxHashMap::default();
    let mut rows = 0;
    for (_, e) in events {
        match e {
            Event::Person(p) if q3_state(&p.state) => {
                for id in auctions.get(&p.id).into_iter().flatten() {
                    black_box((&p.name, &p.city, &p.state, id));
                    rows += 1;
                }
                people.insert(p.id, (p.name, p.city, p.state));
            }
            Event::Auction(a) if a.category == Q3_CATEGORY => {
                if let Some(person) = people.get(&a.seller) {
                    black_box((person, a.id));
                    rows += 1;
                }
                auctions.entry(a.seller).or_default().push(a.id);
            }
            _ => {}
        }
    }
    rows
}

/// q8 over in-order events: per 10 s window, the people created in it who also created an
/// auction in it.
fn q8(events: Vec<Record<Event>>) -> u64 {
    const SIZE: u64 = 10_000;
    let mut window = None;
    let mut people: FxHashMap<usize, String> = FxHashMap::default();
    let mut sellers: rustc_hash::FxHashSet<usize> = Default::default();
    let mut rows = 0;
    let mut close = |people: &mut FxHashMap<usize, String>,
                     sellers: &mut rustc_hash::FxHashSet<usize>| {
        for (id, name) in people.drain() {
            if sellers.contains(&id) {
                black_box(&name);
                rows += 1;
            }
        }
        sellers.clear();
    };
    for (t, e) in events {
        let w = t / SIZE;
        if window != Some(w) {
            close(&mut people, &mut sellers);
            window = Some(w);
        }
        match e {
            Event::Person(p) => {
                people.insert(p.id, p.name);
            }
            Event::Auction(a) => {
                sellers.insert(a.seller);
            }
            Event::Bid(_) => {}
        }
    }
    close(&mut people, &mut sellers);
    rows
}

/// An open auction of the q4, q6 and q9 loops: what they group by, its lifetime, and the
/// highest price bid in it so far.
struct OpenAuction {
    category: usize,
    seller: usize,
    opened: u64,
    expires: u64,
    best: Option<usize>,
}

impl OpenAuction {
    /// A bid at `date_time`: it may win if made within the auction's lifetime.
    fn bid(&mut self, date_time: u64, price: usize) {
        if (self.opened..=self.expires).contains(&date_time) && self.best.is_none_or(|p| price > p)
        {
            self.best = Some(price);
        }
    }
}

/// Runs in-order events through the open auctions and hands each auction that had a bid in its
/// lifetime, with its winning price, to `closed` once time passes its expiry — in order of
/// expiry, then auction id, as the pipeline closes them.
fn winning_prices(events: Vec<Record<Event>>, mut closed: impl FnMut(&OpenAuction, usize)) {
    let mut open: FxHashMap<usize, OpenAuction> = FxHashMap::default();
    let mut expiring: BTreeSet<(u64, usize)> = BTreeSet::new();
    let mut close_before = |t: u64,
                            open: &mut FxHashMap<usize, OpenAuction>,
                            expiring: &mut BTreeSet<(u64, usize)>| {
        while let Some(&(expires, id)) = expiring.first() {
            if expires >= t {
                break;
            }
            expiring.pop_first();
            if let Some(auction) = open.remove(&id) {
                if let Some(price) = auction.best {
                    closed(&auction, price);
                }
            }
        }
    };
    // bids on auctions not seen yet, at the current time: the pipeline orders an auction
    // before the bids of the same millisecond, the generator does not always
    let mut early_bids: Vec<(usize, usize)> = Vec::new(); // (auction, price)
    let mut now = 0;
    for (t, e) in events {
        close_before(t, &mut open, &mut expiring);
        if t != now {
            early_bids.clear();
            now = t;
        }
        match e {
            Event::Auction(a) => {
                expiring.insert((a.expires, a.id));
                let mut auction = OpenAuction {
                    category: a.category,
                    seller: a.seller,
                    opened: a.date_time,
                    expires: a.expires,
                    best: None,
                };
                for &(_, price) in early_bids.iter().filter(|b| b.0 == a.id) {
                    auction.bid(t, price);
                }
                open.insert(a.id, auction);
            }
            Event::Bid(b) => match open.get_mut(&b.auction) {
                Some(auction) => auction.bid(b.date_time, b.price),
                None => early_bids.push((b.auction, b.price)),
            },
            Event::Person(_) => {}
        }
    }
    close_before(u64::MAX, &mut open, &mut expiring);
}

/// How many change rows replacing `old` by `new` takes: a retraction and an insertion, only
/// the insertion for a first value, nothing when the value stays.
fn changes(old: Option<usize>, new: usize) -> u64 {
    match old {
        Some(old) if old == new => 0,
        Some(_) => 2,
        None => 1,
    }
}

/// q4: the running integer average of the winning prices per category, as a change log.
fn q4(events: Vec<Record<Event>>) -> u64 {
    let mut per_category: FxHashMap<usize, (usize, usize)> = FxHashMap::default();
    let mut rows = 0;
    winning_prices(events, |auction, price| {
        let (sum, count) = per_category.entry(auction.category).or_default();
        let old = (*count > 0).then(|| *sum / *count);
        *sum += price;
        *count += 1;
        rows += changes(old, black_box(*sum / *count));
    });
    rows
}

/// q6: the integer average of each seller's last 10 winning prices, as a change log.
fn q6(events: Vec<Record<Event>>) -> u64 {
    let mut per_seller: FxHashMap<usize, VecDeque<usize>> = FxHashMap::default();
    let mut rows = 0;
    let avg = |prices: &VecDeque<usize>| prices.iter().sum::<usize>() / prices.len();
    winning_prices(events, |auction, price| {
        let prices = per_seller.entry(auction.seller).or_default();
        let old = (!prices.is_empty()).then(|| avg(prices));
        prices.push_back(price);
        if prices.len() > Q6_LAST {
            prices.pop_front();
        }
        rows += changes(old, black_box(avg(prices)));
    });
    rows
}

/// q9: per auction, the highest bid made between its start and its expiry.
fn q9(events: Vec<Record<Event>>) -> u64 {
    let mut rows = 0;
    winning_prices(events, |auction, price| {
        black_box((auction.expires, price));
        rows += 1;
    });
    rows
}

/// q11: per bidder, sessions of bids less than 10 s apart.
fn q11(events: Vec<Record<Event>>) -> u64 {
    const GAP: u64 = 10_000;
    let mut last: FxHashMap<usize, (u64, u64)> = FxHashMap::default(); // bidder -> (last, count)
    let mut rows = 0;
    for (t, e) in events {
        if let Event::Bid(b) = e {
            match last.get_mut(&b.bidder) {
                Some((at, n)) if t < *at + GAP => {
                    *at = t;
                    *n += 1;
                }
                Some(session) => {
                    black_box(&session);
                    rows += 1;
                    *session = (t, 1);
                }
                None => {
                    last.insert(b.bidder, (t, 1));
                }
            }
        }
    }
    rows + last.len() as u64
}
