//! Seeing inside a running pipeline: the Prometheus metrics endpoint and the watermark
//! explainer.
//!
//! [`Runtime::metrics_addr`](crate::Runtime::metrics_addr) starts an HTTP server on a
//! thread of the process for as long as the run lasts. It serves:
//!
//! - `GET /metrics`: the [Prometheus text format] — per stage records in and out, late,
//!   rejected and dead-lettered records, state entries and a bytes estimate; per stage and worker
//!   the watermark and its lag behind the wall clock; per source reader its newest event time,
//!   whether it is idle, and its backlog (consumer lag, queue depth) where the source tells; the
//!   end-to-end latency quantiles from the run's histogram.
//! - `GET /explain`: the answer to "why hasn't my window fired?" in plain text ([`explain`]):
//!   every source reader's watermark and state (active, idle, stalled, finished), which one
//!   holds the pipeline's watermark back and by how much, and for each stage its input and
//!   output watermarks, the oldest open window and what it waits for.
//!
//! Each process serves its own workers: in a multi-process run, scrape every process.
//!
//! [Prometheus text format]: https://prometheus.io/docs/instrumenting/exposition_formats/

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::checkpoint::CheckpointStats;
use crate::error::EngineError;
use crate::metrics::{RunMetrics, StageMetrics, WorkerReading};
use crate::pipeline::StageInfo;
use crate::time::wall_clock_ms;

/// A live view of a running pipeline in this process: what the metrics endpoint, the
/// explainer and a progress display read. Cheap to clone and to send to another thread
/// ([`RunHandle::observer`](crate::RunHandle::observer)).
#[derive(Clone)]
pub struct Observer {
    pub(crate) pipeline: String,
    pub(crate) stages: Vec<StageInfo>,
    pub(crate) metrics: Arc<RunMetrics>,
    /// The index of this process's first worker.
    pub(crate) first_worker: usize,
    pub(crate) started: Instant,
    /// The run's checkpoints, when it takes them.
    pub(crate) checkpoints: Option<Arc<CheckpointStats>>,
}

impl Observer {
    /// The metrics in Prometheus text format, as `/metrics` serves them.
    pub fn prometheus(&self) -> String {
        prometheus(self)
    }

    /// The watermark explainer's report, as `/explain` serves it: every source reader's
    /// watermark and state, what holds the watermark back, each stage's input and output
    /// watermark and oldest open window.
    pub fn explain(&self) -> String {
        explain(self)
    }

    /// Every source reader of this process now: `(stage, worker, reading)` (a reader that has
    /// not moved its watermark yet reads 0).
    pub fn sources(&self) -> Vec<(String, usize, WorkerReading)> {
        self.stages
            .iter()
            .filter(|s| s.kind == "source")
            .flat_map(|s| {
                self.readings(s.index)
                    .into_iter()
                    .map(|(worker, watermark, mut r)| {
                        r.watermark = Some(watermark);
                        (s.name.clone(), worker, r)
                    })
            })
            .collect()
    }

    /// Records the sources of this process have emitted so far.
    pub fn records_read(&self) -> u64 {
        self.metrics
            .snapshot()
            .iter()
            .filter(|s| s.kind == "source")
            .map(|s| s.records_out)
            .sum()
    }

    /// The watermark at the sinks of this process (`u64::MAX` once they finished).
    pub fn watermark(&self) -> u64 {
        self.stages
            .iter()
            .filter(|s| s.kind == "sink")
            .map(|s| self.stage_watermark(s.index))
            .min()
            .unwrap_or(0)
    }

    fn stage(&self, index: usize) -> &StageMetrics {
        &self.metrics.stages[index].2
    }

    /// A stage's gauges, per local worker, with global worker indices and each worker's
    /// watermark: its own where the stage reports one, else its input's (the stage passes it
    /// on).
    fn readings(&self, index: usize) -> Vec<(usize, u64, WorkerReading)> {
        let readings = self.stage(index).workers();
        let passed_on = || self.input_watermark(index);
        readings
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let watermark = r.watermark.unwrap_or_else(passed_on);
                (self.first_worker + i, watermark, r)
            })
            .collect()
    }

    /// The least watermark of the stages `index` reads (0 for a source).
    fn input_watermark(&self, index: usize) -> u64 {
        self.stages[index]
            .inputs
            .iter()
            .map(|i| self.stage_watermark(*i))
            .min()
            .unwrap_or(0)
    }

    /// The stage's watermark: the least over this process's workers.
    fn stage_watermark(&self, index: usize) -> u64 {
        self.readings(index)
            .iter()
            .map(|(_, watermark, _)| *watermark)
            .min()
            .unwrap_or(0)
    }
}

/// The metrics server of one run: stops when dropped.
pub(crate) struct Server {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Server {
    /// Listens on `addr` and serves `view` on a thread.
    pub(crate) fn start(addr: SocketAddr, view: Observer) -> Result<Self, EngineError> {
        let server = tiny_http::Server::http(addr).map_err(|e| {
            EngineError::InvalidRuntime(format!(
                "cannot serve metrics on {addr}: {e} (choose another --metrics-addr)"
            ))
        })?;
        let addr = server
            .server_addr()
            .to_ip()
            .expect("an HTTP server bound to an IP address");
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("eddy-metrics".into())
            .spawn(move || serve(&serving, &view))
            .map_err(|e| EngineError::InvalidRuntime(format!("cannot start a thread: {e}")))?;
        Ok(Server {
            server,
            thread: Some(thread),
            addr,
        })
    }

    /// The address it listens on (the port chosen when asked for port 0).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(server: &tiny_http::Server, view: &Observer) {
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or("").to_string();
        let (status, body, content_type) = match (request.method(), path.as_str()) {
            (tiny_http::Method::Get, "/metrics") => (
                200,
                prometheus(view),
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (tiny_http::Method::Get, "/explain") => {
                (200, explain(view), "text/plain; charset=utf-8")
            }
            (tiny_http::Method::Get, _) => (
                404,
                format!("no page {path}: try /metrics or /explain\n"),
                "text/plain; charset=utf-8",
            ),
            _ => (
                405,
                "only GET is served\n".to_string(),
                "text/plain; charset=utf-8",
            ),
        };
        let header = tiny_http::Header::from_bytes("Content-Type", content_type)
            .expect("a constant header is valid");
        // One request per connection: a client is never left waiting on a kept-alive
        // connection once the run (and with it the server) has ended.
        let close = tiny_http::Header::from_bytes("Connection", "close")
            .expect("a constant header is valid");
        let response = tiny_http::Response::from_string(body)
            .with_status_code(status)
            .with_header(header)
            .with_header(close);
        // A client that went away is its own problem; the server goes on.
        let _ = request.respond(response);
    }
}

/// Quotes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A Prometheus text page under construction.
struct Page {
    text: String,
}

impl Page {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, String)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        let value = if value == f64::INFINITY {
            "+Inf".to_string()
        } else {
            format!("{value}")
        };
        let _ = writeln!(self.text, "{name}{{{}}} {value}", labels.join(","));
    }
}

/// Reads one counter of a stage's snapshot.
type Counter = fn(&crate::StageSnapshot) -> u64;

/// The `/metrics` page.
fn prometheus(view: &Observer) -> String {
    let mut page = Page {
        text: String::new(),
    };
    let now_ms = wall_clock_ms();
    let pipeline = view.pipeline.clone();
    let base = |stage: &StageInfo| {
        vec![
            ("pipeline", pipeline.clone()),
            ("stage", stage.name.clone()),
            ("kind", stage.kind.clone()),
        ]
    };
    page.family("eddy_up_seconds", "gauge", "Seconds since the run started.");
    page.sample(
        "eddy_up_seconds",
        &[("pipeline", pipeline.clone())],
        view.started.elapsed().as_secs_f64(),
    );
    let counters: [(&str, &str, Counter); 5] = [
        (
            "eddy_records_in_total",
            "Records that entered the stage.",
            |s| s.records_in,
        ),
        (
            "eddy_records_out_total",
            "Records the stage emitted.",
            |s| s.records_out,
        ),
        (
            "eddy_late_records_total",
            "Late records the stage dropped or sent to the side output.",
            |s| s.late,
        ),
        (
            "eddy_rejected_records_total",
            "Records the stage could not read, process or deliver.",
            |s| s.rejected,
        ),
        (
            "eddy_dead_letters_total",
            "Records the stage wrote to the dead-letter sink.",
            |s| s.dead_lettered,
        ),
    ];
    let snapshots = view.metrics.snapshot();
    for (name, help, value) in counters {
        page.family(name, "counter", help);
        for (stage, snapshot) in view.stages.iter().zip(&snapshots) {
            page.sample(name, &base(stage), value(snapshot) as f64);
        }
    }
    page.family(
        "eddy_state_entries",
        "gauge",
        "Entries (keys, windows, buffered records) the stage holds in state.",
    );
    for (stage, snapshot) in view.stages.iter().zip(&snapshots) {
        page.sample("eddy_state_entries", &base(stage), snapshot.state as f64);
    }
    page.family(
        "eddy_state_bytes_estimate",
        "gauge",
        "State entries times the entry's shallow size, where the stage tells it.",
    );
    for stage in &view.stages {
        if let Some(bytes) = view.stage(stage.index).state_bytes_estimate() {
            page.sample("eddy_state_bytes_estimate", &base(stage), bytes as f64);
        }
    }
    worker_gauges(&mut page, view, now_ms, &base);
    latency(&mut page, view);
    checkpoints(&mut page, view);
    page.text
}

/// A reading of one worker's gauge: `None` leaves the sample out.
type Reading<'a> = &'a dyn Fn(u64, &WorkerReading) -> Option<f64>;

fn worker_gauges(
    page: &mut Page,
    view: &Observer,
    now_ms: u64,
    base: &dyn Fn(&StageInfo) -> Vec<(&'static str, String)>,
) {
    let all: Vec<&StageInfo> = view.stages.iter().collect();
    let sources: Vec<&StageInfo> = view.stages.iter().filter(|s| s.kind == "source").collect();
    let finished = |wm: u64| wm == u64::MAX;
    let gauges: [(&str, &str, &[&StageInfo], Reading); 5] = [
        (
            "eddy_watermark_ms",
            "The stage's watermark (output frontier) on a worker, ms since the epoch; +Inf once finished.",
            &all,
            &|wm, _| Some(if finished(wm) { f64::INFINITY } else { wm as f64 }),
        ),
        (
            "eddy_watermark_lag_seconds",
            "How far the stage's watermark on a worker trails the wall clock (absent once finished).",
            &all,
            &|wm, _| (!finished(wm)).then(|| now_ms.saturating_sub(wm) as f64 / 1000.0),
        ),
        (
            "eddy_source_max_event_time_ms",
            "The newest event time a source reader has read, ms since the epoch.",
            &sources,
            &|_, r| r.max_event_time.map(|t| t as f64),
        ),
        (
            "eddy_source_idle",
            "1 while a source reader has had nothing to read since its last poll, else 0.",
            &sources,
            &|wm, r| Some(f64::from(u8::from(r.idle_since_ms.is_some() && !finished(wm)))),
        ),
        (
            "eddy_source_backlog_records",
            "Records waiting at the source for a reader (consumer lag, queue depth), where it tells.",
            &sources,
            &|_, r| r.backlog.map(|b| b as f64),
        ),
    ];
    for (name, help, stages, reading) in gauges {
        page.family(name, "gauge", help);
        for stage in stages {
            for (worker, wm, r) in view.readings(stage.index) {
                if let Some(value) = reading(wm, &r) {
                    let mut labels = base(stage);
                    labels.push(("worker", worker.to_string()));
                    page.sample(name, &labels, value);
                }
            }
        }
    }
    let events = "eddy_source_events_total";
    page.family(
        events,
        "counter",
        "Events a source's connector counts of its own (a webhook's connections closed or refused at its cap), by event.",
    );
    for stage in &sources {
        for (worker, _, r) in view.readings(stage.index) {
            for (event, total) in &r.counters {
                let mut labels = base(stage);
                labels.push(("worker", worker.to_string()));
                labels.push(("event", event.to_string()));
                page.sample(events, &labels, *total as f64);
            }
        }
    }
}

/// Checkpoint gauges: how many completed, the last one's duration, size and age.
fn checkpoints(page: &mut Page, view: &Observer) {
    let Some(stats) = &view.checkpoints else {
        return;
    };
    let report = stats.report();
    let pipeline = [("pipeline", view.pipeline.clone())];
    page.family(
        "eddy_checkpoints_total",
        "counter",
        "Checkpoints completed (by process 0, which completes them).",
    );
    page.sample("eddy_checkpoints_total", &pipeline, report.taken as f64);
    let gauges = [
        (
            "eddy_checkpoint_duration_seconds",
            "How long the last checkpoint took, from its first part to its manifest.",
            report.last.map(|_| report.last_duration.as_secs_f64()),
        ),
        (
            "eddy_checkpoint_bytes",
            "The size of the last checkpoint (all its parts).",
            report.last.map(|_| report.last_bytes as f64),
        ),
        (
            "eddy_checkpoint_age_seconds",
            "Seconds since the last checkpoint completed.",
            report.age.map(|a| a.as_secs_f64()),
        ),
        (
            "eddy_checkpoint_watermark_ms",
            "The boundary (event-time ms) of the last checkpoint.",
            report.last.filter(|&w| w != u64::MAX).map(|w| w as f64),
        ),
    ];
    for (name, help, value) in gauges {
        page.family(name, "gauge", help);
        if let Some(value) = value {
            page.sample(name, &pipeline, value);
        }
    }
}

fn latency(page: &mut Page, view: &Observer) {
    let histogram = view.metrics.latency();
    page.family(
        "eddy_latency_seconds",
        "summary",
        "End-to-end latency of results reaching the sinks (measured since the run started).",
    );
    let pipeline = ("pipeline", view.pipeline.clone());
    if !histogram.is_empty() {
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            let seconds = histogram.value_at_quantile(q) as f64 / 1e6;
            page.sample(
                "eddy_latency_seconds",
                &[pipeline.clone(), ("quantile", q.to_string())],
                seconds,
            );
        }
    }
    let sum = histogram.mean() * histogram.len() as f64 / 1e6;
    page.text.push_str(&format!(
        "eddy_latency_seconds_sum{{pipeline=\"{}\"}} {sum}\n",
        label(&view.pipeline)
    ));
    page.text.push_str(&format!(
        "eddy_latency_seconds_count{{pipeline=\"{}\"}} {}\n",
        label(&view.pipeline),
        histogram.len()
    ));
}

/// An event time as RFC 3339 with milliseconds, or "end" for the finished watermark.
fn time(ms: u64) -> String {
    if ms == u64::MAX {
        return "end (finished)".to_string();
    }
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

/// A duration in ms, for people.
fn span(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 7_200_000 {
        format!("{:.1} min", ms as f64 / 60_000.0)
    } else {
        format!("{:.1} h", ms as f64 / 3_600_000.0)
    }
}

/// What a source reader is doing, in words.
fn source_state(wm: u64, r: &WorkerReading, idle_timeout_ms: Option<u64>, now_ms: u64) -> String {
    if wm == u64::MAX {
        return "finished".to_string();
    }
    let Some(since) = r.idle_since_ms else {
        return match r.last_record_ms {
            Some(at) => format!(
                "active, last record {} ago",
                span(now_ms.saturating_sub(at))
            ),
            None => "active, nothing read yet".to_string(),
        };
    };
    let idle = now_ms.saturating_sub(since);
    match idle_timeout_ms {
        Some(timeout) if idle >= timeout => format!(
            "idle for {}: past its idle timeout of {}, its watermark follows the wall clock",
            span(idle),
            span(timeout)
        ),
        Some(timeout) => format!(
            "idle for {}: its watermark follows the wall clock once idle for {}",
            span(idle),
            span(timeout)
        ),
        None => format!(
            "stalled: nothing read for {} and no idle timeout, so its watermark stays put until \
             it reads again",
            span(idle)
        ),
    }
}

/// The `/explain` page: where every watermark is and what holds it.
fn explain(view: &Observer) -> String {
    let now_ms = wall_clock_ms();
    let mut out = String::new();
    let watermark = view.watermark();
    let _ = writeln!(
        out,
        "pipeline '{}': watermark at the sinks {}{}",
        view.pipeline,
        time(watermark),
        if watermark == u64::MAX {
            String::new()
        } else {
            format!(
                " ({} behind the wall clock)",
                span(now_ms.saturating_sub(watermark))
            )
        }
    );
    let _ = writeln!(
        out,
        "(as seen at {}; this process's workers only)",
        time(now_ms)
    );
    out.push_str("\nsources:\n");
    let mut holders: Vec<(u64, String)> = Vec::new();
    for stage in view.stages.iter().filter(|s| s.kind == "source") {
        let timeout = view.stage(stage.index).idle_timeout_ms();
        for (worker, wm, r) in view.readings(stage.index) {
            let newest = r.max_event_time.map_or_else(|| "none".to_string(), time);
            let backlog = r
                .backlog
                .map_or_else(String::new, |b| format!(", backlog {b} records"));
            let _ = writeln!(
                out,
                "  '{}' worker {worker}: watermark {}, newest event {newest}{backlog}; {}",
                stage.name,
                time(wm),
                source_state(wm, &r, timeout, now_ms)
            );
            if wm != u64::MAX {
                holders.push((wm, format!("'{}' worker {worker}", stage.name)));
            }
        }
    }
    holders.sort();
    out.push('\n');
    match holders.as_slice() {
        [] => out.push_str("every source has finished: the watermark is at the end\n"),
        [(w, who)] => {
            let _ = writeln!(
                out,
                "held back by: source {who}, the only one still reading, at {}",
                time(*w)
            );
        }
        [(w, who), (next, _), ..] => {
            let _ = writeln!(
                out,
                "held back by: source {who} at {}, {} behind the next slowest source reader",
                time(*w),
                span(next - w)
            );
        }
    }
    out.push_str("\nstages (input watermark -> output watermark):\n");
    for stage in view.stages.iter().filter(|s| s.kind != "source") {
        explain_stage(&mut out, view, stage);
    }
    out
}

fn explain_stage(out: &mut String, view: &Observer, stage: &StageInfo) {
    let input = view.input_watermark(stage.index);
    let output = view.stage_watermark(stage.index);
    let oldest = view
        .readings(stage.index)
        .into_iter()
        .filter_map(|(worker, _, r)| r.pending.map(|(start, end)| (end, start, worker)))
        .min();
    // Only a stage with pending results holds the watermark; elsewhere a gap is progress
    // information still travelling between workers.
    let held = match (oldest.is_some() && output < input, input == u64::MAX) {
        (true, false) => format!(", holds it {} back", span(input - output)),
        (true, true) => ", holds its last results until they are due".to_string(),
        (false, _) => String::new(),
    };
    let _ = writeln!(
        out,
        "  '{}' ({}): {} -> {}{held}",
        stage.name,
        stage.kind,
        time(input),
        time(output)
    );
    if let Some((end, start, worker)) = oldest {
        let wait = if input >= end {
            "it fires now".to_string()
        } else {
            format!(
                "it fires when the watermark reaches {} ({} to go)",
                time(end),
                span(end - input)
            )
        };
        let what = match start {
            Some(start) => format!("oldest open window [{}, {})", time(start), time(end)),
            None => format!("earliest pending result, due at {}", time(end)),
        };
        let _ = writeln!(out, "    {what} on worker {worker}: {wait}");
    }
}
