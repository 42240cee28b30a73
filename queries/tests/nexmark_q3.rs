//! q3 (local item suggestion, an updating join) against its batch reference, over generated
//! events at 1 and 2 workers: the change log, summed, is the reference's rows.

use eddy_connectors::nexmark::{generate_all, NexmarkConfig, NexmarkSource};
use eddy_engine::change::consolidate;
use eddy_engine::testing::CollectSink;
use eddy_engine::Change;
use eddy_engine::{Pipeline, Runtime, WatermarkConfig};
use eddy_queries::nexmark::{q3, Q3Row, Query};
use eddy_queries::output::Output;
use eddy_queries::reference;

const EVENTS: u64 = 60_000;

fn config() -> NexmarkConfig {
    NexmarkConfig {
        events: EVENTS,
        events_per_second: 1_000,
        ..Default::default()
    }
}

#[test]
fn q3_local_item_suggestion() {
    let events: Vec<_> = generate_all(&config())
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let expected = reference::q3(&events);
    assert!(
        expected.len() > 50,
        "the reference has {} rows: the test would prove little",
        expected.len()
    );
    for workers in [1, 2] {
        let pipeline = Pipeline::new("q3");
        let out = CollectSink::new();
        let events = pipeline.source(
            "nexmark",
            NexmarkSource::new(config()),
            WatermarkConfig::default(),
        );
        q3(events).sink("sink", out.clone());
        let summary = Runtime::new(workers).run(&pipeline).unwrap();
        assert_eq!(summary.events(), EVENTS);
        let log = out.rows();
        assert!(
            log.iter().all(|(_, c)| c.diff > 0),
            "an inner join of growing inputs only adds rows"
        );
        let rows: Vec<Q3Row> = consolidate(log.into_iter().map(|(_, c)| c)).unwrap();
        assert_eq!(rows, expected, "{workers} workers");
    }
}

#[test]
fn q3_through_the_cli_pipeline_writes_a_change_log() {
    let events: Vec<_> = generate_all(&config())
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let output = Output::JsonLines {
        dir: dir.path().to_path_buf(),
    };
    Runtime::new(2)
        .run(&Query::Q3.pipeline(config(), &output))
        .unwrap();
    let mut log: Vec<Change<Q3Row>> = Vec::new();
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        log.extend(text.lines().map(|line| serde_json::from_str(line).unwrap()));
    }
    assert_eq!(consolidate(log).unwrap(), reference::q3(&events));
}
