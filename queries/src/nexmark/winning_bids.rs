//! q9, winning bids: each auction with its winning bid, the highest bid made while the auction
//! was open (`auction.date_time ≤ bid.date_time ≤ auction.expires`). Among equal prices the
//! earliest bid wins, then the lowest bidder id, then the smallest `extra` (Flink's q9 orders
//! by price descending then date_time ascending, and leaves further ties to chance). An auction
//! without such a bid has no row, as in Flink's inner join.
//!
//! The winning bid is found by a keyed process function per auction ([`winning_bids`], shared
//! with q4 and q6): the auction's record opens it and sets a timer at its expiry; each bid in
//! its lifetime may become the best; when the watermark passes the expiry the timer emits the
//! winner, stamped with the expiry, and forgets the auction. Bids processed before their
//! auction (earlier in event time) or after its expiry are outside its lifetime and ignored, so
//! state holds the open auctions only. Flink computes q9 as an updating join and top-1; here
//! the result is final (each auction once, when it closes), which is the same set of rows.

use std::cmp::Reverse;

use eddy_connectors::nexmark::{Auction, Event};
use eddy_engine::{Change, Stream};
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

use eddy_connectors::nexmark::timestamp_ms as ms;

/// A q9 row: an auction's fields, then its winning bid's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q9Row {
    /// Auction id.
    pub id: u64,
    /// Item name.
    pub item_name: String,
    /// Item description.
    pub description: String,
    /// Initial bid.
    pub initial_bid: u64,
    /// Reserve price.
    pub reserve: u64,
    /// When the auction opened (ms).
    pub date_time: i64,
    /// When the auction closes (ms).
    pub expires: i64,
    /// The seller's person id.
    pub seller: u64,
    /// Category id.
    pub category: u64,
    /// The auction's padding.
    pub extra: String,
    /// The winning bid's auction id (equal to `id`).
    pub auction: u64,
    /// The winning bidder's person id.
    pub bidder: u64,
    /// The winning price.
    pub price: u64,
    /// When the winning bid was made (ms).
    pub bid_date_time: i64,
    /// The winning bid's padding.
    pub bid_extra: String,
}

impl Q9Row {
    /// Fields holding ms timestamps.
    pub const TIMESTAMP_FIELDS: &'static [&'static str] =
        &["date_time", "expires", "bid_date_time"];
}

/// The auction fields the winning-bid queries use. `id` first: closed auctions of one instant
/// are handled in order of id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct AuctionInfo {
    pub(crate) id: u64,
    pub(crate) item_name: String,
    pub(crate) description: String,
    pub(crate) initial_bid: u64,
    pub(crate) reserve: u64,
    pub(crate) date_time: u64,
    pub(crate) expires: u64,
    pub(crate) seller: u64,
    pub(crate) category: u64,
    pub(crate) extra: String,
}

/// The bid fields the winning-bid queries use.
impl From<Auction> for AuctionInfo {
    /// Moves the auction's strings into the record.
    fn from(a: Auction) -> Self {
        AuctionInfo {
            id: a.id as u64,
            item_name: a.item_name,
            description: a.description,
            initial_bid: a.initial_bid as u64,
            reserve: a.reserve as u64,
            date_time: a.date_time,
            expires: a.expires,
            seller: a.seller as u64,
            category: a.category as u64,
            extra: a.extra,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct BidInfo {
    pub(crate) auction: u64,
    pub(crate) bidder: u64,
    pub(crate) price: u64,
    pub(crate) date_time: u64,
    pub(crate) extra: String,
}

impl BidInfo {
    /// The winner is the bid with the smallest rank: highest price, earliest, lowest bidder,
    /// smallest `extra`.
    fn rank(&self) -> (Reverse<u64>, u64, u64, &str) {
        (
            Reverse(self.price),
            self.date_time,
            self.bidder,
            &self.extra,
        )
    }
}

/// An auction opening or a bid, keyed by auction id. Openings order before bids, so a bid at
/// the very ms an auction opens is handled after the opening.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum AuctionEvent {
    Opened(AuctionInfo),
    Bid(BidInfo),
}

/// A closed auction and its winning bid.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct WinningBid {
    pub(crate) auction: AuctionInfo,
    pub(crate) bid: BidInfo,
}

/// An open auction and its best bid so far (`Default`: no auction open under this id).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct OpenAuction {
    auction: Option<AuctionInfo>,
    best: Option<BidInfo>,
}

/// Keeps each open auction's best bid; emits the winner when the auction expires.
#[derive(Clone)]
struct PickWinner;

impl KeyedProcess<u64, AuctionEvent> for PickWinner {
    type State = OpenAuction;
    type Out = WinningBid;

    fn on_record(
        &mut self,
        _id: &u64,
        _t: u64,
        event: AuctionEvent,
        open: &mut OpenAuction,
        ctx: &mut ProcessContext<WinningBid>,
    ) {
        match event {
            AuctionEvent::Opened(auction) => {
                ctx.set_timer(auction.expires);
                open.auction = Some(auction);
            }
            AuctionEvent::Bid(bid) => {
                let Some(auction) = &open.auction else { return };
                let in_lifetime = (auction.date_time..=auction.expires).contains(&bid.date_time);
                if in_lifetime && open.best.as_ref().is_none_or(|b| bid.rank() < b.rank()) {
                    open.best = Some(bid);
                }
            }
        }
    }

    fn on_timer(
        &mut self,
        _id: &u64,
        _t: u64,
        open: &mut OpenAuction,
        ctx: &mut ProcessContext<WinningBid>,
    ) {
        if let (Some(auction), Some(bid)) = (open.auction.take(), open.best.take()) {
            ctx.emit(WinningBid { auction, bid });
        }
        ctx.clear_state();
    }
}

/// Each auction that had a bid in its lifetime, with its winning bid, emitted when the
/// watermark passes the auction's expiry, with the expiry as event time. Stages:
/// `auctions_and_bids`, `by_auction`, `winning_bids`.
pub(crate) fn winning_bids(events: Stream<Event>) -> Stream<WinningBid> {
    events
        .flat_map("auctions_and_bids", |e| match e {
            Event::Auction(a) => Some(AuctionEvent::Opened(AuctionInfo::from(a))),
            Event::Bid(b) => Some(AuctionEvent::Bid(BidInfo {
                auction: b.auction as u64,
                bidder: b.bidder as u64,
                price: b.price as u64,
                date_time: b.date_time,
                extra: b.extra,
            })),
            Event::Person(_) => None,
        })
        .key_by("by_auction", |e: &AuctionEvent| match e {
            AuctionEvent::Opened(a) => a.id,
            AuctionEvent::Bid(b) => b.auction,
        })
        .process("winning_bids", PickWinner)
}

/// q9: every auction with its winning bid, when it closes.
pub fn q9(events: Stream<Event>) -> Stream<Q9Row> {
    winning_bids(events).map("q9", |w| Q9Row {
        id: w.auction.id,
        item_name: w.auction.item_name,
        description: w.auction.description,
        initial_bid: w.auction.initial_bid,
        reserve: w.auction.reserve,
        date_time: ms(w.auction.date_time),
        expires: ms(w.auction.expires),
        seller: w.auction.seller,
        category: w.auction.category,
        extra: w.auction.extra,
        auction: w.bid.auction,
        bidder: w.bid.bidder,
        price: w.bid.price,
        bid_date_time: ms(w.bid.date_time),
        bid_extra: w.bid.extra,
    })
}

/// Emits the change of an updating row from `old` to `new` (retract the old row, insert the
/// new one), or nothing when the value did not change; `row` makes a row of a value. Shared by
/// q4 and q6.
pub(crate) fn replace<T, R>(
    ctx: &mut ProcessContext<Change<R>>,
    old: Option<T>,
    new: Option<T>,
    row: impl Fn(T) -> R,
) where
    T: PartialEq,
{
    if old == new {
        return;
    }
    if let Some(old) = old {
        ctx.emit(Change::retract(row(old)));
    }
    if let Some(new) = new {
        ctx.emit(Change::insert(row(new)));
    }
}
