//! q8, monitor new users: who opened an account and created an auction in the same 10-second
//! tumbling window? Emits each such person once per window, with the window's start.
//!
//! As Flink's Nexmark q8: people grouped by `(id, name, window)` are joined with auctions
//! grouped by `(seller, window)` on `id = seller` and the same window, so a person who created
//! several auctions in the window appears once. Here both groupings are keyed windows counting
//! records (their results, stamped `end - 1`, fall in the window they describe), and the join
//! is a windowed equi-join over the same tumbling windows. Unlike Flink, which emits
//! `starttime` as a SQL timestamp, `starttime` is in ms since the Unix epoch.

use eddy_connectors::nexmark::{timestamp_ms as ms, Event};
use eddy_engine::Stream;
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

/// q8's window length (ms).
pub const Q8_WINDOW: u64 = 10_000;

/// A q8 row: a person who registered and created an auction in one window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q8Row {
    /// The person's id.
    pub id: u64,
    /// The person's name.
    pub name: String,
    /// The window's start (ms).
    pub starttime: i64,
}

impl Q8Row {
    /// Fields holding ms timestamps.
    pub const TIMESTAMP_FIELDS: &'static [&'static str] = &["starttime"];
}

/// q8: new people who created an auction in their first window.
pub fn q8(events: Stream<Event>) -> Stream<Q8Row> {
    let window = WindowSpec::tumbling(Q8_WINDOW);
    // People and sellers split in one pass: the bids, most of the stream, are dropped before
    // the two sides are read.
    let (people, sellers) = events.split("people_and_sellers", |e| match e {
        Event::Person(p) => Some(Split::First((p.id as u64, p.name))),
        Event::Auction(a) => Some(Split::Second(a.seller as u64)),
        Event::Bid(_) => None,
    });
    let people = people
        .key_by("people_by_id", |p: &(u64, String)| p.clone())
        .window("person_windows", window, Count)
        .key_by("person_windows_by_id", |w: &WindowResult<_, u64>| w.key.0);
    let sellers = sellers
        .key_by("by_seller", |seller: &u64| *seller)
        .window("seller_windows", window, Count)
        .key_by("seller_windows_by_seller", |w: &WindowResult<u64, u64>| {
            w.key
        });
    people
        .window_join("new_users", sellers, window)
        .map("q8", |joined| Q8Row {
            id: joined.key,
            name: joined.a.key.1,
            starttime: ms(joined.start),
        })
}
