//! # eddy-queries
//!
//! Nexmark queries and example pipelines written with Eddy's public API, the plain batch
//! references they are tested against, and the `eddy` binary.
//!
//! - [`nexmark`]: the queries (q0–q22), their output rows, and [`nexmark::Query`] to pick
//!   one by name.
//! - [`reference`]: obviously-correct batch computations of the same queries over a `Vec` of
//!   events, for tests.
//! - [`copy`]: `eddy copy`, a pipeline from any source URI to any sink URI.
//! - `examples` (features `amqp`, `kafka`, `http`): pipelines on real event systems (`eddy
//!   example orders`).
//! - [`output`]: the sinks a query's results can go to (Parquet, JSON lines, a table, a
//!   counter).
//! - [`shutdown`]: graceful stops on SIGTERM and SIGINT.

pub mod copy;
#[cfg(all(feature = "amqp", feature = "kafka", feature = "http"))]
pub mod examples;
pub mod live;
pub mod nexmark;
pub mod output;
pub mod reference;
pub mod shutdown;

/// The README's example, compiled and run as a doc test.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
