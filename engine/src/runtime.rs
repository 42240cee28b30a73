//! Running a pipeline on timely workers: threads in one process, or processes in a cluster.

use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use timely::communication::WorkerGuards;
use timely::dataflow::ProbeHandle;
use timely::{CommunicationConfig, WorkerConfig};

use crate::checkpoint::{
    CheckpointReport, CheckpointStats, CheckpointStore, Checkpoints, Coordinator, LocalDir,
};
use crate::dead_letter::Rejects;
use crate::durability::{Holds, Releases, RunControl, DEFAULT_COMMIT_EVERY};
use crate::error::EngineError;
use crate::metrics::{RunMetrics, StageSnapshot};
use crate::observe::{Observer, Server};
use crate::pipeline::{Ctx, Failures, Finishers, Pipeline};
use crate::sink::SinkReport;
use crate::source::Partition;

/// The processes of a multi-process run: this process's index and every process's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// This process's index, from 0 to `hosts.len() - 1`.
    pub process: usize,
    /// `host:port` of every process, in process order.
    pub hosts: Vec<String>,
}

impl Cluster {
    /// Reads the hosts from a file with one `host:port` per line (blank lines ignored).
    pub fn from_hosts_file(process: usize, path: &Path) -> Result<Self, EngineError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            EngineError::InvalidRuntime(format!(
                "cannot read the hosts file {}: {e}",
                path.display()
            ))
        })?;
        let hosts = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        Ok(Cluster { process, hosts })
    }
}

/// Runs pipelines on timely workers.
#[derive(Clone, Debug)]
pub struct Runtime {
    workers: usize,
    cluster: Option<Cluster>,
    metrics_addr: Option<SocketAddr>,
    checkpoint: Option<(PathBuf, Duration)>,
    commit_every: Duration,
}

impl Runtime {
    /// `workers` worker threads in this process.
    pub fn new(workers: usize) -> Self {
        Runtime {
            workers,
            cluster: None,
            metrics_addr: None,
            checkpoint: None,
            commit_every: DEFAULT_COMMIT_EVERY,
        }
    }

    /// How often sinks commit in a run whose sources acknowledge what they read and that takes
    /// no checkpoints (default 1 s; see [`crate::durability`]): a record is acknowledged at
    /// most about this long after it reached the sinks, and file sinks close a file this
    /// often while records come. Zero is taken as 1 ms.
    pub fn commit_every(mut self, every: Duration) -> Self {
        self.commit_every = every.max(Duration::from_millis(1));
        self
    }

    /// Takes exactly-once checkpoints in `dir` every `every` of event time (see
    /// [`crate::checkpoint`]): file sinks publish their results only when the checkpoint
    /// after them completes, and a run started with a `dir` that holds a complete checkpoint
    /// resumes from it (with any worker or process count), so that its output ends up as an
    /// uninterrupted run's. Every process of a cluster must name the same directory.
    pub fn checkpoint(mut self, dir: impl Into<PathBuf>, every: Duration) -> Self {
        self.checkpoint = Some((dir.into(), every));
        self
    }

    /// Serves the run's metrics (Prometheus text at `/metrics`) and the watermark explainer
    /// (`/explain`) over HTTP on `addr` while the run lasts ([`crate::observe`]). Port 0 picks
    /// a free port: [`RunHandle::metrics_addr`] says which. The gauges it reads are kept
    /// whether it is on or not; it adds a thread that answers requests, nothing to the
    /// dataflow.
    pub fn metrics_addr(mut self, addr: SocketAddr) -> Self {
        self.metrics_addr = Some(addr);
        self
    }

    /// Runs as one process of a cluster (each process has `workers` threads).
    pub fn cluster(mut self, cluster: Cluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    fn timely_config(&self) -> Result<timely::Config, EngineError> {
        if self.workers == 0 {
            return Err(EngineError::InvalidRuntime(
                "--workers must be at least 1".into(),
            ));
        }
        let communication = match &self.cluster {
            None if self.workers == 1 => CommunicationConfig::Thread,
            None => CommunicationConfig::Process(self.workers),
            Some(c) => {
                if c.hosts.is_empty() {
                    return Err(EngineError::InvalidRuntime(
                        "the hosts list is empty".into(),
                    ));
                }
                if c.process >= c.hosts.len() {
                    return Err(EngineError::InvalidRuntime(format!(
                        "process index {} is out of range: the hosts list names {} processes (0..{})",
                        c.process,
                        c.hosts.len(),
                        c.hosts.len() - 1
                    )));
                }
                CommunicationConfig::Cluster {
                    threads: self.workers,
                    process: c.process,
                    addresses: c.hosts.clone(),
                    report: false,
                    zerocopy: false,
                }
            }
        };
        Ok(timely::Config {
            communication,
            worker: WorkerConfig::default(),
        })
    }

    /// Validates the pipeline and starts its workers; returns at once.
    pub fn start(&self, pipeline: &Pipeline) -> Result<RunHandle, EngineError> {
        pipeline.validate()?;
        let config = self.timely_config()?;
        let processes = self.cluster.as_ref().map_or(1, |c| c.hosts.len());
        let process0 = self.cluster.as_ref().is_none_or(|c| c.process == 0);
        let stages = pipeline.stages();
        let metrics = Arc::new(RunMetrics::new(
            stages.iter().map(|s| (s.name.clone(), s.kind.clone())),
            self.workers,
        ));
        let names: Arc<Vec<Arc<str>>> =
            Arc::new(stages.iter().map(|s| Arc::from(s.name.as_str())).collect());
        let failures: Failures = Arc::new(Mutex::new(Vec::new()));
        let checkpoints = match &self.checkpoint {
            Some((dir, every)) => {
                pipeline.validate_checkpoints()?;
                let streaming = pipeline.streaming_sinks();
                if !streaming.is_empty() {
                    tracing::warn!(
                        "sink{} {} write{} as records come, so with checkpoints {} at least \
                         once: after a crash it may repeat what it wrote since the last \
                         checkpoint (file sinks into a directory — Parquet, JSON lines — are \
                         exactly once)",
                        if streaming.len() == 1 { "" } else { "s" },
                        streaming.join(", "),
                        if streaming.len() == 1 { "s" } else { "" },
                        if streaming.len() == 1 {
                            "it is"
                        } else {
                            "they are"
                        },
                    );
                }
                let store: Arc<dyn CheckpointStore> = Arc::new(LocalDir::new(dir)?);
                let every_ms = (every.as_millis() as u64).max(1);
                Some(Arc::new(Checkpoints::open(
                    store,
                    &pipeline.name(),
                    every_ms,
                    &pipeline.file_sinks(),
                    process0,
                    Arc::clone(&failures),
                )?))
            }
            None => None,
        };
        let control = RunControl::new(
            (pipeline.acknowledges() && checkpoints.is_none()).then_some(self.commit_every),
        );
        let ctl = Arc::clone(&control);
        let sinks = pipeline.sink_recipes();
        let late = pipeline.late();
        let dead_letters = pipeline.dead_letter_sink();
        let batch_size = pipeline.batch_size_value();
        let (m, f) = (Arc::clone(&metrics), Arc::clone(&failures));
        let c = checkpoints.clone();
        let started = Instant::now();
        let built = Arc::new(Barrier::new(self.workers));
        let first_worker = self
            .cluster
            .as_ref()
            .map_or(0, |c| c.process * self.workers);
        let server = self
            .metrics_addr
            .map(|addr| {
                let view = Observer {
                    pipeline: pipeline.name(),
                    stages: stages.clone(),
                    metrics: Arc::clone(&metrics),
                    first_worker,
                    started,
                    checkpoints: checkpoints.as_ref().map(|c| Arc::clone(&c.stats)),
                };
                Server::start(addr, view)
            })
            .transpose()?;
        let ready_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
        let ready = Arc::clone(&ready_at);
        let guards = timely::execute(config, move |worker| {
            let partition = Partition {
                index: worker.index(),
                count: worker.peers(),
            };
            let commit_cycle = ctl.commit_every.is_some();
            let rejects = Rejects::open(&late, dead_letters.as_ref(), partition, commit_cycle)
                .unwrap_or_else(|error| {
                    let stage = "dead-letters".to_string();
                    f.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(EngineError::Connector { stage, error });
                    Rejects::default()
                });
            let reports = Rc::new(RefCell::new(Vec::new()));
            let finishers: Finishers = Rc::default();
            worker.dataflow::<u64, _, _>(|scope| {
                let (durable, held) = (ProbeHandle::new(), ProbeHandle::new());
                // Stateful stages hold acknowledgements only on a commit cycle (no checkpoints).
                let holds = if commit_cycle {
                    Holds::reporter(scope, durable.clone(), &held)
                } else {
                    Holds::default()
                };
                let mut ctx = Ctx {
                    scope,
                    partition,
                    metrics: Arc::clone(&m),
                    names: Arc::clone(&names),
                    rejects: rejects.clone(),
                    failures: Arc::clone(&f),
                    batch_size,
                    reports: Rc::clone(&reports),
                    forks: Default::default(),
                    checkpoints: c.clone(),
                    control: Arc::clone(&ctl),
                    releases: Releases {
                        durable,
                        held,
                        holds,
                        finishers: Rc::clone(&finishers),
                    },
                };
                for build in &sinks {
                    build(&mut ctx);
                }
            });
            // Every local worker has built its dataflow and opened its sources: processing starts.
            if built.wait().is_leader() {
                *ready.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
            }
            if !f.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
                // A sink (or the dead-letter sink) could not open: read nothing.
                ctl.abort();
            }
            while worker.has_dataflows() {
                worker.step_or_park(Some(Duration::from_millis(10)));
            }
            let succeeded =
                !ctl.aborted() && f.lock().unwrap_or_else(PoisonError::into_inner).is_empty();
            for finish in finishers.take() {
                finish(succeeded);
            }
            for (stage, finished) in rejects.finish() {
                match finished {
                    Ok(report) => reports.borrow_mut().push((stage.to_string(), report)),
                    Err(error) => f.lock().unwrap_or_else(PoisonError::into_inner).push(
                        EngineError::Connector {
                            stage: stage.into(),
                            error,
                        },
                    ),
                }
            }
            reports.take()
        })
        .map_err(EngineError::Startup)?;
        let coordinator = checkpoints.as_ref().filter(|_| process0).map(|c| {
            Coordinator::start(
                Arc::clone(c),
                pipeline.checkpoint_participants(),
                self.workers * processes,
                pipeline.file_sinks(),
            )
        });
        let local_workers = self.workers as u64;
        let processes = processes as u64;
        Ok(RunHandle {
            control,
            coordinator,
            checkpoint_parts: checkpoints.clone(),
            checkpoints: checkpoints.as_ref().map(|c| Arc::clone(&c.stats)),
            guards,
            observer: Observer {
                pipeline: pipeline.name(),
                stages,
                metrics: Arc::clone(&metrics),
                first_worker,
                started,
                checkpoints: checkpoints.as_ref().map(|c| Arc::clone(&c.stats)),
            },
            server,
            metrics,
            failures,
            started,
            ready_at,
            pipeline: pipeline.name(),
            workers: self.workers,
            processes: processes as usize,
            expected_records: pipeline
                .expected_records()
                .map(|n| n * local_workers / (local_workers * processes)),
        })
    }

    /// Runs the pipeline to completion (bounded sources) and returns its summary.
    pub fn run(&self, pipeline: &Pipeline) -> Result<RunSummary, EngineError> {
        self.start(pipeline)?.join()
    }
}

/// A running pipeline.
pub struct RunHandle {
    control: Arc<RunControl>,
    guards: WorkerGuards<Vec<(String, SinkReport)>>,
    coordinator: Option<Coordinator>,
    checkpoint_parts: Option<Arc<Checkpoints>>,
    checkpoints: Option<Arc<CheckpointStats>>,
    observer: Observer,
    server: Option<Server>,
    metrics: Arc<RunMetrics>,
    failures: Failures,
    started: Instant,
    ready_at: Arc<Mutex<Option<Instant>>>,
    pipeline: String,
    workers: usize,
    processes: usize,
    expected_records: Option<u64>,
}

impl RunHandle {
    /// Records the sources of this process have emitted so far, and how many they will emit in
    /// all when known.
    pub fn progress(&self) -> (u64, Option<u64>) {
        (self.observer.records_read(), self.expected_records)
    }

    /// Every stage's counters now, while the run goes on (state gauges included).
    pub fn stages(&self) -> Vec<StageSnapshot> {
        self.metrics.snapshot()
    }

    /// Where the metrics endpoint listens, when [`Runtime::metrics_addr`] turned it on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(Server::addr)
    }

    /// A live view of the run (metrics, explainer, source readings) that other threads can
    /// keep.
    pub fn observer(&self) -> Observer {
        self.observer.clone()
    }

    /// A function that reads how many records the sources of this process have emitted, for a
    /// progress display on another thread.
    pub fn progress_reader(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let observer = self.observer.clone();
        move || observer.records_read()
    }

    /// Stops the run gracefully: every source of this process stops where it is, what was
    /// read drains into the sinks, which commit, and [`join`](Self::join) returns the summary
    /// (see [`crate::durability`]). Windows the watermark has not closed do not fire. Callable
    /// from any thread, through [`stopper`](Self::stopper).
    pub fn stop(&self) {
        self.control.request_stop();
    }

    /// A function that stops the run gracefully ([`stop`](Self::stop)), for a signal handler
    /// or another thread.
    pub fn stopper(&self) -> impl Fn() + Send + Sync + 'static {
        let control = Arc::clone(&self.control);
        move || control.request_stop()
    }

    /// Waits for the workers to finish and returns the run's summary, or its first failure.
    pub fn join(self) -> Result<RunSummary, EngineError> {
        let mut sinks: Vec<(String, SinkReport)> = Vec::new();
        let mut panics = Vec::new();
        for result in self.guards.join() {
            match result {
                Ok(reports) => {
                    for (stage, report) in reports {
                        match sinks.iter_mut().find(|(s, _)| *s == stage) {
                            Some((_, total)) => {
                                total.rows += report.rows;
                                total.files.extend(report.files);
                            }
                            None => sinks.push((stage, report)),
                        }
                    }
                }
                Err(panic) => panics.push(panic),
            }
        }
        if let Some(checkpoints) = &self.checkpoint_parts {
            checkpoints.flush();
        }
        if let Some(coordinator) = self.coordinator {
            // The final checkpoint publishes the last result files.
            coordinator.finish(self.control.stop_requested());
        }
        drop(self.server);
        let wall = self.started.elapsed();
        let ready_at = *self.ready_at.lock().unwrap_or_else(PoisonError::into_inner);
        let processing = ready_at.map_or(wall, |at| at.elapsed());
        if let Some(panic) = panics.into_iter().next() {
            return Err(EngineError::WorkerPanicked(panic));
        }
        let mut failures =
            std::mem::take(&mut *self.failures.lock().unwrap_or_else(PoisonError::into_inner));
        if !failures.is_empty() {
            return Err(failures.swap_remove(0));
        }
        for (_, report) in &mut sinks {
            report.files.sort();
        }
        Ok(RunSummary {
            stopped: self.control.stop_requested(),
            pipeline: self.pipeline,
            workers: self.workers,
            processes: self.processes,
            wall,
            processing,
            stages: self.metrics.snapshot(),
            sinks,
            latency: self.metrics.latency(),
            rejected_examples: self.metrics.rejected_examples(),
            checkpoints: self.checkpoints.map(|c| c.report()),
        })
    }
}

/// What a run did, in this process.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The pipeline's name.
    pub pipeline: String,
    /// Whether the run was stopped ([`RunHandle::stop`]) rather than running to the end of
    /// its input.
    pub stopped: bool,
    /// Worker threads in this process.
    pub workers: usize,
    /// Processes in the run.
    pub processes: usize,
    /// Wall-clock time from start to the last worker's end.
    pub wall: Duration,
    /// Wall-clock time from the moment every local worker had built its dataflow and opened its
    /// sources to the last worker's end: the time spent processing.
    pub processing: Duration,
    /// Every stage's counters.
    pub stages: Vec<StageSnapshot>,
    /// Every sink's report (rows and files), by stage name.
    pub sinks: Vec<(String, SinkReport)>,
    /// End-to-end latency of results, in microseconds.
    pub latency: Histogram<u64>,
    /// The first few records sources could not read, with where and why.
    pub rejected_examples: Vec<String>,
    /// What checkpoints did, when the run took them.
    pub checkpoints: Option<CheckpointReport>,
}

impl RunSummary {
    /// Records read by all sources.
    pub fn events(&self) -> u64 {
        self.stages
            .iter()
            .filter(|s| s.kind == "source")
            .map(|s| s.records_out)
            .sum()
    }

    /// Events per second of wall time.
    pub fn events_per_second(&self) -> f64 {
        self.events() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Rows written by all sinks (the late-record side output excluded): the records that
    /// reached them, less those they could not deliver (dead-lettered).
    pub fn output_rows(&self) -> u64 {
        self.stages
            .iter()
            .filter(|s| s.kind == "sink")
            .map(|s| s.records_in.saturating_sub(s.rejected))
            .sum()
    }

    /// Files the sinks finished.
    pub fn files(&self) -> Vec<PathBuf> {
        self.sinks
            .iter()
            .flat_map(|(_, r)| r.files.iter().cloned())
            .collect()
    }

    /// Late records over all stages.
    pub fn late(&self) -> u64 {
        self.stages.iter().map(|s| s.late).sum()
    }

    /// Records rejected over all stages: malformed input, failed user functions, undeliverable
    /// output.
    pub fn rejected(&self) -> u64 {
        self.stages.iter().map(|s| s.rejected).sum()
    }

    /// Records written to the dead-letter sink, over all stages.
    pub fn dead_lettered(&self) -> u64 {
        self.stages.iter().map(|s| s.dead_lettered).sum()
    }

    /// A latency quantile in milliseconds, if any result was measured.
    pub fn latency_ms(&self, quantile: f64) -> Option<f64> {
        (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(quantile) as f64 / 1000.0)
    }
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |ms| format!("{ms:.2} ms"))
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = [
            ("pipeline", self.pipeline.clone()),
            (
                "ended",
                if self.stopped {
                    "stopped"
                } else {
                    "end of input"
                }
                .to_string(),
            ),
            (
                "workers x processes",
                format!("{} x {}", self.workers, self.processes),
            ),
            ("events", self.events().to_string()),
            ("wall seconds", format!("{:.3}", self.wall.as_secs_f64())),
            ("events/s", format!("{:.0}", self.events_per_second())),
            ("output rows", self.output_rows().to_string()),
            ("files written", self.files().len().to_string()),
            ("latency p50", fmt_ms(self.latency_ms(0.5))),
            ("latency p99", fmt_ms(self.latency_ms(0.99))),
            ("latency max", fmt_ms(self.latency_ms(1.0))),
            ("late records", self.late().to_string()),
            ("rejected records", self.rejected().to_string()),
            ("dead letters", self.dead_lettered().to_string()),
        ];
        writeln!(f, "+----------------------+----------------------+")?;
        for (k, v) in rows {
            writeln!(f, "| {k:<20} | {v:>20} |")?;
        }
        writeln!(f, "+----------------------+----------------------+")?;
        writeln!(
            f,
            "{:<24} {:<8} {:>12} {:>12} {:>8} {:>8} {:>10}",
            "stage", "kind", "in", "out", "late", "rejected", "state"
        )?;
        for s in &self.stages {
            writeln!(
                f,
                "{:<24} {:<8} {:>12} {:>12} {:>8} {:>8} {:>10}",
                s.name, s.kind, s.records_in, s.records_out, s.late, s.rejected, s.state
            )?;
        }
        for example in &self.rejected_examples {
            writeln!(f, "rejected: {example}")?;
        }
        if let Some(c) = &self.checkpoints {
            writeln!(f, "{c}")?;
        }
        Ok(())
    }
}
