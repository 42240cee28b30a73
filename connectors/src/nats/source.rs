//! The NATS source: a core subscription (in a queue group) or a JetStream durable pull consumer
//! per worker, each feeding its worker through a bounded [`bridge`](crate::bridge) channel.
//! See the [module docs](super) for the guarantees of each.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::{Client, Subject, Subscriber};
use eddy_engine::{ConnectorError, Partition, Source, SourceReader};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use super::{
    connect, connected, jetstream_context, open_stream, outside, DeliverFrom, Health, NatsConfig,
    Refusal,
};
use crate::bridge::{self, BrokerSource, Decoding, Delivery, Feed};

/// How often an idle client task checks its connection and whether its readers are gone.
const TICK: Duration = Duration::from_millis(200);
/// How long one JetStream pull waits on the server for messages.
const PULL_EXPIRES: Duration = Duration::from_millis(500);
/// The longest wait between failed pulls.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a closing task waits for its last acknowledgements to reach the server.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);
/// How often a JetStream source asks for its consumer's pending messages (its backlog).
const PENDING_EVERY: Duration = Duration::from_secs(1);

/// A NATS source of records of type `T`: a core subject or a JetStream stream (see the
/// [module docs](super)). Each worker opens its own connection.
///
/// ```no_run
/// use eddy_connectors::nats::{NatsConfig, NatsSource};
/// use eddy_connectors::{bridge::StopRule, BrokerSource, EventTimeOf};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Order { id: u64, total: f64, ts: u64 }
///
/// let orders = NatsSource::<Order>::new(NatsConfig {
///     create_stream: true,
///     ..NatsConfig::jetstream("127.0.0.1:4222", "orders.>", "ORDERS")
/// })
/// .event_time(EventTimeOf::field("ts"))
/// .stop(StopRule::never().idle_exit(std::time::Duration::from_secs(5)));
/// # drop(orders);
/// ```
pub struct NatsSource<T> {
    config: NatsConfig,
    decoding: Decoding<T>,
}

impl<T> NatsSource<T> {
    /// A source as `config` says, of JSON records timed by their arrival, running until
    /// stopped (NATS has no end of a subject); [`BrokerSource`]'s methods change that
    /// (`EventTimeOf::Broker` is the JetStream publish time).
    pub fn new(config: NatsConfig) -> Self {
        NatsSource {
            config,
            decoding: Decoding::default(),
        }
    }
}

impl<T> BrokerSource<T> for NatsSource<T> {
    fn decoding_mut(&mut self) -> &mut Decoding<T> {
        &mut self.decoding
    }
}

impl<T> Source<T> for NatsSource<T>
where
    T: DeserializeOwned + Serialize + Send + 'static,
{
    /// Yes: a JetStream message is acknowledged once what it produced is committed (core NATS has no acknowledgements).
    fn acknowledges(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        self.config.describe()
    }

    fn open(&self, _partition: Partition) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        self.config.check()?;
        let runtime = bridge::runtime();
        if self.config.stream.is_some() {
            let puller = runtime.block_on(Puller::open(&self.config))?;
            let (feed, inbox) = bridge::channel(self.config.capacity);
            runtime.spawn(puller.run(feed));
            Ok(self.decoding.reader(inbox))
        } else {
            let subscription = runtime.block_on(CoreSubscription::open(&self.config))?;
            let (feed, inbox) = bridge::channel(self.config.capacity);
            runtime.spawn(subscription.run(feed));
            Ok(self.decoding.reader(inbox))
        }
    }
}

/// One worker's core NATS subscription.
struct CoreSubscription {
    client: Client,
    subscriber: Subscriber,
    health: Health,
}

impl CoreSubscription {
    async fn open(config: &NatsConfig) -> Result<Self, ConnectorError> {
        let refusal = Refusal::default();
        let client = connect(config, config.buffer, &refusal).await?;
        let subscriber = client
            .queue_subscribe(config.subject.clone(), config.queue_group())
            .await
            .map_err(|e| {
                ConnectorError::external(format!("{}: cannot subscribe: {e}", config.describe()), e)
            })?;
        // Once the server has answered a ping it holds the subscription: a message published
        // after `open` returns reaches this worker (or another of its queue group).
        client.flush().await.map_err(|e| {
            ConnectorError::external(
                format!(
                    "{}: the server did not confirm the subscription: {e}",
                    config.describe()
                ),
                e,
            )
        })?;
        Ok(CoreSubscription {
            client,
            subscriber,
            health: Health::new(config, refusal),
        })
    }

    async fn run(mut self, mut feed: Feed<()>) {
        let mut tick = tokio::time::interval(TICK);
        let mut received = 0u64;
        loop {
            tokio::select! {
                message = self.subscriber.next() => {
                    let Some(message) = message else {
                        feed.fail(outside(format!(
                            "{}: the client closed the subscription (the server ended it?)",
                            self.health.what
                        )))
                        .await;
                        break;
                    };
                    received += 1;
                    let delivery = Delivery {
                        location: format!("subject {} message {received}", message.subject),
                        payload: message.payload.into(),
                        timestamp_ms: None,
                        ack: (),
                    };
                    if !feed.deliver(delivery).await {
                        break;
                    }
                }
                _ = tick.tick() => {
                    // Core NATS has nothing to acknowledge: drop the tokens.
                    feed.ready_acks();
                    if feed.readers_gone() {
                        break;
                    }
                    if connected(&self.client) {
                        self.health.ok();
                    } else if let Some(error) = self.health.failed("the connection is lost") {
                        feed.fail(error).await;
                        break;
                    }
                }
            }
        }
        let _ = self.subscriber.unsubscribe().await;
        feed.closed();
    }
}

/// One worker's puller of a JetStream durable consumer. Its acknowledgement tokens are the
/// messages' reply subjects.
struct Puller {
    client: Client,
    consumer: PullConsumer,
    stream: String,
    capacity: usize,
    batch: usize,
    health: Health,
}

impl Puller {
    async fn open(config: &NatsConfig) -> Result<Self, ConnectorError> {
        let stream_name = config.stream.clone().unwrap_or_default();
        let refusal = Refusal::default();
        let client = connect(config, config.capacity.max(config.batch), &refusal).await?;
        let context = jetstream_context(client.clone());
        let stream = open_stream(&context, config, &stream_name).await?;
        let wanted = pull::Config {
            durable_name: Some(config.durable.clone()),
            filter_subject: config.subject.clone(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            deliver_policy: match config.deliver {
                DeliverFrom::All => DeliverPolicy::All,
                DeliverFrom::New => DeliverPolicy::New,
            },
            ..Default::default()
        };
        let consumer: PullConsumer = stream
            .get_or_create_consumer(&config.durable, wanted)
            .await
            .map_err(|e| {
                ConnectorError::external(
                    format!(
                        "{}: cannot open the durable consumer {}: {e}",
                        config.describe(),
                        config.durable
                    ),
                    e,
                )
            })?;
        let filter = &consumer.cached_info().config.filter_subject;
        if filter != &config.subject {
            return Err(ConnectorError::user(format!(
                "{}: the durable consumer {} of stream {stream_name} reads subject '{filter}', \
                 not '{}': choose another durable= name, or delete that consumer",
                config.describe(),
                config.durable,
                config.subject
            )));
        }
        Ok(Puller {
            client,
            consumer,
            stream: stream_name,
            capacity: config.capacity,
            batch: config.batch,
            health: Health::new(config, refusal),
        })
    }

    async fn run(mut self, mut feed: Feed<Option<Subject>>) {
        // Pull once the channel has room for a quarter of itself (or a whole batch), so a
        // pipeline that is just behind gets a few large pulls rather than many tiny ones.
        let threshold = (self.capacity / 4).clamp(1, self.batch);
        let mut backoff = Duration::from_millis(100);
        let backlog = feed.broker_backlog();
        let mut pending_checked: Option<Instant> = None;
        loop {
            if pending_checked.is_none_or(|at| at.elapsed() >= PENDING_EVERY) {
                // What the stream holds for this consumer, not yet delivered: the backlog the
                // metrics show. A failed check is skipped; pulling reports the errors.
                if let Ok(info) = self.consumer.info().await {
                    backlog.store(info.num_pending, Ordering::Relaxed);
                }
                pending_checked = Some(Instant::now());
            }
            let acks = feed.ready_acks();
            self.acknowledge(acks).await;
            if feed.readers_gone() {
                break;
            }
            let room = self.capacity.saturating_sub(feed.backlog()).min(self.batch);
            if room < threshold {
                // The pipeline is behind: pull nothing until it has caught up.
                tokio::select! {
                    acks = feed.next_acks() => match acks {
                        Some(acks) => self.acknowledge(acks).await,
                        None => break,
                    },
                    _ = tokio::time::sleep(TICK) => {}
                }
                continue;
            }
            let outcome = if connected(&self.client) {
                self.pull(room, &mut feed).await
            } else {
                Err("the connection is lost".to_string())
            };
            match outcome {
                Ok(()) => {
                    self.health.ok();
                    backoff = Duration::from_millis(100);
                }
                Err(problem) => {
                    if let Some(error) = self.health.failed(&problem) {
                        feed.fail(error).await;
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        // Every reader is gone: acknowledge what they handed back, then close.
        while let Some(acks) = feed.next_acks().await {
            self.acknowledge(acks).await;
        }
        let _ = tokio::time::timeout(CLOSE_FLUSH, self.client.flush()).await;
        feed.closed();
    }

    /// Pulls up to `room` messages and hands them to the readers, acknowledging what they
    /// hand back meanwhile.
    async fn pull(&mut self, room: usize, feed: &mut Feed<Option<Subject>>) -> Result<(), String> {
        let mut batch = self
            .consumer
            .batch()
            .max_messages(room)
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(|e| format!("cannot pull from the consumer: {e}"))?;
        // A pull whose server went away never ends by itself: give it up a little after the
        // server would have ended it.
        let deadline = Instant::now() + PULL_EXPIRES + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline, batch.next()).await {
                Err(_) | Ok(None) => return Ok(()),
                Ok(Some(Err(e))) => return Err(format!("a pull failed: {e}")),
                Ok(Some(Ok(message))) => {
                    let delivery = self.delivery(message);
                    if !feed.deliver(delivery).await {
                        return Ok(());
                    }
                    let acks = feed.ready_acks();
                    self.acknowledge(acks).await;
                }
            }
        }
    }

    fn delivery(&self, message: async_nats::jetstream::Message) -> Delivery<Option<Subject>> {
        let (location, timestamp_ms) = match message.info() {
            Ok(info) => (
                format!("stream {} seq {}", info.stream, info.stream_sequence),
                u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).ok(),
            ),
            Err(_) => (format!("stream {} (no sequence)", self.stream), None),
        };
        let message = message.message;
        Delivery {
            payload: message.payload.into(),
            location,
            timestamp_ms,
            ack: message.reply,
        }
    }

    /// Acknowledges the messages whose reply subjects are `acks`. An acknowledgement that
    /// cannot be sent (the client closed) leaves its message to be delivered again.
    async fn acknowledge(&self, acks: Vec<Option<Subject>>) {
        for reply in acks.into_iter().flatten() {
            let _ = self.client.publish(reply, Default::default()).await;
        }
    }
}
