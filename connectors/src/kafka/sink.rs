//! The Kafka sink: one librdkafka producer per worker; a record counts as written once its
//! delivery report says the broker has it, and one the broker never took is handed back to
//! the engine as undeliverable (semantics in the [module docs](super)).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use eddy_engine::{ConnectorError, Partition, Record, RecordError, Sink, SinkReport, SinkWriter};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message};
use serde::Serialize;
use serde_json::Value;

use super::{broker_error, on_log, Health, KafkaConnection, KafkaSinkConfig};
use crate::bridge;
use crate::format::Format;

/// How long a full writer waits for delivery reports at a time.
const REPORT_WAIT: Duration = Duration::from_millis(100);

/// How much longer than `delivery_timeout` `commit` and `finish` wait for the reports.
const FLUSH_MARGIN: Duration = Duration::from_secs(10);

/// How long one step of the flush of `commit` and `finish` waits.
const FLUSH_STEP: Duration = Duration::from_millis(500);

/// A Kafka topic as a sink of `T`s (see the [module docs](super)).
pub struct KafkaSink<T> {
    config: KafkaSinkConfig,
    _marker: PhantomData<fn(T)>,
}

impl<T> KafkaSink<T> {
    /// Writes as `config` says.
    pub fn new(config: KafkaSinkConfig) -> Self {
        KafkaSink {
            config,
            _marker: PhantomData,
        }
    }
}

impl<T: Serialize + 'static> Sink<T> for KafkaSink<T> {
    fn describe(&self) -> String {
        format!("kafka({})", self.config.connection.describe())
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        let config = &self.config;
        let connection = &config.connection;
        let name = format!(
            "kafka sink {} (worker {})",
            connection.describe(),
            partition.index
        );
        let reports = Arc::new(Reports {
            in_flight: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            failed: Mutex::new(Vec::new()),
            health: Health::new(name.clone()),
            topic: connection.topic.clone(),
            brokers: connection.brokers.clone(),
            name,
        });
        let settings = [
            ("acks", "all".to_string()),
            (
                "message.timeout.ms",
                config.delivery_timeout.as_millis().max(1).to_string(),
            ),
            (
                "queue.buffering.max.messages",
                config.in_flight.max(1).to_string(),
            ),
        ];
        let producer: BaseProducer<SinkContext> = connection
            .client_config(&settings)?
            .create_with_context(SinkContext(Arc::clone(&reports)))
            .map_err(|e| connection.create_error("producer", e))?;
        let serve = || producer.poll(Duration::ZERO);
        if connection
            .partitions(producer.client(), &reports.health, serve)?
            .is_none()
        {
            create_topic(connection, config.partitions)?;
        }
        Ok(Box::new(KafkaWriter {
            producer,
            reports,
            format: config.format.clone(),
            key: config.key.clone(),
            in_flight: config.in_flight.max(1),
            delivery_timeout: config.delivery_timeout,
            payload: Vec::new(),
            _marker: PhantomData,
        }))
    }
}

/// Creates the sink's topic (several workers may race to: the losers find it exists).
fn create_topic(connection: &KafkaConnection, partitions: i32) -> Result<(), ConnectorError> {
    let admin: AdminClient<DefaultClientContext> = connection
        .client_config(&[])?
        .create()
        .map_err(|e| connection.create_error("admin client", e))?;
    let topic = NewTopic::new(&connection.topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(connection.connect_timeout));
    let created = bridge::runtime()
        .block_on(admin.create_topics([&topic], &options))
        .map_err(|e| e.to_string())
        .and_then(|results| match results.into_iter().next() {
            Some(Ok(_)) | Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => Ok(()),
            Some(Err((_, code))) => Err(code.to_string()),
        });
    created.map_err(|e| {
        ConnectorError::user(format!(
            "topic {} does not exist at Kafka {} and creating it ({partitions} partitions) \
             failed: {e}; create it first",
            connection.topic, connection.brokers
        ))
    })
}

/// What the delivery reports of one writer's producer said.
struct Reports {
    in_flight: AtomicUsize,
    delivered: AtomicU64,
    failed: Mutex<Vec<RecordError>>,
    health: Health,
    topic: String,
    brokers: String,
    name: String,
}

impl Reports {
    fn give_up(&self, error: RecordError) {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(error);
    }

    /// Where a record was sent, for dead letters.
    fn location(&self, partition: Option<i32>) -> String {
        match partition {
            Some(p) if p >= 0 => format!("topic {} partition {p}", self.topic),
            _ => format!("topic {}", self.topic),
        }
    }
}

/// librdkafka's callbacks for a sink's producer.
struct SinkContext(Arc<Reports>);

impl ClientContext for SinkContext {
    fn log(&self, _level: RDKafkaLogLevel, facility: &str, message: &str) {
        on_log(&self.0.name, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.health.report(&error, reason);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let reports = &self.0;
        reports.in_flight.fetch_sub(1, Ordering::AcqRel);
        match result {
            Ok(_) => {
                reports.delivered.fetch_add(1, Ordering::Relaxed);
                reports.health.recovered();
            }
            Err((error, message)) => reports.give_up(
                RecordError::new(
                    reports.location(Some(message.partition())),
                    format!("not delivered to Kafka at {}: {error}", reports.brokers),
                )
                .with_raw(message.payload().unwrap_or_default()),
            ),
        }
    }
}

/// One worker's producer.
struct KafkaWriter<T> {
    producer: BaseProducer<SinkContext>,
    reports: Arc<Reports>,
    format: Format,
    key: Option<String>,
    in_flight: usize,
    delivery_timeout: Duration,
    payload: Vec<u8>,
    _marker: PhantomData<fn(T)>,
}

impl<T: Serialize + 'static> KafkaWriter<T> {
    /// Waits for delivery reports while `in_flight` records wait for theirs. librdkafka gives
    /// up on a record after `delivery_timeout`, so this ends.
    fn wait_for_room(&self) -> Result<(), ConnectorError> {
        while self.reports.in_flight.load(Ordering::Acquire) >= self.in_flight {
            self.producer.poll(REPORT_WAIT);
            self.check_trouble()?;
        }
        Ok(())
    }

    /// Waits until every record sent so far has its delivery report: afterwards each is
    /// either stored by the broker (with `acks=all`) or handed to
    /// [`SinkWriter::undeliverable`]. Fails when the reports do not come within
    /// `delivery_timeout` and a margin. The producer stays usable for more writes.
    fn flush_all(&self) -> Result<(), ConnectorError> {
        let wait = self.delivery_timeout + FLUSH_MARGIN;
        let deadline = Instant::now() + wait;
        // Flush in steps, to log a broker outage while waiting for the reports.
        while let Err(e) = self.producer.flush(FLUSH_STEP) {
            self.check_trouble()?;
            if Instant::now() >= deadline {
                return Err(broker_error(format!(
                    "{} records sent to {} got no delivery report within {wait:?}: {e}",
                    self.reports.in_flight.load(Ordering::Acquire),
                    self.reports.name
                )));
            }
        }
        Ok(())
    }

    /// Fails on an error retrying cannot fix; logs, once, that librdkafka reports others (the
    /// broker is unreachable).
    fn check_trouble(&self) -> Result<(), ConnectorError> {
        if let Some(error) = self.reports.health.unfixable() {
            return Err(error);
        }
        if self.reports.health.failing_since().is_some() {
            self.reports.health.log_failure(&format!(
                "librdkafka retries each record for up to {:?}, then it is dead-lettered",
                self.delivery_timeout
            ));
        }
        Ok(())
    }

    /// Sends the encoded record in `self.payload`, waiting while librdkafka's queue is full.
    fn send(&self, key: Option<&[u8]>) {
        let reports = &self.reports;
        loop {
            let mut record = BaseRecord::<[u8], [u8]>::to(&reports.topic).payload(&self.payload);
            if let Some(key) = key {
                record = record.key(key);
            }
            match self.producer.send(record) {
                Ok(()) => {
                    reports.in_flight.fetch_add(1, Ordering::AcqRel);
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(REPORT_WAIT);
                }
                Err((error, _)) => {
                    reports.give_up(
                        RecordError::new(
                            reports.location(None),
                            format!("Kafka at {} refused the record: {error}", reports.brokers),
                        )
                        .with_raw(self.payload.clone()),
                    );
                    return;
                }
            }
        }
    }
}

/// The message key of `record`: its field `field` (a string as its text, anything else as
/// JSON); none when the field is missing or null.
fn key_of<T: Serialize>(record: &T, field: &str) -> Option<Vec<u8>> {
    match serde_json::to_value(record).ok()?.get(field)? {
        Value::Null => None,
        Value::String(text) => Some(text.clone().into_bytes()),
        other => Some(other.to_string().into_bytes()),
    }
}

impl<T: Serialize + 'static> SinkWriter<T> for KafkaWriter<T> {
    fn write(&mut self, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        for (_, record) in batch.drain(..) {
            self.payload.clear();
            if let Err(e) = self.format.encode(&record, &mut self.payload) {
                self.reports.give_up(
                    RecordError::new(
                        self.reports.location(None),
                        format!("cannot encode the record as {}: {e}", self.format),
                    )
                    .with_raw(serde_json::to_vec(&record).unwrap_or_default()),
                );
                continue;
            }
            let key = self.key.as_deref().and_then(|field| key_of(&record, field));
            self.wait_for_room()?;
            self.send(key.as_deref());
        }
        self.producer.poll(Duration::ZERO);
        self.check_trouble()
    }

    fn on_watermark(&mut self, _watermark: u64) -> Result<(), ConnectorError> {
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    fn commit(&mut self) -> Result<(), ConnectorError> {
        self.flush_all()
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        self.flush_all()?;
        Ok(SinkReport {
            rows: self.reports.delivered.load(Ordering::Acquire),
            files: Vec::new(),
        })
    }

    fn undeliverable(&mut self) -> Vec<RecordError> {
        std::mem::take(
            &mut *self
                .reports
                .failed
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Order {
        user: String,
        shop: u32,
        note: Option<String>,
    }

    #[test]
    fn keys_come_from_a_field_as_text_or_json() {
        let order = Order {
            user: "ada".into(),
            shop: 7,
            note: None,
        };
        assert_eq!(key_of(&order, "user"), Some(b"ada".to_vec()));
        assert_eq!(key_of(&order, "shop"), Some(b"7".to_vec()));
        assert_eq!(key_of(&order, "note"), None, "null: no key");
        assert_eq!(key_of(&order, "missing"), None);
        let dynamic = serde_json::json!({"user": {"id": 1}});
        assert_eq!(key_of(&dynamic, "user"), Some(br#"{"id":1}"#.to_vec()));
    }
}
