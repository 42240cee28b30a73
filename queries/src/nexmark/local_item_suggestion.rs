//! q3, local item suggestion: who is selling in category 10 in Oregon, Idaho or California?
//! Emits the name, city and state of each such seller with the id of each of their auctions in
//! category 10 — Flink's Nexmark q3:
//!
//! ```sql
//! SELECT P.name, P.city, P.state, A.id
//! FROM auction AS A INNER JOIN person AS P ON A.seller = P.id
//! WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA');
//! ```
//!
//! An updating inner join ([`Keyed::inner_join_updating`]) of the category-10 auctions, keyed
//! by seller, with the people of those states, keyed by id; a row appears once the watermark
//! passes both the auction and its seller, whichever came first. The inputs only grow, so the
//! change log only adds rows (every `diff` is +1); state grows with the people and auctions
//! kept, like Flink's unbounded regular join.
//!
//! Where ours differs: the `nexmark` generator spells states in lower case (`or`, `id`, `ca`),
//! Flink's in upper case, so the state filter ignores case; rows carry the state as generated.

use eddy_connectors::nexmark::Event;
use eddy_engine::{Change, Stream};
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

/// q3's auction category.
pub const Q3_CATEGORY: usize = 10;
/// q3's states (compared ignoring case).
pub const Q3_STATES: [&str; 3] = ["OR", "ID", "CA"];

/// A q3 row: a local seller and one of their auctions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q3Row {
    /// The seller's name.
    pub name: String,
    /// The seller's city.
    pub city: String,
    /// The seller's state, as generated.
    pub state: String,
    /// The auction's id.
    pub id: u64,
}

impl Q3Row {
    /// Fields holding ms timestamps: none.
    pub const TIMESTAMP_FIELDS: &'static [&'static str] = &[];
}

/// Whether a state is one of q3's.
pub fn q3_state(state: &str) -> bool {
    Q3_STATES.iter().any(|s| s.eq_ignore_ascii_case(state))
}

/// q3: sellers in OR, ID or CA with their auctions in category 10, as a change log.
pub fn q3(events: Stream<Event>) -> Stream<Change<Q3Row>> {
    // (seller, auction id) and (id, name, city, state), split in one pass so the bids, most of
    // the stream, are dropped before the two sides are read.
    let (auctions, sellers) = events.split("q3_auctions_and_people", |e| match e {
        Event::Auction(a) if a.category == Q3_CATEGORY => {
            Some(Split::First((a.seller as u64, a.id as u64)))
        }
        Event::Person(p) if q3_state(&p.state) => {
            Some(Split::Second((p.id as u64, p.name, p.city, p.state)))
        }
        _ => None,
    });
    let auctions = auctions.key_by("by_seller", |a: &(u64, u64)| a.0);
    let sellers = sellers.key_by("by_person", |p: &(u64, String, String, String)| p.0);
    auctions
        .inner_join_updating("q3_join", sellers)
        .map("q3", |c| {
            let (_, id) = c.row.left;
            let (_, name, city, state) = c.row.right;
            Change {
                row: Q3Row {
                    name,
                    city,
                    state,
                    id,
                },
                diff: c.diff,
            }
        })
}
