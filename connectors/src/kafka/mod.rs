//! Kafka: a source reading a topic's partitions, spread over the workers, and a sink publishing
//! to a topic, through the rdkafka crate (librdkafka, bundled and built with cmake, with zlib
//! and zstd: every Kafka compression codec; no TLS or SASL in this build).
//!
//! **Source** ([`KafkaSource`]). Worker `i` of `n` reads the partitions `p` with `p % n == i`,
//! assigned directly from the topic's metadata when the worker opens the source (no group
//! join, so no rebalance pauses; a worker left without a partition is done at once; partitions
//! added later are read from the next run on). Each partition starts at the consumer group's
//! committed offset, or at its earliest (or latest) offset ([`StartOffset`]). Messages reach
//! the workers through the [bridge](crate::bridge): once a worker has handed a record to the
//! dataflow, the client task records `offset + 1` of its partition and commits it to the
//! group every `commit_interval` and when the source shuts down. A message that does not decode
//! is dead-lettered with its bytes and its location `partition P offset O`, and committed like
//! the others. The broker timestamp ([`EventTimeOf::Broker`](crate::EventTimeOf)) is the
//! message's timestamp.
//!
//! *Guarantee:* at-least-once. What was committed is never read again by the same group;
//! what was handed over but not yet committed when the process died or the broker went away is
//! read again by the next run.
//!
//! *Memory:* when the pipeline falls behind, the client task stops polling librdkafka, whose
//! prefetch is bounded by `queued.max.messages.kbytes` (4 MiB here, librdkafka's default is
//! 64 MiB) and `queued.min.messages` (1 000 messages per partition, default 100 000); fetches
//! stop once that queue is full. Per worker that is at most about 4 MiB queued, plus one fetch
//! response (`fetch.max.bytes`, capped at the same 4 MiB), plus the bridge channel's
//! `capacity` messages.
//!
//! *Broker failures:* librdkafka reconnects by itself (backoff 100 ms doubling to 1 s). The
//! source logs one line to stderr when the broker stops answering and one when it answers
//! again, never one per record; when it has not answered for `reconnect_timeout` (default 60 s)
//! the run fails with an error naming the broker.
//!
//! **Sink** ([`KafkaSink`]). Each worker's writer produces to the topic, keyed by a field of the
//! record (`key`) or without a key (librdkafka's partitioner then spreads records). A record is
//! delivered when the broker's delivery report says so (`acks=all`); librdkafka retries on its
//! own for `delivery_timeout`, and a record that still fails — or cannot be encoded — is handed to
//! the engine as undeliverable (the pipeline's dead letters). At most `in_flight` records wait
//! for their reports at once; `commit` and `finish` flush and wait for every report. The sink creates the
//! topic with `partitions` partitions when it does not exist.
//!
//! *Guarantee:* at-least-once (a retry after a lost acknowledgement can write a record twice).
//!
//! Options (URI query parameters for [`crate::endpoints`], fields of [`KafkaSourceConfig`] and
//! [`KafkaSinkConfig`]) are listed in docs/connectors.md; any librdkafka setting can be passed as
//! `rdkafka.<name>=<value>` and overrides Eddy's.

mod sink;
mod source;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use eddy_engine::{ConnectorError, Fault};
use rdkafka::client::Client;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};

use crate::endpoints::{configured, DynSink, DynSource, EndpointOptions};
use crate::format::Format;
use crate::uri::Endpoint;

pub use sink::KafkaSink;
pub use source::KafkaSource;

/// Kafka's port when a URI gives none.
pub const DEFAULT_PORT: u16 = 9092;

/// Where a partition starts when the source opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartOffset {
    /// The consumer group's committed offset; the earliest offset where it has none.
    #[default]
    Committed,
    /// The earliest offset the broker still holds, whatever the group committed.
    Earliest,
    /// The end of the partition: only messages published after the source opened.
    Latest,
}

impl FromStr for StartOffset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "committed" => Ok(StartOffset::Committed),
            "earliest" => Ok(StartOffset::Earliest),
            "latest" => Ok(StartOffset::Latest),
            other => Err(format!(
                "'{other}' is not a start: use committed, earliest or latest"
            )),
        }
    }
}

/// The broker and topic a source or sink talks to, and the settings both share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConnection {
    /// The bootstrap brokers, `HOST:PORT[,HOST:PORT...]`.
    pub brokers: String,
    /// The topic.
    pub topic: String,
    /// How long opening the source or sink waits for the broker's metadata before it fails
    /// (default 5 s; option `connect_timeout`).
    pub connect_timeout: Duration,
    /// librdkafka settings applied after Eddy's, overriding them (options
    /// `rdkafka.<name>=<value>`; see librdkafka's CONFIGURATION.md).
    pub rdkafka: BTreeMap<String, String>,
}

impl KafkaConnection {
    /// `topic` on the brokers `brokers`, with the default settings.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaConnection {
            brokers: brokers.into(),
            topic: topic.into(),
            connect_timeout: Duration::from_secs(5),
            rdkafka: BTreeMap::new(),
        }
    }

    fn from_endpoint(endpoint: &Endpoint) -> Result<Self, ConnectorError> {
        let mut connection =
            KafkaConnection::new(endpoint.address(DEFAULT_PORT), endpoint.name("topic")?);
        if let Some(timeout) = endpoint.duration_param("connect_timeout")? {
            connection.connect_timeout = timeout;
        }
        connection.rdkafka = endpoint
            .params
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(RDKAFKA_PREFIX)?.to_string(), v.clone())))
            .collect();
        Ok(connection)
    }

    /// `brokers/topic`, for descriptions and errors.
    fn describe(&self) -> String {
        format!("{}/{}", self.brokers, self.topic)
    }

    /// librdkafka's configuration: Eddy's settings (`ours`), then the user's.
    fn client_config(&self, ours: &[(&str, String)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "eddy")
            // Reconnect quickly on loopback and in tests; librdkafka's default backoff grows
            // to 10 s.
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "1000")
            .set_log_level(RDKafkaLogLevel::Warning);
        for (name, value) in ours {
            config.set(*name, value);
        }
        for (name, value) in &self.rdkafka {
            config.set(name, value);
        }
        config
    }

    /// The error for a client librdkafka refused to create (a bad `rdkafka.*` setting).
    fn create_error(&self, what: &str, error: KafkaError) -> ConnectorError {
        ConnectorError::user(format!(
            "cannot create a Kafka {what} for {}: {error}; check the rdkafka.* options",
            self.describe()
        ))
    }

    /// The topic's partitions, from the broker's metadata: fails (within `connect_timeout`)
    /// when the broker does not answer, and with `Ok(None)` when the topic does not exist.
    fn partitions<C: ClientContext>(
        &self,
        client: &Client<C>,
    ) -> Result<Option<Vec<i32>>, ConnectorError> {
        let metadata = client
            .fetch_metadata(Some(&self.topic), self.connect_timeout)
            .map_err(|e| {
                broker_error(format!(
                    "cannot connect to Kafka at {} within {:?}: {e}; is it running? (bash \
                         scripts/brokers.sh up)",
                    self.brokers, self.connect_timeout
                ))
            })?;
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == self.topic) else {
            return Ok(None);
        };
        match topic.error().map(RDKafkaErrorCode::from) {
            None => Ok(Some(topic.partitions().iter().map(|p| p.id()).collect())),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(None),
            Some(code) => Err(ConnectorError::user(format!(
                "Kafka at {} cannot serve topic {}: {code}",
                self.brokers, self.topic
            ))),
        }
    }
}

/// The option prefix of librdkafka settings.
const RDKAFKA_PREFIX: &str = "rdkafka.";

/// Fails on options outside `known` and the `rdkafka.*` passthrough.
fn check_params(endpoint: &Endpoint, known: &[&str]) -> Result<(), ConnectorError> {
    let mut allowed: Vec<&str> = known.to_vec();
    allowed.extend(
        endpoint
            .params
            .keys()
            .map(String::as_str)
            .filter(|k| k.starts_with(RDKAFKA_PREFIX)),
    );
    allowed.push("rdkafka.<setting>");
    endpoint.check_params(&allowed)
}

/// Options shared by sources and sinks.
const COMMON_PARAMS: &[&str] = &["connect_timeout"];

/// What a Kafka source reads and how (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSourceConfig {
    /// The brokers, topic and shared settings.
    pub connection: KafkaConnection,
    /// The consumer group whose offsets are read and committed (default `eddy`; option `group`).
    pub group: String,
    /// Where partitions start (default [`StartOffset::Committed`]; option `start`).
    pub start: StartOffset,
    /// Messages the bridge channel of each worker holds (default 1024; option `capacity`).
    pub capacity: usize,
    /// How often processed offsets are committed (default 1 s; option `commit_interval`); they
    /// are committed at shutdown too.
    pub commit_interval: Duration,
    /// How long the broker may stay unreachable before the run fails (default 60 s; option
    /// `reconnect_timeout`).
    pub reconnect_timeout: Duration,
}

impl KafkaSourceConfig {
    /// Reads `topic` from `brokers`, with the defaults.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaSourceConfig {
            connection: KafkaConnection::new(brokers, topic),
            group: "eddy".to_string(),
            start: StartOffset::default(),
            capacity: 1024,
            commit_interval: Duration::from_secs(1),
            reconnect_timeout: Duration::from_secs(60),
        }
    }

    /// The options a source URI may have, besides `rdkafka.*`.
    const PARAMS: &'static [&'static str] = &[
        "group",
        "start",
        "capacity",
        "max_record_size",
        "commit_interval",
        "reconnect_timeout",
    ];

    /// The configuration `kafka://HOST:PORT/TOPIC?options` gives (see docs/connectors.md).
    pub fn from_endpoint(endpoint: &Endpoint) -> Result<Self, ConnectorError> {
        check_params(endpoint, &[COMMON_PARAMS, Self::PARAMS].concat())?;
        let connection = KafkaConnection::from_endpoint(endpoint)?;
        let mut config = KafkaSourceConfig::new(connection.brokers.clone(), "");
        config.connection = connection;
        if let Some(group) = endpoint.param("group") {
            config.group = group.to_string();
        }
        if let Some(start) = endpoint.parse_param("start")? {
            config.start = start;
        }
        if let Some(capacity) = endpoint.parse_param::<usize>("capacity")? {
            config.capacity = capacity.max(1);
        }
        if let Some(interval) = endpoint.duration_param("commit_interval")? {
            config.commit_interval = interval.max(Duration::from_millis(10));
        }
        if let Some(timeout) = endpoint.duration_param("reconnect_timeout")? {
            config.reconnect_timeout = timeout;
        }
        Ok(config)
    }
}

/// What a Kafka sink writes and how (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSinkConfig {
    /// The brokers, topic and shared settings.
    pub connection: KafkaConnection,
    /// How records are encoded (default JSON; `eddy copy --format`).
    pub format: Format,
    /// The top-level field whose value keys each message (a string as its text, anything else
    /// as its JSON); `None` (the default) or a record without the field: no key. Option `key`.
    pub key: Option<String>,
    /// Partitions of the topic when the sink creates it (default 1; option `partitions`).
    pub partitions: i32,
    /// Records each writer lets wait for their delivery reports (default 10 000; option
    /// `in_flight`); a full writer waits for reports before it takes more.
    pub in_flight: usize,
    /// How long librdkafka keeps retrying a record before it is undeliverable (default 30 s;
    /// option `delivery_timeout`): librdkafka's `message.timeout.ms`.
    pub delivery_timeout: Duration,
}

impl KafkaSinkConfig {
    /// Writes to `topic` on `brokers`, with the defaults.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaSinkConfig {
            connection: KafkaConnection::new(brokers, topic),
            format: Format::Json,
            key: None,
            partitions: 1,
            in_flight: 10_000,
            delivery_timeout: Duration::from_secs(30),
        }
    }

    /// Keys each message by the record's field `field`.
    pub fn key(mut self, field: impl Into<String>) -> Self {
        self.key = Some(field.into());
        self
    }

    /// The options a sink URI may have, besides `rdkafka.*`.
    const PARAMS: &'static [&'static str] = &["key", "partitions", "in_flight", "delivery_timeout"];

    /// The configuration `kafka://HOST:PORT/TOPIC?options` gives (see docs/connectors.md).
    pub fn from_endpoint(endpoint: &Endpoint) -> Result<Self, ConnectorError> {
        check_params(endpoint, &[COMMON_PARAMS, Self::PARAMS].concat())?;
        let connection = KafkaConnection::from_endpoint(endpoint)?;
        let mut config = KafkaSinkConfig::new(connection.brokers.clone(), "");
        config.connection = connection;
        config.key = endpoint.param("key").map(str::to_string);
        if let Some(partitions) = endpoint.parse_param::<i32>("partitions")? {
            if partitions < 1 {
                return Err(ConnectorError::user(format!(
                    "{endpoint}: option partitions={partitions}: a topic needs at least one"
                )));
            }
            config.partitions = partitions;
        }
        if let Some(in_flight) = endpoint.parse_param::<usize>("in_flight")? {
            config.in_flight = in_flight.max(1);
        }
        if let Some(timeout) = endpoint.duration_param("delivery_timeout")? {
            config.delivery_timeout = timeout.max(Duration::from_millis(1));
        }
        Ok(config)
    }
}

/// The `kafka://` source of dynamic records, for `eddy copy`.
pub(crate) fn endpoint_source(
    endpoint: &Endpoint,
    options: &EndpointOptions,
) -> Result<DynSource, ConnectorError> {
    let config = KafkaSourceConfig::from_endpoint(endpoint)?;
    configured(KafkaSource::new(config), endpoint, options)
}

/// The `kafka://` sink of dynamic records, for `eddy copy`.
pub(crate) fn endpoint_sink(
    endpoint: &Endpoint,
    options: &EndpointOptions,
) -> Result<DynSink, ConnectorError> {
    let mut config = KafkaSinkConfig::from_endpoint(endpoint)?;
    config.format = options.format.clone();
    Ok(Box::new(KafkaSink::new(config)))
}

/// The connection state a client reports on stderr: one line when it goes bad, one when it
/// recovers, nothing in between however many errors librdkafka reports.
struct Health {
    /// `kafka source 127.0.0.1:9092/clicks`, for the log lines.
    name: String,
    state: Mutex<HealthState>,
}

#[derive(Default)]
struct HealthState {
    /// Since when the client has seen errors without a success since.
    failing_since: Option<Instant>,
    /// The last error seen.
    last_error: String,
    /// Whether the failure has been logged.
    logged: bool,
}

impl Health {
    fn new(name: String) -> Self {
        Health {
            name,
            state: Mutex::new(HealthState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// librdkafka reported `error`.
    fn failed(&self, error: impl fmt::Display) {
        let mut state = self.lock();
        state.failing_since.get_or_insert_with(Instant::now);
        state.last_error = error.to_string();
    }

    /// Since when the client has been failing, if it is.
    fn failing_since(&self) -> Option<Instant> {
        self.lock().failing_since
    }

    /// Logs the failure, once, saying what librdkafka does about it.
    fn log_failure(&self, doing: &str) {
        let mut state = self.lock();
        if state.failing_since.is_some() && !state.logged {
            state.logged = true;
            tracing::warn!("{}: {}; {doing}", self.name, state.last_error);
        }
    }

    /// The last error and how long it has lasted, for the error that ends the run.
    fn failure(&self) -> (String, Duration) {
        let state = self.lock();
        let lasted = state.failing_since.map_or(Duration::ZERO, |t| t.elapsed());
        (state.last_error.clone(), lasted)
    }

    /// The broker answered: the failure, if any, is over (logged if it was logged).
    fn recovered(&self) {
        let mut state = self.lock();
        if let Some(since) = state.failing_since.take() {
            if std::mem::take(&mut state.logged) {
                tracing::warn!(
                    "{}: the broker answers again after {:.1} s",
                    self.name,
                    since.elapsed().as_secs_f64()
                );
            }
        }
    }
}

/// librdkafka's log lines, for the source's and the sink's contexts: configuration warnings go
/// to stderr, the rest nowhere (librdkafka logs every reconnect attempt; the contexts report
/// errors through their [`Health`] instead).
fn on_log(name: &str, facility: &str, message: &str) {
    if facility == "CONFWARN" {
        tracing::warn!("{name}: librdkafka: {message}");
    }
}

/// An error of the broker or the connection to it, whose message names librdkafka's error
/// (so it carries no separate cause, which would repeat it).
fn broker_error(what: String) -> ConnectorError {
    ConnectorError {
        what,
        fault: Fault::External,
        source: None,
    }
}

/// The error that ends a run whose broker stayed unreachable.
fn unreachable_error(health: &Health, brokers: &str, timeout: Duration) -> ConnectorError {
    let (last, lasted) = health.failure();
    broker_error(format!(
        "Kafka at {brokers} has not answered for {:.0} s (reconnect_timeout {timeout:?}): {last}; \
         is it running? (bash scripts/brokers.sh up)",
        lasted.as_secs_f64()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(uri: &str) -> Endpoint {
        uri.parse().unwrap()
    }

    #[test]
    fn source_options_parse_with_defaults_and_passthrough() {
        let config = KafkaSourceConfig::from_endpoint(&endpoint(
            "kafka://127.0.0.1:9093/clicks?group=g1&start=latest&commit_interval=250ms\
             &rdkafka.fetch.wait.max.ms=50",
        ))
        .unwrap();
        assert_eq!(config.connection.brokers, "127.0.0.1:9093");
        assert_eq!(config.connection.topic, "clicks");
        assert_eq!(config.group, "g1");
        assert_eq!(config.start, StartOffset::Latest);
        assert_eq!(config.commit_interval, Duration::from_millis(250));
        assert_eq!(config.capacity, 1024);
        assert_eq!(
            config.connection.rdkafka.get("fetch.wait.max.ms"),
            Some(&"50".to_string())
        );
        let defaults = KafkaSourceConfig::from_endpoint(&endpoint("kafka://host/t")).unwrap();
        assert_eq!(defaults.connection.brokers, "host:9092");
        assert_eq!(
            (defaults.group.as_str(), defaults.start),
            ("eddy", StartOffset::Committed)
        );
    }

    #[test]
    fn bad_options_are_errors_that_say_what_to_write() {
        let err = KafkaSourceConfig::from_endpoint(&endpoint("kafka://h/t?key=id"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown option 'key'") && err.contains("group"),
            "{err}"
        );
        let err = KafkaSourceConfig::from_endpoint(&endpoint("kafka://h/t?start=middle"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("committed, earliest or latest"), "{err}");
        let err = KafkaSinkConfig::from_endpoint(&endpoint("kafka://h/t?partitions=0"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least one"), "{err}");
        let err = KafkaSinkConfig::from_endpoint(&endpoint("kafka://h/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka://HOST:PORT/TOPIC"), "{err}");
    }

    #[test]
    fn sink_options_parse() {
        let config = KafkaSinkConfig::from_endpoint(&endpoint(
            "kafka://h:1/out?key=user&partitions=3&in_flight=5&delivery_timeout=2s",
        ))
        .unwrap();
        assert_eq!(config.key.as_deref(), Some("user"));
        assert_eq!((config.partitions, config.in_flight), (3, 5));
        assert_eq!(config.delivery_timeout, Duration::from_secs(2));
    }

    #[test]
    fn health_logs_a_failure_once_and_recovers() {
        let health = Health::new("kafka test".into());
        assert!(health.failing_since().is_none());
        health.failed("broker down");
        health.failed("broker still down");
        let since = health.failing_since().unwrap();
        health.failed("and again");
        assert_eq!(
            health.failing_since(),
            Some(since),
            "the first failure counts"
        );
        health.log_failure("retrying");
        assert!(health.lock().logged);
        assert_eq!(health.failure().0, "and again");
        health.recovered();
        assert!(health.failing_since().is_none() && !health.lock().logged);
    }
}
