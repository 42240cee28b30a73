//! A JSON-lines file through a windowed pipeline: malformed lines are counted and reported with
//! their file and line, the run goes on, and the good records are all counted.

mod common;

use std::time::Duration;

use common::{assert_same_rows, Collect};
use eddy_connectors::JsonLinesSource;
use eddy_engine::{Pipeline, Runtime, WatermarkConfig};
use eddy_operators::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Click {
    user: String,
    ts: u64,
}

#[test]
fn malformed_lines_are_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clicks.jsonl");
    let lines = [
        r#"{"user": "ann", "ts": 1000}"#,
        r#"{"user": "bob", "ts": 1500}"#,
        r#"{"user": "ann", "ts": 1800"#,
        r#"{"user": "ann", "ts": 2500}"#,
        r#"{"user": "cid"}"#,
        r#"{"user": "bob", "ts": 2600}"#,
    ];
    std::fs::write(&path, lines.join("\n")).unwrap();
    let pipeline = Pipeline::new("clicks");
    let (sink, rows) = Collect::new();
    pipeline
        .source(
            "clicks",
            JsonLinesSource::<Click>::new([&path], "ts"),
            WatermarkConfig::bounded(Duration::from_millis(100)),
        )
        .key_by("by_user", |c: &Click| c.user.clone())
        .window("per_user", WindowSpec::tumbling(1_000), Count)
        .sink("collect", sink);
    let summary = Runtime::new(2).run(&pipeline).unwrap();
    assert_eq!(summary.rejected(), 2);
    let examples = summary.rejected_examples.join("\n");
    assert!(examples.contains("clicks.jsonl:3"), "{examples}");
    assert!(examples.contains("clicks.jsonl:5"), "{examples}");
    let got: Vec<_> = rows.lock().unwrap().drain(..).map(|(_, r)| r).collect();
    let w = |key: &str, start: u64, value: u64| WindowResult {
        key: key.to_string(),
        start,
        end: start + 1_000,
        value,
    };
    assert_same_rows(
        "clicks",
        got,
        vec![
            w("ann", 1_000, 1),
            w("bob", 1_000, 1),
            w("ann", 2_000, 1),
            w("bob", 2_000, 1),
        ],
    );
}
