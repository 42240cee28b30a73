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
//! [`Format`], to the exchange (the default exchange unless `exchange` is set)
//! with the routing key (the queue's name unless `routing_key` is set), as a persistent message
//! with the `mandatory` flag, on a channel in confirm mode. A record counts as delivered only
//! once the broker confirms it; at most `in_flight` publishes (default 1000) wait for confirms
//! at once, and a worker that reaches that waits. A record the broker nacks or returns as
//! unroutable is published again up to `retries` times (default 3), then handed to the
//! dead-letter sink with its bytes and target. A lost connection is reconnected as for the
//! source, and every unconfirmed record is published again: **at-least-once**. `commit` and
//! `finish` wait for every confirm.
//!
//! **TLS and logins** ([`AmqpConfig::tls`], [`AuthMechanism`]). `amqps://HOST:PORT/QUEUE`
//! (default port 5671, or `tls=true` on `amqp://`) connects over TLS (rustls), checking the
//! broker's certificate against the system's CAs and `ca_file=` (PEM); the certificate must
//! name the host connected to. `cert_file=` and `key_file=` (PEM) give a client certificate for
//! mutual TLS. The login is `user=` with `password_env=` or `password_file=` (SASL `PLAIN`), or
//! with `auth_mechanism=external` the client certificate itself (SASL `EXTERNAL`: the broker
//! takes the user from the certificate, and no password is sent). A broker that refuses the
//! login, a certificate that does not verify (an unknown CA, another host's name, a client
//! certificate the broker does not trust) or a certificate or key file that cannot be read
//! fails the source or sink at once with the reason: retrying cannot fix them, so they end a
//! reconnect too.

mod config;
mod sink;
mod source;

pub use config::{AmqpConfig, AuthMechanism, DEFAULT_PORT, DEFAULT_TLS_PORT};
pub use sink::AmqpSink;
pub use source::AmqpSource;

use std::time::{Duration, Instant};

use eddy_engine::{ConnectorError, Fault};
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::uri::{
    AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo, SASLMechanism,
};
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind};

use crate::endpoints::{configured, DynSink, DynSource, EndpointOptions};
use crate::format::Format;
use crate::tls;
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

/// Whether `error` is a TLS failure that retrying cannot fix: a certificate that does not
/// verify, an alert the broker ended the handshake with (it refused the client certificate), a
/// peer that does not speak TLS, or a certificate or key rustls cannot use. rustls reports them
/// as I/O errors, most of kind `InvalidData`.
fn tls_failure(error: &lapin::Error) -> bool {
    let ErrorKind::IOError(io) = error.kind() else {
        return false;
    };
    let text = io.to_string().to_ascii_lowercase();
    io.kind() == std::io::ErrorKind::InvalidData
        || ["certificate", "alert", "tls", "handshake"]
            .iter()
            .any(|word| text.contains(word))
}

/// Whether the broker closed a TLS connection before the AMQP handshake could start, as
/// RabbitMQ does to a client certificate it does not trust under TLS 1.3: the client finishes
/// its side of the handshake before the broker checks the certificate, so the broker's alert
/// may be lost in the reset that answers the client's first AMQP bytes.
fn closed_after_handshake(error: &lapin::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(error.kind(), ErrorKind::IOError(io)
        if matches!(io.kind(), ConnectionReset | UnexpectedEof | BrokenPipe | ConnectionAborted))
}

/// What to do about a failed TLS handshake with the broker at `host`, whose error reads
/// `detail` (rustls's words).
fn tls_hint(detail: &str, host: &str) -> String {
    if detail.contains("UnknownIssuer") {
        "no CA trusted here signed the broker's certificate: give the CA that did with \
         ca_file= (PEM)"
            .to_string()
    } else if detail.contains("not valid for name") {
        format!(
            "the broker's certificate does not name {host}, the host connected to: connect by a \
             name or address it holds"
        )
    } else if detail.contains("alert") {
        "the broker ended the handshake: if a client certificate was sent (cert_file=), the \
         broker does not trust the CA that signed it, or it requires one and none was sent"
            .to_string()
    } else if detail.contains("InvalidContentType") {
        "the port does not speak TLS: use amqp://, or the broker's TLS port (5671)".to_string()
    } else {
        "check ca_file=, cert_file= and key_file=; the broker's certificate must be signed by a \
         trusted CA and name the host connected to"
            .to_string()
    }
}

/// The TLS settings lapin connects with: the CA file's certificates to trust besides the
/// system's, and the client certificate and key, each checked first (readable, PEM, holding
/// what it should): a file that is not is the user's to fix.
fn tls_config(config: &AmqpConfig) -> Result<OwnedTLSConfig, ConnectorError> {
    let fail = |e: String| ConnectorError::user(format!("RabbitMQ at {}: {e}", config.address));
    let cert_chain = match &config.ca_file {
        Some(ca) => {
            tls::pem_certificates("ca_file", ca).map_err(fail)?;
            let pem = tls::read_pem("ca_file", ca).map_err(fail)?;
            // PEM, as checked above: text.
            Some(String::from_utf8_lossy(&pem).into_owned())
        }
        None => None,
    };
    let identity = match &config.client_cert {
        Some((cert, key)) => {
            tls::pem_certificates("cert_file", cert).map_err(fail)?;
            tls::pem_key("key_file", key).map_err(fail)?;
            Some(OwnedIdentity::PKCS8 {
                pem: tls::read_pem("cert_file", cert).map_err(fail)?,
                key: tls::read_pem("key_file", key).map_err(fail)?,
            })
        }
        None => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// Connects to the broker, failing within `connect_timeout` with an error that names the
/// address and says what to check. `role` names the connection in the broker's management
/// views (`eddy source orders #0`).
async fn connect(config: &AmqpConfig, role: &str) -> Result<Connection, ConnectorError> {
    let at = format!("RabbitMQ at {}", config.address);
    config
        .validate()
        .map_err(|e| ConnectorError::user(format!("{at}: {e}")))?;
    let unreachable = |detail: String| {
        format!("cannot connect to {at}: {detail}; is it running? (bash scripts/brokers.sh up)")
    };
    let default_port = if config.tls {
        DEFAULT_TLS_PORT
    } else {
        DEFAULT_PORT
    };
    let (host, port) = match config.address.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok()),
        None => (config.address.as_str(), Some(default_port)),
    };
    let Some(port) = port else {
        return Err(ConnectorError::user(format!(
            "'{}' is not a RabbitMQ address: write HOST:PORT (e.g. 127.0.0.1:{default_port})",
            config.address
        )));
    };
    let tls = if config.tls {
        tls_config(config)?
    } else {
        OwnedTLSConfig::default()
    };
    let uri = AMQPUri {
        scheme: if config.tls {
            AMQPScheme::AMQPS
        } else {
            AMQPScheme::AMQP
        },
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: config.user.clone(),
                password: config.password.clone(),
            },
            // The TLS server name too: the broker's certificate must name it.
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
        },
        vhost: config.vhost.clone(),
        query: AMQPQueryString {
            connection_timeout: u64::try_from(config.connect_timeout.as_millis()).ok(),
            auth_mechanism: Some(match config.auth_mechanism {
                AuthMechanism::Plain => SASLMechanism::Plain,
                AuthMechanism::External => SASLMechanism::External,
            }),
            ..AMQPQueryString::default()
        },
    };
    let properties =
        ConnectionProperties::default().with_connection_name(format!("eddy {role}").into());
    let runtime = lapin::runtime::default_runtime().map_err(|e| {
        failure(
            Fault::Internal,
            format!("{at}: no runtime to connect on: {e}"),
        )
    })?;
    let connecting = Connection::connect_uri_with_config(uri, properties, tls, runtime);
    match tokio::time::timeout(config.connect_timeout, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) if reply_code(&error).is_some() => {
            let (who, check) = match config.auth_mechanism {
                AuthMechanism::Plain => (
                    format!("user '{}'", config.user),
                    "check user=, password_env= / password_file= and vhost= (the guest user may \
                     connect from loopback only)",
                ),
                AuthMechanism::External => (
                    "the client certificate's user (auth_mechanism=external)".to_string(),
                    "the broker must have the user the certificate names (its CN, with \
                     ssl_cert_login_from = common_name), allowed on the vhost (vhost=)",
                ),
            };
            Err(failure(
                Fault::User,
                format!(
                    "{at} refused {who} on vhost '{}' ({}): {check}",
                    config.vhost,
                    describe(&error)
                ),
            ))
        }
        Ok(Err(error)) if config.tls && tls_failure(&error) => {
            let detail = describe(&error);
            let hint = tls_hint(&detail, host);
            Err(failure(
                Fault::User,
                format!("{at}: TLS failed ({detail}): {hint}"),
            ))
        }
        Ok(Err(error)) if config.client_cert.is_some() && closed_after_handshake(&error) => {
            Err(failure(
                Fault::User,
                format!(
                    "{at}: TLS failed: the broker closed the connection right after the TLS \
                     handshake ({}): it does not take the client certificate (cert_file=); \
                     check that a CA the broker trusts signed it",
                    describe(&error)
                ),
            ))
        }
        // A TLS port answers a plain AMQP greeting with bytes that are no AMQP frame.
        Ok(Err(error)) if !config.tls && matches!(error.kind(), ErrorKind::ParsingError(_)) => {
            let detail = describe(&error);
            Err(failure(
                Fault::User,
                format!("{at} does not speak AMQP 0.9.1 ({detail}): for a TLS port use amqps://"),
            ))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_that_cannot_be_used_are_named_with_the_broker() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        let der = dir.path().join("ca.der");
        std::fs::write(&der, [0x30, 0x82, 0x01]).unwrap();
        let missing = dir.path().join("missing.pem");

        let mut config = AmqpConfig::new("127.0.0.1:5671", "q");
        config.tls = true;
        config.ca_file = Some(cert.clone());
        config.client_cert = Some((cert.clone(), key.clone()));
        let tls = tls_config(&config).unwrap();
        assert!(tls.cert_chain.unwrap().contains("BEGIN CERTIFICATE"));
        assert!(matches!(tls.identity, Some(OwnedIdentity::PKCS8 { .. })));

        let cases = [
            (
                Some(missing.clone()),
                (cert.clone(), key.clone()),
                "ca_file=",
            ),
            (Some(der.clone()), (cert.clone(), key.clone()), "ca_file="),
            (None, (missing.clone(), key.clone()), "cert_file="),
            (None, (cert.clone(), cert.clone()), "key_file="),
        ];
        for (ca_file, client_cert, says) in cases {
            config.ca_file = ca_file;
            config.client_cert = Some(client_cert);
            let err = tls_config(&config).unwrap_err();
            assert_eq!(err.fault, Fault::User, "{err}");
            let err = err.to_string();
            assert!(
                err.starts_with("RabbitMQ at 127.0.0.1:5671: ") && err.contains(says),
                "{err}"
            );
            assert!(
                err.contains("cannot be read") || err.contains("holds no"),
                "{err}"
            );
        }
    }
}
