//! Every query against its batch reference, over the same generated events, read back from
//! the Parquet the pipeline wrote: 1 worker, 2 workers, and 2 processes of 1 worker on loopback.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{assert_same_rows, read_parquet_dir};
use eddy_connectors::nexmark::{generate_all, Event, NexmarkConfig};
use eddy_engine::Runtime;
use eddy_queries::nexmark::{Q0Row, Q1Row, Q2Row, Q5Row, Q7Row, Query};
use eddy_queries::output::Output;
use eddy_queries::reference;

const EVENTS: u64 = 60_000;
/// Events per second of event time: 60 000 events span 60 s, so q5 and q7 see many windows.
const RATE: usize = 1_000;

fn config() -> NexmarkConfig {
    NexmarkConfig {
        events: EVENTS,
        events_per_second: RATE,
        ..Default::default()
    }
}

fn events() -> Vec<Event> {
    generate_all(&config())
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

fn run_in_process(query: Query, workers: usize, dir: &Path) {
    let output = Output::Parquet {
        dir: dir.to_path_buf(),
        row_group_size: 4096,
    };
    let summary = Runtime::new(workers)
        .run(&query.pipeline(config(), &output))
        .unwrap();
    assert_eq!(summary.events(), EVENTS);
    assert_eq!(
        summary.late(),
        0,
        "in-order generator input has no late records"
    );
    assert_eq!(summary.files().len(), workers, "one file per worker");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Two `eddy` processes of one worker each, talking over loopback.
fn run_two_processes(query: Query, dir: &Path) {
    let hosts = dir.with_extension("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();
    let children: Vec<_> = (0..2)
        .map(|process| {
            Command::new(env!("CARGO_BIN_EXE_eddy"))
                .args([
                    "nexmark",
                    "run",
                    &query.to_string(),
                    "--quiet",
                    "--workers",
                    "1",
                    "--processes",
                    "2",
                ])
                .args([
                    "--process",
                    &process.to_string(),
                    "--hosts",
                    hosts.to_str().unwrap(),
                ])
                .args(["--events", &EVENTS.to_string(), "--rate", &RATE.to_string()])
                .args(["--out", dir.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (process, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "process {process} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn check<T>(query: Query, expected: Vec<T>)
where
    T: serde::de::DeserializeOwned + std::fmt::Debug + PartialEq + Clone,
{
    assert!(
        !expected.is_empty(),
        "the reference of {query} is empty: the test would prove nothing"
    );
    let tmp = tempfile::tempdir().unwrap();
    for workers in [1, 2] {
        let dir = tmp.path().join(format!("{query}-{workers}w"));
        run_in_process(query, workers, &dir);
        assert_same_rows(
            &format!("{query}, {workers} workers"),
            read_parquet_dir(&dir),
            expected.clone(),
        );
    }
    let dir = tmp.path().join(format!("{query}-2p"));
    run_two_processes(query, &dir);
    assert_same_rows(
        &format!("{query}, 2 processes"),
        read_parquet_dir(&dir),
        expected,
    );
}

#[test]
fn q0_pass_through() {
    check::<Q0Row>(Query::Q0, reference::q0(&events()));
}

#[test]
fn q1_currency_conversion() {
    check::<Q1Row>(Query::Q1, reference::q1(&events()));
}

#[test]
fn q2_selection() {
    check::<Q2Row>(Query::Q2, reference::q2(&events()));
}

#[test]
fn q5_hot_items() {
    check::<Q5Row>(Query::Q5, reference::q5(&events()));
}

#[test]
fn q7_highest_bid() {
    check::<Q7Row>(Query::Q7, reference::q7(&events()));
}
