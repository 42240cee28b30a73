//! The peer: the same Nexmark queries in Apache Flink SQL, local mode, side by side with Eddy.
//!
//! Flink is installed by `bash benches/flink/install.sh` into `target/flink-venv` (PyFlink's
//! wheels from PyPI carry the runtime jars; nothing is fetched at run time). The events are
//! exported once to header-less CSV ([`export_csv`], as `eddy nexmark generate --format csv`),
//! and `benches/flink/run_query.py` runs each query that has a `benches/flink/sql/<query>.sql`
//! at each parallelism, reporting the job's net runtime. [`report`] compares events/s per core.
//!
//! Flink's net runtime includes a fixed cost (deploying the tasks, starting the sources) that
//! does not grow with the input. So each query also runs, at each parallelism, as the same job
//! over a tiny input ([`BASELINE_EVENTS`] events, exported once beside the data), in a fresh
//! process as the measured run is; its runtime is the *baseline*, and the report gives Flink's
//! events/s both raw and with the baseline subtracted (`events / (seconds − baseline)`), and
//! Eddy's ratio over each.

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
    /// The same job's net runtime over the baseline input ([`BASELINE_EVENTS`] events), in
    /// seconds: Flink's fixed cost, when it was measured.
    pub baseline_seconds: Option<f64>,
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

    /// Events per second with the baseline subtracted: `events / (seconds − baseline)`; `None`
    /// without a baseline, or when the run took no longer than its baseline.
    pub fn net_events_per_second(&self) -> Option<f64> {
        let net = self.seconds - self.baseline_seconds?;
        (net > 0.0).then(|| self.events as f64 / net)
    }

    /// [`FlinkRun::net_events_per_second`] per core.
    pub fn net_per_core(&self) -> Option<f64> {
        Some(self.net_events_per_second()? / self.parallelism.max(1) as f64)
    }
}

/// Events in the baseline input: the same job over this few events measures Flink's fixed cost.
pub const BASELINE_EVENTS: u64 = 1_000;

/// Where the baseline input of `data` goes: beside it, `<data>-baseline-<events>`.
pub fn baseline_dir(data: &Path, events: u64) -> PathBuf {
    let name = data
        .file_name()
        .map_or_else(|| "flink-data".into(), |n| n.to_string_lossy().into_owned());
    data.with_file_name(format!("{name}-baseline-{events}"))
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
        baseline_seconds: None,
    })
}

/// Runs `query` at `parallelism` over `data` (`events` events), and first, when `baseline` is
/// given (its directory and event count), the same job over the baseline input, each in its own
/// process; the run carries the baseline's seconds.
pub fn run_with_baseline(
    python: &Path,
    query: Query,
    data: &Path,
    parallelism: usize,
    events: u64,
    baseline: Option<(&Path, u64)>,
) -> Result<FlinkRun> {
    let baseline_seconds = match baseline {
        Some((dir, n)) => Some(run(python, query, dir, parallelism, n)?.seconds),
        None => None,
    };
    Ok(FlinkRun {
        baseline_seconds,
        ..run(python, query, data, parallelism, events)?
    })
}

/// Eddy's best events/s per core for `query` over its worker counts (the hand loop aside).
fn eddy_per_core(eddy: &[Measurement], query: Query) -> Option<(f64, usize)> {
    eddy.iter()
        .filter(|m| m.query == query && m.workers > 0)
        .map(|m| (m.per_core(), m.workers))
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// Eddy's best per-core events/s over Flink's, for one query Flink ran.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratio {
    /// The query.
    pub query: Query,
    /// Over Flink's best raw per-core events/s.
    pub raw: f64,
    /// Over Flink's best per-core events/s with the baseline subtracted, when measured.
    pub net: Option<f64>,
}

impl Ratio {
    /// The ratio the target is judged on: the baseline-subtracted one, else the raw one.
    pub fn judged(&self) -> f64 {
        self.net.unwrap_or(self.raw)
    }
}

/// The queries Flink ran, in order, each once.
fn flink_queries(flink: &[FlinkRun]) -> Vec<Query> {
    let mut queries: Vec<Query> = flink.iter().map(|r| r.query).collect();
    queries.sort_unstable();
    queries.dedup();
    queries
}

/// Flink's best raw per-core events/s for `query`, and its best baseline-subtracted one.
fn flink_best(flink: &[FlinkRun], query: Query) -> (Option<f64>, Option<f64>) {
    let runs = || flink.iter().filter(move |r| r.query == query);
    (
        runs().map(FlinkRun::per_core).max_by(f64::total_cmp),
        runs()
            .filter_map(FlinkRun::net_per_core)
            .max_by(f64::total_cmp),
    )
}

/// The ratio of Eddy's best per-core events/s over Flink's, raw and baseline-subtracted, per
/// query Flink ran.
pub fn ratios(eddy: &[Measurement], flink: &[FlinkRun]) -> Vec<Ratio> {
    flink_queries(flink)
        .into_iter()
        .filter_map(|query| {
            let (eddy, _) = eddy_per_core(eddy, query)?;
            let (raw, net) = flink_best(flink, query);
            Some(Ratio {
                query,
                raw: eddy / raw?.max(1e-9),
                net: net.map(|n| eddy / n.max(1e-9)),
            })
        })
        .collect()
}

/// The report's section on Flink: one row per query, Flink at each parallelism (raw and with
/// the baseline subtracted), and Eddy's per-core ratio over Flink's (best per core on each
/// side), over each.
pub fn report(
    eddy: &[Measurement],
    eddy_csv: &[Measurement],
    flink: &[FlinkRun],
    command: &str,
    version: &str,
) -> String {
    let mut md = String::from("\n## Against Apache Flink\n\n");
    let _ = writeln!(
        md,
        "Flink {version} in local mode (PyFlink's MiniCluster, Java 17), streaming mode, over the \
         same events (same seed and count) exported once to CSV, each query in Flink SQL \
         (`benches/flink/sql/`) into a `blackhole` sink (q10: partitioned CSV files); event time \
         from `date_time` with an ascending watermark. Flink's time is the job's net runtime \
         (deployment and CSV parsing included; JVM start, planning and submission not), one run \
         each. *Raw* is events ÷ that runtime. *Net of baseline* subtracts Flink's fixed cost: \
         the same job's runtime over {BASELINE_EVENTS} events (exported beside the data, run in \
         a fresh process like the measured run; its seconds in brackets), so it is \
         events ÷ (runtime − baseline). Eddy's is the engine only (in-memory input, no \
         parsing, a counting sink), its best per-core figure over its worker counts; *Eddy from \
         CSV* reads the very files Flink reads (`NexmarkCsvSource`: parsing included, worker i \
         of 2 reading Flink's part file i; like Flink, only the tables the query names, and \
         like Flink's, its events/s counts every event of the stream), the like-for-like \
         figure. Per core: \
         events/s ÷ parallelism (Flink's JobManager and I/O threads not counted). The ≥ 10× \
         column judges the net ratio where there is one. Generated by `{command}`.\n"
    );
    let mut parallelisms: Vec<usize> = flink.iter().map(|r| r.parallelism).collect();
    parallelisms.sort_unstable();
    parallelisms.dedup();
    md.push_str("| query |");
    for p in &parallelisms {
        let _ = write!(
            md,
            " Flink p={p} raw M events/s | Flink p={p} net of baseline M events/s (baseline s) |"
        );
    }
    md.push_str(
        " Flink best M events/s per core, raw | Flink best M events/s per core, net of baseline \
         | Eddy best M events/s per core | Eddy ÷ Flink per core, raw \
         | Eddy ÷ Flink per core, net of baseline | ≥ 10× \
         | Eddy from CSV best M events/s per core | Eddy from CSV ÷ Flink per core, net of baseline |\n|---|",
    );
    for _ in &parallelisms {
        md.push_str("---|---|");
    }
    md.push_str("---|---|---|---|---|---|---|---|\n");
    let ratios = ratios(eddy, flink);
    let m = |x: Option<f64>| x.map_or("—".into(), |x| format!("{:.3}", x / 1e6));
    let times = |x: Option<f64>| x.map_or("—".into(), |x| format!("{x:.1}×"));
    for q in flink_queries(flink) {
        let _ = write!(md, "| {q} |");
        for &p in &parallelisms {
            match flink.iter().find(|r| r.query == q && r.parallelism == p) {
                Some(r) => {
                    let baseline = r
                        .baseline_seconds
                        .map_or(String::new(), |b| format!(" ({b:.2} s)"));
                    let _ = write!(
                        md,
                        " {} | {}{baseline} |",
                        m(Some(r.events_per_second())),
                        m(r.net_events_per_second())
                    );
                }
                None => md.push_str(" — | — |"),
            }
        }
        let (raw, net) = flink_best(flink, q);
        let eddy = eddy_per_core(eddy, q);
        let ratio = ratios.iter().find(|r| r.query == q);
        let csv = eddy_per_core(eddy_csv, q);
        let csv_ratio = csv.zip(net.or(raw)).map(|((e, _), f)| e / f.max(1e-9));
        let _ = writeln!(
            md,
            " {} | {} | {} | {} | {} | {} | {} | {} |",
            m(raw),
            m(net),
            eddy.map_or("—".into(), |(e, w)| format!("{:.2} ({w} w)", e / 1e6)),
            times(ratio.map(|r| r.raw)),
            times(ratio.and_then(|r| r.net)),
            match ratio.map(Ratio::judged) {
                Some(x) if x >= TARGET_RATIO => "yes",
                Some(_) => "**no**",
                None => "—",
            },
            csv.map_or("—".into(), |(e, w)| format!("{:.2} ({w} w)", e / 1e6)),
            times(csv_ratio),
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
            checkpoints: None,
        }
    }

    fn flink(parallelism: usize, seconds: f64, baseline_seconds: Option<f64>) -> FlinkRun {
        FlinkRun {
            query: Query::Q1,
            parallelism,
            events: 1_000_000,
            seconds,
            baseline_seconds,
        }
    }

    #[test]
    fn ratio_is_best_per_core_over_best_per_core() {
        let e = [
            eddy(Query::Q1, 0, 1_000_000, 0.01),
            eddy(Query::Q1, 1, 1_000_000, 0.1),
            eddy(Query::Q1, 2, 1_000_000, 0.08),
        ];
        let f = [flink(1, 2.0, None), flink(2, 1.5, None)];
        // Eddy: 10 M/s per core at 1 worker; Flink: 0.5 M/s per core at p=1.
        let r = ratios(&e, &f);
        assert_eq!(r.len(), 1);
        assert!((r[0].raw - 20.0).abs() < 1e-6, "{r:?}");
        assert_eq!(r[0].net, None, "no baseline, no net ratio");
        assert!((r[0].judged() - 20.0).abs() < 1e-6);
        let md = report(&e, &[], &f, "cmd", "2.3.0");
        assert!(
            md.contains(
                "| q1 | 0.500 | — | 0.667 | — | 0.500 | — | 10.00 (1 w) | 20.0× | — | yes | — | — |"
            ),
            "{md}"
        );
    }

    #[test]
    fn the_baseline_is_subtracted_and_judged() {
        let e = [eddy(Query::Q1, 1, 1_000_000, 0.25)];
        // raw 0.5 M/s; net of a 1.5 s baseline: 1 M events in 0.5 s = 2 M/s
        let f = [flink(1, 2.0, Some(1.5)), flink(2, 1.6, Some(1.5))];
        assert_eq!(f[0].net_events_per_second(), Some(2_000_000.0));
        // p=2: 1 M events in 0.1 s = 10 M/s, 5 M/s per core
        assert!((f[1].net_per_core().unwrap() - 5_000_000.0).abs() < 1e-3);
        // Eddy 4 M/s per core: 8× raw over 0.5 M/s, 0.8× net over 5 M/s
        let r = ratios(&e, &f);
        assert!((r[0].raw - 8.0).abs() < 1e-6, "{r:?}");
        assert!((r[0].net.unwrap() - 0.8).abs() < 1e-6, "{r:?}");
        // Eddy from CSV at 2 M/s per core: 0.4× Flink's net 5 M/s per core.
        let csv = [eddy(Query::Q1, 1, 1_000_000, 0.5)];
        let md = report(&e, &csv, &f, "cmd", "2.3.0");
        assert!(
            md.contains(
                "| q1 | 0.500 | 2.000 (1.50 s) | 0.625 | 10.000 (1.50 s) | 0.500 | 5.000 \
                 | 4.00 (1 w) | 8.0× | 0.8× | **no** | 2.00 (1 w) | 0.4× |"
            ),
            "{md}"
        );
        assert!(
            md.contains("Eddy ÷ Flink per core, net of baseline"),
            "{md}"
        );
    }

    #[test]
    fn a_run_no_longer_than_its_baseline_has_no_net_rate() {
        assert_eq!(flink(1, 1.0, Some(1.0)).net_events_per_second(), None);
        assert_eq!(flink(1, 1.0, Some(1.2)).net_per_core(), None);
        let e = [eddy(Query::Q1, 1, 1_000_000, 0.25)];
        let r = ratios(&e, &[flink(1, 1.0, Some(1.2))]);
        assert_eq!(r[0].net, None);
        assert!((r[0].judged() - r[0].raw).abs() < 1e-9);
    }

    #[test]
    fn the_baseline_lies_beside_the_data() {
        assert_eq!(
            baseline_dir(Path::new("target/flink-data/events-1000000"), 1_000),
            Path::new("target/flink-data/events-1000000-baseline-1000")
        );
    }

    #[test]
    fn every_query_has_flink_sql() {
        for q in Query::ALL {
            assert!(sql_file(q).is_some(), "{q}");
        }
    }
}
