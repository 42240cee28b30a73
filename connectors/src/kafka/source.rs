//! The Kafka source: one librdkafka consumer per worker, assigned its share of the topic's
//! partitions, feeding the worker's reader through the bridge and committing what the reader
//! handed to the dataflow (semantics in the [module docs](super)).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eddy_engine::{ConnectorError, Partition, Source, SourcePositions, SourceReader};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{broker_error, on_log, unreachable_error, Health, KafkaSourceConfig, StartOffset};
use crate::bridge::{self, BrokerSource, Decoding, Delivery, Feed, NothingToRead, Tracks};
#[cfg(doc)]
use crate::event_time::EventTimeOf;

/// How long one check of a failing broker waits for its metadata.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the source's task waits for the last commit and the consumer's close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A Kafka topic as a source of `T`s (see the [module docs](super)), decoded as JSON unless
/// [`BrokerSource::format`] says otherwise, timed and stopped by [`BrokerSource`]'s methods
/// ([`EventTimeOf::Broker`] is the message timestamp).
pub struct KafkaSource<T> {
    config: KafkaSourceConfig,
    decoding: Decoding<T>,
}

impl<T> BrokerSource<T> for KafkaSource<T> {
    fn decoding_mut(&mut self) -> &mut Decoding<T> {
        &mut self.decoding
    }
}

impl<T: Serialize + 'static> KafkaSource<T> {
    /// Reads as `config` says, with arrival time as event time, until stopped.
    pub fn new(config: KafkaSourceConfig) -> Self {
        KafkaSource {
            config,
            decoding: Decoding::default(),
        }
    }

    /// Where each of `partitions` starts: at `resume`'s offset for those it has (a restore from
    /// a checkpoint), else as the configuration says.
    fn start_offsets(
        &self,
        consumer: &StreamConsumer<SourceContext>,
        partitions: &[i32],
        resume: &Offsets,
    ) -> Result<TopicPartitionList, ConnectorError> {
        let connection = &self.config.connection;
        if resume.resumed {
            let mut list = TopicPartitionList::new();
            for &p in partitions {
                // A partition no record had been read from starts at the beginning: nothing of
                // it is in the committed output.
                let offset = resume
                    .next
                    .get(&p)
                    .map_or(Offset::Beginning, |&n| Offset::Offset(n));
                list.add_partition_offset(&connection.topic, p, offset)
                    .map_err(|e| connection.create_error("partition list", e))?;
            }
            return Ok(list);
        }
        let mut list = TopicPartitionList::new();
        let fixed = match self.config.start {
            StartOffset::Earliest => Some(Offset::Beginning),
            StartOffset::Latest => Some(Offset::End),
            StartOffset::Committed => None,
        };
        for &p in partitions {
            list.add_partition_offset(&connection.topic, p, fixed.unwrap_or(Offset::Invalid))
                .map_err(|e| connection.create_error("partition list", e))?;
        }
        if fixed.is_some() {
            return Ok(list);
        }
        let committed = consumer
            .committed_offsets(list, connection.connect_timeout)
            .map_err(|e| {
                broker_error(format!(
                    "cannot read the committed offsets of consumer group {} for {} within \
                         {:?}: {e}; start=earliest or start=latest ignores them",
                    self.config.group,
                    connection.describe(),
                    connection.connect_timeout
                ))
            })?;
        let mut list = TopicPartitionList::new();
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Offset(n) if n >= 0 => Offset::Offset(n),
                _ => Offset::Beginning,
            };
            list.add_partition_offset(&connection.topic, element.partition(), offset)
                .map_err(|e| connection.create_error("partition list", e))?;
        }
        Ok(list)
    }
}

impl<T> Source<T> for KafkaSource<T>
where
    T: DeserializeOwned + Serialize + Send + 'static,
{
    /// Yes: the group's offsets are committed once what the records produced is committed.
    fn acknowledges(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "kafka({}, group {})",
            self.config.connection.describe(),
            self.config.group
        )
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        self.open_from(partition, Offsets::default())
    }

    /// Resumes at the offsets of the checkpoint: this worker's partitions (`p % workers ==
    /// index`, whatever the old worker count was) from where the old readers had got to.
    fn open_at(
        &self,
        partition: Partition,
        positions: &SourcePositions,
    ) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        let mut resume = Offsets::default();
        // An old worker that had no partition finished at once, with an empty position.
        for position in positions.all().filter(|p| !p.is_empty()) {
            let old: Offsets = serde_json::from_slice(position).map_err(|e| {
                ConnectorError::user(format!(
                    "{}: a checkpoint position does not decode as Kafka offsets ({e}); was the \
                     checkpoint written by another source?",
                    self.describe()
                ))
            })?;
            for (p, next) in old.next {
                let at = resume.next.entry(p).or_insert(next);
                *at = (*at).max(next);
            }
        }
        // Even a checkpoint that had read nothing resumes at explicit offsets.
        resume.resumed = true;
        self.open_from(partition, resume)
    }
}

impl<T> KafkaSource<T>
where
    T: DeserializeOwned + Serialize + Send + 'static,
{
    fn open_from(
        &self,
        partition: Partition,
        resume: Offsets,
    ) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        let config = &self.config;
        let connection = &config.connection;
        let name = format!(
            "kafka source {} (worker {})",
            connection.describe(),
            partition.index
        );
        let (feed, inbox) = bridge::channel(config.capacity);
        let context = SourceContext {
            health: Arc::new(Health::new(name.clone())),
            commits: Health::new(format!(
                "{name}: committing offsets of group {}",
                config.group
            )),
            name,
        };
        let settings = [
            ("group.id", config.group.clone()),
            ("enable.auto.commit", "false".to_string()),
            ("enable.auto.offset.store", "false".to_string()),
            // The end of a partition is reported: an idle exit waits for every one.
            ("enable.partition.eof", "true".to_string()),
            (
                "auto.offset.reset",
                match config.start {
                    StartOffset::Latest => "latest",
                    StartOffset::Committed | StartOffset::Earliest => "earliest",
                }
                .to_string(),
            ),
            // Bound librdkafka's prefetch (see the module docs).
            ("queued.min.messages", "1000".to_string()),
            ("queued.max.messages.kbytes", "4096".to_string()),
        ];
        // The consumer spawns its wake-up task on the runtime it is created in.
        let _runtime = bridge::runtime().enter();
        let consumer: StreamConsumer<SourceContext> = connection
            .client_config(&settings)?
            .create_with_context(context)
            .map_err(|e| connection.create_error("consumer", e))?;
        let serve = || bridge::runtime().block_on(serve_events(&consumer));
        let partitions = connection
            .partitions(consumer.client(), &consumer.context().health, serve)?
            .ok_or_else(|| {
                ConnectorError::user(format!(
                    "topic {} does not exist at Kafka {}: create it first (Eddy's Kafka sink \
                     creates the topics it writes)",
                    connection.topic, connection.brokers
                ))
            })?;
        let mine: Vec<i32> = partitions
            .into_iter()
            .filter(|&p| usize::try_from(p).is_ok_and(|p| p % partition.count == partition.index))
            .collect();
        if mine.is_empty() {
            // More workers than partitions: this one has nothing to read.
            return Ok(Box::new(NothingToRead));
        }
        let assignment = self.start_offsets(&consumer, &mine, &resume)?;
        consumer.assign(&assignment).map_err(|e| {
            broker_error(format!(
                "cannot assign partitions {mine:?} of {} to a consumer: {e}",
                connection.describe()
            ))
        })?;
        let consumer = Arc::new(consumer);
        bridge::runtime().spawn(report_lag(
            Arc::downgrade(&consumer),
            connection.topic.clone(),
            mine.clone(),
            feed.broker_backlog(),
        ));
        // Not caught up until every partition has reported its end.
        feed.set_caught_up(false);
        let task = ConsumerTask {
            consumer,
            partitions: mine.clone(),
            topic: connection.topic.clone(),
            brokers: connection.brokers.clone(),
            commit_interval: config.commit_interval,
            reconnect_timeout: config.reconnect_timeout,
        };
        bridge::runtime().spawn(task.run(feed));
        let mut position = resume;
        position.next.retain(|p, _| mine.contains(p));
        Ok(Box::new(
            self.decoding.channel_reader(inbox).tracked(position),
        ))
    }
}

/// Hands the consumer's pending events to its context (errors reach
/// [`SourceContext::error`] only so). Before partitions are assigned no message can come.
async fn serve_events(consumer: &StreamConsumer<SourceContext>) {
    while tokio::time::timeout(Duration::ZERO, consumer.recv())
        .await
        .is_ok()
    {}
}

/// A reader's position in a topic: per partition, the offset of the next record to read (one
/// past the last one it returned), as checkpoints save it.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
struct Offsets {
    next: BTreeMap<i32, i64>,
    /// Opened from a checkpoint (partitions missing from `next` start at the beginning).
    #[serde(skip)]
    resumed: bool,
}

impl Tracks<Ack> for Offsets {
    fn note(&mut self, ack: &Ack) {
        let next = self.next.entry(ack.partition).or_insert(0);
        *next = (*next).max(ack.offset + 1);
    }

    fn position(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("offsets serialize")
    }
}

/// librdkafka's callbacks for a source's consumer.
struct SourceContext {
    name: String,
    health: Arc<Health>,
    commits: Health,
}

impl ClientContext for SourceContext {
    fn log(&self, _level: RDKafkaLogLevel, facility: &str, message: &str) {
        on_log(&self.name, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition can come this way too: news, not a failure.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        self.health.report(&error, reason);
    }
}

impl ConsumerContext for SourceContext {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) => self.commits.recovered(),
            Err(e) => {
                self.commits.failed(e);
                self.commits
                    .log_failure("the offsets are committed again at the next interval");
            }
        }
    }
}

/// What a reader hands back: the partition and offset of a record it passed on.
struct Ack {
    partition: i32,
    offset: i64,
}

/// The offsets to commit: per partition, one past the last record handed over.
#[derive(Default)]
struct Processed {
    next: BTreeMap<i32, i64>,
    changed: bool,
}

impl Processed {
    /// Records acknowledged tokens. A reader acknowledges a prefix of what it was given, in
    /// order, so the highest offset per partition is the commit point.
    fn record(&mut self, acks: Vec<Ack>) {
        for ack in acks {
            let next = self.next.entry(ack.partition).or_insert(0);
            *next = (*next).max(ack.offset + 1);
            self.changed = true;
        }
    }

    fn offsets(&self, topic: &str) -> KafkaResult<TopicPartitionList> {
        let mut list = TopicPartitionList::new();
        for (&partition, &next) in &self.next {
            list.add_partition_offset(topic, partition, Offset::Offset(next))?;
        }
        Ok(list)
    }
}

/// The client task of one worker's consumer.
struct ConsumerTask {
    consumer: Arc<StreamConsumer<SourceContext>>,
    /// The partitions assigned to it.
    partitions: Vec<i32>,
    topic: String,
    brokers: String,
    commit_interval: Duration,
    reconnect_timeout: Duration,
}

/// How often a source works out its consumer's lag (the backlog the metrics show).
const LAG_EVERY: Duration = Duration::from_secs(1);

/// Every second while the consumer lives: the messages of `partitions` past its position —
/// each partition's high watermark at the broker minus the next offset the consumer will read,
/// for the partitions it has fetched from — into `lag`. It runs beside the consumer task, so it goes on while that task waits for a
/// pipeline that is behind. A failed lookup is skipped; the consumer reports broker trouble.
async fn report_lag(
    consumer: std::sync::Weak<StreamConsumer<SourceContext>>,
    topic: String,
    partitions: Vec<i32>,
    lag: Arc<AtomicU64>,
) {
    loop {
        tokio::time::sleep(LAG_EVERY).await;
        let Some(consumer) = consumer.upgrade() else {
            return;
        };
        let topic = topic.clone();
        let partitions = partitions.clone();
        let measured = tokio::task::spawn_blocking(move || {
            let positions = consumer.position().ok()?;
            let mut total = 0u64;
            for p in partitions {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(1))
                    .ok()?;
                // A partition the consumer has not fetched from yet has no position: not counted.
                if let Some(Offset::Offset(next)) =
                    positions.find_partition(&topic, p).map(|e| e.offset())
                {
                    total += u64::try_from(high - next).unwrap_or(0);
                }
            }
            Some(total)
        })
        .await;
        if let Ok(Some(total)) = measured {
            lag.store(total, Ordering::Relaxed);
        }
    }
}

impl ConsumerTask {
    async fn run(self, mut feed: Feed<Ack>) {
        let mut processed = Processed::default();
        let mut tick = tokio::time::interval(self.commit_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let health = Arc::clone(&self.consumer.context().health);
        // The partitions whose end the consumer has reached, with no message since.
        let mut at_end = std::collections::BTreeSet::new();
        let failed = loop {
            tokio::select! {
                biased;
                acks = feed.next_acks() => match acks {
                    Some(acks) => processed.record(acks),
                    None => break false,
                },
                _ = tick.tick() => {
                    self.commit(&mut processed, CommitMode::Async);
                    if let Err(error) = self.check_broker(&health).await {
                        feed.fail(error).await;
                        break true;
                    }
                }
                message = self.consumer.recv() => match message {
                    Ok(message) => {
                        if at_end.remove(&message.partition()) {
                            feed.set_caught_up(false);
                        }
                        let delivery = delivery(&message);
                        drop(message);
                        // Waits while the channel is full: librdkafka's bounded prefetch
                        // fills, then its fetches stop.
                        if !feed.deliver(delivery).await {
                            break false;
                        }
                    }
                    Err(KafkaError::PartitionEOF(partition)) => {
                        at_end.insert(partition);
                        feed.set_caught_up(at_end.len() == self.partitions.len());
                    }
                    Err(error) => health.failed(error),
                },
            }
        };
        // Every reader is gone (or the run failed): take the last tokens, commit them (unless
        // the broker is gone), and destroy the consumer before telling the readers, so nothing
        // of it outlives the run.
        while let Some(acks) = feed.next_acks().await {
            processed.record(acks);
        }
        // Commit even when nothing moved since the last asynchronous commit: its outcome may
        // not have come back yet.
        processed.changed = true;
        let name = self.consumer.context().name.clone();
        let closing = tokio::task::spawn_blocking(move || {
            if !failed {
                self.commit(&mut processed, CommitMode::Sync);
            }
            drop(self);
        });
        if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
            tracing::warn!(
                "{name}: the last commit did not finish within {CLOSE_TIMEOUT:?}; records \
                 handed over since the commit before are read again by the next run"
            );
        }
        feed.closed();
    }

    /// Commits the processed offsets if they moved, or if the last commit failed.
    fn commit(&self, processed: &mut Processed, mode: CommitMode) {
        let commits = &self.consumer.context().commits;
        if processed.next.is_empty() || !processed.changed && commits.failing_since().is_none() {
            return;
        }
        processed.changed = false;
        let result = processed
            .offsets(&self.topic)
            .and_then(|offsets| self.consumer.commit(&offsets, mode));
        match (result, mode) {
            (Err(e), _) => {
                commits.failed(e);
                commits.log_failure("the offsets are committed again at the next interval");
            }
            (Ok(()), CommitMode::Sync) => commits.recovered(),
            // The commit callback reports the outcome.
            (Ok(()), CommitMode::Async) => {}
        }
    }

    /// While librdkafka reports errors, asks the broker for the topic's metadata: an answer
    /// ends the failure; no answer for `reconnect_timeout`, or an error retrying cannot fix,
    /// fails the run.
    async fn check_broker(&self, health: &Health) -> Result<(), ConnectorError> {
        if let Some(error) = health.unfixable() {
            return Err(error);
        }
        let Some(since) = health.failing_since() else {
            return Ok(());
        };
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        let answered = tokio::task::spawn_blocking(move || {
            consumer.fetch_metadata(Some(&topic), PROBE_TIMEOUT).is_ok()
        })
        .await
        .unwrap_or(false);
        if answered {
            health.recovered();
        } else if since.elapsed() >= self.reconnect_timeout {
            return Err(unreachable_error(
                health,
                &self.brokers,
                self.reconnect_timeout,
            ));
        } else {
            health.log_failure(&format!(
                "librdkafka reconnects; the run fails if the broker does not answer within {:?}",
                self.reconnect_timeout
            ));
        }
        Ok(())
    }
}

/// The bridge's delivery of a message.
fn delivery(message: &BorrowedMessage<'_>) -> Delivery<Ack> {
    Delivery {
        payload: message.payload().unwrap_or_default().to_vec(),
        location: format!(
            "partition {} offset {}",
            message.partition(),
            message.offset()
        ),
        timestamp_ms: message
            .timestamp()
            .to_millis()
            .and_then(|t| u64::try_from(t).ok()),
        ack: Ack {
            partition: message.partition(),
            offset: message.offset(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_point_is_one_past_the_highest_offset_per_partition() {
        let mut processed = Processed::default();
        processed.record(vec![
            Ack {
                partition: 1,
                offset: 4,
            },
            Ack {
                partition: 0,
                offset: 7,
            },
            Ack {
                partition: 1,
                offset: 5,
            },
        ]);
        processed.record(vec![Ack {
            partition: 0,
            offset: 9,
        }]);
        assert!(processed.changed);
        let list = processed.offsets("t").unwrap();
        let offsets: Vec<(i32, Offset)> = list
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
        assert_eq!(
            offsets,
            vec![(0, Offset::Offset(10)), (1, Offset::Offset(6))]
        );
    }
}
