//! The RabbitMQ connector's configuration: where the broker is, which queue or exchange, and
//! how much may be in flight — as a typed struct, or parsed from an endpoint URI's options.

use std::fmt;
use std::time::Duration;

use eddy_engine::ConnectorError;

use crate::uri::Endpoint;

/// RabbitMQ's AMQP port.
pub const DEFAULT_PORT: u16 = 5672;

/// The URI options both the source and the sink take.
const COMMON_OPTIONS: [&str; 8] = [
    "vhost",
    "user",
    "password_env",
    "password_file",
    "declare",
    "durable",
    "connect_timeout",
    "reconnect_timeout",
];
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

/// How to reach RabbitMQ and what to read or write there. Build one with [`AmqpConfig::new`]
/// and set the fields that differ from the defaults, or parse it from a URI with
/// [`AmqpConfig::from_source_endpoint`] / [`AmqpConfig::from_sink_endpoint`].
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    /// The broker, `HOST:PORT`.
    pub address: String,
    /// The virtual host (default `/`).
    pub vhost: String,
    /// The user to log in as (default `guest`, which RabbitMQ admits from loopback only).
    pub user: String,
    /// The user's password (default `guest`); URIs name an environment variable holding it
    /// (`password_env=RABBITMQ_PASSWORD`), never the password itself.
    pub password: String,
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
        // Never the password.
        f.debug_struct("AmqpConfig")
            .field("address", &self.address)
            .field("vhost", &self.vhost)
            .field("user", &self.user)
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
        let mut config = AmqpConfig::new(endpoint.address(DEFAULT_PORT), queue);
        if let Some(vhost) = endpoint.param("vhost") {
            config.vhost = vhost.to_string();
        }
        if let Some(user) = endpoint.param("user") {
            config.user = user.to_string();
        }
        if let Some(password) = endpoint.secret("password")? {
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
        Ok(config)
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
            !format!("{config:?}").contains("password: "),
            "no password in Debug"
        );
    }
}
