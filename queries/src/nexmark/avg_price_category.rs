//! q4, average closing price per category: for each category, the average of the closing
//! prices of its closed auctions, where an auction's closing price is its winning bid's price
//! (q9's winning bid: the highest bid within the auction's lifetime; an auction without one has
//! no closing price and does not count). As in Flink's q4 (`AVG` over `BIGINT`), the average is
//! an integer, rounded down.
//!
//! An updating result: each time an auction closes (when the watermark passes its expiry), its
//! category's row is replaced: the old average retracted, the new one inserted (nothing when it
//! does not change). The change log consolidates to one row per category. State: a sum and a
//! count per category seen, never dropped (categories are few).

use eddy_connectors::nexmark::Event;
use eddy_engine::{Change, Stream};
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

use super::winning_bids::{replace, winning_bids, WinningBid};

/// A q4 row: a category and the average closing price of its closed auctions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q4Row {
    /// Category id.
    pub category: u64,
    /// The average closing price (integer, rounded down).
    pub avg_price: u64,
}

impl Q4Row {
    /// Fields holding ms timestamps (none).
    pub const TIMESTAMP_FIELDS: &'static [&'static str] = &[];
}

/// The closing prices of a category so far.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Closed {
    sum: u64,
    count: u64,
}

impl Closed {
    fn avg(&self) -> Option<u64> {
        (self.count > 0).then(|| self.sum / self.count)
    }
}

/// Folds each closed auction into its category's average and emits the change.
#[derive(Clone)]
struct AveragePerCategory;

impl KeyedProcess<u64, WinningBid> for AveragePerCategory {
    type State = Closed;
    type Out = Change<Q4Row>;

    fn on_record(
        &mut self,
        category: &u64,
        _t: u64,
        won: WinningBid,
        closed: &mut Closed,
        ctx: &mut ProcessContext<Change<Q4Row>>,
    ) {
        let old = closed.avg();
        closed.sum = closed.sum.saturating_add(won.bid.price);
        closed.count += 1;
        let new = closed.avg();
        replace(ctx, old, new, |avg_price| Q4Row {
            category: *category,
            avg_price,
        });
    }
}

/// q4: the average closing price per category, as a change log.
pub fn q4(events: Stream<Event>) -> Stream<Change<Q4Row>> {
    winning_bids(events)
        .key_by("by_category", |w: &WinningBid| w.auction.category)
        .process("avg_price", AveragePerCategory)
}
