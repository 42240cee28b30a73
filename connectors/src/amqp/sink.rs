//! The RabbitMQ sink: persistent publishes with publisher confirms, a bounded number in flight,
//! retries of refused records and then the dead-letter sink (see the [module docs](super)).

use std::collections::{HashSet, VecDeque};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_engine::{ConnectorError, Partition, Record, RecordError, Sink, SinkReport, SinkWriter};
use futures_util::FutureExt;
use lapin::message::BasicReturnMessage;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind, PublisherConfirm};
use serde::Serialize;

use super::{
    bind_queue, broker_error, close, connect, create_channel, describe, open_queue, AmqpConfig,
    Reconnect,
};
use crate::bridge;
use crate::format::Format;

/// The header that counts how often a record was published again after the broker refused
/// it (absent on a first publish).
const ATTEMPT_HEADER: &str = "x-eddy-attempt";

/// A sink that publishes each record as one persistent RabbitMQ message, encoded as `format`.
pub struct AmqpSink<T> {
    config: Arc<AmqpConfig>,
    format: Format,
    _records: PhantomData<fn(T)>,
}

impl<T> AmqpSink<T> {
    /// Publishes to the exchange and routing key `config` names, each record encoded as
    /// `format`.
    pub fn new(config: AmqpConfig, format: Format) -> Self {
        AmqpSink {
            config: Arc::new(config),
            format,
            _records: PhantomData,
        }
    }
}

impl<T: Serialize + 'static> Sink<T> for AmqpSink<T> {
    fn describe(&self) -> String {
        format!("amqp({} {})", self.config.address, self.config.target())
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        let link = bridge::runtime().block_on(Link::open(&self.config, partition.index))?;
        Ok(Box::new(AmqpWriter {
            config: Arc::clone(&self.config),
            format: self.format.clone(),
            worker: partition.index,
            link: Some(link),
            lost: None,
            backlog: VecDeque::new(),
            waiting: VecDeque::new(),
            returned: HashSet::new(),
            refused: Vec::new(),
            confirmed: 0,
            next_seq: 0,
            _records: PhantomData,
        }))
    }
}

/// A connection and its channel in confirm mode.
struct Link {
    connection: Connection,
    channel: Channel,
}

impl Link {
    /// Connects, checks the exchange exists, declares (and binds) the queue when configured,
    /// and turns on publisher confirms.
    async fn open(config: &AmqpConfig, worker: usize) -> Result<Self, ConnectorError> {
        let connection = connect(config, &format!("sink {} #{worker}", config.target())).await?;
        let channel = if config.declare && !config.queue.is_empty() {
            open_queue(&connection, config).await?
        } else {
            create_channel(&connection, config).await?
        };
        if !config.exchange.is_empty() {
            let passive = ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(
                    config.exchange.as_str().into(),
                    ExchangeKind::Direct,
                    passive,
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    broker_error(
                        config,
                        &format!(
                            "cannot use exchange '{}' (declare it first; Eddy does not)",
                            config.exchange
                        ),
                        e,
                    )
                })?;
            if config.declare && !config.queue.is_empty() {
                bind_queue(&channel, config).await?;
            }
        }
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| broker_error(config, "cannot turn on publisher confirms", e))?;
        Ok(Link {
            connection,
            channel,
        })
    }
}

/// One record on its way to the broker.
struct Outgoing {
    /// The writer's number for it, in its message id: `eddy-{worker}-{seq}`.
    seq: u64,
    payload: Vec<u8>,
    /// Its event time, in seconds (the AMQP `timestamp` property).
    timestamp: u64,
    /// How often it was published again after a refusal.
    attempt: u32,
    /// Not to be published again before this (after a refusal).
    due: Option<Instant>,
}

/// One worker's publisher.
struct AmqpWriter<T> {
    config: Arc<AmqpConfig>,
    format: Format,
    worker: usize,
    /// `None` after the connection was lost, until it is opened again.
    link: Option<Link>,
    /// When the connection was lost, if it is down.
    lost: Option<Reconnect>,
    /// Records to publish, oldest first.
    backlog: VecDeque<Outgoing>,
    /// Records published and not yet confirmed, in publish order.
    waiting: VecDeque<(Outgoing, PublisherConfirm)>,
    /// Sequence numbers of waiting records the broker has returned as unroutable.
    returned: HashSet<u64>,
    /// Records given up on, for [`SinkWriter::undeliverable`].
    refused: Vec<RecordError>,
    confirmed: u64,
    next_seq: u64,
    _records: PhantomData<fn(T)>,
}

impl<T: Serialize + 'static> SinkWriter<T> for AmqpWriter<T> {
    fn write(&mut self, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        for (time, record) in batch.drain(..) {
            let seq = self.next_seq;
            self.next_seq += 1;
            let mut payload = Vec::new();
            if let Err(error) = self.format.encode(&record, &mut payload) {
                let raw = serde_json::to_vec(&record).unwrap_or_default();
                self.refused.push(
                    RecordError::new(
                        self.location(seq),
                        format!("cannot encode the record as {}: {error}", self.format),
                    )
                    .with_raw(raw),
                );
                continue;
            }
            self.backlog.push_back(Outgoing {
                seq,
                payload,
                timestamp: time / 1000,
                attempt: 0,
                due: None,
            });
        }
        bridge::runtime().block_on(async {
            self.drive(self.config.in_flight).await?;
            self.settle_ready();
            Ok(())
        })
    }

    fn commit(&mut self) -> Result<(), ConnectorError> {
        bridge::runtime().block_on(self.settle_all())
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        bridge::runtime().block_on(async {
            self.settle_all().await?;
            if let Some(link) = self.link.take() {
                close(&link.connection).await;
            }
            Ok::<_, ConnectorError>(())
        })?;
        Ok(SinkReport {
            rows: self.confirmed,
            files: Vec::new(),
        })
    }

    fn undeliverable(&mut self) -> Vec<RecordError> {
        std::mem::take(&mut self.refused)
    }
}

impl<T> AmqpWriter<T> {
    fn location(&self, seq: u64) -> String {
        format!(
            "{} {} message eddy-{}-{seq}",
            self.config.address,
            self.config.target(),
            self.worker
        )
    }

    /// Publishes the backlog, waiting for confirms whenever `in_flight` are waiting, until the
    /// backlog is empty and at most `max_waiting` publishes wait for their confirms.
    async fn drive(&mut self, max_waiting: usize) -> Result<(), ConnectorError> {
        loop {
            while self.waiting.len() < self.config.in_flight {
                let Some(due) = self.backlog.front().map(|out| out.due) else {
                    break;
                };
                if let Some(due) = due.filter(|due| *due > Instant::now()) {
                    if !self.waiting.is_empty() {
                        break;
                    }
                    tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
                }
                if let Some(out) = self.backlog.pop_front() {
                    self.publish(out).await?;
                }
            }
            if self.backlog.is_empty() && self.waiting.len() <= max_waiting {
                return Ok(());
            }
            if let Some((out, mut confirm)) = self.waiting.pop_front() {
                let confirmation = (&mut confirm).await;
                self.settle(out, confirm, confirmation);
            }
        }
    }

    /// Publishes the whole backlog and waits until the broker confirmed every publish (records
    /// it refused are published again until their retries are spent, then handed to
    /// [`SinkWriter::undeliverable`]): afterwards every record written so far is either stored
    /// by the broker or undeliverable. The connection stays open for more writes.
    async fn settle_all(&mut self) -> Result<(), ConnectorError> {
        self.drive(0).await
    }

    /// Settles the confirms that have already come, oldest first, without waiting.
    fn settle_ready(&mut self) {
        while let Some((out, mut confirm)) = self.waiting.pop_front() {
            match (&mut confirm).now_or_never() {
                Some(confirmation) => self.settle(out, confirm, confirmation),
                None => {
                    self.waiting.push_front((out, confirm));
                    return;
                }
            }
        }
    }

    /// Publishes one record (reconnecting first if the connection is down).
    async fn publish(&mut self, out: Outgoing) -> Result<(), ConnectorError> {
        let channel = match &self.link {
            Some(link) => link.channel.clone(),
            None => self.relink().await?,
        };
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(content_type(&self.format).into())
            .with_message_id(format!("eddy-{}-{}", self.worker, out.seq).into())
            .with_timestamp(out.timestamp);
        if out.attempt > 0 {
            let mut headers = FieldTable::default();
            headers.insert(
                ATTEMPT_HEADER.into(),
                AMQPValue::LongLongInt(i64::from(out.attempt)),
            );
            properties = properties.with_headers(headers);
        }
        let options = BasicPublishOptions {
            mandatory: self.config.mandatory,
            immediate: false,
        };
        let published = channel
            .basic_publish(
                self.config.exchange.as_str().into(),
                self.config.routing_key().into(),
                options,
                &out.payload,
                properties,
            )
            .await;
        match published {
            Ok(confirm) => self.waiting.push_back((out, confirm)),
            Err(error) => {
                self.backlog.push_front(out);
                self.lose(&error);
            }
        }
        Ok(())
    }

    /// What the broker said about one published record.
    fn settle(
        &mut self,
        out: Outgoing,
        confirm: PublisherConfirm,
        confirmation: Result<Confirmation, lapin::Error>,
    ) {
        let (acked, returned) = match confirmation {
            Ok(Confirmation::Ack(returned)) => (true, returned),
            Ok(Confirmation::Nack(returned)) => (false, returned),
            Ok(Confirmation::NotRequested) => (true, None),
            Err(error) => {
                // The connection or channel failed before the broker confirmed: publish it,
                // and everything after it, again.
                self.waiting.push_front((out, confirm));
                self.lose(&error);
                return;
            }
        };
        // The broker returns an unroutable message before it confirms it, and the client
        // hands the return to whichever confirm comes next: find whose it is by its id.
        let returned_here = returned.and_then(|message| self.take_return(message, out.seq));
        if let Some(reason) = returned_here {
            self.refuse(out, reason);
        } else if self.returned.remove(&out.seq) {
            self.refuse(out, "unroutable: no queue is bound to take it".to_string());
        } else if !acked {
            self.refuse(out, "the broker nacked it".to_string());
        } else {
            self.confirmed += 1;
        }
    }

    /// Handles a returned message: `Some(reason)` when it is `seq`'s own; a waiting record's is
    /// remembered for when its confirm comes; a record already counted as delivered is
    /// uncounted and retried from the returned copy.
    fn take_return(&mut self, message: BasicReturnMessage, seq: u64) -> Option<String> {
        let reason = format!(
            "returned by the broker: {} {}",
            message.reply_code, message.reply_text
        );
        let properties = &message.delivery.properties;
        let returned_seq = properties
            .message_id()
            .as_ref()
            .and_then(|id| id.as_str().rsplit('-').next()?.parse::<u64>().ok())?;
        if returned_seq == seq {
            return Some(reason);
        }
        if self.waiting.iter().any(|(out, _)| out.seq == returned_seq) {
            self.returned.insert(returned_seq);
            return None;
        }
        self.confirmed = self.confirmed.saturating_sub(1);
        let attempt = properties
            .headers()
            .as_ref()
            .and_then(|headers| match headers.inner().get(ATTEMPT_HEADER) {
                Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).ok(),
                _ => None,
            })
            .unwrap_or(0);
        let out = Outgoing {
            seq: returned_seq,
            timestamp: properties.timestamp().unwrap_or_default(),
            payload: message.delivery.data,
            attempt,
            due: None,
        };
        self.refuse(out, reason);
        None
    }

    /// Publishes a refused record again after a pause, or gives up on it once its retries are
    /// spent.
    fn refuse(&mut self, mut out: Outgoing, reason: String) {
        if out.attempt < self.config.retries {
            out.attempt += 1;
            out.due = Some(Instant::now() + Duration::from_millis(100) * out.attempt);
            self.backlog.push_back(out);
        } else {
            let tries = out.attempt + 1;
            let message = format!(
                "RabbitMQ did not take it ({reason}) after {tries} attempt{}; check that a \
                 queue is bound to {}",
                if tries == 1 { "" } else { "s" },
                self.config.target()
            );
            let location = self.location(out.seq);
            self.refused
                .push(RecordError::new(location, message).with_raw(out.payload));
        }
    }

    /// The connection or channel failed: every unconfirmed record goes back to the front of
    /// the backlog, to be published again once the connection is back.
    fn lose(&mut self, error: &lapin::Error) {
        if self.lost.is_none() {
            tracing::warn!(
                "RabbitMQ sink ({}, worker {}): lost the connection to {}: {}; \
                 reconnecting for up to {}",
                self.config.target(),
                self.worker,
                self.config.address,
                describe(error),
                humantime::format_duration(self.config.reconnect_timeout)
            );
            self.lost = Some(Reconnect::new(self.config.reconnect_timeout));
        }
        while let Some((out, _)) = self.waiting.pop_back() {
            self.backlog.push_front(out);
        }
        self.returned.clear();
        self.link = None;
    }

    /// Opens the connection again, with backoff, or fails once `reconnect_timeout` is spent.
    async fn relink(&mut self) -> Result<Channel, ConnectorError> {
        let backoff = self
            .lost
            .get_or_insert_with(|| Reconnect::new(self.config.reconnect_timeout));
        loop {
            match Link::open(&self.config, self.worker).await {
                Ok(link) => {
                    tracing::info!(
                        "RabbitMQ sink ({}, worker {}): reconnected to {} {}",
                        self.config.target(),
                        self.worker,
                        self.config.address,
                        backoff.took()
                    );
                    let channel = link.channel.clone();
                    self.link = Some(link);
                    self.lost = None;
                    return Ok(channel);
                }
                Err(error) => tokio::time::sleep(backoff.next_delay(error)?).await,
            }
        }
    }
}

/// The `content_type` property of messages in `format`.
fn content_type(format: &Format) -> &'static str {
    match format {
        Format::Json => "application/json",
        Format::Csv(_) => "text/csv",
        Format::Raw => "application/octet-stream",
    }
}
