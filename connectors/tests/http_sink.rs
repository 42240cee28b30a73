//! The HTTP sink over real HTTP on loopback: against a receiver in the test (an axum server on
//! a free port that fails the way the test says), against a port nothing listens on, and into
//! Eddy's own webhook source.

#![cfg(feature = "http")]

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use eddy_connectors::bridge::StopRule;
use eddy_connectors::http_sink::{HttpSink, HttpSinkConfig};
use eddy_connectors::webhook::{WebhookConfig, WebhookSource};
use eddy_connectors::{EventTimeOf, ReplaySource};
use eddy_engine::testing::CollectSink;
use eddy_engine::{
    DeadLetter, Partition, Pipeline, Record, RunSummary, Runtime, Sink, WatermarkConfig,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Alert {
    id: u64,
    rule: String,
}

fn alerts(n: u64) -> Vec<Record<Alert>> {
    (0..n)
        .map(|id| {
            let rule = format!("total over {}", id % 5);
            (1_000 + id, Alert { id, rule })
        })
        .collect()
}

/// Runs `records` through an HTTP sink configured by `config`, with dead letters collected.
fn post_all(
    records: Vec<Record<Alert>>,
    workers: usize,
    config: HttpSinkConfig,
) -> (RunSummary, Vec<DeadLetter>) {
    let dead = CollectSink::<DeadLetter>::new();
    let pipeline = Pipeline::new("http-sink");
    pipeline.dead_letters(dead.clone());
    pipeline
        .source(
            "alerts",
            ReplaySource::round_robin(records, workers),
            WatermarkConfig::default(),
        )
        .sink("notify", HttpSink::new(config).unwrap());
    let summary = Runtime::new(workers).run(&pipeline).unwrap();
    (summary, dead.values())
}

/// The records the sink reports delivered (answered 2xx).
fn delivered(summary: &RunSummary) -> u64 {
    summary
        .sinks
        .iter()
        .filter(|(stage, _)| stage == "notify")
        .map(|(_, report)| report.rows)
        .sum()
}

/// A config with short waits, so that retries do not slow the tests down.
fn quick(url: &str) -> HttpSinkConfig {
    HttpSinkConfig {
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        ..HttpSinkConfig::new(url)
    }
}

/// How a receiver answers the requests it gets.
#[derive(Clone, Copy)]
enum Behaviour {
    /// The first request ever: 429 with `Retry-After: 1`; the first attempt of every other
    /// request: 503; every second attempt: 200.
    FlakyThenFine,
    /// Always this status, with a body saying why.
    Always(u16),
    /// 200 to requests whose `Authorization` header is this, else 401.
    Authorized(&'static str),
}

/// What a receiver saw.
#[derive(Default)]
struct Seen {
    /// Every attempt: when it came and its body.
    attempts: Vec<(Instant, Bytes)>,
    /// The ids of the records in the requests it answered 2xx.
    accepted: Vec<u64>,
    /// The headers of the last attempt.
    headers: HeaderMap,
}

/// An HTTP server in the test, on a free loopback port.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Seen>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start(behaviour: Behaviour) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/notify", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = Arc::clone(&seen);
        let app = axum::Router::new().route(
            "/notify",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = Arc::clone(&state);
                async move { receive(&state, behaviour, headers, body) }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            seen,
            _runtime: runtime,
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }
}

fn receive(
    seen: &Mutex<Seen>,
    behaviour: Behaviour,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let mut seen = seen.lock().unwrap();
    let earlier = seen.attempts.iter().filter(|(_, b)| *b == body).count();
    let first_ever = seen.attempts.is_empty();
    seen.attempts.push((Instant::now(), body.clone()));
    seen.headers = headers;
    let status = match behaviour {
        Behaviour::FlakyThenFine if first_ever => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                "slow down",
            )
                .into_response()
        }
        Behaviour::FlakyThenFine if earlier == 0 => 503,
        Behaviour::FlakyThenFine => 200,
        Behaviour::Always(status) => status,
        Behaviour::Authorized(expected) => match seen.headers.get("authorization") {
            Some(given) if given == expected => 200,
            _ => 401,
        },
    };
    if status == 200 {
        let text = std::str::from_utf8(&body).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let alert: Alert = serde_json::from_str(line).unwrap();
            seen.accepted.push(alert.id);
        }
    }
    let status = StatusCode::from_u16(status).unwrap();
    (status, format!("boom: the database is down ({status})")).into_response()
}

#[test]
fn failed_attempts_are_retried_and_every_record_is_accepted_exactly_once() {
    for workers in [1, 2] {
        let n = 2000;
        let receiver = Receiver::start(Behaviour::FlakyThenFine);
        let config = HttpSinkConfig {
            batch: 50,
            ..quick(&receiver.url)
        };
        let (summary, dead) = post_all(alerts(n), workers, config);
        assert!(dead.is_empty(), "{:?}", dead.first());
        assert_eq!(delivered(&summary), n);
        let seen = receiver.seen();
        let mut accepted = seen.accepted.clone();
        accepted.sort_unstable();
        assert_eq!(
            accepted,
            (0..n).collect::<Vec<_>>(),
            "{workers} workers: each record accepted once"
        );
        let requests: HashSet<&Bytes> = seen.attempts.iter().map(|(_, body)| body).collect();
        assert!(requests.len() as u64 >= n / 50);
        assert_eq!(
            seen.attempts.len(),
            2 * requests.len(),
            "each request failed once, then got through"
        );
        assert_eq!(
            seen.headers["content-type"], "application/x-ndjson",
            "batches are NDJSON"
        );
        // The first request was asked to wait a second (Retry-After: 1) before its retry.
        let (first_at, first_body) = &seen.attempts[0];
        let (retry_at, _) = seen.attempts[1..]
            .iter()
            .find(|(_, body)| body == first_body)
            .unwrap();
        let waited = retry_at.duration_since(*first_at);
        assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
    }
}

/// `commit` waits for every request in flight, retries included: what was written has been
/// accepted before `finish`, and the writer goes on writing.
#[test]
fn a_commit_makes_everything_written_so_far_accepted_before_finish() {
    let n = 500;
    // The first request waits a second (429, Retry-After: 1), every other one is retried once.
    let receiver = Receiver::start(Behaviour::FlakyThenFine);
    let sink = HttpSink::<Alert>::new(HttpSinkConfig {
        batch: 50,
        in_flight: 4,
        ..quick(&receiver.url)
    })
    .unwrap();
    let mut writer = sink.open(Partition { index: 0, count: 1 }).unwrap();
    let all = alerts(2 * n);
    for round in 1..=2 {
        let mut batch = all[((round - 1) * n) as usize..(round * n) as usize].to_vec();
        writer.write(&mut batch).unwrap();
        writer.commit().unwrap();
        assert!(writer.undeliverable().is_empty(), "round {round}");
        let mut accepted = receiver.seen().accepted.clone();
        accepted.sort_unstable();
        assert_eq!(
            accepted,
            (0..round * n).collect::<Vec<_>>(),
            "round {round}: every record accepted once when commit returns"
        );
    }
    assert_eq!(writer.finish().unwrap().rows, 2 * n);
}

#[test]
fn records_a_receiver_refuses_are_dead_lettered_with_the_url_and_status() {
    let receiver = Receiver::start(Behaviour::Always(500));
    let config = HttpSinkConfig {
        retries: 2,
        batch: 10,
        ..quick(&receiver.url)
    };
    let (summary, dead) = post_all(alerts(30), 1, config);
    assert_eq!(delivered(&summary), 0);
    assert_eq!(summary.dead_lettered(), 30);
    assert_eq!(
        receiver.seen().attempts.len(),
        9,
        "3 requests, 3 attempts each"
    );
    let mut ids = Vec::new();
    for letter in &dead {
        assert_eq!(
            (letter.kind.as_str(), letter.stage.as_str()),
            ("delivery", "notify")
        );
        assert_eq!(letter.location, receiver.url);
        assert!(
            letter
                .error
                .contains("answered 500 Internal Server Error: boom: the database is down")
                && letter.error.contains("gave up after 3 attempts"),
            "{}",
            letter.error
        );
        ids.push(serde_json::from_str::<Alert>(&letter.raw).unwrap().id);
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..30).collect::<Vec<_>>());

    // A 4xx answer is final: one attempt per record (batch 1: one JSON record per request).
    let refusing = Receiver::start(Behaviour::Always(422));
    let (_, dead) = post_all(alerts(5), 1, quick(&refusing.url));
    assert_eq!(refusing.seen().attempts.len(), 5, "not retried");
    assert_eq!(refusing.seen().headers["content-type"], "application/json");
    assert_eq!(dead.len(), 5);
    assert!(
        dead[0].error.contains("answered 422") && dead[0].error.contains("not retried"),
        "{}",
        dead[0].error
    );
}

#[test]
fn an_unreachable_receiver_is_dead_lettered_after_its_retries_without_hanging() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{closed}/notify");
    let config = HttpSinkConfig {
        retries: 3,
        batch: 5,
        ..quick(&url)
    };
    let started = Instant::now();
    let (summary, dead) = post_all(alerts(20), 2, config);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(delivered(&summary), 0);
    assert_eq!(dead.len(), 20);
    for letter in &dead {
        assert_eq!(letter.location, url);
        assert!(
            letter
                .error
                .contains(&format!("cannot connect to {closed}"))
                && letter.error.contains("is the receiver running?")
                && letter.error.contains("gave up after 4 attempts"),
            "{}",
            letter.error
        );
    }
}

#[test]
fn basic_authentication_reaches_a_receiver_that_checks_it() {
    // "eddy:open sesame" in base64.
    let receiver = Receiver::start(Behaviour::Authorized("Basic ZWRkeTpvcGVuIHNlc2FtZQ=="));
    let dir = tempfile::tempdir().unwrap();
    let config = |password: &str| {
        let file = dir.path().join("password");
        std::fs::write(&file, format!("{password}\n")).unwrap();
        let uri = format!(
            "{}?user=eddy&password_file={}&batch=5",
            receiver.url,
            file.display()
        );
        HttpSinkConfig {
            backoff: Duration::from_millis(10),
            ..HttpSinkConfig::from_endpoint(&uri.parse().unwrap()).unwrap()
        }
    };
    let (summary, dead) = post_all(alerts(20), 2, config("open sesame"));
    assert!(dead.is_empty(), "{:?}", dead.first());
    assert_eq!(delivered(&summary), 20);
    let (summary, dead) = post_all(alerts(5), 1, config("guess"));
    assert_eq!((delivered(&summary), dead.len()), (0, 5));
    assert!(
        dead[0].error.contains("answered 401") && !dead[0].error.contains("guess"),
        "{}",
        dead[0].error
    );
    let mut accepted = receiver.seen().accepted.clone();
    accepted.sort_unstable();
    assert_eq!(accepted, (0..20).collect::<Vec<_>>());
}

#[test]
fn eddy_posts_signed_batches_to_an_eddy_webhook() {
    let n = 5000;
    let (secret, token) = ("shared-secret", "shared-token");
    // The receiver keeps its write-ahead log in the test's directory, not the default one.
    let log = tempfile::tempdir().unwrap();
    let webhook = WebhookSource::<Alert>::bind(
        WebhookConfig {
            secret: Some(secret.into()),
            token: Some(token.into()),
            stop: StopRule::never()
                .limit(n)
                .idle_exit(Duration::from_secs(20)),
            ..WebhookConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), "/alerts")
        }
        .wal(log.path()),
        EventTimeOf::Arrival,
    )
    .unwrap();
    let url = webhook.url().to_string();
    let received = CollectSink::new();
    let downstream = Pipeline::new("downstream");
    downstream
        .source("alerts-in", webhook, WatermarkConfig::default())
        .sink("received", received.clone());
    let run = Runtime::new(2).start(&downstream).unwrap();

    // A sender with the wrong secret is refused (401, not retried); nothing of it arrives: the
    // downstream run stops after exactly n records, so any it took would stand in for a good one.
    let forged = HttpSinkConfig {
        secret: Some("not-the-secret".into()),
        token: Some(token.into()),
        batch: 10,
        ..quick(&url)
    };
    let forged_records: Vec<Record<Alert>> = alerts(20)
        .into_iter()
        .map(|(t, a)| (t, Alert { id: a.id + n, ..a }))
        .collect();
    let (_, dead) = post_all(forged_records, 1, forged);
    assert_eq!(dead.len(), 20);
    assert!(
        dead[0].error.contains("answered 401 Unauthorized")
            && dead[0]
                .error
                .contains("the signature does not match the body"),
        "{}",
        dead[0].error
    );

    let config = HttpSinkConfig {
        secret: Some(secret.into()),
        token: Some(token.into()),
        batch: 100,
        ..quick(&url)
    };
    let (summary, dead) = post_all(alerts(n), 2, config);
    assert!(dead.is_empty(), "{:?}", dead.first());
    assert_eq!(delivered(&summary), n);
    run.join().unwrap();
    let expected: Vec<Alert> = alerts(n).into_iter().map(|(_, a)| a).collect();
    assert_eq!(received.values(), expected);
}
