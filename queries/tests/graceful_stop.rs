//! Nothing acknowledged is lost: SIGTERM during `eddy copy` from RabbitMQ, MQTT, NATS JetStream
//! and Kafka while publishing goes on, SIGINT during a copy from a webhook without a log
//! (`wal=off`, its buffer drained by the stop) while senders post, an
//! output that cannot be written (at the start, and in the middle of a run), and a graceful stop
//! of a windowed query, through the real binary, each broker's own Python client on a real broker
//! (`bash scripts/brokers.sh up`) and pyarrow reading the Parquet back.

mod common;

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{crash_seed, pyarrow_ids, read_parquet_dir, signal, wait_at_most};
use eddy_connectors::nexmark::NexmarkConfig;
use eddy_queries::nexmark::Q7Row;
use rand::{Rng, SeedableRng};

#[cfg(feature = "amqp")]
#[allow(dead_code)]
#[path = "../../connectors/tests/clients/amqp_client.rs"]
mod amqp_client;

#[cfg(feature = "mqtt")]
#[allow(dead_code)]
#[path = "../../connectors/tests/clients/mqtt_client.rs"]
mod mqtt_client;

#[cfg(feature = "nats")]
#[allow(dead_code)]
#[path = "../../connectors/tests/clients/nats_client.rs"]
mod nats_client;

fn eddy(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the eddy binary runs")
}

/// Temporary files (`.name.tmp`) left under `dir`.
fn temporary_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// Every id of `0..n` is among `ids` (at least once).
fn assert_every_id(ids: &[u64], n: u64, what: &str) {
    let seen: BTreeSet<u64> = ids.iter().copied().collect();
    let missing: Vec<u64> = (0..n).filter(|i| !seen.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} of {n} ids missing from the output (first: {:?}); {} rows read",
        missing.len(),
        &missing[..missing.len().min(10)],
        ids.len()
    );
}

/// Asserts that a copy stopped by a signal ended gracefully: status 0, its summary saying it
/// was stopped, and no temporary file left in its output `dir`.
fn assert_stopped_gracefully(stopped: &Output, dir: &Path, seed: u64) {
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert!(
        stopped.status.success(),
        "seed {seed}: a signal ends the copy with status 0: {stderr}"
    );
    assert!(
        stderr.contains("stopped"),
        "seed {seed}: the summary says so: {stderr}"
    );
    assert_eq!(temporary_files(dir), Vec::<String>::new(), "seed {seed}");
}

/// How many records the SIGTERM tests publish: a chunk before the copy starts, the others
/// while it runs and after it was stopped.
const CHUNK: u64 = 300;
const CHUNKS: u64 = 5;

/// The SIGTERM test, for the broker source `from`: `publish(ids)` sends the records with those
/// ids (`CHUNK` before the copy starts, the rest in chunks 200 ms apart while it runs);
/// `eddy copy --from FROM --to parquet://DIR --workers 2` gets a SIGTERM at a seeded random
/// moment, must end with status 0 saying it stopped and leave no temporary file; then a second
/// copy with `--idle-exit IDLE_EXIT` reads the rest (what was published after the stop, and
/// what the stop did not acknowledge), and pyarrow must find every id of `0..CHUNK * CHUNKS`
/// at least once. The caller checks that the broker holds nothing unacknowledged in the end.
fn sigterm_during_a_copy_loses_nothing(
    from: &str,
    idle_exit: &str,
    publish: impl Fn(Range<u64>) + Send + 'static,
) {
    let seed = crash_seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let out = tempfile::tempdir().unwrap();
    publish(0..CHUNK);
    let to = format!("parquet://{}", out.path().display());
    let copy = eddy(&["copy", "--from", from, "--to", &to, "--workers", "2"]);
    // Publishing goes on while the copy runs and when it is stopped.
    let publisher = std::thread::spawn(move || {
        for chunk in 1..CHUNKS {
            publish(chunk * CHUNK..(chunk + 1) * CHUNK);
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    std::thread::sleep(Duration::from_millis(rng.gen_range(1500..3500)));
    signal(&copy, "TERM");
    let stopped = wait_at_most(copy, Duration::from_secs(30));
    assert_stopped_gracefully(&stopped, out.path(), seed);
    publisher.join().unwrap();

    // The rest: what was published after the stop, and what the stop did not acknowledge.
    let rest = eddy(&[
        "copy",
        "--from",
        from,
        "--to",
        &to,
        "--idle-exit",
        idle_exit,
    ]);
    let rest = wait_at_most(rest, Duration::from_secs(90));
    assert!(
        rest.status.success(),
        "seed {seed}: the second copy fails: {}",
        String::from_utf8_lossy(&rest.stderr)
    );
    assert_every_id(
        &pyarrow_ids(out.path()),
        CHUNK * CHUNKS,
        &format!("seed {seed}"),
    );
}

#[cfg(feature = "amqp")]
mod rabbitmq {
    use super::*;
    use amqp_client::{client, require_broker, TestQueue, BROKER};
    use common::eddy_copy;

    fn records(ids: Range<u64>) -> String {
        ids.map(|i| format!("{{\"id\": {i}, \"note\": \"n{i}\"}}\n"))
            .collect()
    }

    fn ready(queue: &TestQueue) -> u64 {
        client(&["count", &queue.0], "")["ready"].as_u64().unwrap()
    }

    #[test]
    fn a_sigterm_during_a_copy_loses_nothing_the_broker_had() {
        require_broker();
        let queue = TestQueue::new("sigterm");
        let from = format!("amqp://{BROKER}/{}?prefetch=200", queue.0);
        let name = queue.0.clone();
        sigterm_during_a_copy_loses_nothing(&from, "3s", move |ids| {
            client(&["publish", &name], &records(ids));
        });
        assert_eq!(
            ready(&queue),
            0,
            "every message was acknowledged in the end"
        );
    }

    #[test]
    fn an_output_that_cannot_be_written_fails_at_the_start_and_takes_nothing() {
        require_broker();
        let queue = TestQueue::new("unwritable");
        client(&["publish", &queue.0], &records(0..200));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "not a directory").unwrap();
        let from = format!("amqp://{BROKER}/{}", queue.0);
        let to = format!("parquet://{}/out", file.display());
        let error = eddy_copy(&["--from", &from, "--to", &to, "--idle-exit", "2s"])
            .expect_err("an output under a regular file cannot be written");
        assert!(
            error.contains("cannot write into") && error.contains("a-file"),
            "the error names the output and why: {error}"
        );
        assert_eq!(ready(&queue), 200, "the queue still holds every message");
    }

    #[test]
    fn a_sink_that_fails_mid_run_acknowledges_nothing_it_did_not_write() {
        require_broker();
        let queue = TestQueue::new("midrun");
        let n: u64 = 1200;
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        let from = format!("amqp://{BROKER}/{}?prefetch=100", queue.0);
        let to = format!("parquet://{}", out.display());
        client(&["publish", &queue.0], &records(0..400));
        let copy = eddy(&[
            "copy",
            "--from",
            &from,
            "--to",
            &to,
            "--commit-every",
            "200ms",
        ]);
        std::thread::sleep(Duration::from_secs(3));
        // The output directory goes away (what it committed kept aside) and a file takes its
        // place: the next file cannot be opened.
        let kept = root.path().join("kept");
        std::fs::rename(&out, &kept).unwrap();
        std::fs::write(&out, "in the way").unwrap();
        client(&["publish", &queue.0], &records(400..n));
        let failed = wait_at_most(copy, Duration::from_secs(30));
        assert!(
            !failed.status.success(),
            "the copy fails once its sink cannot write: {}",
            String::from_utf8_lossy(&failed.stderr)
        );
        std::fs::remove_file(&out).unwrap();
        eddy_copy(&["--from", &from, "--to", &to, "--idle-exit", "3s"]).unwrap();
        let mut ids = pyarrow_ids(&kept);
        ids.extend(pyarrow_ids(&out));
        assert_every_id(&ids, n, "committed before the failure, or copied after it");
        assert_eq!(ready(&queue), 0);
    }
}

#[cfg(feature = "mqtt")]
mod mqtt {
    use super::*;
    use mqtt_client::{client, forget, require_mosquitto, unique, BROKER};

    #[test]
    fn a_sigterm_during_a_copy_loses_nothing_the_broker_had() {
        require_mosquitto();
        let topic = unique("sigterm");
        // A persistent session, created before anything is published: what the stopped copy
        // did not acknowledge, and what was published after it, waits there for the next copy
        // with the same client id.
        let client_id = topic.replace('/', "-");
        client(&["subscribe", "--topic", &topic, "--client-id", &client_id]);
        let from = format!("mqtt://{BROKER}/{topic}?client_id={client_id}");
        let to_topic = topic.clone();
        sigterm_during_a_copy_loses_nothing(&from, "3s", move |ids| {
            let (start, count) = (ids.start.to_string(), (ids.end - ids.start).to_string());
            let sent = client(&[
                "produce", "--topic", &to_topic, "--count", &count, "--start", &start,
            ]);
            assert_eq!(sent["acked"].as_array().unwrap().len(), ids.count());
        });
        let rest = client(&[
            "consume",
            "--topic",
            &topic,
            "--client-id",
            &client_id,
            "--persistent",
            "--no-subscribe",
            "--idle",
            "1",
        ]);
        assert_eq!(
            rest["count"], 0,
            "every message was acknowledged in the end: {rest}"
        );
        forget(&client_id);
    }
}

#[cfg(feature = "nats")]
mod nats {
    use super::*;
    use nats_client::{client, number, require_nats, Stream, ADDRESS};

    #[test]
    fn a_sigterm_during_a_copy_loses_nothing_the_broker_had() {
        require_nats();
        let stream = Stream::create();
        // A durable consumer: the second copy reads on from what the first acknowledged. What
        // the first pulled and did not acknowledge, JetStream delivers again after the ack wait
        // (30 s by default): a shorter one, so that the second copy gets it before its idle
        // exit. Not shorter than the idle timeout (5 s) and a commit: the watermark of
        // messages redelivered with their old publish times moves only once the source is
        // idle, and until it moves the sinks commit nothing, so nothing is acknowledged and
        // JetStream would deliver the same messages again and again.
        let from = format!(
            "nats://{ADDRESS}/{}?stream={}&durable=copy&ack_wait=10s",
            stream.subject, stream.name
        );
        let (subject, name) = (stream.subject.clone(), stream.name.clone());
        sigterm_during_a_copy_loses_nothing(&from, "15s", move |ids| {
            let (start, count) = (ids.start.to_string(), (ids.end - ids.start).to_string());
            let sent = client(&[
                "produce", &subject, &count, "--stream", &name, "--start", &start,
            ]);
            assert_eq!(sent["acked"].as_array().unwrap().len(), ids.count());
        });
        let consumer = stream.consumer("copy");
        assert_eq!(
            (
                number(&consumer, "num_pending"),
                number(&consumer, "num_ack_pending")
            ),
            (0, 0),
            "every message was acknowledged in the end: {consumer}"
        );
    }
}

#[cfg(feature = "kafka")]
#[path = "../../connectors/tests/clients/kafka_client.rs"]
mod kafka_client;

#[cfg(feature = "kafka")]
mod kafka {
    use super::*;
    use kafka_client::{client, require_broker, unique, BROKER};

    #[test]
    fn a_sigterm_during_a_copy_loses_nothing_the_broker_had() {
        require_broker();
        let topic = unique("sigterm");
        let group = unique("group");
        client(&["create", &topic, "--partitions", "2"]);
        // A new group starts at the earliest offsets; the second copy, in the same group, at
        // what the first committed.
        let from = format!("kafka://{BROKER}/{topic}?group={group}");
        let to_topic = topic.clone();
        sigterm_during_a_copy_loses_nothing(&from, "5s", move |ids| {
            let (first, n) = (ids.start.to_string(), (ids.end - ids.start).to_string());
            let sent = client(&["produce", &to_topic, &n, "--first", &first]);
            assert_eq!(sent["acked"].as_array().unwrap().len(), ids.count());
        });
        assert_eq!(
            client(&["committed", &topic, &group]),
            client(&["end-offsets", &topic]),
            "every message was acknowledged (its offset committed) in the end"
        );
    }
}

#[cfg(feature = "http")]
mod webhook {
    use super::*;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// How many senders post at once, and how many ids they have between them.
    const SENDERS: u64 = 4;
    const IDS: u64 = 1200;

    /// Posts the ids `sender, sender + SENDERS, ...` below `IDS` to `url`, one JSON record a
    /// request, until they are all sent or the webhook refuses (it is stopping); a 429 is tried
    /// again. Returns the ids answered 2xx.
    fn post(url: &str, sender: u64, stop: &AtomicBool) -> Vec<u64> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut accepted = Vec::new();
        let mut id = sender;
        while id < IDS && !stop.load(Ordering::Relaxed) {
            let body = format!("{{\"id\": {id}, \"note\": \"n{id}\"}}");
            match agent
                .post(url)
                .header("Content-Type", "application/json")
                .send(&body)
            {
                Ok(_) => {
                    accepted.push(id);
                    id += SENDERS;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(ureq::Error::StatusCode(429)) => std::thread::sleep(Duration::from_millis(20)),
                // Refused (503), or the connection closed: the webhook is stopping.
                Err(_) => break,
            }
        }
        accepted
    }

    #[test]
    fn a_sigint_during_a_copy_loses_nothing_answered_2xx() {
        sigint_during_a_copy(false);
    }

    #[test]
    fn a_sigint_during_a_copy_with_the_log_leaves_the_rest_to_the_next_run() {
        sigint_during_a_copy(true);
    }

    /// Senders post while `eddy copy --from http://… --to parquet://… --workers 2` runs; it
    /// gets a SIGINT at a seeded random moment and must stop gracefully. Without a log
    /// (`wal=off`) the stop drains the buffer, so every id answered 2xx is in its output; with
    /// the default log (under the test's `EDDY_STATE_DIR`) what it did not read stays in the
    /// log, and a second copy with `--idle-exit` reads it: every id answered 2xx is in one of
    /// the two outputs.
    fn sigint_during_a_copy(logged: bool) {
        let seed = crash_seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let out = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let url = format!("http://{address}/orders");
        let from = if logged {
            url.clone()
        } else {
            // What this is about is the memory buffer, which a stop drains.
            format!("{url}?wal=off")
        };
        let copy = |to: &Path, args: &[&str]| {
            let to = format!("parquet://{}", to.display());
            Command::new(env!("CARGO_BIN_EXE_eddy"))
                .args(["copy", "--from", &from, "--to", &to])
                .args(args)
                .env("EDDY_STATE_DIR", state.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("the eddy binary runs")
        };
        let first = copy(out.path(), &["--workers", "2"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the webhook never listened on {address}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..SENDERS)
            .map(|sender| {
                let (url, stop) = (url.clone(), Arc::clone(&stop));
                std::thread::spawn(move || post(&url, sender, &stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1500)));
        signal(&first, "INT");
        let stopped = wait_at_most(first, Duration::from_secs(30));
        stop.store(true, Ordering::Relaxed);
        let accepted: Vec<u64> = senders
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect();
        assert_stopped_gracefully(&stopped, out.path(), seed);
        assert!(
            !accepted.is_empty(),
            "seed {seed}: no request was answered 2xx before the stop"
        );

        let mut written: BTreeSet<u64> = ids_in(out.path()).into_iter().collect();
        let mut said = format!(
            "{}{}",
            String::from_utf8_lossy(&stopped.stderr),
            String::from_utf8_lossy(&stopped.stdout)
        );
        if logged {
            let rest = tempfile::tempdir().unwrap();
            let next = wait_at_most(
                copy(rest.path(), &["--idle-exit", "3s"]),
                Duration::from_secs(60),
            );
            let next_said = String::from_utf8_lossy(&next.stderr);
            assert!(next.status.success(), "seed {seed}: {next_said}");
            said.push_str(&format!("\nthe next copy said: {next_said}"));
            written.extend(ids_in(rest.path()));
        }
        let lost: Vec<u64> = accepted
            .iter()
            .copied()
            .filter(|id| !written.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "seed {seed}: {} of the {} ids answered 2xx are not in the output (first: {:?}); \
             the copy said: {said}",
            lost.len(),
            accepted.len(),
            &lost[..lost.len().min(10)],
        );
        eprintln!(
            "{} of {IDS} ids answered 2xx before the stop, {} distinct ids written",
            accepted.len(),
            written.len()
        );
    }

    /// The ids in the Parquet files under `dir` (none when no file was committed there).
    fn ids_in(dir: &Path) -> Vec<u64> {
        let committed = std::fs::read_dir(dir).unwrap().flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".parquet") && !name.starts_with('.')
        });
        if committed {
            pyarrow_ids(dir)
        } else {
            Vec::new()
        }
    }
}

#[test]
fn a_graceful_stop_fires_no_open_window_and_leaves_no_temporary_file() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("q7");
    let dir_arg = dir.display().to_string();
    let run = eddy(&[
        "nexmark",
        "run",
        "q7",
        "--events",
        "1000000000",
        "--workers",
        "2",
        "--out",
        &dir_arg,
    ]);
    std::thread::sleep(Duration::from_secs(3));
    signal(&run, "INT");
    let stopped = wait_at_most(run, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&stopped.stdout);
    assert!(
        stopped.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert!(stdout.contains("stopped"), "{stdout}");
    assert_eq!(temporary_files(&dir), Vec::<String>::new());
    let events: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("| events "))
        .and_then(|rest| rest.trim().trim_matches('|').trim().parse().ok())
        .unwrap_or_else(|| panic!("the summary counts the events read: {stdout}"));
    let rows: Vec<Q7Row> = read_parquet_dir(&dir);
    assert!(
        !rows.is_empty(),
        "windows closed before the stop were written"
    );
    // Every window written is complete: the batch reference over more events than were read
    // (events come in event-time order, with bounded disorder) has the same row.
    let config = NexmarkConfig {
        events: events + 100_000,
        ..Default::default()
    };
    let reference: BTreeSet<Q7Row> = eddy_queries::reference::q7(&common::events_of(&config))
        .into_iter()
        .collect();
    for row in &rows {
        assert!(
            reference.contains(row),
            "a window written at the stop is incomplete: {row:?}"
        );
    }
}
