//! q20, expand bid with auction: every bid on an auction in category 10, with all the bid's
//! and the auction's columns — Flink's Nexmark q20:
//!
//! ```sql
//! SELECT auction, bidder, price, channel, url, B.dateTime, B.extra,
//!        itemName, description, initialBid, reserve, A.dateTime, expires, seller, category,
//!        A.extra
//! FROM bid AS B INNER JOIN auction AS A ON B.auction = A.id
//! WHERE A.category = 10;
//! ```
//!
//! The same rows, append-only: a keyed process per auction id ([`ExpandBid`]) remembers,
//! for each auction seen, whether it is in category 10 (then the auction itself, else a
//! marker); a bid on a category-10 auction becomes a row at once, a bid on another auction is
//! dropped, and a bid on an auction not seen yet waits for it. The generator makes such bids:
//! a bid may name any of the next 10 auction ids, up to about 200 ms before the auction
//! exists. Each row is emitted once, when the watermark passes the later of the bid and its
//! auction, with that time as event time, and never retracted — so no change log is needed.
//! Where ours differs: Flink's regular join keeps every bid and every auction in state
//! forever; here the state is one entry per auction id (the category-10 auctions' columns,
//! a marker for the others; kept forever, as bids after an auction's expiry still match)
//! plus the bids on auctions not seen yet. A bid or auction behind the watermark it arrives
//! at is late (the keyed process's rule), where Flink's join would still take it.

use eddy_connectors::nexmark::Event;
use eddy_engine::Stream;
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

use eddy_connectors::nexmark::timestamp_ms as ms;

use super::last_bid::Q18Row;
use super::winning_bids::AuctionInfo;

/// q20's auction category.
pub const Q20_CATEGORY: u64 = 10;

/// A q20 row: a bid's columns, then its auction's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q20Row {
    /// The auction's id.
    pub auction: u64,
    /// The bidder's person id.
    pub bidder: u64,
    /// Price bid.
    pub price: u64,
    /// Channel the bid came through.
    pub channel: String,
    /// URL of the bid.
    pub url: String,
    /// When the bid was made (ms).
    pub bid_date_time: i64,
    /// The bid's padding.
    pub bid_extra: String,
    /// Item name.
    pub item_name: String,
    /// Item description.
    pub description: String,
    /// Initial bid.
    pub initial_bid: u64,
    /// Reserve price.
    pub reserve: u64,
    /// When the auction opened (ms).
    pub auction_date_time: i64,
    /// When the auction closes (ms).
    pub expires: i64,
    /// The seller's person id.
    pub seller: u64,
    /// Category id: [`Q20_CATEGORY`].
    pub category: u64,
    /// The auction's padding.
    pub auction_extra: String,
}

impl Q20Row {
    /// Fields holding ms timestamps.
    pub const TIMESTAMP_FIELDS: &'static [&'static str] =
        &["bid_date_time", "auction_date_time", "expires"];

    /// The row of `bid` on `auction`.
    fn new(bid: Q18Row, auction: AuctionInfo) -> Self {
        Q20Row {
            auction: bid.auction,
            bidder: bid.bidder,
            price: bid.price,
            channel: bid.channel,
            url: bid.url,
            bid_date_time: bid.date_time,
            bid_extra: bid.extra,
            item_name: auction.item_name,
            description: auction.description,
            initial_bid: auction.initial_bid,
            reserve: auction.reserve,
            auction_date_time: ms(auction.date_time),
            expires: ms(auction.expires),
            seller: auction.seller,
            category: auction.category,
            auction_extra: auction.extra,
        }
    }
}

/// An auction (its id, and its columns if in category 10) or a bid, keyed by auction id.
/// Auctions order first: a bid at the very millisecond its auction opens does not wait.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum AuctionOrBid {
    Auction(u64, Option<AuctionInfo>),
    Bid(Q18Row),
}

/// What one auction id holds.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
enum Known {
    /// Nothing seen under this id.
    #[default]
    Unseen,
    /// Bids on this id, waiting for its auction.
    Waiting(Vec<Q18Row>),
    /// The auction is in category 10.
    Matching(AuctionInfo),
    /// The auction is in another category.
    Other,
}

/// Joins each bid with its auction, whichever arrives first.
#[derive(Clone)]
struct ExpandBid;

impl KeyedProcess<u64, AuctionOrBid> for ExpandBid {
    type State = Known;
    type Out = Q20Row;

    fn on_record(
        &mut self,
        _id: &u64,
        _t: u64,
        event: AuctionOrBid,
        known: &mut Known,
        ctx: &mut ProcessContext<Q20Row>,
    ) {
        match (event, &mut *known) {
            (AuctionOrBid::Bid(bid), Known::Matching(auction)) => {
                ctx.emit(Q20Row::new(bid, auction.clone()));
            }
            (AuctionOrBid::Bid(_), Known::Other) => {}
            (AuctionOrBid::Bid(bid), Known::Waiting(bids)) => bids.push(bid),
            (AuctionOrBid::Bid(bid), Known::Unseen) => *known = Known::Waiting(vec![bid]),
            (AuctionOrBid::Auction(_, auction), _) => {
                if let (Known::Waiting(bids), Some(auction)) = (std::mem::take(known), &auction) {
                    for bid in bids {
                        ctx.emit(Q20Row::new(bid, auction.clone()));
                    }
                }
                *known = auction.map_or(Known::Other, Known::Matching);
            }
        }
    }
}

/// q20: every bid on a category-10 auction, with its auction.
pub fn q20(events: Stream<Event>) -> Stream<Q20Row> {
    events
        .flat_map("auctions_and_bids", |e| match e {
            Event::Auction(a) => Some(AuctionOrBid::Auction(
                a.id as u64,
                (a.category as u64 == Q20_CATEGORY).then(|| AuctionInfo::from(a)),
            )),
            Event::Bid(b) => Some(AuctionOrBid::Bid(Q18Row::from(b))),
            Event::Person(_) => None,
        })
        .key_by("by_auction", |e: &AuctionOrBid| match e {
            AuctionOrBid::Auction(id, _) => *id,
            AuctionOrBid::Bid(b) => b.auction,
        })
        .process("expand_bid", ExpandBid)
}
