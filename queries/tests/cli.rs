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
