//! q8 (new users) against its batch reference, over the same generated events, read back from
//! the Parquet the pipeline wrote, at 1 and 2 workers.

mod common;

use common::{assert_same_rows, read_parquet_dir};
use eddy_connectors::nexmark::{generate_all, NexmarkConfig};
use eddy_engine::Runtime;
use eddy_queries::nexmark::{Q8Row, Query};
use eddy_queries::output::Output;
use eddy_queries::reference;

const EVENTS: u64 = 60_000;
/// Events per second of event time: 60 000 events span 60 s, six 10 s windows and a half.
const RATE: usize = 1_000;

#[test]
fn q8_new_users() {
    let config = NexmarkConfig {
        events: EVENTS,
        events_per_second: RATE,
        ..Default::default()
    };
    let events: Vec<_> = generate_all(&config).into_iter().map(|(_, e)| e).collect();
    let expected = reference::q8(&events);
    eprintln!("q8 reference: {} rows", expected.len());
    assert!(
        expected.len() >= 10,
        "the reference has {} rows: the test would prove little",
        expected.len()
    );
    let tmp = tempfile::tempdir().unwrap();
    for workers in [1, 2] {
        let dir = tmp.path().join(format!("q8-{workers}w"));
        let output = Output::Parquet {
            dir: dir.clone(),
            row_group_size: 4096,
        };
        let summary = Runtime::new(workers)
            .run(&Query::Q8.pipeline(config.clone(), &output))
            .unwrap();
        assert_eq!(summary.events(), EVENTS);
        assert_eq!(
            summary.late(),
            0,
            "in-order generator input has no late records"
        );
        let join = summary
            .stages
            .iter()
            .find(|s| s.name == "new_users")
            .unwrap();
        assert_eq!(
            join.state, 0,
            "the join holds nothing once the input has ended"
        );
        assert_same_rows(
            &format!("q8, {workers} workers"),
            read_parquet_dir::<Q8Row>(&dir),
            expected.clone(),
        );
    }
}
