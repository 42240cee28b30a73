//! The webhook's server as an internet-facing server, over raw sockets on loopback: heads and
//! bodies sent a byte at a time are cut off by `header_timeout` and `body_timeout` (a 408,
//! nothing taken), kept-alive connections close after `idle_timeout`, and with
//! `max_connections` held by idle sockets a legitimate signed POST is still served.

#![cfg(feature = "http")]

mod hook;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use eddy_connectors::webhook::{signature, WebhookConfig, WebhookSource, SIGNATURE_HEADER};
use eddy_connectors::{Endpoint, EventTimeOf};
use hook::{Hook, SECRET};
use serde::{Deserialize, Serialize};

const PATH: &str = "/hook";

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

fn body(id: u64) -> Vec<u8> {
    serde_json::to_vec(&order(id)).unwrap()
}

/// A signed webhook on a free loopback port with these limits, reading `records` orders.
fn start(records: u64, limits: impl FnOnce(&mut WebhookConfig)) -> Hook<Order> {
    hook::start(records, PATH, limits)
}

/// The head of a signed POST of `body`.
fn head(body: &[u8], close: bool) -> String {
    format!(
        "POST {PATH} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{SIGNATURE_HEADER}: {}\r\n{}\r\n",
        body.len(),
        signature(SECRET.as_bytes(), body),
        if close { "Connection: close\r\n" } else { "" }
    )
}

/// Reads one answer: its status and body.
fn read_answer(stream: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("an answer");
        assert_eq!(
            n,
            1,
            "closed before an answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.push(byte[0]);
    }
    let head = String::from_utf8(got).unwrap();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// A signed POST of order `id` on a new connection: its status and how long it took.
fn post(address: SocketAddr, id: u64) -> (u16, Duration) {
    let began = Instant::now();
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let body = body(id);
    stream.write_all(head(&body, true).as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    let (status, text) = read_answer(&mut stream);
    assert_eq!(status, 200, "{text}");
    (status, began.elapsed())
}

/// Waits (up to `limit`) until the server closes `stream`: how long after `since`.
fn closed_after(stream: &mut TcpStream, since: Instant, limit: Duration) -> Duration {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return since.elapsed(),
            Ok(_) => continue, // an answer (checked by the caller where it matters)
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("still open {:?} after", since.elapsed())
            }
            Err(_) => return since.elapsed(), // reset
        }
    }
}

/// Writes `bytes` one at a time, `every` apart, until they are all sent or the server closes
/// the connection.
fn trickle(mut stream: TcpStream, bytes: Vec<u8>, every: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for byte in bytes {
            if stream.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(every);
        }
    })
}

#[test]
fn a_head_sent_a_byte_at_a_time_is_cut_off_after_header_timeout() {
    let hook = start(1, |c| {
        c.header_timeout = Duration::from_secs(1);
        c.body_timeout = Duration::from_secs(20);
        c.idle_timeout = Duration::from_secs(20);
    });
    let began = Instant::now();
    let mut slow = TcpStream::connect(hook.address).unwrap();
    let head = head(&body(99), false).into_bytes();
    let writer = trickle(slow.try_clone().unwrap(), head, Duration::from_millis(200));
    let closed = closed_after(&mut slow, began, Duration::from_secs(10));
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(4),
        "closed after {closed:?}, the header timeout being 1 s"
    );
    // A socket that sends nothing at all is closed too.
    let began = Instant::now();
    let mut silent = TcpStream::connect(hook.address).unwrap();
    let closed = closed_after(&mut silent, began, Duration::from_secs(10));
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(4),
        "silent socket closed after {closed:?}"
    );
    post(hook.address, 1);
    writer.join().unwrap();
    assert_eq!(hook.finish(), vec![order(1)]);
}

#[test]
fn a_body_sent_a_byte_at_a_time_is_answered_408_and_nothing_of_it_is_taken() {
    let hook = start(1, |c| {
        c.header_timeout = Duration::from_secs(20);
        c.body_timeout = Duration::from_secs(1);
    });
    let mut slow = TcpStream::connect(hook.address).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = body(7);
    slow.write_all(head(&body, false).as_bytes()).unwrap();
    let began = Instant::now();
    let writer = trickle(slow.try_clone().unwrap(), body, Duration::from_millis(200));
    let (status, text) = read_answer(&mut slow);
    let answered = began.elapsed();
    assert_eq!(status, 408, "{text}");
    let error: serde_json::Value = serde_json::from_str(&text).unwrap();
    let error = error["error"].as_str().unwrap();
    assert!(
        error.contains("body_timeout") && error.contains("nothing of this request"),
        "{error}"
    );
    assert!(
        answered >= Duration::from_millis(900) && answered < Duration::from_secs(4),
        "answered after {answered:?}, the body timeout being 1 s"
    );
    let closed = closed_after(&mut slow, began, Duration::from_secs(5));
    assert!(closed < Duration::from_secs(6), "closed after {closed:?}");
    writer.join().unwrap();
    post(hook.address, 1);
    assert_eq!(hook.finish(), vec![order(1)], "nothing of the slow body");
}

#[test]
fn a_kept_alive_connection_is_closed_after_idle_timeout() {
    // Three records, the third on a connection of its own once the kept one is closed (the
    // run ending would close it too).
    let hook = start(3, |c| {
        c.header_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(3);
    });
    let mut kept = TcpStream::connect(hook.address).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let first = body(1);
    kept.write_all(head(&first, false).as_bytes()).unwrap();
    kept.write_all(&first).unwrap();
    assert_eq!(read_answer(&mut kept).0, 200);
    // Idle longer than the header timeout, shorter than the idle timeout: still open.
    std::thread::sleep(Duration::from_millis(1500));
    let second = body(2);
    kept.write_all(head(&second, false).as_bytes()).unwrap();
    kept.write_all(&second).unwrap();
    assert_eq!(read_answer(&mut kept).0, 200, "the connection was kept");
    let idle = Instant::now();
    let closed = closed_after(&mut kept, idle, Duration::from_secs(10));
    assert!(
        closed >= Duration::from_millis(2800) && closed < Duration::from_secs(6),
        "closed after {closed:?} idle, the idle timeout being 3 s"
    );
    post(hook.address, 3);
    assert_eq!(hook.finish(), vec![order(1), order(2), order(3)]);
}

#[test]
fn idle_sockets_at_max_connections_do_not_keep_a_signed_post_out() {
    // Three records, the third once the sockets are counted (the run ending closes them all).
    let hook = start(3, |c| {
        c.max_connections = 50;
        c.header_timeout = Duration::from_secs(60);
        c.idle_timeout = Duration::from_secs(60);
    });
    let mut held: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(hook.address).unwrap())
        .collect();
    // One of them sends a head a byte at a time: idle too, as far as the cap is concerned.
    let slowloris = TcpStream::connect(hook.address).unwrap();
    let writer = trickle(
        slowloris,
        head(&body(99), false).into_bytes(),
        Duration::from_millis(100),
    );
    std::thread::sleep(Duration::from_millis(300));
    let (_, took) = post(hook.address, 1);
    assert!(took < Duration::from_secs(5), "the POST took {took:?}");
    let (_, took) = post(hook.address, 2);
    assert!(
        took < Duration::from_secs(5),
        "the second POST took {took:?}"
    );
    // At most 50 of the 200 are still open: the server closed the others to make room.
    let mut open = 0;
    for stream in &mut held {
        stream.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        match stream.read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => open += 1,
            _ => {}
        }
    }
    assert!(open <= 50, "{open} of 200 idle sockets still open");
    assert!(
        open >= 40,
        "only {open} of 200 idle sockets still open: the cap is 50"
    );
    // The closes are counted where the metrics endpoint serves them.
    let counted: Vec<(&str, u64)> = hook
        .run
        .observer()
        .sources()
        .into_iter()
        .flat_map(|(_, _, reading)| reading.counters)
        .collect();
    let closed = counted
        .iter()
        .find(|(event, _)| *event == "connections_closed_at_cap")
        .map(|(_, n)| *n);
    assert!(
        closed.is_some_and(|n| n >= 150),
        "connections closed at the cap, as counted: {counted:?}"
    );
    let served = hook.run.observer().prometheus();
    assert!(
        served.contains("eddy_source_events_total{")
            && served.contains("event=\"connections_closed_at_cap\""),
        "{served}"
    );
    post(hook.address, 3);
    writer.join().unwrap();
    assert_eq!(hook.finish(), vec![order(1), order(2), order(3)]);
}

#[test]
fn the_limits_are_uri_options_and_zero_is_refused() {
    let config = |query: &str| {
        let endpoint: Endpoint = format!("http://127.0.0.1:0/h?{query}").parse().unwrap();
        WebhookConfig::from_endpoint(&endpoint)
    };
    let set =
        config("header_timeout=2s&body_timeout=3s&idle_timeout=4s&max_connections=50").unwrap();
    assert_eq!(
        (
            set.header_timeout,
            set.body_timeout,
            set.idle_timeout,
            set.max_connections
        ),
        (
            Duration::from_secs(2),
            Duration::from_secs(3),
            Duration::from_secs(4),
            50
        )
    );
    let defaults = config("").unwrap();
    assert_eq!(
        (
            defaults.header_timeout,
            defaults.body_timeout,
            defaults.idle_timeout,
            defaults.max_connections
        ),
        (
            Duration::from_secs(10),
            Duration::from_secs(30),
            Duration::from_secs(60),
            1024
        )
    );
    for (query, name) in [
        ("header_timeout=0s", "header_timeout=0s"),
        ("body_timeout=0ms", "body_timeout=0ms"),
        ("idle_timeout=0s", "idle_timeout=0s"),
        ("max_connections=0", "max_connections=0"),
    ] {
        let error = config(query).expect_err("refused").to_string();
        assert!(
            error.contains(name) && error.contains("must be"),
            "{query}: {error}"
        );
    }
    let error = config("max_connections=lots").unwrap_err().to_string();
    assert!(error.contains("max_connections=lots"), "{error}");
    let zero = WebhookConfig {
        max_connections: 0,
        ..WebhookConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), "/h")
    };
    let error = WebhookSource::<Order>::bind(zero.without_wal(), EventTimeOf::Arrival)
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("max_connections is 0"), "{error}");
}
