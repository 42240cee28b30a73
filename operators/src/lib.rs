//! # eddy-operators
//!
//! The operators of Eddy pipelines, built on the engine's stage hook
//! ([`Stream::stage`](eddy_engine::Stream::stage)) and timely's `unary_frontier`.
//! Every record carries its event time; timely timestamps are watermarks (see `eddy_engine`).
//!
//! - [`stateless`]: `map`, `filter`, `flat_map` — per record, no state, no waiting.
//! - [`keyed`]: `key_by` — pairs each record with its key; the next stateful stage exchanges
//!   records between workers by the key's hash.
//! - [`window`]: tumbling and hopping event-time windows, keyed or global, emitted once when the
//!   watermark passes the window's end; `top_n_per_window`, the `n` best keys of each window.
//! - [`session`]: session windows per key (closed after a gap of event-time inactivity,
//!   merging sessions a record bridges), emitted once when the watermark passes their end.
//! - [`count_window`]: every `n` records of a key, in event-time order, make one window.
//! - [`aggregate`]: the [`Aggregate`] trait (create, add, merge, finish) and `Count`, `Sum`,
//!   `Min`, `Max`, `Avg`, `MaxBy`, `MinBy`, `ArgMax`, `ArgMin`, `CountDistinct`, `TopN`.
//! - [`dedup`]: `dedup_window` (first record per key per window) and `dedup_ttl` (drop repeats
//!   of a key within a time-to-live in event time).
//! - [`join`]: joins of two keyed streams with final results: windowed equi-join, interval
//!   join, as-of join.
//! - [`updating`]: updating-mode joins (inner, left and full outer, optionally with a TTL) and
//!   aggregates (per key, per window with corrections), emitting change logs.
//! - [`lookup`]: lookup joins of each record with a bounded side table (read once from a file
//!   on every worker), inner or left outer.
//! - [`proc_window`]: tumbling windows in processing (wall-clock) time, keyed; results are
//!   not deterministic.
//! - [`process`]: keyed process functions — user code per key with typed state and event-time
//!   timers, called in event-time order once the watermark passes.
//! - [`top_n`]: `top_n_updating`, each key's `n` best records with their ranks, as a change
//!   log (the latest record per key with `n = 1` and a time as the score).
//!
//! Bring the extension traits into scope with `use eddy_operators::prelude::*;`.

pub mod aggregate;
pub mod count_window;
pub mod dedup;
pub mod join;
pub mod keyed;
pub mod lookup;
pub mod proc_window;
pub mod process;
pub mod session;
mod stamps;
pub mod stateless;
pub mod top_n;
pub mod updating;
pub mod window;

pub use aggregate::{
    Aggregate, ArgBy, ArgMax, ArgMin, Avg, Count, CountDistinct, ExtremeBy, Max, MaxBy, Min, MinBy,
    Sum, TopN,
};
pub use join::WindowJoined;
pub use keyed::{KeyBy, Keyed};
pub use lookup::{LookupJoin, SideTable};
pub use process::{KeyedProcess, ProcessContext};
pub use stateless::{Split, Stateless};
pub use top_n::Ranked;
pub use updating::{Aggregated, JoinKind, Joined, OuterJoined};
pub use window::{GlobalWindow, TopNPerWindow, WindowResult, WindowSpec};

/// The extension traits and types a pipeline author needs.
pub mod prelude {
    pub use crate::aggregate::{
        Aggregate, ArgMax, ArgMin, Avg, Count, CountDistinct, Max, MaxBy, Min, MinBy, Sum, TopN,
    };
    pub use crate::join::WindowJoined;
    pub use crate::keyed::{KeyBy, Keyed};
    pub use crate::lookup::{LookupJoin, SideTable};
    pub use crate::process::{KeyedProcess, ProcessContext};
    pub use crate::stateless::{Split, Stateless};
    pub use crate::top_n::Ranked;
    pub use crate::updating::{Aggregated, JoinKind, Joined, OuterJoined};
    pub use crate::window::{GlobalWindow, TopNPerWindow, WindowResult, WindowSpec};
}

/// The test kit guide, docs/testing.md: its examples run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/testing.md")]
pub struct TestingGuide;
