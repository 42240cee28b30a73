//! q21, add channel id: every bid with a channel id, when it has one. The four well-known
//! channels have fixed ids (Apple 0, Google 1, Facebook 2, Baidu 3, their names compared in
//! lower case); any other bid takes the value of the `channel_id=` parameter of its URL; bids
//! with neither are dropped.
//!
//! Flink extracts the parameter with `REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2)`: the
//! first `channel_id=` at the start of the URL or right after a `&`, up to the next `&` or the
//! end. [`url_channel_id`] does the same by plain string search, with no regex engine; an empty
//! value (`&channel_id=&`) is an id, the empty string, as in Flink. The id is a string, as
//! Flink's `VARCHAR`.

use eddy_connectors::nexmark::{Bid, Event};
use eddy_engine::Stream;
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

/// A q21 row: a bid with its channel id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q21Row {
    /// The auction's id.
    pub auction: u64,
    /// The bidder's id.
    pub bidder: u64,
    /// The price bid.
    pub price: u64,
    /// The channel the bid came through.
    pub channel: String,
    /// The channel's id: `0`–`3` for the well-known channels, else from the URL.
    pub channel_id: String,
}

impl Q21Row {
    /// The row of a bid, if it has a channel id: q21's `SELECT` and `WHERE`.
    pub fn from_bid(b: Bid) -> Option<Self> {
        let channel_id = channel_id(&b.channel, &b.url)?.to_owned();
        Some(Q21Row {
            auction: b.auction as u64,
            bidder: b.bidder as u64,
            price: b.price as u64,
            channel: b.channel,
            channel_id,
        })
    }
}

/// The well-known channels, in lower case, with their ids.
pub const Q21_KNOWN_CHANNELS: [(&str, &str); 4] = [
    ("apple", "0"),
    ("google", "1"),
    ("facebook", "2"),
    ("baidu", "3"),
];

/// The id of a bid's channel: a well-known channel's fixed id, else its URL's `channel_id`.
pub fn channel_id<'a>(channel: &str, url: &'a str) -> Option<&'a str> {
    Q21_KNOWN_CHANNELS
        .iter()
        .find(|(name, _)| lower_case_is(channel, name))
        .map(|&(_, id)| id)
        .or_else(|| url_channel_id(url))
}

/// Whether `s` in lower case (Unicode, as Flink's `lower`) is `lower`, without allocating.
fn lower_case_is(s: &str, lower: &str) -> bool {
    s.chars().flat_map(char::to_lowercase).eq(lower.chars())
}

/// The value of the first `channel_id=` parameter of `url` that starts it or follows a `&`,
/// up to the next `&` or the end: `REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2)`.
pub fn url_channel_id(url: &str) -> Option<&str> {
    const KEY: &str = "channel_id=";
    // "channel_id=" cannot overlap itself, so the non-overlapping matches are all of them
    let (at, _) = url
        .match_indices(KEY)
        .find(|&(at, _)| at == 0 || url.as_bytes()[at - 1] == b'&')?;
    let value = &url[at + KEY.len()..];
    Some(value.find('&').map_or(value, |end| &value[..end]))
}

/// q21: every bid with a channel id, with it.
pub fn q21(events: Stream<Event>) -> Stream<Q21Row> {
    events.flat_map("q21", |e| match e {
        Event::Bid(b) => Q21Row::from_bid(b),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_channels_win_over_the_url() {
        let url = "https://x.com/a?query=1&channel_id=77";
        assert_eq!(channel_id("Apple", url), Some("0"));
        assert_eq!(channel_id("GOOGLE", ""), Some("1"));
        assert_eq!(channel_id("faceBook", ""), Some("2"));
        assert_eq!(channel_id("baidu", ""), Some("3"));
        // the Kelvin sign lower-cases to 'k'
        assert_eq!(channel_id("Faceboo\u{212A}", ""), Some("2"));
        assert_eq!(channel_id("apples", url), Some("77"));
        assert_eq!(channel_id("channel-9", "no id"), None);
    }

    #[test]
    fn url_ids_follow_the_regex() {
        let id = url_channel_id;
        assert_eq!(id("https://x.com/a?query=1&channel_id=123"), Some("123"));
        assert_eq!(id("channel_id=5&x=1"), Some("5"));
        assert_eq!(id("a&channel_id=5&channel_id=6"), Some("5"));
        assert_eq!(
            id("a?channel_id=5"),
            None,
            "'?' is neither '&' nor the start"
        );
        assert_eq!(id("a&xchannel_id=5&channel_id=6"), Some("6"));
        assert_eq!(id("a&channel_id=&b"), Some(""));
        assert_eq!(id("a&channel_id="), Some(""));
        assert_eq!(id("a&channel_id"), None);
        assert_eq!(id("a&&channel_id=é/ü#x"), Some("é/ü#x"));
        assert_eq!(id(""), None);
    }
}
