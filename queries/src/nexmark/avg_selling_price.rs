//! q6, average selling price by seller: for each seller, the average closing price of its last
//! [`Q6_LAST`] closed auctions (fewer while it has closed fewer), an integer rounded down. An
//! auction's closing price is its winning bid's price (q9's winning bid; an auction without one
//! does not count). "Last" is in order of closing: by expiry, then by auction id.
//!
//! This is the original Nexmark q6. Flink's SQL version (`AVG(final) OVER (PARTITION BY seller
//! ORDER BY dateTime ROWS BETWEEN 10 PRECEDING AND CURRENT ROW)`) differs: it averages 11 rows,
//! orders by the bid's time and appends one row per closed auction; here the result is updating,
//! one row per seller: when an auction closes (the watermark passes its expiry) the seller's old
//! average is retracted and the new one inserted (nothing when it does not change). State: the
//! last [`Q6_LAST`] closing prices of each seller seen, never dropped.

use std::collections::VecDeque;

use eddy_connectors::nexmark::Event;
use eddy_engine::{Change, Stream};
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

use super::winning_bids::{replace, winning_bids, WinningBid};

/// How many of a seller's last closed auctions q6 averages.
pub const Q6_LAST: usize = 10;

/// A q6 row: a seller and the average closing price of its last [`Q6_LAST`] closed auctions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q6Row {
    /// The seller's person id.
    pub seller: u64,
    /// The average closing price (integer, rounded down).
    pub avg_price: u64,
}

impl Q6Row {
    /// Fields holding ms timestamps (none).
    pub const TIMESTAMP_FIELDS: &'static [&'static str] = &[];
}

fn avg(prices: &VecDeque<u64>) -> Option<u64> {
    let sum = prices.iter().fold(0u64, |s, p| s.saturating_add(*p));
    (!prices.is_empty()).then(|| sum / prices.len() as u64)
}

/// Keeps each seller's last closing prices and emits the change of their average.
#[derive(Clone)]
struct AverageOfLast;

impl KeyedProcess<u64, WinningBid> for AverageOfLast {
    type State = VecDeque<u64>;
    type Out = Change<Q6Row>;

    fn on_record(
        &mut self,
        seller: &u64,
        _t: u64,
        won: WinningBid,
        prices: &mut VecDeque<u64>,
        ctx: &mut ProcessContext<Change<Q6Row>>,
    ) {
        let old = avg(prices);
        prices.push_back(won.bid.price);
        if prices.len() > Q6_LAST {
            prices.pop_front();
        }
        replace(ctx, old, avg(prices), |avg_price| Q6Row {
            seller: *seller,
            avg_price,
        });
    }
}

/// q6: the average selling price of each seller's last [`Q6_LAST`] auctions, as a change log.
pub fn q6(events: Stream<Event>) -> Stream<Change<Q6Row>> {
    winning_bids(events)
        .key_by("by_seller", |w: &WinningBid| w.auction.seller)
        .process("avg_selling_price", AverageOfLast)
}
