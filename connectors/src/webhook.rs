//! The HTTP webhook source: records POSTed to a path, as one JSON record per request
//! (`Content-Type: application/json`) or a batch of one JSON record per line
//! (`application/x-ndjson`).
//!
//! **One server per source.** [`WebhookSource::bind`] binds the listening socket (so a port in
//! use is an error when the pipeline is built, naming the address); the first worker to open
//! the source starts the server on [`bridge::runtime()`]. It listens on `127.0.0.1` unless
//! configured otherwise, and answers only its own path (others are 404).
//!
//! **HTTPS.** With a certificate and its key ([`WebhookTls`]: `https://ADDR:PORT/PATH
//! ?cert_file=PATH&key_file=PATH`, PEM, the intermediate CAs' certificates after the server's
//! in `cert_file`) it serves HTTPS only (rustls with the ring provider: TLS 1.2 and 1.3,
//! HTTP/1.1); with `client_ca_file=PATH` too, mutual TLS: a client must show a certificate
//! signed by a CA in that file, or the handshake fails and it gets no answer. The files are
//! read when the source is built, so one that is missing, holds no certificate or key, or a
//! key that does not go with the certificate is an error then, naming the file. Everything
//! below works the same over HTTPS; the handshake counts as part of the first request's head
//! (`header_timeout`).
//!
//! **What a request gets.** Each request is checked in this order; every refusal has a JSON
//! body `{"error": "..."}` saying why, and ingests nothing of the request:
//!
//! | answer | when |
//! |---|---|
//! | 404 | another path |
//! | 405 | a method other than POST |
//! | 401 | a bearer token is configured and `Authorization: Bearer <token>` is missing or wrong |
//! | 413 | the body is larger than `max_body` bytes, or holds more records than the buffer |
//! | 408 | the body did not arrive whole within `body_timeout` of the end of the head (the connection is then closed) |
//! | 401 | a secret is configured and the request's signature, in the `signature` scheme ([`SignatureScheme`]: by default `X-Eddy-Signature: sha256=<hex>`, HMAC-SHA256 of the raw body), is missing, malformed or wrong; its signed timestamp (Stripe, Standard Webhooks) is more than `tolerance` from the server's clock; or its `webhook-id` (Standard Webhooks) was accepted before |
//! | 400 | another content type, a body that is not UTF-8 or not well-formed JSON, an NDJSON line that is not, a record nested deeper than the JSON decoder takes (127 levels of arrays and objects), an empty batch |
//! | 429 | the pipeline is behind: the records taken and not yet read (`buffer` at most) leave no room for the whole request now (`Retry-After` says when to try again) |
//! | 503 | the pipeline has stopped reading this source, the records would go beyond its record limit, or the write-ahead log could not be written |
//! | 200 | `{"accepted": n}`: all `n` records of the request are in the write-ahead log, fsynced (with `wal=off`: in the memory buffer) |
//!
//! **Signatures.** `eddy` and `github` sign the raw body; `stripe` signs `<t>.<body>` and
//! `standard` `<id>.<timestamp>.<body>`, so a captured request is refused once its timestamp
//! is more than `tolerance` (5 minutes) away. With `standard`, the id of each accepted request
//! is remembered for twice the tolerance (at most 100 000; a request that would add one more
//! is answered 429) and a request with the same id is refused as a replay; an id is claimed
//! when the signature passes and forgotten again if the request is then refused, so a sender
//! may retry a request answered 4xx/5xx with the same id.
//!
//! Secrets and tokens are compared in constant time. A batch is all-or-nothing: the room check
//! and the append (or the hand-over to the buffer) happen under one lock, so concurrent
//! requests cannot over-commit the backlog, and the records taken and not yet read never
//! exceed `buffer` (plus what the workers are processing: one batch each).
//!
//! **Connections** (HTTP/1.1, kept alive) are bounded, so a server reachable from the internet
//! is not held open by clients that send nothing, or send it a byte at a time:
//!
//! - a request's head (request line and headers) must arrive within `header_timeout` (10 s) —
//!   of the connection's opening for its first request, of the head's first byte for a later
//!   one — else the connection is closed without an answer;
//! - its body must arrive within `body_timeout` (30 s) of the head, else it is answered 408
//!   (nothing of it is taken) and the connection is closed;
//! - a kept-alive connection with no request for `idle_timeout` (60 s) is closed;
//! - at most `max_connections` (1024) are open at once. One more closes the connection that
//!   has had no request in progress for the longest time (since it was opened or its last
//!   request ended; one still sending a head counts as idle) and takes its place; when every
//!   connection has a request in progress it is closed at once (refused). A request in
//!   progress is never cut off to make room. Closes and refusals are counted, logged once per
//!   burst (a warning with the counts so far), and their totals logged at shutdown.
//!
//! **Guarantee.** By default a 2xx answer means the request's records are fsynced in the
//! webhook's write-ahead log: without checkpoints every record answered 2xx is in the output
//! at least once, across crashes of the process (SIGKILL included) and graceful stops; with
//! checkpoints, exactly once. Only with the log turned off (`wal=off`) does a 2xx mean "in a
//! memory buffer", which a crash loses.
//!
//! **The write-ahead log** (the default), in `wal=DIR` ([`WebhookConfig::wal`]) or else in a
//! directory derived from the address and path ([`default_wal_dir`]: for `127.0.0.1:8080` and
//! `/orders`, `$EDDY_STATE_DIR/webhook/127.0.0.1-8080_orders`, else the same under
//! `$XDG_STATE_HOME/eddy` or `$HOME/.local/state/eddy`; with port 0, the port the system
//! chose), so a restart of the same webhook finds it. It is created when missing; when no
//! default directory can be determined, building the source fails, saying to pass `wal=DIR` or
//! `wal=off`. One webhook at a time writes a log (a lock file): a second, in this or another
//! process, fails to build, naming the directory. After every check above, the handler
//! appends the request's records (bytes, receive time, location) to the log and fsyncs it —
//! one write and one fsync per request, under one lock — before it answers; a log that cannot
//! be written is answered 503 with an error naming its file, and nothing of the request is
//! taken. The log, not the request, is the source: only worker 0 reads (the other workers'
//! readers are done at once), tailing the log, so its position is one `(segment, byte
//! offset)`.
//!
//! - *Without checkpoints* the source acknowledges ([`Source::acknowledges`]): the engine
//!   commits the sinks periodically and releases what they committed
//!   ([`SourceReader::released`]), and the log records the position up to which everything is
//!   released (`DIR/released`, replaced atomically) and deletes the segments wholly before it.
//!   A run with no checkpoint starts reading at that position (at the oldest segment when
//!   there is none), so what a run answered 2xx and did not commit — it was killed, stopped,
//!   or reached a record limit or an idle exit first — is read by the next run on the same
//!   log, and what it committed is not read again: at least once (what was committed after
//!   the last release is read again).
//! - *With checkpoints* the position is saved in each checkpoint and a run resuming from one
//!   reads on from there; once a checkpoint completes, its position is recorded as released
//!   and the segments wholly behind the checkpoint before it (the one the engine may fall
//!   back to) are deleted. So every record answered 2xx is in the committed output exactly
//!   once, across crashes of Eddy (not of the disk). A checkpoint whose segment a later run
//!   without checkpoints deleted cannot be resumed from: the run says to start over with a new
//!   `--checkpoint-dir`.
//!
//! A request that got no answer (the process died during it) is in the log whole or not at
//! all (a request whose entries were torn by the crash is skipped, with a warning): a sender
//! that retries it may see its records twice, never a part. Once the reader has stopped (a
//! record limit, an idle exit, a graceful stop) requests are answered 503; records answered
//! 2xx before and not read are reported on stderr at shutdown and read by the next run (not by
//! a run resuming from that run's final checkpoint, the end of its input). The log's format,
//! and how the reader tells a run with checkpoints from one without, are in the `webhook_wal`
//! module's source.
//!
//! **Without a log** (`wal=off`, [`WebhookConfig::without_wal`]; opening the source warns), a
//! 2xx answer means every record of the request is in Eddy's buffer, on its way into the
//! pipeline, and every worker reads from that bounded channel (each request's records go to
//! whichever worker polls first). There is no acknowledgement after that, so a crash of the
//! process loses what was buffered (at-most-once past the 2xx; a sender retrying a refused or
//! unanswered request makes it at-least-once); a graceful stop refuses new requests and reads
//! the buffer to its end first. Such a webhook cannot be checkpointed: a run with
//! `--checkpoint-dir` refuses to start, saying to keep the log. With a record limit
//! ([`StopRule::limit`]), records accepted after the readers reached the limit are not read;
//! their number is reported on stderr when the server shuts down.
//!
//! **Bad records.** The HTTP layer checks only that the body is well-formed JSON or NDJSON. A
//! record that is well-formed but does not fit the pipeline's type is rejected by the reader:
//! dead-lettered with its bytes and a location such as `POST /orders from 127.0.0.1:50312
//! line 3`; the rest of the request goes on.
//!
//! **Event time.** [`EventTimeOf::Broker`] is the time the request was received.
//!
//! **Stopping.** The readers stop by the source's [`StopRule`] (a record limit, an idle exit);
//! once the last reader is gone the server stops accepting connections, closes the idle ones,
//! finishes the requests in progress (5 s at most: then they are cut off)
//! and shuts down.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use eddy_engine::{
    wall_clock_ms, BacklogProbe, ConnectorError, CounterProbe, Partition, ReadStatus, Record,
    RecordError, ReleaseMode, Source, SourcePositions, SourceReader,
};
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tokio_rustls::rustls;

use crate::bridge::{self, ChannelReader, Delivery, Feed, Inbox, NothingToRead, StopRule};
use crate::endpoints::{DynSource, EndpointOptions};
use crate::event_time::EventTimeOf;
use crate::format::Format;
use crate::tls::{pem_certificates, pem_key};
use crate::uri::Endpoint;
use crate::webhook_wal::{
    self as wal, Published, ReleaseMeaning, WalPosition, WalTail, WalTracker, WalWriter,
};

/// The header carrying a request's signature: `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "x-eddy-signature";

/// The default body size limit: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// The default buffer: how many records may wait between the server and the workers.
pub const DEFAULT_BUFFER: usize = 10_000;

/// The default time a client has to send a request's head (request line and headers): 10 s.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The default time a client has to send a request's whole body: 30 s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time a kept-alive connection may wait for its next request: 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The default cap on connections open at once: 1024.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The longest timeout taken (one day); longer ones are refused as a mistake.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The largest `max_connections` taken.
const MAX_CONNECTIONS: usize = 1_000_000;

/// How long a new connection over the cap waits for the idle one closed to make room for it.
const EVICT_WAIT: Duration = Duration::from_secs(1);

/// Refusals (or closes at the cap) this far apart are one burst, logged once.
const BURST_QUIET: Duration = Duration::from_secs(10);

/// How much of a refused request's body the server reads (and throws away) so the client,
/// which may still be sending it, gets the answer instead of a reset connection; past that the
/// connection is closed.
const DRAIN_LIMIT: usize = 8 << 20;

/// How long the server lets requests in progress finish once the readers are gone.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How many log entries the tailer reads at a time.
const TAIL_BATCH: usize = 512;

/// How long a tailer at the end of the log waits before it looks again (an append wakes it
/// sooner).
const TAIL_WAIT: Duration = Duration::from_millis(200);

/// The header of GitHub's signature ([`SignatureScheme::Github`]): `sha256=<hex>`.
pub const GITHUB_SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// The header of Stripe's signature ([`SignatureScheme::Stripe`]): `t=<unix seconds>,v1=<hex>`.
pub const STRIPE_SIGNATURE_HEADER: &str = "stripe-signature";

/// The headers of a Standard Webhooks signature ([`SignatureScheme::Standard`]): the message's
/// id, its timestamp (unix seconds) and `v1,<base64>` signatures (space-separated).
pub const STANDARD_ID_HEADER: &str = "webhook-id";
/// See [`STANDARD_ID_HEADER`].
pub const STANDARD_TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// See [`STANDARD_ID_HEADER`].
pub const STANDARD_SIGNATURE_HEADER: &str = "webhook-signature";

/// The default tolerance of a signature's timestamp (Stripe, Standard Webhooks): 5 minutes
/// either way of the server's clock.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// What a refusal of a replayed `webhook-id` says: an HTTP sink whose retry gets it knows its
/// earlier attempt was accepted ([`crate::http_sink`]).
pub(crate) const ACCEPTED_BEFORE: &str = "was accepted before";

/// The most `webhook-id`s remembered at once against replays ([`SignatureScheme::Standard`]);
/// a request that would add one more is answered 429.
const MAX_REMEMBERED_IDS: usize = 100_000;

/// How a webhook's requests are signed with its secret (`signature=` in a URI); checked only
/// when a secret is configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SignatureScheme {
    /// Eddy's own: [`SIGNATURE_HEADER`]: `sha256=<hex of HMAC-SHA256(secret, body)>`.
    #[default]
    Eddy,
    /// GitHub's: [`GITHUB_SIGNATURE_HEADER`]: `sha256=<hex of HMAC-SHA256(secret, body)>`.
    Github,
    /// Stripe's: [`STRIPE_SIGNATURE_HEADER`]: `t=<unix seconds>,v1=<hex of
    /// HMAC-SHA256(secret, "<t>.<body>")>` (more `v1=` may follow; any may match), the
    /// timestamp within the tolerance.
    Stripe,
    /// Standard Webhooks (<https://www.standardwebhooks.com>): [`STANDARD_ID_HEADER`],
    /// [`STANDARD_TIMESTAMP_HEADER`] and [`STANDARD_SIGNATURE_HEADER`]: `v1,<base64 of
    /// HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, the timestamp within the tolerance and
    /// the id not accepted before within it. The key is the base64 after `whsec_` in a secret
    /// that starts so ([`standard_key`]), else the secret's bytes.
    Standard,
}

impl SignatureScheme {
    /// The schemes' names, as `signature=` takes them.
    pub const NAMES: &'static str = "eddy, github, stripe or standard";

    /// The scheme's name in a URI.
    pub fn name(self) -> &'static str {
        match self {
            SignatureScheme::Eddy => "eddy",
            SignatureScheme::Github => "github",
            SignatureScheme::Stripe => "stripe",
            SignatureScheme::Standard => "standard",
        }
    }
}

impl fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SignatureScheme {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "eddy" => Ok(SignatureScheme::Eddy),
            "github" => Ok(SignatureScheme::Github),
            "stripe" => Ok(SignatureScheme::Stripe),
            "standard" => Ok(SignatureScheme::Standard),
            other => Err(format!(
                "unknown signature scheme '{other}': write {}",
                SignatureScheme::NAMES
            )),
        }
    }
}

/// `signature=NAME` in `e`, one of `allowed` (listed in the error otherwise).
pub(crate) fn signature_param(
    e: &Endpoint,
    allowed: &[SignatureScheme],
) -> Result<Option<SignatureScheme>, ConnectorError> {
    let Some(raw) = e.param("signature") else {
        return Ok(None);
    };
    let names: Vec<&str> = allowed.iter().map(|s| s.name()).collect();
    match raw.parse::<SignatureScheme>() {
        Ok(scheme) if allowed.contains(&scheme) => Ok(Some(scheme)),
        _ => Err(ConnectorError::user(format!(
            "{e}: option signature={raw}: must be one of {}",
            names.join(", ")
        ))),
    }
}

/// `tolerance=DURATION` in `e`, range-checked ([`TIMEOUT_RANGE`]: 0 is refused).
pub(crate) fn tolerance_param(e: &Endpoint) -> Result<Option<Duration>, ConnectorError> {
    let Some(tolerance) = e.duration_param("tolerance")? else {
        return Ok(None);
    };
    if !timeout_ok(tolerance) {
        return Err(ConnectorError::user(format!(
            "{e}: option tolerance={}: must be {TIMEOUT_RANGE}",
            e.param("tolerance").unwrap_or_default()
        )));
    }
    Ok(Some(tolerance))
}

/// The HMAC key of a Standard Webhooks secret: the base64 after `whsec_` when the secret starts
/// so (an error, not showing the secret, when that is not base64), else the secret's bytes.
pub fn standard_key(secret: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    match secret.strip_prefix("whsec_") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| {
                format!("the secret starts with whsec_ but what follows is not base64 ({e})")
            }),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

/// The content of what a Standard Webhooks signature covers: `<id>.<timestamp>.<body>`.
fn standard_content(id: &[u8], timestamp: &[u8], body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(id);
    content.push(b'.');
    content.extend_from_slice(timestamp);
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// The [`STANDARD_SIGNATURE_HEADER`] of a message `id` sent at `timestamp` (unix seconds) with
/// `body`, signed with `key` ([`standard_key`]): `v1,<base64 of HMAC-SHA256>`.
pub fn standard_signature(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    use base64::Engine as _;
    let content = standard_content(id.as_bytes(), timestamp.to_string().as_bytes(), body);
    let digest = mac(key, &content).finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Seconds since the Unix epoch now.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The value of the [`SIGNATURE_HEADER`] for `body` signed with `secret`: `sha256=<hex>`.
/// The [HTTP sink](crate::http_sink) signs with it, so Eddy can call Eddy.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, body).finalize().into_bytes())
    )
}

fn mac(secret: &[u8], body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac
}

/// Shown instead of a secret in `Debug` output.
pub(crate) fn redacted(secret: &Option<String>) -> &'static str {
    match secret {
        Some(_) => "Some(<redacted>)",
        None => "None",
    }
}

/// The configuration of a webhook source.
#[derive(Clone)]
pub struct WebhookConfig {
    /// The address to listen on (default `127.0.0.1:8080`; port 0 picks a free port, see
    /// [`WebhookSource::local_addr`]).
    pub listen: SocketAddr,
    /// The path records are POSTed to (default `/`).
    pub path: String,
    /// The shared secret requests must be signed with (as `signature` says); none by default.
    pub secret: Option<String>,
    /// How requests are signed with the secret (default [`SignatureScheme::Eddy`]); checked
    /// only when there is a secret.
    pub signature: SignatureScheme,
    /// How far a signature's timestamp may be from the server's clock, either way (Stripe,
    /// Standard Webhooks; default [`DEFAULT_TOLERANCE`], 5 minutes); more than 0, at most a day.
    pub tolerance: Duration,
    /// The bearer token requests must carry (`Authorization: Bearer <token>`); none by default.
    pub token: Option<String>,
    /// The largest body accepted, in bytes (default [`DEFAULT_MAX_BODY`], 1 MiB).
    pub max_body: usize,
    /// How many records may wait for the workers (default [`DEFAULT_BUFFER`]); a request that
    /// does not fit now is answered 429.
    pub buffer: usize,
    /// What a 429's `Retry-After` says, rounded up to whole seconds (default 1 s).
    pub retry_after: Duration,
    /// When the readers stop (default: never).
    pub stop: StopRule,
    /// How long a client may take to send a request's head — from the connection's opening
    /// for its first request, from the head's first byte for a later one (default
    /// [`DEFAULT_HEADER_TIMEOUT`], 10 s); past it the connection is closed without an answer.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's whole body, from the end of its head
    /// (default [`DEFAULT_BODY_TIMEOUT`], 30 s); past it the request is answered 408, nothing
    /// of it is taken, and the connection is closed.
    pub body_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request (default
    /// [`DEFAULT_IDLE_TIMEOUT`], 60 s); past it the connection is closed.
    pub idle_timeout: Duration,
    /// How many connections may be open at once (default [`DEFAULT_MAX_CONNECTIONS`], 1024).
    /// One more closes the connection idle the longest (no request in progress) to make room,
    /// or is closed at once when every connection has a request in progress (see the module
    /// docs).
    pub max_connections: usize,
    /// Where the write-ahead log is, to which a request's records are appended before its
    /// 2xx (see the module docs): by default [`default_wal_dir`] of the address and path.
    pub wal: Wal,
    /// HTTPS instead of plain HTTP: the server's certificate and key, and the CA that client
    /// certificates must be signed by for mutual TLS (see [`WebhookTls`]); none by default.
    pub tls: Option<WebhookTls>,
}

/// The webhook's TLS (`https://ADDR:PORT/PATH?cert_file=...&key_file=...`): rustls with the
/// ring provider, TLS 1.2 and 1.3, HTTP/1.1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookTls {
    /// The server's certificate, PEM, followed by the intermediate CAs' certificates a client
    /// needs to reach its root (URI: `cert_file=`).
    pub cert_file: PathBuf,
    /// The certificate's private key, PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (URI: `key_file=`).
    pub key_file: PathBuf,
    /// For mutual TLS: the CA certificates (PEM) a client's certificate must be signed by; a
    /// client without one is refused during the handshake (URI: `client_ca_file=`). None by
    /// default: any client may connect (and sign its requests).
    pub client_ca_file: Option<PathBuf>,
}

impl WebhookTls {
    /// HTTPS with this certificate (chain) and key, without client certificates.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        WebhookTls {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            client_ca_file: None,
        }
    }

    /// The same, with mutual TLS: a client must show a certificate signed by a CA in `file`.
    pub fn client_ca(mut self, file: impl Into<PathBuf>) -> Self {
        self.client_ca_file = Some(file.into());
        self
    }

    /// The rustls acceptor of these files: an error, naming the webhook and the file, when a
    /// file cannot be read, holds no certificate or key in PEM, or the key does not go with
    /// the certificate.
    fn acceptor(&self, listen: SocketAddr) -> Result<tokio_rustls::TlsAcceptor, ConnectorError> {
        let fail = |why: String| ConnectorError::user(format!("webhook on {listen}: {why}"));
        let chain = pem_certificates("cert_file", &self.cert_file).map_err(fail)?;
        let key = pem_key("key_file", &self.key_file).map_err(fail)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnectorError::external(format!("webhook on {listen}: TLS"), e))?;
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(file) => {
                let in_file =
                    |why: String| fail(format!("client_ca_file={}: {why}", file.display()));
                let mut roots = rustls::RootCertStore::empty();
                for certificate in pem_certificates("client_ca_file", file).map_err(fail)? {
                    roots
                        .add(certificate)
                        .map_err(|e| in_file(format!("not a CA certificate ({e})")))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| in_file(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            fail(format!(
                "key_file={}: the key cannot serve the certificate of cert_file={} ({e}): give \
                 the key the certificate was made for",
                self.key_file.display(),
                self.cert_file.display()
            ))
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// Where a webhook keeps its write-ahead log (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Wal {
    /// In the default directory for the webhook's address and path ([`default_wal_dir`]).
    #[default]
    Default,
    /// In this directory (`?wal=DIR`, [`WebhookConfig::wal`]).
    Dir(PathBuf),
    /// None (`?wal=off`, [`WebhookConfig::without_wal`]): a 2xx means the records are in a
    /// memory buffer, a crash of the process loses them, and the source cannot be
    /// checkpointed.
    Off,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            path: "/".to_string(),
            secret: None,
            signature: SignatureScheme::Eddy,
            tolerance: DEFAULT_TOLERANCE,
            token: None,
            max_body: DEFAULT_MAX_BODY,
            buffer: DEFAULT_BUFFER,
            retry_after: Duration::from_secs(1),
            stop: StopRule::never(),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            wal: Wal::Default,
            tls: None,
        }
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("listen", &self.listen)
            .field("path", &self.path)
            .field("secret", &redacted(&self.secret))
            .field("signature", &self.signature)
            .field("tolerance", &self.tolerance)
            .field("token", &redacted(&self.token))
            .field("max_body", &self.max_body)
            .field("buffer", &self.buffer)
            .field("retry_after", &self.retry_after)
            .field("stop", &self.stop)
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("wal", &self.wal)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The options a `http://ADDR:PORT/PATH` source URI takes.
const SOURCE_OPTIONS: &[&str] = &[
    "secret_env",
    "secret_file",
    "signature",
    "tolerance",
    "token_env",
    "token_file",
    "max_body",
    "buffer",
    "retry_after",
    "header_timeout",
    "body_timeout",
    "idle_timeout",
    "max_connections",
    "wal",
    "cert_file",
    "key_file",
    "client_ca_file",
];

impl WebhookConfig {
    /// A webhook listening on `listen` for POSTs to `path`, with the other defaults.
    pub fn new(listen: SocketAddr, path: &str) -> Self {
        WebhookConfig {
            listen,
            path: path.to_string(),
            ..WebhookConfig::default()
        }
    }

    /// The same webhook, keeping its write-ahead log in `dir` (created when missing) instead
    /// of the default directory (see the module docs).
    pub fn wal(mut self, dir: impl Into<PathBuf>) -> Self {
        self.wal = Wal::Dir(dir.into());
        self
    }

    /// The same webhook without a write-ahead log: a 2xx then means the records are in a
    /// memory buffer, so a crash of the process loses those not yet written, and the source
    /// cannot be checkpointed. Opening it warns so.
    pub fn without_wal(mut self) -> Self {
        self.wal = Wal::Off;
        self
    }

    /// The configuration a source URI gives: `http://ADDR:PORT/PATH?secret_env=VAR
    /// &signature=eddy&tolerance=5m&token_env=VAR&max_body=1MiB&buffer=10000&retry_after=1s&header_timeout=10s&body_timeout=30s
    /// &idle_timeout=60s&max_connections=1024&wal=/path/dir` (port 80 when it gives none;
    /// `wal=off` for no log, `wal=./off` for a directory called `off`; `signature=` is `eddy`,
    /// `github`, `stripe` or `standard`, see [`SignatureScheme`]). A timeout, a `tolerance` or
    /// `max_connections` of 0 is refused. `https://ADDR:PORT/PATH?cert_file=PATH&key_file=PATH`
    /// serves HTTPS (port 443 when it gives none), with `client_ca_file=PATH` for mutual TLS
    /// ([`WebhookTls`]); `https://` without both files, or the files on `http://`, is refused.
    pub fn from_endpoint(e: &Endpoint) -> Result<Self, ConnectorError> {
        e.check_params(SOURCE_OPTIONS)?;
        let https = e.scheme == "https";
        let address = e.address(if https { 443 } else { 80 });
        let listen = address
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| {
                ConnectorError::user(format!(
                    "{e}: cannot listen on {address}: it is not an address of this machine \
                     (write an IP address such as 127.0.0.1 or 0.0.0.0)"
                ))
            })?;
        let mut config = WebhookConfig::new(listen, &e.path);
        let file = |name: &str| e.param(name).map(PathBuf::from);
        config.tls = match (https, file("cert_file"), file("key_file")) {
            (true, Some(cert), Some(key)) => Some(WebhookTls {
                client_ca_file: file("client_ca_file"),
                ..WebhookTls::new(cert, key)
            }),
            (true, _, _) => {
                return Err(ConnectorError::user(format!(
                    "{e}: https:// needs the server's certificate and its key: give \
                     cert_file=PATH (PEM, the intermediate CAs' certificates after it) and \
                     key_file=PATH (PEM)"
                )))
            }
            (false, None, None) if file("client_ca_file").is_none() => None,
            (false, _, _) => {
                return Err(ConnectorError::user(format!(
                    "{e}: cert_file=, key_file= and client_ca_file= are for HTTPS: write \
                     https://ADDR:PORT/PATH"
                )))
            }
        };
        config.secret = e.secret("secret")?;
        if let Some(scheme) = signature_param(
            e,
            &[
                SignatureScheme::Eddy,
                SignatureScheme::Github,
                SignatureScheme::Stripe,
                SignatureScheme::Standard,
            ],
        )? {
            config.signature = scheme;
        }
        if let Some(tolerance) = tolerance_param(e)? {
            config.tolerance = tolerance;
        }
        config.token = e.secret("token")?;
        if let Some(size) = e.size_param("max_body")? {
            config.max_body = size;
        }
        if let Some(buffer) = e.parse_param::<usize>("buffer")? {
            config.buffer = buffer;
        }
        if let Some(wait) = e.duration_param("retry_after")? {
            config.retry_after = wait;
        }
        let in_range = |name: &str, value: String, ok: bool, range: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConnectorError::user(format!(
                    "{e}: option {name}={value}: must be {range}"
                )))
            }
        };
        for (name, field) in [
            ("header_timeout", &mut config.header_timeout),
            ("body_timeout", &mut config.body_timeout),
            ("idle_timeout", &mut config.idle_timeout),
        ] {
            if let Some(wait) = e.duration_param(name)? {
                let raw = e.param(name).unwrap_or_default().to_string();
                in_range(name, raw, timeout_ok(wait), TIMEOUT_RANGE)?;
                *field = wait;
            }
        }
        if let Some(n) = e.parse_param::<usize>("max_connections")? {
            in_range(
                "max_connections",
                n.to_string(),
                connections_ok(n),
                CONNECTIONS_RANGE,
            )?;
            config.max_connections = n;
        }
        match e.param("wal") {
            Some("") => {
                return Err(ConnectorError::user(format!(
                    "{e}: option wal= needs a directory for the write-ahead log (wal=/path/dir), \
                     or off for none (wal=off)"
                )))
            }
            Some("off") => config.wal = Wal::Off,
            Some(dir) => config.wal = Wal::Dir(PathBuf::from(dir)),
            None => {}
        }
        Ok(config)
    }
}

/// What a timeout option may be.
const TIMEOUT_RANGE: &str = "more than 0 and at most 1 day (such as 10s, 500ms, 2m)";

/// What `max_connections` may be.
const CONNECTIONS_RANGE: &str = "from 1 to 1000000";

fn timeout_ok(wait: Duration) -> bool {
    !wait.is_zero() && wait <= MAX_TIMEOUT
}

fn connections_ok(n: usize) -> bool {
    (1..=MAX_CONNECTIONS).contains(&n)
}

/// The default directory of the write-ahead log of a webhook listening on `listen` for POSTs
/// to `path`: `webhook/<ip>-<port><path>` under `$EDDY_STATE_DIR`, else under
/// `$XDG_STATE_HOME/eddy` (an absolute path), else under `$HOME/.local/state/eddy`, with `/`
/// in the path written `_` and every byte other than ASCII letters, digits, `.` and `-`
/// written `%XX` (so `127.0.0.1:8080` and `/orders` give `webhook/127.0.0.1-8080_orders`, and
/// no two addresses and paths give the same name). The same address and path always give the
/// same directory, so a restarted webhook reads what the one before answered 2xx and did not
/// finish. An error, saying to pass `wal=DIR` or `wal=off`, when none of those variables is
/// set.
pub fn default_wal_dir(listen: SocketAddr, path: &str) -> Result<PathBuf, ConnectorError> {
    default_wal_dir_from(listen, path, |name| std::env::var_os(name))
}

/// [`default_wal_dir`], with the environment `var` gives.
fn default_wal_dir_from(
    listen: SocketAddr,
    path: &str,
    var: impl Fn(&str) -> Option<OsString>,
) -> Result<PathBuf, ConnectorError> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = if let Some(dir) = set("EDDY_STATE_DIR") {
        dir
    } else if let Some(dir) = set("XDG_STATE_HOME").filter(|d| d.is_absolute()) {
        dir.join("eddy")
    } else if let Some(home) = set("HOME") {
        home.join(".local/state/eddy")
    } else {
        return Err(ConnectorError::user(format!(
            "webhook http://{listen}{path}: no directory for its write-ahead log: none of \
             EDDY_STATE_DIR, XDG_STATE_HOME and HOME is set. Set EDDY_STATE_DIR, pass \
             wal=DIR (WebhookConfig::wal) for a log in DIR, or wal=off \
             (WebhookConfig::without_wal) for none (a crash then loses records answered 2xx)"
        )));
    };
    let mut name = String::new();
    let address = format!("{}-{}", listen.ip(), listen.port());
    for byte in address.bytes().chain(path.bytes()) {
        match byte {
            b'/' => name.push('_'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' => name.push(char::from(byte)),
            _ => name.push_str(&format!("%{byte:02X}")),
        }
    }
    Ok(base.join("webhook").join(name))
}

/// What the request handlers need, fixed when the source is built.
struct Settings {
    url: String,
    path: String,
    /// The HMAC key: the secret's bytes ([`standard_key`] of it for Standard Webhooks).
    secret: Option<Vec<u8>>,
    signature: SignatureScheme,
    tolerance: Duration,
    /// The `webhook-id`s accepted lately (Standard Webhooks), refused when sent again.
    seen: Mutex<SeenIds>,
    token: Option<Vec<u8>>,
    max_body: usize,
    buffer: usize,
    retry_after_s: u64,
    header_timeout: Duration,
    body_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    /// The write-ahead log's directory, if there is one.
    wal: Option<PathBuf>,
    /// The TLS handshake of each connection, when serving HTTPS.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The server's state shared by its handlers and the readers.
struct Intake {
    settings: Arc<Settings>,
    ingest: Ingest,
    /// Readers open now; when it falls back to zero the server shuts down.
    readers: AtomicUsize,
    done: watch::Sender<bool>,
    /// The readers' stop rule: past its record limit nothing more is read, so nothing more
    /// is accepted.
    stop: StopRule,
    /// The run is stopping: requests are refused (503), and the readers drain the buffer.
    stopping: AtomicBool,
    /// Connections closed to make room at `max_connections`, and refused there: what the
    /// server counts and the first reader reports ([`SourceReader::counters`]).
    pressure: Arc<Pressure>,
}

/// Connections closed at the cap to make room for new ones, and new ones refused there.
#[derive(Default)]
struct Pressure {
    closed: AtomicU64,
    refused: AtomicU64,
}

impl Pressure {
    /// `(closed, refused)` so far in this run.
    fn totals(&self) -> (u64, u64) {
        (
            self.closed.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

/// Where the handlers put the records of a request.
enum Ingest {
    /// Straight into the readers' channel.
    Buffer(Mutex<Feed<()>>),
    /// Into the write-ahead log, which a tailer feeds the reader from.
    Log(Logged),
}

/// A webhook's write-ahead log, as its handlers and its reader share it.
struct Logged {
    log: Mutex<Appending>,
    /// How many records of this run's segments the reader has read.
    read: Arc<AtomicU64>,
}

/// The log's writer, under the handlers' lock.
struct Appending {
    /// `None` once the reader has finished: nothing more is read in this run, so nothing more
    /// is taken, and the log (its lock) is free for the next run.
    writer: Option<WalWriter>,
    /// How many records this run appended.
    appended: u64,
}

impl Logged {
    /// Records appended and not yet read: the backlog the 429s are about.
    fn waiting(&self, log: &Appending) -> usize {
        let read = self.read.load(Ordering::Relaxed);
        usize::try_from(log.appended.saturating_sub(read)).unwrap_or(usize::MAX)
    }
}

/// Where the source is in its life: bound, then serving.
struct Lifecycle {
    listener: Option<StdListener>,
    /// The write-ahead log, taken (locked, a fresh segment started) when the source is built.
    writer: Option<WalWriter>,
    serving: Option<Serving>,
}

/// A serving source: its server's state, and a reader's end of the channel (kept, so the
/// channel stays open while the readers come and go).
#[derive(Clone)]
enum Serving {
    Buffer(Inbox<()>, Arc<Intake>),
    Log { _inbox: Inbox<WalPosition> },
}

/// Where the log's reader starts.
enum Start {
    /// After the released position (see the `webhook_wal` module), else at the oldest
    /// segment: there is no checkpoint to resume from.
    Released,
    /// Where a checkpoint's reader was.
    At(WalPosition),
    /// At this run's first segment: the checkpoint resumed from is the end of a run whose
    /// reader had finished.
    Fresh,
}

/// An HTTP webhook source of records of type `T` (see the module docs).
pub struct WebhookSource<T> {
    settings: Arc<Settings>,
    local: SocketAddr,
    event_time: EventTimeOf<T>,
    stop: StopRule,
    state: Mutex<Lifecycle>,
}

impl<T> WebhookSource<T> {
    /// Binds `config.listen` (failing, naming the address, when it is in use or not this
    /// machine's) for a source whose records take their event time from `event_time`, and
    /// takes its write-ahead log unless it has none (failing, naming the directory, when it
    /// cannot be written or another webhook writes it; failing, saying to pass `wal=DIR` or
    /// `wal=off`, when there is no default directory), and loads its TLS certificate and key
    /// if it has them (failing, naming the file, when one cannot be read or used). The server
    /// starts when the pipeline opens the source.
    pub fn bind(config: WebhookConfig, event_time: EventTimeOf<T>) -> Result<Self, ConnectorError> {
        if !config.path.starts_with('/') {
            return Err(ConnectorError::user(format!(
                "webhook path '{}' must start with '/'",
                config.path
            )));
        }
        let listen = config.listen;
        for (name, wait) in [
            ("header_timeout", config.header_timeout),
            ("body_timeout", config.body_timeout),
            ("idle_timeout", config.idle_timeout),
        ] {
            if !timeout_ok(wait) {
                return Err(ConnectorError::user(format!(
                    "webhook on {listen}: {name} is {wait:?}: it must be {TIMEOUT_RANGE}"
                )));
            }
        }
        if !connections_ok(config.max_connections) {
            return Err(ConnectorError::user(format!(
                "webhook on {listen}: max_connections is {}: it must be {CONNECTIONS_RANGE}",
                config.max_connections
            )));
        }
        if !timeout_ok(config.tolerance) {
            return Err(ConnectorError::user(format!(
                "webhook on {listen}: tolerance is {:?}: it must be {TIMEOUT_RANGE}",
                config.tolerance
            )));
        }
        let secret = match (&config.secret, config.signature) {
            (Some(secret), SignatureScheme::Standard) => Some(
                standard_key(secret)
                    .map_err(|why| ConnectorError::user(format!("webhook on {listen}: {why}")))?,
            ),
            (Some(secret), _) => Some(secret.clone().into_bytes()),
            (None, _) => None,
        };
        let tls = config
            .tls
            .as_ref()
            .map(|tls| tls.acceptor(listen))
            .transpose()?;
        let listener = StdListener::bind(listen).map_err(|e| bind_error(listen, e))?;
        let local = listener
            .set_nonblocking(true)
            .and_then(|()| listener.local_addr())
            .map_err(|e| {
                ConnectorError::external(format!("cannot set up the socket on {listen}"), e)
            })?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{local}{}", config.path);
        if !local.ip().is_loopback() && config.secret.is_none() && config.token.is_none() {
            tracing::warn!(
                "webhook {url}: listening beyond loopback with neither a secret nor a token: \
                 anyone who can reach {local} can post records"
            );
        }
        // The address bound, so that port 0 names the port the system chose.
        let dir = match config.wal {
            Wal::Default => Some(default_wal_dir(local, &config.path)?),
            Wal::Dir(dir) => Some(dir),
            Wal::Off => None,
        };
        let writer = match &dir {
            Some(dir) => Some(WalWriter::create(dir, wal::SEGMENT_BYTES).map_err(|e| {
                ConnectorError::user(format!("webhook {url}: write-ahead log: {e}")).caused_by(e)
            })?),
            None => None,
        };
        let settings = Settings {
            url,
            path: config.path,
            secret,
            signature: config.signature,
            tolerance: config.tolerance,
            seen: Mutex::new(SeenIds::default()),
            token: config.token.map(String::into_bytes),
            max_body: config.max_body,
            buffer: config.buffer.max(1),
            retry_after_s: config.retry_after.as_secs_f64().ceil().max(1.0) as u64,
            header_timeout: config.header_timeout,
            body_timeout: config.body_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections,
            wal: dir,
            tls,
        };
        Ok(WebhookSource {
            settings: Arc::new(settings),
            local,
            event_time,
            stop: config.stop,
            state: Mutex::new(Lifecycle {
                listener: Some(listener),
                writer,
                serving: None,
            }),
        })
    }

    /// The address the server listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The URL records are POSTed to: `http://ADDR:PORT/PATH` (`https://` with TLS).
    pub fn url(&self) -> &str {
        &self.settings.url
    }

    /// Starts the server on the connectors' runtime, its handlers putting records into
    /// `ingest`.
    fn serve(&self, listener: StdListener, ingest: Ingest) -> Result<Arc<Intake>, ConnectorError> {
        let url = &self.settings.url;
        let listener = {
            let _runtime = bridge::runtime().enter();
            tokio::net::TcpListener::from_std(listener).map_err(|e| {
                ConnectorError::external(format!("webhook {url}: cannot start the server"), e)
            })?
        };
        let (done, _) = watch::channel(false);
        let intake = Arc::new(Intake {
            settings: Arc::clone(&self.settings),
            ingest,
            readers: AtomicUsize::new(0),
            done,
            stop: self.stop.clone(),
            stopping: AtomicBool::new(false),
            pressure: Arc::default(),
        });
        bridge::runtime().spawn(run_server(listener, Arc::clone(&intake)));
        Ok(intake)
    }

    /// The listener, for the one start of the server.
    fn take_listener(&self, state: &mut Lifecycle) -> Result<StdListener, ConnectorError> {
        state.listener.take().ok_or_else(|| {
            ConnectorError::user(format!(
                "webhook {}: the server could not start earlier in this run; see the first error",
                self.settings.url
            ))
        })
    }

    fn served_error(&self) -> ConnectorError {
        ConnectorError::user(format!(
            "webhook {}: this source has served its run and shut down; build a new one for \
             another run",
            self.settings.url
        ))
    }
}

fn bind_error(address: SocketAddr, error: std::io::Error) -> ConnectorError {
    use std::io::ErrorKind;
    let why = match error.kind() {
        ErrorKind::AddrInUse => {
            "the address is in use: another process (or another webhook source) listens there; \
             stop it or choose another port"
        }
        ErrorKind::AddrNotAvailable => {
            "it is not an address of this machine: listen on 127.0.0.1, 0.0.0.0 or one of its \
             interfaces' addresses"
        }
        ErrorKind::PermissionDenied => {
            "permission denied: ports below 1024 need privileges; choose a port above 1024"
        }
        _ => "the system refused the socket",
    };
    ConnectorError::user(format!("webhook: cannot listen on {address}: {why}")).caused_by(error)
}

impl<T> Source<T> for WebhookSource<T>
where
    T: DeserializeOwned + Serialize + Send + 'static,
{
    /// `webhook(URL, write-ahead log DIR)`; without a log it says how to get one, since the
    /// engine's "cannot be checkpointed" error starts with it.
    fn describe(&self) -> String {
        match &self.settings.wal {
            Some(dir) => format!(
                "webhook({}, write-ahead log {})",
                self.settings.url,
                dir.display()
            ),
            None => format!(
                "webhook({}, write-ahead log off: leave out wal=off, or give wal=DIR, to keep \
                 one and checkpoint it)",
                self.settings.url
            ),
        }
    }

    /// With a write-ahead log, yes: a run without checkpoints then commits its sinks
    /// periodically and releases what they committed, which the log records as read for
    /// good (see the module docs). Without one, no: a 2xx was the acknowledgement.
    fn acknowledges(&self) -> bool {
        self.settings.wal.is_some()
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        if self.settings.wal.is_none() {
            return self.open_buffered();
        }
        if partition.index != 0 {
            return Ok(Box::new(NothingToRead));
        }
        self.open_logged(Start::Released)
    }

    /// With a write-ahead log, worker 0 reads on from where the checkpoint's reader was.
    fn open_at(
        &self,
        partition: Partition,
        positions: &SourcePositions,
    ) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        if self.settings.wal.is_none() {
            return Err(ConnectorError::user(format!(
                "{} cannot resume from a checkpoint; run it without --checkpoint-dir",
                self.describe()
            )));
        }
        if partition.index != 0 {
            return Ok(Box::new(NothingToRead));
        }
        let mut at = None::<WalPosition>;
        // Only the old worker 0 read; the others' readers were done at once, with no position.
        for bytes in positions.all().filter(|p| !p.is_empty()) {
            let position = WalPosition::decode(bytes).map_err(|e| {
                ConnectorError::user(format!(
                    "{}: a checkpoint position does not decode as a write-ahead log position \
                     ({e}); was the checkpoint written by another source?",
                    self.describe()
                ))
            })?;
            at = at.max(Some(position));
        }
        self.open_logged(at.map_or(Start::Fresh, Start::At))
    }
}

impl<T> WebhookSource<T>
where
    T: DeserializeOwned + Serialize + Send + 'static,
{
    /// A reader of the buffer, starting the server at the first.
    fn open_buffered(&self) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (inbox, intake) = match &state.serving {
            Some(Serving::Buffer(inbox, intake)) => (inbox.clone(), Arc::clone(intake)),
            Some(Serving::Log { .. }) => return Err(self.served_error()),
            None => {
                let listener = self.take_listener(&mut state)?;
                tracing::warn!(
                    "webhook {}: its write-ahead log is off (wal=off): a 2xx answer means the \
                     records are in memory, and a crash of this process loses those not yet \
                     written; leave out wal=off (or give wal=DIR) to keep a log",
                    self.settings.url
                );
                let (feed, inbox) = bridge::channel::<()>(self.settings.buffer);
                let intake = self.serve(listener, Ingest::Buffer(Mutex::new(feed)))?;
                state.serving = Some(Serving::Buffer(inbox.clone(), Arc::clone(&intake)));
                (inbox, intake)
            }
        };
        if *intake.done.borrow() {
            return Err(self.served_error());
        }
        let first = intake.readers.fetch_add(1, Ordering::AcqRel) == 0;
        Ok(Box::new(WebhookReader {
            reports: first,
            reader: ChannelReader::new(
                inbox,
                Format::Json,
                self.event_time.clone(),
                self.stop.clone(),
            ),
            open: OpenReader(intake),
            meaning: None,
        }))
    }

    /// Worker 0's reader of the write-ahead log from `start`, whose releases mean what the engine
    /// says: starts the server and the tailer that feeds the reader from the log.
    fn open_logged(&self, start: Start) -> Result<Box<dyn SourceReader<T>>, ConnectorError> {
        let url = &self.settings.url;
        let dir = self.settings.wal.clone().expect("a webhook with a log");
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.serving.is_some() {
            return Err(self.served_error());
        }
        let log_error = |e: wal::WalError| {
            ConnectorError::user(format!("webhook {url}: write-ahead log: {e}")).caused_by(e)
        };
        let writer = state.writer.take().ok_or_else(|| {
            ConnectorError::user(format!(
                "webhook {url}: the write-ahead log could not be opened earlier in this run; see \
                 the first error"
            ))
        })?;
        let first = writer.first_seq();
        let marker = wal::read_released(&dir).unwrap_or_else(|error| {
            tracing::warn!(
                "webhook {url}: write-ahead log: {error}; it is ignored (a run without a \
                 checkpoint reads from the oldest segment, so records may be read again) and \
                 written anew with the next release"
            );
            None
        });
        // A released position can only be in an earlier run's segment.
        let mut recorded = marker.filter(|r| r.seq < first);
        let at = match start {
            Start::Released => match wal::start_after(&dir, marker, first) {
                Ok(at) => at,
                Err(error) => {
                    recorded = None;
                    tracing::warn!(
                        "webhook {url}: write-ahead log: {error}; reading from its oldest \
                         segment, so records may be read again"
                    );
                    wal::start_after(&dir, None, first).map_err(log_error)?
                }
            },
            Start::At(at) => {
                let segment = wal::segment_path(&dir, at.seq);
                if !segment.exists() {
                    return Err(ConnectorError::user(format!(
                        "webhook {url}: the checkpoint resumes reading the write-ahead log at \
                         {} (byte {}), which is not there: records answered 2xx would be lost, \
                         or a run without checkpoints has written them and deleted it since. \
                         Give ?wal= the directory of the run that wrote the checkpoint, or start \
                         over with a new --checkpoint-dir",
                        segment.display(),
                        at.offset
                    )));
                }
                at
            }
            Start::Fresh => {
                let older = wal::segments(&dir)
                    .map_err(log_error)?
                    .into_iter()
                    .filter(|&s| s < first)
                    .count();
                if older > 0 {
                    tracing::warn!(
                        "webhook {url}: the checkpoint resumed from is the end of a finished run, \
                         so the {older} older segment(s) of the write-ahead log {} are not read \
                         again",
                        dir.display()
                    );
                }
                WalPosition::start_of(first)
            }
        };
        let listener = self.take_listener(&mut state)?;
        let published = writer.published();
        let read = Arc::new(AtomicU64::new(0));
        let (feed, inbox) = bridge::channel::<WalPosition>(self.settings.buffer);
        let ingest = Ingest::Log(Logged {
            log: Mutex::new(Appending {
                writer: Some(writer),
                appended: 0,
            }),
            read: Arc::clone(&read),
        });
        let intake = self.serve(listener, ingest)?;
        state.serving = Some(Serving::Log {
            _inbox: inbox.clone(),
        });
        let tail = WalTail::new(&dir, at, Some(Arc::clone(&published)));
        bridge::runtime().spawn(run_tail(
            tail,
            feed,
            published,
            intake.done.subscribe(),
            url.clone(),
        ));
        intake.readers.fetch_add(1, Ordering::AcqRel);
        let meaning = Arc::new(ReleaseMeaning::default());
        let tracker = WalTracker::new(&dir, at, first, read, recorded, Arc::clone(&meaning));
        Ok(Box::new(WebhookReader {
            reports: true,
            reader: ChannelReader::new(
                inbox,
                Format::Json,
                self.event_time.clone(),
                self.stop.clone(),
            )
            .tracked(tracker),
            open: OpenReader(intake),
            meaning: Some(meaning),
        }))
    }
}

/// A worker's reader: the bridge's reader, counted so the server knows when all are gone.
struct WebhookReader<T, A> {
    /// Whether this reader reports the server's counters (the first one opened does).
    reports: bool,
    reader: ChannelReader<T, A>,
    open: OpenReader,
    /// For a reader of the log: what the engine's releases mean, shared with its tracker.
    meaning: Option<Arc<ReleaseMeaning>>,
}

impl<T, A> SourceReader<T> for WebhookReader<T, A>
where
    T: DeserializeOwned + Serialize + 'static,
    A: Send + 'static,
{
    fn poll(
        &mut self,
        out: &mut Vec<Record<T>>,
        max: usize,
        rejected: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError> {
        let status = self.reader.poll(out, max, rejected);
        if !matches!(status, Ok(ReadStatus::Ready | ReadStatus::Idle)) {
            self.open.0.reader_finished();
        }
        status
    }

    fn backlog_probe(&self) -> Option<BacklogProbe> {
        self.reader.backlog_probe()
    }

    /// The server's connections closed and refused at `max_connections`.
    fn counters(&self) -> Option<CounterProbe> {
        let pressure = Arc::clone(&self.open.0.pressure);
        self.reports.then(|| -> CounterProbe {
            Arc::new(move || {
                let (closed, refused) = pressure.totals();
                vec![
                    ("connections_closed_at_cap", closed),
                    ("connections_refused_at_cap", refused),
                ]
            })
        })
    }

    fn position(&self) -> Option<Vec<u8>> {
        self.reader.position()
    }

    fn release_mode(&mut self, mode: ReleaseMode) {
        if let Some(meaning) = &self.meaning {
            meaning.set(mode);
        }
    }

    fn committed(&mut self, position: &[u8]) {
        self.reader.committed(position);
    }

    fn released(&mut self, polls: u64) {
        self.reader.released(polls);
    }

    /// Without a log, records in the buffer were answered 2xx: refuse new requests and read
    /// the buffer to its end. With a log, what was not read stays in it for the next run.
    fn stop(&mut self) -> bool {
        let Ingest::Buffer(feed) = &self.open.0.ingest else {
            return false;
        };
        // Under the handlers' lock: a request is either in the buffer or refused.
        let _feed = feed.lock().unwrap_or_else(PoisonError::into_inner);
        self.open.0.stopping.store(true, Ordering::SeqCst);
        self.reader.drain();
        true
    }

    fn caught_up(&self) -> bool {
        self.reader.caught_up()
    }
}

/// One open reader; the last one dropped tells the server to shut down.
struct OpenReader(Arc<Intake>);

impl Drop for OpenReader {
    fn drop(&mut self) {
        if self.0.readers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader_finished();
            self.0.done.send_replace(true);
        }
    }
}

/// Reads the write-ahead log from where `tail` is and hands each entry to the reader (its
/// token: the position after it), until the reader is gone.
async fn run_tail(
    mut tail: WalTail,
    mut feed: Feed<WalPosition>,
    published: Arc<Published>,
    mut done: watch::Receiver<bool>,
    url: String,
) {
    'run: loop {
        // The reader's tokens mean nothing to the log (its tracker keeps the position).
        feed.ready_acks();
        if *done.borrow() || feed.readers_gone() {
            break;
        }
        let read = tokio::task::spawn_blocking(move || {
            let batch = tail.read(TAIL_BATCH);
            (tail, batch)
        })
        .await;
        let entries = match read {
            Ok((back, Ok(entries))) => {
                tail = back;
                entries
            }
            Ok((_, Err(error))) => {
                let message = format!("webhook {url}: cannot read its write-ahead log");
                feed.fail(ConnectorError::external(message, error)).await;
                break;
            }
            Err(panicked) => {
                let message = format!("webhook {url}: the write-ahead log's reader failed");
                feed.fail(ConnectorError::external(message, panicked)).await;
                break;
            }
        };
        if entries.is_empty() {
            tokio::select! {
                () = published.changed.notified() => {}
                () = tokio::time::sleep(TAIL_WAIT) => {}
                _ = done.wait_for(|done| *done) => break,
            }
            continue;
        }
        for (entry, end) in entries {
            let delivery = Delivery {
                payload: entry.payload,
                location: entry.location,
                timestamp_ms: Some(entry.received_ms),
                ack: end,
            };
            tokio::select! {
                delivered = feed.deliver(delivery) => if !delivered {
                    break 'run;
                },
                _ = done.wait_for(|done| *done) => break 'run,
            }
        }
    }
    feed.closed();
}

/// Serves requests until the readers are gone, then shuts down: stops accepting, lets the
/// requests in progress finish (closing idle connections at once) for [`SHUTDOWN_GRACE`] at
/// most, and cuts off what is left.
async fn run_server(listener: tokio::net::TcpListener, intake: Arc<Intake>) {
    let url = intake.settings.url.clone();
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(Arc::clone(&intake));
    let connections = Arc::new(Connections::new(
        &intake.settings,
        Arc::clone(&intake.pressure),
    ));
    let mut done = intake.done.subscribe();
    let mut open = tokio::task::JoinSet::new();
    let accept_errors = Burst::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = done.wait_for(|done| *done) => break,
        };
        while open.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: try again shortly.
                if accept_errors.starts() {
                    tracing::warn!(
                        "webhook {url}: cannot accept connections ({error}); retrying \
                         (logged once per burst)"
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = connections.admit(&url).await else {
            drop(stream); // over the cap, with no idle connection to close: refused
            continue;
        };
        // Listed before its task runs, so that the cap sees it (and can close it) at once.
        let listed = connections.list(slot);
        open.spawn(serve_connection(
            stream,
            peer,
            app.clone(),
            listed,
            url.clone(),
            intake.done.subscribe(),
            intake.settings.tls.clone(),
        ));
    }
    drop(listener);
    let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while open.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            "webhook {url}: requests still in progress {SHUTDOWN_GRACE:?} after the readers \
             finished were cut off"
        );
        open.shutdown().await;
    }
    let (closed, refused) = connections.pressure.totals();
    if closed + refused > 0 {
        tracing::warn!(
            "webhook {url}: at its max_connections={} this run closed {closed} idle \
             connections to make room and refused {refused} new ones",
            intake.settings.max_connections
        );
    }
    match &intake.ingest {
        Ingest::Buffer(feed) => {
            let feed = feed.lock().unwrap_or_else(PoisonError::into_inner);
            let unread = feed.backlog();
            if unread > 0 {
                tracing::warn!(
                    "webhook {url}: {unread} accepted records were not read: the readers \
                     stopped (a record limit) before they came to them"
                );
            }
            feed.closed();
        }
        Ingest::Log(logged) => {
            let mut log = logged.log.lock().unwrap_or_else(PoisonError::into_inner);
            log.writer = None;
            let unread = logged.waiting(&log);
            if let (true, Some(dir)) = (unread > 0, &intake.settings.wal) {
                tracing::warn!(
                    "webhook {url}: {unread} records answered 2xx were not read by this run: \
                     its reader stopped (a record limit, an idle exit, a stop) before it came \
                     to them; they stay in the write-ahead log {}, for the next run",
                    dir.display()
                );
            }
        }
    }
}

/// The open connections and the cap on them (`max_connections`).
///
/// A connection over the cap closes the connection idle the longest — the one that has had no
/// request in progress for the longest time, since it was opened or its last request ended
/// (one sending a request's head counts as idle) — and takes its place; when every connection has a request in
/// progress it is closed at once. So connections that hold a slot without sending requests
/// (sockets left open, heads sent a byte at a time) cannot keep a sender that sends requests
/// out: its new connection takes the place of the oldest of theirs, and a request in progress
/// is never cut off to make room (a request holds its connection for `body_timeout` at most
/// once its head is in).
struct Connections {
    /// One permit per connection that may be open.
    slots: Arc<tokio::sync::Semaphore>,
    max: usize,
    header_timeout: Duration,
    idle_timeout: Duration,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
    /// Connections closed to make room for new ones, and new ones refused (every connection
    /// had a request in progress).
    pressure: Arc<Pressure>,
    burst: Burst,
}

impl Connections {
    fn new(settings: &Settings, pressure: Arc<Pressure>) -> Self {
        Connections {
            slots: Arc::new(tokio::sync::Semaphore::new(settings.max_connections)),
            max: settings.max_connections,
            header_timeout: settings.header_timeout,
            idle_timeout: settings.idle_timeout,
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            pressure,
            burst: Burst::default(),
        }
    }

    /// A slot for a new connection: a free one, else that of the connection idle the longest,
    /// which is closed for it; `None` (the new connection is refused) when every connection
    /// has a request in progress. Logged once per burst, counted always.
    async fn admit(&self, url: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            return Some(slot);
        }
        let slot = if self.close_idlest() {
            let freed = Arc::clone(&self.slots).acquire_owned();
            tokio::time::timeout(EVICT_WAIT, freed)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        let count = if slot.is_some() {
            &self.pressure.closed
        } else {
            &self.pressure.refused
        };
        count.fetch_add(1, Ordering::Relaxed);
        if self.burst.starts() {
            let (closed, refused) = self.pressure.totals();
            tracing::warn!(
                "webhook {url}: {} connections are open, its max_connections: each new one \
                 closes the connection idle the longest, or is refused when every connection \
                 has a request in progress (logged once per burst; so far in this run \
                 {closed} closed to make room, {refused} refused)",
                self.max
            );
        }
        slot
    }

    /// Tells the connection idle the longest to close; false when none is idle.
    fn close_idlest(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let mut idlest: Option<(tokio::time::Instant, &Arc<Connection>)> = None;
        for connection in open.values() {
            if let Some(since) = connection.idle_since() {
                if idlest.is_none_or(|(oldest, _)| since < oldest) {
                    idlest = Some((since, connection));
                }
            }
        }
        idlest.is_some_and(|(_, connection)| connection.evict())
    }
}

/// A connection on the list of open ones, holding its slot under the cap; dropped when its
/// task ends (or is cut off), which takes it off the list and frees the slot.
struct Listed {
    connections: Arc<Connections>,
    id: u64,
    connection: Arc<Connection>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Connections {
    /// Lists a new connection, which holds `slot`: from now on the cap sees it.
    fn list(self: &Arc<Self>, slot: tokio::sync::OwnedSemaphorePermit) -> Listed {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection::new());
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(&connection));
        Listed {
            connections: Arc::clone(self),
            id,
            connection,
            _slot: slot,
        }
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.remove(&self.id);
    }
}

/// Events this close together ([`BURST_QUIET`]) are one burst, logged once.
#[derive(Default)]
struct Burst {
    last: Mutex<Option<std::time::Instant>>,
}

impl Burst {
    /// Notes an event: whether it starts a burst (none in the last [`BURST_QUIET`]).
    fn starts(&self) -> bool {
        let now = std::time::Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let starts = last.is_none_or(|at| now.duration_since(at) >= BURST_QUIET);
        *last = Some(now);
        starts
    }
}

/// One connection's state, as its reads, its requests and the accept loop see it.
struct Connection {
    phase: Mutex<Phase>,
    /// Wakes the connection's task to look at its deadline again.
    wake: tokio::sync::Notify,
}

struct Phase {
    /// Requests being handled now.
    busy: usize,
    /// When the connection was accepted, or last finished a request.
    since: tokio::time::Instant,
    /// When the first byte of a later request's head arrived (none before it).
    head_since: Option<tokio::time::Instant>,
    /// No request has begun yet: its head is due `header_timeout` after the accept.
    fresh: bool,
    /// Closed to make room for a new connection.
    evicted: bool,
}

impl Connection {
    fn new() -> Self {
        Connection {
            phase: Mutex::new(Phase {
                busy: 0,
                since: tokio::time::Instant::now(),
                head_since: None,
                fresh: true,
                evicted: false,
            }),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Since when it has had no request in progress, if it has none (and is not closing).
    fn idle_since(&self) -> Option<tokio::time::Instant> {
        let phase = self.phase();
        (phase.busy == 0 && !phase.evicted).then_some(phase.since)
    }

    /// Closes it to make room, if it is still idle.
    fn evict(&self) -> bool {
        let mut phase = self.phase();
        let idle = phase.busy == 0 && !phase.evicted;
        if idle {
            phase.evicted = true;
            self.wake.notify_one();
        }
        idle
    }

    /// When it is to be closed, and why; none while a request is in progress.
    fn deadline(&self, limits: &Connections) -> Option<(tokio::time::Instant, &'static str)> {
        let phase = self.phase();
        if phase.busy > 0 {
            None
        } else if phase.evicted {
            Some((phase.since, "closed to make room: max_connections reached"))
        } else if phase.fresh {
            Some((
                phase.since + limits.header_timeout,
                "no request head within header_timeout",
            ))
        } else if let Some(head) = phase.head_since {
            Some((
                head + limits.header_timeout,
                "no request head within header_timeout",
            ))
        } else {
            Some((phase.since + limits.idle_timeout, "idle for idle_timeout"))
        }
    }

    /// Waits until its deadline ([`Connection::deadline`]) has passed: why it is to be closed.
    async fn expired(&self, limits: &Connections) -> &'static str {
        loop {
            let woken = self.wake.notified();
            match self.deadline(limits) {
                Some((at, why)) if at <= tokio::time::Instant::now() => return why,
                Some((at, _)) => {
                    tokio::select! {
                        () = woken => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => woken.await,
            }
        }
    }

    /// Bytes arrived: with no request in progress, the next one's head has begun.
    fn read_some(&self) {
        let mut phase = self.phase();
        if phase.busy == 0 && !phase.fresh && phase.head_since.is_none() {
            phase.head_since = Some(tokio::time::Instant::now());
            self.wake.notify_one();
        }
    }

    /// A request's head is in: it is being handled until the guard drops.
    fn request(self: &Arc<Self>) -> InRequest {
        let mut phase = self.phase();
        phase.busy += 1;
        phase.fresh = false;
        phase.head_since = None;
        phase.evicted = false;
        InRequest(Arc::clone(self))
    }
}

/// A request in progress on a connection (see [`Connection::request`]).
struct InRequest(Arc<Connection>);

impl Drop for InRequest {
    fn drop(&mut self) {
        let mut phase = self.0.phase();
        phase.busy -= 1;
        phase.since = tokio::time::Instant::now();
        self.0.wake.notify_one();
    }
}

/// A connection's socket, telling its [`Connection`] when bytes arrive.
struct Watched {
    stream: tokio::net::TcpStream,
    connection: Arc<Connection>,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.connection.read_some();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Serves one connection (HTTP/1.1, kept alive; over TLS when `tls` is given) until the
/// client closes it, a timeout or the cap closes it, or the server shuts down (then it
/// finishes the request in progress).
///
/// The TLS handshake is timed as part of the first request's head: a client that does not
/// finish it within `header_timeout` of the accept is closed, and until it has sent a request
/// the connection counts as idle for the cap.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    listed: Listed,
    url: String,
    mut done: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let (connection, connections) = (&listed.connection, &listed.connections);
    let watched = Watched {
        stream,
        connection: Arc::clone(connection),
    };
    let http = Http {
        peer,
        connection,
        connections,
        url: &url,
    };
    let Some(tls) = tls else {
        return http.serve(watched, app, done).await;
    };
    let handshake = tls.accept(watched);
    let secured = tokio::select! {
        secured = handshake => match secured {
            Ok(secured) => secured,
            Err(error) => {
                tracing::debug!("webhook {url}: TLS handshake with {peer} failed: {error}");
                return;
            }
        },
        why = connection.expired(connections) => {
            tracing::debug!(
                "webhook {url}: closed the connection from {peer} in its TLS handshake: {why}"
            );
            return;
        }
        _ = done.wait_for(|done| *done) => return,
    };
    http.serve(secured, app, done).await;
}

/// One connection's HTTP/1.1, over its socket or its TLS stream.
struct Http<'a> {
    peer: SocketAddr,
    connection: &'a Arc<Connection>,
    connections: &'a Connections,
    url: &'a str,
}

impl Http<'_> {
    /// Serves requests on `io` until the client closes it, its deadline passes, or the server
    /// shuts down (then it finishes the request in progress).
    async fn serve<I>(self, io: I, app: axum::Router, mut done: watch::Receiver<bool>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Http {
            peer,
            connection,
            connections,
            url,
        } = self;
        let io = hyper_util::rt::TokioIo::new(io);
        let router = hyper_util::service::TowerToHyperService::new(app);
        let in_request = Arc::clone(connection);
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let busy = in_request.request();
            let response = hyper::service::Service::call(&router, request);
            async move {
                let response = response.await;
                drop(busy);
                response
            }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        // The connection's own deadlines (below) time the heads; hyper's timer would also close
        // kept-alive connections after the header timeout.
        http.keep_alive(true).header_read_timeout(None);
        let served = http.serve_connection(io, service);
        let mut served = std::pin::pin!(served);
        let mut shutting = false;
        loop {
            tokio::select! {
                result = served.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!("webhook {url}: connection from {peer}: {error}");
                    }
                    break;
                }
                why = connection.expired(connections) => {
                    tracing::debug!("webhook {url}: closed the connection from {peer}: {why}");
                    break;
                }
                _ = done.wait_for(|done| *done), if !shutting => {
                    shutting = true;
                    if connection.idle_since().is_some() {
                        break;
                    }
                    served.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Why a request was refused: its status, the reason (the JSON body's `error`) and a header.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    reason: String,
    header: Option<(HeaderName, HeaderValue)>,
    /// Whether the connection must close after the answer (the body was not read to its end).
    close: bool,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
            header: None,
            close: false,
        }
    }

    /// The pipeline reads no more.
    fn stopped() -> Self {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the pipeline has stopped reading this webhook",
        )
    }

    fn bad(reason: impl fmt::Display) -> Self {
        Refusal::new(StatusCode::BAD_REQUEST, reason.to_string())
    }

    fn closing(mut self, close: bool) -> Self {
        self.close |= close;
        self
    }

    fn with_header(mut self, name: HeaderName, value: impl ToString) -> Self {
        self.header = HeaderValue::from_str(&value.to_string())
            .ok()
            .map(|value| (name, value));
        self
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let reason = format!("{}; nothing of this request was accepted", self.reason);
        let mut response = reply(self.status, json!({ "error": reason }));
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        if self.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

async fn handle(
    State(intake): State<Arc<Intake>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    match Arc::clone(&intake).take(peer, request).await {
        Ok(accepted) => reply(StatusCode::OK, json!({ "accepted": accepted })),
        Err(refusal) => refusal.into_response(),
    }
}

/// How a body holds its records.
#[derive(Clone, Copy)]
enum BodyKind {
    /// One JSON record.
    Single,
    /// One JSON record per line.
    Lines,
}

impl Intake {
    /// Checks a request and hands its records to the readers (or the log): how many, or why
    /// not.
    async fn take(self: Arc<Self>, peer: SocketAddr, request: Request) -> Result<usize, Refusal> {
        let s = &self.settings;
        let (parts, body) = request.into_parts();
        if let Err(refusal) = s.check_head(&parts) {
            return Err(s.discard(&parts, body, refusal).await);
        }
        let body = s.read_body(body).await?;
        // A Standard Webhooks id is claimed from here; it is remembered only if the request is
        // accepted (a refusal below forgets it, so the sender may retry with the same id).
        let claim = s.check_signature(&parts.headers, &body)?;
        let kind = body_kind(&parts.headers)?;
        let origin = format!("POST {} from {peer}", s.path);
        let records = records(kind, &body, &origin, wall_clock_ms())?;
        self.check_batch(records.len())?;
        let keep = |taken: Result<usize, Refusal>, claim: Option<IdClaim>| {
            if let (Ok(_), Some(claim)) = (&taken, claim) {
                claim.keep();
            }
            taken
        };
        match &self.ingest {
            Ingest::Buffer(feed) => keep(self.offer(feed, records), claim),
            Ingest::Log(_) => {
                // The append and its fsync block; they run to their end (and the answer says
                // what happened) even if the client goes away meanwhile.
                let intake = Arc::clone(&self);
                tokio::task::spawn_blocking(move || keep(intake.append(records), claim))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Refusal::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "appending to the write-ahead log failed unexpectedly; this is a bug \
                             in Eddy",
                        ))
                    })
            }
        }
    }

    /// A batch larger than the buffer can never be taken.
    fn check_batch(&self, n: usize) -> Result<(), Refusal> {
        let s = &self.settings;
        if n > s.buffer {
            return Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "a batch of {n} records is more than this webhook buffers ({} records, option \
                     buffer=): send smaller batches",
                    s.buffer
                ),
            ));
        }
        Ok(())
    }

    /// Whether `n` more records may be taken now, with `waiting` taken and not yet read.
    fn admit(&self, n: usize, waiting: usize, stopped: bool) -> Result<(), Refusal> {
        let s = &self.settings;
        if stopped || *self.done.borrow() {
            return Err(Refusal::stopped());
        }
        if let Some(left) = self.stop.remaining() {
            if (waiting + n) as u64 > left {
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "this webhook stops after a record limit: it reads {left} more, and \
                         {waiting} already wait, so it cannot take these {n}"
                    ),
                ));
            }
        }
        if s.buffer.saturating_sub(waiting) < n {
            return Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "the pipeline is behind ({waiting} records wait to be processed, room for {}): \
                     retry after {} s",
                    s.buffer.saturating_sub(waiting),
                    s.retry_after_s
                ),
            )
            .with_header(header::RETRY_AFTER, s.retry_after_s));
        }
        Ok(())
    }

    /// Hands all of `records` to the readers if the buffer has room for all of them now.
    fn offer(&self, feed: &Mutex<Feed<()>>, records: Vec<Delivery<()>>) -> Result<usize, Refusal> {
        let n = records.len();
        let mut feed = feed.lock().unwrap_or_else(PoisonError::into_inner);
        // The readers' acknowledgements mean nothing here (a 2xx was the acknowledgement); drop
        // them so they do not pile up.
        feed.ready_acks();
        self.admit(n, feed.backlog(), self.stopping.load(Ordering::SeqCst))?;
        for record in records {
            // Only this lock's holder adds to the channel and the source keeps a reader's end
            // open, so there is room for every record checked above.
            if feed.try_deliver(record).is_err() {
                return Err(Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the buffer refused a record it had room for; this is a bug in Eddy",
                ));
            }
        }
        Ok(n)
    }

    /// Appends all of `records` to the write-ahead log, fsynced, if the backlog has room for
    /// them now: the room check, the append and the count happen under one lock.
    fn append(&self, records: Vec<Delivery<()>>) -> Result<usize, Refusal> {
        let Ingest::Log(logged) = &self.ingest else {
            unreachable!("appending needs a log");
        };
        let n = records.len();
        let mut log = logged.log.lock().unwrap_or_else(PoisonError::into_inner);
        let waiting = logged.waiting(&log);
        let Some(writer) = log.writer.as_mut() else {
            return Err(Refusal::stopped());
        };
        self.admit(n, waiting, false)?;
        let entries = records.iter().map(|d| {
            (
                d.payload.as_slice(),
                d.location.as_str(),
                d.timestamp_ms.unwrap_or_default(),
            )
        });
        match writer.append(entries) {
            Ok(_) => {
                log.appended += n as u64;
                Ok(n)
            }
            Err(error) => {
                tracing::warn!("webhook {}: {error}", self.settings.url);
                Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the write-ahead log could not be written ({error}); retry after {} s",
                        self.settings.retry_after_s
                    ),
                )
                .with_header(header::RETRY_AFTER, self.settings.retry_after_s))
            }
        }
    }

    /// The reader has finished (or failed, or was stopped): with a log, nothing more is
    /// taken, since nothing more would be read in this run, and the log is closed (its lock
    /// released) at once, so that the next run may open it while this server finishes.
    fn reader_finished(&self) {
        if let Ingest::Log(logged) = &self.ingest {
            logged
                .log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .writer = None;
        }
    }
}

impl Settings {
    fn too_large(&self) -> Refusal {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than this webhook's limit of {} bytes (option max_body=): \
                 send smaller batches",
                self.max_body
            ),
        )
    }

    /// The checks that need no body: path, method, token, declared length.
    fn check_head(&self, parts: &Parts) -> Result<(), Refusal> {
        let path = parts.uri.path();
        if path != self.path {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no webhook at {path}: this one takes POSTs to {}",
                    self.path
                ),
            ));
        }
        if parts.method != Method::POST {
            return Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("this webhook takes POST requests, not {}", parts.method),
            )
            .with_header(header::ALLOW, "POST"));
        }
        self.check_token(&parts.headers)?;
        if declared_length(parts).is_some_and(|length| length > self.max_body as u64) {
            return Err(self.too_large());
        }
        Ok(())
    }

    /// Reads and throws away the body of a request refused before its body was read (up to
    /// [`DRAIN_LIMIT`]), so the answer reaches the client and the connection stays usable.
    async fn discard(&self, parts: &Parts, body: Body, refusal: Refusal) -> Refusal {
        if declared_length(parts).is_some_and(|length| length > DRAIN_LIMIT as u64) {
            return refusal.closing(true);
        }
        let read = tokio::time::timeout(self.body_timeout, read_up_to(body, 0)).await;
        let to_end = matches!(read, Ok(Ok(read)) if read.to_end);
        refusal.closing(!to_end)
    }

    /// The body, when it holds at most `max_body` bytes and arrives within `body_timeout`.
    async fn read_body(&self, body: Body) -> Result<Bytes, Refusal> {
        let Ok(read) =
            tokio::time::timeout(self.body_timeout, read_up_to(body, self.max_body)).await
        else {
            return Err(self.too_slow());
        };
        match read {
            Ok(BodyRead {
                kept: Some(bytes), ..
            }) => Ok(bytes),
            Ok(BodyRead { to_end, .. }) => Err(self.too_large().closing(!to_end)),
            Err(error) => {
                Err(Refusal::bad(format!("the body could not be read ({error})")).closing(true))
            }
        }
    }

    /// The body did not arrive within `body_timeout`: 408, and the connection closes.
    fn too_slow(&self) -> Refusal {
        Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within this webhook's limit of {:?} (option \
                 body_timeout=)",
                self.body_timeout
            ),
        )
        .closing(true)
    }

    fn check_token(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        match given {
            None => Err(unauthorized(
                "the request has no Authorization: Bearer <token> header",
            )),
            Some(given) if bool::from(given.ct_eq(token)) => Ok(()),
            Some(_) => Err(unauthorized("the bearer token is wrong")),
        }
    }

    /// Checks the request's signature as the scheme says (nothing without a secret). A
    /// Standard Webhooks request that passes is claimed: its id, remembered until the claim
    /// is dropped (forgotten) or kept (the request was accepted).
    fn check_signature(
        self: &Arc<Self>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Option<IdClaim>, Refusal> {
        let Some(secret) = &self.secret else {
            return Ok(None);
        };
        match self.signature {
            SignatureScheme::Eddy => {
                check_hex(headers, SIGNATURE_HEADER, secret, body).map(|()| None)
            }
            SignatureScheme::Github => {
                check_hex(headers, GITHUB_SIGNATURE_HEADER, secret, body).map(|()| None)
            }
            SignatureScheme::Stripe => self.check_stripe(headers, secret, body).map(|()| None),
            SignatureScheme::Standard => self.check_standard(headers, secret, body).map(Some),
        }
    }

    fn check_stripe(&self, headers: &HeaderMap, secret: &[u8], body: &[u8]) -> Result<(), Refusal> {
        const FORMAT: &str = "t=<unix seconds>,v1=<hex of HMAC-SHA256(secret, \"<t>.<body>\")>";
        let given = headers.get(STRIPE_SIGNATURE_HEADER).ok_or_else(|| {
            unauthorized(format!(
                "the request is not signed: send {STRIPE_SIGNATURE_HEADER}: {FORMAT}"
            ))
        })?;
        let bad_format = || {
            unauthorized(format!(
                "the {STRIPE_SIGNATURE_HEADER} header is not {FORMAT}"
            ))
        };
        let mut timestamp = None;
        let mut digests = Vec::new();
        for item in given.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            let Some(at) = item.iter().position(|&b| b == b'=') else {
                return Err(bad_format());
            };
            let (key, value) = (&item[..at], &item[at + 1..]);
            match key {
                b"t" => timestamp = Some(value),
                b"v1" => digests.push(hex::decode(value).map_err(|_| bad_format())?),
                // Other schemes (v0, test signatures) are not Eddy's to check.
                _ => {}
            }
        }
        let (Some(timestamp), false) = (timestamp, digests.is_empty()) else {
            return Err(bad_format());
        };
        let mut content = Vec::with_capacity(timestamp.len() + 1 + body.len());
        content.extend_from_slice(timestamp);
        content.push(b'.');
        content.extend_from_slice(body);
        let expected = mac(secret, &content);
        let matched = digests.iter().fold(false, |any, d| {
            expected.clone().verify_slice(d).is_ok() | any
        });
        if !matched {
            return Err(unauthorized("the signature does not match the body"));
        }
        self.check_timestamp(STRIPE_SIGNATURE_HEADER, timestamp)
    }

    fn check_standard(
        self: &Arc<Self>,
        headers: &HeaderMap,
        key: &[u8],
        body: &[u8],
    ) -> Result<IdClaim, Refusal> {
        let header = |name: &str| {
            headers.get(name).map(HeaderValue::as_bytes).ok_or_else(|| {
                unauthorized(format!(
                    "the request is not signed: send {STANDARD_ID_HEADER}, \
                     {STANDARD_TIMESTAMP_HEADER} and {STANDARD_SIGNATURE_HEADER} (Standard \
                     Webhooks); {name} is missing"
                ))
            })
        };
        let (id, timestamp, given) = (
            header(STANDARD_ID_HEADER)?,
            header(STANDARD_TIMESTAMP_HEADER)?,
            header(STANDARD_SIGNATURE_HEADER)?,
        );
        if id.is_empty() {
            return Err(unauthorized(format!(
                "the {STANDARD_ID_HEADER} header is empty"
            )));
        }
        let mut digests = Vec::new();
        for signature in given.split(|&b| b == b' ').filter(|s| !s.is_empty()) {
            // Other versions (v1a: asymmetric) are not Eddy's to check.
            if let Some(encoded) = signature.strip_prefix(b"v1,") {
                use base64::Engine as _;
                let digest = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|_| {
                        unauthorized(format!(
                            "the {STANDARD_SIGNATURE_HEADER} header is not a space-separated \
                             list of v1,<base64 of HMAC-SHA256>"
                        ))
                    })?;
                digests.push(digest);
            }
        }
        if digests.is_empty() {
            return Err(unauthorized(format!(
                "the {STANDARD_SIGNATURE_HEADER} header holds no v1,<base64 of HMAC-SHA256> \
                 signature"
            )));
        }
        let expected = mac(key, &standard_content(id, timestamp, body));
        let matched = digests.iter().fold(false, |any, d| {
            expected.clone().verify_slice(d).is_ok() | any
        });
        if !matched {
            return Err(unauthorized("the signature does not match the body"));
        }
        self.check_timestamp(STANDARD_TIMESTAMP_HEADER, timestamp)?;
        self.claim(id)
    }

    /// A signed timestamp (unix seconds) must be within the tolerance of the server's clock.
    fn check_timestamp(&self, header: &str, timestamp: &[u8]) -> Result<(), Refusal> {
        let at = std::str::from_utf8(timestamp)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(|| {
                unauthorized(format!(
                    "the timestamp in {header} is not a number of seconds since 1970"
                ))
            })?;
        let off = unix_now().abs_diff(at);
        if off > self.tolerance.as_secs() {
            return Err(unauthorized(format!(
                "the timestamp in {header} ({at}) is {off} s from the server's clock, more than \
                 the tolerance of {} s: a stale or replayed request (or a clock out of step)",
                self.tolerance.as_secs()
            )));
        }
        Ok(())
    }

    /// Claims a Standard Webhooks id: refused when it was accepted (or is being taken) within
    /// twice the tolerance, when any copy of it would be refused as stale anyway.
    fn claim(self: &Arc<Self>, id: &[u8]) -> Result<IdClaim, Refusal> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.prune(now, self.tolerance.saturating_mul(2));
        match seen.ids.get(id) {
            Some(&(_, true)) => {
                return Err(unauthorized(format!(
                    "the {STANDARD_ID_HEADER} {ACCEPTED_BEFORE}: a replayed request"
                )))
            }
            // The sender's earlier attempt is still being taken: it may retry once that is
            // answered (accepted, the retry is told so; refused, the id is free again).
            Some(&(_, false)) => {
                return Err(Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "a request with this {STANDARD_ID_HEADER} is being taken now: try \
                         again once it is answered"
                    ),
                )
                .with_header(header::RETRY_AFTER, self.retry_after_s))
            }
            None => {}
        }
        if seen.order.len() >= MAX_REMEMBERED_IDS {
            return Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{MAX_REMEMBERED_IDS} {STANDARD_ID_HEADER}s are remembered against replays, \
                     the most there may be: try again once older ones expire"
                ),
            )
            .with_header(header::RETRY_AFTER, self.retry_after_s));
        }
        seen.ids.insert(id.to_vec(), (now, false));
        seen.order.push_back((now, id.to_vec()));
        Ok(IdClaim {
            settings: Arc::clone(self),
            id: id.to_vec(),
            at: now,
            keep: false,
        })
    }
}

/// The Standard Webhooks ids accepted lately, oldest first.
#[derive(Default)]
struct SeenIds {
    /// When each id was claimed, and whether its request was accepted.
    ids: HashMap<Vec<u8>, (Instant, bool)>,
    order: VecDeque<(Instant, Vec<u8>)>,
}

impl SeenIds {
    /// Forgets the ids claimed more than `keep` ago.
    fn prune(&mut self, now: Instant, keep: Duration) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) <= keep {
                break;
            }
            let Some((at, id)) = self.order.pop_front() else {
                break;
            };
            if self.ids.get(&id).is_some_and(|(claimed, _)| *claimed == at) {
                self.ids.remove(&id);
            }
        }
    }
}

/// A Standard Webhooks id being taken: forgotten when dropped unless [`IdClaim::keep`] was
/// called (the request was accepted), so a request refused after its signature (429, 503, 400)
/// can be sent again with the same id.
struct IdClaim {
    settings: Arc<Settings>,
    id: Vec<u8>,
    at: Instant,
    keep: bool,
}

impl IdClaim {
    /// The request was accepted: the id stays taken, and a replay is told so.
    fn keep(mut self) {
        self.keep = true;
        let mut seen = self
            .settings
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = seen.ids.get_mut(&self.id).filter(|(at, _)| *at == self.at) {
            entry.1 = true;
        }
    }
}

impl Drop for IdClaim {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let mut seen = self
            .settings
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if seen.ids.get(&self.id).is_some_and(|(at, _)| *at == self.at) {
            seen.ids.remove(&self.id);
        }
    }
}

/// Checks a `sha256=<hex of HMAC-SHA256(secret, body)>` signature in `name` (Eddy, GitHub).
fn check_hex(headers: &HeaderMap, name: &str, secret: &[u8], body: &[u8]) -> Result<(), Refusal> {
    let Some(given) = headers.get(name) else {
        return Err(unauthorized(format!(
            "the request is not signed: send {name}: sha256=<hex of HMAC-SHA256(secret, body)>"
        )));
    };
    let digest = given
        .as_bytes()
        .strip_prefix(b"sha256=")
        .and_then(|hex_digest| hex::decode(hex_digest).ok())
        .ok_or_else(|| unauthorized(format!("the {name} header is not sha256=<hex digest>")))?;
    mac(secret, body)
        .verify_slice(&digest)
        .map_err(|_| unauthorized("the signature does not match the body"))
}

fn unauthorized(reason: impl fmt::Display) -> Refusal {
    Refusal::new(StatusCode::UNAUTHORIZED, reason.to_string())
}

fn declared_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// What [`read_up_to`] read.
struct BodyRead {
    /// The body, when it held at most the bytes asked for.
    kept: Option<Bytes>,
    /// Whether the body was read to its end (it is not past [`DRAIN_LIMIT`]).
    to_end: bool,
}

/// Reads `body` to its end, keeping it if it holds at most `keep` bytes; a longer one is read
/// on (and thrown away) up to [`DRAIN_LIMIT`] bytes.
async fn read_up_to(mut body: Body, keep: usize) -> Result<BodyRead, axum::Error> {
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(chunk) = frame?.into_data() else {
            continue; // trailers
        };
        total = total.saturating_add(chunk.len());
        if total > DRAIN_LIMIT.max(keep) {
            return Ok(BodyRead {
                kept: None,
                to_end: false,
            });
        }
        if total <= keep {
            kept.extend_from_slice(&chunk);
        }
    }
    Ok(BodyRead {
        kept: (total <= keep).then(|| Bytes::from(kept)),
        to_end: true,
    })
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, Refusal> {
    const EXPECTED: &str =
        "send application/json (one record) or application/x-ndjson (one record per line)";
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(Refusal::bad(format!(
            "the request has no Content-Type: {EXPECTED}"
        )));
    };
    let text = value.to_str().unwrap_or_default();
    let media = text.split(';').next().unwrap_or_default().trim();
    match media.to_ascii_lowercase().as_str() {
        "application/json" => Ok(BodyKind::Single),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines" => Ok(BodyKind::Lines),
        _ => Err(Refusal::bad(format!(
            "the Content-Type is {text:?}: {EXPECTED}"
        ))),
    }
}

/// The deepest nesting of arrays and objects the readers' JSON decoder (serde_json, whose
/// recursion limit is 128) takes.
const MAX_NESTING: usize = 127;

/// Why a record nested deeper than [`MAX_NESTING`] is refused.
const TOO_DEEP: &str = "nests arrays and objects more than 127 levels deep, deeper than the \
                        JSON decoder takes: flatten the record";

/// Whether `json` nests arrays and objects deeper than [`MAX_NESTING`]: one pass over its
/// bytes, skipping strings (and the escapes in them).
fn too_deep(json: &[u8]) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The records of a body, each checked to be well-formed UTF-8 JSON that the readers' decoder
/// takes (decoding into the pipeline's type is the reader's job).
fn records(
    kind: BodyKind,
    body: &[u8],
    origin: &str,
    received_ms: u64,
) -> Result<Vec<Delivery<()>>, Refusal> {
    let well_formed = |bytes: &[u8]| serde_json::from_slice::<IgnoredAny>(bytes).map(|_| ());
    let delivery = |payload: &[u8], location: String| Delivery {
        payload: payload.to_vec(),
        location,
        timestamp_ms: Some(received_ms),
        ack: (),
    };
    if let Err(e) = std::str::from_utf8(body) {
        return Err(Refusal::bad(format!(
            "the body is not valid UTF-8 (at byte {}): send JSON as UTF-8",
            e.valid_up_to()
        )));
    }
    match kind {
        BodyKind::Single => {
            well_formed(body)
                .map_err(|e| Refusal::bad(format!("the body is not valid JSON ({e})")))?;
            if too_deep(body) {
                return Err(Refusal::bad(format!("the body {TOO_DEEP}")));
            }
            Ok(vec![delivery(body, origin.to_string())])
        }
        BodyKind::Lines => {
            let mut out = Vec::new();
            for (index, line) in body.split(|b| *b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let number = index + 1;
                well_formed(line)
                    .map_err(|e| Refusal::bad(format!("line {number} is not valid JSON ({e})")))?;
                if too_deep(line) {
                    return Err(Refusal::bad(format!("line {number} {TOO_DEEP}")));
                }
                out.push(delivery(line, format!("{origin} line {number}")));
            }
            if out.is_empty() {
                return Err(Refusal::bad("the body holds no records"));
            }
            Ok(out)
        }
    }
}

/// The `http://ADDR:PORT/PATH` source of `eddy copy`: a webhook listening there.
pub(crate) fn endpoint_source(
    e: &Endpoint,
    o: &EndpointOptions,
) -> Result<DynSource, ConnectorError> {
    if o.format != Format::Json {
        return Err(ConnectorError::user(format!(
            "{e}: webhook bodies are JSON (application/json) or NDJSON \
             (application/x-ndjson), not {}: drop --format",
            o.format
        )));
    }
    let mut config = WebhookConfig::from_endpoint(e)?;
    config.stop = o.stop.clone();
    Ok(Box::new(WebhookSource::bind(config, o.event_time.clone())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn standard_webhooks_signatures_match_the_reference_example() {
        // The example of the Standard Webhooks reference libraries.
        let key = standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            standard_signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(standard_key("plain").unwrap(), b"plain");
        let error = standard_key("whsec_s3cret!").unwrap_err();
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn remembered_ids_are_forgotten_by_age_or_when_their_request_is_refused() {
        let settings = Arc::new(Settings {
            url: "http://127.0.0.1:1/".into(),
            path: "/".into(),
            secret: Some(b"k".to_vec()),
            signature: SignatureScheme::Standard,
            tolerance: Duration::from_millis(50),
            seen: Mutex::new(SeenIds::default()),
            token: None,
            max_body: DEFAULT_MAX_BODY,
            buffer: DEFAULT_BUFFER,
            retry_after_s: 1,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            wal: None,
            tls: None,
        });
        settings.claim(b"a").unwrap().keep();
        let replay = settings.claim(b"a").err().expect("a replay");
        assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
        assert!(replay.reason.contains(ACCEPTED_BEFORE), "{}", replay.reason);
        let taking = settings.claim(b"b").unwrap();
        let busy = settings.claim(b"b").err().expect("taken now");
        assert_eq!(
            busy.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            busy.reason
        );
        drop(taking);
        settings.claim(b"b").unwrap().keep();
        std::thread::sleep(Duration::from_millis(120));
        settings.claim(b"c").unwrap().keep();
        let seen = settings.seen.lock().unwrap();
        assert_eq!((seen.ids.len(), seen.order.len()), (1, 1), "a and b pruned");
        drop(seen);
        settings.claim(b"a").unwrap().keep();
    }

    #[test]
    fn ndjson_bodies_split_into_located_records_or_are_refused_whole() {
        let body = b"{\"id\": 1}\r\n\n{\"id\": 2}\n";
        let records = records(BodyKind::Lines, body, "POST /x from 1.2.3.4:5", 7).unwrap();
        let located: Vec<_> = records
            .iter()
            .map(|d| (d.payload.as_slice(), d.location.as_str()))
            .collect();
        assert_eq!(
            located,
            vec![
                (&b"{\"id\": 1}"[..], "POST /x from 1.2.3.4:5 line 1"),
                (&b"{\"id\": 2}"[..], "POST /x from 1.2.3.4:5 line 3"),
            ]
        );
        let refused = records_error(BodyKind::Lines, b"{\"id\": 1}\n{\"id\": 2\n");
        assert!(refused.contains("line 2 is not valid JSON"), "{refused}");
        assert!(records_error(BodyKind::Lines, b"\n \n").contains("no records"));
        assert!(records_error(BodyKind::Single, b"{} {}").contains("not valid JSON"));
    }

    #[test]
    fn bodies_the_decoder_would_reject_are_refused_at_the_door() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        // The limit is the decoder's own.
        let deepest = nested(MAX_NESTING);
        assert!(serde_json::from_str::<Value>(&deepest).is_ok());
        assert!(serde_json::from_str::<Value>(&nested(MAX_NESTING + 1)).is_err());
        assert!(records(BodyKind::Single, deepest.as_bytes(), "here", 0).is_ok());
        let refused = records_error(BodyKind::Single, nested(100_000).as_bytes());
        assert!(refused.contains("127 levels deep"), "{refused}");
        let lines = format!("{{}}\n{{\"a\": {}}}\n", nested(MAX_NESTING));
        assert!(records_error(BodyKind::Lines, lines.as_bytes()).starts_with("line 2 nests"));
        // Brackets in strings, escaped quotes included, are not nesting.
        let text = format!(r#"{{"a": "\"{}"}}"#, "[".repeat(500));
        assert!(records(BodyKind::Single, text.as_bytes(), "here", 0).is_ok());

        let refused = records_error(BodyKind::Lines, b"{\"a\": \"\xff\"}\n");
        assert!(refused.contains("not valid UTF-8 (at byte 7)"), "{refused}");
    }

    mod fuzz {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::*;

        /// Bytes that make JSON, nesting, strings, escapes, line breaks and bad UTF-8 likely.
        fn jsonish() -> impl Strategy<Value = Vec<u8>> {
            let nested = (0usize..200, "\\PC{0,10}").prop_map(|(depth, text)| {
                let inner = serde_json::to_string(&text).unwrap();
                format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
            });
            prop_oneof![
                vec(
                    prop::sample::select(b"[]{}\",:\\ a1\n\r\xff".to_vec()),
                    0..300
                ),
                vec(any::<u8>(), 0..300),
                nested,
            ]
        }

        /// The lines of an NDJSON body that hold something.
        fn records_in(body: &[u8]) -> usize {
            body.split(|b| *b == b'\n')
                .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
                .count()
        }

        proptest! {
            #[test]
            fn fuzz_webhook_bodies_are_refused_or_every_record_decodes(body in jsonish()) {
                for kind in [BodyKind::Single, BodyKind::Lines] {
                    match records(kind, &body, "here", 0) {
                        Ok(taken) => {
                            let expected = match kind {
                                BodyKind::Single => 1,
                                BodyKind::Lines => records_in(&body),
                            };
                            prop_assert_eq!(taken.len(), expected);
                            for record in &taken {
                                let decoded = serde_json::from_slice::<Value>(&record.payload);
                                prop_assert!(decoded.is_ok(), "answered 2xx, then {decoded:?}");
                            }
                        }
                        Err(refusal) => prop_assert_eq!(refusal.status, StatusCode::BAD_REQUEST),
                    }
                }
            }

            #[test]
            fn fuzz_ndjson_batches_split_one_record_per_line(
                values in vec((any::<i64>(), "\\PC{0,20}", 1usize..140), 1..20),
                crlf in any::<bool>(),
            ) {
                let mut body = Vec::new();
                let mut expected = Vec::new();
                for (n, text, depth) in &values {
                    let nested = format!("{}{}", "[".repeat(*depth), "]".repeat(*depth));
                    let line = format!(
                        "{{\"n\": {n}, \"text\": {}, \"nested\": {nested}}}",
                        serde_json::to_string(text).unwrap()
                    );
                    expected.push((*depth < MAX_NESTING, line.clone()));
                    body.extend_from_slice(line.as_bytes());
                    body.extend_from_slice(if crlf { b"\r\n\n" } else { b"\n" });
                }
                match records(BodyKind::Lines, &body, "here", 0) {
                    Ok(taken) => {
                        prop_assert!(expected.iter().all(|(fits, _)| *fits));
                        let lines: Vec<&[u8]> = expected.iter().map(|(_, l)| l.as_bytes()).collect();
                        let payloads: Vec<&[u8]> = taken.iter().map(|d| d.payload.as_slice()).collect();
                        prop_assert_eq!(payloads, lines);
                    }
                    Err(refusal) => {
                        prop_assert!(expected.iter().any(|(fits, _)| !fits), "{}", refusal.reason);
                        prop_assert!(refusal.reason.contains("127 levels deep"));
                    }
                }
            }
        }
    }

    #[test]
    fn the_default_log_directory_follows_the_state_variables_and_names_address_and_path() {
        let listen = SocketAddr::from(([127, 0, 0, 1], 8080));
        let dir = |vars: &[(&str, &str)], path: &str| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            default_wal_dir_from(listen, path, |name| {
                vars.iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| OsString::from(v))
            })
        };
        let all = [
            ("EDDY_STATE_DIR", "/state"),
            ("XDG_STATE_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(
            dir(&all, "/orders").unwrap(),
            PathBuf::from("/state/webhook/127.0.0.1-8080_orders")
        );
        assert_eq!(
            dir(&all[1..], "/").unwrap(),
            PathBuf::from("/xdg/eddy/webhook/127.0.0.1-8080_")
        );
        // Empty variables and a relative XDG_STATE_HOME (the XDG spec says to ignore it) do
        // not count.
        let home = [("EDDY_STATE_DIR", ""), ("XDG_STATE_HOME", "rel"), all[2]];
        assert_eq!(
            dir(&home, "/a/b_c").unwrap(),
            PathBuf::from("/home/u/.local/state/eddy/webhook/127.0.0.1-8080_a_b%5Fc")
        );
        // Different paths, different names: `/` becomes `_`, so `_` and `%` are escaped.
        assert_ne!(dir(&all, "/a/b").unwrap(), dir(&all, "/a_b").unwrap());
        assert_eq!(
            dir(&all, "/%41 ü").unwrap(),
            PathBuf::from("/state/webhook/127.0.0.1-8080_%2541%20%C3%BC")
        );
        let v6 = default_wal_dir_from("[::1]:9000".parse().unwrap(), "/x", |_| {
            Some(OsString::from("/s"))
        });
        assert_eq!(v6.unwrap(), PathBuf::from("/s/webhook/%3A%3A1-9000_x"));
        let error = dir(&[], "/orders").unwrap_err().to_string();
        assert!(
            error.contains("EDDY_STATE_DIR")
                && error.contains("wal=DIR")
                && error.contains("wal=off"),
            "{error}"
        );
    }

    #[test]
    fn wal_off_and_wal_dir_in_a_uri() {
        let config = |uri: &str| WebhookConfig::from_endpoint(&uri.parse().unwrap());
        assert_eq!(config("http://127.0.0.1:1/x").unwrap().wal, Wal::Default);
        assert_eq!(
            config("http://127.0.0.1:1/x?wal=off").unwrap().wal,
            Wal::Off
        );
        assert_eq!(
            config("http://127.0.0.1:1/x?wal=./off").unwrap().wal,
            Wal::Dir(PathBuf::from("./off"))
        );
        let error = config("http://127.0.0.1:1/x?wal=").unwrap_err().to_string();
        assert!(error.contains("wal=off"), "{error}");
    }

    fn records_error(kind: BodyKind, body: &[u8]) -> String {
        match records(kind, body, "here", 0) {
            Ok(_) => panic!("{:?} was accepted", String::from_utf8_lossy(body)),
            Err(refusal) => {
                assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
                refusal.reason
            }
        }
    }
}
