//! # eddy-benches
//!
//! The benchmark runner: it pre-generates Nexmark events in memory, then times each query from
//! the in-memory replay source into the counting sink (engine only: no generation, no I/O), at
//! each worker count, and, in the same run, a plain hand-written Rust loop computing the same
//! result over the same events — the physical limit on this machine. It reports events/s, bids/s,
//! events/s per core, the ratio to the hand loop, and peak memory (RSS, which includes the
//! pre-generated input).
//!
//! With `--latency` it also runs each query at a fixed offered rate (half its measured maximum
//! by default) and reports latency percentiles ([`latency`]); with `--end-to-end` and
//! `--processes N` it measures the generator inside the run and N processes on loopback
//! ([`e2e`]); with `--flink` it runs the queries in Apache Flink SQL (local mode) over the same
//! events and reports Eddy's per-core ratio over Flink's ([`flink`]); with `--connectors N` it
//! reads N records from each broker beside the broker's own client ([`connectors`]); with
//! `--metrics-overhead` it runs each query with the metrics endpoint off and on
//! ([`overhead`]); with `--out` it draws SVG charts ([`charts`]).
//!
//! Run it with `cargo run --release -p eddy-benches -- --help`.

pub mod charts;
pub mod connectors;
pub mod e2e;
pub mod flink;
pub mod hand;
pub mod latency;
pub mod overhead;
pub mod runner;
