//! The webhook source over HTTPS and the HTTP sink's TLS, with real handshakes on loopback and
//! the test CA and certificates of `scripts/brokers.sh up` (a server certificate for IP
//! 127.0.0.1 only): clients that stall before, in or after the TLS handshake are closed after
//! `header_timeout` while a signed POST is answered; mutual TLS refuses clients without a
//! certificate from its CA; an Eddy HTTP sink configured by URI (`ca_file=`, `cert_file=`,
//! `key_file=`, Standard Webhooks signatures) feeds an Eddy webhook configured by URI
//! (`https://...?cert_file=...&key_file=...`), and fails at once, saying why, on an untrusted
//! certificate or a wrong host name. The signature schemes over HTTPS are in
//! `webhook_signatures.rs`.

#![cfg(feature = "http")]

mod hook;
mod tls;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_connectors::bridge::StopRule;
use eddy_connectors::endpoints::{self, EndpointOptions};
use eddy_connectors::http_sink::{HttpSink, HttpSinkConfig};
use eddy_connectors::webhook::{signature, WebhookConfig, WebhookTls, SIGNATURE_HEADER};
use eddy_connectors::{Endpoint, ReplaySource};
use eddy_engine::testing::CollectSink;
use eddy_engine::{DeadLetter, Pipeline, Record, Runtime, WatermarkConfig};
use hook::{Hook, SECRET};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_rustls::rustls;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Event {
    id: u64,
}

fn body(id: u64) -> Vec<u8> {
    serde_json::to_vec(&Event { id }).unwrap()
}

/// The ids of `events`.
fn ids(events: Vec<Event>) -> Vec<u64> {
    events.into_iter().map(|e| e.id).collect()
}

/// A signed webhook over HTTPS (the test server certificate) on a free loopback port, changed
/// by `change`, reading `records` records.
fn start(records: u64, change: impl FnOnce(&mut WebhookConfig)) -> Hook<Event> {
    hook::start(records, "/in", |config| {
        config.tls = Some(tls::server());
        change(config);
    })
}

/// POSTs record `id`, signed, with `client`: the status and body, or the client's error.
fn post_with(client: &tls::Client, url: &str, id: u64) -> Result<(u16, String), String> {
    let body = body(id);
    let headers = [
        ("content-type", "application/json".to_string()),
        (SIGNATURE_HEADER, signature(SECRET.as_bytes(), &body)),
    ];
    client.post(url, &headers, &body)
}

/// POSTs record `id`, signed, trusting the test CA: it must be answered 200, within 5 s.
fn post(url: &str, id: u64) {
    let began = Instant::now();
    let answer = post_with(&tls::Client::trusting_the_test_ca(), url, id);
    assert_eq!(answer, Ok((200, "{\"accepted\":1}".to_string())));
    let took = began.elapsed();
    assert!(took < Duration::from_secs(5), "the POST took {took:?}");
}

/// Waits (up to 10 s) until the server closes `stream`: how long after `since`.
fn closed_after(stream: &mut impl Read, since: Instant) -> Duration {
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return since.elapsed(),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("still open {:?} after", since.elapsed())
            }
            Err(_) => return since.elapsed(), // reset, or TLS closed without close_notify
        }
    }
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// A rustls client connection to `address` that has finished its handshake, trusting the test
/// CA.
fn handshaken(address: SocketAddr) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(tls::file("ca.pem")).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut socket = connect(address);
    while connection.is_handshaking() {
        connection.complete_io(&mut socket).unwrap();
    }
    rustls::StreamOwned::new(connection, socket)
}

fn assert_about_one_second(closed: Duration, what: &str) {
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(4),
        "{what} closed after {closed:?}, the header timeout being 1 s"
    );
}

#[test]
fn clients_that_stall_before_in_or_after_the_handshake_are_closed_after_header_timeout() {
    // Two records: the second once the stalled clients are closed (the run ending would close
    // them too).
    let hook = start(2, |c| {
        c.header_timeout = Duration::from_secs(1);
        c.body_timeout = Duration::from_secs(20);
        c.idle_timeout = Duration::from_secs(20);
    });
    let began = Instant::now();
    // Sends nothing at all.
    let mut silent = connect(hook.address);
    // Starts a handshake and never finishes it: the first bytes of a ClientHello.
    let mut halfway = connect(hook.address);
    halfway
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01])
        .unwrap();
    // Finishes the handshake and never sends a request.
    let mut quiet = handshaken(hook.address);
    // A signed POST meanwhile is answered.
    post(&hook.url, 1);
    assert_about_one_second(closed_after(&mut silent, began), "a silent socket");
    assert_about_one_second(closed_after(&mut halfway, began), "a half-done handshake");
    assert_about_one_second(
        closed_after(&mut quiet, began),
        "a TLS client with no request",
    );
    post(&hook.url, 2);
    assert_eq!(ids(hook.finish()), vec![1, 2]);
}

#[test]
fn sockets_stalled_in_the_handshake_at_max_connections_do_not_keep_a_signed_post_out() {
    // 60 sockets against a cap of 20: 40 or more of them are closed to make room.
    let hook = start(2, |c| {
        c.max_connections = 20;
        c.header_timeout = Duration::from_secs(60);
        c.idle_timeout = Duration::from_secs(60);
    });
    let mut held: Vec<TcpStream> = (0..60).map(|_| connect(hook.address)).collect();
    for stream in held.iter_mut().step_by(2) {
        stream.write_all(&[0x16, 0x03, 0x01]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    post(&hook.url, 1);
    // The closes to make room are counted on /metrics as over plain HTTP.
    let served = hook.run.observer().prometheus();
    let closed = served
        .lines()
        .find(|l| l.contains("event=\"connections_closed_at_cap\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert!(closed.is_some_and(|n| n >= 40), "{served}");
    post(&hook.url, 2);
    assert_eq!(ids(hook.finish()), vec![1, 2]);
}

#[test]
fn mutual_tls_refuses_clients_without_a_certificate_from_its_ca() {
    let hook = start(1, |c| {
        c.tls = Some(tls::server().client_ca(tls::file("ca.pem")));
    });
    let ca = tls::Client::trusting_the_test_ca();
    for (client, what) in [
        (ca.clone(), "no client certificate"),
        (ca.clone().with_cert("rogue-client"), "the rogue CA's"),
    ] {
        let refused = post_with(&client, &hook.url, 9);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("SSL") || e.contains("Connection")),
            "{what}: {refused:?}"
        );
    }
    let answer = post_with(&ca.with_cert("client"), &hook.url, 1);
    assert_eq!(answer, Ok((200, "{\"accepted\":1}".to_string())));
    assert_eq!(
        ids(hook.finish()),
        vec![1],
        "nothing of the refused clients"
    );
}

/// A free port on loopback (bound and let go).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `records` through the HTTP sink of URI `uri`: the run's error, if it failed, and the
/// dead letters.
fn send(uri: &str, records: Vec<Record<Event>>) -> (Result<(), String>, Vec<DeadLetter>) {
    let endpoint: Endpoint = uri.parse().unwrap();
    let sink = HttpSink::new(HttpSinkConfig::from_endpoint(&endpoint).unwrap()).unwrap();
    let dead = CollectSink::<DeadLetter>::new();
    let pipeline = Pipeline::new("sender");
    pipeline.dead_letters(dead.clone());
    pipeline
        .source(
            "events",
            ReplaySource::round_robin(records, 1),
            WatermarkConfig::default(),
        )
        .sink("notify", sink);
    let result = Runtime::new(1)
        .run(&pipeline)
        .map(|_| ())
        .map_err(|e| e.to_string());
    (result, dead.values())
}

fn events(ids: std::ops::Range<u64>) -> Vec<Record<Event>> {
    ids.map(|id| (1_000 + id, Event { id })).collect()
}

#[test]
fn an_eddy_http_sink_feeds_an_eddy_https_webhook_by_uri_and_fails_at_once_on_bad_certificates() {
    let n = 200;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "whsec_c2hhcmVkIGJ5IHRoZSB0d28gRWRkeXM=\n").unwrap();
    let port = free_port();
    let tls = tls::dir();
    let file = |name: &str| tls.join(name).display().to_string();
    let webhook: Endpoint = format!(
        "https://127.0.0.1:{port}/in?cert_file={}&key_file={}&client_ca_file={}\
         &secret_file={}&signature=standard&wal=off",
        file("server.pem"),
        file("server-key.pem"),
        file("ca.pem"),
        secret.display()
    )
    .parse()
    .unwrap();
    let options = EndpointOptions {
        stop: StopRule::never()
            .limit(n)
            .idle_exit(Duration::from_secs(30)),
        ..EndpointOptions::default()
    };
    let source = endpoints::source(&webhook, &options).unwrap();
    let received = CollectSink::<Value>::new();
    let downstream = Pipeline::new("downstream");
    downstream
        .source("in", source, WatermarkConfig::default())
        .sink("received", received.clone());
    let run = Runtime::new(1).start(&downstream).unwrap();

    // A server that answers plain HTTP (400) to anything.
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in plain.incoming().map_while(Result::ok) {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });

    // Retried, each of these would take well over 10 s; each fails at once, saying why.
    let slow_retries = "retries=20&backoff=1s&max_backoff=5s";
    let signed = format!("signature=standard&secret_file={}", secret.display());
    let client = format!(
        "cert_file={}&key_file={}",
        file("client.pem"),
        file("client-key.pem")
    );
    for (uri, says) in [
        (
            format!(
                "https://127.0.0.1:{port}/in?ca_file={}&{client}",
                file("rogue-ca.pem")
            ),
            "UnknownIssuer",
        ),
        (
            format!("https://127.0.0.1:{port}/in?{client}"),
            "UnknownIssuer",
        ),
        (
            format!(
                "https://localhost:{port}/in?ca_file={}&{client}",
                file("ca.pem")
            ),
            "localhost",
        ),
        // The webhook wants a client certificate.
        (
            format!("https://127.0.0.1:{port}/in?ca_file={}", file("ca.pem")),
            "CertificateRequired",
        ),
        (
            format!(
                "https://127.0.0.1:{plain_port}/in?ca_file={}",
                file("ca.pem")
            ),
            "InvalidContentType",
        ),
    ] {
        let began = Instant::now();
        let (result, _) = send(&format!("{uri}&{signed}&{slow_retries}"), events(n..n + 3));
        let error = result.expect_err("the sink fails");
        let took = began.elapsed();
        let url = uri.split('?').next().unwrap();
        assert!(
            error.contains(&format!("HTTP sink {url}: TLS with "))
                && error.contains(says)
                && error.contains("not retried"),
            "{uri}: {error}"
        );
        assert!(
            took < Duration::from_secs(5),
            "{uri}: failed after {took:?}"
        );
        assert!(!error.contains("whsec_"), "{error}");
    }

    // Trusting the test CA, with the client certificate: every record once.
    let uri = format!(
        "https://127.0.0.1:{port}/in?ca_file={}&{client}&{signed}&batch=7",
        file("ca.pem")
    );
    let (result, dead) = send(&uri, events(0..n));
    assert_eq!(result, Ok(()));
    assert!(dead.is_empty(), "{:?}", dead.first());
    run.join().unwrap();
    let mut ids: Vec<u64> = received
        .rows()
        .into_iter()
        .map(|(_, v)| v["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..n).collect::<Vec<_>>(), "every record once");
}

#[test]
fn an_http_sink_refuses_an_expired_server_certificate_at_once() {
    let hook = start(1, |config| {
        config.tls = Some(WebhookTls::new(
            tls::file("expired.pem"),
            tls::file("expired-key.pem"),
        ))
    });
    let uri = format!(
        "{}?ca_file={}&retries=20&backoff=1s",
        hook.url,
        tls::file("ca.pem").display()
    );
    let began = Instant::now();
    let (result, _) = send(&uri, events(0..1));
    let error = result.expect_err("the sink fails");
    assert!(
        error.contains("TLS with ")
            && error.contains("certificate expired")
            && error.contains("not retried"),
        "{error}"
    );
    assert!(began.elapsed() < Duration::from_secs(5), "{error}");
    // The webhook is still up: a client that accepts nothing expired gets nowhere either.
    let refused = post_with(&tls::Client::trusting_the_test_ca(), &hook.url, 0);
    assert!(refused.is_err(), "{refused:?}");
    hook.run.stop();
    assert_eq!(ids(hook.finish()), Vec::<u64>::new());
}

#[test]
fn tls_options_and_bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls::dir();
    let file = |name: &str| tls.join(name).display().to_string();
    let source = |uri: &str| {
        let endpoint: Endpoint = uri.parse().unwrap();
        endpoints::source(&endpoint, &EndpointOptions::default())
            .err()
            .expect("refused")
            .to_string()
    };
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not PEM at all").unwrap();
    let not_pem = not_pem.display().to_string();
    let wal = format!("wal={}", dir.path().join("wal").display());
    for (uri, says) in [
        (
            format!("https://127.0.0.1:0/in?{wal}"),
            "https:// needs the server's certificate and its key".to_string(),
        ),
        (
            format!(
                "https://127.0.0.1:0/in?cert_file={}&{wal}",
                file("server.pem")
            ),
            "https:// needs the server's certificate and its key".to_string(),
        ),
        (
            format!(
                "http://127.0.0.1:0/in?cert_file={}&key_file={}&{wal}",
                file("server.pem"),
                file("server-key.pem")
            ),
            "are for HTTPS: write https://".to_string(),
        ),
        (
            format!(
                "https://127.0.0.1:0/in?cert_file=/no/such.pem&key_file={}&{wal}",
                file("server-key.pem")
            ),
            "cert_file=/no/such.pem: the file cannot be read".to_string(),
        ),
        (
            format!(
                "https://127.0.0.1:0/in?cert_file={not_pem}&key_file={}&{wal}",
                file("server-key.pem")
            ),
            format!("cert_file={not_pem}: the file holds no certificate"),
        ),
        (
            format!(
                "https://127.0.0.1:0/in?cert_file={}&key_file={}&{wal}",
                file("server.pem"),
                file("server.pem")
            ),
            format!(
                "key_file={}: the file holds no private key",
                file("server.pem")
            ),
        ),
        (
            format!(
                "https://127.0.0.1:0/in?cert_file={}&key_file={}&{wal}",
                file("server.pem"),
                file("client-key.pem")
            ),
            "the key cannot serve the certificate".to_string(),
        ),
        (
            format!(
                "https://127.0.0.1:0/in?cert_file={}&key_file={}&client_ca_file={not_pem}&{wal}",
                file("server.pem"),
                file("server-key.pem")
            ),
            format!("client_ca_file={not_pem}: the file holds no certificate"),
        ),
    ] {
        let error = source(&uri);
        assert!(error.contains(&says), "{uri}: {error}");
    }

    let sink = |uri: &str| {
        let endpoint: Endpoint = uri.parse().unwrap();
        HttpSinkConfig::from_endpoint(&endpoint)
            .and_then(HttpSink::<Event>::new)
            .err()
            .expect("refused")
            .to_string()
    };
    let password = dir.path().join("password");
    std::fs::write(&password, "pw\n").unwrap();
    let password = password.display();
    for (uri, says) in [
        (
            "https://127.0.0.1:9/in?ca_file=/no/ca.pem".to_string(),
            "HTTP sink https://127.0.0.1:9/in: ca_file=/no/ca.pem: the file cannot be read"
                .to_string(),
        ),
        (
            format!("https://127.0.0.1:9/in?ca_file={not_pem}"),
            format!("ca_file={not_pem}: the file holds no certificate"),
        ),
        (
            format!("https://127.0.0.1:9/in?cert_file={}", file("client.pem")),
            "needs both cert_file= and key_file=".to_string(),
        ),
        (
            format!(
                "https://127.0.0.1:9/in?cert_file={}&key_file={not_pem}",
                file("client.pem")
            ),
            format!("key_file={not_pem}: the file holds no private key"),
        ),
        (
            format!("http://127.0.0.1:9/in?ca_file={}", file("ca.pem")),
            "are for HTTPS: write https://".to_string(),
        ),
        (
            format!(
                "http://127.0.0.1:9/in?user=eddy&password_file={password}&token_file={password}"
            ),
            "keep one".to_string(),
        ),
        (
            "http://127.0.0.1:9/in?user=eddy".to_string(),
            "user= needs its password".to_string(),
        ),
        (
            format!("http://127.0.0.1:9/in?password_file={password}"),
            "needs its user=".to_string(),
        ),
    ] {
        let error = sink(&uri);
        assert!(error.contains(&says), "{uri}: {error}");
    }
}
