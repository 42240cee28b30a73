//! RabbitMQ (AMQP 0.9.1, through the `lapin` client): a source that consumes a queue and a
//! sink that publishes to an exchange, with manual acknowledgements on the way in and
//! publisher confirms on the way out.
//!
//! **Source** ([`AmqpSource`]). Each worker opens its own connection and channel and starts one
//! consumer on the queue (declared durable when missing, unless `declare` is off), so the
//! broker spreads the queue's messages over the workers. `basic.qos` bounds each consumer's
//! unacknowledged messages (`prefetch`, default 2000): that is all a worker ever holds, and when
//! the pipeline falls behind the broker keeps the rest. A message is acknowledged once the
//! worker has handed its record to the dataflow (see [`bridge`](crate::bridge)); one that does
//! not decode goes to the dead-letter sink, located as `queue orders delivery tag 17`, and is
//! acknowledged too, so it does not come back. The message's AMQP `timestamp` property
//! (seconds) is its broker time for [`EventTimeOf::Broker`](crate::EventTimeOf::Broker). When
//! the connection drops (a broker restart), the worker reconnects with backoff for up to
//! `reconnect_timeout` (default 60 s), logging one line to stderr per loss and per reconnect,
//! then fails the run. The broker requeues what was unacknowledged, so a message may arrive
//! twice: **at-least-once**.
//!
//! **Sink** ([`AmqpSink`]). Each worker publishes every record, encoded in the sink's
//! [`Format`](crate::Format), to the exchange (the default exchange unless `exchange` is set)
//! with the routing key (the queue's name unless `routing_key` is set), as a persistent message
//! with the `mandatory` flag, on a channel in confirm mode. A record counts as delivered only
//! once the broker confirms it; at most `in_flight` publishes (default 1000) wait for confirms
//! at once, and a worker that reaches that waits. A record the broker nacks or returns as
//! unroutable is published again up to `retries` times (default 3), then handed to the
//! dead-letter sink with its bytes and target. A lost connection is reconnected as for the
//! source, and every unconfirmed record is published again: **at-least-once**. `commit` and
//! `finish` wait for every confirm.

mod config;
mod sink;
mod source;

pub use config::{AmqpConfig, DEFAULT_PORT};
pub use sink::AmqpSink;
pub use source::AmqpSource;

use std::time::{Duration, Instant};

use eddy_engine::{ConnectorError, Fault};
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind};

use crate::endpoints::{configured, DynSink, DynSource, EndpointOptions};
use crate::format::Format;
use crate::uri::Endpoint;

/// The source `amqp://HOST:PORT/QUEUE?options` names, for `eddy copy --from`.
pub(crate) fn endpoint_source(
    endpoint: &Endpoint,
    options: &EndpointOptions,
) -> Result<DynSource, ConnectorError> {
    let config = AmqpConfig::from_source_endpoint(endpoint)?;
    configured(AmqpSource::new(config, Format::Json), endpoint, options)
}

/// The sink `amqp://HOST:PORT/QUEUE?options` names, for `eddy copy --to`.
pub(crate) fn endpoint_sink(
    endpoint: &Endpoint,
    options: &EndpointOptions,
) -> Result<DynSink, ConnectorError> {
    let config = AmqpConfig::from_sink_endpoint(endpoint)?;
    Ok(Box::new(AmqpSink::new(config, options.format.clone())))
}

/// How long closing a connection may take at the end of a run.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The AMQP reply codes a broker refuses a request with that the user must fix: access refused,
/// not found, resource locked, precondition failed, not allowed.
const USER_FAULT_CODES: [u16; 5] = [403, 404, 405, 406, 530];

/// The broker's reply code in `error`, when the broker refused something.
fn reply_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

/// What went wrong, in the broker's or the system's words (`NOT_FOUND - no queue 'orders' in
/// vhost '/'`, `Connection refused (os error 111)`).
fn describe(error: &lapin::Error) -> String {
    match error.kind() {
        ErrorKind::ProtocolError(e) => e.get_message().to_string(),
        ErrorKind::IOError(e) => e.to_string(),
        _ => error.to_string(),
    }
}

/// An error whose message already carries its cause (so it is not repeated as a source).
fn failure(fault: Fault, what: String) -> ConnectorError {
    ConnectorError {
        what,
        fault,
        source: None,
    }
}

/// A failed request to the broker at `config.address`: `what` says which request. Refusals the
/// user must fix (no such queue, access refused) are user errors, the rest external.
fn broker_error(config: &AmqpConfig, what: &str, error: lapin::Error) -> ConnectorError {
    let fault = match reply_code(&error) {
        Some(code) if USER_FAULT_CODES.contains(&code) => Fault::User,
        _ => Fault::External,
    };
    let message = format!(
        "RabbitMQ at {} (vhost {}): {what}: {}",
        config.address,
        config.vhost,
        describe(&error)
    );
    failure(fault, message)
}

/// Connects to the broker, failing within `connect_timeout` with an error that names the
/// address and says what to check. `role` names the connection in the broker's management
/// views (`eddy source orders #0`).
async fn connect(config: &AmqpConfig, role: &str) -> Result<Connection, ConnectorError> {
    let unreachable = |detail: String| {
        format!(
            "cannot connect to RabbitMQ at {}: {detail}; is it running? (bash scripts/brokers.sh \
             up)",
            config.address
        )
    };
    let (host, port) = match config.address.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok()),
        None => (config.address.as_str(), Some(DEFAULT_PORT)),
    };
    let Some(port) = port else {
        return Err(ConnectorError::user(format!(
            "'{}' is not a RabbitMQ address: write HOST:PORT (e.g. 127.0.0.1:{DEFAULT_PORT})",
            config.address
        )));
    };
    let uri = AMQPUri {
        scheme: AMQPScheme::AMQP,
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: config.user.clone(),
                password: config.password.clone(),
            },
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
        },
        vhost: config.vhost.clone(),
        query: AMQPQueryString {
            connection_timeout: u64::try_from(config.connect_timeout.as_millis()).ok(),
            ..AMQPQueryString::default()
        },
    };
    let properties =
        ConnectionProperties::default().with_connection_name(format!("eddy {role}").into());
    match tokio::time::timeout(
        config.connect_timeout,
        Connection::connect_uri(uri, properties),
    )
    .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) if reply_code(&error).is_some() => Err(failure(
            Fault::User,
            format!(
                "RabbitMQ at {} refused user '{}' on vhost '{}' ({}): check user=, \
                 password_env= and vhost= (the guest user may connect from loopback only)",
                config.address,
                config.user,
                config.vhost,
                describe(&error)
            ),
        )),
        Ok(Err(error)) => Err(failure(Fault::External, unreachable(describe(&error)))),
        Err(_) => Err(failure(
            Fault::External,
            unreachable(format!(
                "no answer within {}",
                humantime::format_duration(config.connect_timeout)
            )),
        )),
    }
}

/// Opens a channel on which `config.queue` exists: checks for it, and declares it (durable as
/// `config.durable` says) when it is missing and `config.declare` allows.
async fn open_queue(
    connection: &Connection,
    config: &AmqpConfig,
) -> Result<Channel, ConnectorError> {
    let channel = create_channel(connection, config).await?;
    let queue = config.queue.as_str();
    let check = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::default().passive(),
            FieldTable::default(),
        )
        .await;
    match check {
        Ok(_) => Ok(channel),
        // The check closed that channel; declare on a new one.
        Err(error) if reply_code(&error) == Some(404) && config.declare => {
            let channel = create_channel(connection, config).await?;
            let options = QueueDeclareOptions {
                durable: config.durable,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(queue.into(), options, FieldTable::default())
                .await
                .map_err(|e| broker_error(config, &format!("cannot declare queue '{queue}'"), e))?;
            Ok(channel)
        }
        Err(error) if reply_code(&error) == Some(404) => Err(ConnectorError::user(format!(
            "RabbitMQ at {} (vhost {}) has no queue '{queue}': create it, or leave out \
             declare=false so that Eddy declares it",
            config.address, config.vhost
        ))),
        Err(error) => Err(broker_error(
            config,
            &format!("cannot check queue '{queue}'"),
            error,
        )),
    }
}

async fn create_channel(
    connection: &Connection,
    config: &AmqpConfig,
) -> Result<Channel, ConnectorError> {
    connection
        .create_channel()
        .await
        .map_err(|e| broker_error(config, "cannot open a channel", e))
}

/// Binds `config.queue` to `config.exchange` with the sink's routing key.
async fn bind_queue(channel: &Channel, config: &AmqpConfig) -> Result<(), ConnectorError> {
    channel
        .queue_bind(
            config.queue.as_str().into(),
            config.exchange.as_str().into(),
            config.routing_key().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            broker_error(
                config,
                &format!(
                    "cannot bind queue '{}' to {}",
                    config.queue,
                    config.target()
                ),
                e,
            )
        })
}

/// Closes a connection, giving up after [`CLOSE_TIMEOUT`] (the broker may be gone).
async fn close(connection: &Connection) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "eddy is done".into())).await;
}

/// Reconnection with exponential backoff (0.1 s, doubling to 2 s between attempts) until a
/// deadline.
struct Reconnect {
    started: Instant,
    timeout: Duration,
    delay: Duration,
}

impl Reconnect {
    fn new(timeout: Duration) -> Self {
        Reconnect {
            started: Instant::now(),
            timeout,
            delay: Duration::from_millis(100),
        }
    }

    /// The pause before the next attempt, or the error to fail with once the time is spent or
    /// the failure is one no retry fixes (`last` is the last attempt's error).
    fn next_delay(&mut self, last: ConnectorError) -> Result<Duration, ConnectorError> {
        if last.fault == Fault::User {
            return Err(last);
        }
        let elapsed = self.started.elapsed();
        if elapsed >= self.timeout {
            return Err(ConnectorError {
                what: format!(
                    "gave up reconnecting after {} (reconnect_timeout): {}",
                    humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
                    last.what
                ),
                ..last
            });
        }
        let delay = self.delay.min(self.timeout - elapsed);
        self.delay = (self.delay * 2).min(Duration::from_secs(2));
        Ok(delay)
    }

    /// `after 7.2s`, for the line that says the connection is back.
    fn took(&self) -> String {
        format!("after {:.1}s", self.started.elapsed().as_secs_f64())
    }
}
