//! Hand loops of the per-bid queries with computed columns (q14, q21, q22): a plain loop over
//! the bids calling the same row functions the pipelines call.

use eddy_connectors::nexmark::Event;
use eddy_engine::Record;
use eddy_queries::nexmark::{q14_price_in_range, Q14Row, Q21Row, Q22Row};

use super::count_rows;

/// q14: the bids in the price range, each made into its row.
pub(super) fn q14(events: Vec<Record<Event>>) -> u64 {
    count_rows(events, |e| match e {
        Event::Bid(b) if q14_price_in_range(&b) => Some(Q14Row::from_bid(b)),
        _ => None,
    })
}

/// q21: the bids with a channel id.
pub(super) fn q21(events: Vec<Record<Event>>) -> u64 {
    count_rows(events, |e| match e {
        Event::Bid(b) => Q21Row::from_bid(b),
        _ => None,
    })
}

/// q22: every bid with its URL's directories.
pub(super) fn q22(events: Vec<Record<Event>>) -> u64 {
    count_rows(events, |e| match e {
        Event::Bid(b) => Some(Q22Row::from_bid(b)),
        _ => None,
    })
}
