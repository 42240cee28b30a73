//! Hand loops for q18 (last bid per bidder and auction), q19 (each auction's top-10 bids with
//! their rank) and q20 (bids on category-10 auctions with their auction), over in-order
//! events. q18 and q19 count change rows as the pipeline emits them: per key and millisecond,
//! the difference between its result before and after that millisecond's bids.

use std::cmp::{Ordering, Reverse};
use std::hint::black_box;
use std::rc::Rc;

use eddy_connectors::nexmark::{Auction, Bid, Event};
use eddy_engine::Record;
use eddy_queries::nexmark::{Q19_TOP, Q20_CATEGORY};
use rustc_hash::FxHashMap;

/// A key's last bid and the millisecond it last changed.
struct Last {
    bid: Bid,
    changed_at: u64,
}

/// How q18 orders a pair's bids of one millisecond: the smaller row first.
fn tie(x: &Bid) -> (usize, &str, &str, &str) {
    (x.price, &x.channel, &x.url, &x.extra)
}

/// q18: a bid replaces its pair's last bid if later, or as late and smaller (price, channel,
/// url, extra); a pair's first bid inserts one row, a replacement retracts and inserts — once
/// per millisecond, however many bids of the pair it holds.
pub(super) fn q18(events: Vec<Record<Event>>) -> u64 {
    let mut last: FxHashMap<(usize, usize), Last> = FxHashMap::default();
    let mut rows = 0;
    for (t, e) in events {
        let Event::Bid(b) = e else { continue };
        match last.get_mut(&(b.bidder, b.auction)) {
            None => {
                rows += 1;
                last.insert(
                    (b.bidder, b.auction),
                    Last {
                        bid: b,
                        changed_at: t,
                    },
                );
            }
            Some(kept) => {
                let later = b.date_time > kept.bid.date_time
                    || (b.date_time == kept.bid.date_time && tie(&b) < tie(&kept.bid));
                if later {
                    if kept.changed_at != t {
                        rows += 2;
                        kept.changed_at = t;
                    }
                    kept.bid = black_box(b);
                }
            }
        }
    }
    rows
}

/// q19's ranking of two bids of one auction: higher price, earlier, then the smaller row.
fn rank(a: &Bid, b: &Bid) -> Ordering {
    rank_key(a).cmp(&rank_key(b))
}

/// The key [`rank`] compares.
fn rank_key(x: &Bid) -> (Reverse<usize>, u64, usize, &str, &str, &str) {
    (
        Reverse(x.price),
        x.date_time,
        x.bidder,
        &x.channel,
        &x.url,
        &x.extra,
    )
}

/// An auction's top bids, and its ranking as shown before the current millisecond changed it.
#[derive(Default)]
struct Top {
    bids: Vec<Rc<Bid>>,
    shown: Option<Vec<Rc<Bid>>>,
}

/// The change rows between an auction's ranking as shown and as it stands: a retraction and
/// an insertion per rank that changed.
fn rank_changes(shown: &[Rc<Bid>], now: &[Rc<Bid>]) -> u64 {
    (0..shown.len().max(now.len()))
        .map(|i| match (shown.get(i), now.get(i)) {
            (Some(a), Some(b)) if Rc::ptr_eq(a, b) || a == b => 0,
            (a, b) => a.is_some() as u64 + b.is_some() as u64,
        })
        .sum()
}

/// q19: per auction the 10 best bids; at the end of each millisecond, the ranks that changed.
pub(super) fn q19(events: Vec<Record<Event>>) -> u64 {
    let mut tops: FxHashMap<usize, Top> = FxHashMap::default();
    let mut touched: Vec<usize> = Vec::new();
    let mut rows = 0;
    let mut now = 0;
    let mut flush = |tops: &mut FxHashMap<usize, Top>, touched: &mut Vec<usize>| {
        for auction in touched.drain(..) {
            if let Some(top) = tops.get_mut(&auction) {
                if let Some(shown) = top.shown.take() {
                    rows += rank_changes(&shown, &top.bids);
                }
            }
        }
    };
    for (t, e) in events {
        let Event::Bid(b) = e else { continue };
        if t != now {
            flush(&mut tops, &mut touched);
            now = t;
        }
        let top = tops.entry(b.auction).or_default();
        let enters =
            top.bids.len() < Q19_TOP || top.bids.last().is_some_and(|last| rank(&b, last).is_lt());
        if !enters {
            continue;
        }
        if top.shown.is_none() {
            top.shown = Some(top.bids.clone());
            touched.push(b.auction);
        }
        let at = top.bids.partition_point(|x| rank(x, &b).is_le());
        top.bids.insert(at, Rc::new(b));
        top.bids.truncate(Q19_TOP);
    }
    flush(&mut tops, &mut touched);
    rows
}

/// What q20 knows of an auction id.
enum Known {
    Waiting(Vec<Bid>),
    Matching(Auction),
    Other,
}

/// q20: a hash join of bids and category-10 auctions; bids on auctions not seen yet wait.
pub(super) fn q20(events: Vec<Record<Event>>) -> u64 {
    let mut known: FxHashMap<usize, Known> = FxHashMap::default();
    let mut rows = 0;
    for (_, e) in events {
        match e {
            Event::Auction(a) => {
                let matching = a.category as u64 == Q20_CATEGORY;
                let id = a.id;
                let now = if matching {
                    Known::Matching(a)
                } else {
                    Known::Other
                };
                if let Some(Known::Waiting(bids)) = known.insert(id, now) {
                    if let Some(Known::Matching(a)) = known.get(&id) {
                        for b in bids {
                            black_box((&b, a));
                            rows += 1;
                        }
                    }
                }
            }
            Event::Bid(b) => match known.get_mut(&b.auction) {
                Some(Known::Matching(a)) => {
                    black_box((&b, &*a));
                    rows += 1;
                }
                Some(Known::Other) => {}
                Some(Known::Waiting(bids)) => bids.push(b),
                None => {
                    known.insert(b.auction, Known::Waiting(vec![b]));
                }
            },
            Event::Person(_) => {}
        }
    }
    rows
}
