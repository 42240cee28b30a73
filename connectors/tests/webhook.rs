//! The webhook source over real HTTP on loopback: reqwest posts signed (and unsigned, badly
//! signed, oversized, malformed) requests to a `WebhookSource` running in a pipeline, and the
//! tests check what the server answered against what reached the sink. Every webhook keeps its
//! write-ahead log in a directory of its test (never the default one, under `$HOME`), or none
//! (`wal=off`) where the test is about the memory buffer.

#![cfg(feature = "http")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eddy_connectors::bridge::StopRule;
use eddy_connectors::endpoints::{self, EndpointOptions};
use eddy_connectors::webhook::{signature, Wal, WebhookConfig, WebhookSource, SIGNATURE_HEADER};
use eddy_connectors::{Endpoint, EventTimeOf};
use eddy_engine::testing::CollectSink;
use eddy_engine::{
    ConnectorError, DeadLetter, Partition, Pipeline, Record, Runtime, Sink, SinkReport, SinkWriter,
    WatermarkConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const SECRET: &str = "s3cret-for-tests";
const TOKEN: &str = "token-for-tests";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    total: u64,
}

fn order(id: u64) -> Order {
    Order {
        id,
        customer: format!("c{}", id % 7),
        total: id * 3,
    }
}

fn ndjson<R: Serialize>(records: &[R]) -> Vec<u8> {
    let mut body = Vec::new();
    for record in records {
        serde_json::to_writer(&mut body, record).unwrap();
        body.push(b'\n');
    }
    body
}

/// A webhook on a free loopback port, checking the test secret and token, stopping by `stop`,
/// keeping its write-ahead log as `wal` says.
fn config(path: &str, stop: StopRule, wal: Wal) -> WebhookConfig {
    WebhookConfig {
        secret: Some(SECRET.into()),
        token: Some(TOKEN.into()),
        stop,
        wal,
        ..WebhookConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), path)
    }
}

/// A write-ahead log in `dir`.
fn log_in(dir: &Path) -> Wal {
    Wal::Dir(dir.to_path_buf())
}

/// The segment files of the log in `dir`, sorted.
fn segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("wal-") && n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

/// A record limit, with an idle exit so that a broken test ends instead of hanging.
fn limit(records: u64) -> StopRule {
    StopRule::never()
        .limit(records)
        .idle_exit(Duration::from_secs(20))
}

/// The client's runtime (the server runs on the connectors' own).
fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// What the server answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    retry_after: Option<String>,
}

impl Answer {
    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }
}

/// A client of one webhook URL, signing with `secret` and sending `token` when they are set.
#[derive(Clone)]
struct Poster {
    http: reqwest::Client,
    url: String,
    secret: Option<String>,
    token: Option<String>,
}

impl Poster {
    fn new(url: &str) -> Self {
        Poster {
            http: reqwest::Client::new(),
            url: url.to_string(),
            secret: Some(SECRET.into()),
            token: Some(TOKEN.into()),
        }
    }

    fn to_path(&self, path: &str) -> Self {
        let base = self.url.rsplit_once('/').unwrap().0;
        Poster {
            url: format!("{base}{path}"),
            ..self.clone()
        }
    }

    async fn send(&self, content_type: &str, body: Vec<u8>) -> Result<Answer, reqwest::Error> {
        let mut request = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, content_type);
        if let Some(secret) = &self.secret {
            request = request.header(SIGNATURE_HEADER, signature(secret.as_bytes(), &body));
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        answer(request.body(body).send().await?).await
    }

    async fn post(&self, content_type: &str, body: Vec<u8>) -> Answer {
        self.send(content_type, body)
            .await
            .expect("the webhook answers")
    }
}

async fn answer(response: reqwest::Response) -> Result<Answer, reqwest::Error> {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await?;
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the answer ({status}) is not JSON ({e}): {text:?}"));
    Ok(Answer {
        status,
        body,
        retry_after,
    })
}

/// Waits until nothing listens at `url` any more: the server shut down after the run.
fn assert_server_gone(rt: &tokio::runtime::Runtime, poster: &Poster) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rt.block_on(poster.send("application/json", b"{}".to_vec())) {
            Err(error) if error.is_connect() => return,
            other => assert!(
                Instant::now() < deadline,
                "the server still answers after the run: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn signed_requests_are_accepted_and_every_record_arrives_once() {
    for (workers, logged) in [(1, true), (2, true), (1, false), (2, false)] {
        let n = 3000u64;
        let log = tempfile::tempdir().unwrap();
        let wal = if logged { log_in(log.path()) } else { Wal::Off };
        let source =
            WebhookSource::<Order>::bind(config("/orders", limit(n), wal), EventTimeOf::Arrival)
                .unwrap();
        let poster = Poster::new(source.url());
        let out = CollectSink::new();
        let pipeline = Pipeline::new("webhook");
        pipeline
            .source("orders", source, WatermarkConfig::default())
            .sink("out", out.clone());
        let run = Runtime::new(workers).start(&pipeline).unwrap();
        let rt = client_runtime();
        rt.block_on(async {
            // 2900 records in NDJSON batches of 100, four senders at once; 100 one by one.
            let mut senders = Vec::new();
            for sender in 0..4u64 {
                let poster = poster.clone();
                senders.push(tokio::spawn(async move {
                    for batch in (0..29u64).filter(|b| b % 4 == sender) {
                        let orders: Vec<Order> =
                            (batch * 100..(batch + 1) * 100).map(order).collect();
                        let answer = poster.post("application/x-ndjson", ndjson(&orders)).await;
                        assert_eq!(
                            (answer.status, &answer.body["accepted"]),
                            (200, &100.into()),
                            "{answer:?}"
                        );
                    }
                }));
            }
            for sender in senders {
                sender.await.unwrap();
            }
            for id in 2900..n {
                let body = serde_json::to_vec(&order(id)).unwrap();
                let answer = poster.post("application/json; charset=utf-8", body).await;
                assert_eq!(
                    (answer.status, &answer.body["accepted"]),
                    (200, &1.into()),
                    "{answer:?}"
                );
            }
        });
        let summary = run.join().unwrap();
        let expected: Vec<Order> = (0..n).map(order).collect();
        assert_eq!(
            out.values(),
            expected,
            "{workers} workers, log {logged}: every record once"
        );
        assert_eq!(summary.rejected(), 0);
        assert_server_gone(&rt, &poster);
    }
}

#[test]
fn refused_requests_say_why_and_ingest_nothing() {
    let good = 20u64;
    let log = tempfile::tempdir().unwrap();
    let mut settings = config("/in", limit(good), log_in(log.path()));
    settings.max_body = 64 << 10;
    settings.buffer = 50;
    let source = WebhookSource::<Order>::bind(settings, EventTimeOf::Arrival).unwrap();
    let address = source.local_addr();
    let poster = Poster::new(source.url());
    let out = CollectSink::new();
    let pipeline = Pipeline::new("webhook-refusals");
    pipeline
        .source("in", source, WatermarkConfig::default())
        .sink("out", out.clone());
    let run = Runtime::new(1).start(&pipeline).unwrap();
    // Refused bodies carry ids from 1000 on; none of them may reach the sink.
    let bad: Vec<Order> = (1000..1010).map(order).collect();
    let body = ndjson(&bad);
    let ndjson_type = "application/x-ndjson";
    let rt = client_runtime();
    rt.block_on(async {
        let unsigned = Poster {
            secret: None,
            ..poster.clone()
        };
        let wrong_secret = Poster {
            secret: Some("guess".into()),
            ..poster.clone()
        };
        let no_token = Poster {
            token: None,
            ..poster.clone()
        };
        let wrong_token = Poster {
            token: Some("guess".into()),
            ..poster.clone()
        };
        let mut with_bad_line = ndjson(&bad[..2]);
        with_bad_line.extend_from_slice(b"{\"id\": 1002, \"customer\": \n");
        with_bad_line.extend_from_slice(&ndjson(&bad[3..]));
        let big: Vec<Order> = (1000..3000).map(order).collect();
        let many_small: Vec<u64> = (1000..1060).collect();
        let cases: Vec<(&str, Answer, u16, &str)> = vec![
            (
                "unsigned",
                unsigned.post(ndjson_type, body.clone()).await,
                401,
                "not signed",
            ),
            (
                "wrongly signed",
                wrong_secret.post(ndjson_type, body.clone()).await,
                401,
                "does not match",
            ),
            (
                "no token",
                no_token.post(ndjson_type, body.clone()).await,
                401,
                "no Authorization",
            ),
            (
                "wrong token",
                wrong_token.post(ndjson_type, body.clone()).await,
                401,
                "token is wrong",
            ),
            (
                "oversized",
                poster.post(ndjson_type, ndjson(&big)).await,
                413,
                "larger than this webhook's limit of 65536 bytes",
            ),
            (
                "more records than the buffer",
                poster.post(ndjson_type, ndjson(&many_small)).await,
                413,
                "more than this webhook buffers (50 records",
            ),
            (
                "malformed JSON",
                poster
                    .post("application/json", b"{\"id\": 1000,".to_vec())
                    .await,
                400,
                "not valid JSON",
            ),
            (
                "a malformed NDJSON line",
                poster.post(ndjson_type, with_bad_line).await,
                400,
                "line 3 is not valid JSON",
            ),
            (
                "invalid UTF-8",
                poster
                    .post(
                        "application/json",
                        b"{\"id\": 1000, \"customer\": \"\xff\", \"total\": 1}".to_vec(),
                    )
                    .await,
                400,
                "not valid UTF-8",
            ),
            (
                "nested deeper than the decoder takes",
                poster
                    .post(
                        "application/json",
                        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
                    )
                    .await,
                400,
                "more than 127 levels deep",
            ),
            (
                "an NDJSON line nested too deep",
                poster
                    .post(ndjson_type, {
                        let mut lines = ndjson(&bad[..1]);
                        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
                        lines.extend_from_slice(format!("{{\"id\": {deep}}}\n").as_bytes());
                        lines
                    })
                    .await,
                400,
                "line 2 nests",
            ),
            (
                "wrong content type",
                poster.post("text/plain", body.clone()).await,
                400,
                "the Content-Type is \"text/plain\"",
            ),
            (
                "another path",
                poster
                    .to_path("/elsewhere")
                    .post(ndjson_type, body.clone())
                    .await,
                404,
                "no webhook at /elsewhere",
            ),
        ];
        for (case, answer, status, reason) in cases {
            assert_eq!(answer.status, status, "{case}: {answer:?}");
            assert!(
                answer.error().contains(reason),
                "{case}: {:?} lacks {reason:?}",
                answer.error()
            );
        }
        let get = answer(reqwest::get(&poster.url).await.unwrap())
            .await
            .unwrap();
        assert_eq!(get.status, 405, "{get:?}");
        assert!(
            get.error().contains("takes POST requests, not GET"),
            "{get:?}"
        );
    });
    // A chunked body (no Content-Length) over the limit is cut off while it is read.
    let chunked = raw_chunked_post(
        address,
        "/in",
        &ndjson(&(1000..3000).map(order).collect::<Vec<_>>()),
    );
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
    assert!(
        chunked.contains("larger than this webhook's limit"),
        "{chunked}"
    );
    // Then the good records: with a limit of exactly their number, any refused record that had
    // been ingested would stand in the sink in place of one of them.
    let goods: Vec<Order> = (0..good).map(order).collect();
    let accepted = rt.block_on(poster.post(ndjson_type, ndjson(&goods)));
    assert_eq!(accepted.status, 200, "{accepted:?}");
    run.join().unwrap();
    assert_eq!(out.values(), goods);
}

/// POSTs `body` in chunks of 16 KiB with `Transfer-Encoding: chunked` over a plain socket, and
/// returns the whole answer as text.
fn raw_chunked_post(address: SocketAddr, path: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-ndjson\r\n\
         Authorization: Bearer {TOKEN}\r\n{SIGNATURE_HEADER}: {}\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n",
        signature(SECRET.as_bytes(), body)
    )
    .into_bytes();
    for chunk in body.chunks(16 << 10) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before it has read everything: keep what it said.
    let _ = stream.write_all(&request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn records_that_do_not_fit_the_type_are_dead_lettered_with_their_line() {
    let log = tempfile::tempdir().unwrap();
    let source = WebhookSource::<Order>::bind(
        config("/typed", limit(5), log_in(log.path())),
        EventTimeOf::field("total"),
    )
    .unwrap();
    let poster = Poster::new(source.url());
    let out = CollectSink::new();
    let dead = CollectSink::<DeadLetter>::new();
    let pipeline = Pipeline::new("webhook-dead-letters");
    pipeline.dead_letters(dead.clone());
    pipeline
        .source("typed", source, WatermarkConfig::default())
        .sink("out", out.clone());
    let run = Runtime::new(2).start(&pipeline).unwrap();
    let wrong_type = r#"{"id": "seven", "customer": "x", "total": 1}"#;
    let missing = r#"{"id": 9}"#;
    let mut body = ndjson(&[order(1)]);
    body.extend_from_slice(format!("{wrong_type}\n").as_bytes());
    body.extend_from_slice(&ndjson(&[order(2)]));
    body.extend_from_slice(format!("{missing}\n").as_bytes());
    body.extend_from_slice(&ndjson(&[order(3)]));
    let answer = client_runtime().block_on(poster.post("application/x-ndjson", body));
    assert_eq!(
        (answer.status, &answer.body["accepted"]),
        (200, &5.into()),
        "well-formed JSON is accepted: {answer:?}"
    );
    let summary = run.join().unwrap();
    assert_eq!(out.values(), vec![order(1), order(2), order(3)]);
    assert_eq!(out.sorted()[1].0, 6, "event time from the field `total`");
    assert_eq!(summary.rejected(), 2);
    let mut letters: Vec<DeadLetter> = dead.values();
    letters.sort_by(|a, b| a.location.cmp(&b.location));
    assert_eq!(letters.len(), 2, "{letters:?}");
    for (letter, (line, raw, why)) in letters.iter().zip([
        (2, wrong_type, "invalid type"),
        (4, missing, "missing field"),
    ]) {
        assert_eq!(
            (letter.kind.as_str(), letter.stage.as_str()),
            ("decode", "typed")
        );
        assert!(
            letter.location.starts_with("POST /typed from 127.0.0.1:")
                && letter.location.ends_with(&format!(" line {line}")),
            "{letter:?}"
        );
        assert_eq!(letter.raw, raw);
        assert!(letter.error.contains(why), "{letter:?}");
    }
}

/// A sink that takes `pause` per batch, keeping only ids, and notes the most records that
/// were accepted by the webhook but not yet written.
#[derive(Clone)]
struct SlowSink {
    pause: Duration,
    ids: Arc<Mutex<Vec<u64>>>,
    written: Arc<AtomicU64>,
    /// Records sent in requests not yet refused (so at least those accepted).
    sent: Arc<AtomicU64>,
    most_buffered: Arc<AtomicU64>,
}

impl SlowSink {
    fn note_buffered(&self) {
        let buffered = self
            .sent
            .load(Ordering::SeqCst)
            .saturating_sub(self.written.load(Ordering::SeqCst));
        self.most_buffered.fetch_max(buffered, Ordering::SeqCst);
    }
}

#[derive(Serialize, Deserialize)]
struct Padded {
    id: u64,
    pad: String,
}

impl Sink<Padded> for SlowSink {
    fn describe(&self) -> String {
        "slow (test)".into()
    }

    fn open(&self, _: Partition) -> Result<Box<dyn SinkWriter<Padded>>, ConnectorError> {
        Ok(Box::new(self.clone()))
    }
}

impl SinkWriter<Padded> for SlowSink {
    fn write(&mut self, batch: &mut Vec<Record<Padded>>) -> Result<(), ConnectorError> {
        self.note_buffered();
        std::thread::sleep(self.pause);
        let n = batch.len() as u64;
        self.ids
            .lock()
            .unwrap()
            .extend(batch.drain(..).map(|(_, record)| record.id));
        self.written.fetch_add(n, Ordering::SeqCst);
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        Ok(SinkReport::default())
    }
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn a_slow_sink_gets_429s_and_the_buffer_and_memory_stay_bounded() {
    const RECORDS: u64 = 40_000;
    const BUFFER: usize = 1000;
    const WORKERS: usize = 2;
    const BATCH: usize = 100;
    const SENDERS: u64 = 4;
    const PER_REQUEST: u64 = 50;
    // About the memory buffer: no log.
    let mut settings = config("/flood", limit(RECORDS), Wal::Off);
    settings.buffer = BUFFER;
    let source = WebhookSource::<Padded>::bind(settings, EventTimeOf::Arrival).unwrap();
    let poster = Poster::new(source.url());
    let sink = SlowSink {
        pause: Duration::from_millis(40),
        ids: Arc::default(),
        written: Arc::default(),
        sent: Arc::default(),
        most_buffered: Arc::default(),
    };
    let pipeline = Pipeline::new("webhook-backpressure");
    pipeline.batch_size(BATCH);
    pipeline
        .source("flood", source, WatermarkConfig::default())
        .sink("slow", sink.clone());
    let run = Runtime::new(WORKERS).start(&pipeline).unwrap();
    let rt = client_runtime();
    let baseline = resident_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicUsize::new(1));
    let sampler = {
        let (sink, peak, sampling) = (sink.clone(), Arc::clone(&peak), Arc::clone(&sampling));
        std::thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) == 1 {
                sink.note_buffered();
                peak.fetch_max(resident_bytes(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let started = Instant::now();
    let too_many = rt.block_on(async {
        let mut senders = Vec::new();
        for sender in 0..SENDERS {
            let (poster, sent) = (poster.clone(), Arc::clone(&sink.sent));
            senders.push(tokio::spawn(async move {
                let mut refused = 0u64;
                let mut first = sender * PER_REQUEST;
                while first < RECORDS {
                    let batch: Vec<Padded> = (first..first + PER_REQUEST)
                        .map(|id| Padded {
                            id,
                            pad: "x".repeat(1000),
                        })
                        .collect();
                    let body = ndjson(&batch);
                    loop {
                        sent.fetch_add(PER_REQUEST, Ordering::SeqCst);
                        let answer = poster.post("application/x-ndjson", body.clone()).await;
                        if answer.status == 200 {
                            break;
                        }
                        sent.fetch_sub(PER_REQUEST, Ordering::SeqCst);
                        assert_eq!(answer.status, 429, "{answer:?}");
                        let wait: u64 = answer
                            .retry_after
                            .as_deref()
                            .unwrap_or("none")
                            .parse()
                            .unwrap();
                        assert!(wait >= 1, "{answer:?}");
                        assert!(
                            answer.error().contains("the pipeline is behind"),
                            "{answer:?}"
                        );
                        refused += 1;
                        // Sooner than Retry-After asks, to keep the pressure on.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    first += SENDERS * PER_REQUEST;
                }
                refused
            }));
        }
        let mut refused = 0;
        for sender in senders {
            refused += sender.await.unwrap();
        }
        refused
    });
    run.join().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    sampling.store(0, Ordering::SeqCst);
    sampler.join().unwrap();
    let mut ids = sink.ids.lock().unwrap().clone();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..RECORDS).collect::<Vec<_>>(),
        "every accepted record arrives, once"
    );
    // Bound: the buffer, plus what the workers hold (the batch being written and one polled),
    // plus the records of requests in flight (counted as sent before the server answers).
    let bound = BUFFER as u64 + 2 * (WORKERS * BATCH) as u64 + SENDERS * PER_REQUEST;
    let most = sink.most_buffered.load(Ordering::SeqCst);
    let grown_mib =
        (peak.load(Ordering::SeqCst).saturating_sub(baseline)) as f64 / (1 << 20) as f64;
    let sent_mib = (RECORDS * 1024) as f64 / (1 << 20) as f64;
    eprintln!(
        "backpressure: {RECORDS} records ({sent_mib:.0} MiB) in {seconds:.1} s, {too_many} \
         answers 429, at most {most} records buffered (bound {bound}), resident memory grew \
         {grown_mib:.1} MiB"
    );
    assert!(
        too_many > 0,
        "a sink this slow makes the webhook answer 429"
    );
    assert!(
        most <= bound,
        "{most} records were buffered, more than {bound}"
    );
    assert!(
        grown_mib < 32.0,
        "resident memory grew {grown_mib:.1} MiB while {sent_mib:.0} MiB were sent"
    );
}

#[test]
fn a_port_in_use_and_bad_options_are_clear_errors() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let error =
        WebhookSource::<Order>::bind(WebhookConfig::new(address, "/x"), EventTimeOf::Arrival)
            .err()
            .expect("the port is taken")
            .to_string();
    assert!(
        error.contains(&format!("cannot listen on {address}")) && error.contains("in use"),
        "{error}"
    );
    let open = |uri: &str| {
        let endpoint: Endpoint = uri.parse().unwrap();
        endpoints::source(&endpoint, &EndpointOptions::default())
            .err()
            .expect("refused")
            .to_string()
    };
    let error = open(&format!("http://{address}/hook"));
    assert!(error.contains("in use"), "{error}");
    let error = open("http://127.0.0.1:0/hook?secret=plain");
    assert!(
        error.contains("unknown option 'secret'") && error.contains("secret_env"),
        "{error}"
    );
    let error = open("https://127.0.0.1:0/hook");
    assert!(
        error.contains("https:// needs the server's certificate and its key"),
        "{error}"
    );
    let error = open("http://127.0.0.1:0/hook?max_body=lots");
    assert!(error.contains("max_body=lots"), "{error}");
}

#[test]
fn a_webhook_uri_listens_there_with_its_options() {
    // `secret_env` names a variable that holds the secret; PATH is always set, so the test
    // needs to set none (setting variables races with threads that read them).
    let secret = std::env::var("PATH").unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = tempfile::tempdir().unwrap();
    let endpoint: Endpoint = format!(
        "http://127.0.0.1:{port}/in?secret_env=PATH&buffer=10&wal={}",
        log.path().display()
    )
    .parse()
    .unwrap();
    let options = EndpointOptions {
        stop: limit(10),
        ..EndpointOptions::default()
    };
    let source = endpoints::source(&endpoint, &options).unwrap();
    let out = CollectSink::<Value>::new();
    let pipeline = Pipeline::new("webhook-uri");
    pipeline
        .source("in", source, WatermarkConfig::default())
        .sink("out", out.clone());
    let run = Runtime::new(1).start(&pipeline).unwrap();
    let poster = Poster {
        secret: Some(secret),
        token: None,
        ..Poster::new(&format!("http://127.0.0.1:{port}/in"))
    };
    let records: Vec<Value> = (0..11).map(|i| serde_json::json!({ "n": i })).collect();
    let rt = client_runtime();
    let too_many = rt.block_on(poster.post("application/x-ndjson", ndjson(&records)));
    assert_eq!(too_many.status, 413, "buffer=10: {too_many:?}");
    let accepted = rt.block_on(poster.post("application/x-ndjson", ndjson(&records[..10])));
    assert_eq!(accepted.status, 200, "{accepted:?}");
    run.join().unwrap();
    assert_eq!(out.rows().len(), 10);
    assert_eq!(segments(log.path()).len(), 1, "the log is where wal= says");
}

#[test]
fn a_request_beyond_the_record_limit_is_refused_so_every_accepted_record_is_read() {
    let log = tempfile::tempdir().unwrap();
    let source = WebhookSource::<Order>::bind(
        config("/limited", limit(10), log_in(log.path())),
        EventTimeOf::Arrival,
    )
    .unwrap();
    let poster = Poster::new(source.url());
    let out = CollectSink::new();
    let pipeline = Pipeline::new("webhook-limit");
    pipeline
        .source("orders", source, WatermarkConfig::default())
        .sink("out", out.clone());
    let run = Runtime::new(1).start(&pipeline).unwrap();
    let rt = client_runtime();
    rt.block_on(async {
        let batch = |ids: std::ops::Range<u64>| ndjson(&ids.map(order).collect::<Vec<_>>());
        let first = poster.post("application/x-ndjson", batch(0..8)).await;
        assert_eq!(first.status, 200, "{first:?}");
        let over = poster.post("application/x-ndjson", batch(8..13)).await;
        assert_eq!(over.status, 503, "{over:?}");
        assert!(over.error().contains("record limit"), "{over:?}");
        let last = poster.post("application/x-ndjson", batch(8..10)).await;
        assert_eq!(last.status, 200, "{last:?}");
    });
    run.join().unwrap();
    let ids: Vec<u64> = out.values().iter().map(|o| o.id).collect();
    assert_eq!(
        ids,
        (0..10).collect::<Vec<_>>(),
        "the ten accepted records, once"
    );
}

/// Runs a webhook with its log in `dir` until it has read `n` records, posting the orders
/// `ids` to it as one NDJSON batch (answered 200); what reached the sink.
fn run_logged(dir: &Path, ids: std::ops::Range<u64>, n: u64) -> Vec<Order> {
    let source =
        WebhookSource::<Order>::bind(config("/log", limit(n), log_in(dir)), EventTimeOf::Arrival)
            .unwrap();
    let poster = Poster::new(source.url());
    let out = CollectSink::new();
    let pipeline = Pipeline::new("webhook-log");
    pipeline
        .source("orders", source, WatermarkConfig::default())
        .sink("out", out.clone());
    let run = Runtime::new(2).start(&pipeline).unwrap();
    let orders: Vec<Order> = ids.map(order).collect();
    let answer = client_runtime().block_on(poster.post("application/x-ndjson", ndjson(&orders)));
    assert_eq!(answer.status, 200, "{answer:?}");
    run.join().unwrap();
    out.values()
}

#[test]
fn a_run_without_checkpoints_reads_on_from_where_the_last_one_released() {
    let log = tempfile::tempdir().unwrap();
    let first = run_logged(log.path(), 0..20, 20);
    assert_eq!(first, (0..20).map(order).collect::<Vec<_>>());
    let released = log.path().join("released");
    assert!(released.exists(), "the run recorded what it released");
    let first_segments = segments(log.path());
    assert_eq!(first_segments.len(), 1, "{first_segments:?}");
    // The next run on the same log reads only what came after: nothing of the first again.
    let second = run_logged(log.path(), 100..110, 10);
    assert_eq!(second, (100..110).map(order).collect::<Vec<_>>());
    let now = segments(log.path());
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(
        now, first_segments,
        "the first run's segment, wholly before the released position, is deleted"
    );
}

#[test]
fn records_answered_2xx_that_a_stopped_run_did_not_read_are_read_by_the_next() {
    const RECORDS: u64 = 200;
    let log = tempfile::tempdir().unwrap();
    let source = WebhookSource::<Padded>::bind(
        config("/slow", StopRule::never(), log_in(log.path())),
        EventTimeOf::Arrival,
    )
    .unwrap();
    let poster = Poster::new(source.url());
    let slow = SlowSink {
        pause: Duration::from_millis(50),
        ids: Arc::default(),
        written: Arc::default(),
        sent: Arc::default(),
        most_buffered: Arc::default(),
    };
    let pipeline = Pipeline::new("webhook-stopped");
    pipeline.batch_size(10);
    pipeline
        .source("in", source, WatermarkConfig::default())
        .sink("slow", slow.clone());
    let run = Runtime::new(1).start(&pipeline).unwrap();
    let rt = client_runtime();
    for first in (0..RECORDS).step_by(50) {
        let batch: Vec<Padded> = (first..first + 50)
            .map(|id| Padded {
                id,
                pad: String::new(),
            })
            .collect();
        let answer = rt.block_on(poster.post("application/x-ndjson", ndjson(&batch)));
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    run.stop();
    run.join().unwrap();
    let mut ids = slow.ids.lock().unwrap().clone();
    assert!(
        (ids.len() as u64) < RECORDS,
        "the stop came before the slow sink had written everything ({} written)",
        ids.len()
    );
    let before = ids.len();
    ids.extend(run_rest(log.path()));
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids,
        (0..RECORDS).collect::<Vec<_>>(),
        "every record answered 2xx, read by the first run ({before}) or the next"
    );
}

/// Runs a webhook with its log in `dir` until it has been idle for two seconds; the ids that
/// reached the sink.
fn run_rest(dir: &Path) -> Vec<u64> {
    let idle = StopRule::never().idle_exit(Duration::from_secs(2));
    let source =
        WebhookSource::<Padded>::bind(config("/slow", idle, log_in(dir)), EventTimeOf::Arrival)
            .unwrap();
    let sink = SlowSink {
        pause: Duration::ZERO,
        ids: Arc::default(),
        written: Arc::default(),
        sent: Arc::default(),
        most_buffered: Arc::default(),
    };
    let pipeline = Pipeline::new("webhook-rest");
    pipeline
        .source("in", source, WatermarkConfig::default())
        .sink("slow", sink.clone());
    Runtime::new(1).run(&pipeline).unwrap();
    let ids = sink.ids.lock().unwrap().clone();
    ids
}

#[test]
fn a_run_with_checkpoints_records_no_release_before_a_checkpoint_completes() {
    let (log, checkpoints) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Event times of a few ms, and no idle watermark: the watermark never reaches the first
    // checkpoint, an hour of event time, while the test looks (only the final one, at the end).
    let source = WebhookSource::<Order>::bind(
        config("/checkpointed", limit(20), log_in(log.path())),
        EventTimeOf::field("total"),
    )
    .unwrap();
    let poster = Poster::new(source.url());
    let out = CollectSink::new();
    let pipeline = Pipeline::new("webhook-checkpointed");
    let watermarks = WatermarkConfig {
        idle_timeout: None,
        ..WatermarkConfig::default()
    };
    pipeline
        .source("orders", source, watermarks)
        .sink("out", out.clone());
    let run = Runtime::new(1)
        .checkpoint(checkpoints.path(), Duration::from_secs(3600))
        .start(&pipeline)
        .unwrap();
    let rt = client_runtime();
    let post = |ids: std::ops::Range<u64>| {
        let orders: Vec<Order> = ids.map(order).collect();
        let answer = rt.block_on(poster.post("application/x-ndjson", ndjson(&orders)));
        assert_eq!(answer.status, 200, "{answer:?}");
    };
    post(0..10);
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.rows().len() < 10 {
        assert!(Instant::now() < deadline, "the records were not read");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Longer than a commit cycle (1 s), which would have recorded them by now: the engine
    // released them as soon as it took them, which is not durable in a checkpointed run.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !log.path().join("released").exists(),
        "a checkpointed run recorded a release before any checkpoint completed"
    );
    assert!(
        !checkpoints.path().join("manifests").exists()
            || std::fs::read_dir(checkpoints.path().join("manifests"))
                .unwrap()
                .next()
                .is_none(),
        "no checkpoint completed yet"
    );
    post(10..20);
    run.join().unwrap();
    assert_eq!(out.values(), (0..20).map(order).collect::<Vec<_>>());
}

#[test]
fn a_second_webhook_on_the_same_log_is_refused_naming_its_directory() {
    let log = tempfile::tempdir().unwrap();
    let _first = WebhookSource::<Order>::bind(
        config("/a", StopRule::never(), log_in(log.path())),
        EventTimeOf::Arrival,
    )
    .unwrap();
    let error = WebhookSource::<Order>::bind(
        config("/b", StopRule::never(), log_in(log.path())),
        EventTimeOf::Arrival,
    )
    .err()
    .expect("one webhook at a time writes a log")
    .to_string();
    assert!(
        error.contains("another webhook") && error.contains(&log.path().display().to_string()),
        "{error}"
    );
}
