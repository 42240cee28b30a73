//! The HTTP sink, or trigger: POSTs records to a URL — the "when this happens, call that"
//! action of event-driven automation.
//!
//! **Requests.** Each batch the sink receives is cut into requests of at most `batch` records
//! (the sink never holds records back waiting for a fuller request). With `batch = 1` (the
//! default) each record is one request, its JSON as the body (`application/json`); with more,
//! the body is NDJSON (`application/x-ndjson`, one record per line) — what the
//! [webhook source](crate::webhook) takes, so Eddy can feed Eddy. CSV records go as
//! `text/csv` rows, raw records as `application/octet-stream` lines. A request can carry a
//! bearer token (`Authorization: Bearer <token>`) or basic authentication (`user` and
//! `password`: `Authorization: Basic ...`; one or the other), and an HMAC-SHA256 signature of
//! its body, in
//! Eddy's scheme ([`SIGNATURE_HEADER`]: `sha256=<hex>`) or Standard Webhooks'
//! ([`SignatureScheme::Standard`]: `webhook-id`, `webhook-timestamp` and `webhook-signature:
//! v1,<base64>`) — both what the webhook source checks.
//!
//! **HTTPS.** An `https://` URL is checked against the system's CAs, or with `ca_file` against
//! the CAs in that PEM file instead (they replace the system's, so only a server whose
//! certificate one of them signed is trusted); `cert_file` and `key_file` (PEM) add a client
//! certificate for mutual TLS. A server certificate that does not verify (an unknown CA, a
//! certificate for another host name, an expired one), a server that refuses the sink's
//! certificate or does not speak TLS: the sink fails the run at once with an error naming the
//! URL and the reason, since no retry can fix it.
//!
//! **Standard Webhooks ids.** Each request gets its own `webhook-id`,
//! `msg_<run>_<worker>_<n>`: a random number drawn when the sink is built, the worker's index
//! and the request's number in that worker. A retry of a request sends the same id, with a new
//! timestamp and signature, so a receiver that refuses replays takes it once. A retry refused
//! 401 because its id `was accepted before` (an Eddy webhook's words) counts as delivered: the
//! first attempt's 2xx was lost, not its records.
//!
//! **Retries.** A request is retried on a connection error, an attempt timeout, a 5xx or a 429
//! answer, after an exponential backoff with jitter (`backoff`, doubling up to `max_backoff`;
//! a `Retry-After` of whole seconds is honoured instead), at most `retries` times and never
//! past the total `timeout` of the request. Any other answer that is not 2xx (4xx, 3xx: the
//! sink does not follow redirects) is final. A request that fails for good makes each of its
//! records undeliverable: the engine dead-letters it with the URL as its location and the
//! error (the status and the start of the answer's body, or the connection error); the run
//! goes on.
//!
//! **Concurrency.** Each worker's writer keeps at most `in_flight` requests open; a write
//! waits while that many are (so a slow receiver slows the pipeline instead of filling
//! memory), and [`SinkWriter::commit`] and [`SinkWriter::finish`] wait for all. With `in_flight > 1` requests may
//! complete out of order; `in_flight = 1` keeps each worker's order.
//!
//! **Guarantee.** At-least-once for every record that is not dead-lettered: a record counts as
//! delivered when the receiver answered 2xx; a request whose answer was lost (a timeout after
//! the receiver took it) is sent again, so the receiver may see it twice.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use eddy_engine::{ConnectorError, Partition, Record, RecordError, Sink, SinkReport, SinkWriter};
use rand::Rng;
use reqwest::header::{self, HeaderMap};
use reqwest::StatusCode;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_rustls::rustls;

use crate::bridge;
use crate::endpoints::{DynSink, EndpointOptions};
use crate::format::Format;
use crate::tls::{pem_certificates, pem_key, read_pem};
use crate::uri::Endpoint;
use crate::webhook::{
    redacted, signature, signature_param, standard_key, standard_signature, unix_now,
    SignatureScheme, ACCEPTED_BEFORE, SIGNATURE_HEADER, STANDARD_ID_HEADER,
    STANDARD_SIGNATURE_HEADER, STANDARD_TIMESTAMP_HEADER,
};

/// How much of a refusing answer's body a dead letter quotes.
const EXCERPT: usize = 200;

/// The configuration of an HTTP sink.
#[derive(Clone)]
pub struct HttpSinkConfig {
    /// The URL to POST to (`http://` or `https://`).
    pub url: String,
    /// How records are encoded (default JSON).
    pub format: Format,
    /// The most records per request (default 1: each record its own request).
    pub batch: usize,
    /// How many times a failed request is retried (default 5).
    pub retries: u32,
    /// The wait before the first retry (default 200 ms); it doubles with each retry, with
    /// jitter (each wait is between half and all of the doubled value).
    pub backoff: Duration,
    /// The longest wait between attempts (default 10 s).
    pub max_backoff: Duration,
    /// The longest one attempt may take, connecting included (default 10 s).
    pub attempt_timeout: Duration,
    /// The longest a request may take over all its attempts and waits (default 60 s).
    pub timeout: Duration,
    /// The most requests each worker keeps open at once (default 4).
    pub in_flight: usize,
    /// A bearer token to send (`Authorization: Bearer <token>`); none by default. Not with
    /// `user`.
    pub token: Option<String>,
    /// A user for basic authentication (`Authorization: Basic ...`, with `password`); none by
    /// default. Not with `token`.
    pub user: Option<String>,
    /// The password of `user` (URI: `password_env=` or `password_file=`).
    pub password: Option<String>,
    /// The CA certificates (PEM) that the server's certificate must be signed by, instead of
    /// the system's CAs (URI: `ca_file=`); none by default: the system's CAs.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (chain) and its key, PEM, for mutual TLS (URI: `cert_file=` and
    /// `key_file=`); none by default.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// A secret to sign each body with (as `signature` says); none by default.
    pub secret: Option<String>,
    /// How the body is signed with the secret: [`SignatureScheme::Eddy`] (the default,
    /// [`SIGNATURE_HEADER`]) or [`SignatureScheme::Standard`] (Standard Webhooks; a secret
    /// `whsec_<base64>` is the key in base64, any other is the key's bytes).
    pub signature: SignatureScheme,
}

impl HttpSinkConfig {
    /// POSTs to `url`, with the defaults above.
    pub fn new(url: impl Into<String>) -> Self {
        HttpSinkConfig {
            url: url.into(),
            format: Format::Json,
            batch: 1,
            retries: 5,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            in_flight: 4,
            token: None,
            user: None,
            password: None,
            ca_file: None,
            client_cert: None,
            secret: None,
            signature: SignatureScheme::Eddy,
        }
    }

    /// The configuration a sink URI gives: `http://HOST:PORT/PATH?batch=100&retries=5
    /// &backoff=200ms&max_backoff=10s&attempt_timeout=10s&timeout=60s&in_flight=4
    /// &token_env=VAR&secret_env=VAR&signature=eddy&user=NAME&password_env=VAR&ca_file=PATH
    /// &cert_file=PATH&key_file=PATH` (every query parameter is an option: the URL posted to is
    /// the URI without them; `signature=` is `eddy` or `standard`; `token_*` or `user=` with
    /// `password_env=`/`password_file=`, not both).
    pub fn from_endpoint(e: &Endpoint) -> Result<Self, ConnectorError> {
        e.check_params(SINK_OPTIONS)?;
        if e.host.is_empty() {
            return Err(ConnectorError::user(format!(
                "{e}: the URI names no host: write {}://HOST:PORT/PATH",
                e.scheme
            )));
        }
        let port = e.port.map(|p| format!(":{p}")).unwrap_or_default();
        let mut config = HttpSinkConfig::new(format!("{}://{}{port}{}", e.scheme, e.host, e.path));
        if let Some(batch) = e.parse_param("batch")? {
            config.batch = batch;
        }
        if let Some(retries) = e.parse_param("retries")? {
            config.retries = retries;
        }
        if let Some(n) = e.parse_param("in_flight")? {
            config.in_flight = n;
        }
        for (name, field) in [
            ("backoff", &mut config.backoff),
            ("max_backoff", &mut config.max_backoff),
            ("attempt_timeout", &mut config.attempt_timeout),
            ("timeout", &mut config.timeout),
        ] {
            if let Some(value) = e.duration_param(name)? {
                *field = value;
            }
        }
        config.token = e.secret("token")?;
        config.user = e.param("user").map(str::to_string);
        config.password = e.secret("password")?;
        config.ca_file = e.param("ca_file").map(PathBuf::from);
        config.client_cert = e.client_cert()?;
        config.secret = e.secret("secret")?;
        if let Some(scheme) =
            signature_param(e, &[SignatureScheme::Eddy, SignatureScheme::Standard])?
        {
            config.signature = scheme;
        }
        Ok(config)
    }
}

/// The options a `http://HOST:PORT/PATH` sink URI takes.
const SINK_OPTIONS: &[&str] = &[
    "batch",
    "retries",
    "backoff",
    "max_backoff",
    "attempt_timeout",
    "timeout",
    "in_flight",
    "token_env",
    "token_file",
    "user",
    "password_env",
    "password_file",
    "ca_file",
    "cert_file",
    "key_file",
    "secret_env",
    "secret_file",
    "signature",
];

impl fmt::Debug for HttpSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSinkConfig")
            .field("url", &self.url)
            .field("format", &self.format)
            .field("batch", &self.batch)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("max_backoff", &self.max_backoff)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("timeout", &self.timeout)
            .field("in_flight", &self.in_flight)
            .field("token", &redacted(&self.token))
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("secret", &redacted(&self.secret))
            .field("signature", &self.signature)
            .finish()
    }
}

/// What every writer of one sink shares: the client and the request settings.
struct Target {
    client: reqwest::Client,
    url: reqwest::Url,
    config: HttpSinkConfig,
    content_type: &'static str,
    /// The HMAC key of a Standard Webhooks signature ([`standard_key`] of the secret).
    standard_key: Option<Vec<u8>>,
    /// Drawn when the sink is built: the run's part of each `webhook-id`.
    run: u64,
}

/// A sink that POSTs records of type `T` to a URL (see the module docs).
pub struct HttpSink<T> {
    target: Arc<Target>,
    _marker: PhantomData<fn(T)>,
}

impl<T> HttpSink<T> {
    /// A sink POSTing to `config.url`; fails on a URL that is not `http://` or `https://` and
    /// on zero `batch` or `in_flight`.
    pub fn new(config: HttpSinkConfig) -> Result<Self, ConnectorError> {
        let url = reqwest::Url::parse(&config.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                ConnectorError::user(format!(
                    "HTTP sink: '{}' is not an http:// or https:// URL with a host",
                    config.url
                ))
            })?;
        if url.password().is_some() {
            let mut shown = url.clone();
            let _ = shown.set_password(Some("***"));
            return Err(ConnectorError::user(format!(
                "HTTP sink {shown}: a password in the URL shows in process lists and logs; give \
                 the user as user= and the password with password_env=VAR or password_file=PATH"
            )));
        }
        let fail = |why: String| ConnectorError::user(format!("HTTP sink {url}: {why}"));
        if config.batch == 0 || config.in_flight == 0 {
            return Err(fail("batch and in_flight must be at least 1".into()));
        }
        match (&config.token, &config.user, &config.password) {
            (Some(_), Some(_), _) => {
                return Err(fail(
                    "both a bearer token (token_env=, token_file=) and basic authentication \
                     (user=) are given: keep one"
                        .into(),
                ))
            }
            (_, Some(_), None) => {
                return Err(fail(
                    "user= needs its password: give password_env=VAR or password_file=PATH".into(),
                ))
            }
            (_, None, Some(_)) => {
                return Err(fail(
                    "a password (password_env=, password_file=) needs its user=".into(),
                ))
            }
            _ => {}
        }
        let tls = config.ca_file.is_some() || config.client_cert.is_some();
        if tls && url.scheme() != "https" {
            return Err(fail(
                "ca_file=, cert_file= and key_file= are for HTTPS: write https://".into(),
            ));
        }
        let mut client = reqwest::Client::builder()
            .connect_timeout(config.attempt_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("eddy/", env!("CARGO_PKG_VERSION")));
        if let Some(file) = &config.ca_file {
            client = client.tls_built_in_root_certs(false);
            for certificate in pem_certificates("ca_file", file).map_err(fail)? {
                client = client.add_root_certificate(
                    reqwest::Certificate::from_der(&certificate)
                        .map_err(|e| fail(format!("ca_file={}: {e}", file.display())))?,
                );
            }
        }
        if let Some((cert, key)) = &config.client_cert {
            // Read and checked one by one, so that an error names its file.
            pem_certificates("cert_file", cert).map_err(fail)?;
            pem_key("key_file", key).map_err(fail)?;
            let mut pem = read_pem("cert_file", cert).map_err(fail)?;
            pem.push(b'\n');
            pem.extend(read_pem("key_file", key).map_err(fail)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                fail(format!(
                    "cert_file={} and key_file={}: not a client certificate and its key ({})",
                    cert.display(),
                    key.display(),
                    root_cause(&e)
                ))
            })?;
            client = client.identity(identity);
        }
        let client = client.build().map_err(|e| {
            if tls {
                fail(format!(
                    "cannot set up TLS with ca_file=, cert_file= and key_file= ({}): check that \
                     the key goes with the certificate",
                    root_cause(&e)
                ))
            } else {
                ConnectorError::external(format!("HTTP sink {url}: cannot set up the client"), e)
            }
        })?;
        if config.signature == SignatureScheme::Github
            || config.signature == SignatureScheme::Stripe
        {
            return Err(ConnectorError::user(format!(
                "HTTP sink {url}: it signs with eddy or standard, not {}",
                config.signature
            )));
        }
        let standard_key = match (&config.secret, config.signature) {
            (Some(secret), SignatureScheme::Standard) => Some(
                standard_key(secret)
                    .map_err(|why| ConnectorError::user(format!("HTTP sink {url}: {why}")))?,
            ),
            _ => None,
        };
        let content_type = match (&config.format, config.batch) {
            (Format::Json, 1) => "application/json",
            (Format::Json, _) => "application/x-ndjson",
            (Format::Csv(_), _) => "text/csv",
            (Format::Raw, _) => "application/octet-stream",
        };
        Ok(HttpSink {
            target: Arc::new(Target {
                client,
                url,
                config,
                content_type,
                standard_key,
                run: rand::random(),
            }),
            _marker: PhantomData,
        })
    }
}

impl<T: Serialize + 'static> Sink<T> for HttpSink<T> {
    fn describe(&self) -> String {
        format!("http({})", self.target.url)
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        let in_flight = self.target.config.in_flight;
        Ok(Box::new(HttpWriter {
            target: Arc::clone(&self.target),
            worker: partition.index,
            sent: 0,
            slots: Arc::new(Semaphore::new(in_flight)),
            outcome: Arc::new(Outcome::default()),
            failed_encoding: Vec::new(),
            _marker: PhantomData,
        }))
    }
}

/// What a writer's requests came to.
#[derive(Default)]
struct Outcome {
    delivered: AtomicU64,
    undeliverable: Mutex<Vec<RecordError>>,
    /// Why no request can get through (TLS with the receiver failed): the writer fails with it.
    fatal: Mutex<Option<String>>,
}

/// Why a request was not delivered.
enum Undelivered {
    /// This request's records are dead-lettered, for this reason.
    Request(String),
    /// TLS with the receiver failed (its certificate does not verify, or it refused the
    /// sink's): no request can get through, so the run fails with this error.
    Tls(String),
}

struct HttpWriter<T> {
    target: Arc<Target>,
    /// The worker's index and the requests it sent so far: the parts of a `webhook-id`.
    worker: usize,
    sent: u64,
    /// One permit per request that may be open.
    slots: Arc<Semaphore>,
    outcome: Arc<Outcome>,
    failed_encoding: Vec<RecordError>,
    _marker: PhantomData<fn(T)>,
}

/// One request's body and where each record's bytes lie in it.
struct Request {
    body: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl<T: Serialize + 'static> HttpWriter<T> {
    /// Waits until every request sent so far has completed: each record written so far was
    /// answered 2xx or handed to [`SinkWriter::undeliverable`]. The slots are given back, so
    /// the writer takes more writes.
    fn wait_for_requests(&self) -> Result<(), ConnectorError> {
        let all = u32::try_from(self.target.config.in_flight).unwrap_or(u32::MAX);
        let _all_done = bridge::runtime()
            .block_on(self.slots.acquire_many(all))
            .map_err(|e| ConnectorError::external("HTTP sink: the request slots closed", e))?;
        self.fatal()
    }

    /// The error of a request that no retry can fix (TLS failed), if one had it.
    fn fatal(&self) -> Result<(), ConnectorError> {
        let fatal = self
            .outcome
            .fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*fatal {
            Some(error) => Err(ConnectorError::user(error.clone())),
            None => Ok(()),
        }
    }

    /// Waits for a free slot, then sends `request` on the connectors' runtime.
    fn send(&mut self, request: Request) -> Result<(), ConnectorError> {
        let permit = bridge::runtime()
            .block_on(Arc::clone(&self.slots).acquire_owned())
            .map_err(|e| ConnectorError::external("HTTP sink: the request slots closed", e))?;
        let target = Arc::clone(&self.target);
        let outcome = Arc::clone(&self.outcome);
        self.sent += 1;
        let id = format!("msg_{:016x}_{}_{}", target.run, self.worker, self.sent);
        bridge::runtime().spawn(async move {
            let Request { body, spans } = request;
            let body = Bytes::from(body);
            match target.deliver(&id, body.clone()).await {
                Ok(()) => {
                    outcome
                        .delivered
                        .fetch_add(spans.len() as u64, Ordering::Relaxed);
                }
                Err(Undelivered::Tls(error)) => {
                    let mut fatal = outcome.fatal.lock().unwrap_or_else(PoisonError::into_inner);
                    fatal.get_or_insert(error);
                }
                Err(Undelivered::Request(error)) => {
                    let url = target.url.as_str();
                    let failed = spans.iter().map(|&(start, end)| {
                        RecordError::new(url, format!("POST {url}: {error}"))
                            .with_raw(body.slice(start..end).to_vec())
                    });
                    outcome
                        .undeliverable
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend(failed);
                }
            }
            drop(permit);
        });
        Ok(())
    }
}

impl<T: Serialize + 'static> SinkWriter<T> for HttpWriter<T> {
    fn write(&mut self, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        self.fatal()?;
        let per_request = self.target.config.batch;
        let mut request = Request {
            body: Vec::new(),
            spans: Vec::new(),
        };
        for (_, record) in batch.drain(..) {
            let start = request.body.len();
            if let Err(why) = self.target.config.format.encode(&record, &mut request.body) {
                request.body.truncate(start);
                let raw = serde_json::to_vec(&record).unwrap_or_default();
                self.failed_encoding.push(
                    RecordError::new(
                        self.target.url.as_str(),
                        format!(
                            "cannot encode the record as {}: {why}",
                            self.target.config.format
                        ),
                    )
                    .with_raw(raw),
                );
                continue;
            }
            request.spans.push((start, request.body.len()));
            if per_request > 1 {
                request.body.push(b'\n');
            }
            if request.spans.len() == per_request {
                let full = std::mem::replace(
                    &mut request,
                    Request {
                        body: Vec::new(),
                        spans: Vec::new(),
                    },
                );
                self.send(full)?;
            }
        }
        if !request.spans.is_empty() {
            self.send(request)?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), ConnectorError> {
        self.wait_for_requests()
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        self.wait_for_requests()?;
        Ok(SinkReport {
            rows: self.outcome.delivered.load(Ordering::Relaxed),
            files: Vec::new(),
        })
    }

    fn undeliverable(&mut self) -> Vec<RecordError> {
        let mut all = std::mem::take(&mut self.failed_encoding);
        all.append(
            &mut self
                .outcome
                .undeliverable
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        all
    }
}

impl Target {
    /// Sends one request, retrying as the module docs say; the error says why it failed for
    /// good.
    /// `id` is the request's `webhook-id` (Standard Webhooks), the same for every attempt.
    async fn deliver(&self, id: &str, body: Bytes) -> Result<(), Undelivered> {
        let config = &self.config;
        let deadline = Instant::now() + config.timeout;
        let signed = match config.signature {
            SignatureScheme::Standard => None,
            _ => config
                .secret
                .as_ref()
                .map(|secret| signature(secret.as_bytes(), &body)),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let mut request = self
                .client
                .post(self.url.clone())
                .header(header::CONTENT_TYPE, self.content_type)
                .timeout(config.attempt_timeout.min(left))
                .body(body.clone());
            if let Some(token) = &config.token {
                request = request.bearer_auth(token);
            }
            if let Some(user) = &config.user {
                request = request.basic_auth(user, config.password.as_ref());
            }
            if let Some(signed) = &signed {
                request = request.header(SIGNATURE_HEADER, signed);
            }
            if let Some(key) = &self.standard_key {
                // Each attempt is signed afresh, with its own time.
                let now = unix_now();
                request = request
                    .header(STANDARD_ID_HEADER, id)
                    .header(STANDARD_TIMESTAMP_HEADER, now)
                    .header(
                        STANDARD_SIGNATURE_HEADER,
                        standard_signature(key, id, now, &body),
                    );
            }
            let (failure, asked) = match request.send().await {
                Ok(answer) if answer.status().is_success() => return Ok(()),
                Ok(answer) => {
                    let status = answer.status();
                    let asked = retry_after(answer.headers());
                    let text = answer.text().await;
                    // A retry refused as a replay: an earlier attempt, whose answer was lost,
                    // was accepted.
                    let replay = status == StatusCode::UNAUTHORIZED
                        && attempt > 1
                        && text.as_ref().is_ok_and(|t| t.contains(ACCEPTED_BEFORE));
                    if replay && self.standard_key.is_some() {
                        return Ok(());
                    }
                    let failure = format!("answered {status}{}", excerpt(text));
                    if !(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) {
                        return Err(Undelivered::Request(format!(
                            "{failure} (not retried: the receiver refused it)"
                        )));
                    }
                    (failure, asked)
                }
                Err(error) => match tls_failure(&error) {
                    Some(tls) => return Err(Undelivered::Tls(self.tls_refused(tls))),
                    None => (self.describe(&error), None),
                },
            };
            if attempt > config.retries {
                return Err(Undelivered::Request(format!(
                    "{failure}; gave up after {attempt} attempts"
                )));
            }
            let pause = asked.unwrap_or_else(|| backoff(config, attempt));
            if Instant::now() + pause >= deadline {
                return Err(Undelivered::Request(format!(
                    "{failure}; gave up after {attempt} attempts: the next would pass the \
                     request's timeout of {:?}",
                    config.timeout
                )));
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// `HOST:PORT` of the URL.
    fn address(&self) -> String {
        match (self.url.host_str(), self.url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            _ => self.url.to_string(),
        }
    }

    /// The error of a TLS handshake with the receiver that failed, saying what to do.
    fn tls_refused(&self, tls: &rustls::Error) -> String {
        let host = self.url.host_str().unwrap_or_default();
        format!(
            "HTTP sink {}: TLS with {} failed ({tls}); not retried, since retrying cannot fix \
             it: if the server's certificate is signed by your own CA, give that CA with \
             ca_file=; the certificate must name the URL's host ({host}); a server that asks \
             for a client certificate needs cert_file= and key_file=; a server without TLS is \
             reached with http://",
            self.url,
            self.address()
        )
    }

    /// A connection or timeout error, with its root cause.
    fn describe(&self, error: &reqwest::Error) -> String {
        let cause = root_cause(error);
        let address = self.address();
        if error.is_timeout() {
            format!(
                "no answer from {address} within {:?} (option attempt_timeout=)",
                self.config.attempt_timeout
            )
        } else if error.is_connect() {
            format!("cannot connect to {address}: {cause}; is the receiver running?")
        } else {
            format!("the request to {address} failed: {cause}")
        }
    }
}

/// The last error of `error`'s chain of causes.
fn root_cause<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause
}

/// The TLS error in `error`'s chain of causes, if TLS failed: a certificate that does not
/// verify, a receiver that refused the sink's certificate, a receiver that does not speak TLS.
fn tls_failure(error: &reqwest::Error) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = next {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match cause.downcast_ref::<std::io::Error>() {
            // An I/O error's `source` skips the error it wraps.
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => cause.source(),
        };
    }
    None
}

/// The wait before retry `attempt` (1 for the first retry): `backoff` doubled per retry, at
/// most `max_backoff`, with jitter (between half and all of it).
fn backoff(config: &HttpSinkConfig, attempt: u32) -> Duration {
    let doubled = config
        .backoff
        .saturating_mul(1u32 << (attempt - 1).min(20))
        .min(config.max_backoff);
    doubled.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

/// A `Retry-After` of whole seconds (the HTTP-date form falls back to the backoff).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The start of an answer's body, for an error message.
fn excerpt(body: Result<String, reqwest::Error>) -> String {
    let text = body.unwrap_or_default();
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let cut: String = text.chars().take(EXCERPT).collect();
    let more = if cut.len() < text.len() { "..." } else { "" };
    format!(": {cut}{more}")
}

/// The `http://HOST:PORT/PATH` sink of `eddy copy`: the URL to POST to.
pub(crate) fn endpoint_sink(e: &Endpoint, o: &EndpointOptions) -> Result<DynSink, ConnectorError> {
    let mut config = HttpSinkConfig::from_endpoint(e)?;
    config.format = o.format.clone();
    Ok(Box::new(HttpSink::new(config)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        let config = HttpSinkConfig::new("http://127.0.0.1:1/");
        for attempt in 1..=8 {
            let full = Duration::from_millis(200 << (attempt - 1)).min(config.max_backoff);
            let wait = backoff(&config, attempt);
            assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
        }
        assert!(backoff(&config, 40) <= config.max_backoff);
    }

    #[test]
    fn uris_give_the_url_without_options_and_bad_urls_are_refused() {
        let e: Endpoint = "http://127.0.0.1:9/hooks/a?batch=50&retries=2&timeout=5s"
            .parse()
            .unwrap();
        let config = HttpSinkConfig::from_endpoint(&e).unwrap();
        assert_eq!(config.url, "http://127.0.0.1:9/hooks/a");
        assert_eq!((config.batch, config.retries), (50, 2));
        assert_eq!(config.timeout, Duration::from_secs(5));
        let typo: Endpoint = "http://127.0.0.1:9/?retry=2".parse().unwrap();
        assert!(HttpSinkConfig::from_endpoint(&typo).is_err());
        assert!(HttpSink::<u64>::new(HttpSinkConfig::new("ftp://x/")).is_err());
        let debug = format!(
            "{:?}",
            HttpSinkConfig {
                secret: Some("hush".into()),
                user: Some("eddy".into()),
                password: Some("s3same".into()),
                ..HttpSinkConfig::new("http://x/")
            }
        );
        assert!(
            !debug.contains("hush") && !debug.contains("s3same"),
            "{debug}"
        );
    }
}
