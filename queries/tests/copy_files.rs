//! `eddy copy` between files, through the real binary: CSV to Parquet (read back with pyarrow),
//! JSON lines from stdin to CSV, and bad records into a dead-letter file with their location.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::pyarrow_json;

fn eddy(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "eddy failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn pyarrow_rows(dir: &Path) -> serde_json::Value {
    let script = "import json, sys, pyarrow.parquet as pq\n\
                  t = pq.read_table(sys.argv[1])\n\
                  print(json.dumps({'schema': {f.name: str(f.type) for f in t.schema}, 'rows': t.to_pylist()}))";
    pyarrow_json(&["-c".as_ref(), script.as_ref()], dir, "rows")
}

#[test]
fn csv_to_parquet_read_back_with_pyarrow_and_bad_rows_to_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("orders.csv");
    let mut csv = String::from("id,customer,total,at\n");
    for i in 0..500 {
        csv.push_str(&format!(
            "{i},c{},{}.5,2026-12-01T00:00:{:02}Z\n",
            i % 7,
            i,
            i % 60
        ));
    }
    csv.push_str("500,c0,1.0,not-a-time\n");
    std::fs::write(&input, csv).unwrap();
    let out = dir.path().join("pq");
    let dead = dir.path().join("dead.jsonl");
    let from = format!("csv://{}", input.display());
    let to = format!("parquet://{}", out.display());
    let dead_uri = format!("jsonl://{}", dead.display());
    let args = [
        "copy",
        "--from",
        &from,
        "--to",
        &to,
        "--event-time",
        "at",
        "--dead-letters",
        &dead_uri,
    ];
    let result = eddy(&args, b"");
    ok(&result);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("dead letters"),
        "the summary shows dead letters:\n{stderr}"
    );

    let table = pyarrow_rows(&out);
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 500, "every good row, once");
    let mut ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, (0..500).collect::<Vec<_>>());
    assert_eq!(table["schema"]["id"], "int64");
    assert_eq!(table["schema"]["total"], "double");
    assert_eq!(table["schema"]["customer"], "string");
    assert_eq!(rows[3]["customer"], "c3");

    let letters: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["kind"], "decode");
    assert_eq!(letters[0]["stage"], "from");
    assert_eq!(letters[0]["location"], format!("{}:502", input.display()));
    assert_eq!(letters[0]["raw"], "500,c0,1.0,not-a-time");
    assert!(letters[0]["error"].as_str().unwrap().contains("'at'"));
}

#[test]
fn json_lines_from_stdin_to_csv_and_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let input = b"{\"a\": 1, \"b\": \"x\"}\n{\"a\": 2, \"b\": \"y, z\"}\nnot json\n{\"a\": 3, \"b\": null}\n";
    let to = format!("csv://{}", out.display());
    let result = eddy(&["copy", "--from", "-", "--to", &to, "--quiet"], input);
    ok(&result);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "a,b\n1,x\n2,\"y, z\"\n3,\n"
    );

    let to_stdout = eddy(
        &["copy", "--from", "jsonl:///-", "--to", "-", "--quiet"],
        input,
    );
    let lines: Vec<serde_json::Value> = ok(&to_stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "the malformed line is skipped and counted");
    assert_eq!(lines[1], serde_json::json!({"a": 2, "b": "y, z"}));
}

#[test]
fn bad_uris_and_options_are_one_line_errors() {
    for (args, expected) in [
        (
            vec!["copy", "--from", "nowhere", "--to", "-"],
            "is not a URI",
        ),
        (
            vec!["copy", "--from", "ftp://x/y", "--to", "-"],
            "unknown scheme 'ftp'",
        ),
        (
            vec!["copy", "--from", "csv:///nope.csv", "--to", "-"],
            "no such file: /nope.csv",
        ),
        (
            vec!["copy", "--from", "-", "--to", "csv:///tmp/x.csv?delim=;"],
            "unknown option 'delim'",
        ),
        (
            vec!["copy", "--from", "-", "--to", "-", "--idle-exit", "soon"],
            "--idle-exit",
        ),
        (
            vec!["copy", "--from", "-", "--to", "-", "--format", "yaml"],
            "unknown format 'yaml'",
        ),
    ] {
        let out = eddy(&args, b"");
        assert!(!out.status.success(), "{args:?} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}
