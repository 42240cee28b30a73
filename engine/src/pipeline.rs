//! Pipelines: a description — a graph of named stages — that every worker instantiates.
//!
//! A [`Pipeline`] is built once, on one thread, from sources, stages and sinks. Each stage keeps
//! a *recipe*: a function that, given a worker's timely scope, builds the stage's operator on the
//! stream its input recipe builds. The [`Runtime`](crate::Runtime) runs the recipes of every
//! sink on every worker. Stage names are unique: they key metrics now and checkpoint state later.
//!
//! A [`Stream`] is consumed by the stage that reads it. To feed several stages from one stream,
//! clone it: on every worker the stream is then built once and passed through a fork, and each
//! reader receives every batch.
//!
//! ```
//! use eddy_engine::{Pipeline, WatermarkConfig};
//! # use eddy_engine::{Partition, ReadStatus, RecordError, Source, SourceReader, ConnectorError};
//! # struct Numbers;
//! # impl Source<u64> for Numbers {
//! #     fn describe(&self) -> String { "numbers".into() }
//! #     fn open(&self, _: Partition) -> Result<Box<dyn SourceReader<u64>>, ConnectorError> {
//! #         Ok(Box::new(Done))
//! #     }
//! # }
//! # struct Done;
//! # impl SourceReader<u64> for Done {
//! #     fn poll(&mut self, _: &mut Vec<(u64, u64)>, _: usize, _: &mut Vec<RecordError>)
//! #         -> Result<ReadStatus, ConnectorError> { Ok(ReadStatus::Done) }
//! # }
//! let pipeline = Pipeline::new("example");
//! let numbers = pipeline.source("numbers", Numbers, WatermarkConfig::default());
//! assert_eq!(pipeline.stages()[0].name, "numbers");
//! # drop(numbers);
//! ```

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};

use serde::de::DeserializeOwned;
use serde::Serialize;
use timely::dataflow::{Scope, StreamVec};

use crate::checkpoint::{Checkpointer, Checkpoints, FileSinkDirs, StageCheckpoint};
use crate::dead_letter::{DeadLetter, DeadLetterKind, Rejects};
use crate::durability::{Hold, Holds, Releases, RunControl};
use crate::error::{ConnectorError, EngineError};
use crate::late::{LatePolicy, LateRecord};
use crate::metrics::{RunMetrics, StageMetrics, StateGauge, WorkerGauge};
use crate::operators;
use crate::sink::{Sink, SinkReport};
use crate::source::{Partition, RecordError, Source};
use crate::time::{EventTime, Record, WatermarkConfig};

/// What every record type flowing through a pipeline must be: sendable between threads and,
/// for exchanges between processes, serializable.
pub trait Data: Send + Serialize + DeserializeOwned + 'static {}
impl<T: Send + Serialize + DeserializeOwned + 'static> Data for T {}

/// A timely stream of records stamped with watermarks, as stages see it.
pub type Records<'s, T> = StreamVec<'s, u64, Record<T>>;

/// Builds a stage's stream on one worker.
type Recipe<T> = Arc<dyn for<'s> Fn(&mut Ctx<'s>) -> Records<'s, T> + Send + Sync>;
/// A stream's recipe, shared by the clones of the stream so that cloning can turn it into a fork.
type RecipeCell<T> = Arc<Mutex<(Recipe<T>, bool)>>;
/// Builds a sink (and, through its input, everything upstream) on one worker.
type SinkRecipe = Arc<dyn for<'s> Fn(&mut Ctx<'s>) + Send + Sync>;

fn recipe<T, F>(f: F) -> Recipe<T>
where
    F: for<'s> Fn(&mut Ctx<'s>) -> Records<'s, T> + Send + Sync + 'static,
{
    Arc::new(f)
}

/// The description of one stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageInfo {
    /// Position in the pipeline, in the order stages were added.
    pub index: usize,
    /// The stage's unique name.
    pub name: String,
    /// What kind of stage: `source`, `map`, `window`, `sink`, ...
    pub kind: String,
    /// Details: a source's or sink's description, a window's size.
    pub detail: String,
    /// The stages it reads from.
    pub inputs: Vec<usize>,
    /// How its input is exchanged between workers (`by key`, `by window`, `to one worker`),
    /// when it is.
    pub exchange: Option<String>,
    /// Whether the stage takes part in checkpoints with its state (stateful operators that
    /// support exactly-once mark themselves with [`Stream::checkpointed`]).
    pub checkpointed: bool,
    /// The operators of a checkpointed stage that write parts of their own
    /// ([`Stream::checkpointed_parts`]); empty: the stage writes one part.
    pub checkpoint_parts: Vec<String>,
}

pub(crate) struct Graph {
    name: String,
    stages: Vec<StageInfo>,
    sinks: Vec<SinkRecipe>,
    file_sinks: Vec<FileSinkDirs>,
    /// Sinks that write as they go (not files): at least once under checkpoints.
    streaming_sinks: Vec<String>,
    late: LatePolicy,
    dead_letters: Option<Arc<dyn Sink<DeadLetter>>>,
    batch_size: usize,
    expected_records: Option<u64>,
    /// Whether a source acknowledges what it reads ([`Source::acknowledges`]).
    acknowledging: bool,
    problems: Vec<String>,
}

impl Graph {
    fn add_stage(&mut self, name: &str, kind: &str, detail: String, inputs: Vec<usize>) -> usize {
        let index = self.stages.len();
        if name.trim().is_empty() {
            self.problems
                .push(format!("stage #{index} ({kind}) has an empty name"));
        } else if self.stages.iter().any(|s| s.name == name) {
            self.problems.push(format!(
                "two stages are named '{name}': stage names must be unique"
            ));
        }
        self.stages.push(StageInfo {
            index,
            name: name.to_string(),
            kind: kind.to_string(),
            detail,
            inputs,
            exchange: None,
            checkpointed: false,
            checkpoint_parts: Vec::new(),
        });
        index
    }
}

/// A pipeline description: sources, named stages and sinks. Cheap to share: clones refer to the
/// same description.
#[derive(Clone)]
pub struct Pipeline {
    graph: Arc<Mutex<Graph>>,
}

/// Default number of records a source emits per batch.
pub const DEFAULT_BATCH_SIZE: usize = 4096;

impl Pipeline {
    /// An empty pipeline.
    pub fn new(name: impl Into<String>) -> Self {
        Pipeline {
            graph: Arc::new(Mutex::new(Graph {
                name: name.into(),
                stages: Vec::new(),
                sinks: Vec::new(),
                file_sinks: Vec::new(),
                streaming_sinks: Vec::new(),
                late: LatePolicy::Drop,
                dead_letters: None,
                batch_size: DEFAULT_BATCH_SIZE,
                expected_records: None,
                acknowledging: false,
                problems: Vec::new(),
            })),
        }
    }

    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pipeline's name.
    pub fn name(&self) -> String {
        self.graph().name.clone()
    }

    /// Adds a source. Its readers give each record's event time (ms since the epoch);
    /// `watermarks` says how far behind the largest event time the watermark trails.
    pub fn source<T, S>(&self, name: &str, source: S, watermarks: WatermarkConfig) -> Stream<T>
    where
        T: Data,
        S: Source<T>,
    {
        let mut graph = self.graph();
        let index = graph.add_stage(name, "source", source.describe(), Vec::new());
        if let Some(n) = source.expected_records() {
            graph.expected_records = Some(graph.expected_records.unwrap_or(0) + n);
        }
        graph.acknowledging |= source.acknowledges();
        let source: Arc<dyn Source<T>> = Arc::new(source);
        let build = recipe(move |ctx: &mut Ctx<'_>| {
            let stage = ctx.stage_context(index);
            operators::source(
                ctx.scope,
                stage,
                Arc::clone(&source),
                watermarks,
                ctx.batch_size,
                ctx.releases.clone(),
            )
        });
        Stream {
            graph: Arc::clone(&self.graph),
            index,
            build: cell(build),
        }
    }

    /// Sets what happens to late records (default: drop and count).
    pub fn late_policy(&self, policy: LatePolicy) -> &Self {
        self.graph().late = policy;
        self
    }

    /// Sends every record the pipeline cannot process — one a source cannot decode, one a user
    /// function fails on, one late beyond the late policy, one a sink gives up delivering — to
    /// `sink`, as a [`DeadLetter`] with its bytes, where it came from and why (see
    /// [`dead_letter`](crate::dead_letter)). Without one they are counted and skipped.
    pub fn dead_letters(&self, sink: impl Sink<DeadLetter>) -> &Self {
        self.graph().dead_letters = Some(Arc::new(sink));
        self
    }

    /// Sets how many records a source emits per batch (default 4096). Larger batches raise
    /// throughput; smaller ones lower latency.
    pub fn batch_size(&self, records: usize) -> &Self {
        self.graph().batch_size = records.max(1);
        self
    }

    /// The stages, in the order they were added.
    pub fn stages(&self) -> Vec<StageInfo> {
        self.graph().stages.clone()
    }

    /// How many records the sources will produce, when they know.
    pub fn expected_records(&self) -> Option<u64> {
        self.graph().expected_records
    }

    /// Checks the description: unique, non-empty stage names and at least one sink.
    pub fn validate(&self) -> Result<(), EngineError> {
        let graph = self.graph();
        let mut problems = graph.problems.clone();
        if graph.sinks.is_empty() {
            problems.push("it has no sink: add one with `.sink(name, sink)`".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(EngineError::InvalidPipeline {
                pipeline: graph.name.clone(),
                reason: problems.join("; "),
            })
        }
    }

    /// The pipeline as a Graphviz DOT graph: sources, stages and sinks as nodes (named, with
    /// their kind and details), the streams between them as edges; an edge into a stage that
    /// exchanges records between workers is dashed and says how.
    pub fn to_dot(&self) -> String {
        let graph = self.graph();
        let mut dot = format!(
            "digraph \"{}\" {{\n  rankdir=LR;\n",
            graph.name.replace('"', "'")
        );
        for s in &graph.stages {
            let shape = match s.kind.as_str() {
                "source" => "invhouse",
                "sink" => "house",
                _ => "box",
            };
            let label = format!("{}\\n{} {}", s.name, s.kind, s.detail).replace('"', "'");
            dot.push_str(&format!(
                "  s{} [shape={shape}, label=\"{label}\"];\n",
                s.index
            ));
            for i in &s.inputs {
                match &s.exchange {
                    Some(how) => dot.push_str(&format!(
                        "  s{i} -> s{} [style=dashed, label=\"exchange {}\"];\n",
                        s.index,
                        how.replace('"', "'")
                    )),
                    None => dot.push_str(&format!("  s{i} -> s{};\n", s.index)),
                }
            }
        }
        dot.push_str("}\n");
        dot
    }

    pub(crate) fn late(&self) -> LatePolicy {
        self.graph().late.clone()
    }

    pub(crate) fn dead_letter_sink(&self) -> Option<Arc<dyn Sink<DeadLetter>>> {
        self.graph().dead_letters.clone()
    }

    pub(crate) fn sink_recipes(&self) -> Vec<SinkRecipe> {
        self.graph().sinks.clone()
    }

    pub(crate) fn batch_size_value(&self) -> usize {
        self.graph().batch_size
    }

    /// Whether a source of the pipeline acknowledges what it reads: a run without checkpoints
    /// then commits its sinks periodically ([`crate::durability`]).
    pub fn acknowledges(&self) -> bool {
        self.graph().acknowledging
    }

    pub(crate) fn file_sinks(&self) -> Vec<FileSinkDirs> {
        self.graph().file_sinks.clone()
    }

    /// The sinks that write as they go (brokers, HTTP, a single file, stdout, partitioned
    /// Parquet), each as `'name' (description)`: with checkpoints they are at least once, not
    /// exactly once.
    pub fn streaming_sinks(&self) -> Vec<String> {
        self.graph().streaming_sinks.clone()
    }

    /// The stages that write checkpoint parts: sources, sinks and checkpointed operators.
    pub(crate) fn checkpoint_participants(&self) -> Vec<String> {
        self.graph()
            .stages
            .iter()
            .filter(|s| s.checkpointed || s.kind == "source" || s.kind == "sink")
            .flat_map(|s| match s.checkpoint_parts.as_slice() {
                [] => vec![s.name.clone()],
                parts => parts
                    .iter()
                    .map(|p| crate::checkpoint::part_stage(&s.name, p))
                    .collect(),
            })
            .collect()
    }

    /// Checks that every stage holding keyed state saves it in checkpoints, so the pipeline can
    /// run exactly once ([`Runtime::checkpoint`](crate::Runtime::checkpoint) refuses it
    /// otherwise, with this error).
    pub fn validate_checkpoints(&self) -> Result<(), EngineError> {
        let graph = self.graph();
        let unsupported: Vec<String> = graph
            .stages
            .iter()
            .filter(|s| !s.checkpointed && s.exchange.is_some())
            .map(|s| format!("'{}' ({})", s.name, s.kind))
            .collect();
        if unsupported.is_empty() {
            return Ok(());
        }
        Err(EngineError::InvalidPipeline {
            pipeline: graph.name.clone(),
            reason: format!(
                "stage{} {} hold{} state that checkpoints do not save yet; run it without \
                 --checkpoint-dir (see docs/exactly-once.md for the operators that support it)",
                if unsupported.len() == 1 { "" } else { "s" },
                unsupported.join(", "),
                if unsupported.len() == 1 { "s" } else { "" },
            ),
        })
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let graph = self.graph();
        writeln!(f, "pipeline '{}'", graph.name)?;
        for s in &graph.stages {
            let inputs: Vec<&str> = s
                .inputs
                .iter()
                .map(|i| graph.stages[*i].name.as_str())
                .collect();
            write!(f, "  {:<8} {:<20}", s.kind, s.name)?;
            if !inputs.is_empty() {
                write!(f, " <- {}", inputs.join(", "))?;
            }
            if !s.detail.is_empty() {
                write!(f, "  [{}]", s.detail)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// A stream of records of type `T` in a pipeline description. The stage that reads it
/// consumes it.
pub struct Stream<T> {
    graph: Arc<Mutex<Graph>>,
    index: usize,
    build: RecipeCell<T>,
}

impl<T: Data + Clone> Clone for Stream<T> {
    /// Another reader of the same stream. On every worker the stream is built once and passed
    /// through a fork; each reader receives every batch (records are cloned for all readers but
    /// the last).
    fn clone(&self) -> Self {
        let mut cell = self.build.lock().unwrap_or_else(PoisonError::into_inner);
        if !cell.1 {
            let inner = Arc::clone(&cell.0);
            let index = self.index;
            cell.0 = recipe(move |ctx: &mut Ctx<'_>| {
                if let Some(point) = ctx.forks.get(&index) {
                    let (port, registry) = point
                        .downcast_ref::<operators::ForkPoint<T>>()
                        .expect("a stage index names one stream type");
                    return timely::dataflow::Stream::new(*port, registry.clone(), ctx.scope);
                }
                let (port, registry) = operators::fork(inner(ctx));
                ctx.forks.insert(index, Box::new((port, registry.clone())));
                timely::dataflow::Stream::new(port, registry, ctx.scope)
            });
            cell.1 = true;
        }
        Stream {
            graph: Arc::clone(&self.graph),
            index: self.index,
            build: Arc::clone(&self.build),
        }
    }
}

fn cell<T>(build: Recipe<T>) -> RecipeCell<T> {
    Arc::new(Mutex::new((build, false)))
}

/// Builds the stream a cell describes, on one worker.
fn build_from<'s, T>(cell: &RecipeCell<T>, ctx: &mut Ctx<'s>) -> Records<'s, T> {
    let build = Arc::clone(&cell.lock().unwrap_or_else(PoisonError::into_inner).0);
    build(ctx)
}

impl<T: Data> Stream<T> {
    /// Adds a stage that reads this stream: the hook every operator is built on.
    ///
    /// `build` is called on every worker with the timely stream of this stage's input and the
    /// stage's context (its name, counters and late-record output), and returns the stage's
    /// output stream. `kind` and `detail` describe the stage in graphs and summaries.
    pub fn stage<U, F>(self, name: &str, kind: &str, detail: String, build: F) -> Stream<U>
    where
        U: Data,
        F: for<'s> Fn(Records<'s, T>, StageContext) -> Records<'s, U> + Send + Sync + 'static,
    {
        let index = self
            .graph
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add_stage(name, kind, detail, vec![self.index]);
        let upstream = self.build;
        let build = recipe(move |ctx: &mut Ctx<'_>| {
            let input = build_from(&upstream, ctx);
            build(input, ctx.stage_context(index))
        });
        Stream {
            graph: self.graph,
            index,
            build: cell(build),
        }
    }

    /// Adds a stage that reads this stream and `other`: the hook two-input operators (joins,
    /// co-processing) are built on. `build` receives both timely streams, this one first.
    pub fn stage2<B, U, F>(
        self,
        other: Stream<B>,
        name: &str,
        kind: &str,
        detail: String,
        build: F,
    ) -> Stream<U>
    where
        B: Data,
        U: Data,
        F: for<'s> Fn(Records<'s, T>, Records<'s, B>, StageContext) -> Records<'s, U>
            + Send
            + Sync
            + 'static,
    {
        let index = self
            .graph
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add_stage(name, kind, detail, vec![self.index, other.index]);
        let (left, right) = (self.build, other.build);
        let build = recipe(move |ctx: &mut Ctx<'_>| {
            let a = build_from(&left, ctx);
            let b = build_from(&right, ctx);
            build(a, b, ctx.stage_context(index))
        });
        Stream {
            graph: self.graph,
            index,
            build: cell(build),
        }
    }

    /// Merges this stream and `other` (of the same type) into one, in a stage named `name`.
    pub fn union(self, other: Stream<T>, name: &str) -> Stream<T> {
        use timely::dataflow::operators::{Concat, Inspect};
        self.stage2(other, name, "union", String::new(), |a, b, stage| {
            a.concat(b).inspect_core(move |event| {
                if let Ok((_, batch)) = event {
                    stage.metrics().add_in(batch.len());
                    stage.metrics().add_out(batch.len());
                }
            })
        })
    }

    /// Ends this stream in a sink.
    pub fn sink(self, name: &str, sink: impl Sink<T>) {
        let mut graph = self.graph.lock().unwrap_or_else(PoisonError::into_inner);
        let index = graph.add_stage(name, "sink", sink.describe(), vec![self.index]);
        match sink.files() {
            Some(files) => graph.file_sinks.push(FileSinkDirs {
                stage: name.to_string(),
                dir: files.dir,
                prefix: files.prefix,
            }),
            None => graph
                .streaming_sinks
                .push(format!("'{name}' ({})", sink.describe())),
        }
        let sink: Arc<dyn Sink<T>> = Arc::new(sink);
        let upstream = self.build;
        graph.sinks.push(Arc::new(move |ctx: &mut Ctx<'_>| {
            let input = build_from(&upstream, ctx);
            let stage = ctx.stage_context(index);
            operators::sink(
                input,
                stage,
                Arc::clone(&sink),
                Rc::clone(&ctx.reports),
                &ctx.releases.durable,
            );
        }));
    }

    /// Notes that the stage producing this stream exchanges its input between workers (`how`:
    /// `by key`, `by window`, ...), for graphs ([`Pipeline::to_dot`]). Operators that route
    /// records call it; it changes nothing in how the stage runs.
    pub fn exchanged(self, how: &str) -> Self {
        self.graph
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stages[self.index]
            .exchange = Some(how.to_string());
        self
    }

    /// Marks the stage producing this stream as one that saves and restores its state in
    /// checkpoints ([`StageContext::checkpoint`]). A pipeline with a stage that exchanges by key
    /// (so holds keyed state) and is not marked refuses to run with checkpoints.
    pub fn checkpointed(self) -> Self {
        self.checkpointed_parts(&[])
    }

    /// [`Stream::checkpointed`] for a stage made of several stateful operators, each of which
    /// writes its own part through [`StageCheckpoint::part`] with one of `parts`.
    pub fn checkpointed_parts(self, parts: &[&str]) -> Self {
        {
            let mut graph = self.graph.lock().unwrap_or_else(PoisonError::into_inner);
            let stage = &mut graph.stages[self.index];
            stage.checkpointed = true;
            stage.checkpoint_parts = parts.iter().map(|p| p.to_string()).collect();
        }
        self
    }

    /// The name of the stage that produces this stream.
    pub fn stage_name(&self) -> String {
        self.graph
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stages[self.index]
            .name
            .clone()
    }
}

/// A record as JSON bytes, for a dead letter.
fn json<R: Serialize>(record: &R) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_else(|e| format!("<not JSON: {e}>").into_bytes())
}

/// Failures of connectors, shared by the workers of a process; the run reports them at the end.
pub(crate) type Failures = Arc<Mutex<Vec<EngineError>>>;

/// What a worker needs to instantiate recipes.
pub(crate) struct Ctx<'s> {
    pub(crate) scope: Scope<'s, u64>,
    pub(crate) partition: Partition,
    pub(crate) metrics: Arc<RunMetrics>,
    pub(crate) names: Arc<Vec<Arc<str>>>,
    pub(crate) rejects: Rejects,
    pub(crate) failures: Failures,
    pub(crate) batch_size: usize,
    pub(crate) reports: Rc<RefCell<Vec<(String, SinkReport)>>>,
    /// The forks built so far on this worker, by stage index ([`operators::ForkPoint`]).
    pub(crate) forks: HashMap<usize, Box<dyn Any>>,
    /// The run's checkpoints, when it takes them.
    pub(crate) checkpoints: Option<Arc<Checkpoints>>,
    /// Stops and commits, shared by the workers of the process.
    pub(crate) control: Arc<RunControl>,
    /// What sources release by ([`crate::durability`]): sinks attach their durability outputs
    /// to its `durable` probe, the hold reporter to its `held` probe; its `finishers` run once
    /// the worker's dataflow has ended (source readers releasing their last records, given
    /// whether the run succeeded).
    pub(crate) releases: Releases,
}

/// Work left for the end of a worker's run ([`Ctx::finishers`]): each is told whether the run
/// succeeded.
pub(crate) type Finishers = Rc<RefCell<Vec<Box<dyn FnOnce(bool)>>>>;

impl Ctx<'_> {
    fn stage_context(&self, index: usize) -> StageContext {
        StageContext {
            name: Arc::clone(&self.names[index]),
            metrics: self.metrics.stage(index),
            partition: self.partition,
            rejects: self.rejects.clone(),
            failures: Arc::clone(&self.failures),
            run: Arc::clone(&self.metrics),
            control: Arc::clone(&self.control),
            holds: self.releases.holds.clone(),
            checkpoint: self.checkpoints.as_ref().map(|c| {
                StageCheckpoint::new(
                    Arc::clone(c),
                    Arc::clone(&self.names[index]),
                    self.partition,
                )
            }),
        }
    }
}

/// What an operator knows of its stage on one worker: its name, its counters, which worker it
/// runs on, and where late records go.
#[derive(Clone)]
pub struct StageContext {
    name: Arc<str>,
    metrics: Arc<StageMetrics>,
    partition: Partition,
    rejects: Rejects,
    failures: Failures,
    run: Arc<RunMetrics>,
    control: Arc<RunControl>,
    holds: Holds,
    checkpoint: Option<StageCheckpoint>,
}

impl StageContext {
    /// This stage's share of the run's checkpoints on this worker, when the run takes them
    /// ([`Runtime::checkpoint`](crate::Runtime::checkpoint)). A stateful operator that supports
    /// them restores its state from it when it is built, and saves its state when its frontier
    /// crosses a checkpoint boundary; it also marks its stage with [`Stream::checkpointed`].
    pub fn checkpoint(&self) -> Option<&StageCheckpoint> {
        self.checkpoint.as_ref()
    }

    /// This stage's [`Checkpointer`] on this worker: the handle most stateful operators need
    /// (restore, save at the frontier, what not to send again).
    pub fn checkpointer(&self) -> Checkpointer {
        Checkpointer::new(self.checkpoint.clone())
    }

    /// A hold for this stage on this worker: a stage that keeps records in its state past the
    /// frontier and emits their effects later (a window, a session) says through it what it
    /// still holds, so that their sources do not acknowledge them before their effects are
    /// committed ([`crate::durability`]). Take it once, when the operator is built.
    pub fn hold(&self) -> Hold {
        self.holds.hold()
    }

    /// The stage's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stage's counters (shared by the workers of this process).
    pub fn metrics(&self) -> &StageMetrics {
        &self.metrics
    }

    /// Which worker this is, of how many.
    pub fn partition(&self) -> Partition {
        self.partition
    }

    /// Handles one late record: counts it and, under [`LatePolicy::SideOutput`], writes it with
    /// its stage and lateness; otherwise, with a dead-letter sink, writes it there.
    /// `watermark` is the record's timestamp; `last_window_end` the end of the last window it
    /// belonged to.
    pub fn late<R: Serialize>(
        &self,
        record: &R,
        event_time: EventTime,
        watermark: u64,
        last_window_end: u64,
    ) {
        self.metrics.add_late(1);
        let lateness_ms = watermark.saturating_sub(last_window_end);
        if self.rejects.late.is_some() {
            let late = LateRecord {
                stage: self.name.to_string(),
                event_time,
                watermark,
                lateness_ms,
                record: serde_json::to_string(record)
                    .unwrap_or_else(|e| format!("<not JSON: {e}>")),
            };
            if let Err(error) = self.rejects.write_late(late) {
                self.fail(error);
            }
        } else if self.rejects.has_dead_letters() {
            let error = format!(
                "late: arrived at watermark {watermark}, {lateness_ms} ms after its last window \
                 closed at {last_window_end}"
            );
            self.dead_letter(
                DeadLetter::new(DeadLetterKind::Late, &self.name, "", error, &json(record))
                    .with_event_time(event_time),
            );
        }
    }

    /// Rejects one record a user function failed on (or that the stage cannot process
    /// otherwise): counts it on this stage and, with a dead-letter sink, writes it there with
    /// `error`. The run goes on.
    pub fn reject<R: Serialize>(
        &self,
        record: &R,
        event_time: EventTime,
        error: impl fmt::Display,
    ) {
        self.metrics.add_rejected(1);
        let error = error.to_string();
        self.run
            .note_rejected(format!("stage '{}': {error}", self.name));
        if self.rejects.has_dead_letters() {
            self.dead_letter(
                DeadLetter::new(
                    DeadLetterKind::Function,
                    &self.name,
                    "",
                    error,
                    &json(record),
                )
                .with_event_time(event_time),
            );
        }
    }

    /// Counts records this stage could not read (a source) or deliver (a sink) and writes each
    /// to the dead-letter sink, when there is one.
    pub(crate) fn reject_all(&self, kind: DeadLetterKind, errors: &mut Vec<RecordError>) {
        if errors.is_empty() {
            return;
        }
        self.metrics.add_rejected(errors.len());
        for error in errors.drain(..) {
            self.run
                .note_rejected(format!("stage '{}': {error}", self.name));
            if self.rejects.has_dead_letters() {
                self.dead_letter(DeadLetter::new(
                    kind,
                    &self.name,
                    error.location,
                    error.message,
                    &error.raw,
                ));
            }
        }
    }

    fn dead_letter(&self, letter: DeadLetter) {
        self.metrics.add_dead_lettered(1);
        match self.metrics.log_due() {
            Some(true) => tracing::warn!(
                "stage '{}': dead-lettered a record ({}: {}){}; later ones are counted and \
                 logged at most every {} s",
                self.name,
                letter.kind,
                letter.error,
                if letter.location.is_empty() {
                    String::new()
                } else {
                    format!(" at {}", letter.location)
                },
                crate::metrics::LOG_EVERY.as_secs()
            ),
            Some(false) => tracing::info!(
                "stage '{}': {} records dead-lettered so far, the last: {}",
                self.name,
                self.metrics.dead_lettered(),
                letter.error
            ),
            None => {}
        }
        if let Err(error) = self.rejects.dead_letter(letter) {
            self.fail(error);
        }
    }

    /// How long an updating operator keeps results open for corrections after the watermark has
    /// passed them (ms): the pipeline's [`LatePolicy::Correct`], else 0.
    pub fn allowed_lateness_ms(&self) -> u64 {
        self.rejects.allowed_lateness_ms
    }

    /// A share of this stage's state gauge for one operator instance.
    pub fn state_gauge(&self) -> StateGauge {
        StateGauge::new(Arc::clone(&self.metrics))
    }

    /// A share of this stage's state gauge for one operator instance whose state entries are
    /// values of type `E`: the metrics then estimate the state's bytes as entries × the size of
    /// `E` (shallow: heap data an entry points to is not counted).
    pub fn state_gauge_of<E>(&self) -> StateGauge {
        self.metrics.set_entry_bytes(std::mem::size_of::<E>());
        self.state_gauge()
    }

    /// This worker's gauges of this stage: its watermark and, for sources and windows, what
    /// holds it (read by the metrics endpoint and the watermark explainer). A stage that holds
    /// results back (a window, a join) sets its output watermark — the least of its input
    /// frontier and the capabilities it holds; a stage that does not is taken to pass its
    /// input's watermark on.
    pub fn gauge(&self) -> &WorkerGauge {
        self.metrics.worker(self.partition.index)
    }

    /// Reports a connector failure of this stage; the run ends with it as its error.
    pub fn fail(&self, error: ConnectorError) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.push(EngineError::Connector {
            stage: self.name.to_string(),
            error,
        });
    }

    pub(crate) fn run_metrics(&self) -> &RunMetrics {
        &self.run
    }

    /// Commits the worker's dead letters and late records ([`SinkWriter::commit`]), before a
    /// sink commits what they go with.
    pub(crate) fn commit_rejects(&self) -> Result<(), ConnectorError> {
        self.rejects.commit()
    }

    pub(crate) fn control(&self) -> &Arc<RunControl> {
        &self.control
    }

    /// Whether the run has failed (a connector reported an error) or was aborted: sources
    /// read and release nothing more.
    pub(crate) fn run_failed(&self) -> bool {
        self.control.aborted()
            || !self
                .failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
    }

    pub(crate) fn run_metrics_handle(&self) -> Arc<RunMetrics> {
        Arc::clone(&self.run)
    }
}
