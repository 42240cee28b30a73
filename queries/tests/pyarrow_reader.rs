//! The Parquet the `eddy` binary writes, read back by pyarrow (installed by `.ci/run` from pip):
//! schema and row count. Set `EDDY_SKIP_PYARROW=1` to skip where pyarrow cannot be installed.

mod common;

use std::path::Path;
use std::process::Command;

use common::pyarrow_json;

use eddy_connectors::nexmark::{generate_all, NexmarkConfig};
use eddy_queries::reference;
use serde_json::Value;

fn eddy(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "eddy {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn pyarrow(path: &Path) -> Option<Value> {
    read_with_pyarrow(path, false)
}

/// As [`pyarrow`], with every row under `"data"`.
fn pyarrow_rows(path: &Path) -> Option<Value> {
    read_with_pyarrow(path, true)
}

fn read_with_pyarrow(path: &Path, rows: bool) -> Option<Value> {
    if std::env::var_os("EDDY_SKIP_PYARROW").is_some() {
        eprintln!("EDDY_SKIP_PYARROW is set: not reading back with pyarrow");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_parquet.py");
    let mut args = vec![script.as_os_str()];
    args.extend(rows.then_some(std::ffi::OsStr::new("--rows")));
    Some(pyarrow_json(&args, path, "read_parquet.py"))
}

/// The number on the summary line `| name | value |`.
fn summary_value(summary: &str, name: &str) -> u64 {
    let line = summary
        .lines()
        .find(|l| l.starts_with(&format!("| {name} ")))
        .unwrap();
    line.split('|').nth(2).unwrap().trim().parse().unwrap()
}

#[test]
fn query_results_read_back_with_pyarrow() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q7");
    let summary = eddy(&[
        "nexmark",
        "run",
        "q7",
        "--events",
        "50000",
        "--rate",
        "1000",
        "--workers",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let rows = summary_value(&summary, "output rows");
    assert!(rows > 0);
    let Some(found) = pyarrow(&out) else { return };
    assert_eq!(found["rows"].as_u64().unwrap(), rows);
    assert_eq!(
        found["files"].as_array().unwrap().len(),
        2,
        "one file per worker"
    );
    let schema = &found["schema"];
    assert_eq!(schema["auction"], "uint64");
    assert_eq!(schema["price"], "uint64");
    assert_eq!(schema["extra"], "string");
    assert_eq!(schema["date_time"], "timestamp[ms]");
    assert_eq!(schema["window_start"], "timestamp[ms]");
    assert_eq!(schema["window_end"], "timestamp[ms]");
}

#[test]
fn generated_events_read_back_with_pyarrow() {
    let dir = tempfile::tempdir().unwrap();
    let printed = eddy(&[
        "nexmark",
        "generate",
        "--events",
        "10000",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(printed.contains("10000 events"), "{printed}");
    let mut total = 0;
    for (file, fields) in [
        (
            "person.parquet",
            &[
                "id",
                "name",
                "email_address",
                "credit_card",
                "city",
                "state",
                "date_time",
                "extra",
            ][..],
        ),
        (
            "auction.parquet",
            &[
                "id",
                "item_name",
                "description",
                "initial_bid",
                "reserve",
                "date_time",
                "expires",
                "seller",
                "category",
                "extra",
            ][..],
        ),
        (
            "bid.parquet",
            &[
                "auction",
                "bidder",
                "price",
                "channel",
                "url",
                "date_time",
                "extra",
            ][..],
        ),
    ] {
        let Some(found) = pyarrow(&dir.path().join(file)) else {
            return;
        };
        let schema = found["schema"].as_object().unwrap();
        let names: Vec<&str> = schema.keys().map(String::as_str).collect();
        let mut expected: Vec<&str> = fields.to_vec();
        expected.sort();
        let mut names_sorted = names.clone();
        names_sorted.sort();
        assert_eq!(names_sorted, expected, "{file}");
        assert_eq!(schema["date_time"], "timestamp[ms]", "{file}");
        total += found["rows"].as_u64().unwrap();
    }
    assert_eq!(total, 10_000, "every event is in exactly one file");
}

/// An updating query's change log in Parquet: the row's columns then `diff` (int64), and the
/// diffs, summed per row by pyarrow's reading, leave exactly the batch reference's rows.
#[test]
fn a_change_log_reads_back_with_pyarrow_and_sums_to_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q4");
    let summary = eddy(&[
        "nexmark",
        "run",
        "q4",
        "--events",
        "50000",
        "--rate",
        "1000",
        "--workers",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let Some(found) = pyarrow_rows(&out) else {
        return;
    };
    assert_eq!(
        found["rows"].as_u64().unwrap(),
        summary_value(&summary, "output rows")
    );
    let schema = &found["schema"];
    assert_eq!(schema["category"], "uint64");
    assert_eq!(schema["avg_price"], "uint64");
    assert_eq!(schema["diff"], "int64");
    let mut standing: std::collections::BTreeMap<(u64, u64), i64> = Default::default();
    let mut retractions = 0;
    for row in found["data"].as_array().unwrap() {
        let diff = row["diff"].as_i64().unwrap();
        retractions += usize::from(diff < 0);
        *standing
            .entry((
                row["category"].as_u64().unwrap(),
                row["avg_price"].as_u64().unwrap(),
            ))
            .or_default() += diff;
    }
    assert!(retractions > 0, "averages change as auctions close");
    let got: Vec<(u64, u64)> = standing
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|(row, n)| {
            assert_eq!(n, 1, "{row:?} stands {n} times");
            row
        })
        .collect();
    let config = NexmarkConfig {
        events: 50_000,
        events_per_second: 1_000,
        ..Default::default()
    };
    let events: Vec<_> = generate_all(&config).into_iter().map(|(_, e)| e).collect();
    let mut expected: Vec<(u64, u64)> = reference::q4(&events)
        .into_iter()
        .map(|r| (r.category, r.avg_price))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
}
