//! q18, find last bid: for each bidder and auction, the bidder's last bid on that auction —
//! Flink's Nexmark q18:
//!
//! ```sql
//! SELECT auction, bidder, price, channel, url, dateTime, extra
//! FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY dateTime DESC)
//!       AS rank_number FROM bid)
//! WHERE rank_number <= 1;
//! ```
//!
//! An updating result, as in Flink: the bids keyed by `(bidder, auction)` go through
//! [`Keyed::top_n_updating`] with `n = 1` and the bid's time as the score. When the watermark
//! passes a later bid of the pair, the change log retracts the previous last bid and inserts
//! the new one (stamped with the new bid's time); summing the diffs gives each pair's last bid.
//! Where ours differs: Flink leaves ties (two bids of a pair in the same millisecond) to
//! arrival order; here the smaller row wins — the lower price, then channel, url and extra in
//! their order — so the result is the same at any worker count. State: one bid per pair
//! seen, forever (as Flink without a state TTL).

use eddy_connectors::nexmark::{BidRow, Event};
use eddy_engine::{Change, Stream};
use eddy_operators::prelude::*;

/// A q18 row: a bid, every column (also the bid half of q19's and q20's rows).
pub type Q18Row = BidRow;

/// Every bid as a full row (the first stage of q18, q19 and q20).
pub(crate) fn bid_rows(events: Stream<Event>, name: &str) -> Stream<Q18Row> {
    events.flat_map(name, |e| match e {
        Event::Bid(b) => Some(Q18Row::from(b)),
        _ => None,
    })
}

/// q18: each (bidder, auction) pair's last bid, as a change log.
pub fn q18(events: Stream<Event>) -> Stream<Change<Q18Row>> {
    bid_rows(events, "q18_bids")
        .key_by("by_bidder_auction", |b: &Q18Row| (b.bidder, b.auction))
        .top_n_updating("last_bid", 1, |b: &Q18Row| b.date_time)
        .map("q18", |c| Change {
            row: c.row.value,
            diff: c.diff,
        })
}
