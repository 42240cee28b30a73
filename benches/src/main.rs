//! `eddy-benches`: time Nexmark queries through the engine and hand-written loops, side by side.

use std::path::PathBuf;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{bail, Result};
use clap::Parser;
use eddy_benches::flink;
use eddy_benches::runner::{engine, hand_loop, report, rows_agree, Measurement, ANALYSIS_MARKER};
use eddy_connectors::nexmark::NexmarkConfig;
use eddy_queries::nexmark::Query;

/// Times each query from the in-memory replay source to the counting sink, at each worker
/// count, beside a hand-written loop; prints a Markdown report and optionally writes it.
#[derive(Parser)]
#[command(name = "eddy-benches")]
struct Args {
    /// Events per run.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Queries to run, comma-separated (default: every query).
    #[arg(long, value_delimiter = ',')]
    queries: Vec<Query>,
    /// Worker counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Records per source batch.
    #[arg(long, default_value_t = 4096)]
    batch_size: usize,
    /// Runs of each measurement; the report keeps the median (by wall time).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Write the report here (e.g. docs/benchmarks.md) as well as to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also run each query that has Flink SQL (benches/flink/sql/) in Apache Flink, local mode,
    /// over the same events, and report Eddy's per-core ratio over Flink's. Needs
    /// `bash benches/flink/install.sh` first.
    #[arg(long)]
    flink: bool,
    /// Flink parallelisms to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    flink_parallelism: Vec<usize>,
    /// Where to export the events as CSV for Flink (default target/flink-data/events-N).
    #[arg(long)]
    flink_data: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let config = NexmarkConfig::with_events(args.events);
    let mut measurements = Vec::new();
    let queries = if args.queries.is_empty() {
        Query::ALL.to_vec()
    } else {
        args.queries.clone()
    };
    for &query in &queries {
        let hand = median(args.repeat, || anyhow::Ok(hand_loop(query, &config)))?;
        eprintln!(
            "{query} hand loop: {:.2} M events/s",
            hand.events_per_second() / 1e6
        );
        for &workers in &args.workers {
            let m = median(args.repeat, || {
                engine(query, &config, workers, args.batch_size)
            })?;
            eprintln!(
                "{query} {workers} workers: {:.2} M events/s",
                m.events_per_second() / 1e6
            );
            if !rows_agree(&m, &hand) {
                bail!(
                    "{query}: the pipeline wrote {} rows but the hand loop {}: a bug",
                    m.rows,
                    hand.rows
                );
            }
            measurements.push(m);
        }
        measurements.push(hand);
    }
    measurements.sort_by_key(|m| (m.query, m.workers));
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let command = command.replacen(
        &std::env::args().next().unwrap_or_default(),
        "cargo run --release -p eddy-benches --",
        1,
    );
    let machine = machine();
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut md = report(&measurements, &command, &machine, &date);
    if args.flink {
        md.push_str(&run_flink(
            &args,
            &config,
            &queries,
            &measurements,
            &command,
        )?);
    }
    println!("{md}");
    if let Some(path) = args.out {
        let previous = std::fs::read_to_string(&path).unwrap_or_default();
        let analysis = previous
            .find(ANALYSIS_MARKER)
            .map_or(String::new(), |at| previous[at..].to_string());
        std::fs::write(&path, format!("{md}\n{analysis}"))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Exports the events to CSV once, runs each query that has Flink SQL at each parallelism, prints
/// each per-core ratio, and returns the report's Flink section.
fn run_flink(
    args: &Args,
    config: &NexmarkConfig,
    queries: &[Query],
    measurements: &[Measurement],
    command: &str,
) -> Result<String> {
    let python = flink::python()?;
    let version = flink::version(&python)?;
    let data = args.flink_data.clone().unwrap_or_else(|| {
        flink::repo_root().join(format!("target/flink-data/events-{}", config.events))
    });
    let events = flink::export_csv(config, &data)?;
    eprintln!("exported {events} events as CSV to {}", data.display());
    let mut runs = Vec::new();
    for &query in queries {
        if flink::sql_file(query).is_none() {
            eprintln!("{query}: no Flink SQL (benches/flink/sql/{query}.sql), skipped");
            continue;
        }
        for &p in &args.flink_parallelism {
            let run = flink::run(&python, query, &data, p, events)?;
            eprintln!(
                "{query} Flink p={p}: {:.3} M events/s ({:.2} s)",
                run.events_per_second() / 1e6,
                run.seconds
            );
            runs.push(run);
        }
    }
    for (query, ratio) in flink::ratios(measurements, &runs) {
        eprintln!(
            "{query}: Eddy ÷ Flink per core = {ratio:.1}× (target ≥ {}×)",
            flink::TARGET_RATIO
        );
    }
    Ok(flink::report(measurements, &runs, command, &version))
}

/// Runs `measure` `repeat` times (at least once) and keeps the run with the median wall time.
fn median<E: Into<anyhow::Error>>(
    repeat: usize,
    mut measure: impl FnMut() -> Result<Measurement, E>,
) -> Result<Measurement> {
    let mut runs = Vec::new();
    for _ in 0..repeat.max(1) {
        runs.push(measure().map_err(Into::into)?);
    }
    runs.sort_by_key(|m| m.wall);
    Ok(runs.swap_remove(runs.len() / 2))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}
