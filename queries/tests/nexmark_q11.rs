//! q11 (user sessions) against its batch reference, over the same generated events, read back
//! from the Parquet the pipeline wrote, at 1 and 2 workers.

mod common;

use common::{assert_same_rows, read_parquet_dir};
use eddy_connectors::nexmark::{generate_all, Event, NexmarkConfig};
use eddy_engine::Runtime;
use eddy_queries::nexmark::{Q11Row, Query, Q11_GAP};
use eddy_queries::output::Output;
use eddy_queries::reference;

const EVENTS: u64 = 60_000;
/// Events per second of event time: 60 000 events span 60 s, so bidders have many sessions,
/// some of several bids.
const RATE: usize = 1_000;

fn config() -> NexmarkConfig {
    NexmarkConfig {
        events: EVENTS,
        events_per_second: RATE,
        ..Default::default()
    }
}

#[test]
fn q11_user_sessions() {
    let events: Vec<Event> = generate_all(&config())
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let expected = reference::q11(&events);
    assert!(
        expected.iter().any(|r| r.bid_count > 1),
        "no session has two bids: the test would not see sessions merge"
    );
    assert!(
        expected
            .iter()
            .all(|r| r.window_end - r.window_start >= Q11_GAP as i64),
        "a session lasts at least the gap"
    );
    let tmp = tempfile::tempdir().unwrap();
    for workers in [1, 2] {
        let dir = tmp.path().join(format!("q11-{workers}w"));
        let output = Output::Parquet {
            dir: dir.clone(),
            row_group_size: 4096,
        };
        let summary = Runtime::new(workers)
            .run(&Query::Q11.pipeline(config(), &output))
            .unwrap();
        assert_eq!(summary.events(), EVENTS);
        assert_eq!(
            summary.late(),
            0,
            "in-order generator input has no late bids"
        );
        let sessions = summary
            .stages
            .iter()
            .find(|s| s.name == "bid_sessions")
            .unwrap();
        assert_eq!(sessions.state, 0, "sessions left open after the run");
        assert_same_rows(
            &format!("q11, {workers} workers"),
            read_parquet_dir::<Q11Row>(&dir),
            expected.clone(),
        );
    }
}
