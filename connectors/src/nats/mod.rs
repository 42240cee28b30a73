//! NATS: core subjects and JetStream streams, as a source ([`NatsSource`]) and a sink
//! ([`NatsSink`]), through the `async-nats` client on the connectors' shared tokio runtime
//! ([`crate::bridge`]). One configuration ([`NatsConfig`]) describes both; `stream` set means
//! JetStream, unset means core NATS.
//!
//! **Core NATS source.** Each worker subscribes to the subject (wildcards `*` and `>` allowed)
//! in one queue group ([`NatsConfig::queue`], by default `eddy-SUBJECT`), so each message goes
//! to one worker of the pipeline, across processes too. Core NATS keeps nothing and has no
//! acknowledgements: a message reaches only the subscriptions active when it is published,
//! messages published while the connection is down are lost, and when the pipeline falls
//! behind, the client's buffer ([`NatsConfig::buffer`] messages) fills and the client drops
//! messages (NATS's "slow consumer"; one line is logged). **At-most-once.** A message's
//! location is `subject SUBJECT message N`, N counted by the worker from 1. It has no broker
//! timestamp (event time `Broker` falls back to arrival).
//!
//! **JetStream source** (`stream` set). Each worker pulls from one durable pull consumer
//! ([`NatsConfig::durable`], default `eddy`) of the stream, filtered to the subject, with
//! explicit acknowledgements: a message is acknowledged once a worker has handed it to the
//! pipeline (the bridge gives the tokens back; the task publishes `+ACK` to the message's reply
//! subject). It pulls at most as many messages as the channel to the workers has room for
//! (bounded batches: this is the flow control — a slow pipeline leaves the messages in the
//! stream). Messages in flight when the connection drops or the process dies are redelivered
//! after the consumer's ack wait. **At-least-once** (duplicates are possible after a restart).
//! A new durable starts at the beginning of the stream or at new messages only
//! ([`DeliverFrom`]); an existing one resumes where it was. The stream is created, bound to the
//! subject, when it is missing and [`NatsConfig::create_stream`] is set. A message's location is
//! `stream STREAM seq N` (its stream sequence), its broker timestamp its JetStream publish time.
//!
//! **Bad records.** A message that does not decode is rejected to the pipeline's dead-letter
//! sink with its bytes and location (and, on JetStream, acknowledged so it does not come back).
//!
//! **Sink.** Core: each record is published to the subject; `commit` and `finish` flush (the server has
//! then received every message), which is all core NATS promises (at-most-once). JetStream:
//! each record is published with a message id (`Nats-Msg-Id`, so a retried publish is stored
//! once within the stream's duplicate window) and is delivered when the server acknowledges it;
//! at most [`NatsConfig::in_flight`] publishes await their acknowledgement at once; a publish
//! that fails is retried ([`NatsConfig::retries`], with backoff) and then handed to the
//! pipeline's dead-letter sink ([`SinkWriter::undeliverable`](eddy_engine::SinkWriter)); a
//! publish the server refuses (too large, say) is not retried. `commit` and `finish` wait for
//! every acknowledgement of the publishes in flight. **At-least-once.**
//!
//! **TLS and authentication** ([`NatsSecurity`]). `tls://HOST:PORT/SUBJECT` (or `tls=true` on
//! `nats://`) requires TLS; a server that requires TLS gets it on `nats://` too. `ca_file=` adds
//! a CA to trust (PEM) besides the system's, `cert_file=` and `key_file=` give a client
//! certificate (mutual TLS). Credentials: `user=` with `password_env=`/`password_file=`, or
//! `token_env=`/`token_file=`, or an NKey seed (`nkey_env=`/`nkey_file=`), or a `.creds` file
//! (`creds_file=`, a JWT and its seed). Secrets come only from variables and files and are never
//! printed. A server that refuses the credentials, or a certificate that does not verify,
//! fails the source or sink at once with the reason, without retrying.
//!
//! **Reconnects.** The client reconnects by itself (with backoff up to 4 s), and resubscribes
//! core subscriptions; a JetStream pull simply resumes. One line goes to stderr when a
//! connection is lost and one when it works again; a source or sink whose connection (or
//! JetStream pulls) stays broken longer than [`NatsConfig::reconnect_timeout`] (default 60 s)
//! fails the run.

mod sink;
mod source;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream;
use async_nats::{Client, ConnectOptions, Event};
use eddy_engine::{ConnectorError, Fault};

use crate::endpoints::{configured, DynSink, DynSource, EndpointOptions};
use crate::uri::Endpoint;

pub use sink::NatsSink;
pub use source::NatsSource;

/// NATS's default port.
pub const DEFAULT_PORT: u16 = 4222;

/// Where a new durable JetStream consumer starts reading its stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeliverFrom {
    /// From the first message the stream holds (the default).
    #[default]
    All,
    /// Only messages published after the consumer was created.
    New,
}

impl FromStr for DeliverFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "all" => Ok(DeliverFrom::All),
            "new" => Ok(DeliverFrom::New),
            other => Err(format!("'{other}' is not a deliver policy: use all or new")),
        }
    }
}

/// A NATS source's or sink's configuration. Build one with [`NatsConfig::core`] or
/// [`NatsConfig::jetstream`] and change fields with struct update syntax, or parse it from a
/// `nats://HOST:PORT/SUBJECT?stream=NAME&...` URI ([`NatsConfig::from_endpoint`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsConfig {
    /// The server, `HOST:PORT` (URI: host and port; default port 4222).
    pub address: String,
    /// The subject read (wildcards allowed for sources; on JetStream, the consumer's filter) or
    /// published to (URI: the path).
    pub subject: String,
    /// The JetStream stream: `Some` reads through a durable consumer of it / publishes with
    /// acknowledgements; `None` is core NATS (URI: `stream=NAME`; default none).
    pub stream: Option<String>,
    /// Create the stream, bound to `subject`, when it does not exist (URI:
    /// `create_stream=true`; default false: a missing stream is an error).
    pub create_stream: bool,
    /// JetStream source: the durable consumer's name (URI: `durable=`; default `eddy`).
    /// Pipelines that read the same stream independently need different names.
    pub durable: String,
    /// JetStream source: where a new durable consumer starts (URI: `deliver=all|new`; default
    /// all). An existing consumer resumes where it was.
    pub deliver: DeliverFrom,
    /// JetStream source: how long the server waits for a message's acknowledgement before it
    /// delivers it again (URI: `ack_wait=30s`; default 30 s). Applies when the consumer is
    /// created.
    pub ack_wait: Duration,
    /// Core source: the queue group every worker subscribes in (URI: `queue=`; default
    /// `eddy-SUBJECT`). Pipelines that read the same subject independently need different
    /// groups.
    pub queue: Option<String>,
    /// Source: messages waiting between each worker's client and the worker (URI:
    /// `capacity=`; default 1024). Bounds the memory a slow pipeline holds.
    pub capacity: usize,
    /// Core source: messages the client holds for the subscription, beyond `capacity`, before
    /// it drops them when the pipeline is behind (URI: `buffer=`; default 65536).
    pub buffer: usize,
    /// JetStream source: the most messages one pull asks for (URI: `batch=`; default 256).
    pub batch: usize,
    /// JetStream sink: the most publishes awaiting their acknowledgement at once, per worker
    /// (URI: `in_flight=`; default 256).
    pub in_flight: usize,
    /// JetStream sink: how many times a publish that failed (no acknowledgement in time, the
    /// server unavailable) is tried again before the record is dead-lettered (URI:
    /// `retries=`; default 5, with backoff from 200 ms doubling to 5 s).
    pub retries: u32,
    /// How long connecting may take before the source or sink fails to open (URI:
    /// `connect_timeout=`; default 5 s).
    pub connect_timeout: Duration,
    /// How long a lost connection (or failing JetStream pulls) may last before the run fails
    /// (URI: `reconnect_timeout=`; default 60 s).
    pub reconnect_timeout: Duration,
    /// TLS and credentials (default: plain TCP, no credentials).
    pub security: NatsSecurity,
}

/// How a NATS client checks the server and proves who it is (see the module docs). Its `Debug`
/// shows which secrets are set, never their values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NatsSecurity {
    /// Require TLS (URI: the `tls://` scheme, or `tls=true`).
    pub tls: bool,
    /// A CA certificate (PEM) to trust besides the system's (URI: `ca_file=`).
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for mutual TLS (URI: `cert_file=`, `key_file=`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// A user and password (URI: `user=`, `password_env=` or `password_file=`).
    pub user_password: Option<(String, String)>,
    /// A token (URI: `token_env=` or `token_file=`).
    pub token: Option<String>,
    /// An NKey seed (URI: `nkey_env=` or `nkey_file=`).
    pub nkey: Option<String>,
    /// A credentials file: a user JWT and its NKey seed (URI: `creds_file=`).
    pub creds_file: Option<PathBuf>,
}

impl fmt::Debug for NatsSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |set: bool| if set { "(hidden)" } else { "none" };
        f.debug_struct("NatsSecurity")
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("user", &self.user_password.as_ref().map(|(u, _)| u))
            .field("password", &hidden(self.user_password.is_some()))
            .field("token", &hidden(self.token.is_some()))
            .field("nkey", &hidden(self.nkey.is_some()))
            .field("creds_file", &self.creds_file)
            .finish()
    }
}

/// The options of TLS and authentication, for sources and sinks.
const SECURITY_OPTIONS: &[&str] = &[
    "tls",
    "ca_file",
    "cert_file",
    "key_file",
    "user",
    "password_env",
    "password_file",
    "token_env",
    "token_file",
    "nkey_env",
    "nkey_file",
    "creds_file",
];

impl NatsSecurity {
    /// The TLS and credentials a URI gives; several kinds of credentials at once, a password
    /// without a user, or half a client certificate are errors.
    fn from_endpoint(endpoint: &Endpoint) -> Result<Self, ConnectorError> {
        let path = |name: &str| endpoint.param(name).map(PathBuf::from);
        let client_cert = endpoint.client_cert()?;
        let user_password = match (endpoint.param("user"), endpoint.secret("password")?) {
            (Some(user), Some(password)) => Some((user.to_string(), password)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConnectorError::user(format!(
                    "{endpoint}: user= needs a password: password_env=VAR or password_file=PATH"
                )))
            }
            (None, Some(_)) => {
                return Err(ConnectorError::user(format!(
                    "{endpoint}: a password needs user="
                )))
            }
        };
        let security = NatsSecurity {
            tls: endpoint.scheme == "tls" || endpoint.parse_param("tls")?.unwrap_or(false),
            ca_file: path("ca_file"),
            client_cert,
            user_password,
            token: endpoint.secret("token")?,
            nkey: endpoint.secret("nkey")?,
            creds_file: path("creds_file"),
        };
        let kinds = [
            security.user_password.is_some(),
            security.token.is_some(),
            security.nkey.is_some(),
            security.creds_file.is_some(),
        ];
        if kinds.iter().filter(|&&k| k).count() > 1 {
            return Err(ConnectorError::user(format!(
                "{endpoint}: give one kind of credentials: user and password, a token, an NKey \
                 seed or a creds file"
            )));
        }
        Ok(security)
    }

    /// `options` with this TLS and these credentials.
    async fn apply(&self, mut options: ConnectOptions) -> Result<ConnectOptions, ConnectorError> {
        if self.tls {
            options = options.require_tls(true);
        }
        for file in self
            .ca_file
            .iter()
            .chain(self.client_cert.iter().map(|(c, _)| c))
        {
            if !file.is_file() {
                return Err(ConnectorError::user(format!(
                    "NATS: the file {} does not exist or is not a file",
                    file.display()
                )));
            }
        }
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some((user, password)) = &self.user_password {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(seed) = &self.nkey {
            options = options.nkey(seed.clone());
        }
        if let Some(creds) = &self.creds_file {
            options = options.credentials_file(creds).await.map_err(|e| {
                ConnectorError::user(format!(
                    "NATS: the credentials file {} cannot be used ({e}); give a .creds file \
                     holding a user JWT and its seed",
                    creds.display()
                ))
            })?;
        }
        Ok(options)
    }
}

/// The options a NATS source takes in its URI.
const SOURCE_OPTIONS: &[&str] = &[
    "stream",
    "create_stream",
    "durable",
    "deliver",
    "ack_wait",
    "queue",
    "capacity",
    "buffer",
    "batch",
    "connect_timeout",
    "reconnect_timeout",
    "max_record_size",
];

/// The options a NATS sink takes in its URI.
const SINK_OPTIONS: &[&str] = &[
    "stream",
    "create_stream",
    "in_flight",
    "retries",
    "connect_timeout",
    "reconnect_timeout",
];

impl NatsConfig {
    /// Core NATS on `subject` at `address` (`HOST:PORT`), with the defaults.
    pub fn core(address: impl Into<String>, subject: impl Into<String>) -> Self {
        NatsConfig {
            address: address.into(),
            subject: subject.into(),
            stream: None,
            create_stream: false,
            durable: "eddy".to_string(),
            deliver: DeliverFrom::All,
            ack_wait: Duration::from_secs(30),
            queue: None,
            capacity: 1024,
            buffer: 65_536,
            batch: 256,
            in_flight: 256,
            retries: 5,
            connect_timeout: Duration::from_secs(5),
            reconnect_timeout: Duration::from_secs(60),
            security: NatsSecurity::default(),
        }
    }

    /// JetStream: `subject` of `stream` at `address`, with the defaults.
    pub fn jetstream(
        address: impl Into<String>,
        subject: impl Into<String>,
        stream: impl Into<String>,
    ) -> Self {
        NatsConfig {
            stream: Some(stream.into()),
            ..NatsConfig::core(address, subject)
        }
    }

    /// The configuration a `nats://HOST:PORT/SUBJECT?stream=NAME&...` URI gives (see the
    /// fields for the options); an unknown or malformed option is an error naming it.
    pub fn from_endpoint(endpoint: &Endpoint) -> Result<Self, ConnectorError> {
        let mut known = SOURCE_OPTIONS.to_vec();
        known.extend(SINK_OPTIONS.iter().filter(|o| !SOURCE_OPTIONS.contains(o)));
        known.extend(SECURITY_OPTIONS);
        endpoint.check_params(&known)?;
        let defaults = NatsConfig::core(endpoint.address(DEFAULT_PORT), endpoint.name("subject")?);
        let config = NatsConfig {
            stream: endpoint.param("stream").map(str::to_string),
            create_stream: endpoint
                .parse_param("create_stream")?
                .unwrap_or(defaults.create_stream),
            durable: endpoint
                .param("durable")
                .map_or(defaults.durable.clone(), str::to_string),
            deliver: endpoint.parse_param("deliver")?.unwrap_or(defaults.deliver),
            ack_wait: endpoint
                .duration_param("ack_wait")?
                .unwrap_or(defaults.ack_wait),
            queue: endpoint.param("queue").map(str::to_string),
            capacity: endpoint
                .parse_param("capacity")?
                .unwrap_or(defaults.capacity),
            buffer: endpoint.parse_param("buffer")?.unwrap_or(defaults.buffer),
            batch: endpoint.parse_param("batch")?.unwrap_or(defaults.batch),
            in_flight: endpoint
                .parse_param("in_flight")?
                .unwrap_or(defaults.in_flight),
            retries: endpoint.parse_param("retries")?.unwrap_or(defaults.retries),
            connect_timeout: endpoint
                .duration_param("connect_timeout")?
                .unwrap_or(defaults.connect_timeout),
            reconnect_timeout: endpoint
                .duration_param("reconnect_timeout")?
                .unwrap_or(defaults.reconnect_timeout),
            security: NatsSecurity::from_endpoint(endpoint)?,
            ..defaults
        };
        config
            .validate()
            .map_err(|problem| ConnectorError::user(format!("{endpoint}: {problem}")))?;
        Ok(config)
    }

    /// The queue group core subscriptions join: [`NatsConfig::queue`], or `eddy-SUBJECT`.
    pub fn queue_group(&self) -> String {
        self.queue
            .clone()
            .unwrap_or_else(|| format!("eddy-{}", self.subject))
    }

    /// What is wrong with this configuration, if anything.
    fn validate(&self) -> Result<(), String> {
        let name_ok = |name: &str| {
            !name.is_empty()
                && !name
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        };
        if self.subject.is_empty() || self.subject.chars().any(char::is_whitespace) {
            return Err(format!(
                "'{}' is not a NATS subject: write tokens separated by dots, without spaces \
                 (orders.eu, orders.*, orders.>)",
                self.subject
            ));
        }
        if let Some(stream) = self.stream.as_deref().filter(|s| !name_ok(s)) {
            return Err(format!(
                "'{stream}' is not a JetStream stream name: no spaces, dots, '*', '>' or slashes"
            ));
        }
        if !name_ok(&self.durable) {
            return Err(format!(
                "'{}' is not a durable consumer name: no spaces, dots, '*', '>' or slashes",
                self.durable
            ));
        }
        if self.queue_group().is_empty() || self.queue_group().contains(char::is_whitespace) {
            return Err(format!(
                "'{}' is not a queue group name: no spaces",
                self.queue_group()
            ));
        }
        for (name, value) in [
            ("capacity", self.capacity),
            ("buffer", self.buffer),
            ("batch", self.batch),
            ("in_flight", self.in_flight),
        ] {
            if value == 0 {
                return Err(format!("option {name} must be at least 1"));
            }
        }
        Ok(())
    }

    /// The configuration's problem as the error of opening a source or sink.
    fn check(&self) -> Result<(), ConnectorError> {
        self.validate()
            .map_err(|problem| ConnectorError::user(format!("{}: {problem}", self.describe())))
    }

    /// A one-line description: `nats(127.0.0.1:4222, subject orders)`,
    /// `nats-jetstream(127.0.0.1:4222, stream ORDERS, subject orders.>)`.
    pub fn describe(&self) -> String {
        match &self.stream {
            None => format!("nats({}, subject {})", self.address, self.subject),
            Some(stream) => format!(
                "nats-jetstream({}, stream {stream}, subject {})",
                self.address, self.subject
            ),
        }
    }
}

/// Opens a source of JSON records from a `nats://` URI (`eddy copy --from`).
pub(crate) fn endpoint_source(
    endpoint: &Endpoint,
    options: &EndpointOptions,
) -> Result<DynSource, ConnectorError> {
    endpoint.check_params(&[SOURCE_OPTIONS, SECURITY_OPTIONS].concat())?;
    let config = NatsConfig::from_endpoint(endpoint)?;
    configured(NatsSource::new(config), endpoint, options)
}

/// Opens a sink of JSON records from a `nats://` URI (`eddy copy --to`).
pub(crate) fn endpoint_sink(
    endpoint: &Endpoint,
    options: &EndpointOptions,
) -> Result<DynSink, ConnectorError> {
    endpoint.check_params(&[SINK_OPTIONS, SECURITY_OPTIONS].concat())?;
    let config = NatsConfig::from_endpoint(endpoint)?;
    Ok(Box::new(
        NatsSink::new(config).format(options.format.clone()),
    ))
}

/// Connects to the server, failing within the connect timeout (with an error naming the
/// address) when it does not answer. The client reconnects by itself afterwards, without
/// limit: [`Health`] decides when to give up. `buffered` is how many messages a subscription
/// may hold before the client drops them.
async fn connect(
    config: &NatsConfig,
    buffered: usize,
    refusal: &Refusal,
) -> Result<Client, ConnectorError> {
    let slow_logged = Arc::new(AtomicBool::new(false));
    let what = config.describe();
    let refusal = refusal.clone();
    let options = ConnectOptions::new()
        .name("eddy")
        .connection_timeout(config.connect_timeout)
        .max_reconnects(None)
        .subscription_capacity(buffered.max(64))
        .event_callback(move |event| {
            let (slow_logged, what) = (Arc::clone(&slow_logged), what.clone());
            refusal.note(&event);
            async move {
                if matches!(event, Event::SlowConsumer(_))
                    && !slow_logged.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(
                        "{what}: the pipeline is behind and the client drops messages \
                         (core NATS keeps nothing; read a JetStream stream to keep them)"
                    );
                }
            }
        });
    let refused = |detail: String| {
        format!(
            "cannot connect to NATS at {}: {detail}; is it running? (bash scripts/brokers.sh up)",
            config.address
        )
    };
    let options = config.security.apply(options).await?;
    // The client's own timeout covers the TCP connection; this one covers the handshake too.
    let limit = config.connect_timeout + Duration::from_secs(1);
    match tokio::time::timeout(limit, options.connect(config.address.as_str())).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(connect_error(config, e)),
        Err(_) => Err(outside(refused(format!("no answer within {limit:?}")))),
    }
}

/// Why connecting failed, for people: credentials the server refused and certificates that do
/// not verify are the user's to fix (and retrying cannot); the rest is the server's or the
/// network's.
fn connect_error(config: &NatsConfig, e: async_nats::ConnectError) -> ConnectorError {
    use async_nats::ConnectErrorKind;
    let at = format!("NATS at {}", config.address);
    let detail = e.to_string();
    // A certificate the client refuses comes back as an I/O error of the handshake.
    let lower = detail.to_ascii_lowercase();
    let tls = matches!(e.kind(), ConnectErrorKind::Tls)
        || lower.contains("certificate")
        || lower.contains("tls");
    match e.kind() {
        // The server ended the handshake: it wants a client certificate it trusts.
        _ if tls && lower.contains("received fatal alert") => ConnectorError::user(format!(
            "{at}: TLS failed: the server refused the handshake ({detail}): if it requires a \
             client certificate, give one its CA signed with cert_file= and key_file="
        )),
        _ if tls => ConnectorError::user(format!(
            "{at}: TLS failed ({detail}): if the server's certificate is signed by your own CA, \
             give it with ca_file=; the certificate must name the host you connect to; a server \
             without TLS cannot be reached with tls:// or tls=true"
        )),
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            ConnectorError::user(format!(
                "{at} refused the credentials ({detail}): check user=, password_env= / \
                 password_file=, token_env= / token_file=, nkey_env= / nkey_file= or creds_file="
            ))
        }
        _ => ConnectorError::external(
            format!(
                "cannot connect to {at}: {detail}; is it running? (bash scripts/brokers.sh up)"
            ),
            e,
        ),
    }
}

/// An error of the server or the network, without an underlying error to attach.
fn outside(what: String) -> ConnectorError {
    ConnectorError {
        what,
        fault: Fault::External,
        source: None,
    }
}

/// A JetStream context on `client`, whose publishes wait 5 s for their acknowledgement.
fn jetstream_context(client: Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .ack_timeout(Duration::from_secs(5))
        .build(client)
}

/// The configured stream, created (bound to the subject) when missing and `create_stream` is
/// set; otherwise a missing stream is an error saying how to create it.
async fn open_stream(
    context: &jetstream::Context,
    config: &NatsConfig,
    stream: &str,
) -> Result<jetstream::stream::Stream, ConnectorError> {
    use jetstream::context::GetStreamErrorKind;
    match context.get_stream(stream).await {
        Ok(found) => Ok(found),
        Err(e)
            if matches!(e.kind(), GetStreamErrorKind::JetStream(ref js)
                if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            if !config.create_stream {
                return Err(ConnectorError::user(format!(
                    "{}: the JetStream stream {stream} does not exist; create it (nats stream \
                     add {stream} --subjects '{}') or set create_stream=true",
                    config.describe(),
                    config.subject
                )));
            }
            let created = context
                .get_or_create_stream(jetstream::stream::Config {
                    name: stream.to_string(),
                    subjects: vec![config.subject.clone()],
                    ..Default::default()
                })
                .await;
            match created {
                Ok(created) => Ok(created),
                // Another worker created it meanwhile: the server refuses the second creation
                // (its subjects overlap those of the first), and the stream is there to use.
                Err(e) => context.get_stream(stream).await.map_err(|_| {
                    ConnectorError::external(
                        format!(
                            "{}: cannot create the stream {stream}: {e}",
                            config.describe()
                        ),
                        e,
                    )
                }),
            }
        }
        Err(e) => Err(ConnectorError::external(
            format!(
                "{}: cannot look up the stream {stream}: {e}; is JetStream enabled on the \
                 server (nats-server -js)?",
                config.describe()
            ),
            e,
        )),
    }
}

/// Whether the client's connection is up now.
fn connected(client: &Client) -> bool {
    client.connection_state() == State::Connected
}

/// What the client, reconnecting by itself, was told that connecting again cannot fix: the
/// server refused the credentials, or TLS failed (a certificate that does not verify). Shared
/// between the client's event callback and [`Health`].
#[derive(Clone, Default)]
struct Refusal(Arc<Mutex<Option<String>>>);

impl Refusal {
    /// Keeps the reason of `event` when it is such a failure. The client reports a failed
    /// reconnection as the kind of its connect error, in words.
    fn note(&self, event: &Event) {
        use async_nats::{ClientError, ConnectErrorKind, ServerError};
        let permanent = [
            ConnectErrorKind::AuthorizationViolation,
            ConnectErrorKind::Authentication,
            ConnectErrorKind::Tls,
        ];
        let reason = match event {
            Event::ServerError(ServerError::AuthorizationViolation) => "authorization violation",
            Event::ClientError(ClientError::Other(kind))
                if permanent.iter().any(|p| p.to_string() == *kind) =>
            {
                kind
            }
            _ => return,
        };
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
    }

    fn reason(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// How long a client has been in trouble (its connection down, its pulls failing): logs one
/// line when trouble starts and one when it ends, and gives the error to fail the run with
/// once it has lasted longer than the reconnect timeout, or at once when the client was
/// refused in a way retrying cannot fix.
struct Health {
    what: String,
    timeout: Duration,
    failing_since: Option<Instant>,
    refusal: Refusal,
}

impl Health {
    fn new(config: &NatsConfig, refusal: Refusal) -> Self {
        Health {
            what: config.describe(),
            timeout: config.reconnect_timeout,
            failing_since: None,
            refusal,
        }
    }

    /// Something failed with `problem`: the error to give up with once that has lasted too
    /// long (or at once, after a refusal), else `None` (try again).
    fn failed(&mut self, problem: &str) -> Option<ConnectorError> {
        if let Some(reason) = self.refusal.reason() {
            return Some(ConnectorError::user(format!(
                "{}: {problem}, and reconnecting was refused ({reason}): check the credentials \
                 (user=, password_*, token_*, nkey_*, creds_file=) and certificates (ca_file=, \
                 cert_file=, key_file=); retrying cannot fix it",
                self.what
            )));
        }
        let now = Instant::now();
        match self.failing_since {
            None => {
                tracing::warn!(
                    "{}: {problem}; retrying for up to {:?}",
                    self.what,
                    self.timeout
                );
                self.failing_since = Some(now);
                None
            }
            Some(since) if now.duration_since(since) >= self.timeout => Some(outside(format!(
                "{}: {problem}, for {:?}: giving up; is the server running? (bash \
                 scripts/brokers.sh up; reconnect_timeout= waits longer)",
                self.what, self.timeout
            ))),
            Some(_) => None,
        }
    }

    /// Things work (again).
    fn ok(&mut self) {
        if let Some(since) = self.failing_since.take() {
            tracing::info!(
                "{}: working again after {:.1} s",
                self.what,
                since.elapsed().as_secs_f64()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_reconnection_fails_at_once_and_a_lost_server_is_waited_for() {
        use async_nats::{ClientError, ConnectErrorKind};
        let config = NatsConfig::from_endpoint(&endpoint("nats://127.0.0.1:4222/s")).unwrap();
        let refusal = Refusal::default();
        let mut health = Health::new(&config, refusal.clone());
        // The server is down: the client says so, and the run waits for it.
        refusal.note(&Event::ClientError(ClientError::Other(
            ConnectErrorKind::Io.to_string(),
        )));
        assert!(health.failed("the connection is lost").is_none());
        // It came back, and refused the credentials: no more waiting.
        refusal.note(&Event::ClientError(ClientError::Other(
            ConnectErrorKind::AuthorizationViolation.to_string(),
        )));
        let error = health
            .failed("the connection is lost")
            .expect("a refusal fails at once");
        assert_eq!(error.fault, Fault::User);
        assert!(error.what.contains("authorization violation"), "{error}");
    }

    fn endpoint(uri: &str) -> Endpoint {
        uri.parse().unwrap()
    }

    #[test]
    fn tls_and_credentials_come_from_the_uri_and_secrets_stay_hidden() {
        std::env::set_var("EDDY_TEST_NATS_PASSWORD", "pw-4f1e");
        let config = NatsConfig::from_endpoint(&endpoint(
            "tls://h:4223/s?ca_file=/ca.pem&user=eddy&password_env=EDDY_TEST_NATS_PASSWORD",
        ))
        .unwrap();
        let security = &config.security;
        assert!(security.tls);
        assert_eq!(security.ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(
            security.user_password,
            Some(("eddy".to_string(), "pw-4f1e".to_string()))
        );
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("pw-4f1e") && shown.contains("(hidden)"),
            "{shown}"
        );
        let plain = NatsConfig::from_endpoint(&endpoint("nats://h/s")).unwrap();
        assert!(!plain.security.tls && plain.security == NatsSecurity::default());
        for (uri, says) in [
            (
                "nats://h/s?cert_file=/c.pem",
                "both cert_file= and key_file=",
            ),
            ("nats://h/s?user=eddy", "user= needs a password"),
            (
                "nats://h/s?password_env=EDDY_TEST_NATS_PASSWORD",
                "a password needs user=",
            ),
            (
                "nats://h/s?token_env=EDDY_TEST_NATS_PASSWORD&creds_file=/x.creds",
                "one kind of credentials",
            ),
        ] {
            let err = NatsConfig::from_endpoint(&endpoint(uri))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{uri}: {err}");
            assert!(!err.contains("pw-4f1e"), "{err}");
        }
    }

    #[test]
    fn uris_give_core_and_jetstream_configurations() {
        let core = NatsConfig::from_endpoint(&endpoint("nats://localhost/orders.*")).unwrap();
        assert_eq!(core, NatsConfig::core("localhost:4222", "orders.*"));
        assert_eq!(core.queue_group(), "eddy-orders.*");
        let js = NatsConfig::from_endpoint(&endpoint(
            "nats://127.0.0.1:4333/orders.eu?stream=ORDERS&durable=exporter&deliver=new\
             &create_stream=true&batch=64&capacity=128&ack_wait=10s&in_flight=8&retries=2\
             &reconnect_timeout=5s&buffer=1000",
        ))
        .unwrap();
        assert_eq!(
            js,
            NatsConfig {
                durable: "exporter".into(),
                deliver: DeliverFrom::New,
                create_stream: true,
                batch: 64,
                capacity: 128,
                buffer: 1000,
                ack_wait: Duration::from_secs(10),
                in_flight: 8,
                retries: 2,
                reconnect_timeout: Duration::from_secs(5),
                ..NatsConfig::jetstream("127.0.0.1:4333", "orders.eu", "ORDERS")
            }
        );
        assert_eq!(
            js.describe(),
            "nats-jetstream(127.0.0.1:4333, stream ORDERS, subject orders.eu)"
        );
    }

    #[test]
    fn bad_options_are_errors_that_name_them() {
        let err = |uri: &str| {
            NatsConfig::from_endpoint(&endpoint(uri))
                .unwrap_err()
                .to_string()
        };
        let e = err("nats://localhost/orders?stream=ORDERS&deliver=last");
        assert!(
            e.contains("deliver=last") && e.contains("all or new"),
            "{e}"
        );
        let e = err("nats://localhost/orders?strem=ORDERS");
        assert!(e.contains("unknown option 'strem'"), "{e}");
        let e = err("nats://localhost/orders?stream=OR.DERS");
        assert!(e.contains("not a JetStream stream name"), "{e}");
        let e = err("nats://localhost/orders?capacity=0");
        assert!(e.contains("capacity must be at least 1"), "{e}");
        let e = err("nats://localhost/");
        assert!(e.contains("nats://HOST:PORT/SUBJECT"), "{e}");
        let options = EndpointOptions::default();
        let e = endpoint_sink(&endpoint("nats://localhost/orders?queue=q"), &options)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("unknown option 'queue'") && e.contains("in_flight"),
            "{e}"
        );
        let e = endpoint_source(&endpoint("nats://localhost/orders?retries=1"), &options)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown option 'retries'"), "{e}");
    }
}
