//! The `eddy` binary on bad input: one clear line on stderr and a failing exit code, never a
//! panic; `--help` on every command.

use std::process::{Command, Output};

fn eddy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(args)
        .output()
        .unwrap()
}

fn assert_one_line_error(args: &[&str], mentions: &str) {
    let out = eddy(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "eddy {args:?} should fail");
    assert!(
        !stderr.contains("panicked"),
        "eddy {args:?} panicked: {stderr}"
    );
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "eddy {args:?} should say one line, said: {stderr}"
    );
    assert!(stderr.starts_with("error:"), "{stderr}");
    assert!(
        stderr.contains(mentions),
        "eddy {args:?}: expected '{mentions}' in: {stderr}"
    );
}

#[test]
fn a_wrong_flag_is_one_line() {
    assert_one_line_error(
        &["nexmark", "run", "q0", "--no-such-flag"],
        "--no-such-flag",
    );
}

#[test]
fn an_unknown_query_lists_the_queries() {
    assert_one_line_error(
        &["nexmark", "run", "q99", "--out", "x"],
        "q0, q1, q2, q3, q4, q5, q6, q7, q8, q9, q10, q11, q12, q13, q14, q15, q16, q17, q18, q19, q20, q21, q22",
    );
}

#[test]
fn an_output_directory_that_cannot_be_made_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let out = file.join("out");
    assert_one_line_error(
        &[
            "nexmark",
            "run",
            "q0",
            "--events",
            "100",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ],
        "a-file",
    );
}

#[test]
fn a_missing_hosts_file_is_one_line() {
    assert_one_line_error(
        &[
            "nexmark",
            "run",
            "q0",
            "--processes",
            "2",
            "--hosts",
            "/no/such/hosts",
            "--out",
            "x",
        ],
        "/no/such/hosts",
    );
}

#[test]
fn parquet_needs_an_output_directory() {
    assert_one_line_error(&["nexmark", "run", "q0", "--events", "10"], "--out");
}

#[test]
fn every_command_explains_its_flags() {
    for (args, flags) in [
        (&["--help"][..], &["nexmark"][..]),
        (&["nexmark", "--help"][..], &["run", "generate"][..]),
        (
            &["nexmark", "run", "--help"][..],
            &[
                "--events",
                "--workers",
                "--processes",
                "--process",
                "--hosts",
                "--out",
                "--format",
            ][..],
        ),
        (
            &["nexmark", "generate", "--help"][..],
            &["--events", "--out", "--format"][..],
        ),
    ] {
        let out = eddy(args);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        for flag in flags {
            assert!(
                text.contains(flag),
                "`eddy {}` does not mention {flag}:\n{text}",
                args.join(" ")
            );
        }
    }
}

#[test]
fn the_table_format_prints_rows() {
    let out = eddy(&[
        "nexmark", "run", "q2", "--events", "20000", "--format", "table", "--quiet",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("auction") && text.contains("price"), "{text}");
}

#[test]
fn a_missing_side_input_is_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-side.csv");
    assert_one_line_error(
        &[
            "nexmark",
            "run",
            "q13",
            "--events",
            "1000",
            "--format",
            "count",
            "--side-input",
            missing.to_str().unwrap(),
        ],
        "no-such-side.csv",
    );
}

#[test]
fn numeric_flags_out_of_range_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"a\": 1}\n").unwrap();
    let from = format!("jsonl://{}", input.display());
    let to = format!("jsonl://{}", dir.path().join("out.jsonl").display());
    let copy = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["copy", "--from", &from, "--to", &to, "--quiet"];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_string).collect()
    };
    let run = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["nexmark", "run", "q0", "--format", "count", "--quiet"];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_string).collect()
    };
    let cpus = std::thread::available_parallelism().unwrap().get();
    let too_many = (cpus * 4 + 1).to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            copy(&["--limit", "0"]),
            "'--limit <LIMIT>': 0 is not in 1..",
        ),
        (
            copy(&["--workers", "0"]),
            "'--workers <WORKERS>': 0 is not in 1..",
        ),
        (copy(&["--workers", &too_many]), "--allow-many-workers"),
        (
            copy(&["--checkpoint-dir", "x", "--checkpoint-every", "0s"]),
            "it must be longer than 0",
        ),
        (copy(&["--idle-exit", "0s"]), "it must be longer than 0"),
        (copy(&["--commit-every", "0ms"]), "it must be longer than 0"),
        (
            vec!["example", "orders", "--window", "0s"]
                .into_iter()
                .map(str::to_string)
                .collect(),
            "it must be longer than 0",
        ),
        (run(&["--rate", "0"]), "'--rate <RATE>': 0 is not in 1.."),
        (
            run(&["--processes", "0"]),
            "'--processes <PROCESSES>': 0 is not in 1..",
        ),
        (run(&["--processes", "2", "--process", "2"]), "give 0 to 1"),
        (
            run(&["--events", "0"]),
            "'--events <EVENTS>': 0 is not in 1..",
        ),
        (run(&["--workers", "100000"]), "more than 4 per CPU"),
        (
            run(&["--batch-size", "0"]),
            "'--batch-size <BATCH_SIZE>': 0 is not in 1..",
        ),
        (
            run(&["--row-group-size", "0"]),
            "'--row-group-size <ROW_GROUP_SIZE>': 0 is not in 1..",
        ),
        (
            vec!["nexmark", "generate", "--rate", "0", "--out", "x"]
                .into_iter()
                .map(str::to_string)
                .collect(),
            "'--rate <RATE>': 0 is not in 1..",
        ),
    ];
    for (args, mentions) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_one_line_error(&args, mentions);
    }
    assert!(
        !dir.path().join("out.jsonl").exists() && !std::path::Path::new("x").exists(),
        "nothing ran"
    );
    // Within range, the same copy runs.
    let args = copy(&["--limit", "1", "--workers", "1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = eddy(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap(),
        "{\"a\":1}\n"
    );
}
