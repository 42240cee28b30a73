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
//! - [`aggregate`]: the [`Aggregate`] trait (create, add, merge, finish) and `Count`, `Sum`,
//!   `Min`, `Max`, `Avg`, `MaxBy`, `MinBy`, `ArgMax`, `ArgMin`, `CountDistinct`, `TopN`.
//! - [`dedup`]: `dedup_window` (first record per key per window) and `dedup_ttl` (drop repeats
//!   of a key within a time-to-live in event time).
//!
//! Bring the extension traits into scope with `use eddy_operators::prelude::*;`.

pub mod aggregate;
pub mod dedup;
pub mod keyed;
pub mod stateless;
pub mod window;

pub use aggregate::{
    Aggregate, ArgBy, ArgMax, ArgMin, Avg, Count, CountDistinct, ExtremeBy, Max, MaxBy, Min, MinBy,
    Sum, TopN,
};
pub use keyed::{KeyBy, Keyed};
pub use stateless::Stateless;
pub use window::{GlobalWindow, TopNPerWindow, WindowResult, WindowSpec};

/// The extension traits and types a pipeline author needs.
pub mod prelude {
    pub use crate::aggregate::{
        Aggregate, ArgMax, ArgMin, Avg, Count, CountDistinct, Max, MaxBy, Min, MinBy, Sum, TopN,
    };
    pub use crate::keyed::{KeyBy, Keyed};
    pub use crate::stateless::Stateless;
    pub use crate::window::{GlobalWindow, TopNPerWindow, WindowResult, WindowSpec};
}
