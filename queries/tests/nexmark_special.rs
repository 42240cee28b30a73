//! q10 (partitioned log), q12 (processing-time windows) and q13 (side input join) against their
//! batch references, over the same generated events, at 1 and 2 workers and in two processes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::{
    assert_parquet_matches, assert_same_rows, assert_two_processes_match, config, events_of,
    pyarrow_json, read_parquet_dir, run_two_processes, sorted,
};
use eddy_connectors::nexmark::NexmarkConfig;
use eddy_connectors::TimePartitioning;
use eddy_engine::Runtime;
use eddy_queries::nexmark::{q13_default_table, Q10Row, Q12Row, Q13Row, Query, Q12_WINDOW};
use eddy_queries::output::Output;
use eddy_queries::reference;

fn parquet(dir: &Path) -> Output {
    Output::Parquet {
        dir: dir.to_path_buf(),
        row_group_size: 4096,
    }
}

/// The partition directories under `root` (`dt=*/hm=*`), relative to it, sorted.
fn partitions(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dt in std::fs::read_dir(root).unwrap() {
        let dt = dt.unwrap().path();
        if !dt.is_dir() || !dt.file_name().unwrap().to_string_lossy().starts_with("dt=") {
            continue;
        }
        for hm in std::fs::read_dir(&dt).unwrap() {
            let hm = hm.unwrap().path();
            found.push(hm.strip_prefix(root).unwrap().to_path_buf());
        }
    }
    found.sort();
    found
}

#[test]
fn q10_writes_every_bid_once_into_its_hour_and_marks_partitions_complete() {
    // One event per second of event time: 20 000 events span 5.6 hours, 6 or 7 partitions.
    let config = NexmarkConfig {
        events: 20_000,
        events_per_second: 1,
        ..Default::default()
    };
    let events = events_of(&config);
    let expected = reference::q10(&events);
    let hours: Vec<PathBuf> = expected
        .iter()
        .map(|r| TimePartitioning::Hour.path_of(r.date_time as u64))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(hours.len() >= 5, "{} partitions prove little", hours.len());
    let tmp = tempfile::tempdir().unwrap();
    for workers in [1, 2] {
        let dir = tmp.path().join(format!("q10-{workers}w"));
        let summary = Runtime::new(workers)
            .run(&Query::Q10.pipeline(config.clone(), &parquet(&dir)))
            .unwrap();
        assert_eq!(summary.output_rows(), expected.len() as u64);
        check_q10_output(&dir, &hours, &expected, &format!("q10, {workers} workers"));
    }
    let dir = tmp.path().join("q10-2p");
    run_two_processes(Query::Q10, &config, &dir, &[]);
    check_q10_output(&dir, &hours, &expected, "q10, 2 processes");
}

/// q10's output under `dir`: exactly the partitions `hours`, each marked `_SUCCESS` and holding
/// only bids of its hour, no progress notes left, and every bid of `expected` once, as the
/// parquet crate and pyarrow read it.
fn check_q10_output(dir: &Path, hours: &[PathBuf], expected: &[Q10Row], what: &str) {
    assert_eq!(partitions(dir), hours, "{what}");
    let mut all = Vec::new();
    for partition in partitions(dir) {
        let path = dir.join(&partition);
        assert!(
            path.join("_SUCCESS").is_file(),
            "{what}: {} has no _SUCCESS",
            partition.display()
        );
        let rows: Vec<Q10Row> = read_parquet_dir(&path);
        assert!(!rows.is_empty());
        for r in &rows {
            assert_eq!(
                TimePartitioning::Hour.path_of(r.date_time as u64),
                partition,
                "{what}: {r:?} is in the wrong partition"
            );
        }
        all.extend(rows);
    }
    assert!(
        !dir.join("_progress").exists(),
        "{what}: progress notes left"
    );
    assert_same_rows(what, all, expected.to_vec());
    read_back_with_pyarrow(dir, expected, what);
}

/// pyarrow's Hive-partitioned dataset reader sees every bid once, each in its UTC date and hour.
fn read_back_with_pyarrow(dir: &Path, expected: &[Q10Row], what: &str) {
    if std::env::var_os("EDDY_SKIP_PYARROW").is_some() {
        eprintln!("EDDY_SKIP_PYARROW is set: not reading back with pyarrow");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_partitioned.py");
    let found: serde_json::Value = pyarrow_json(&[script.as_os_str()], dir, what);
    assert_eq!(
        found["rows"].as_u64().unwrap(),
        expected.len() as u64,
        "{what}"
    );
    assert_eq!(found["misplaced"].as_u64().unwrap(), 0, "{what}");
    assert_eq!(
        found["without_success"].as_array().unwrap().len(),
        0,
        "{what}: {}",
        found["without_success"]
    );
    let bids: Vec<(u64, u64, u64, i64)> = serde_json::from_value(found["bids"].clone()).unwrap();
    let want: Vec<(u64, u64, u64, i64)> = expected
        .iter()
        .map(|r| (r.auction, r.bidder, r.price, r.date_time))
        .collect();
    assert_eq!(sorted(bids), sorted(want), "{what}: pyarrow's rows");
}

#[test]
fn q13_joins_bids_with_a_side_table_from_a_file() {
    let config = config();
    let events = events_of(&config);
    let tmp = tempfile::tempdir().unwrap();
    // Every third key, valued "v{key}": a third of the bids find a match.
    let table: std::collections::HashMap<u64, String> = (0..10_000)
        .step_by(3)
        .map(|k| (k, format!("v{k}")))
        .collect();
    let csv = tmp.path().join("side.csv");
    let mut text = String::from("key,value\n");
    for k in (0..10_000u64).step_by(3) {
        text.push_str(&format!("{k},v{k}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let jsonl = tmp.path().join("side.jsonl");
    let lines: Vec<String> = (0..10_000u64)
        .step_by(3)
        .map(|k| format!("{{\"key\": {k}, \"value\": \"v{k}\"}}"))
        .collect();
    std::fs::write(&jsonl, lines.join("\n")).unwrap();
    let expected = reference::q13(&events, &table);
    let all_bids = reference::q10(&events).len();
    assert!(expected.len() > 1000 && expected.len() < all_bids);
    for workers in [1, 2] {
        for file in [&csv, &jsonl] {
            let dir = tmp.path().join(format!(
                "q13-{workers}w-{}",
                file.extension().unwrap().to_string_lossy()
            ));
            let pipeline = Query::Q13
                .pipeline_with_side_input(config.clone(), &parquet(&dir), file)
                .unwrap();
            Runtime::new(workers).run(&pipeline).unwrap();
            assert_same_rows(
                &format!("q13 with {}, {workers} workers", file.display()),
                read_parquet_dir::<Q13Row>(&dir),
                expected.clone(),
            );
        }
    }
    for file in [&csv, &jsonl] {
        let extension = file.extension().unwrap().to_string_lossy();
        let dir = tmp.path().join(format!("q13-2p-{extension}"));
        let args = ["--side-input", file.to_str().unwrap()];
        assert_two_processes_match(Query::Q13, &config, &dir, &args, expected.clone());
    }
}

#[test]
fn q13_without_a_file_uses_the_default_table() {
    let config = config();
    let expected = reference::q13(&events_of(&config), &q13_default_table());
    assert_eq!(expected.len(), reference::q10(&events_of(&config)).len());
    assert_parquet_matches::<Q13Row>(Query::Q13, &config, &expected, |_| {});
}

#[test]
fn q13_with_a_missing_or_malformed_file_fails_naming_it() {
    let config = NexmarkConfig::with_events(1_000);
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.csv");
    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, "1,one\ntwo,2\n").unwrap();
    for (file, mentions) in [(&missing, "missing.csv"), (&bad, "bad.csv, line 2")] {
        for workers in [1, 2] {
            let pipeline = Query::Q13
                .pipeline_with_side_input(config.clone(), &Output::Count, file)
                .unwrap();
            let error = Runtime::new(workers)
                .run(&pipeline)
                .unwrap_err()
                .to_string();
            assert!(error.contains(mentions), "{error}");
        }
    }
    assert!(Query::Q5
        .pipeline_with_side_input(config, &Output::Count, &bad)
        .is_err());
}

#[test]
fn q12_counts_every_bid_once_per_bidder_over_its_processing_time_windows() {
    let config = config();
    let expected = reference::q12_totals(&events_of(&config));
    let tmp = tempfile::tempdir().unwrap();
    for workers in [1, 2] {
        let dir = tmp.path().join(format!("q12-{workers}w"));
        Runtime::new(workers)
            .run(&Query::Q12.pipeline(config.clone(), &parquet(&dir)))
            .unwrap();
        assert_eq!(
            q12_totals_in(&dir),
            expected,
            "q12, {workers} workers: totals per bidder"
        );
    }
    let dir = tmp.path().join("q12-2p");
    run_two_processes(Query::Q12, &config, &dir, &[]);
    assert_eq!(
        q12_totals_in(&dir),
        expected,
        "q12, 2 processes: totals per bidder"
    );
}

/// The bids per bidder summed over q12's windows in `dir`, each row checked to be a bidder's
/// only row in an aligned [`Q12_WINDOW`]-long window, with some bids.
fn q12_totals_in(dir: &Path) -> BTreeMap<u64, u64> {
    let mut totals: BTreeMap<u64, u64> = BTreeMap::new();
    let mut windows = BTreeSet::new();
    for r in read_parquet_dir::<Q12Row>(dir) {
        assert_eq!(r.window_end - r.window_start, Q12_WINDOW as i64, "{r:?}");
        assert_eq!(r.window_start % Q12_WINDOW as i64, 0, "{r:?}");
        assert!(r.bid_count > 0, "{r:?}");
        assert!(
            windows.insert((r.bidder, r.window_start)),
            "two rows for one bidder and window: {r:?}"
        );
        *totals.entry(r.bidder).or_default() += r.bid_count;
    }
    totals
}
