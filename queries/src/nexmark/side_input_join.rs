//! q13, bounded side input join: every bid enriched with the value a side table holds for
//! `auction % 10000`, the table being read once from a file on every worker.
//!
//! The side table is a key-value file, CSV (`key,value` lines) or JSON lines
//! (`{"key": .., "value": ..}`), given to `eddy nexmark run q13 --side-input PATH`; without it,
//! the query uses [`q13_default_table`]: keys 0..10 000, each with its own decimal string as its
//! value (the table RisingWave and Feldera generate for their q13). Bids whose key is not in the
//! table are dropped, as in Flink's inner join. A missing or malformed file fails the run with an
//! error naming the file and line.
//!
//! Differences from Flink's q13: Flink joins `FOR SYSTEM_TIME AS OF` the bid's processing time,
//! which with a file that never changes is a lookup in a fixed table, as here
//! ([`eddy_operators::lookup`]); the result is the same.

use std::collections::HashMap;
use std::path::Path;

use eddy_connectors::nexmark::{timestamp_ms as ms, Event};
use eddy_connectors::SideInputFile;
use eddy_engine::Stream;
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

use super::bids;

/// The modulus of q13's key: `auction % Q13_KEYS`.
pub const Q13_KEYS: u64 = 10_000;

/// A q13 row: a bid and its side-table value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q13Row {
    /// The auction's id.
    pub auction: u64,
    /// The bidder's id.
    pub bidder: u64,
    /// The price.
    pub price: u64,
    /// When the bid was made (ms).
    pub date_time: i64,
    /// The side table's value for `auction % 10000`.
    pub value: String,
}

impl Q13Row {
    /// Fields holding ms timestamps.
    pub const TIMESTAMP_FIELDS: &'static [&'static str] = &["date_time"];
}

/// The side table q13 uses without a file: each key in 0..10 000 maps to its decimal string.
pub fn q13_default_table() -> HashMap<u64, String> {
    (0..Q13_KEYS).map(|k| (k, k.to_string())).collect()
}

/// q13's side table: read from `path` (CSV, or JSON lines for `.jsonl`/`.ndjson`/`.json`) on
/// every worker, or [`q13_default_table`] when there is no file.
pub fn q13_side_table(path: Option<&Path>) -> SideTable<u64, String> {
    match path {
        Some(path) => {
            let file = SideInputFile::from_extension(path);
            SideTable::new(file.describe(), move || file.load())
        }
        None => SideTable::from_map("generated(0..10000)", q13_default_table()),
    }
}

/// q13: every bid joined with `table`'s value for `auction % 10000`.
pub fn q13(events: Stream<Event>, table: SideTable<u64, String>) -> Stream<Q13Row> {
    bids(events).lookup_join(
        "side_input",
        table,
        |b| b.auction as u64 % Q13_KEYS,
        |b, value: &String| Q13Row {
            auction: b.auction as u64,
            bidder: b.bidder as u64,
            price: b.price as u64,
            date_time: ms(b.date_time),
            value: value.clone(),
        },
    )
}
