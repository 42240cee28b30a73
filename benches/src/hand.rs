//! Hand-written loops: each query as the plainest fast Rust over a `Vec` of in-order events,
//! consuming it (records are moved, as in the pipeline). They return how many rows the query
//! produced, so the optimizer cannot drop the work, and so the runner can check they agree
//! with the pipeline.

use std::collections::BTreeMap;
use std::hint::black_box;

use eddy_connectors::nexmark::{BidRow, Event};
use eddy_engine::Record;
use eddy_queries::nexmark::{Q1Row, Q2Row, Query};
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
        Query::Q5 => q5(events),
        Query::Q7 => q7(events),
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
