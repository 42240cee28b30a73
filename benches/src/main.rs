//! `eddy-benches`: time Nexmark queries through the engine and hand-written loops, side by side.

use std::path::PathBuf;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use eddy_benches::charts::{latency_chart, throughput_chart};
use eddy_benches::e2e::{self, child_line, multi_process, run_report, Input, RunMeasurement};
use eddy_benches::latency::{latency, latency_events, latency_report, DEFAULT_LOAD};
use eddy_benches::runner::{
    self, engine, hand_loop, report, rows_agree, Measurement, ANALYSIS_MARKER,
};
use eddy_benches::{connectors, flink, overhead};
use eddy_connectors::nexmark::NexmarkConfig;
use eddy_connectors::NexmarkCsvSource;
use eddy_engine::Cluster;
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
    /// Write the report here (e.g. docs/benchmarks.md) as well as to stdout, and the charts
    /// beside it (bench-throughput.svg, and bench-latency.svg with --latency).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also run each query at a fixed offered rate (--load of its measured events/s at each
    /// worker count) and report latency percentiles.
    #[arg(long)]
    latency: bool,
    /// The offered load of the latency runs, as a fraction of the measured maximum.
    #[arg(long, default_value_t = DEFAULT_LOAD)]
    load: f64,
    /// About how long each latency run lasts, in seconds (fewer events than --events when the
    /// offered rate would take longer).
    #[arg(long, default_value_t = 5.0)]
    latency_seconds: f64,
    /// Also measure end to end: the Nexmark generator inside the timed run, at each worker count
    /// (and across processes with --processes).
    #[arg(long)]
    end_to_end: bool,
    /// Also run this many processes of one worker each on loopback (1: none).
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Internal: run as this process of a multi-process run and print one result line.
    #[arg(long, hide = true, requires = "child_hosts")]
    child_process: Option<usize>,
    /// Internal: the hosts file of a multi-process run.
    #[arg(long, hide = true)]
    child_hosts: Option<PathBuf>,
    /// Internal: the input of a multi-process run.
    #[arg(long, hide = true, value_enum, default_value_t = Input::Prepared)]
    child_input: Input,
    /// Also run each query that has Flink SQL (benches/flink/sql/, every query) in Apache Flink,
    /// local mode, over the same events, and report Eddy's per-core ratio over Flink's, raw and
    /// with Flink's fixed cost (the same job over --flink-baseline-events) subtracted. Needs
    /// `bash benches/flink/install.sh` first.
    #[arg(long)]
    flink: bool,
    /// Flink parallelisms to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    flink_parallelism: Vec<usize>,
    /// Where to export the events as CSV for Flink (default target/flink-data/events-N); the
    /// baseline input goes beside it (`<dir>-baseline-<events>`).
    #[arg(long)]
    flink_data: Option<PathBuf>,
    /// Events in Flink's baseline input: each query also runs over this few events (the same
    /// seed and rate), at each parallelism, to measure Flink's fixed cost (0: no baseline).
    #[arg(long, default_value_t = flink::BASELINE_EVENTS)]
    flink_baseline_events: u64,
    /// Also read this many 1 KB JSON records from each broker (RabbitMQ, Kafka, NATS JetStream,
    /// MQTT) into the counting sink, beside the broker's Python client reading the same ones.
    /// The brokers must be up: `bash scripts/brokers.sh up`.
    #[arg(long)]
    connectors: Option<u64>,
    /// Also run each query with the metrics endpoint off and on (scraped every second),
    /// alternately, at each worker count, and report the difference.
    #[arg(long)]
    metrics_overhead: bool,
    /// Also run each query without and with exactly-once checkpoints every DURATION of event
    /// time (generator to Parquet), alternately, at each worker count, and report the
    /// difference, the checkpoints' size and duration.
    #[arg(long, value_name = "DURATION")]
    checkpoint_overhead: Option<humantime::Duration>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let config = NexmarkConfig::with_events(args.events);
    if let (Some(process), Some(hosts)) = (args.child_process, &args.child_hosts) {
        return child(&args, &config, process, hosts);
    }
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
    let mut latencies = Vec::new();
    if args.latency {
        for m in measurements.iter().filter(|m| m.workers > 0) {
            let rate = args.load * m.events_per_second();
            let events = latency_events(args.events, rate, args.latency_seconds);
            let l = latency(
                m.query,
                &NexmarkConfig::with_events(events),
                m.workers,
                args.batch_size,
                rate,
            )?;
            eprintln!(
                "{} {} workers at {:.2} M events/s: p50 {:?} p99 {:?} p99.9 {:?} max {:?} ms",
                l.query,
                l.workers,
                rate / 1e6,
                l.p50,
                l.p99,
                l.p999,
                l.max
            );
            latencies.push(l);
        }
    }
    let mut runs: Vec<RunMeasurement> = Vec::new();
    for &query in &queries {
        if args.end_to_end {
            for &workers in &args.workers {
                let m = median_run(args.repeat, || {
                    e2e::run(
                        query,
                        &config,
                        workers,
                        args.batch_size,
                        Input::Generator,
                        None,
                    )
                    .map_err(Into::into)
                })?;
                eprintln!(
                    "{query} end to end, {workers} workers: {:.2} M events/s",
                    m.events_per_second() / 1e6
                );
                runs.push(m);
            }
        }
        if args.processes > 1 {
            let exe = std::env::current_exe().context("finding the runner binary")?;
            let inputs: &[Input] = if args.end_to_end {
                &[Input::Prepared, Input::Generator]
            } else {
                &[Input::Prepared]
            };
            for &input in inputs {
                let m = median_run(args.repeat, || {
                    multi_process(
                        &exe,
                        query,
                        args.events,
                        args.batch_size,
                        input,
                        args.processes,
                    )
                })?;
                eprintln!(
                    "{query} {} processes × 1 worker ({input:?}): {:.2} M events/s",
                    args.processes,
                    m.events_per_second() / 1e6
                );
                runs.push(m);
            }
        }
    }
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
    if !latencies.is_empty() {
        md.push_str(&latency_report(&latencies, args.load));
    }
    if !runs.is_empty() {
        md.push_str(&run_report(&runs));
    }
    if let Some(path) = &args.out {
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        throughput_chart(&measurements, &dir.join("bench-throughput.svg"))?;
        md.push_str(
            "
## Charts

![Throughput per query](bench-throughput.svg)
",
        );
        if !latencies.is_empty() {
            latency_chart(&latencies, &dir.join("bench-latency.svg"))?;
            md.push_str(
                "
![Latency percentiles per query](bench-latency.svg)
",
            );
        }
        eprintln!("wrote the charts in {}", dir.display());
    }
    if let Some(records) = args.connectors {
        md.push_str(&connectors::report(
            &connectors::run_all(records)?,
            &command,
        ));
    }
    if let Some(every) = args.checkpoint_overhead {
        let overheads = overhead::checkpoints(
            &queries,
            &config,
            &args.workers,
            args.batch_size,
            args.repeat,
            *every,
        )?;
        md.push_str(&overhead::checkpoints_report(&overheads, *every, &command));
    }
    if args.metrics_overhead {
        let overheads = overhead::metrics(
            &queries,
            &config,
            &args.workers,
            args.batch_size,
            args.repeat,
        )?;
        md.push_str(&overhead::report(&overheads, &command));
    }
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

/// Exports the events (and the baseline input) to CSV once, runs each query that has Flink SQL
/// at each parallelism, over the baseline input and then the events, prints each per-core
/// ratio, and returns the report's Flink section.
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
    let baseline = if args.flink_baseline_events > 0 {
        let dir = flink::baseline_dir(&data, args.flink_baseline_events);
        let tiny = NexmarkConfig {
            events: args.flink_baseline_events,
            ..config.clone()
        };
        let n = flink::export_csv(&tiny, &dir)?;
        eprintln!("exported {n} baseline events as CSV to {}", dir.display());
        Some((dir, n))
    } else {
        None
    };
    let mut runs = Vec::new();
    for &query in queries {
        if flink::sql_file(query).is_none() {
            eprintln!("{query}: no Flink SQL (benches/flink/sql/{query}.sql), skipped");
            continue;
        }
        for &p in &args.flink_parallelism {
            let base = baseline.as_ref().map(|(dir, n)| (dir.as_path(), *n));
            let run = flink::run_with_baseline(&python, query, &data, p, events, base)?;
            eprintln!(
                "{query} Flink p={p}: {:.3} M events/s raw ({:.2} s), {} net of the baseline",
                run.events_per_second() / 1e6,
                run.seconds,
                match (run.net_events_per_second(), run.baseline_seconds) {
                    (Some(net), Some(b)) => format!("{:.3} M events/s ({b:.2} s)", net / 1e6),
                    (None, Some(b)) => format!("— (the baseline took {b:.2} s)"),
                    _ => "—".into(),
                }
            );
            runs.push(run);
        }
    }
    let mut from_csv = Vec::new();
    for &query in queries.iter().filter(|q| flink::sql_file(**q).is_some()) {
        for &workers in &args.flink_parallelism {
            // Worker i of P reads Flink's part file i (run_query.py split them at p = P).
            let source = if workers == 1 {
                NexmarkCsvSource::new(&data)
            } else if data.join(format!("split{workers}")).is_dir() {
                NexmarkCsvSource::split(&data, workers)
            } else {
                continue;
            };
            let m = median(args.repeat, || {
                runner::from_csv(query, source.clone(), events, workers, args.batch_size)
            })?;
            eprintln!(
                "{query} Eddy from CSV, {workers} workers: {:.2} M events/s",
                m.events_per_second() / 1e6
            );
            from_csv.push(m);
        }
    }
    for r in flink::ratios(measurements, &runs) {
        eprintln!(
            "{}: Eddy ÷ Flink per core = {:.1}× raw, {} net of the baseline (target ≥ {}×)",
            r.query,
            r.raw,
            r.net.map_or("—".into(), |x| format!("{x:.1}×")),
            flink::TARGET_RATIO
        );
    }
    Ok(flink::report(
        measurements,
        &from_csv,
        &runs,
        command,
        &version,
    ))
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
    Ok(runner::median(runs))
}

/// As [`median`], for runs of [`eddy_benches::e2e`].
fn median_run(
    repeat: usize,
    mut measure: impl FnMut() -> Result<RunMeasurement>,
) -> Result<RunMeasurement> {
    let mut runs = Vec::new();
    for _ in 0..repeat.max(1) {
        runs.push(measure()?);
    }
    runs.sort_by_key(|m| m.wall);
    Ok(runs.swap_remove(runs.len() / 2))
}

/// One process of a multi-process run (started by [`multi_process`]): runs the first query
/// on one worker and prints its measurement as one line.
fn child(
    args: &Args,
    config: &NexmarkConfig,
    process: usize,
    hosts: &std::path::Path,
) -> Result<()> {
    let Some(&query) = args.queries.first() else {
        bail!("a child process needs --queries");
    };
    let cluster = Cluster::from_hosts_file(process, hosts)?;
    let m = e2e::run(
        query,
        config,
        1,
        args.batch_size,
        args.child_input,
        Some(cluster),
    )?;
    println!("{}", child_line(&m));
    Ok(())
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
