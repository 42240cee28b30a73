//! # eddy-benches
//!
//! The benchmark runner: it pre-generates Nexmark events in memory, then times each query from
//! the in-memory replay source into the counting sink (engine only: no generation, no I/O), at
//! each worker count, and, in the same run, a plain hand-written Rust loop computing the same
//! result over the same events — the physical limit on this machine. It reports events/s, bids/s,
//! events/s per core, the ratio to the hand loop, and peak memory (RSS, which includes the
//! pre-generated input).
//!
//! With `--flink`, it also runs the queries in Apache Flink SQL (local mode) over the same
//! events and reports Eddy's per-core ratio over Flink's (see [`flink`]).
//!
//! Run it with `cargo run --release -p eddy-benches -- --help`.

pub mod flink;
pub mod hand;
pub mod runner;
