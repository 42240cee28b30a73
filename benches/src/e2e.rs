//! End to end and across processes: events/s with the Nexmark generator inside the run (not
//! pre-generated), at any worker count, and runs of several processes of one worker each on
//! loopback, each process a child copy of the runner binary.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use eddy_connectors::nexmark::{generate, NexmarkConfig};
use eddy_connectors::{NexmarkSource, PreparedSource};
use eddy_engine::{Cluster, EngineError, Pipeline, Runtime, WatermarkConfig};
use eddy_queries::nexmark::Query;
use eddy_queries::output::Output;

use crate::latency::mib;
use crate::runner::{peak_rss, reset_peak_rss};

/// Where the events come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Input {
    /// The Nexmark generator runs inside the timed run, on each worker (end to end).
    Generator,
    /// Each worker generates its share in memory before the clock starts (engine only).
    Prepared,
}

impl Input {
    fn name(self) -> &'static str {
        match self {
            Input::Generator => "generator",
            Input::Prepared => "prepared",
        }
    }
}

/// One run of this module.
#[derive(Clone, Debug)]
pub struct RunMeasurement {
    /// The query.
    pub query: Query,
    /// Where the events came from.
    pub input: Input,
    /// Worker threads per process.
    pub workers: usize,
    /// Processes.
    pub processes: usize,
    /// Events processed, over all processes.
    pub events: u64,
    /// Result rows, over all processes.
    pub rows: u64,
    /// Processing time: the slowest process's, from when its workers were ready to the end.
    pub wall: Duration,
    /// Peak resident memory, summed over the processes, in bytes, when the OS tells.
    pub peak_rss: Option<u64>,
}

impl RunMeasurement {
    /// Events per second.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Events per second per core (worker thread, over all processes).
    pub fn per_core(&self) -> f64 {
        self.events_per_second() / (self.workers * self.processes).max(1) as f64
    }
}

/// The pipeline of `query` over `input`, into the counting sink.
fn pipeline(query: Query, config: &NexmarkConfig, batch_size: usize, input: Input) -> Pipeline {
    let pipeline = Pipeline::new(query.to_string());
    pipeline.batch_size(batch_size);
    let events = match input {
        Input::Generator => pipeline.source(
            "events",
            NexmarkSource::new(config.clone()),
            WatermarkConfig::default(),
        ),
        Input::Prepared => {
            let generator = Arc::new(config.clone());
            let what = format!("nexmark(events={})", config.events);
            let source = PreparedSource::new(what, Some(config.events), move |partition| {
                generate(&generator, partition)
            });
            pipeline.source("events", source, WatermarkConfig::default())
        }
    };
    query.build(events, &Output::Count);
    pipeline
}

/// Runs `query` over `input` on `workers` threads of this process, or as process
/// `cluster.process` of a cluster.
pub fn run(
    query: Query,
    config: &NexmarkConfig,
    workers: usize,
    batch_size: usize,
    input: Input,
    cluster: Option<Cluster>,
) -> Result<RunMeasurement, EngineError> {
    let pipeline = pipeline(query, config, batch_size, input);
    let processes = cluster.as_ref().map_or(1, |c| c.hosts.len());
    let mut runtime = Runtime::new(workers);
    if let Some(cluster) = cluster {
        runtime = runtime.cluster(cluster);
    }
    reset_peak_rss();
    let summary = runtime.run(&pipeline)?;
    Ok(RunMeasurement {
        query,
        input,
        workers,
        processes,
        events: summary.events(),
        rows: summary.output_rows(),
        wall: summary.processing,
        peak_rss: peak_rss(),
    })
}

/// The line a child process prints, and its parent parses.
const CHILD_TAG: &str = "eddy-benches-child";

/// Formats a child's measurement as the one line its parent reads.
pub fn child_line(m: &RunMeasurement) -> String {
    format!(
        "{CHILD_TAG} events={} rows={} wall_ns={} rss={}",
        m.events,
        m.rows,
        m.wall.as_nanos(),
        m.peak_rss.unwrap_or(0)
    )
}

fn parse_child_line(stdout: &str) -> Option<(u64, u64, Duration, u64)> {
    let line = stdout.lines().find(|l| l.starts_with(CHILD_TAG))?;
    let field = |name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some((
        field("events")?,
        field("rows")?,
        Duration::from_nanos(field("wall_ns")?),
        field("rss")?,
    ))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs `query` as `processes` processes of one worker each on loopback: each a child running
/// `exe` (this runner binary) with the hidden `--child-process` arguments. Events, rows and peak
/// RSS are summed over the processes; the time is the slowest process's.
pub fn multi_process(
    exe: &Path,
    query: Query,
    events: u64,
    batch_size: usize,
    input: Input,
    processes: usize,
) -> Result<RunMeasurement> {
    let hosts_file = hosts_path();
    let hosts: Vec<String> = (0..processes)
        .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
        .collect::<Result<_>>()?;
    std::fs::write(&hosts_file, hosts.join("\n") + "\n")
        .with_context(|| format!("writing {}", hosts_file.display()))?;
    let children = (0..processes)
        .map(|process| {
            Command::new(exe)
                .args(["--queries", &query.to_string()])
                .args(["--events", &events.to_string()])
                .args(["--batch-size", &batch_size.to_string()])
                .args(["--child-process", &process.to_string()])
                .arg("--child-hosts")
                .arg(&hosts_file)
                .args(["--child-input", input.name()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting {}", exe.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut total = RunMeasurement {
        query,
        input,
        workers: 1,
        processes,
        events: 0,
        rows: 0,
        wall: Duration::ZERO,
        peak_rss: Some(0),
    };
    let mut failure = None;
    for (process, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match (out.status.success(), parse_child_line(&stdout)) {
            (true, Some((events, rows, wall, rss))) => {
                total.events += events;
                total.rows += rows;
                total.wall = total.wall.max(wall);
                total.peak_rss = total
                    .peak_rss
                    .zip((rss > 0).then_some(rss))
                    .map(|(a, b)| a + b);
            }
            _ => {
                failure.get_or_insert(format!(
                    "{query}: process {process} of {processes} failed ({}): {stdout}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    let _ = std::fs::remove_file(&hosts_file);
    if let Some(failure) = failure {
        bail!(failure);
    }
    Ok(total)
}

fn hosts_path() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!("eddy-benches-{}-{nanos}.hosts", std::process::id()))
}

/// The end-to-end and multi-process section of the report.
pub fn run_report(runs: &[RunMeasurement]) -> String {
    let mut md = String::from("\n## End to end and across processes\n\n");
    let _ = writeln!(
        md,
        "`generator`: the Nexmark generator runs inside the timed run, on each worker (end to \
         end: generation included, no pre-generated input). `prepared`: as the engine-only table \
         (input generated in memory per worker before the clock starts). `N × 1`: N processes of \
         one worker each, children of the runner talking over loopback TCP; events and peak RSS \
         are summed over the processes, the time is the slowest process's from the moment its \
         workers were ready (connections made) to its end.\n"
    );
    let _ = writeln!(
        md,
        "| query | input | processes × workers | events | rows | wall s | M events/s | M events/s per core | peak RSS MiB |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for m in runs {
        let _ = writeln!(
            md,
            "| {} | {} | {} × {} | {} | {} | {:.3} | {:.2} | {:.2} | {} |",
            m.query,
            m.input.name(),
            m.processes,
            m.workers,
            m.events,
            m.rows,
            m.wall.as_secs_f64(),
            m.events_per_second() / 1e6,
            m.per_core() / 1e6,
            mib(m.peak_rss),
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_lines_round_trip() {
        let m = RunMeasurement {
            query: Query::Q0,
            input: Input::Generator,
            workers: 1,
            processes: 2,
            events: 10,
            rows: 9,
            wall: Duration::from_nanos(1234),
            peak_rss: Some(4096),
        };
        let out = format!("noise\n{}\n", child_line(&m));
        assert_eq!(
            parse_child_line(&out),
            Some((10, 9, Duration::from_nanos(1234), 4096))
        );
        assert_eq!(parse_child_line("nothing"), None);
    }
}
