//! References for the per-bid queries with computed columns: q14, q21, q22. Each is written
//! independently of the query, the plainest way: strings lower-cased and split into vectors.

use eddy_connectors::nexmark::Event;

use super::bids;
use crate::nexmark::{Q14Row, Q21Row, Q22Row};

/// q14: bids with 1 000 000 < price × 0.908 < 50 000 000 (compared in thousandths, exactly),
/// their UTC hour's time type and their count of `c`s.
pub fn q14(events: &[Event]) -> Vec<Q14Row> {
    bids(events)
        .filter(|b| {
            let thousandths = b.price as u128 * 908;
            thousandths > 1_000_000_000 && thousandths < 50_000_000_000
        })
        .map(|b| {
            let hour = (b.date_time / 1000 / 60 / 60) % 24;
            let bid_time_type = match hour {
                8..=18 => "dayTime",
                0..=6 | 20..=23 => "nightTime",
                _ => "otherTime",
            };
            Q14Row {
                auction: b.auction as u64,
                bidder: b.bidder as u64,
                price: b.price as f64 * 0.908,
                bid_time_type: bid_time_type.into(),
                date_time: b.date_time as i64,
                extra: b.extra.clone(),
                c_counts: b.extra.matches('c').count() as u64,
            }
        })
        .collect()
}

/// q21: bids of the channels apple, google, facebook, baidu (any case) with ids 0–3, the
/// others with the value of the first `&`-separated URL piece that starts with `channel_id=`;
/// bids with neither dropped.
pub fn q21(events: &[Event]) -> Vec<Q21Row> {
    let mut rows = Vec::new();
    for b in bids(events) {
        let known = match b.channel.to_lowercase().as_str() {
            "apple" => Some("0".to_string()),
            "google" => Some("1".to_string()),
            "facebook" => Some("2".to_string()),
            "baidu" => Some("3".to_string()),
            _ => None,
        };
        let from_url = b
            .url
            .split('&')
            .find_map(|piece| piece.strip_prefix("channel_id="))
            .map(str::to_string);
        if let Some(channel_id) = known.or(from_url) {
            rows.push(Q21Row {
                auction: b.auction as u64,
                bidder: b.bidder as u64,
                price: b.price as u64,
                channel: b.channel.clone(),
                channel_id,
            });
        }
    }
    rows
}

/// q22: every bid with parts 3, 4 and 5 (from 0) of its URL split at `/`, `None` past the end.
pub fn q22(events: &[Event]) -> Vec<Q22Row> {
    bids(events)
        .map(|b| {
            let parts: Vec<&str> = b.url.split('/').collect();
            let part = |i: usize| parts.get(i).map(|p| p.to_string());
            Q22Row {
                auction: b.auction as u64,
                bidder: b.bidder as u64,
                price: b.price as u64,
                channel: b.channel.clone(),
                dir1: part(3),
                dir2: part(4),
                dir3: part(5),
            }
        })
        .collect()
}
