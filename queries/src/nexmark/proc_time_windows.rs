//! q12, processing-time windows: how many bids each bidder makes in each 10-second window of
//! processing (wall-clock) time.
//!
//! Bids are keyed by bidder and counted in 10 s tumbling windows of the wall-clock time at which
//! they reach the window stage ([`eddy_operators::proc_window`]); a window's counts are emitted
//! when the wall clock passes its end, and the windows still open when the input ends are
//! emitted then, so every bid is counted once.
//!
//! The rows are **not deterministic**, here as in Flink: which window a bid falls in depends on
//! when it is processed. What is reproducible is each bidder's total over all windows: the
//! number of bids they made, which the tests check. Differences from Flink's q12: Flink stamps
//! `PROCTIME()` when the bid is read; Eddy when the bid reaches the worker that counts its
//! bidder (after the exchange), milliseconds later. Flink drops processing-time windows still
//! open at the end of a bounded input; Eddy emits them.

use eddy_connectors::nexmark::{timestamp_ms as ms, Event};
use eddy_engine::Stream;
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

use super::bids;

/// q12's window length (ms of wall-clock time).
pub const Q12_WINDOW: u64 = 10_000;

/// A q12 row: a bidder's bid count in one processing-time window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q12Row {
    /// The bidder's id.
    pub bidder: u64,
    /// Bids the bidder made in the window.
    pub bid_count: u64,
    /// The window's start (wall-clock ms).
    pub window_start: i64,
    /// The window's end (wall-clock ms, exclusive).
    pub window_end: i64,
}

impl Q12Row {
    /// Fields holding ms timestamps.
    pub const TIMESTAMP_FIELDS: &'static [&'static str] = &["window_start", "window_end"];
}

/// q12: bids per bidder per 10 s processing-time window.
pub fn q12(events: Stream<Event>) -> Stream<Q12Row> {
    bids(events)
        .key_by("by_bidder", |b| b.bidder as u64)
        .processing_time_window("bids_per_bidder", Q12_WINDOW, Count)
        .map("q12", |w| Q12Row {
            bidder: w.key,
            bid_count: w.value,
            window_start: ms(w.start),
            window_end: ms(w.end),
        })
}
