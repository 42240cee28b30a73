//! Example: orders from RabbitMQ and clicks from Kafka, joined per customer in windows,
//! written to Parquet, with a webhook called for every large order — the shape of an
//! event-driven pipeline: *when this happens, call that*.
//!
//! - **Input.** Orders (`{"order_id", "customer", "total", "ts"}`, JSON) from a RabbitMQ queue;
//!   clicks (`{"customer", "page", "ts"}`, JSON) from a Kafka topic; event time from `ts`
//!   (integer ms or RFC 3339), with `disorder` allowed out-of-orderness on each source.
//! - **Join.** Each order is paired with every click of the same customer in the same tumbling
//!   window of `window` (default 1 minute): "what did customers look at around the time they
//!   ordered". A window's pairs are written once the watermark of both sources passes its end;
//!   an order or click later than that is late (dead-lettered when a dead-letter sink is set).
//! - **Output.** The pairs as Parquet, `{out}/part-{worker}.parquet` (columns `customer`,
//!   `window_start` and `window_end` as timestamps, `order_id`, `total`, `page`, `click_ts`).
//! - **Trigger.** Every order whose total is above `threshold` is POSTed as JSON to the
//!   `alert` URL at once (not waiting for the window), with retries; one the receiver never
//!   takes goes to the dead-letter sink.
//! - **Run.** `eddy example orders --orders amqp://127.0.0.1:5672/orders --clicks
//!   kafka://127.0.0.1:9092/clicks --out out/orders --alert http://127.0.0.1:8080/big-orders
//!   --threshold 500 --idle-exit 10s`. Malformed messages go to `--dead-letters URI`.

use std::path::PathBuf;
use std::time::Duration;

use eddy_connectors::amqp::{AmqpConfig, AmqpSource};
use eddy_connectors::bridge::StopRule;
use eddy_connectors::endpoints::{self, EndpointOptions};
use eddy_connectors::http_sink::{HttpSink, HttpSinkConfig};
use eddy_connectors::kafka::{KafkaSource, KafkaSourceConfig};
use eddy_connectors::{BrokerSource, Endpoint, EventTimeOf, Format, ParquetSink};
use eddy_engine::{ConnectorError, Pipeline, WatermarkConfig};
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

/// An order, as the RabbitMQ queue carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// The order's id.
    pub order_id: u64,
    /// Who ordered.
    pub customer: String,
    /// The order's total.
    pub total: f64,
    /// When it was placed (ms since the Unix epoch).
    pub ts: u64,
}

/// A click, as the Kafka topic carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Click {
    /// Who clicked.
    pub customer: String,
    /// The page.
    pub page: String,
    /// When (ms since the Unix epoch).
    pub ts: u64,
}

/// An order and a click of the same customer in the same window: the output row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderClick {
    /// The customer.
    pub customer: String,
    /// The window's start (ms; a timestamp column in Parquet).
    pub window_start: i64,
    /// The window's end (ms, exclusive).
    pub window_end: i64,
    /// The order.
    pub order_id: u64,
    /// Its total.
    pub total: f64,
    /// The page clicked.
    pub page: String,
    /// When the click happened (ms).
    pub click_ts: i64,
}

impl OrderClick {
    /// The fields written as ms timestamps.
    pub const TIMESTAMP_FIELDS: &'static [&'static str] =
        &["window_start", "window_end", "click_ts"];

    fn from_joined(j: WindowJoined<String, Order, Click>) -> Self {
        OrderClick {
            customer: j.key,
            window_start: ms(j.start),
            window_end: ms(j.end),
            order_id: j.a.order_id,
            total: j.a.total,
            page: j.b.page,
            click_ts: ms(j.b.ts),
        }
    }
}

fn ms(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// The example's configuration.
#[derive(Clone, Debug)]
pub struct OrdersExample {
    /// Where orders come from.
    pub orders: AmqpConfig,
    /// Where clicks come from.
    pub clicks: KafkaSourceConfig,
    /// The Parquet output directory.
    pub out: PathBuf,
    /// Where large orders are POSTed, if anywhere.
    pub alert: Option<HttpSinkConfig>,
    /// An order above this total is large.
    pub threshold: f64,
    /// The join's tumbling window.
    pub window: Duration,
    /// How far out of order each source's events may come.
    pub disorder: Duration,
    /// When the sources stop (each on its own): by default, never.
    pub stop: StopRule,
    /// Where malformed and late records go, if anywhere.
    pub dead_letters: Option<Endpoint>,
}

impl OrdersExample {
    /// Orders from `orders`, clicks from `clicks`, pairs into `out`; no alert, 1-minute
    /// windows, 1 s of disorder, running until stopped.
    pub fn new(orders: AmqpConfig, clicks: KafkaSourceConfig, out: impl Into<PathBuf>) -> Self {
        OrdersExample {
            orders,
            clicks,
            out: out.into(),
            alert: None,
            threshold: f64::INFINITY,
            window: Duration::from_secs(60),
            disorder: Duration::from_secs(1),
            stop: StopRule::never(),
            dead_letters: None,
        }
    }

    /// The pipeline.
    pub fn pipeline(&self) -> Result<Pipeline, ConnectorError> {
        let pipeline = Pipeline::new("orders-and-clicks");
        if let Some(dead) = &self.dead_letters {
            pipeline.dead_letters(endpoints::dead_letter_sink(
                dead,
                &EndpointOptions::default(),
            )?);
        }
        let watermarks = WatermarkConfig::bounded(self.disorder);
        let orders = AmqpSource::<Order>::new(self.orders.clone(), Format::Json)
            .event_time(EventTimeOf::extract(|o: &Order| Some(o.ts)))
            .stop(self.stop.clone());
        let orders = pipeline.source("orders", orders, watermarks);
        let clicks = KafkaSource::<Click>::new(self.clicks.clone())
            .event_time(EventTimeOf::extract(|c: &Click| Some(c.ts)))
            .stop(self.stop.clone());
        let clicks = pipeline.source("clicks", clicks, watermarks);

        if let Some(alert) = &self.alert {
            let threshold = self.threshold;
            orders
                .clone()
                .filter("large_orders", move |o: &Order| o.total > threshold)
                .sink("alert", HttpSink::new(alert.clone())?);
        }
        let window = WindowSpec::tumbling(self.window.as_millis().max(1) as u64);
        orders
            .key_by("orders_by_customer", |o: &Order| o.customer.clone())
            .window_join(
                "orders_with_clicks",
                clicks.key_by("clicks_by_customer", |c: &Click| c.customer.clone()),
                window,
            )
            .map("order_click_rows", OrderClick::from_joined)
            .sink(
                "parquet",
                ParquetSink::<OrderClick>::new(&self.out, "part")
                    .timestamp_ms(OrderClick::TIMESTAMP_FIELDS),
            );
        Ok(pipeline)
    }
}

/// The batch reference of the join: every (order, click) pair of a customer in the same
/// window, computed with plain loops.
pub fn reference(orders: &[Order], clicks: &[Click], window_ms: u64) -> Vec<OrderClick> {
    let mut rows = Vec::new();
    for o in orders {
        let start = o.ts - o.ts % window_ms;
        for c in clicks {
            if c.customer == o.customer && c.ts - c.ts % window_ms == start {
                rows.push(OrderClick {
                    customer: o.customer.clone(),
                    window_start: ms(start),
                    window_end: ms(start + window_ms),
                    order_id: o.order_id,
                    total: o.total,
                    page: c.page.clone(),
                    click_ts: ms(c.ts),
                });
            }
        }
    }
    rows
}
