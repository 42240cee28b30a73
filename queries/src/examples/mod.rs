//! Example pipelines on real event systems, runnable with `eddy example NAME`.
//!
//! - [`orders`]: orders from RabbitMQ and clicks from Kafka, joined per customer in windows,
//!   written to Parquet, with a webhook called for every large order.

pub mod orders;
