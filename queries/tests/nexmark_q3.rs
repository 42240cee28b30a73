//! q3 (local item suggestion, an updating join) against its batch reference, over generated
//! events at 1 and 2 workers and in two processes: the change log, summed, is the reference's
//! rows.

mod common;

use common::{config, events, run_everywhere, standing};
use eddy_engine::change::consolidate;
use eddy_engine::Change;
use eddy_engine::Runtime;
use eddy_queries::nexmark::{q3, Q3Row, Query};
use eddy_queries::output::Output;
use eddy_queries::reference;

#[test]
fn q3_local_item_suggestion() {
    let expected = reference::q3(&events());
    assert!(
        expected.len() > 50,
        "the reference has {} rows: the test would prove little",
        expected.len()
    );
    for (run, log) in run_everywhere::<Change<Q3Row>>(Query::Q3, q3) {
        assert!(
            log.iter().all(|c| c.diff > 0),
            "{run}: an inner join of growing inputs only adds rows"
        );
        assert_eq!(standing(&run, log), expected, "{run}");
    }
}

#[test]
fn q3_through_the_cli_pipeline_writes_a_change_log() {
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
    assert_eq!(consolidate(log).unwrap(), reference::q3(&events()));
}
