//! The RabbitMQ connector's configuration: where the broker is, how to reach it (TLS, the
//! login), which queue or exchange, and how much may be in flight — as a typed struct, or
//! parsed from an endpoint URI's options.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use eddy_engine::ConnectorError;

use crate::uri::Endpoint;

/// RabbitMQ's AMQP port.
pub const DEFAULT_PORT: u16 = 5672;
/// RabbitMQ's port for AMQP over TLS (`amqps://`).
pub const DEFAULT_TLS_PORT: u16 = 5671;

/// The URI options both the source and the sink take.
const COMMON_OPTIONS: [&str; 13] = [
    "vhost",
    "user",
    "password_env",
    "password_file",
    "auth_mechanism",
    "tls",
    "ca_file",
    "cert_file",
    "key_file",
    "declare",
    "durable",
    "connect_timeout",
    "reconnect_timeout",
];
/// What `auth_mechanism=` takes.
const MECHANISMS: &str = "plain, external";
/// The options only the source takes.
const SOURCE_OPTIONS: [&str; 2] = ["prefetch", "max_record_size"];
/// The options only the sink takes.
const SINK_OPTIONS: [&str; 5] = [
    "exchange",
    "routing_key",
    "mandatory",
    "in_flight",
    "retries",
];

/// How a client proves to RabbitMQ who it is (URI: `auth_mechanism=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthMechanism {
    /// SASL `PLAIN` (the default): [`AmqpConfig::user`] and [`AmqpConfig::password`].
    #[default]
    Plain,
    /// SASL `EXTERNAL`: the TLS client certificate ([`AmqpConfig::client_cert`]) is the login,
    /// and the broker takes the user from it (RabbitMQ's `rabbitmq_auth_mechanism_ssl` plugin:
    /// the certificate's CN with `ssl_cert_login_from = common_name`, otherwise its DN). No
    /// password is sent.
    External,
}

/// How to reach RabbitMQ and what to read or write there. Build one with [`AmqpConfig::new`]
/// and set the fields that differ from the defaults, or parse it from a URI with
/// [`AmqpConfig::from_source_endpoint`] / [`AmqpConfig::from_sink_endpoint`].
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    /// The broker, `HOST:PORT`.
    pub address: String,
    /// The virtual host (default `/`).
    pub vhost: String,
    /// The user to log in as (default `guest`, which RabbitMQ admits from loopback only);
    /// unused with [`AuthMechanism::External`].
    pub user: String,
    /// The user's password (default `guest`); URIs name an environment variable or a file
    /// holding it (`password_env=RABBITMQ_PASSWORD`, `password_file=PATH`), never the password
    /// itself. Unused with [`AuthMechanism::External`].
    pub password: String,
    /// How to log in (default [`AuthMechanism::Plain`]).
    pub auth_mechanism: AuthMechanism,
    /// AMQP over TLS (URI: the `amqps://` scheme, default port 5671, or `tls=true`): rustls,
    /// checking the broker's certificate against the system's CAs and
    /// [`ca_file`](Self::ca_file); the certificate must name the host connected to.
    pub tls: bool,
    /// A CA certificate (PEM) to trust for the broker's certificate, besides the system's
    /// (URI: `ca_file=`).
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM files) for mutual TLS, and the login of
    /// [`AuthMechanism::External`] (URI: `cert_file=`, `key_file=`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The queue: the one a source consumes; for a sink, the queue it declares (and binds to
    /// [`exchange`](Self::exchange) when that is not the default exchange) and the default
    /// routing key. A sink that publishes to a named exchange may leave it empty.
    pub queue: String,
    /// Declare the queue when it does not exist (default `true`); with `false` a missing queue
    /// is an error. An existing queue is used as it is, whatever its settings.
    pub declare: bool,
    /// Whether a queue this connector declares survives a broker restart (default `true`).
    pub durable: bool,
    /// Source: how many messages the broker may send each reader before it acknowledges them
    /// (basic.qos, default 2000). It bounds what is in flight between the broker and the
    /// pipeline, per worker.
    pub prefetch: u16,
    /// Sink: the exchange to publish to; empty (the default) is the default exchange, which
    /// routes by queue name. A named exchange must exist.
    pub exchange: String,
    /// Sink: the routing key (default: the queue's name).
    pub routing_key: Option<String>,
    /// Sink: publish with the `mandatory` flag (default `true`), so the broker returns a
    /// message no queue takes instead of dropping it; such a record is retried, then
    /// dead-lettered.
    pub mandatory: bool,
    /// Sink: how many published messages may wait for the broker's confirm at once, per
    /// worker (default 1000); a worker that reaches it waits (backpressure).
    pub in_flight: usize,
    /// Sink: how many times a record the broker refused (nacked or returned as unroutable) is
    /// published again before it is dead-lettered (default 3).
    pub retries: u32,
    /// How long connecting (TCP and the AMQP handshake) may take before the connector gives up
    /// (default 5 s).
    pub connect_timeout: Duration,
    /// How long the connector keeps trying to reconnect after losing its connection before
    /// the run fails (default 60 s).
    pub reconnect_timeout: Duration,
}

impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("address", &self.address)
            .field("vhost", &self.vhost)
            .field("user", &self.user)
            .field("password", &"(hidden)")
            .field("auth_mechanism", &self.auth_mechanism)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("queue", &self.queue)
            .field("declare", &self.declare)
            .field("durable", &self.durable)
            .field("prefetch", &self.prefetch)
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("mandatory", &self.mandatory)
            .field("in_flight", &self.in_flight)
            .field("retries", &self.retries)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect_timeout", &self.reconnect_timeout)
            .finish()
    }
}

impl AmqpConfig {
    /// The queue `queue` on the broker at `address` (`HOST:PORT`), with every other setting at
    /// its default.
    pub fn new(address: impl Into<String>, queue: impl Into<String>) -> Self {
        AmqpConfig {
            address: address.into(),
            vhost: "/".to_string(),
            user: "guest".to_string(),
            password: "guest".to_string(),
            auth_mechanism: AuthMechanism::Plain,
            tls: false,
            ca_file: None,
            client_cert: None,
            queue: queue.into(),
            declare: true,
            durable: true,
            prefetch: 2000,
            exchange: String::new(),
            routing_key: None,
            mandatory: true,
            in_flight: 1000,
            retries: 3,
            connect_timeout: Duration::from_secs(5),
            reconnect_timeout: Duration::from_secs(60),
        }
    }

    /// A source's configuration from `amqp://HOST:PORT/QUEUE?options` (see docs/connectors.md
    /// for the options; an unknown one is an error listing them).
    pub fn from_source_endpoint(endpoint: &Endpoint) -> Result<Self, ConnectorError> {
        let known: Vec<&str> = COMMON_OPTIONS
            .iter()
            .chain(&SOURCE_OPTIONS)
            .copied()
            .collect();
        endpoint.check_params(&known)?;
        let mut config = Self::common(endpoint, endpoint.name("queue")?)?;
        if let Some(prefetch) = endpoint.parse_param::<u16>("prefetch")? {
            if prefetch == 0 {
                return Err(ConnectorError::user(format!(
                    "{endpoint}: option prefetch=0 would let the broker send without limit; \
                     give a positive number (default 2000)"
                )));
            }
            config.prefetch = prefetch;
        }
        Ok(config)
    }

    /// A sink's configuration from `amqp://HOST:PORT/QUEUE?options`; with `exchange=NAME` the
    /// queue may be left out (`amqp://HOST:PORT/?exchange=NAME&routing_key=KEY`).
    pub fn from_sink_endpoint(endpoint: &Endpoint) -> Result<Self, ConnectorError> {
        let known: Vec<&str> = COMMON_OPTIONS
            .iter()
            .chain(&SINK_OPTIONS)
            .copied()
            .collect();
        endpoint.check_params(&known)?;
        let exchange = endpoint.param("exchange").unwrap_or_default().to_string();
        let queue = if exchange.is_empty() {
            endpoint.name("queue")?
        } else {
            endpoint.path.as_str()
        };
        let mut config = Self::common(endpoint, queue)?;
        config.exchange = exchange;
        config.routing_key = endpoint.param("routing_key").map(str::to_string);
        if config.queue.is_empty() && config.routing_key.is_none() {
            return Err(ConnectorError::user(format!(
                "{endpoint}: a sink publishing to exchange '{}' needs a routing key: add \
                 routing_key=KEY, or name a queue in the path",
                config.exchange
            )));
        }
        if let Some(mandatory) = endpoint.parse_param::<bool>("mandatory")? {
            config.mandatory = mandatory;
        }
        if let Some(in_flight) = endpoint.parse_param::<usize>("in_flight")? {
            config.in_flight = in_flight.max(1);
        }
        if let Some(retries) = endpoint.parse_param::<u32>("retries")? {
            config.retries = retries;
        }
        Ok(config)
    }

    fn common(endpoint: &Endpoint, queue: &str) -> Result<Self, ConnectorError> {
        let tls = match (endpoint.scheme == "amqps", endpoint.parse_param("tls")?) {
            (true, Some(false)) => {
                return Err(ConnectorError::user(format!(
                    "{endpoint}: amqps:// is AMQP over TLS: leave out tls=false, or use amqp://"
                )))
            }
            (amqps, tls) => amqps || tls.unwrap_or(false),
        };
        let port = if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT };
        let mut config = AmqpConfig::new(endpoint.address(port), queue);
        config.tls = tls;
        config.ca_file = endpoint.param("ca_file").map(PathBuf::from);
        config.client_cert = endpoint.client_cert()?;
        if let Some(vhost) = endpoint.param("vhost") {
            config.vhost = vhost.to_string();
        }
        let password = endpoint.secret("password")?;
        config.auth_mechanism = match endpoint.param("auth_mechanism") {
            None => AuthMechanism::Plain,
            Some(name) if name.eq_ignore_ascii_case("plain") => AuthMechanism::Plain,
            Some(name) if name.eq_ignore_ascii_case("external") => {
                if endpoint.param("user").is_some() || password.is_some() {
                    return Err(ConnectorError::user(format!(
                        "{endpoint}: auth_mechanism=external logs in with the client \
                         certificate, and the broker takes the user from it: leave out user=, \
                         password_env= and password_file="
                    )));
                }
                AuthMechanism::External
            }
            Some(other) => {
                return Err(ConnectorError::user(format!(
                    "{endpoint}: option auth_mechanism={other} is not one Eddy speaks: give \
                     one of {MECHANISMS}"
                )))
            }
        };
        if let Some(user) = endpoint.param("user") {
            config.user = user.to_string();
        }
        if let Some(password) = password {
            config.password = password;
        }
        if let Some(declare) = endpoint.parse_param::<bool>("declare")? {
            config.declare = declare;
        }
        if let Some(durable) = endpoint.parse_param::<bool>("durable")? {
            config.durable = durable;
        }
        if let Some(timeout) = endpoint.duration_param("connect_timeout")? {
            config.connect_timeout = timeout;
        }
        if let Some(timeout) = endpoint.duration_param("reconnect_timeout")? {
            config.reconnect_timeout = timeout;
        }
        config
            .validate()
            .map_err(|e| ConnectorError::user(format!("{endpoint}: {e}")))?;
        Ok(config)
    }

    /// Checks that the TLS settings and the login fit together: files for TLS only with TLS,
    /// and [`AuthMechanism::External`] only with a client certificate.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if (self.ca_file.is_some() || self.client_cert.is_some()) && !self.tls {
            return Err(
                "ca_file=, cert_file= and key_file= are for TLS: use amqps:// (or tls=true)"
                    .to_string(),
            );
        }
        if self.auth_mechanism == AuthMechanism::External && self.client_cert.is_none() {
            let needs = "auth_mechanism=external logs in with a client certificate: use amqps:// \
                         with cert_file= and key_file=";
            return Err(needs.to_string());
        }
        Ok(())
    }

    /// The routing key a sink publishes with: [`routing_key`](Self::routing_key), or the queue.
    pub fn routing_key(&self) -> &str {
        self.routing_key.as_deref().unwrap_or(&self.queue)
    }

    /// `exchange 'X' routing key K`, for messages about a sink's target.
    pub(crate) fn target(&self) -> String {
        let exchange = if self.exchange.is_empty() {
            "(default)"
        } else {
            &self.exchange
        };
        format!("exchange {exchange} routing key {}", self.routing_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(text: &str) -> Endpoint {
        text.parse().unwrap()
    }

    #[test]
    fn source_options_are_parsed_and_checked() {
        let config = AmqpConfig::from_source_endpoint(&endpoint(
            "amqp://127.0.0.1:5673/orders?prefetch=50&declare=false&durable=false\
             &reconnect_timeout=5s&vhost=eddy&user=ada",
        ))
        .unwrap();
        assert_eq!(config.address, "127.0.0.1:5673");
        assert_eq!(config.queue, "orders");
        assert_eq!(config.prefetch, 50);
        assert!(!config.declare && !config.durable);
        assert_eq!(config.reconnect_timeout, Duration::from_secs(5));
        assert_eq!(
            (config.vhost.as_str(), config.user.as_str()),
            ("eddy", "ada")
        );
        assert_eq!(config.password, "guest");

        let defaults = AmqpConfig::from_source_endpoint(&endpoint("amqp://localhost/q")).unwrap();
        assert_eq!(defaults, AmqpConfig::new("localhost:5672", "q"));

        let err = AmqpConfig::from_source_endpoint(&endpoint("amqp://h/q?exchange=x"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown option 'exchange'") && err.contains("prefetch"),
            "{err}"
        );
        let err = AmqpConfig::from_source_endpoint(&endpoint("amqp://h/q?prefetch=0"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("prefetch=0"), "{err}");
        let err = AmqpConfig::from_source_endpoint(&endpoint("amqp://h:5672/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("amqp://HOST:PORT/QUEUE"), "{err}");
        let err =
            AmqpConfig::from_source_endpoint(&endpoint("amqp://h/q?password_env=EDDY_NO_SUCH"))
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("EDDY_NO_SUCH") && err.contains("not set"),
            "{err}"
        );
    }

    #[test]
    fn sink_options_name_the_target() {
        let config = AmqpConfig::from_sink_endpoint(&endpoint("amqp://h/orders")).unwrap();
        assert_eq!(config.routing_key(), "orders");
        assert_eq!(config.target(), "exchange (default) routing key orders");
        let config = AmqpConfig::from_sink_endpoint(&endpoint(
            "amqp://h/?exchange=amq.topic&routing_key=eu.orders&mandatory=false&in_flight=10\
             &retries=0",
        ))
        .unwrap();
        assert_eq!(config.queue, "");
        assert_eq!(config.target(), "exchange amq.topic routing key eu.orders");
        assert!(!config.mandatory);
        assert_eq!((config.in_flight, config.retries), (10, 0));
        let err = AmqpConfig::from_sink_endpoint(&endpoint("amqp://h/?exchange=amq.topic"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("routing_key=KEY"), "{err}");
        let err = AmqpConfig::from_sink_endpoint(&endpoint("amqp://h/q?prefetch=5"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown option 'prefetch'"), "{err}");
        assert!(
            format!("{config:?}").contains("password: \"(hidden)\""),
            "{config:?}"
        );
    }

    #[test]
    fn amqps_uris_give_tls_on_5671_with_a_ca_a_client_certificate_and_a_login() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "s3cretPW\n").unwrap();
        let uri = format!(
            "amqps://127.0.0.1/orders?ca_file=/tls/ca.pem&cert_file=/tls/client.pem\
             &key_file=/tls/client-key.pem&user=eddy&password_file={}&vhost=eu",
            password.display()
        );
        let config = AmqpConfig::from_source_endpoint(&endpoint(&uri)).unwrap();
        assert_eq!(config.address, "127.0.0.1:5671");
        assert!(config.tls);
        assert_eq!(config.ca_file, Some(PathBuf::from("/tls/ca.pem")));
        assert_eq!(
            config.client_cert,
            Some((
                PathBuf::from("/tls/client.pem"),
                PathBuf::from("/tls/client-key.pem")
            ))
        );
        assert_eq!(
            (config.user.as_str(), config.password.as_str()),
            ("eddy", "s3cretPW")
        );
        assert_eq!(
            (config.vhost.as_str(), config.auth_mechanism),
            ("eu", AuthMechanism::Plain)
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cretPW"), "{shown}");

        let sink = AmqpConfig::from_sink_endpoint(&endpoint(
            "amqps://h:5999/q?auth_mechanism=EXTERNAL&cert_file=/c.pem&key_file=/k.pem",
        ))
        .unwrap();
        assert_eq!(sink.address, "h:5999");
        assert_eq!(sink.auth_mechanism, AuthMechanism::External);
        let on_amqp = AmqpConfig::from_source_endpoint(&endpoint("amqp://h/q?tls=true")).unwrap();
        assert!(on_amqp.tls && on_amqp.address == "h:5671");
        let plain = AmqpConfig::from_source_endpoint(&endpoint("amqp://h/q")).unwrap();
        assert!(!plain.tls && plain.address == "h:5672" && plain.ca_file.is_none());
    }

    #[test]
    fn tls_settings_and_logins_that_do_not_fit_together_are_refused() {
        for (uri, says) in [
            ("amqp://h/q?ca_file=/ca.pem", "use amqps://"),
            (
                "amqp://h/q?cert_file=/c.pem&key_file=/k.pem",
                "use amqps://",
            ),
            (
                "amqps://h/q?cert_file=/c.pem",
                "needs both cert_file= and key_file=",
            ),
            (
                "amqps://h/q?auth_mechanism=external",
                "with cert_file= and key_file=",
            ),
            (
                "amqps://h/q?auth_mechanism=external&cert_file=/c.pem&key_file=/k.pem&user=eddy",
                "leave out user=",
            ),
            ("amqps://h/q?auth_mechanism=scram", "one of plain, external"),
            ("amqps://h/q?tls=maybe", "option tls=maybe is not valid"),
            ("amqps://h/q?tls=false", "leave out tls=false"),
        ] {
            let err = AmqpConfig::from_source_endpoint(&endpoint(uri))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{uri}: {err}");
        }
        let mut config = AmqpConfig::new("h:5671", "q");
        config.auth_mechanism = AuthMechanism::External;
        assert!(config
            .validate()
            .unwrap_err()
            .contains("client certificate"));
        config.tls = true;
        config.client_cert = Some(("/c.pem".into(), "/k.pem".into()));
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn a_password_never_shows_in_errors_or_debug_output() {
        std::env::set_var("EDDY_TEST_AMQP_PASSWORD", "s3cretPW");
        let uri = "amqps://h/q?user=eddy&password_env=EDDY_TEST_AMQP_PASSWORD&bogus=1";
        let err = AmqpConfig::from_source_endpoint(&endpoint(uri))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown option 'bogus'"), "{err}");
        let external = "amqps://h/q?auth_mechanism=external&cert_file=/c.pem&key_file=/k.pem\
                        &password_env=EDDY_TEST_AMQP_PASSWORD";
        let err = AmqpConfig::from_source_endpoint(&endpoint(external))
            .unwrap_err()
            .to_string();
        assert!(err.contains("leave out user=, password_env="), "{err}");
        let config = AmqpConfig::from_source_endpoint(&endpoint(
            "amqps://h/q?user=eddy&password_env=EDDY_TEST_AMQP_PASSWORD",
        ))
        .unwrap();
        assert_eq!(config.password, "s3cretPW");
        for shown in [err, format!("{config:?}"), endpoint(uri).to_string()] {
            assert!(!shown.contains("s3cretPW"), "{shown}");
        }
    }
}
