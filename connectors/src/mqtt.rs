//! MQTT 3.1.1 (through rumqttc): a source subscribing to topic filters and a sink publishing to
//! a topic, both at QoS 1.
//!
//! **Source** ([`MqttSource`]). One client subscribes to the configured topic filters (`+` one
//! level, `#` every level below) at QoS 1, in a *persistent session* (clean session off, under a
//! stable client id): the broker keeps the subscriptions and queues the messages published
//! while Eddy is away, and delivers them when it comes back. MQTT has no partitions, so only
//! worker 0 holds the subscription; the readers of the other workers are done at once (to spread
//! one filter over several Eddy processes, give each its own client id and subscribe to a shared
//! subscription, `$share/GROUP/FILTER`). Acknowledgements are manual: a message's PUBACK goes to
//! the broker only once the record is in the pipeline (the bridge hands its token back), so a
//! message Eddy received but did not hand on is delivered again, to the next session. When the
//! pipeline falls behind, the bridge channel (`capacity`) fills, the client stops reading from
//! the connection, and TCP flow control keeps the rest at the broker: Eddy holds at most
//! `capacity` messages, a hand-over queue of 64 and the batch a reader is handing on
//! ([`MqttSourceStats::held`]). (The broker's in-flight window, Mosquitto's
//! `max_inflight_messages`, would bound the unacknowledged messages too, but Mosquitto 2.0 lets
//! more through with each acknowledgement.) A message that
//! does not decode is dead-lettered with its bytes and location (`topic T packet id N (message
//! S)`, S counting the messages of this run) and acknowledged. MQTT 3.1.1 carries no timestamp,
//! so [`EventTimeOf::Broker`] is the arrival time.
//!
//! **Sink** ([`MqttSink`]). Each worker publishes its records at QoS 1 to the configured topic,
//! or to the topic a field of the record names, with at most `max_inflight` publishes awaiting
//! their PUBACK (the writer waits when the window is full: backpressure on the dataflow). A
//! record counts as written once the broker acknowledged it; [`SinkWriter::commit`] waits for
//! every PUBACK of the records written so far, and [`SinkWriter::finish`] waits for every PUBACK,
//! then disconnects cleanly. A record that cannot be sent (no topic, too large,
//! not encodable) or that was published `max_attempts` times without a PUBACK (the connection
//! dropped each time) is given up to the dead-letter sink ([`SinkWriter::undeliverable`]).
//!
//! **TLS and passwords** ([`MqttConnection`]). `mqtts://HOST:PORT/...` (default port 8883) or
//! `tls=true` connects over TLS (rustls), checking the broker's certificate against `ca_file=`
//! or the system's CAs; `cert_file=` and `key_file=` add a client certificate. `user=` with
//! `password_env=` or `password_file=` logs in. A broker that refuses the credentials, or a
//! certificate that does not verify, fails the source or sink at once, with the reason.
//!
//! **Reconnecting.** When a connection drops, the client keeps trying, with backoff from 100 ms
//! to 2 s, for `reconnect_timeout` (default 60 s), logging one line when it loses the connection
//! and one when it is back; then the run fails naming the broker. The source's session survives
//! (the broker resends what was not acknowledged; if the broker lost the session, the client
//! subscribes again); acknowledgements of messages from the lost connection are dropped, since
//! the broker sends those messages again. The sink publishes again everything not acknowledged.
//!
//! **Guarantees.** At-least-once both ways: across broker restarts and reconnects nothing the
//! broker acknowledged is lost, and a record may arrive twice (a message redelivered after its
//! acknowledgement was lost, a publish repeated after its PUBACK was lost).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use eddy_engine::{
    ConnectorError, Fault, Partition, Record, RecordError, Sink, SinkReport, SinkWriter, Source,
    SourceReader,
};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing,
    Packet, Publish, QoS, Request, SubAck, Subscribe, SubscribeFilter, SubscribeReasonCode,
    TlsConfiguration, Transport,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bridge::{self, BrokerSource, Decoding, Delivery, Feed, Inbox, NothingToRead};
use crate::endpoints::{configured, DynSink, DynSource, EndpointOptions};
#[cfg(doc)]
use crate::event_time::EventTimeOf;
use crate::format::Format;
use crate::uri::Endpoint;

/// The port MQTT brokers listen on without TLS.
pub const DEFAULT_PORT: u16 = 1883;
/// MQTT over TLS's default port.
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// The first pause before reconnecting; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long closing waits for the DISCONNECT to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages passed from the event loop to the task that feeds the readers.
const HANDOVER: usize = 64;
/// What every error about an unreachable broker suggests.
const IS_IT_RUNNING: &str = "is it running? (bash scripts/brokers.sh up)";

/// URI options every MQTT endpoint takes.
const CONNECTION_OPTIONS: [&str; 12] = [
    "client_id",
    "user",
    "password_env",
    "password_file",
    "keep_alive",
    "connect_timeout",
    "reconnect_timeout",
    "max_packet_size",
    "tls",
    "ca_file",
    "cert_file",
    "key_file",
];

/// How to reach an MQTT broker: what the source and the sink share.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttConnection {
    /// The broker's `HOST:PORT` (default `127.0.0.1:1883`).
    pub address: String,
    /// The user name to log in with (default none: anonymous).
    pub user: Option<String>,
    /// The password, with `user` (default none). URIs name an environment variable holding
    /// it (`password_env=VAR`), never the password itself.
    pub password: Option<String>,
    /// How often an idle client pings the broker, which drops a client silent for one and a
    /// half times as long (default 30 s; zero turns pings off, otherwise at least 1 s).
    pub keep_alive: Duration,
    /// How long connecting (and, for the source, subscribing) may take before opening fails
    /// (default 5 s).
    pub connect_timeout: Duration,
    /// How long a lost connection is retried before the run fails (default 60 s); also how
    /// long a sink waits, connected, for any PUBACK while records are outstanding.
    pub reconnect_timeout: Duration,
    /// The largest packet sent or received, in bytes (default 1 MiB). A record that does not
    /// fit is dead-lettered by the sink; a larger incoming message breaks the connection.
    pub max_packet_size: usize,
    /// TLS (URI: the `mqtts://` scheme, default port 8883, or `tls=true`): the server's
    /// certificate is checked against `ca_file` when given, otherwise the system's CAs.
    pub tls: bool,
    /// A CA certificate (PEM) to trust for the broker's certificate (URI: `ca_file=`).
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM) for mutual TLS (URI: `cert_file=`, `key_file=`;
    /// needs `ca_file`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl Default for MqttConnection {
    fn default() -> Self {
        MqttConnection {
            address: format!("127.0.0.1:{DEFAULT_PORT}"),
            user: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            reconnect_timeout: Duration::from_secs(60),
            max_packet_size: 1 << 20,
            tls: false,
            ca_file: None,
            client_cert: None,
        }
    }
}

impl fmt::Debug for MqttConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConnection")
            .field("address", &self.address)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "(hidden)"))
            .field("keep_alive", &self.keep_alive)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect_timeout", &self.reconnect_timeout)
            .field("max_packet_size", &self.max_packet_size)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .finish()
    }
}

impl MqttConnection {
    /// A connection to the broker at `address` (`HOST:PORT`), with the other defaults.
    pub fn new(address: impl Into<String>) -> Self {
        MqttConnection {
            address: address.into(),
            ..MqttConnection::default()
        }
    }

    /// The connection an endpoint URI describes: its address and the options `user`,
    /// `password_env`, `keep_alive`, `connect_timeout`, `reconnect_timeout`, `max_packet_size`.
    pub fn from_endpoint(endpoint: &Endpoint) -> Result<Self, ConnectorError> {
        if endpoint.to_string().contains('#') {
            return Err(ConnectorError::user(format!(
                "{endpoint}: a '#' in a URI starts its fragment, so the topic is cut there: \
                 write the wildcard '#' as %23 (mqtt://HOST:PORT/sensors/%23)"
            )));
        }
        let defaults = MqttConnection::default();
        let tls = endpoint.scheme == "mqtts" || endpoint.parse_param("tls")?.unwrap_or(false);
        let path = |name: &str| endpoint.param(name).map(PathBuf::from);
        let client_cert = endpoint.client_cert()?;
        let connection = MqttConnection {
            address: endpoint.address(if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT }),
            tls,
            ca_file: path("ca_file"),
            client_cert,
            user: endpoint.param("user").map(str::to_string),
            password: endpoint.secret("password")?,
            keep_alive: endpoint
                .duration_param("keep_alive")?
                .unwrap_or(defaults.keep_alive),
            connect_timeout: endpoint
                .duration_param("connect_timeout")?
                .unwrap_or(defaults.connect_timeout),
            reconnect_timeout: endpoint
                .duration_param("reconnect_timeout")?
                .unwrap_or(defaults.reconnect_timeout),
            max_packet_size: endpoint
                .parse_param("max_packet_size")?
                .unwrap_or(defaults.max_packet_size),
        };
        connection
            .validate()
            .map_err(|e| ConnectorError::user(format!("{endpoint}: {e}")))?;
        Ok(connection)
    }

    fn validate(&self) -> Result<(), String> {
        if !self.keep_alive.is_zero() && self.keep_alive < Duration::from_secs(1) {
            return Err(format!(
                "keep_alive={:?} is too short: MQTT counts it in whole seconds; give 0 (no \
                 pings) or at least 1s",
                self.keep_alive
            ));
        }
        if self.password.is_some() && self.user.is_none() {
            return Err(
                "a password needs a user (MQTT 3.1.1: user= with the password)".to_string(),
            );
        }
        if self.client_cert.is_some() && self.ca_file.is_none() {
            return Err("a client certificate (cert_file=, key_file=) needs ca_file=".to_string());
        }
        if (self.ca_file.is_some() || self.client_cert.is_some()) && !self.tls {
            return Err(
                "ca_file=, cert_file= and key_file= are for TLS: use mqtts:// or tls=true"
                    .to_string(),
            );
        }
        if self.max_packet_size < 64 {
            return Err(format!(
                "max_packet_size={} is too small for any MQTT packet; give at least 64",
                self.max_packet_size
            ));
        }
        Ok(())
    }

    /// A client with `client_id`, configured by `configure`, not yet connected.
    fn client(
        &self,
        client_id: &str,
        requests: usize,
        configure: impl FnOnce(&mut MqttOptions),
    ) -> Result<(AsyncClient, EventLoop), ConnectorError> {
        let (host, port) = self
            .address
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .ok_or_else(|| {
                ConnectorError::user(format!(
                    "'{}' is not an MQTT broker address: write HOST:PORT (127.0.0.1:1883)",
                    self.address
                ))
            })?;
        let mut options = MqttOptions::new(client_id, host, port);
        options
            .set_keep_alive(self.keep_alive)
            .set_max_packet_size(self.max_packet_size, self.max_packet_size)
            .set_request_channel_capacity(requests);
        if let Some(user) = &self.user {
            options.set_credentials(user, self.password.clone().unwrap_or_default());
        }
        if self.tls {
            options.set_transport(Transport::tls_with_config(self.tls_configuration()?));
        }
        configure(&mut options);
        let (client, mut eventloop) = AsyncClient::new(options, requests);
        let mut network = eventloop.network_options();
        network.set_connection_timeout(self.connect_timeout.as_secs().max(1));
        eventloop.set_network_options(network);
        Ok((client, eventloop))
    }

    /// The TLS configuration: the CA (and client certificate) from their files, or the
    /// system's CAs.
    fn tls_configuration(&self) -> Result<TlsConfiguration, ConnectorError> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).map_err(|e| {
                ConnectorError::user(format!(
                    "MQTT {}: the {what} {} cannot be read ({e})",
                    self.address,
                    path.display()
                ))
            })
        };
        Ok(match &self.ca_file {
            Some(ca) => TlsConfiguration::Simple {
                ca: read(ca, "CA file")?,
                alpn: None,
                client_auth: match &self.client_cert {
                    Some((cert, key)) => {
                        Some((read(cert, "certificate file")?, read(key, "key file")?))
                    }
                    None => None,
                },
            },
            None => TlsConfiguration::default(),
        })
    }

    /// Connects `eventloop` for the first time, within the connect timeout.
    async fn connect(&self, eventloop: &mut EventLoop, what: &str) -> Result<(), ConnectorError> {
        match tokio::time::timeout(self.connect_timeout, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => Ok(()),
            Ok(Ok(other)) => Err(external(format!(
                "{what}: the broker at {} answered the connection with {other:?}, not CONNACK",
                self.address
            ))),
            Ok(Err(error)) => Err(self.connect_error(what, error)),
            Err(_) => Err(external(format!(
                "{what}: cannot connect to the MQTT broker at {}: no answer within {:?}; \
                     {IS_IT_RUNNING}",
                self.address, self.connect_timeout
            ))),
        }
    }

    fn connect_error(&self, what: &str, error: ConnectionError) -> ConnectorError {
        connect_failure(what, &self.address, &error)
    }
}

/// What a failed connection to the broker at `address` means: a user error when connecting
/// again cannot help (credentials or a client id refused, a certificate that does not verify,
/// a handshake the broker ended), an outside one otherwise.
fn connect_failure(what: &str, address: &str, error: &ConnectionError) -> ConnectorError {
    match error {
        ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable) => {
            external(format!(
                "{what}: the MQTT broker at {address} refused the connection: {}",
                refusal(ConnectReturnCode::ServiceUnavailable)
            ))
        }
        ConnectionError::ConnectionRefused(code) => ConnectorError::user(format!(
            "{what}: the MQTT broker at {address} refused the connection: {}",
            refusal(*code)
        )),
        ConnectionError::Tls(tls) => ConnectorError::user(format!(
            "{what}: TLS with the MQTT broker at {address} failed ({tls}): if its \
             certificate is signed by your own CA, give it with ca_file=; the certificate \
             must name the host you connect to"
        )),
        other => match tls_alert(other) {
            Some(alert) => ConnectorError::user(format!(
                "{what}: TLS with the MQTT broker at {address} failed: the broker refused the \
                 handshake ({alert}): if it requires a client certificate, give one its CA \
                 signed with cert_file= and key_file="
            )),
            None => external(format!(
                "{what}: cannot connect to the MQTT broker at {address}: {other}; {IS_IT_RUNNING}"
            )),
        },
    }
}

/// The TLS alert the broker sent, when `error` is the broker ending the handshake (a client
/// certificate missing or not trusted, say): an error that reconnecting cannot fix.
fn tls_alert(error: &ConnectionError) -> Option<&rumqttc::tokio_rustls::rustls::Error> {
    let io = match error {
        ConnectionError::MqttState(rumqttc::StateError::Io(io))
        | ConnectionError::MqttState(rumqttc::StateError::Deserialization(rumqttc::Error::Io(
            io,
        ))) => io,
        _ => return None,
    };
    io.get_ref()?
        .downcast_ref::<rumqttc::tokio_rustls::rustls::Error>()
        .filter(|tls| matches!(tls, rumqttc::tokio_rustls::rustls::Error::AlertReceived(_)))
}

fn refusal(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Success => "no reason given",
        ConnectReturnCode::RefusedProtocolVersion => {
            "it does not speak MQTT 3.1.1 (enable protocol version 4 on the broker)"
        }
        ConnectReturnCode::BadClientId => "it rejects the client id (set client_id=)",
        ConnectReturnCode::ServiceUnavailable => "the service is unavailable; try again later",
        ConnectReturnCode::BadUserNamePassword => {
            "bad user name or password (check user= and password_env= or password_file=)"
        }
        ConnectReturnCode::NotAuthorized => {
            "not authorized (check user=, password_env= or password_file=, and the broker's ACLs)"
        }
    }
}

/// Keeps a lost connection's reconnection attempts: backoff, the deadline, one log line when
/// the connection is lost and one when it is back.
struct Reconnect {
    what: String,
    address: String,
    timeout: Duration,
    lost_at: Option<Instant>,
    backoff: Duration,
}

impl Reconnect {
    fn new(what: &str, connection: &MqttConnection) -> Self {
        Reconnect {
            what: what.to_string(),
            address: connection.address.clone(),
            timeout: connection.reconnect_timeout,
            lost_at: None,
            backoff: FIRST_BACKOFF,
        }
    }

    /// After `error`: waits before the next attempt, or gives up once the deadline passed.
    async fn wait(&mut self, error: &ConnectionError) -> Result<(), ConnectorError> {
        let failure = connect_failure(&self.what, &self.address, error);
        if failure.fault == Fault::User {
            return Err(failure); // retrying cannot fix it
        }
        let lost_at = *self.lost_at.get_or_insert_with(|| {
            tracing::warn!(
                "{}: lost the connection to the MQTT broker at {} ({error}); reconnecting \
                 for up to {:?}",
                self.what,
                self.address,
                self.timeout
            );
            Instant::now()
        });
        if lost_at.elapsed() >= self.timeout {
            return Err(external(format!(
                "{}: lost the connection to the MQTT broker at {} and could not reconnect \
                     within {:?} (last error: {error}); {IS_IT_RUNNING}",
                self.what, self.address, self.timeout
            )));
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }

    /// The connection is back (`note` says what became of the session).
    fn connected(&mut self, note: &str) {
        if let Some(lost_at) = self.lost_at.take() {
            tracing::info!(
                "{}: reconnected to the MQTT broker at {} after {:.1} s{note}",
                self.what,
                self.address,
                lost_at.elapsed().as_secs_f64()
            );
        }
        self.backoff = FIRST_BACKOFF;
    }
}

/// A stable 64-bit FNV-1a hash, for client ids derived from configuration.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An error of the broker or the network, whose message says it all.
fn external(what: String) -> ConnectorError {
    ConnectorError {
        what,
        fault: Fault::External,
        source: None,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Source

/// The configuration of an [`MqttSource`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttSourceConfig {
    /// The broker and how to talk to it.
    pub connection: MqttConnection,
    /// The topic filters subscribed to, at QoS 1: `+` matches one level, `#` (last) every
    /// level below.
    pub filters: Vec<String>,
    /// The client id the broker keeps the session under: its subscriptions and the messages
    /// queued while Eddy is away (default `eddy-` and a hash of the filters, the same every
    /// run). Give each pipeline reading the same filters its own: two clients with one id take
    /// the session from each other. The session keeps the subscriptions of earlier runs, so use
    /// a new id when the filters change.
    pub client_id: Option<String>,
    /// Messages waiting between the client and the workers (default 1000).
    pub capacity: usize,
}

impl MqttSourceConfig {
    /// Subscribes to `filters` on the broker at `address` (`HOST:PORT`), with the defaults.
    pub fn new(address: impl Into<String>, filters: &[&str]) -> Self {
        MqttSourceConfig {
            connection: MqttConnection::new(address),
            filters: filters.iter().map(|f| f.to_string()).collect(),
            client_id: None,
            capacity: 1000,
        }
    }

    /// The configuration `mqtt://HOST:PORT/FILTER[,FILTER...]?options` describes (see the
    /// module docs and docs/connectors.md for the options).
    pub fn from_endpoint(endpoint: &Endpoint) -> Result<Self, ConnectorError> {
        let mut known = CONNECTION_OPTIONS.to_vec();
        known.extend(["capacity", "max_record_size"]);
        endpoint.check_params(&known)?;
        let connection = MqttConnection::from_endpoint(endpoint)?;
        let filters = endpoint
            .name("topic")?
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect();
        let config = MqttSourceConfig {
            connection,
            filters,
            client_id: endpoint.param("client_id").map(str::to_string),
            capacity: endpoint.parse_param("capacity")?.unwrap_or(1000),
        };
        config
            .validate()
            .map_err(|e| ConnectorError::user(format!("{endpoint}: {e}")))?;
        Ok(config)
    }

    /// The client id used: [`MqttSourceConfig::client_id`] or the one derived from the filters.
    pub fn effective_client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("eddy-{:016x}", fnv1a(&self.filters.join(","))))
    }

    fn validate(&self) -> Result<(), String> {
        if self.filters.is_empty() {
            return Err("no topic filter to subscribe to".to_string());
        }
        if let Some(bad) = self.filters.iter().find(|f| !rumqttc::valid_filter(f)) {
            return Err(format!(
                "'{bad}' is not an MQTT topic filter: '+' must be a whole level and '#' the \
                 last level (sensors/+/temp, sensors/#)"
            ));
        }
        if self.client_id.as_deref() == Some("") {
            return Err("client_id is empty: a persistent session needs a client id".to_string());
        }
        if self.capacity == 0 {
            return Err(
                "capacity=0: at least one message must fit between the client and the workers"
                    .to_string(),
            );
        }
        self.connection.validate()
    }
}

/// A source of the messages of MQTT topic filters, at QoS 1 in a persistent session, decoded
/// as `T` (see the module docs); [`BrokerSource`]'s methods set the format, event times and
/// stop rule (MQTT 3.1.1 has no broker timestamp: [`EventTimeOf::Broker`] is the arrival time).
pub struct MqttSource<T> {
    config: MqttSourceConfig,
    counts: Arc<Counts>,
    decoding: Decoding<T>,
}

impl<T> BrokerSource<T> for MqttSource<T> {
    fn decoding_mut(&mut self) -> &mut Decoding<T> {
        &mut self.decoding
    }
}

impl<T> MqttSource<T> {
    /// A source with `config`, decoding JSON, timed on arrival, running until stopped.
    pub fn new(config: MqttSourceConfig) -> Self {
        MqttSource {
            config,
            counts: Arc::default(),
            decoding: Decoding::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MqttSourceConfig {
        &self.config
    }

    /// A handle on the counts of what the client takes from the broker.
    pub fn stats(&self) -> MqttSourceStats {
        MqttSourceStats {
            counts: Arc::clone(&self.counts),
        }
    }
}

impl<T> Source<T> for MqttSource<T>
where
    T: DeserializeOwned + Serialize + Send + 'static,
{
    /// Yes: a PUBACK goes to the broker once what the message produced is committed.
    fn acknowledges(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "mqtt({}/{}, client {})",
            self.config.connection.address,
            self.config.filters.join(","),
            self.config.effective_client_id()
        )
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        if partition.index != 0 {
            // Only worker 0 holds the subscription.
            return Ok(Box::new(NothingToRead));
        }
        let inbox = subscribe(&self.config, &self.counts)?;
        Ok(self.decoding.reader(inbox))
    }
}

/// What a reader hands back to acknowledge a message: the connection it came on (acks of a
/// lost connection are dropped) and its packet id (none at QoS 0).
#[derive(Debug)]
struct Ack {
    generation: u64,
    packet_id: Option<u16>,
}

/// From the event loop's task to the task feeding the readers.
enum Inbound {
    /// A message, with the generation of the connection it came on.
    Message(Publish, u64),
    /// The client gave up.
    Failed(ConnectorError),
}

/// Connects, subscribes (waiting for the SUBACK) and starts the client's tasks.
fn subscribe(
    config: &MqttSourceConfig,
    counts: &Arc<Counts>,
) -> Result<Inbox<Ack>, ConnectorError> {
    config
        .validate()
        .map_err(|e| ConnectorError::user(format!("MQTT source: {e}")))?;
    let client_id = config.effective_client_id();
    let what = format!("MQTT source {client_id}");
    let (client, mut eventloop) =
        config
            .connection
            .client(&client_id, config.capacity + HANDOVER, |options| {
                options.set_clean_session(false).set_manual_acks(true);
            })?;
    let filters: Vec<SubscribeFilter> = config
        .filters
        .iter()
        .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
        .collect();
    let early = bridge::runtime().block_on(first_subscription(
        &mut eventloop,
        &config.connection,
        &what,
        &filters,
    ))?;
    counts
        .received
        .fetch_add(early.len() as u64, Ordering::Relaxed);
    let (feed, inbox) = bridge::channel(config.capacity);
    let generation = Arc::new(Mutex::new(0));
    let closing = Arc::new(AtomicBool::new(false));
    let (handover, inbound) = mpsc::channel(HANDOVER);
    let driver = bridge::runtime().spawn(
        Subscriber {
            eventloop,
            filters,
            generation: Arc::clone(&generation),
            closing: Arc::clone(&closing),
            reconnect: Reconnect::new(&what, &config.connection),
            handover,
            what,
            counts: Arc::clone(counts),
        }
        .run(),
    );
    bridge::runtime().spawn(
        Forwarder {
            feed,
            client,
            generation,
            closing,
            driver,
            sequence: 0,
            unsent: VecDeque::new(),
            counts: Arc::clone(counts),
        }
        .run(early, inbound),
    );
    Ok(inbox)
}

fn subscribe_request(filters: &[SubscribeFilter]) -> Request {
    Request::Subscribe(Subscribe::new_many(filters.iter().cloned()))
}

fn check_suback(
    suback: &SubAck,
    filters: &[SubscribeFilter],
    what: &str,
) -> Result<(), ConnectorError> {
    let refused: Vec<&str> = suback
        .return_codes
        .iter()
        .zip(filters)
        .filter(|(code, _)| matches!(code, SubscribeReasonCode::Failure))
        .map(|(_, filter)| filter.path.as_str())
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(ConnectorError::user(format!(
            "{what}: the MQTT broker refused the subscription to {}; check the filters and the \
             broker's ACLs",
            refused.join(", ")
        )))
    }
}

/// Connects for the first time and subscribes, returning the messages that came before the
/// SUBACK (an existing session's queue).
async fn first_subscription(
    eventloop: &mut EventLoop,
    connection: &MqttConnection,
    what: &str,
    filters: &[SubscribeFilter],
) -> Result<Vec<Publish>, ConnectorError> {
    connection.connect(eventloop, what).await?;
    // Subscribe even when the broker kept the session: the filters may have changed.
    eventloop.pending.push_back(subscribe_request(filters));
    let deadline = tokio::time::Instant::now() + connection.connect_timeout;
    let mut early = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(publish)))) => early.push(publish),
            Ok(Ok(Event::Incoming(Packet::SubAck(suback)))) => {
                check_suback(&suback, filters, what)?;
                return Ok(early);
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(connection.connect_error(what, error)),
            Err(_) => {
                return Err(external(format!(
                    "{what}: the MQTT broker at {} did not confirm the subscription within \
                         {:?}",
                    connection.address, connection.connect_timeout
                )))
            }
        }
    }
}

/// The task that polls the source's event loop — never interrupted, so no packet is lost
/// half-written — reconnects, and passes messages on to the [`Forwarder`].
struct Subscriber {
    eventloop: EventLoop,
    filters: Vec<SubscribeFilter>,
    /// Counts connections; the forwarder acknowledges only messages of the current one.
    generation: Arc<Mutex<u64>>,
    closing: Arc<AtomicBool>,
    reconnect: Reconnect,
    handover: mpsc::Sender<Inbound>,
    what: String,
    counts: Arc<Counts>,
}

impl Subscriber {
    async fn run(mut self) {
        loop {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let generation = *lock(&self.generation);
                    self.pass_on(Inbound::Message(publish, generation)).await;
                }
                Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                    if connack.session_present {
                        self.reconnect.connected(" (session kept)");
                    } else {
                        self.reconnect
                            .connected(" (the broker lost the session: subscribing again)");
                        self.eventloop
                            .pending
                            .push_back(subscribe_request(&self.filters));
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(suback))) => {
                    if let Err(error) = check_suback(&suback, &self.filters, &self.what) {
                        self.pass_on(Inbound::Failed(error)).await;
                        return;
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(error) => {
                    if self.closing.load(Ordering::Acquire) {
                        return;
                    }
                    if let Err(failure) = self.lost(&error).await {
                        self.pass_on(Inbound::Failed(failure)).await;
                        return;
                    }
                }
            }
        }
    }

    /// The connection broke: passes on the messages it had already read (under its
    /// generation, so their acknowledgements are dropped: the broker sends them again), starts
    /// a new generation, and waits to reconnect.
    async fn lost(&mut self, error: &ConnectionError) -> Result<(), ConnectorError> {
        let read: Vec<Publish> = self
            .eventloop
            .state
            .events
            .drain(..)
            .filter_map(|event| match event {
                Event::Incoming(Packet::Publish(publish)) => Some(publish),
                _ => None,
            })
            .collect();
        let old = {
            let mut generation = lock(&self.generation);
            let old = *generation;
            *generation += 1;
            // Acknowledgements queued since the event loop cleaned up belong to the lost
            // connection: drop them too.
            self.eventloop.clean();
            old
        };
        for publish in read {
            self.pass_on(Inbound::Message(publish, old)).await;
        }
        self.reconnect.wait(error).await
    }

    async fn pass_on(&mut self, inbound: Inbound) {
        let message = matches!(inbound, Inbound::Message(..));
        if message {
            self.counts.received.fetch_add(1, Ordering::Relaxed);
        }
        if self.handover.send(inbound).await.is_err() && message {
            // The forwarder is gone (the readers are): the message stays unacknowledged, and
            // the broker keeps it for the next session.
            self.counts.released.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The task that feeds the readers, acknowledges what they handed back, and closes the
/// connection once they are gone. It never waits for room in the event loop's request queue
/// (the event loop may itself be waiting for this task to take a message): acknowledgements
/// that do not fit yet wait in `unsent`.
struct Forwarder {
    feed: Feed<Ack>,
    client: AsyncClient,
    generation: Arc<Mutex<u64>>,
    closing: Arc<AtomicBool>,
    driver: JoinHandle<()>,
    sequence: u64,
    unsent: VecDeque<Ack>,
    counts: Arc<Counts>,
}

impl Forwarder {
    async fn run(mut self, early: Vec<Publish>, mut inbound: mpsc::Receiver<Inbound>) {
        let mut delivering = true;
        for publish in early {
            delivering = delivering && self.deliver(publish, 0).await;
        }
        let mut inbound_open = true;
        loop {
            self.send_acks();
            tokio::select! {
                // Acknowledgements first: they free what the broker holds for Eddy.
                biased;
                acks = self.feed.next_acks() => match acks {
                    Some(acks) => {
                        // The readers handed these on to the pipeline.
                        self.counts.released.fetch_add(acks.len() as u64, Ordering::Relaxed);
                        self.unsent.extend(acks);
                    }
                    None => break,
                },
                message = inbound.recv(), if inbound_open => match message {
                    Some(Inbound::Message(publish, generation)) => {
                        delivering = delivering && self.deliver(publish, generation).await;
                    }
                    Some(Inbound::Failed(error)) => self.feed.fail(error).await,
                    None => inbound_open = false,
                },
                // The request queue was full: try again shortly.
                () = tokio::time::sleep(Duration::from_millis(1)), if !self.unsent.is_empty() => {}
            }
        }
        // Every reader is gone and every acknowledgement is here. With the hand-over closed
        // the event loop only drains its requests: the acknowledgements, then the DISCONNECT.
        self.closing.store(true, Ordering::Release);
        drop(inbound);
        let closed = tokio::time::timeout(CLOSE_TIMEOUT, async {
            self.send_acks();
            while !self.unsent.is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
                self.send_acks();
            }
            let _ = self.client.disconnect().await;
            let _ = (&mut self.driver).await;
        })
        .await;
        if closed.is_err() {
            self.driver.abort();
        }
        self.feed.closed();
    }

    async fn deliver(&mut self, publish: Publish, generation: u64) -> bool {
        self.sequence += 1;
        let location = format!(
            "topic {} packet id {} (message {})",
            publish.topic, publish.pkid, self.sequence
        );
        let packet_id = (publish.qos != QoS::AtMostOnce).then_some(publish.pkid);
        let handed = self
            .feed
            .deliver(Delivery {
                payload: publish.payload.to_vec(),
                location,
                timestamp_ms: None,
                ack: Ack {
                    generation,
                    packet_id,
                },
            })
            .await;
        if !handed {
            // No reader left: the broker keeps the message for the next session.
            self.counts.released.fetch_add(1, Ordering::Relaxed);
        }
        handed
    }

    /// Queues the PUBACKs of the current connection while the request queue has room (those
    /// of a lost connection are dropped: the broker sends their messages again).
    fn send_acks(&mut self) {
        if self.driver.is_finished() {
            // No event loop to send them: the broker sends the messages again.
            self.unsent.clear();
            return;
        }
        // Held throughout, so the event loop cannot start a new connection in between.
        let current = lock(&self.generation);
        while let Some(ack) = self.unsent.front() {
            if let (Some(packet_id), true) = (ack.packet_id, ack.generation == *current) {
                let mut puback = Publish::new("", QoS::AtLeastOnce, Vec::new());
                puback.pkid = packet_id;
                if self.client.try_ack(&puback).is_err() {
                    break;
                }
            }
            self.unsent.pop_front();
        }
    }
}

/// Counts of a source's client, shared with [`MqttSourceStats`].
#[derive(Debug, Default)]
struct Counts {
    /// Messages taken from the broker.
    received: AtomicU64,
    /// Of those, the ones Eddy no longer holds: handed on to the pipeline by a reader (or
    /// dead-lettered), or dropped unacknowledged for the broker to send again.
    released: AtomicU64,
}

/// What an [`MqttSource`]'s client has taken from the broker, for monitoring (and the
/// backpressure test): take it with [`MqttSource::stats`] before handing the source to a
/// pipeline. Clones share the counts.
#[derive(Clone, Debug, Default)]
pub struct MqttSourceStats {
    counts: Arc<Counts>,
}

impl MqttSourceStats {
    /// Messages the client has taken from the broker so far.
    pub fn received(&self) -> u64 {
        self.counts.received.load(Ordering::Relaxed)
    }

    /// Messages taken from the broker and not acknowledged yet: those no reader has handed
    /// on to the pipeline — bounded by the bridge channel's `capacity`, a hand-over queue of
    /// 64 and the batch a reader is handing on, however far behind the pipeline is (the
    /// client stops reading from the connection) — and those handed on whose records the
    /// sinks have not committed yet (what arrives in one commit interval).
    pub fn held(&self) -> u64 {
        // Read first: it never passes `received`.
        let released = self.counts.released.load(Ordering::Relaxed);
        self.received().saturating_sub(released)
    }
}

// ---------------------------------------------------------------------------------------------
// Sink

/// The configuration of an [`MqttSink`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttSinkConfig {
    /// The broker and how to talk to it.
    pub connection: MqttConnection,
    /// The topic records are published to; with `topic_field`, the topic of records without
    /// that field (empty: they are dead-lettered).
    pub topic: String,
    /// A top-level string field of each record naming its topic (default none).
    pub topic_field: Option<String>,
    /// The client id prefix: worker `i` connects as `PREFIX-i`, in a clean session (default
    /// `eddy-pub-PID-N`, unique in the process).
    pub client_id: Option<String>,
    /// Publishes awaiting their PUBACK at once, per worker (default 100).
    pub max_inflight: u16,
    /// How many times a record is published without a PUBACK (the connection dropped each
    /// time) before it is dead-lettered (default 5).
    pub max_attempts: u32,
}

impl MqttSinkConfig {
    /// Publishes to `topic` on the broker at `address` (`HOST:PORT`), with the defaults.
    pub fn new(address: impl Into<String>, topic: &str) -> Self {
        MqttSinkConfig {
            connection: MqttConnection::new(address),
            topic: topic.to_string(),
            topic_field: None,
            client_id: None,
            max_inflight: 100,
            max_attempts: 5,
        }
    }

    /// The configuration `mqtt://HOST:PORT/TOPIC?options` describes (see the module docs and
    /// docs/connectors.md for the options).
    pub fn from_endpoint(endpoint: &Endpoint) -> Result<Self, ConnectorError> {
        let mut known = CONNECTION_OPTIONS.to_vec();
        known.extend(["topic_field", "max_inflight", "max_attempts"]);
        endpoint.check_params(&known)?;
        let connection = MqttConnection::from_endpoint(endpoint)?;
        let topic_field = endpoint.param("topic_field").map(str::to_string);
        let topic = match topic_field {
            Some(_) => endpoint.path.clone(),
            None => endpoint.name("topic")?.to_string(),
        };
        let config = MqttSinkConfig {
            connection,
            topic,
            topic_field,
            client_id: endpoint.param("client_id").map(str::to_string),
            max_inflight: endpoint.parse_param("max_inflight")?.unwrap_or(100),
            max_attempts: endpoint.parse_param("max_attempts")?.unwrap_or(5),
        };
        config
            .validate()
            .map_err(|e| ConnectorError::user(format!("{endpoint}: {e}")))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.topic.is_empty() && self.topic_field.is_none() {
            return Err("no topic to publish to: give one, or topic_field=".to_string());
        }
        if !self.topic.is_empty() && !rumqttc::valid_topic(&self.topic) {
            return Err(format!(
                "'{}' is not a topic to publish to: wildcards (+, #) are for subscribing",
                self.topic
            ));
        }
        if self.max_inflight == 0 || self.max_attempts == 0 {
            return Err("max_inflight and max_attempts must be at least 1".to_string());
        }
        self.connection.validate()
    }
}

/// A sink publishing each record, encoded as its format says, at QoS 1 (see the module docs).
pub struct MqttSink<T> {
    config: MqttSinkConfig,
    client_prefix: String,
    format: Format,
    _marker: PhantomData<fn(T)>,
}

impl<T> MqttSink<T> {
    /// A sink with `config`, encoding records as JSON.
    pub fn new(config: MqttSinkConfig) -> Self {
        static SINKS: AtomicU64 = AtomicU64::new(0);
        let client_prefix = config.client_id.clone().unwrap_or_else(|| {
            format!(
                "eddy-pub-{}-{}",
                std::process::id(),
                SINKS.fetch_add(1, Ordering::Relaxed)
            )
        });
        MqttSink {
            config,
            client_prefix,
            format: Format::Json,
            _marker: PhantomData,
        }
    }

    /// Encodes records as `format`.
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }
}

impl<T: Serialize + 'static> Sink<T> for MqttSink<T> {
    fn describe(&self) -> String {
        let topic = match &self.config.topic_field {
            Some(field) => format!("field {field}"),
            None => self.config.topic.clone(),
        };
        format!("mqtt({}/{topic})", self.config.connection.address)
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        let config = &self.config;
        config
            .validate()
            .map_err(|e| ConnectorError::user(format!("MQTT sink: {e}")))?;
        let client_id = format!("{}-{}", self.client_prefix, partition.index);
        let what = format!("MQTT sink {client_id}");
        let window = config.max_inflight;
        let (client, mut eventloop) =
            config
                .connection
                .client(&client_id, usize::from(window) + 8, |options| {
                    options.set_clean_session(true).set_inflight(window);
                })?;
        bridge::runtime().block_on(config.connection.connect(&mut eventloop, &what))?;
        let shared = Arc::new(Shared::default());
        bridge::runtime().spawn(
            Publisher {
                eventloop,
                client: client.clone(),
                shared: Arc::clone(&shared),
                reconnect: Reconnect::new(&what, &config.connection),
                max_attempts: config.max_attempts,
            }
            .run(),
        );
        Ok(Box::new(MqttWriter {
            shared,
            client,
            format: self.format.clone(),
            topic: config.topic.clone(),
            topic_field: config.topic_field.clone(),
            max_packet_size: config.connection.max_packet_size,
            window: usize::from(window),
            stall: config.connection.reconnect_timeout,
            what,
            worker: partition.index,
            sequence: 0,
            _marker: PhantomData,
        }))
    }
}

/// A record on its way to the broker.
struct Job {
    topic: String,
    payload: Vec<u8>,
    location: String,
    /// How many times it was written to a connection.
    attempts: u32,
}

impl Job {
    fn given_up(self, why: String) -> RecordError {
        RecordError::new(self.location, why).with_raw(self.payload)
    }
}

/// What a writer and its event loop's task share.
#[derive(Default)]
struct Shared {
    state: Mutex<Publishing>,
    changed: Condvar,
}

#[derive(Default)]
struct Publishing {
    /// Handed to the client, in order, not yet written: each `Outgoing::Publish` event is the
    /// first of them going out.
    submitted: VecDeque<Job>,
    /// Written, awaiting their PUBACK, by packet id.
    inflight: HashMap<u16, Job>,
    /// Lost with a connection, to publish again once it is back.
    retry: Vec<Job>,
    acknowledged: u64,
    undeliverable: Vec<RecordError>,
    failure: Option<String>,
    connected: bool,
    closing: bool,
    ended: bool,
}

impl Publishing {
    fn outstanding(&self) -> usize {
        self.submitted.len() + self.inflight.len() + self.retry.len()
    }

    /// Hands `job` to the client, keeping `submitted` in the client's order.
    fn submit(&mut self, client: &AsyncClient, job: Job) {
        match client.try_publish(&job.topic, QoS::AtLeastOnce, false, job.payload.clone()) {
            Ok(()) => self.submitted.push_back(job),
            Err(error) => {
                let why = format!("the MQTT client refused the publish: {error}");
                self.undeliverable.push(job.given_up(why));
            }
        }
    }

    fn on_event(
        &mut self,
        event: Event,
        client: &AsyncClient,
        reconnect: &mut Reconnect,
        max_attempts: u32,
    ) {
        match event {
            Event::Outgoing(Outgoing::Publish(packet_id)) => {
                if let Some(mut job) = self.submitted.pop_front() {
                    job.attempts += 1;
                    self.inflight.insert(packet_id, job);
                }
            }
            Event::Incoming(Packet::PubAck(puback)) => {
                let known = self.inflight.remove(&puback.pkid).is_some();
                self.acknowledged += u64::from(known);
            }
            Event::Incoming(Packet::ConnAck(_)) => {
                reconnect.connected(" (publishing again what was not acknowledged)");
                self.connected = true;
                for job in std::mem::take(&mut self.retry) {
                    if job.attempts >= max_attempts {
                        let why = format!(
                            "not acknowledged by the MQTT broker after {} attempts (the \
                             connection dropped each time)",
                            job.attempts
                        );
                        self.undeliverable.push(job.given_up(why));
                    } else {
                        self.submit(client, job);
                    }
                }
            }
            _ => {}
        }
    }

    /// The connection dropped: nothing submitted or in flight will be acknowledged on it.
    fn lose_connection(&mut self) {
        self.connected = false;
        let inflight = std::mem::take(&mut self.inflight);
        self.retry.extend(inflight.into_values());
        self.retry.extend(self.submitted.drain(..));
    }

    /// Gives up for good: everything outstanding is undeliverable.
    fn fail(&mut self, failure: String) {
        let jobs: Vec<Job> = std::mem::take(&mut self.inflight)
            .into_values()
            .chain(self.submitted.drain(..))
            .chain(self.retry.drain(..))
            .collect();
        for job in jobs {
            self.undeliverable.push(job.given_up(failure.clone()));
        }
        self.failure = Some(failure);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Publishing> {
        lock(&self.state)
    }
}

/// The task that polls a sink writer's event loop (never interrupted), matches PUBACKs to
/// records and publishes again after a reconnect.
struct Publisher {
    eventloop: EventLoop,
    client: AsyncClient,
    shared: Arc<Shared>,
    reconnect: Reconnect,
    max_attempts: u32,
}

impl Publisher {
    async fn run(self) {
        let Publisher {
            mut eventloop,
            client,
            shared,
            mut reconnect,
            max_attempts,
        } = self;
        shared.lock().connected = true;
        loop {
            let polled = eventloop.poll().await;
            let lost = {
                let mut state = shared.lock();
                let lost = match polled {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                        state.ended = true;
                        None
                    }
                    Ok(event) => {
                        state.on_event(event, &client, &mut reconnect, max_attempts);
                        None
                    }
                    Err(error) => {
                        // Events read before the connection broke still count.
                        for event in std::mem::take(&mut eventloop.state.events) {
                            state.on_event(event, &client, &mut reconnect, max_attempts);
                        }
                        // rumqttc would publish again on a kept session; this one is clean, so
                        // the retry list does it.
                        eventloop.clean();
                        eventloop.pending.clear();
                        state.lose_connection();
                        if state.closing {
                            state.ended = true;
                        }
                        Some(error)
                    }
                };
                shared.changed.notify_all();
                if state.ended {
                    return;
                }
                lost
            };
            if let Some(error) = lost {
                if let Err(failure) = reconnect.wait(&error).await {
                    let mut state = shared.lock();
                    state.fail(failure.what);
                    state.ended = true;
                    shared.changed.notify_all();
                    return;
                }
            }
        }
    }
}

/// One worker's writer of an [`MqttSink`].
struct MqttWriter<T> {
    shared: Arc<Shared>,
    client: AsyncClient,
    format: Format,
    topic: String,
    topic_field: Option<String>,
    max_packet_size: usize,
    window: usize,
    /// How long records may wait without any PUBACK while connected before the sink fails.
    stall: Duration,
    what: String,
    worker: usize,
    sequence: u64,
    _marker: PhantomData<fn(T)>,
}

impl<T: Serialize + 'static> MqttWriter<T> {
    fn job(&mut self, record: &T) -> Result<Job, RecordError> {
        self.sequence += 1;
        let topic = self.topic_of(record).map_err(|why| {
            let location = format!("writer {} record {}", self.worker, self.sequence);
            RecordError::new(location, why).with_raw(serde_json::to_vec(record).unwrap_or_default())
        })?;
        let location = format!(
            "topic {topic} (writer {} record {})",
            self.worker, self.sequence
        );
        let mut payload = Vec::new();
        if let Err(e) = self.format.encode(record, &mut payload) {
            let why = format!("cannot encode the record as {}: {e}", self.format);
            return Err(RecordError::new(location, why)
                .with_raw(serde_json::to_vec(record).unwrap_or_default()));
        }
        // The fixed header, the topic's length prefix and the packet id.
        let size = payload.len() + topic.len() + 9;
        if size > self.max_packet_size {
            let why = format!(
                "the message is {size} bytes, more than max_packet_size={}: raise it (and the \
                 broker's message_size_limit) or send smaller records",
                self.max_packet_size
            );
            return Err(RecordError::new(location, why).with_raw(payload));
        }
        Ok(Job {
            topic,
            payload,
            location,
            attempts: 0,
        })
    }

    fn topic_of(&self, record: &T) -> Result<String, String> {
        let Some(field) = &self.topic_field else {
            return Ok(self.topic.clone());
        };
        let value = serde_json::to_value(record)
            .map_err(|e| format!("cannot read the topic field '{field}': {e}"))?;
        match value.get(field) {
            Some(Value::String(topic)) if !topic.is_empty() && rumqttc::valid_topic(topic) => {
                Ok(topic.clone())
            }
            Some(Value::String(topic)) => Err(format!(
                "the topic field '{field}' holds '{topic}', which is not a topic to publish to \
                 (empty, or with a wildcard + or #)"
            )),
            Some(other) => Err(format!(
                "the topic field '{field}' is {other}, not a string"
            )),
            None if !self.topic.is_empty() => Ok(self.topic.clone()),
            None => Err(format!(
                "the record has no topic field '{field}' and the sink has no default topic"
            )),
        }
    }

    /// Waits until nothing is outstanding: every record written so far was acknowledged by
    /// the broker (PUBACK) or handed to [`SinkWriter::undeliverable`]. The connection stays
    /// open for more writes.
    fn wait_for_acks(&self) -> Result<MutexGuard<'_, Publishing>, ConnectorError> {
        self.wait_until(|s| s.outstanding() == 0)
    }

    /// Waits until `done` holds, failing when the broker fails the writer or, while connected,
    /// acknowledges nothing for the stall timeout.
    fn wait_until(
        &self,
        done: impl Fn(&Publishing) -> bool,
    ) -> Result<MutexGuard<'_, Publishing>, ConnectorError> {
        let mut state = self.shared.lock();
        let mut progress = (state.acknowledged, Instant::now());
        loop {
            if let Some(failure) = &state.failure {
                return Err(external(failure.clone()));
            }
            if done(&state) {
                return Ok(state);
            }
            if state.acknowledged != progress.0 || !state.connected {
                progress = (state.acknowledged, Instant::now());
            } else if progress.1.elapsed() >= self.stall {
                let failure = format!(
                    "{}: the MQTT broker acknowledged none of {} publishes within {:?}",
                    self.what,
                    state.outstanding(),
                    self.stall
                );
                state.fail(failure);
                continue;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl<T: Serialize + 'static> SinkWriter<T> for MqttWriter<T> {
    fn write(&mut self, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        for (_, record) in batch.drain(..) {
            match self.job(&record) {
                Ok(job) => {
                    let window = self.window;
                    let mut state = self.wait_until(|s| s.outstanding() < window)?;
                    state.submit(&self.client, job);
                }
                Err(rejected) => self.shared.lock().undeliverable.push(rejected),
            }
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), ConnectorError> {
        self.wait_for_acks().map(drop)
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        let rows = {
            let mut state = self.wait_for_acks()?;
            state.closing = true;
            state.acknowledged
        };
        if self.client.try_disconnect().is_ok() {
            let deadline = Instant::now() + CLOSE_TIMEOUT;
            let mut state = self.shared.lock();
            while !state.ended && Instant::now() < deadline {
                state = self
                    .shared
                    .changed
                    .wait_timeout(state, Duration::from_millis(50))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        Ok(SinkReport {
            rows,
            files: Vec::new(),
        })
    }

    fn undeliverable(&mut self) -> Vec<RecordError> {
        std::mem::take(&mut self.shared.lock().undeliverable)
    }
}

impl<T> Drop for MqttWriter<T> {
    fn drop(&mut self) {
        // A writer dropped unfinished (the run failed) closes its connection too.
        self.shared.lock().closing = true;
        let _ = self.client.try_disconnect();
    }
}

// ---------------------------------------------------------------------------------------------
// Endpoints

/// The source `mqtt://HOST:PORT/FILTER[,FILTER...]?options` names, of JSON values.
pub(crate) fn endpoint_source(
    endpoint: &Endpoint,
    options: &EndpointOptions,
) -> Result<DynSource, ConnectorError> {
    let config = MqttSourceConfig::from_endpoint(endpoint)?;
    configured(MqttSource::new(config), endpoint, options)
}

/// The sink `mqtt://HOST:PORT/TOPIC?options` names, of JSON values.
pub(crate) fn endpoint_sink(
    endpoint: &Endpoint,
    options: &EndpointOptions,
) -> Result<DynSink, ConnectorError> {
    let config = MqttSinkConfig::from_endpoint(endpoint)?;
    Ok(Box::new(
        MqttSink::new(config).format(options.format.clone()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_stops_at_once_on_what_retrying_cannot_fix() {
        let mut reconnect = Reconnect {
            what: "MQTT source t".into(),
            address: "127.0.0.1:8883".into(),
            timeout: Duration::from_secs(60),
            lost_at: None,
            backoff: FIRST_BACKOFF,
        };
        let refused = ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword);
        let failure = bridge::runtime()
            .block_on(reconnect.wait(&refused))
            .expect_err("a refused password ends the reconnect");
        assert_eq!(failure.fault, Fault::User);
        assert!(
            failure.what.contains("bad user name or password"),
            "{failure}"
        );
        // A broker that is down, or busy, is waited for.
        let down = ConnectionError::Io(std::io::ErrorKind::ConnectionRefused.into());
        let busy = ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable);
        for transient in [down, busy] {
            assert!(bridge::runtime()
                .block_on(reconnect.wait(&transient))
                .is_ok());
        }
    }

    fn endpoint(text: &str) -> Endpoint {
        text.parse().unwrap()
    }

    #[test]
    fn mqtts_uris_give_tls_on_8883_and_half_configurations_are_refused() {
        let c = MqttConnection::from_endpoint(&endpoint("mqtts://h/t?ca_file=/ca.pem")).unwrap();
        assert!(c.tls);
        assert_eq!(c.address, "h:8883");
        assert_eq!(c.ca_file, Some(PathBuf::from("/ca.pem")));
        let plain = MqttConnection::from_endpoint(&endpoint("mqtt://h/t")).unwrap();
        assert!(!plain.tls && plain.address == "h:1883");
        for (uri, says) in [
            (
                "mqtts://h/t?cert_file=/c.pem",
                "both cert_file= and key_file=",
            ),
            (
                "mqtts://h/t?cert_file=/c.pem&key_file=/k.pem",
                "needs ca_file=",
            ),
            ("mqtt://h/t?ca_file=/ca.pem", "use mqtts://"),
        ] {
            let err = MqttConnection::from_endpoint(&endpoint(uri))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{uri}: {err}");
        }
    }

    #[test]
    fn source_uris_give_filters_a_stable_client_id_and_options() {
        let e = endpoint(
            "mqtt://127.0.0.1:1884/sensors/+/temp,alerts/%23?capacity=50&keep_alive=10s&reconnect_timeout=2s",
        );
        let config = MqttSourceConfig::from_endpoint(&e).unwrap();
        assert_eq!(config.connection.address, "127.0.0.1:1884");
        assert_eq!(config.filters, vec!["sensors/+/temp", "alerts/#"]);
        assert_eq!(config.capacity, 50);
        assert_eq!(config.connection.keep_alive, Duration::from_secs(10));
        assert_eq!(config.connection.reconnect_timeout, Duration::from_secs(2));
        let id = config.effective_client_id();
        assert!(id.starts_with("eddy-") && id.len() <= 23, "{id}");
        assert_eq!(
            id,
            MqttSourceConfig::new("elsewhere:1883", &["sensors/+/temp", "alerts/#"])
                .effective_client_id(),
            "the same filters give the same session"
        );
        let named =
            MqttSourceConfig::from_endpoint(&endpoint("mqtt://h/t?client_id=orders-eu")).unwrap();
        assert_eq!(named.effective_client_id(), "orders-eu");
        assert_eq!(named.connection.address, "h:1883");
    }

    #[test]
    fn bad_source_uris_say_what_to_write() {
        let cases = [
            ("mqtt://h/sensors/#", "%23"),
            ("mqtt://h/sensors/te+mp", "not an MQTT topic filter"),
            ("mqtt://h/", "names no topic"),
            ("mqtt://h/t?qos=2", "unknown option 'qos'"),
            ("mqtt://h/t?keep_alive=500ms", "at least 1s"),
            ("mqtt://h/t?capacity=none", "capacity=none"),
            ("mqtt://h/t?password_env=EDDY_MQTT_NOT_SET", "not set"),
        ];
        for (uri, expected) in cases {
            let error = MqttSourceConfig::from_endpoint(&endpoint(uri))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{uri}: {error}");
        }
    }

    #[test]
    fn sink_uris_take_a_topic_or_a_topic_field() {
        let config = MqttSinkConfig::from_endpoint(&endpoint(
            "mqtt://127.0.0.1/out/orders?max_inflight=10&max_attempts=2&client_id=pub",
        ))
        .unwrap();
        assert_eq!(config.topic, "out/orders");
        assert_eq!((config.max_inflight, config.max_attempts), (10, 2));
        assert_eq!(config.client_id.as_deref(), Some("pub"));
        let by_field =
            MqttSinkConfig::from_endpoint(&endpoint("mqtt://127.0.0.1/?topic_field=room")).unwrap();
        assert_eq!(
            (by_field.topic.as_str(), by_field.topic_field.as_deref()),
            ("", Some("room"))
        );
        for (uri, expected) in [
            ("mqtt://h/out/+", "wildcards"),
            ("mqtt://h/", "names no topic"),
            ("mqtt://h/t?max_inflight=0", "at least 1"),
            ("mqtt://h/t?capacity=5", "unknown option 'capacity'"),
        ] {
            let error = MqttSinkConfig::from_endpoint(&endpoint(uri))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{uri}: {error}");
        }
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let mut connection = MqttConnection::new("h:1883");
        connection.user = Some("eddy".into());
        connection.password = Some("s3cret".into());
        let shown = format!("{connection:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("(hidden)"),
            "{shown}"
        );
    }
}
