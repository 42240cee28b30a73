//! What the webhook server tests share: a signed webhook on a free loopback port, run in a
//! pipeline of its own that collects what it reads.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use eddy_connectors::bridge::StopRule;
use eddy_connectors::webhook::{Wal, WebhookConfig, WebhookSource};
use eddy_connectors::EventTimeOf;
use eddy_engine::testing::CollectSink;
use eddy_engine::{Pipeline, RunHandle, Runtime, WatermarkConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The signing secret of every [`Hook`].
pub const SECRET: &str = "s3cret-for-webhook-server-tests";

/// A running webhook and what it read.
pub struct Hook<T> {
    /// Its URL (`http://` or `https://`, with the path).
    pub url: String,
    pub address: SocketAddr,
    pub out: CollectSink<T>,
    pub run: RunHandle,
}

/// A webhook on `path` signed with [`SECRET`], changed by `change` (limits, TLS), reading
/// `records` records (or stopping after 20 s idle, so that a broken test ends), without a
/// write-ahead log.
pub fn start<T>(records: u64, path: &str, change: impl FnOnce(&mut WebhookConfig)) -> Hook<T>
where
    T: DeserializeOwned + Serialize + Clone + Send + 'static,
{
    let mut config = WebhookConfig {
        secret: Some(SECRET.into()),
        stop: StopRule::never()
            .limit(records)
            .idle_exit(Duration::from_secs(20)),
        wal: Wal::Off,
        ..WebhookConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), path)
    };
    change(&mut config);
    let source = WebhookSource::<T>::bind(config, EventTimeOf::Arrival).unwrap();
    let (url, address) = (source.url().to_string(), source.local_addr());
    let out = CollectSink::new();
    let pipeline = Pipeline::new("webhook");
    pipeline
        .source("in", source, WatermarkConfig::default())
        .sink("out", out.clone());
    let run = Runtime::new(1).start(&pipeline).unwrap();
    Hook {
        url,
        address,
        out,
        run,
    }
}

impl<T: Ord + Clone + Send + 'static> Hook<T> {
    /// The records that reached the sink once the run is over, sorted.
    pub fn finish(self) -> Vec<T> {
        self.run.join().unwrap();
        self.out.values()
    }
}
