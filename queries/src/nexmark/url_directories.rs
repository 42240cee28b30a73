//! q22, URL directories: every bid with the first three directories of its URL — the 4th, 5th
//! and 6th parts of the URL split at every `/` (for `https://host/a/b/c/page`, `a`, `b`, `c`).
//!
//! As Flink's `SPLIT_INDEX(url, '/', 3)` (to 5): every `/` splits, so consecutive ones make
//! empty parts, and a part the URL does not have is missing — `None` here, `NULL` in Flink.

use eddy_connectors::nexmark::{Bid, Event};
use eddy_engine::Stream;
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

/// A q22 row: a bid with its URL's first three directories.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q22Row {
    /// The auction's id.
    pub auction: u64,
    /// The bidder's id.
    pub bidder: u64,
    /// The price bid.
    pub price: u64,
    /// The channel the bid came through.
    pub channel: String,
    /// The URL's 4th `/`-separated part, if it has one.
    pub dir1: Option<String>,
    /// The URL's 5th `/`-separated part, if it has one.
    pub dir2: Option<String>,
    /// The URL's 6th `/`-separated part, if it has one.
    pub dir3: Option<String>,
}

impl Q22Row {
    /// The row of a bid: q22's `SELECT`.
    pub fn from_bid(b: Bid) -> Self {
        let mut parts = b.url.split('/').skip(3).map(str::to_owned);
        let (dir1, dir2, dir3) = (parts.next(), parts.next(), parts.next());
        Q22Row {
            auction: b.auction as u64,
            bidder: b.bidder as u64,
            price: b.price as u64,
            channel: b.channel,
            dir1,
            dir2,
            dir3,
        }
    }
}

/// q22: every bid with its URL's first three directories.
pub fn q22(events: Stream<Event>) -> Stream<Q22Row> {
    events.flat_map("q22", |e| match e {
        Event::Bid(b) => Some(Q22Row::from_bid(b)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(url: &str) -> [Option<String>; 3] {
        let row = Q22Row::from_bid(Bid {
            auction: 1,
            bidder: 2,
            price: 3,
            channel: "c".into(),
            url: url.into(),
            date_time: 0,
            extra: String::new(),
        });
        [row.dir1, row.dir2, row.dir3]
    }

    fn some(parts: [&str; 3]) -> [Option<String>; 3] {
        parts.map(|p| Some(p.to_owned()))
    }

    #[test]
    fn directories_are_the_4th_to_6th_parts() {
        assert_eq!(
            dirs("https://www.nexmark.com/ab_c/de/f_g/item.htm?query=1"),
            some(["ab_c", "de", "f_g"])
        );
        assert_eq!(dirs("https://h/a//b"), some(["a", "", "b"]));
        assert_eq!(dirs("https://h/a/b/"), some(["a", "b", ""]));
        assert_eq!(
            dirs("https://h/a"),
            [Some("a".to_owned()), None, None],
            "missing parts are None"
        );
        assert_eq!(dirs("https://h"), [None, None, None]);
        assert_eq!(dirs(""), [None, None, None]);
    }
}
