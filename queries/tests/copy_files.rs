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

/// The dead letters a copy wrote to `path`, as JSON.
fn dead_letters(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn an_unterminated_csv_quote_is_one_dead_letter_not_the_rest_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.csv");
    let mut csv = String::from("id,name,n\n");
    for i in 0..1000 {
        match i {
            10 => csv.push_str("10,\"unterminated,5\n"),
            20 => csv.push_str("20,too,many,fields\n"),
            30 => csv.push_str("30,too few\n"),
            _ => csv.push_str(&format!("{i},name{i},{i}\n")),
        }
    }
    std::fs::write(&input, csv).unwrap();
    let out = dir.path().join("pq");
    let dead = dir.path().join("dead.jsonl");
    let (from, to) = (
        format!("csv://{}", input.display()),
        format!("parquet://{}", out.display()),
    );
    let dead_uri = format!("jsonl://{}", dead.display());
    let args = [
        "copy",
        "--from",
        &from,
        "--to",
        &to,
        "--dead-letters",
        &dead_uri,
        "--quiet",
    ];
    ok(&eddy(&args, b""));
    let table = pyarrow_rows(&out);
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 997);
    assert_eq!(
        table["schema"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["id", "name", "n"],
        "no invented columns"
    );
    assert!(rows.iter().all(|r| r["name"].as_str().unwrap().len() < 10));
    let letters = dead_letters(&dead);
    let located: Vec<(&str, &str)> = letters
        .iter()
        .map(|l| (l["location"].as_str().unwrap(), l["raw"].as_str().unwrap()))
        .collect();
    let at = |line| format!("{}:{line}", input.display());
    let (l12, l22, l32) = (at(12), at(22), at(32));
    assert_eq!(
        located,
        vec![
            (l12.as_str(), "10,\"unterminated,5"),
            (l22.as_str(), "20,too,many,fields"),
            (l32.as_str(), "30,too few"),
        ]
    );
    assert!(letters[0]["error"]
        .as_str()
        .unwrap()
        .contains("does not close"));
}

#[test]
fn integers_above_i64_max_round_trip_through_parquet_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.jsonl");
    let big = [u64::MAX, 9_223_372_036_854_775_808, 0, 1, 12_345];
    let lines: Vec<String> = big
        .iter()
        .enumerate()
        .map(|(id, n)| format!("{{\"id\": {id}, \"big\": {n}}}\n"))
        .collect();
    std::fs::write(&input, lines.concat()).unwrap();
    let out = dir.path().join("pq");
    let (from, to) = (
        format!("jsonl://{}", input.display()),
        format!("parquet://{}", out.display()),
    );
    ok(&eddy(
        &["copy", "--from", &from, "--to", &to, "--quiet"],
        b"",
    ));
    let table = pyarrow_rows(&out);
    assert_eq!(table["schema"]["big"], "uint64");
    let mut rows: Vec<(u64, u64)> = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_u64().unwrap(), r["big"].as_u64().unwrap()))
        .collect();
    rows.sort();
    let expected: Vec<(u64, u64)> = big
        .iter()
        .enumerate()
        .map(|(i, n)| (i as u64, *n))
        .collect();
    assert_eq!(
        rows, expected,
        "18446744073709551615 exactly, not 1.8446744073709552e19"
    );
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
