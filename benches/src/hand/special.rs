//! Hand loops of q10 (partitioned log), q12 (processing-time windows) and q13 (side input join).

use std::hint::black_box;

use eddy_connectors::nexmark::Event;
use eddy_engine::{wall_clock_ms, Record};
use eddy_queries::nexmark::{q13_default_table, Q10Row, Q13Row, Q12_WINDOW, Q13_KEYS};
use rustc_hash::FxHashMap;

/// q10: every bid becomes a row (the loop counts them; it writes no files).
pub(super) fn q10(events: Vec<Record<Event>>) -> u64 {
    let mut rows = 0;
    for (_, e) in events {
        if let Event::Bid(b) = e {
            black_box(Q10Row {
                auction: b.auction as u64,
                bidder: b.bidder as u64,
                price: b.price as u64,
                date_time: b.date_time as i64,
                extra: b.extra,
            });
            rows += 1;
        }
    }
    rows
}

/// How many records share one reading of the wall clock (the engine reads it once per batch).
const CLOCK_EVERY: usize = 4096;

/// q12: bids per (bidder, 10 s processing-time window); the rows are the distinct pairs. Like
/// the pipeline's, the count depends on when the loop runs (not deterministic).
pub(super) fn q12(events: Vec<Record<Event>>) -> u64 {
    let mut counts: FxHashMap<(u64, u64), u64> = FxHashMap::default();
    let mut window = 0;
    for (i, (_, e)) in events.into_iter().enumerate() {
        if i % CLOCK_EVERY == 0 {
            let now = wall_clock_ms();
            window = now - now % Q12_WINDOW;
        }
        if let Event::Bid(b) = e {
            *counts.entry((b.bidder as u64, window)).or_default() += 1;
        }
    }
    black_box(&counts);
    counts.len() as u64
}

/// q13: bids whose `auction % 10000` is in the default side table, with its value.
pub(super) fn q13(events: Vec<Record<Event>>) -> u64 {
    let table = q13_default_table();
    let mut rows = 0;
    for (_, e) in events {
        if let Event::Bid(b) = e {
            if let Some(value) = table.get(&(b.auction as u64 % Q13_KEYS)) {
                black_box(Q13Row {
                    auction: b.auction as u64,
                    bidder: b.bidder as u64,
                    price: b.price as u64,
                    date_time: b.date_time as i64,
                    value: value.clone(),
                });
                rows += 1;
            }
        }
    }
    rows
}
