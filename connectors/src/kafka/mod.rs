//! Kafka: a source reading a topic's partitions, spread over the workers, and a sink publishing
//! to a topic, through the rdkafka crate (librdkafka, bundled and built by its own configure
//! script, with zlib and zstd: every Kafka compression codec; and with OpenSSL, vendored: TLS
//! and SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512).
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
//! **TLS and authentication** ([`KafkaSecurity`]). librdkafka's `security.protocol`
//! (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) is option `security_protocol`, or follows from the
//! other options: `user=` means SASL over TLS (SASL_SSL; a password goes in plain text only with
//! `security_protocol=SASL_PLAINTEXT`), `ca_file=` or a client certificate alone means SSL.
//! `sasl_mechanism=` is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (the default); the password comes
//! from `password_env=`/`password_file=` and is never printed. `ca_file=` is the CA (PEM) that
//! the broker's certificate must chain to (without it, the system's CAs); `cert_file=` and
//! `key_file=` a client certificate (mutual TLS). The broker's certificate must name the host
//! connected to (`ssl.endpoint.identification.algorithm=https`). Credentials the broker
//! refuses, a mechanism it does not take, and a TLS handshake that fails on a certificate fail
//! the source or sink at once with the reason: librdkafka would retry them for ever.
//!
//! Options (URI query parameters for [`crate::endpoints`], fields of [`KafkaSourceConfig`] and
//! [`KafkaSinkConfig`]) are listed in docs/connectors.md; any librdkafka setting can be passed as
//! `rdkafka.<name>=<value>` and overrides Eddy's, except the ones holding secrets.

mod sink;
mod source;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
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
    /// TLS and authentication (default: plain text, no credentials).
    pub security: KafkaSecurity,
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
            security: KafkaSecurity::default(),
            rdkafka: BTreeMap::new(),
        }
    }

    fn from_endpoint(endpoint: &Endpoint) -> Result<Self, ConnectorError> {
        let mut connection =
            KafkaConnection::new(endpoint.address(DEFAULT_PORT), endpoint.name("topic")?);
        if let Some(timeout) = endpoint.duration_param("connect_timeout")? {
            connection.connect_timeout = timeout;
        }
        connection.security = KafkaSecurity::from_endpoint(endpoint)?;
        connection.rdkafka = endpoint
            .params
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(RDKAFKA_PREFIX)?.to_string(), v.clone())))
            // The settings Eddy's own options take from their librdkafka names.
            .filter(|(k, _)| !TAKEN_SETTINGS.contains(&k.as_str()))
            .collect();
        if let Some(name) = connection.rdkafka.keys().find(|k| names_a_secret(k)) {
            return Err(ConnectorError::user(format!(
                "{endpoint}: option rdkafka.{name} would put a secret in the URI, which shows in \
                 process lists, shell history and logs: give the SASL password with \
                 password_env=VAR or password_file=PATH, and a client key without a passphrase"
            )));
        }
        Ok(connection)
    }

    /// `brokers/topic`, for descriptions and errors.
    fn describe(&self) -> String {
        format!("{}/{}", self.brokers, self.topic)
    }

    /// librdkafka's configuration: Eddy's settings (`ours`) and the security's, then the
    /// user's. Fails when a file of the security does not exist.
    fn client_config(&self, ours: &[(&str, String)]) -> Result<ClientConfig, ConnectorError> {
        self.security
            .check()
            .and_then(|()| self.security.check_files())
            .map_err(|e| ConnectorError::user(format!("Kafka at {}: {e}", self.brokers)))?;
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
        for (name, value) in self.security.settings() {
            config.set(name, value);
        }
        for (name, value) in &self.rdkafka {
            config.set(name, value);
        }
        Ok(config)
    }

    /// The error for a client librdkafka refused to create (a bad `rdkafka.*` setting, a
    /// certificate or key file that is not PEM).
    fn create_error(&self, what: &str, error: KafkaError) -> ConnectorError {
        ConnectorError::user(format!(
            "cannot create a Kafka {what} for {}: {error}; check the rdkafka.* options and the \
             ca_file=, cert_file= and key_file= files (PEM)",
            self.describe()
        ))
    }

    /// The topic's partitions, from the broker's metadata: fails when the broker does not
    /// answer within `connect_timeout`, at once when `health` learns of an error retrying
    /// cannot fix (`serve` hands it librdkafka's error events), and with `Ok(None)` when the
    /// topic does not exist.
    fn partitions<C: ClientContext>(
        &self,
        client: &Client<C>,
        health: &Health,
        serve: impl Fn(),
    ) -> Result<Option<Vec<i32>>, ConnectorError> {
        let started = Instant::now();
        let metadata = loop {
            let left = self.connect_timeout.saturating_sub(started.elapsed());
            match client.fetch_metadata(Some(&self.topic), left.min(METADATA_STEP)) {
                Ok(metadata) => break metadata,
                Err(e) => {
                    serve();
                    if let Some(error) = health.unfixable() {
                        return Err(error);
                    }
                    if started.elapsed() >= self.connect_timeout {
                        let (last, _) = health.failure();
                        let last = if last.is_empty() {
                            String::new()
                        } else {
                            format!(" (last error: {last})")
                        };
                        return Err(broker_error(format!(
                            "cannot connect to Kafka at {} within {:?}: {e}{last}; is it \
                             running? (bash scripts/brokers.sh up)",
                            self.brokers, self.connect_timeout
                        )));
                    }
                }
            }
        };
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

/// How long one metadata request of [`KafkaConnection::partitions`] waits, between looks at
/// the errors librdkafka reported.
const METADATA_STEP: Duration = Duration::from_millis(100);

/// librdkafka settings that Eddy's own options stand for, accepted under their librdkafka
/// names too (`rdkafka.security.protocol=SASL_SSL` is `security_protocol=SASL_SSL`).
const TAKEN_SETTINGS: &[&str] = &["security.protocol", "sasl.mechanism", "sasl.mechanisms"];

/// Whether the librdkafka setting `name` holds a secret (`sasl.password`,
/// `ssl.key.password`, `sasl.oauthbearer.client.secret`).
fn names_a_secret(name: &str) -> bool {
    name.contains("password") || name.contains("secret")
}

/// librdkafka's `security.protocol`: whether the connection is TLS, and whether the client
/// authenticates with SASL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// Plain TCP, no authentication.
    #[default]
    Plaintext,
    /// TLS; with a client certificate, the broker can authenticate the client by it.
    Ssl,
    /// SASL over plain TCP: the credentials travel unencrypted (PLAIN shows the password).
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's name.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether the connection is TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether the client authenticates with SASL.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl FromStr for SecurityProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Ok(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Ok(SecurityProtocol::SaslSsl),
            _ => Err(format!(
                "'{s}' is not a security protocol: use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
            )),
        }
    }
}

/// How a SASL client proves who it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SaslMechanism {
    /// The password itself, as the broker checks it (use it over TLS only).
    Plain,
    /// SCRAM with SHA-256: the password never travels.
    ScramSha256,
    /// SCRAM with SHA-512: the password never travels.
    #[default]
    ScramSha512,
}

impl SaslMechanism {
    /// librdkafka's (and Kafka's) name.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl FromStr for SaslMechanism {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().replace('_', "-").as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            _ => Err(format!(
                "'{s}' is not a SASL mechanism Eddy's Kafka connector speaks: use PLAIN, \
                 SCRAM-SHA-256 or SCRAM-SHA-512 (GSSAPI and OAUTHBEARER are not built in)"
            )),
        }
    }
}

/// A SASL user, its password and the mechanism that proves it. Its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslLogin {
    /// How (default SCRAM-SHA-512; URI: `sasl_mechanism=`).
    pub mechanism: SaslMechanism,
    /// The user (URI: `user=`).
    pub user: String,
    /// The password (URI: `password_env=` or `password_file=`), librdkafka's `sasl.password`.
    pub password: String,
}

impl fmt::Debug for SaslLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslLogin")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .field("password", &"(hidden)")
            .finish()
    }
}

/// How a Kafka client checks the brokers and proves who it is (see the module docs). Its
/// `Debug` never shows the password.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KafkaSecurity {
    /// TLS or not, SASL or not (URI: `security_protocol=`, or what the other options imply).
    pub protocol: SecurityProtocol,
    /// The CA certificate (PEM) the brokers' certificates must chain to; without it, the
    /// system's CAs (URI: `ca_file=`).
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM, the key unencrypted), for mutual TLS (URI:
    /// `cert_file=`, `key_file=`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The SASL login, with a SASL protocol (URI: `user=`, `password_env=`/`password_file=`,
    /// `sasl_mechanism=`).
    pub sasl: Option<SaslLogin>,
}

/// The options of TLS and authentication, for sources and sinks.
const SECURITY_PARAMS: &[&str] = &[
    "security_protocol",
    "sasl_mechanism",
    "user",
    "password_env",
    "password_file",
    "ca_file",
    "cert_file",
    "key_file",
];

impl KafkaSecurity {
    /// The TLS and credentials a URI gives (see the module docs for what implies what).
    fn from_endpoint(endpoint: &Endpoint) -> Result<Self, ConnectorError> {
        let invalid = |e: String| ConnectorError::user(format!("{endpoint}: {e}"));
        let protocol = aliased(
            endpoint,
            "security_protocol",
            &["rdkafka.security.protocol"],
        )?
        .map(|(name, value)| value.parse::<SecurityProtocol>().map_err(|e| (name, e)))
        .transpose()
        .map_err(|(name, e)| invalid(format!("option {name}: {e}")))?;
        let mechanism = aliased(
            endpoint,
            "sasl_mechanism",
            &["rdkafka.sasl.mechanism", "rdkafka.sasl.mechanisms"],
        )?
        .map(|(name, value)| value.parse::<SaslMechanism>().map_err(|e| (name, e)))
        .transpose()
        .map_err(|(name, e)| invalid(format!("option {name}: {e}")))?;
        let sasl = match (endpoint.param("user"), endpoint.secret("password")?) {
            (Some(user), Some(password)) => Some(SaslLogin {
                mechanism: mechanism.unwrap_or_default(),
                user: user.to_string(),
                password,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "user= needs a password: password_env=VAR or password_file=PATH".into(),
                ))
            }
            (None, Some(_)) => return Err(invalid("a password needs user=".into())),
        };
        if mechanism.is_some() && sasl.is_none() {
            return Err(invalid(
                "sasl_mechanism= needs user= and password_env= or password_file=".into(),
            ));
        }
        let ca_file = endpoint.param("ca_file").map(PathBuf::from);
        let client_cert = endpoint.client_cert()?;
        let tls = ca_file.is_some() || client_cert.is_some();
        let protocol = protocol.unwrap_or(match (sasl.is_some(), tls) {
            // A password goes over TLS unless the URI says otherwise.
            (true, _) => SecurityProtocol::SaslSsl,
            (false, true) => SecurityProtocol::Ssl,
            (false, false) => SecurityProtocol::Plaintext,
        });
        let security = KafkaSecurity {
            protocol,
            ca_file,
            client_cert,
            sasl,
        };
        security.check().map_err(invalid)?;
        Ok(security)
    }

    /// Fails when the protocol and the rest disagree: SASL without a login or a login without
    /// SASL, certificates without TLS.
    fn check(&self) -> Result<(), String> {
        let protocol = self.protocol.name();
        match (self.protocol.sasl(), &self.sasl) {
            (true, None) => {
                return Err(format!(
                    "security_protocol={protocol} needs user= and password_env= or \
                     password_file="
                ))
            }
            (false, Some(_)) => {
                return Err(format!(
                    "a SASL login (user=) needs security_protocol=SASL_SSL or SASL_PLAINTEXT, \
                     not {protocol}"
                ))
            }
            _ => {}
        }
        if !self.protocol.tls() && (self.ca_file.is_some() || self.client_cert.is_some()) {
            return Err(format!(
                "ca_file=, cert_file= and key_file= need TLS: security_protocol=SSL or \
                 SASL_SSL, not {protocol}"
            ));
        }
        Ok(())
    }

    /// Fails when a CA, certificate or key file does not exist.
    fn check_files(&self) -> Result<(), String> {
        let files = self.ca_file.iter().map(|f| ("ca_file", f)).chain(
            self.client_cert
                .iter()
                .flat_map(|(cert, key)| [("cert_file", cert), ("key_file", key)]),
        );
        for (option, file) in files {
            if !file.is_file() {
                return Err(format!(
                    "{option}={}: the file does not exist or is not a file",
                    file.display()
                ));
            }
        }
        Ok(())
    }

    /// librdkafka's settings for this security.
    fn settings(&self) -> Vec<(&'static str, String)> {
        let mut settings = vec![("security.protocol", self.protocol.name().to_string())];
        if self.protocol.tls() {
            // The broker's certificate must name the host connected to.
            settings.push(("ssl.endpoint.identification.algorithm", "https".into()));
            // Without a CA file, the system's CAs: the bundled OpenSSL's own default path is
            // the build directory, so librdkafka looks where distributions keep them.
            let ca = self
                .ca_file
                .as_ref()
                .map_or_else(|| "probe".to_string(), |f| f.display().to_string());
            settings.push(("ssl.ca.location", ca));
        }
        if let Some((cert, key)) = &self.client_cert {
            settings.push(("ssl.certificate.location", cert.display().to_string()));
            settings.push(("ssl.key.location", key.display().to_string()));
        }
        if let Some(login) = &self.sasl {
            settings.push(("sasl.mechanism", login.mechanism.name().to_string()));
            settings.push(("sasl.username", login.user.clone()));
            settings.push(("sasl.password", login.password.clone()));
        }
        settings
    }
}

/// The value of option `name` or of one of its other names `aliases`, with the name given;
/// two of them at once is an error.
fn aliased<'a>(
    endpoint: &'a Endpoint,
    name: &'a str,
    aliases: &[&'a str],
) -> Result<Option<(&'a str, &'a str)>, ConnectorError> {
    let mut given = std::iter::once(name)
        .chain(aliases.iter().copied())
        .filter_map(|n| Some((n, endpoint.param(n)?)));
    let first = given.next();
    if let (Some((a, _)), Some((b, _))) = (first, given.next()) {
        return Err(ConnectorError::user(format!(
            "{endpoint}: options {a} and {b} say the same: keep one"
        )));
    }
    Ok(first)
}

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

/// Options shared by sources and sinks, besides [`SECURITY_PARAMS`].
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
        check_params(
            endpoint,
            &[COMMON_PARAMS, SECURITY_PARAMS, Self::PARAMS].concat(),
        )?;
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
        check_params(
            endpoint,
            &[COMMON_PARAMS, SECURITY_PARAMS, Self::PARAMS].concat(),
        )?;
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
    /// The first error retrying cannot fix, as the error to end the run with.
    unfixable: Option<String>,
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

    /// librdkafka's error callback reported `error`, saying `reason`: a failure, and one that
    /// ends the run when retrying cannot fix it ([`Health::unfixable`]).
    fn report(&self, error: &KafkaError, reason: &str) {
        let reason = if reason.is_empty() {
            error.to_string()
        } else {
            reason.to_string()
        };
        if let Some(what) = unfixable(error.rdkafka_error_code(), &reason) {
            self.lock()
                .unfixable
                .get_or_insert_with(|| format!("{}: {what}", self.name));
        }
        self.failed(reason);
    }

    /// The error to end the run with, once librdkafka has reported one that retrying cannot
    /// fix.
    fn unfixable(&self) -> Option<ConnectorError> {
        self.lock().unfixable.clone().map(ConnectorError::user)
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

/// What is wrong, and what to do, when librdkafka's error `code` saying `reason` is one that
/// retrying cannot fix: the broker refused the credentials or the SASL mechanism, or TLS
/// failed on a certificate (or on a broker without TLS). librdkafka reports such errors and
/// retries them for ever; other errors (a broker down, a connection reset) are worth retrying.
fn unfixable(code: Option<RDKafkaErrorCode>, reason: &str) -> Option<String> {
    let lower = reason.to_ascii_lowercase();
    if code == Some(RDKafkaErrorCode::Authentication) {
        return Some(if lower.contains("mechanism handshake failed") {
            format!(
                "the broker does not take the SASL mechanism ({reason}): choose one it offers \
                 with sasl_mechanism="
            )
        } else {
            format!(
                "the broker refused the credentials ({reason}): check user=, password_env= / \
                 password_file= and sasl_mechanism=; retrying cannot fix this"
            )
        });
    }
    // A handshake cut short (the broker restarting) is worth retrying; a certificate refused,
    // an alert from the broker, or a broker that does not speak TLS is not.
    let tls = code == Some(RDKafkaErrorCode::SSL) || lower.contains("ssl");
    let refused = [
        "certificate",
        "verify",
        "alert",
        "unexpected message",
        "wrong version number",
        "packet length too long",
    ]
    .iter()
    .any(|word| lower.contains(word));
    (tls && refused).then(|| {
        format!(
            "TLS failed ({reason}): give the CA that signed the broker's certificate with \
             ca_file=, connect by a host name or address the certificate names, and where the \
             broker wants a client certificate, one its CA signed with cert_file= and key_file=; \
             retrying cannot fix this"
        )
    })
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

    /// A file holding `password`, and its path for `password_file=`.
    fn password_file(password: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, format!("{password}\n")).unwrap();
        let path = file.display().to_string();
        (dir, path)
    }

    /// librdkafka's settings for `uri`'s security, as a map.
    fn settings_of(uri: &str) -> BTreeMap<&'static str, String> {
        let config = KafkaSinkConfig::from_endpoint(&endpoint(uri)).unwrap();
        config.connection.security.settings().into_iter().collect()
    }

    #[test]
    fn a_user_means_sasl_over_tls_and_its_password_goes_only_to_librdkafka() {
        let (_dir, file) = password_file("pw-7c1d");
        let uri = format!("kafka://h:9095/t?user=eddy&password_file={file}&ca_file=/ca.pem");
        let settings = settings_of(&uri);
        let expected = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "eddy"),
            ("sasl.password", "pw-7c1d"),
            ("ssl.ca.location", "/ca.pem"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ];
        for (name, value) in expected {
            assert_eq!(
                settings.get(name).map(String::as_str),
                Some(value),
                "{name}"
            );
        }
        // Without a CA file, the system's CAs, wherever the distribution keeps them.
        let settings = settings_of(&format!("kafka://h/t?user=eddy&password_file={file}"));
        assert_eq!(settings["ssl.ca.location"], "probe");
        // In plain text only when asked, with the mechanism under either name.
        for mechanism in [
            "sasl_mechanism=scram-sha-256",
            "rdkafka.sasl.mechanism=SCRAM-SHA-256",
        ] {
            let uri = format!(
                "kafka://h/t?user=eddy&password_file={file}&{mechanism}\
                 &rdkafka.security.protocol=SASL_PLAINTEXT&rdkafka.linger.ms=5"
            );
            let config = KafkaSinkConfig::from_endpoint(&endpoint(&uri)).unwrap();
            let settings: BTreeMap<_, _> =
                config.connection.security.settings().into_iter().collect();
            assert_eq!(settings["security.protocol"], "SASL_PLAINTEXT");
            assert_eq!(settings["sasl.mechanism"], "SCRAM-SHA-256");
            assert!(!settings.contains_key("ssl.ca.location"), "no TLS");
            // Eddy's options took these settings; the rest pass through.
            assert_eq!(
                config.connection.rdkafka.keys().collect::<Vec<_>>(),
                ["linger.ms"]
            );
        }
    }

    #[test]
    fn a_client_certificate_means_tls_and_plain_uris_stay_plain() {
        let settings = settings_of("kafka://h/t?cert_file=/c.pem&key_file=/k.pem&ca_file=/ca.pem");
        assert_eq!(settings["security.protocol"], "SSL");
        assert_eq!(settings["ssl.certificate.location"], "/c.pem");
        assert_eq!(settings["ssl.key.location"], "/k.pem");
        assert!(!settings.contains_key("sasl.username"));
        let settings = settings_of("kafka://h/t?security_protocol=ssl");
        assert_eq!(
            (
                settings["security.protocol"].as_str(),
                settings["ssl.ca.location"].as_str()
            ),
            ("SSL", "probe")
        );
        let plain = KafkaSourceConfig::from_endpoint(&endpoint("kafka://h/t")).unwrap();
        assert_eq!(plain.connection.security, KafkaSecurity::default());
        assert_eq!(
            plain.connection.security.settings(),
            [("security.protocol", "PLAINTEXT".to_string())]
        );
    }

    #[test]
    fn the_password_is_never_shown() {
        let (_dir, file) = password_file("pw-93ab");
        let uri = format!("kafka://h/t?user=eddy&password_file={file}");
        let source = KafkaSourceConfig::from_endpoint(&endpoint(&uri)).unwrap();
        let sink = KafkaSinkConfig::from_endpoint(&endpoint(&uri)).unwrap();
        for shown in [
            format!("{source:?}"),
            format!("{sink:?}"),
            format!("{:#?}", source.connection.security),
            endpoint(&uri).to_string(),
        ] {
            assert!(!shown.contains("pw-93ab"), "{shown}");
        }
        assert!(format!("{source:?}").contains("password: \"(hidden)\""));
        // Nor in errors about the URI, nor when given the librdkafka way.
        let err = KafkaSourceConfig::from_endpoint(&endpoint(&format!("{uri}&bogus=1")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown option 'bogus'") && !err.contains("pw-93ab"),
            "{err}"
        );
        let err = KafkaSinkConfig::from_endpoint(&endpoint(
            "kafka://h/t?user=eddy&rdkafka.sasl.password=pw-93ab",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("password_file=PATH") && !err.contains("pw-93ab"),
            "{err}"
        );
    }

    #[test]
    fn security_options_that_disagree_are_errors_that_say_what_to_write() {
        let (_dir, file) = password_file("pw");
        let login = format!("user=eddy&password_file={file}");
        let cases = [
            (
                format!("{login}&sasl_mechanism=GSSAPI"),
                "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
            ),
            (
                format!("{login}&security_protocol=TLS"),
                "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
            ),
            (
                format!("{login}&security_protocol=SSL"),
                "needs security_protocol=SASL_SSL",
            ),
            ("user=eddy".to_string(), "user= needs a password"),
            (format!("password_file={file}"), "a password needs user="),
            (
                "sasl_mechanism=PLAIN".to_string(),
                "sasl_mechanism= needs user=",
            ),
            (
                "security_protocol=SASL_SSL".to_string(),
                "needs user= and password_env=",
            ),
            (
                format!("{login}&security_protocol=SASL_PLAINTEXT&ca_file=/ca.pem"),
                "need TLS",
            ),
            (
                "cert_file=/c.pem".to_string(),
                "needs both cert_file= and key_file=",
            ),
            (
                "security_protocol=SSL&rdkafka.security.protocol=SSL".to_string(),
                "keep one",
            ),
        ];
        for (options, says) in cases {
            let err = KafkaSinkConfig::from_endpoint(&endpoint(&format!("kafka://h/t?{options}")))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{options}: {err}");
        }
    }

    #[test]
    fn missing_certificate_files_are_named_before_connecting() {
        let (_dir, cert) = password_file("a certificate, as far as this check goes");
        let mut connection = KafkaConnection::new("h:9093", "t");
        connection.security = KafkaSecurity {
            protocol: SecurityProtocol::Ssl,
            client_cert: Some((
                PathBuf::from(cert),
                PathBuf::from("/no/such/client-key.pem"),
            )),
            ..KafkaSecurity::default()
        };
        let err = connection.client_config(&[]).unwrap_err().to_string();
        assert!(
            err.contains("key_file=/no/such/client-key.pem") && err.contains("does not exist"),
            "{err}"
        );
        connection.security.protocol = SecurityProtocol::Plaintext;
        let err = connection.client_config(&[]).unwrap_err().to_string();
        assert!(err.contains("need TLS"), "{err}");
    }

    #[test]
    fn refused_credentials_mechanisms_and_certificates_are_unfixable_and_outages_are_not() {
        let auth = Some(RDKafkaErrorCode::Authentication);
        let ssl = Some(RDKafkaErrorCode::SSL);
        let transport = Some(RDKafkaErrorCode::BrokerTransportFailure);
        let says = |code, reason| unfixable(code, reason).unwrap_or_default();
        assert!(says(
            auth,
            "sasl_plaintext://h:9094/bootstrap: SASL authentication error: SASL SCRAM \
             authentication failed: broker responded with invalid-proof"
        )
        .contains("refused the credentials"));
        assert!(says(
            auth,
            "SASL PLAIN mechanism handshake failed: broker's supported mechanisms: SCRAM-SHA-256"
        )
        .contains("does not take the SASL mechanism"));
        assert!(says(
            ssl,
            "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed"
        )
        .starts_with("TLS failed"));
        assert!(says(
            transport,
            "ssl://h:9093/bootstrap: Receive failed: error:0A00045C:SSL routines::tlsv13 alert \
             certificate required"
        )
        .starts_with("TLS failed"));
        assert_eq!(
            unfixable(
                transport,
                "h:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused"
            ),
            None
        );
        assert_eq!(unfixable(ssl, "SSL handshake failed: Disconnected"), None);
        assert_eq!(unfixable(None, "1/1 brokers are down"), None);

        let health = Health::new("kafka sink h:9095/t (worker 0)".into());
        health.report(
            &KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL authentication error: invalid-proof",
        );
        health.report(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown), "");
        let error = health.unfixable().unwrap();
        assert_eq!(error.fault, Fault::User);
        assert!(
            error
                .what
                .starts_with("kafka sink h:9095/t (worker 0): the broker refused")
                && error.what.contains("invalid-proof"),
            "the first unfixable error, naming the connector and the address: {}",
            error.what
        );
        assert!(health.failing_since().is_some());
    }
}
