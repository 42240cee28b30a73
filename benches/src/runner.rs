//! Times each query through the engine and through its hand-written loop, side by side.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_connectors::nexmark::{generate, Event, NexmarkConfig};
use eddy_connectors::{NexmarkCsvSource, PreparedSource};
use eddy_engine::{
    CheckpointReport, EngineError, Partition, Pipeline, Record, RunSummary, Runtime, Source,
    WatermarkConfig,
};
use eddy_queries::nexmark::Query;
use eddy_queries::output::Output;

use crate::hand;

/// One measurement.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// The query.
    pub query: Query,
    /// Worker threads (0 for the hand-written loop).
    pub workers: usize,
    /// Events processed.
    pub events: u64,
    /// Bids among them.
    pub bids: u64,
    /// Result rows.
    pub rows: u64,
    /// Wall time.
    pub wall: Duration,
    /// Peak resident memory during the run, in bytes, when the OS tells.
    pub peak_rss: Option<u64>,
    /// What checkpoints did, in a run that took them.
    pub checkpoints: Option<CheckpointReport>,
}

impl Measurement {
    /// Events per second.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Bids per second.
    pub fn bids_per_second(&self) -> f64 {
        self.bids as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Events per second per worker (per core).
    pub fn per_core(&self) -> f64 {
        self.events_per_second() / self.workers.max(1) as f64
    }
}

/// How many of `events` are bids.
pub fn count_bids(events: &[Record<Event>]) -> u64 {
    events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Bid(_)))
        .count() as u64
}

/// Times `query` on `workers` threads, from an in-memory source to the counting sink. Each
/// worker generates its share of the events on its own thread when it opens the source (as a
/// real source allocates its records); the time counts from when every worker is ready.
pub fn engine(
    query: Query,
    config: &NexmarkConfig,
    workers: usize,
    batch_size: usize,
) -> Result<Measurement, EngineError> {
    engine_observed(query, config, workers, batch_size, false)
}

/// As [`engine`]; with `metrics`, the run also serves its metrics endpoint and a thread
/// scrapes `/metrics` and `/explain` every second, as a monitoring system would.
pub fn engine_observed(
    query: Query,
    config: &NexmarkConfig,
    workers: usize,
    batch_size: usize,
    metrics: bool,
) -> Result<Measurement, EngineError> {
    let bids = Arc::new(AtomicU64::new(0));
    let (generator, counted) = (config.clone(), Arc::clone(&bids));
    let what = format!("nexmark(events={})", config.events);
    let source = PreparedSource::new(what, Some(config.events), move |partition| {
        let events = generate(&generator, partition);
        counted.fetch_add(count_bids(&events), Ordering::Relaxed);
        events
    });
    let mut runtime = Runtime::new(workers);
    if metrics {
        runtime = runtime.metrics_addr(([127, 0, 0, 1], 0).into());
    }
    let mut measured = time_query(query, source, runtime, workers, batch_size)?;
    measured.bids = bids.load(Ordering::Relaxed);
    Ok(measured)
}

/// Times `query` on `workers` threads over the same events read back from the CSV files
/// Flink reads (`eddy nexmark generate --format csv`): parsing included, as in Flink's run.
/// Like Flink, it reads only the tables the query names ([`Query::tables`]); like Flink's
/// figure, its events are all `events` of the stream, read or not. `bids` is not counted (0).
pub fn from_csv(
    query: Query,
    source: NexmarkCsvSource,
    events: u64,
    workers: usize,
    batch_size: usize,
) -> Result<Measurement, EngineError> {
    let runtime = Runtime::new(workers);
    let measured = time_query(
        query,
        source.only(query.tables()),
        runtime,
        workers,
        batch_size,
    )?;
    Ok(Measurement { events, ..measured })
}

/// Runs `query` over `source` into the counting sink and measures it from the moment every
/// worker is ready.
fn time_query(
    query: Query,
    source: impl Source<Event>,
    runtime: Runtime,
    workers: usize,
    batch_size: usize,
) -> Result<Measurement, EngineError> {
    let pipeline = Pipeline::new(query.to_string());
    pipeline.batch_size(batch_size);
    let events = pipeline.source("events", source, WatermarkConfig::default());
    query.build(events, &Output::Count);
    reset_peak_rss();
    let handle = runtime.start(&pipeline)?;
    let scraper = handle.metrics_addr().map(scrape_every_second);
    let summary = handle.join();
    if let Some((stop, thread)) = scraper {
        stop.store(true, Ordering::Relaxed);
        let _ = thread.join();
    }
    let summary = summary?;
    Ok(measured(query, workers, summary))
}

/// Times `query` on `workers` threads from the generator (which can resume, so checkpoints can
/// hold it) to Parquet files in a temporary directory, with exactly-once checkpoints every
/// `every` of event time when given: what checkpointing costs a pipeline that writes files.
pub fn engine_checkpointed(
    query: Query,
    config: &NexmarkConfig,
    workers: usize,
    batch_size: usize,
    every: Option<Duration>,
) -> Result<Measurement, EngineError> {
    let dir = tempfile::tempdir().map_err(|e| {
        EngineError::InvalidRuntime(format!("cannot create a temporary directory: {e}"))
    })?;
    let output = Output::Parquet {
        dir: dir.path().join("out"),
        row_group_size: 65_536,
    };
    let pipeline = query.pipeline(config.clone(), &output);
    pipeline.batch_size(batch_size);
    let mut runtime = Runtime::new(workers);
    if let Some(every) = every {
        runtime = runtime.checkpoint(dir.path().join("checkpoints"), every);
    }
    reset_peak_rss();
    let summary = runtime.run(&pipeline)?;
    Ok(measured(query, workers, summary))
}

/// What a run of `query` on `workers` threads measured, from its summary (bids not counted).
fn measured(query: Query, workers: usize, summary: RunSummary) -> Measurement {
    Measurement {
        query,
        workers,
        events: summary.events(),
        bids: 0,
        rows: summary.output_rows(),
        wall: summary.processing,
        peak_rss: peak_rss(),
        checkpoints: summary.checkpoints,
    }
}

/// Scrapes `/metrics` and `/explain` at `addr` every second until told to stop.
fn scrape_every_second(
    addr: std::net::SocketAddr,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        let mut last = Instant::now() - Duration::from_secs(1);
        while !stopping.load(Ordering::Relaxed) {
            if last.elapsed() >= Duration::from_secs(1) {
                for path in ["/metrics", "/explain"] {
                    // A failed scrape costs the run nothing; the next one comes in a second.
                    let _ = ureq::get(&format!("http://{addr}{path}"))
                        .config()
                        .timeout_global(Some(std::time::Duration::from_secs(5)))
                        .build()
                        .call()
                        .and_then(|mut r| r.body_mut().read_to_string());
                }
                last = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    (stop, thread)
}

/// The median of `runs` by wall time (the upper one of an even count).
pub fn median(mut runs: Vec<Measurement>) -> Measurement {
    runs.sort_by_key(|m| m.wall);
    runs.swap_remove(runs.len() / 2)
}

/// Times the hand-written loop of `query` over the same events (one partition), generated on
/// the thread that runs the loop.
pub fn hand_loop(query: Query, config: &NexmarkConfig) -> Measurement {
    let events = generate(config, Partition { index: 0, count: 1 });
    let bids = count_bids(&events);
    let n = events.len() as u64;
    reset_peak_rss();
    let start = Instant::now();
    let rows = hand::run(query, events);
    let wall = start.elapsed();
    Measurement {
        query,
        workers: 0,
        events: n,
        bids,
        rows,
        wall,
        peak_rss: peak_rss(),
        checkpoints: None,
    }
}

/// Whether the engine's and the hand loop's row counts agree: equal for a deterministic query;
/// for one that is not (q12, processing-time windows), each between 1 and the number of bids,
/// since a row counts at least one bid (the golden test checks q12's totals instead).
pub fn rows_agree(engine: &Measurement, hand: &Measurement) -> bool {
    if engine.query.deterministic() {
        engine.rows == hand.rows
    } else {
        [engine, hand]
            .iter()
            .all(|m| m.rows >= 1 && m.rows <= m.bids)
    }
}

/// Resets the kernel's peak-RSS mark for this process (Linux), so each run reports its own.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory since the last reset (Linux `VmHWM`).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The report: one table row per measurement, the hand loop first for each query.
pub fn report(measurements: &[Measurement], command: &str, machine: &str, date: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(md, "Generated by `{command}` on {date}.\n");
    let _ = writeln!(md, "Machine: {machine}.\n");
    let _ = writeln!(
        md,
        "Engine only: each worker generates its share of the events in memory on its own thread \
         before the clock starts, then replays them (moved, not cloned) into the query, whose \
         results go to the counting sink; the time runs from the moment every worker is ready to \
         the end. The hand loop is the same query as a plain Rust loop over the same events, \
         measured in the same run: the ratio is engine ÷ hand loop in events/s per core. Peak \
         RSS includes the pre-generated input. Both use mimalloc as the allocator. Each figure \
         is the median of `--repeat` runs; this machine is shared, so expect ±20% between runs.\n"
    );
    let _ = writeln!(
        md,
        "| query | workers | events | rows | wall s | M events/s | M bids/s | M events/s per core | vs hand loop | peak RSS MiB |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
    for m in measurements {
        let hand = measurements
            .iter()
            .find(|h| h.query == m.query && h.workers == 0);
        let ratio = match (m.workers, hand) {
            (0, _) | (_, None) => "—".to_string(),
            (_, Some(h)) => format!("{:.0}%", 100.0 * m.per_core() / h.events_per_second()),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.3} | {:.2} | {:.2} | {:.2} | {} | {} |",
            m.query,
            if m.workers == 0 {
                "hand loop".to_string()
            } else {
                m.workers.to_string()
            },
            m.events,
            m.rows,
            m.wall.as_secs_f64(),
            m.events_per_second() / 1e6,
            m.bids_per_second() / 1e6,
            m.per_core() / 1e6,
            ratio,
            m.peak_rss.map_or("—".to_string(), |b| format!(
                "{:.0}",
                b as f64 / (1024.0 * 1024.0)
            )),
        );
    }
    md.push_str(&targets(measurements));
    md
}

/// The engine-core issue's targets, checked against the measurements (1 worker unless said).
fn targets(measurements: &[Measurement]) -> String {
    let find = |q: Query, w: usize| measurements.iter().find(|m| m.query == q && m.workers == w);
    let mut md = String::from("\n## Targets\n\n| target | measured | met |\n|---|---|---|\n");
    let mut row = |target: String, measured: Option<f64>, goal: f64, unit: &str| {
        let (value, met) = match measured {
            Some(v) => (
                format!("{v:.2}{unit}"),
                if v >= goal { "yes" } else { "**no**" },
            ),
            None => ("not measured".to_string(), "—"),
        };
        let _ = writeln!(md, "| {target} | {value} | {met} |");
    };
    for (q, goal) in [
        (Query::Q0, 10.0),
        (Query::Q1, 10.0),
        (Query::Q2, 10.0),
        (Query::Q7, 6.0),
        (Query::Q5, 3.0),
    ] {
        let bids = find(q, 1).map(|m| m.bids_per_second() / 1e6);
        row(
            format!("{q}, 1 worker: ≥ {goal} M bids/s"),
            bids,
            goal,
            " M",
        );
    }
    let scaling = find(Query::Q5, 1)
        .zip(find(Query::Q5, 2))
        .map(|(one, two)| two.events_per_second() / one.events_per_second());
    row(
        "q5, 2 workers: ≥ 1.7× one worker".to_string(),
        scaling,
        1.7,
        "×",
    );
    md
}

/// Where a report ends and the hand-written analysis (kept when the report is regenerated)
/// begins.
pub const ANALYSIS_MARKER: &str = "<!-- analysis: kept when the report is regenerated -->";
