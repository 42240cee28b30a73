//! The webhook source's signature schemes (Eddy's, GitHub's, Stripe's, Standard Webhooks')
//! over real HTTP and HTTPS on loopback, each test once over each: requests signed in the test
//! with the `hmac` and `sha2` crates, sent by Python's `http.client` (over its `ssl` module,
//! trusting the test CA, for HTTPS), are accepted and their records ingested; wrongly signed,
//! unsigned, stale and replayed ones are refused 401, saying why. And an Eddy HTTP sink signing
//! with Standard Webhooks (and trusting the test CA with `ca_file`) feeds an Eddy webhook
//! checking them, every record once. The certificates are those of `scripts/brokers.sh up`.

#![cfg(feature = "http")]

mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use eddy_connectors::bridge::StopRule;
use eddy_connectors::http_sink::{HttpSink, HttpSinkConfig};
use eddy_connectors::webhook::{SignatureScheme, Wal, WebhookConfig, WebhookSource};
use eddy_connectors::{Endpoint, EventTimeOf, ReplaySource};
use eddy_engine::testing::CollectSink;
use eddy_engine::{DeadLetter, Pipeline, Record, Runtime, WatermarkConfig};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "s3cret-for-signature-tests";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Event {
    id: u64,
}

fn body(id: u64) -> Vec<u8> {
    serde_json::to_vec(&Event { id }).unwrap()
}

fn hmac_sha256(key: &[u8], content: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(content);
    mac.finalize().into_bytes().to_vec()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A webhook on a free loopback port with `secret`, checking `scheme`, without a log, stopping
/// after `n` records (or 20 s without any, so a broken test ends); over HTTPS with the test
/// certificate when `https`.
fn webhook(scheme: SignatureScheme, secret: &str, n: u64, https: bool) -> WebhookSource<Event> {
    WebhookSource::bind(
        WebhookConfig {
            secret: Some(secret.into()),
            signature: scheme,
            stop: StopRule::never()
                .limit(n)
                .idle_exit(Duration::from_secs(20)),
            wal: Wal::Off,
            tls: https.then(tls::server),
            ..WebhookConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), "/in")
        },
        EventTimeOf::Arrival,
    )
    .unwrap()
}

/// Posts JSON `body` with `headers` to `url` (trusting the test CA for `https://`): the status
/// and the answer's error (or "").
fn post(url: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, String) {
    let client = if url.starts_with("https://") {
        tls::Client::trusting_the_test_ca()
    } else {
        tls::Client::default()
    };
    let mut headers = headers.to_vec();
    headers.push(("content-type", "application/json".into()));
    let (status, text) = client
        .post(url, &headers, &body)
        .expect("the webhook answers");
    let json: Value = serde_json::from_str(&text).unwrap();
    let error = json["error"].as_str().unwrap_or_default().to_string();
    (status, error)
}

/// Runs a webhook checking `scheme` with `secret` and stopping after `n` records, calls
/// `requests` with its URL, and returns the ids that reached the sink, sorted; once over HTTP,
/// then over HTTPS, which must give the same ids. A refused request ingested by mistake would
/// stand in for an accepted one.
fn run_webhook(scheme: SignatureScheme, secret: &str, n: u64, requests: impl Fn(&str)) -> Vec<u64> {
    let over = |https: bool| {
        let source = webhook(scheme, secret, n, https);
        let url = source.url().to_string();
        let out = CollectSink::new();
        let pipeline = Pipeline::new("signatures");
        pipeline
            .source("in", source, WatermarkConfig::default())
            .sink("out", out.clone());
        let run = Runtime::new(1).start(&pipeline).unwrap();
        requests(&url);
        run.join().unwrap();
        let mut ids: Vec<u64> = out.values().into_iter().map(|e: Event| e.id).collect();
        ids.sort_unstable();
        ids
    };
    let http = over(false);
    assert_eq!(over(true), http, "{scheme} over HTTPS, and over HTTP");
    http
}

fn assert_refused(answer: (u16, String), why: &str) {
    assert_eq!(answer.0, 401, "{answer:?}");
    assert!(answer.1.contains(why), "{answer:?} should say {why:?}");
    assert!(!answer.1.contains(SECRET), "{answer:?} shows the secret");
}

#[test]
fn eddy_and_github_signatures_are_hex_hmacs_of_the_body() {
    for (scheme, header) in [
        (SignatureScheme::Eddy, "x-eddy-signature"),
        (SignatureScheme::Github, "x-hub-signature-256"),
    ] {
        let ids = run_webhook(scheme, SECRET, 1, |url| {
            let sign =
                |key: &[u8], b: &[u8]| format!("sha256={}", hex::encode(hmac_sha256(key, b)));
            assert_refused(
                post(url, &[], body(1)),
                &format!("not signed: send {header}"),
            );
            let wrong = sign(b"guess", &body(2));
            assert_refused(
                post(url, &[(header, wrong)], body(2)),
                "the signature does not match the body",
            );
            assert_refused(
                post(url, &[(header, "sha1=00".into())], body(3)),
                "is not sha256=<hex digest>",
            );
            // The other scheme's header does not count.
            let other = if header == "x-hub-signature-256" {
                "x-eddy-signature"
            } else {
                "x-hub-signature-256"
            };
            let good = sign(SECRET.as_bytes(), &body(4));
            assert_refused(post(url, &[(other, good.clone())], body(4)), "not signed");
            assert_eq!(post(url, &[(header, good)], body(4)), (200, String::new()));
        });
        assert_eq!(ids, vec![4], "{scheme}");
    }
}

#[test]
fn stripe_signatures_cover_the_timestamp_and_stale_ones_are_refused() {
    let ids = run_webhook(SignatureScheme::Stripe, SECRET, 2, |url| {
        let sign = |key: &[u8], t: u64, b: &[u8]| {
            let mut content = format!("{t}.").into_bytes();
            content.extend_from_slice(b);
            hex::encode(hmac_sha256(key, &content))
        };
        let header = "stripe-signature";
        let t = now();
        // Refused: unsigned, malformed, wrongly signed, signed for another timestamp, stale,
        // from the future.
        assert_refused(post(url, &[], body(3)), "not signed: send stripe-signature");
        for malformed in ["v1=00", &format!("t={t}"), "t,v1", &format!("t={t},v1=zz")] {
            assert_refused(
                post(url, &[(header, malformed.to_string())], body(3)),
                "the stripe-signature header is not t=<unix seconds>,v1=",
            );
        }
        let wrong = format!("t={t},v1={}", sign(b"guess", t, &body(3)));
        assert_refused(
            post(url, &[(header, wrong)], body(3)),
            "the signature does not match the body",
        );
        let moved = format!("t={},v1={}", t + 1, sign(SECRET.as_bytes(), t, &body(3)));
        assert_refused(
            post(url, &[(header, moved)], body(3)),
            "the signature does not match the body",
        );
        for stale in [t - 301 - 5, t + 301 + 5] {
            let old = format!("t={stale},v1={}", sign(SECRET.as_bytes(), stale, &body(3)));
            assert_refused(
                post(url, &[(header, old)], body(3)),
                "more than the tolerance of 300 s",
            );
        }
        // Last (the webhook stops after these two records), accepted: the signature of the
        // timestamp and the body; the second of two v1 (a rolled secret) matches; a v0 is
        // ignored.
        let good = format!("t={t},v1={}", sign(SECRET.as_bytes(), t, &body(1)));
        assert_eq!(post(url, &[(header, good)], body(1)), (200, String::new()));
        let two = format!(
            "t={t},v0=abcd,v1={},v1={}",
            sign(b"old-secret", t, &body(2)),
            sign(SECRET.as_bytes(), t, &body(2))
        );
        assert_eq!(post(url, &[(header, two)], body(2)), (200, String::new()));
    });
    assert_eq!(ids, vec![1, 2]);
}

/// Standard Webhooks headers for message `id` at `t` with `body`, signed with `key`.
fn standard(key: &[u8], id: &str, t: u64, body: &[u8]) -> Vec<(&'static str, String)> {
    let mut content = format!("{id}.{t}.").into_bytes();
    content.extend_from_slice(body);
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", t.to_string()),
        (
            "webhook-signature",
            format!("v1,{}", b64(&hmac_sha256(key, &content))),
        ),
    ]
}

#[test]
fn standard_webhooks_signatures_refuse_stale_timestamps_and_replayed_ids() {
    // A whsec_ secret: the key is what follows, in base64.
    let key = b"a key of 24 random bytes";
    let secret = format!("whsec_{}", b64(key));
    let ids = run_webhook(SignatureScheme::Standard, &secret, 3, |url| {
        let t = now();
        let good = standard(key, "msg_1", t, &body(1));
        assert_eq!(post(url, &good, body(1)), (200, String::new()));
        // The same request again: a replay.
        assert_refused(post(url, &good, body(1)), "a replayed request");
        // The same id with another body, signed: still a replay.
        assert_refused(
            post(url, &standard(key, "msg_1", t, &body(9)), body(9)),
            "a replayed request",
        );
        // Refused: a missing header, a wrong key, the secret taken as raw bytes, a stale or
        // future timestamp, a malformed signature.
        for missing in 0..3 {
            let mut headers = standard(key, "msg_4", t, &body(4));
            let (name, _) = headers.remove(missing);
            assert_refused(post(url, &headers, body(4)), &format!("{name} is missing"));
        }
        for wrong_key in [b"guess".as_slice(), secret.as_bytes()] {
            assert_refused(
                post(url, &standard(wrong_key, "msg_4", t, &body(4)), body(4)),
                "the signature does not match the body",
            );
        }
        for stale in [t - 306, t + 306] {
            assert_refused(
                post(url, &standard(key, "msg_4", stale, &body(4)), body(4)),
                "more than the tolerance of 300 s",
            );
        }
        let mut malformed = standard(key, "msg_4", t, &body(4));
        malformed[2].1 = "v1,not-base64!".into();
        assert_refused(
            post(url, &malformed, body(4)),
            "is not a space-separated list of v1,<base64",
        );
        malformed[2].1 = "v2,AAAA".into();
        assert_refused(post(url, &malformed, body(4)), "holds no v1,");
        // Last (the webhook stops after three records):
        // Several signatures (a rolled key), one matching; other versions ignored.
        let mut two = standard(key, "msg_2", t, &body(2));
        let wrong = standard(b"old key", "msg_2", t, &body(2));
        two[2].1 = format!("v1a,AAAA {} {}", wrong[2].1, two[2].1);
        assert_eq!(post(url, &two, body(2)), (200, String::new()));
        // A request refused after its signature (a malformed body) does not use its id up.
        let bad = b"{not json".to_vec();
        let answer = post(url, &standard(key, "msg_3", t, &bad), bad);
        assert_eq!(answer.0, 400, "{answer:?}");
        let retried = standard(key, "msg_3", t, &body(3));
        assert_eq!(post(url, &retried, body(3)), (200, String::new()));
    });
    assert_eq!(ids, vec![1, 2, 3]);
}

#[test]
fn a_secret_without_the_whsec_prefix_is_the_key_itself() {
    let ids = run_webhook(SignatureScheme::Standard, SECRET, 1, |url| {
        let headers = standard(SECRET.as_bytes(), "plain", now(), &body(7));
        assert_eq!(post(url, &headers, body(7)), (200, String::new()));
    });
    assert_eq!(ids, vec![7]);
}

#[test]
fn signature_options_are_parsed_and_range_checked() {
    let config = |uri: &str| {
        WebhookConfig::from_endpoint(&uri.parse::<Endpoint>().unwrap()).map_err(|e| e.to_string())
    };
    let c = config("http://127.0.0.1:0/in?signature=stripe&tolerance=90s").unwrap();
    assert_eq!(
        (c.signature, c.tolerance),
        (SignatureScheme::Stripe, Duration::from_secs(90))
    );
    let c = config("http://127.0.0.1:0/in").unwrap();
    assert_eq!(
        (c.signature, c.tolerance),
        (SignatureScheme::Eddy, Duration::from_secs(300))
    );
    for (uri, says) in [
        (
            "http://127.0.0.1:0/in?signature=svix",
            "signature=svix: must be one of eddy, github, stripe, standard",
        ),
        (
            "http://127.0.0.1:0/in?tolerance=0s",
            "tolerance=0s: must be more than 0",
        ),
        (
            "http://127.0.0.1:0/in?tolerance=2d",
            "tolerance=2d: must be more than 0",
        ),
    ] {
        let error = config(uri).unwrap_err();
        assert!(error.contains(says), "{uri}: {error}");
    }
    let sink = |uri: &str| {
        HttpSinkConfig::from_endpoint(&uri.parse::<Endpoint>().unwrap()).map_err(|e| e.to_string())
    };
    assert_eq!(
        sink("http://127.0.0.1:9/in?signature=standard")
            .unwrap()
            .signature,
        SignatureScheme::Standard
    );
    let error = sink("http://127.0.0.1:9/in?signature=github").unwrap_err();
    assert!(error.contains("must be one of eddy, standard"), "{error}");
    // A whsec_ secret that is not base64 is refused without showing it.
    let error = WebhookSource::<Event>::bind(
        WebhookConfig {
            secret: Some("whsec_!!hidden!!".into()),
            signature: SignatureScheme::Standard,
            wal: Wal::Off,
            ..WebhookConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), "/in")
        },
        EventTimeOf::Arrival,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        error.contains("not base64") && !error.contains("hidden"),
        "{error}"
    );
}

#[test]
fn an_eddy_http_sink_signing_standard_webhooks_feeds_an_eddy_webhook_once() {
    for https in [false, true] {
        an_eddy_http_sink_feeds_an_eddy_webhook(https);
    }
}

/// An Eddy HTTP sink signing with Standard Webhooks feeds an Eddy webhook every record once,
/// over HTTPS (the sink trusting the test CA) when `https`.
fn an_eddy_http_sink_feeds_an_eddy_webhook(https: bool) {
    let n = 600u64;
    let secret = format!("whsec_{}", b64(b"shared key between the two Eddys"));
    let source = webhook(SignatureScheme::Standard, &secret, n, https);
    let url = source.url().to_string();
    let received = CollectSink::new();
    let downstream = Pipeline::new("downstream");
    downstream
        .source("in", source, WatermarkConfig::default())
        .sink("received", received.clone());
    let run = Runtime::new(1).start(&downstream).unwrap();

    let send = |config: HttpSinkConfig, records: Vec<Record<Event>>, workers: usize| {
        let dead = CollectSink::<DeadLetter>::new();
        let upstream = Pipeline::new("upstream");
        upstream.dead_letters(dead.clone());
        upstream
            .source(
                "events",
                ReplaySource::round_robin(records, workers),
                WatermarkConfig::default(),
            )
            .sink("notify", HttpSink::new(config).unwrap());
        Runtime::new(workers).run(&upstream).unwrap();
        dead.values()
    };
    let events = |ids: std::ops::Range<u64>| -> Vec<Record<Event>> {
        ids.map(|id| (1_000 + id, Event { id })).collect()
    };
    let sink_config = |secret: &str, batch: usize| HttpSinkConfig {
        secret: Some(secret.into()),
        signature: SignatureScheme::Standard,
        batch,
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        ca_file: https.then(|| tls::file("ca.pem")),
        ..HttpSinkConfig::new(&url)
    };

    // A sender with another key is refused (401, not retried); nothing of it arrives.
    let forged = format!("whsec_{}", b64(b"not the key"));
    let dead = send(sink_config(&forged, 5), events(n..n + 10), 1);
    assert_eq!(dead.len(), 10);
    assert!(
        dead[0].error.contains("answered 401 Unauthorized")
            && dead[0]
                .error
                .contains("the signature does not match the body"),
        "{}",
        dead[0].error
    );

    // Two workers, batches of 7 and single records: every request has its own id (a repeated
    // id would be refused as a replay and dead-lettered).
    let dead = send(sink_config(&secret, 7), events(0..n / 2), 2);
    assert!(dead.is_empty(), "{:?}", dead.first());
    let dead = send(sink_config(&secret, 1), events(n / 2..n), 2);
    assert!(dead.is_empty(), "{:?}", dead.first());
    run.join().unwrap();
    let mut ids: Vec<u64> = received.values().into_iter().map(|e: Event| e.id).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..n).collect::<Vec<_>>(),
        "every record once, https: {https}"
    );
}
