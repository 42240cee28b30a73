//! The NATS sink: each worker publishes its records to the subject, on core NATS or, with a
//! stream, as JetStream publishes whose acknowledgements it awaits (a bounded number in flight,
//! retried with backoff, then dead-lettered). See the [module docs](super) for the guarantees.

use std::marker::PhantomData;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::Context;
use async_nats::Client;
use eddy_engine::{ConnectorError, Partition, Record, RecordError, Sink, SinkReport, SinkWriter};
use serde::Serialize;
use tokio::task::JoinSet;

use super::{connect, jetstream_context, open_stream, outside, NatsConfig, Refusal};
use crate::bridge;
use crate::format::Format;

/// The first wait before a publish is tried again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two tries of a publish.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A NATS sink of records of type `T`: publishes each record, encoded as its format says, to
/// a core subject or a JetStream stream (see the [module docs](super)). Each worker opens its
/// own connection.
///
/// ```no_run
/// use eddy_connectors::nats::{NatsConfig, NatsSink};
///
/// #[derive(serde::Serialize)]
/// struct Alert { order: u64, total: f64 }
///
/// let alerts = NatsSink::<Alert>::new(NatsConfig::jetstream("127.0.0.1:4222", "alerts", "ALERTS"));
/// # drop(alerts);
/// ```
pub struct NatsSink<T> {
    config: NatsConfig,
    format: Format,
    _records: PhantomData<fn(T)>,
}

impl<T: Serialize + 'static> NatsSink<T> {
    /// A sink as `config` says, of JSON records.
    pub fn new(config: NatsConfig) -> Self {
        NatsSink {
            config,
            format: Format::Json,
            _records: PhantomData,
        }
    }

    /// Encodes records as `format` (default JSON).
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }
}

impl<T: Serialize + 'static> Sink<T> for NatsSink<T> {
    fn describe(&self) -> String {
        self.config.describe()
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        self.config.check()?;
        let config = self.config.clone();
        let (client, jetstream) = bridge::runtime().block_on(async {
            // A publisher's failures are its records' (retried, then dead-lettered): it keeps
            // no health, so what the client is refused on reconnecting is not consulted.
            let client = connect(&config, 64, &Refusal::default()).await?;
            let jetstream = match &config.stream {
                None => None,
                Some(stream) => {
                    let context = jetstream_context(client.clone());
                    open_stream(&context, &config, stream).await?;
                    Some(context)
                }
            };
            Ok::<_, ConnectorError>((client, jetstream))
        })?;
        Ok(Box::new(NatsWriter {
            location: match &config.stream {
                None => format!("subject {}", config.subject),
                Some(stream) => format!("stream {stream} subject {}", config.subject),
            },
            // Unique per writer, so that message ids never collide across workers and runs.
            id_prefix: format!(
                "eddy-{}-{}-{}",
                std::process::id(),
                partition.index,
                eddy_engine::wall_clock_ms()
            ),
            client,
            jetstream,
            config,
            format: self.format.clone(),
            in_flight: JoinSet::new(),
            published: 0,
            delivered: 0,
            failed: Vec::new(),
            _records: PhantomData,
        }))
    }
}

/// One worker's publisher.
struct NatsWriter<T> {
    client: Client,
    /// The JetStream context when publishing to a stream.
    jetstream: Option<Context>,
    config: NatsConfig,
    format: Format,
    /// Where records go, for dead letters: `subject S` or `stream S subject X`.
    location: String,
    id_prefix: String,
    /// JetStream publishes awaiting their acknowledgement.
    in_flight: JoinSet<Result<(), RecordError>>,
    /// Records published so far (the next message id).
    published: u64,
    /// Records the server has (core: been sent; JetStream: acknowledged).
    delivered: u64,
    /// Records given up on since the engine last asked.
    failed: Vec<RecordError>,
    _records: PhantomData<fn(T)>,
}

impl<T: Serialize + 'static> NatsWriter<T> {
    /// Publishes the encoded records: on core NATS as they come, on JetStream waiting for an
    /// acknowledgement whenever `in_flight` publishes are outstanding.
    async fn publish(&mut self, payloads: Vec<Vec<u8>>) -> Result<(), ConnectorError> {
        for payload in payloads {
            let Some(context) = self.jetstream.clone() else {
                self.client
                    .publish(self.config.subject.clone(), payload.into())
                    .await
                    .map_err(|e| {
                        ConnectorError::external(
                            format!("{}: cannot publish: {e}", self.config.describe()),
                            e,
                        )
                    })?;
                self.delivered += 1;
                continue;
            };
            while self.in_flight.len() >= self.config.in_flight {
                self.settle_one().await;
            }
            let id = format!("{}-{}", self.id_prefix, self.published);
            self.published += 1;
            self.in_flight.spawn(publish_acknowledged(
                context,
                self.config.subject.clone(),
                payload,
                id,
                self.config.retries,
                self.location.clone(),
            ));
        }
        // Take what has settled meanwhile, so failures reach the dead-letter sink early.
        while let Some(settled) = self.in_flight.try_join_next() {
            self.settled(settled);
        }
        Ok(())
    }

    /// Waits for one outstanding publish to settle.
    async fn settle_one(&mut self) {
        if let Some(settled) = self.in_flight.join_next().await {
            self.settled(settled);
        }
    }

    /// Waits until the server has every record published so far: on JetStream until every
    /// publish in flight is acknowledged (or given up, for [`SinkWriter::undeliverable`]), on
    /// core NATS until the server answers a flush. The connection stays open for more writes.
    fn settle_all(&mut self) -> Result<(), ConnectorError> {
        let runtime = bridge::runtime();
        runtime.block_on(async {
            while !self.in_flight.is_empty() {
                self.settle_one().await;
            }
        });
        if self.jetstream.is_none() {
            // The server has every message once it answers the flush's ping.
            let flushed = runtime.block_on(async {
                tokio::time::timeout(self.config.reconnect_timeout, self.client.flush()).await
            });
            let failure = match flushed {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!(
                    "no answer within {:?}",
                    self.config.reconnect_timeout
                )),
            };
            if let Some(failure) = failure {
                return Err(outside(format!(
                    "{}: cannot flush the messages published so far to the server: {failure}; \
                     is it running? (bash scripts/brokers.sh up)",
                    self.config.describe()
                )));
            }
        }
        Ok(())
    }

    fn settled(&mut self, settled: Result<Result<(), RecordError>, tokio::task::JoinError>) {
        match settled {
            Ok(Ok(())) => self.delivered += 1,
            Ok(Err(undelivered)) => self.failed.push(undelivered),
            Err(e) => self.failed.push(RecordError::new(
                self.location.clone(),
                format!("the publish task failed: {e} (a bug in Eddy; please report it)"),
            )),
        }
    }
}

impl<T: Serialize + 'static> SinkWriter<T> for NatsWriter<T> {
    fn write(&mut self, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        let mut payloads = Vec::with_capacity(batch.len());
        for (_, record) in batch.drain(..) {
            let mut bytes = Vec::new();
            match self.format.encode(&record, &mut bytes) {
                Ok(()) => payloads.push(bytes),
                Err(e) => self.failed.push(
                    RecordError::new(
                        self.location.clone(),
                        format!("cannot encode the record as {}: {e}", self.format),
                    )
                    .with_raw(serde_json::to_vec(&record).unwrap_or_default()),
                ),
            }
        }
        bridge::runtime().block_on(self.publish(payloads))
    }

    fn commit(&mut self) -> Result<(), ConnectorError> {
        self.settle_all()
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        self.settle_all()?;
        Ok(SinkReport {
            rows: self.delivered,
            files: Vec::new(),
        })
    }

    fn undeliverable(&mut self) -> Vec<RecordError> {
        std::mem::take(&mut self.failed)
    }
}

/// Publishes one record to JetStream with message id `id` until the server acknowledges it,
/// trying again `retries` times (with backoff) when it does not answer or JetStream is not
/// available; a publish the server refuses is not tried again. The error is the record's
/// dead letter.
async fn publish_acknowledged(
    context: Context,
    subject: String,
    payload: Vec<u8>,
    id: String,
    retries: u32,
    location: String,
) -> Result<(), RecordError> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let message = PublishMessage::build()
            .payload(payload.clone().into())
            .message_id(&id);
        let error = match context.send_publish(subject.clone(), message).await {
            Ok(acknowledgement) => match acknowledgement.await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            },
            Err(e) => e,
        };
        let retryable = matches!(
            error.kind(),
            PublishErrorKind::TimedOut
                | PublishErrorKind::BrokenPipe
                | PublishErrorKind::StreamNotFound
                | PublishErrorKind::MaxAckPending
        );
        if !retryable || attempt > retries {
            let tries = if retryable {
                format!(" after {attempt} attempts")
            } else {
                " (refused; not retried)".to_string()
            };
            return Err(RecordError::new(
                location,
                format!("JetStream did not store the record{tries}: {error}"),
            )
            .with_raw(payload));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
