//! The RabbitMQ source: one consumer per worker, acknowledged after hand-off, reconnecting when
//! the connection drops (see the [module docs](super)).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use eddy_engine::{ConnectorError, Partition, Source, SourceReader};
use futures_util::StreamExt;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{broker_error, close, connect, describe, open_queue, AmqpConfig, Reconnect};
use crate::bridge::{self, BrokerSource, Decoding, Delivery, Feed};
#[cfg(doc)]
use crate::event_time::EventTimeOf;
use crate::format::Format;

/// How often a source asks RabbitMQ for its queue's depth (the backlog the metrics show).
const QUEUE_DEPTH_EVERY: Duration = Duration::from_secs(1);

/// A source of the records in a RabbitMQ queue, decoded from each message's body as
/// `format`; its event times and stop rule are set with [`BrokerSource`]'s methods
/// ([`EventTimeOf::Broker`] is the message's `timestamp` property).
pub struct AmqpSource<T> {
    config: Arc<AmqpConfig>,
    decoding: Decoding<T>,
}

impl<T> AmqpSource<T> {
    /// The queue `config` names, its messages decoded as `format`, timed on arrival, read until
    /// the run is stopped.
    pub fn new(config: AmqpConfig, format: Format) -> Self {
        AmqpSource {
            config: Arc::new(config),
            decoding: Decoding {
                format,
                ..Decoding::default()
            },
        }
    }
}

impl<T> BrokerSource<T> for AmqpSource<T> {
    fn decoding_mut(&mut self) -> &mut Decoding<T> {
        &mut self.decoding
    }
}

impl<T> Source<T> for AmqpSource<T>
where
    T: DeserializeOwned + Serialize + Send + 'static,
{
    /// Yes: a message is acknowledged once what it produced is committed.
    fn acknowledges(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("amqp({}/{})", self.config.address, self.config.queue)
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        let runtime = bridge::runtime();
        let session = runtime.block_on(Session::open(&self.config, partition.index, 0))?;
        let (feed, inbox) = bridge::channel(usize::from(self.config.prefetch));
        let task = ConsumerTask {
            config: Arc::clone(&self.config),
            worker: partition.index,
            session,
            feed,
        };
        runtime.spawn(task.run());
        Ok(self.decoding.reader(inbox))
    }
}

/// What the readers hand back to acknowledge a message: its delivery tag on the channel of
/// one session (tags start again at 1 on every new channel, so a tag of an older session must
/// not be acknowledged on the new one; the broker has requeued that message anyway).
#[derive(Debug)]
struct Ack {
    session: u64,
    tag: u64,
}

/// One connection's consumer.
struct Session {
    id: u64,
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
    /// Delivery tags handed to the readers and not yet acknowledged.
    unacked: BTreeSet<u64>,
}

impl Session {
    async fn open(config: &AmqpConfig, worker: usize, id: u64) -> Result<Self, ConnectorError> {
        let connection = connect(config, &format!("source {} #{worker}", config.queue)).await?;
        let channel = open_queue(&connection, config).await?;
        channel
            .basic_qos(config.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| broker_error(config, "cannot set the prefetch window", e))?;
        let consumer = channel
            .basic_consume(
                config.queue.as_str().into(),
                format!("eddy-{worker}").into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                broker_error(
                    config,
                    &format!("cannot consume queue '{}'", config.queue),
                    e,
                )
            })?;
        Ok(Session {
            id,
            connection,
            channel,
            consumer,
            unacked: BTreeSet::new(),
        })
    }

    /// Acknowledges the tags of this session among `acks`: the ones below every tag still
    /// unacknowledged with one `multiple` acknowledgement (the readers return tags in the
    /// order they were delivered, so that is normally all of them), any others one by one.
    async fn acknowledge(&mut self, acks: Vec<Ack>) -> Result<(), lapin::Error> {
        let mut tags: Vec<u64> = acks
            .into_iter()
            .filter(|ack| ack.session == self.id && self.unacked.remove(&ack.tag))
            .map(|ack| ack.tag)
            .collect();
        tags.sort_unstable();
        let oldest_unacked = self.unacked.first().copied().unwrap_or(u64::MAX);
        let contiguous = tags.partition_point(|&tag| tag < oldest_unacked);
        if let Some(&last) = tags[..contiguous].last() {
            self.channel
                .basic_ack(last, BasicAckOptions { multiple: true })
                .await?;
        }
        for &tag in &tags[contiguous..] {
            self.channel
                .basic_ack(tag, BasicAckOptions { multiple: false })
                .await?;
        }
        Ok(())
    }
}

/// Why a session ended.
enum End {
    /// Every reader is gone and every acknowledgement was sent.
    ReadersGone,
    /// The connection or channel failed.
    Lost(String),
}

/// The client task of one worker's reader.
struct ConsumerTask {
    config: Arc<AmqpConfig>,
    worker: usize,
    session: Session,
    feed: Feed<Ack>,
}

impl ConsumerTask {
    async fn run(mut self) {
        loop {
            match self.consume().await {
                End::ReadersGone => break,
                End::Lost(why) => {
                    tracing::warn!(
                        "RabbitMQ source (queue {}, worker {}): lost the connection to {}: \
                         {why}; reconnecting for up to {}",
                        self.config.queue,
                        self.worker,
                        self.config.address,
                        humantime::format_duration(self.config.reconnect_timeout)
                    );
                    match self.reconnect().await {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(error) => {
                            self.feed.fail(error).await;
                            return;
                        }
                    }
                }
            }
        }
        // Closing the channel requeues whatever was delivered and not acknowledged.
        close(&self.session.connection).await;
        self.feed.closed();
    }

    /// Hands messages to the readers and acknowledges what they return, until the readers are
    /// gone or the connection fails.
    async fn consume(&mut self) -> End {
        let mut consuming = true;
        let mut depth_check = tokio::time::interval(QUEUE_DEPTH_EVERY);
        loop {
            tokio::select! {
                _ = depth_check.tick() => self.note_queue_depth().await,
                acks = self.feed.next_acks() => match acks {
                    None => return End::ReadersGone,
                    Some(acks) => {
                        if let Err(error) = self.session.acknowledge(acks).await {
                            return End::Lost(describe(&error));
                        }
                    }
                },
                next = self.session.consumer.next(), if consuming => match next {
                    Some(Ok(delivery)) => {
                        // `false`: the readers are gone; acknowledge what they return.
                        consuming = self.deliver(delivery).await;
                    }
                    Some(Err(error)) => return End::Lost(describe(&error)),
                    None => {
                        return End::Lost(
                            "the broker cancelled the consumer (was the queue deleted?)".into(),
                        )
                    }
                },
            }
        }
    }

    /// Asks the broker how many messages wait in the queue (ready, not yet delivered) and
    /// reports it as the readers' backlog. A failed check is skipped: the consumer's own
    /// errors say what went wrong.
    async fn note_queue_depth(&mut self) {
        let checked = self
            .session
            .channel
            .queue_declare(
                self.config.queue.as_str().into(),
                QueueDeclareOptions::default().passive(),
                FieldTable::default(),
            )
            .await;
        if let Ok(queue) = checked {
            self.feed
                .broker_backlog()
                .store(u64::from(queue.message_count()), Ordering::Relaxed);
        }
    }

    async fn deliver(&mut self, delivery: AmqpDelivery) -> bool {
        let tag = delivery.delivery_tag;
        self.session.unacked.insert(tag);
        let timestamp_ms = delivery
            .properties
            .timestamp()
            .map(|seconds| seconds.saturating_mul(1000));
        self.feed
            .deliver(Delivery {
                payload: delivery.data,
                location: format!("queue {} delivery tag {tag}", self.config.queue),
                timestamp_ms,
                ack: Ack {
                    session: self.session.id,
                    tag,
                },
            })
            .await
    }

    /// Opens a new session, with backoff: `Ok(false)` if the readers went away meanwhile, an
    /// error once `reconnect_timeout` is spent (or the broker refuses for good).
    async fn reconnect(&mut self) -> Result<bool, ConnectorError> {
        let mut backoff = Reconnect::new(self.config.reconnect_timeout);
        let id = self.session.id + 1;
        loop {
            match Session::open(&self.config, self.worker, id).await {
                Ok(session) => {
                    let old = std::mem::replace(&mut self.session, session);
                    close(&old.connection).await;
                    tracing::info!(
                        "RabbitMQ source (queue {}, worker {}): reconnected to {} {}",
                        self.config.queue,
                        self.worker,
                        self.config.address,
                        backoff.took()
                    );
                    return Ok(true);
                }
                Err(error) => {
                    let delay = backoff.next_delay(error)?;
                    if !self.wait_for_readers(delay).await {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// Waits `delay`, dropping acknowledgements of the lost session as they come; `false` if
    /// the readers are gone.
    async fn wait_for_readers(&mut self, delay: Duration) -> bool {
        let pause = tokio::time::sleep(delay);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => return true,
                acks = self.feed.next_acks() => if acks.is_none() {
                    return false;
                },
            }
        }
    }
}
