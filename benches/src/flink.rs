//! The peer: the same Nexmark queries in Apache Flink SQL, local mode, side by side with Eddy.
//!
//! Flink is installed by `bash benches/flink/install.sh` into `target/flink-venv` (PyFlink's
//! wheels from PyPI carry the runtime jars; nothing is fetched at run time). The events are
//! exported once to header-less CSV ([`export_csv`], as `eddy nexmark generate --format csv`),
//! and `benches/flink/run_query.py` runs each query that has a `benches/flink/sql/<query>.sql`
//! at each parallelism, reporting the job's net runtime. [`report`] compares events/s per core.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use eddy_connectors::nexmark::{generate_all, write_csv, NexmarkConfig, NexmarkTables};
use eddy_queries::nexmark::Query;

use crate::runner::Measurement;

/// The per-core ratio Eddy aims for over Flink (issue 4's target).
pub const TARGET_RATIO: f64 = 10.0;

/// One Flink run of one query.
#[derive(Clone, Debug, PartialEq)]
pub struct FlinkRun {
    /// The query.
    pub query: Query,
    /// Flink's parallelism (task slots, one core each).
    pub parallelism: usize,
    /// Events in the input (people, auctions and bids together).
    pub events: u64,
    /// The job's net runtime in seconds (JobManager's view: deployment and CSV parsing
    /// included; JVM start, planning and submission excluded).
    pub seconds: f64,
}

impl FlinkRun {
    /// Events per second.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }

    /// Events per second per core (per parallel slot).
    pub fn per_core(&self) -> f64 {
        self.events_per_second() / self.parallelism.max(1) as f64
    }
}

/// The repository's root (where `benches/` and `target/flink-venv` are).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The Python of the Flink venv, or an error saying how to install it.
pub fn python() -> Result<PathBuf> {
    let python = repo_root().join("target/flink-venv/bin/python");
    if !python.exists() {
        bail!(
            "Flink is not installed ({} is missing): run bash benches/flink/install.sh",
            python.display()
        );
    }
    Ok(python)
}

/// The Flink version installed in the venv of `python`.
pub fn version(python: &Path) -> Result<String> {
    let output = Command::new(python)
        .args([
            "-c",
            "from pyflink.version import __version__; print(__version__)",
        ])
        .output()
        .with_context(|| format!("cannot start {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "PyFlink does not import in {}: run bash benches/flink/install.sh\n{}",
            python.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The Flink SQL of `query`, when there is one.
pub fn sql_file(query: Query) -> Option<PathBuf> {
    let path = repo_root().join(format!("benches/flink/sql/{query}.sql"));
    path.exists().then_some(path)
}

/// Writes the events `config` generates to `dir` as person.csv, auction.csv and bid.csv (the
/// layout of `eddy nexmark generate --format csv`). Returns the number of events.
pub fn export_csv(config: &NexmarkConfig, dir: &Path) -> Result<u64> {
    let events = generate_all(config);
    let tables = NexmarkTables::from_events(events.iter().map(|(_, e)| e));
    write_csv(dir.join("person.csv"), &tables.persons)?;
    write_csv(dir.join("auction.csv"), &tables.auctions)?;
    write_csv(dir.join("bid.csv"), &tables.bids)?;
    Ok(events.len() as u64)
}

/// Runs `query` in Flink at `parallelism` over the CSV files in `data`, with `python` (the
/// venv's); `events` is how many events the files hold.
pub fn run(
    python: &Path,
    query: Query,
    data: &Path,
    parallelism: usize,
    events: u64,
) -> Result<FlinkRun> {
    let script = repo_root().join("benches/flink/run_query.py");
    let output = Command::new(python)
        .arg(&script)
        .args(["--query", &query.to_string()])
        .arg("--data")
        .arg(data)
        .args(["--parallelism", &parallelism.to_string()])
        .args(["--events", &events.to_string()])
        .output()
        .with_context(|| format!("cannot start {}", python.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "Flink failed on {query} at parallelism {parallelism} ({}); its last lines:\n{}",
            output.status,
            tail.join("\n")
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("run_query.py printed no JSON for {query}: {stdout}"))?;
    let json: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("run_query.py printed bad JSON for {query}: {line}"))?;
    let seconds = json["seconds"]
        .as_f64()
        .with_context(|| format!("no `seconds` in {line}"))?;
    Ok(FlinkRun {
        query,
        parallelism,
        events,
        seconds,
    })
}

/// Eddy's best events/s per core for `query` over its worker counts (the hand loop aside).
fn eddy_per_core(eddy: &[Measurement], query: Query) -> Option<(f64, usize)> {
    eddy.iter()
        .filter(|m| m.query == query && m.workers > 0)
        .map(|m| (m.per_core(), m.workers))
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// The ratio of Eddy's best per-core events/s over Flink's, per query Flink ran.
pub fn ratios(eddy: &[Measurement], flink: &[FlinkRun]) -> Vec<(Query, f64)> {
    let mut queries: Vec<Query> = flink.iter().map(|r| r.query).collect();
    queries.dedup();
    queries
        .into_iter()
        .filter_map(|q| {
            let (eddy, _) = eddy_per_core(eddy, q)?;
            let best = flink
                .iter()
                .filter(|r| r.query == q)
                .map(FlinkRun::per_core)
                .max_by(f64::total_cmp)?;
            Some((q, eddy / best.max(1e-9)))
        })
        .collect()
}

/// The report's section on Flink: one row per query, Flink at each parallelism, and Eddy's
/// per-core ratio over Flink's (best per core on each side).
pub fn report(eddy: &[Measurement], flink: &[FlinkRun], command: &str, version: &str) -> String {
    let mut md = String::from("\n## Against Apache Flink\n\n");
    let _ = writeln!(
        md,
        "Flink {version} in local mode (PyFlink's MiniCluster, Java 17), streaming mode, over the \
         same events (same seed and count) exported once to CSV, each query in Flink SQL \
         (`benches/flink/sql/`) into a `blackhole` sink; event time from `date_time` with an \
         ascending watermark. Flink's time is the job's net runtime (deployment and CSV parsing \
         included; JVM start, planning and submission not), one run each. Eddy's is the engine \
         only (in-memory input, no parsing), its best per-core figure over its worker counts. \
         Per core: events/s ÷ parallelism (Flink's JobManager and I/O threads not counted). \
         Generated by `{command}`.\n"
    );
    let mut parallelisms: Vec<usize> = flink.iter().map(|r| r.parallelism).collect();
    parallelisms.sort_unstable();
    parallelisms.dedup();
    md.push_str("| query |");
    for p in &parallelisms {
        let _ = write!(md, " Flink p={p} M events/s |");
    }
    md.push_str(" Flink best M events/s per core | Eddy best M events/s per core | Eddy ÷ Flink per core | ≥ 10× |\n|---|");
    for _ in &parallelisms {
        md.push_str("---|");
    }
    md.push_str("---|---|---|---|\n");
    let ratios = ratios(eddy, flink);
    let mut queries: Vec<Query> = flink.iter().map(|r| r.query).collect();
    queries.dedup();
    for q in queries {
        let _ = write!(md, "| {q} |");
        for &p in &parallelisms {
            match flink.iter().find(|r| r.query == q && r.parallelism == p) {
                Some(r) => {
                    let _ = write!(md, " {:.3} |", r.events_per_second() / 1e6);
                }
                None => md.push_str(" — |"),
            }
        }
        let best = flink
            .iter()
            .filter(|r| r.query == q)
            .map(FlinkRun::per_core)
            .max_by(f64::total_cmp)
            .unwrap_or(0.0);
        let eddy = eddy_per_core(eddy, q);
        let ratio = ratios.iter().find(|(r, _)| *r == q).map(|(_, x)| *x);
        let _ = writeln!(
            md,
            " {:.3} | {} | {} | {} |",
            best / 1e6,
            eddy.map_or("—".into(), |(e, w)| format!("{:.2} ({w} w)", e / 1e6)),
            ratio.map_or("—".into(), |x| format!("{x:.1}×")),
            match ratio {
                Some(x) if x >= TARGET_RATIO => "yes",
                Some(_) => "**no**",
                None => "—",
            }
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn eddy(query: Query, workers: usize, events: u64, secs: f64) -> Measurement {
        Measurement {
            query,
            workers,
            events,
            bids: events,
            rows: 0,
            wall: Duration::from_secs_f64(secs),
            peak_rss: None,
        }
    }

    #[test]
    fn ratio_is_best_per_core_over_best_per_core() {
        let e = [
            eddy(Query::Q1, 0, 1_000_000, 0.01),
            eddy(Query::Q1, 1, 1_000_000, 0.1),
            eddy(Query::Q1, 2, 1_000_000, 0.08),
        ];
        let f = [
            FlinkRun {
                query: Query::Q1,
                parallelism: 1,
                events: 1_000_000,
                seconds: 2.0,
            },
            FlinkRun {
                query: Query::Q1,
                parallelism: 2,
                events: 1_000_000,
                seconds: 1.5,
            },
        ];
        // Eddy: 10 M/s per core at 1 worker; Flink: 0.5 M/s per core at p=1.
        let r = ratios(&e, &f);
        assert_eq!(r.len(), 1);
        assert!((r[0].1 - 20.0).abs() < 1e-6, "{r:?}");
        let md = report(&e, &f, "cmd", "2.3.0");
        assert!(
            md.contains("| q1 | 0.500 | 0.667 | 0.500 | 10.00 (1 w) | 20.0× | yes |"),
            "{md}"
        );
    }

    #[test]
    fn sql_files_exist_for_the_compared_queries() {
        for q in [
            Query::Q0,
            Query::Q1,
            Query::Q2,
            Query::Q5,
            Query::Q7,
            Query::Q8,
        ] {
            assert!(sql_file(q).is_some(), "{q}");
        }
    }
}
