//! q0, q1, q2: per-record queries.
//!
//! - q0 (pass-through) emits every bid unchanged: it measures the cost of moving records.
//! - q1 (currency conversion) emits every bid with its price converted from dollars to euros,
//!   `price × 0.908`.
//! - q2 (selection) emits the auction and price of the bids whose auction id is a multiple of
//!   123.
//!
//! Each is one stage from events to rows: picking the bids and shaping the row in one pass.

use eddy_connectors::nexmark::{BidRow, Event};
use eddy_engine::Stream;
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

use eddy_connectors::nexmark::timestamp_ms as ms;

/// A q0 row: the bid.
pub type Q0Row = BidRow;

/// q0: every bid.
pub fn q0(events: Stream<Event>) -> Stream<Q0Row> {
    events.flat_map("q0", |e| match e {
        Event::Bid(b) => Some(BidRow::from(b)),
        _ => None,
    })
}

/// A q1 row: a bid with its price in euros.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Q1Row {
    /// The auction's id.
    pub auction: u64,
    /// The bidder's id.
    pub bidder: u64,
    /// The price in euros: dollars × 0.908.
    pub price: f64,
    /// When the bid was made (ms).
    pub date_time: i64,
    /// Padding.
    pub extra: String,
}

impl Q1Row {
    /// Fields holding ms timestamps.
    pub const TIMESTAMP_FIELDS: &'static [&'static str] = &["date_time"];
}

/// The dollar-to-euro rate of q1.
pub const EUROS_PER_DOLLAR: f64 = 0.908;

/// q1: every bid, price converted to euros.
pub fn q1(events: Stream<Event>) -> Stream<Q1Row> {
    events.flat_map("q1", |e| match e {
        Event::Bid(b) => Some(Q1Row {
            auction: b.auction as u64,
            bidder: b.bidder as u64,
            price: b.price as f64 * EUROS_PER_DOLLAR,
            date_time: ms(b.date_time),
            extra: b.extra,
        }),
        _ => None,
    })
}

/// A q2 row: auction and price.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q2Row {
    /// The auction's id, a multiple of 123.
    pub auction: u64,
    /// The price bid.
    pub price: u64,
}

/// The auction ids q2 selects are multiples of this.
pub const Q2_MODULUS: u64 = 123;

/// q2: bids on auctions whose id is a multiple of 123.
pub fn q2(events: Stream<Event>) -> Stream<Q2Row> {
    events.flat_map("q2", |e| match e {
        Event::Bid(b) if (b.auction as u64).is_multiple_of(Q2_MODULUS) => Some(Q2Row {
            auction: b.auction as u64,
            price: b.price as u64,
        }),
        _ => None,
    })
}
