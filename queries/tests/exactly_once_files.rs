//! Exactly-once file copies, proven by `kill -9`: `eddy copy` from a JSON-lines or CSV file to
//! Parquet with checkpoints, killed (SIGKILL) mid-run after a checkpoint completes and run
//! again — at another worker count too — until it finishes. The committed Parquet rows, read
//! back with pyarrow, must be the input rows exactly: none missing, none twice.
//!
//! The kill moments come from a seed printed by each test (`EDDY_CRASH_SEED` replays one).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{await_checkpoints, crash_seed, pyarrow_json};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Rows of each input file: enough that a debug build takes seconds, so kills land mid-run.
const ROWS: u64 = 200_000;
/// Event time of the first row (ms since the Unix epoch); rows are 5 ms apart.
const BASE: u64 = 1_700_000_000_000;

/// Row `i` of the input.
fn row(i: u64) -> Value {
    json!({"id": i, "ts": BASE + i * 5, "user": format!("u{}", i % 97), "score": i % 1000})
}

/// `eddy copy --from FROM --to parquet:///OUT --event-time ts` with checkpoints every second
/// of event time in `checkpoints`.
fn copy(from: &str, out: &Path, checkpoints: &Path, workers: usize) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.args(["copy", "--from", from])
        .arg("--to")
        .arg(format!("parquet://{}", out.display()))
        .args(["--event-time", "ts", "--workers", &workers.to_string()])
        .arg("--checkpoint-dir")
        .arg(checkpoints)
        .args(["--checkpoint-every", "1s"]);
    cmd
}

/// Runs the copy from `from` with checkpoints, killing it with SIGKILL once a new checkpoint
/// has completed (and a random 0–300 ms more) `kills` times, the attempts' worker counts taken
/// in turn from `workers`; then runs it to its end. Returns how many kills landed and what the
/// last run printed.
fn crash_until_done(
    from: &str,
    out: &Path,
    checkpoints: &Path,
    workers: &[usize],
    kills: usize,
) -> (usize, String) {
    let mut rng = StdRng::seed_from_u64(crash_seed());
    let mut landed = 0;
    let mut attempts = 0;
    while landed < kills {
        let w = workers[attempts % workers.len()];
        attempts += 1;
        let mut child = copy(from, out, checkpoints, w)
            .arg("--quiet")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait for a checkpoint of this attempt, so that the kill lands mid-run.
        await_checkpoints(&mut child, checkpoints, 1);
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..=300)));
        let running = child.try_wait().unwrap().is_none();
        if running {
            child.kill().unwrap(); // SIGKILL
        }
        let status = child.wait().unwrap();
        if !running {
            assert!(status.success(), "attempt {attempts} failed: {status}");
            break;
        }
        landed += 1;
    }
    assert!(
        landed >= 2,
        "only {landed} kills landed before the copy finished: give it more rows"
    );
    let w = workers[attempts % workers.len()];
    let result = copy(from, out, checkpoints, w).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(result.status.success(), "the last run failed:\n{said}");
    (landed, said)
}

/// Every committed row under `out`, as pyarrow reads the Parquet files (which must share one
/// schema), sorted by id.
fn committed_rows(out: &Path) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_parquet.py");
    let found: Value = pyarrow_json(
        &[script.as_os_str(), "--rows".as_ref()],
        out,
        "read_parquet.py",
    );
    let mut rows = found["data"]
        .as_array()
        .expect("read_parquet.py --rows lists the rows")
        .clone();
    rows.sort_by_key(|r| r["id"].as_u64());
    rows
}

/// Asserts the committed rows are rows `0..ROWS`, each once.
fn assert_exactly_the_input(out: &Path, what: &str) {
    let rows = committed_rows(out);
    let ids: Vec<u64> = rows.iter().filter_map(|r| r["id"].as_u64()).collect();
    let twice = ids.windows(2).filter(|w| w[0] == w[1]).count();
    let missing = (0..ROWS).filter(|i| ids.binary_search(i).is_err()).count();
    assert_eq!(
        (rows.len() as u64, twice, missing),
        (ROWS, 0, 0),
        "{what}: (rows, rows read twice, rows missing)"
    );
    for (i, got) in rows.iter().enumerate() {
        assert_eq!(*got, row(i as u64), "{what}: row {i}");
    }
}

#[test]
fn copy_help_shows_the_checkpoint_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["copy", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(help.contains("--checkpoint-dir"), "{help}");
    assert!(help.contains("--checkpoint-every"), "{help}");
}

#[test]
fn json_lines_to_parquet_survives_kills_and_a_change_of_workers() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let mut text = String::new();
    for i in 0..ROWS {
        text.push_str(&row(i).to_string());
        text.push('\n');
    }
    std::fs::write(&input, text).unwrap();
    let (out, checkpoints) = (dir.path().join("out"), dir.path().join("checkpoints"));
    let from = format!("jsonl://{}", input.display());
    let (landed, said) = crash_until_done(&from, &out, &checkpoints, &[1, 2, 1, 3], 3);
    assert!(
        said.contains("resumed from the checkpoint at"),
        "the last run did not resume from a checkpoint:\n{said}"
    );
    assert_exactly_the_input(&out, &format!("jsonl after {landed} kills"));
}

#[test]
fn csv_to_parquet_survives_kills_and_a_change_of_workers() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.csv");
    let mut text = String::from("id,ts,user,score\n");
    for i in 0..ROWS {
        let r = row(i);
        text.push_str(&format!(
            "{},{},{},{}\n",
            r["id"],
            r["ts"],
            r["user"].as_str().unwrap(),
            r["score"]
        ));
    }
    std::fs::write(&input, text).unwrap();
    let (out, checkpoints) = (dir.path().join("out"), dir.path().join("checkpoints"));
    let from = format!("csv://{}", input.display());
    let (landed, said) = crash_until_done(&from, &out, &checkpoints, &[2, 1], 2);
    assert!(
        said.contains("resumed from the checkpoint at"),
        "the last run did not resume from a checkpoint:\n{said}"
    );
    assert_exactly_the_input(&out, &format!("csv after {landed} kills"));
}

#[test]
fn standard_input_is_refused_with_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let result = copy(
        "jsonl:///-",
        &dir.path().join("out"),
        &dir.path().join("checkpoints"),
        1,
    )
    .stdin(Stdio::null())
    .output()
    .unwrap();
    let said = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "{said}");
    assert!(said.contains("cannot be checkpointed"), "{said}");
}
