//! `eddy`: run the built-in pipelines (Nexmark queries), generate their input, and copy
//! records between sources and sinks.

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use eddy_connectors::bridge::StopRule;
use eddy_connectors::endpoints::EndpointOptions;
use eddy_connectors::nexmark::{
    generate, json_event_time, write_csv, AuctionRow, BidRow, NexmarkConfig, NexmarkTables,
    PersonRow,
};
use eddy_connectors::{write_parquet, Endpoint, EventTimeOf, Format as ConnectorFormat};
use eddy_engine::{Cluster, Partition, Pipeline, RunSummary, Runtime};
use eddy_queries::copy::Copy;
use eddy_queries::live::Live;
use eddy_queries::nexmark::Query;
use eddy_queries::output::Output;
use eddy_queries::shutdown::Shutdown;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Eddy: a stream-processing dataflow engine.
#[derive(Parser)]
#[command(name = "eddy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The Nexmark benchmark: run a query, or generate its events.
    Nexmark {
        #[command(subcommand)]
        command: NexmarkCommand,
    },
    /// Copy records between any source and sink: brokers, webhooks, files. Stops when a file
    /// source ends, after --limit records or after --idle-exit, and commits what it wrote.
    Copy(CopyArgs),
    /// Ask a running pipeline (started with --metrics-addr) why its watermark is where it is:
    /// every source's watermark, which one holds it back, each window's oldest open window.
    Explain(ExplainArgs),
    /// Print a query's pipeline as a Graphviz DOT graph (stages, exchanges, sinks).
    Graph(GraphArgs),
    /// Example pipelines on real event systems.
    #[cfg(all(feature = "amqp", feature = "kafka", feature = "http"))]
    Example {
        #[command(subcommand)]
        example: Example,
    },
}

#[cfg(all(feature = "amqp", feature = "kafka", feature = "http"))]
#[derive(Subcommand)]
enum Example {
    /// Orders from RabbitMQ and clicks from Kafka, joined per customer in windows, written to
    /// Parquet; every order above --threshold is POSTed to --alert.
    Orders(OrdersArgs),
}

#[cfg(all(feature = "amqp", feature = "kafka", feature = "http"))]
#[derive(Args)]
struct OrdersArgs {
    /// The orders queue: amqp://HOST:PORT/QUEUE (JSON {"order_id", "customer", "total", "ts"}).
    #[arg(long)]
    orders: String,
    /// The clicks topic: kafka://HOST:PORT/TOPIC (JSON {"customer", "page", "ts"}).
    #[arg(long)]
    clicks: String,
    /// The Parquet output directory.
    #[arg(long)]
    out: PathBuf,
    /// Where to POST each large order (http://HOST:PORT/PATH, options as for `eddy copy`).
    #[arg(long)]
    alert: Option<String>,
    /// An order above this total is large.
    #[arg(long, default_value_t = 500.0)]
    threshold: f64,
    /// The join's tumbling window (e.g. 1m, 30s).
    #[arg(long, default_value = "1m", value_parser = positive_duration)]
    window: humantime::Duration,
    /// Stop each source once it has been idle this long (default: run until killed).
    #[arg(long, value_parser = positive_duration)]
    idle_exit: Option<humantime::Duration>,
    /// Where malformed and late records go (any sink URI).
    #[arg(long)]
    dead_letters: Option<String>,
    #[command(flatten)]
    workers: Workers,
}

/// How a run shows itself and stops: the live view, the metrics endpoint, graceful shutdown
/// and the commit interval.
#[derive(Args)]
struct ViewArgs {
    /// No live view (progress, events/s, watermark lag, source backlog) on stderr, and no
    /// summary for `eddy copy`.
    #[arg(long)]
    quiet: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics and the watermark explainer at
    /// /explain while the run lasts. ADDR is HOST:PORT or a port on 127.0.0.1; alone, the flag
    /// serves on 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
    metrics_addr: Option<String>,
    /// On SIGTERM or SIGINT the run stops gracefully: sources stop (with --checkpoint-dir, once
    /// they reach the next checkpoint boundary, which is then checkpointed), what was read is
    /// committed and acknowledged, the summary is printed. If that takes longer than this (or a
    /// second signal comes), the run is aborted at once.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = positive_duration)]
    shutdown_timeout: humantime::Duration,
    /// With sources that acknowledge (brokers, webhooks) and no --checkpoint-dir: how often the
    /// sinks commit (files are closed and renamed into place, brokers confirm) so that the
    /// sources can acknowledge what they hold.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = positive_duration)]
    commit_every: humantime::Duration,
}

impl ViewArgs {
    /// The runtime with the metrics endpoint when asked for, and the commit interval.
    fn apply(&self, runtime: Runtime) -> Result<Runtime> {
        let runtime = runtime.commit_every(*self.commit_every);
        Ok(match &self.metrics_addr {
            Some(addr) => runtime.metrics_addr(socket_addr(addr, "--metrics-addr")?),
            None => runtime,
        })
    }
}

/// Exactly-once checkpoints.
#[derive(Args)]
struct CheckpointArgs {
    /// Take exactly-once checkpoints in DIR, and resume from the newest one there: run the same
    /// command again after a crash and the output ends up as an uninterrupted run's. Result
    /// files appear when the checkpoint after them completes.
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// How often to checkpoint, in event time (for the generator, 10 000 events per second of
    /// event time by default).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        requires = "checkpoint_dir",
        value_parser = positive_duration
    )]
    checkpoint_every: humantime::Duration,
}

/// How many worker threads.
#[derive(Args)]
struct Workers {
    /// Worker threads in this process: at least 1, and at most 4 per CPU unless
    /// --allow-many-workers.
    #[arg(long, default_value_t = 1, value_parser = at_least_one())]
    workers: usize,
    /// Allow more than 4 worker threads per CPU (each takes memory before anything runs).
    #[arg(long)]
    allow_many_workers: bool,
}

impl Cli {
    /// Checks what clap cannot check alone (the flags' values against each other and the
    /// machine), before anything runs.
    fn check(&self) -> Result<()> {
        match &self.command {
            Command::Nexmark {
                command: NexmarkCommand::Run(args),
            } => {
                args.workers.check()?;
                if args.process >= args.processes {
                    bail!(
                        "--process {} is not one of the {} processes: give 0 to {}",
                        args.process,
                        args.processes,
                        args.processes - 1
                    );
                }
                Ok(())
            }
            Command::Copy(args) => args.workers.check(),
            #[cfg(all(feature = "amqp", feature = "kafka", feature = "http"))]
            Command::Example {
                example: Example::Orders(args),
            } => args.workers.check(),
            _ => Ok(()),
        }
    }
}

/// How many workers a run may have per CPU without --allow-many-workers.
const WORKERS_PER_CPU: usize = 4;

impl Workers {
    /// Fails when the worker count is beyond what the machine can take, unless allowed.
    fn check(&self) -> Result<()> {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let most = cpus.saturating_mul(WORKERS_PER_CPU);
        if self.workers > most && !self.allow_many_workers {
            bail!(
                "--workers {} is more than {WORKERS_PER_CPU} per CPU of this machine ({cpus} CPUs, \
                 so at most {most}); use fewer, or add --allow-many-workers",
                self.workers
            );
        }
        Ok(())
    }
}

/// A count that must be at least 1.
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

/// A duration longer than zero.
fn positive_duration(text: &str) -> std::result::Result<humantime::Duration, String> {
    let duration: humantime::Duration = text
        .parse()
        .map_err(|e| format!("'{text}' is not a duration ({e}): write e.g. 500ms, 10s, 2m"))?;
    if duration.is_zero() {
        return Err("it must be longer than 0: write e.g. 500ms, 10s, 2m".to_string());
    }
    Ok(duration)
}

impl CheckpointArgs {
    /// The runtime with checkpoints when asked for.
    fn apply(&self, runtime: Runtime) -> Runtime {
        match &self.checkpoint_dir {
            Some(dir) => runtime.checkpoint(dir, *self.checkpoint_every),
            None => runtime,
        }
    }
}

/// Parses HOST:PORT, or a bare port on loopback.
fn socket_addr(text: &str, flag: &str) -> Result<SocketAddr> {
    let text = text.trim();
    let full = if text.chars().all(|c| c.is_ascii_digit()) {
        format!("127.0.0.1:{text}")
    } else {
        text.to_string()
    };
    full.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .with_context(|| format!("{flag} {text}: give HOST:PORT (e.g. 127.0.0.1:9464) or a port"))
}

#[derive(Args)]
struct ExplainArgs {
    /// The --metrics-addr of the running pipeline.
    #[arg(long, default_value = "127.0.0.1:9464")]
    addr: String,
}

#[derive(Args)]
struct GraphArgs {
    /// The query: q0–q22.
    query: Query,
    /// Render the graph as SVG into this file with Graphviz's `dot` (Debian package graphviz).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

#[derive(Args)]
struct CopyArgs {
    /// Where to read: kafka://HOST:PORT/TOPIC, amqp://HOST:PORT/QUEUE,
    /// nats://HOST:PORT/SUBJECT (?stream=NAME for JetStream), mqtt://HOST:PORT/TOPIC,
    /// http://ADDR:PORT/PATH (a webhook listening there, answering 2xx once a request is in
    /// its write-ahead log: under $EDDY_STATE_DIR/webhook, else
    /// $XDG_STATE_HOME/eddy/webhook or ~/.local/state/eddy/webhook; ?wal=DIR or ?wal=off),
    /// jsonl:///PATH (- for stdin),
    /// csv:///PATH. Options as query parameters (docs/connectors.md).
    #[arg(long)]
    from: String,
    /// Where to write: the broker URIs above, http://HOST:PORT/PATH (POST each record there),
    /// parquet:///DIR, jsonl:///PATH (- for stdout), csv:///PATH.
    #[arg(long)]
    to: String,
    /// The record format of broker and HTTP endpoints: json (default), csv or raw.
    #[arg(long)]
    format: Option<String>,
    /// Stop after this many records (at least 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Stop once the source has been idle this long (e.g. 5s, 500ms).
    #[arg(long, value_parser = positive_duration)]
    idle_exit: Option<humantime::Duration>,
    /// Take each record's event time from this field (integer ms or RFC 3339); by default the
    /// broker's timestamp, or the time it was read.
    #[arg(long)]
    event_time: Option<String>,
    /// Where records that cannot be read or written go (any sink URI), with their bytes,
    /// location and error; without it they are counted and skipped.
    #[arg(long)]
    dead_letters: Option<String>,
    #[command(flatten)]
    workers: Workers,
    #[command(flatten)]
    checkpoints: CheckpointArgs,
    #[command(flatten)]
    view: ViewArgs,
}

#[derive(Subcommand)]
enum NexmarkCommand {
    /// Run a query on the built-in generator (or events from --source) and write its results.
    Run(Box<RunArgs>),
    /// Write the generator's events as person.parquet, auction.parquet and bid.parquet
    /// (or .csv with --format csv).
    Generate(GenerateArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Parquet files, one per worker.
    Parquet,
    /// JSON-lines files, one per worker.
    Jsonl,
    /// A table of the first rows on stdout (no files).
    Table,
    /// Count the rows and discard them (no files).
    Count,
}

#[derive(Args)]
struct RunArgs {
    /// The query: q0–q22 (an unknown name lists them).
    query: Query,
    /// How many events to generate, over all workers and processes.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    events: u64,
    #[command(flatten)]
    workers: Workers,
    /// Processes in the run (each runs this command with its own --process).
    #[arg(long, default_value_t = 1, value_parser = at_least_one())]
    processes: usize,
    /// This process's index, from 0 to --processes - 1.
    #[arg(long, default_value_t = 0)]
    process: usize,
    /// A file with one host:port per process, in process order
    /// (default: localhost:2101, localhost:2102, ...).
    #[arg(long)]
    hosts: Option<PathBuf>,
    /// The output directory (created if missing); required for parquet and jsonl.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The output format.
    #[arg(long, value_enum, default_value_t = Format::Parquet)]
    format: Format,
    /// Rows per Parquet row group.
    #[arg(long, default_value_t = 65_536, value_parser = at_least_one())]
    row_group_size: usize,
    /// Records a source emits per batch.
    #[arg(long, default_value_t = 4096, value_parser = at_least_one())]
    batch_size: usize,
    /// Event-time rate of the generator: events per second of event time.
    #[arg(long, default_value_t = 10_000, value_parser = at_least_one())]
    rate: usize,
    /// Read the events from this source URI instead of the built-in generator (any `eddy copy
    /// --from` URI, e.g. kafka://127.0.0.1:9092/events): Nexmark events as JSON, as serde
    /// writes them (`{"Bid": {...}}`), timed by their date_time. --events is then ignored.
    #[arg(long, value_name = "URI")]
    source: Option<String>,
    /// With --source: stop once it has been idle this long (e.g. 5s).
    #[arg(long, value_name = "DURATION", requires = "source", value_parser = positive_duration)]
    idle_exit: Option<humantime::Duration>,
    #[command(flatten)]
    view: ViewArgs,
    #[command(flatten)]
    checkpoints: CheckpointArgs,
    /// q13's side table: a CSV file of `key,value` lines, or JSON lines (`.jsonl`) of
    /// `{"key": .., "value": ..}`; without it q13 uses keys 0..10000 valued by their decimal string.
    #[arg(long)]
    side_input: Option<PathBuf>,
}

#[derive(Args)]
struct GenerateArgs {
    /// How many events to generate.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    events: u64,
    /// The output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Event-time rate of the generator: events per second of event time.
    #[arg(long, default_value_t = 10_000, value_parser = at_least_one())]
    rate: usize,
    /// The file format: Parquet, or header-less CSV (columns as the Parquet files', times as
    /// ms since the Unix epoch), as Flink's `csv` format reads it.
    #[arg(long, value_enum, default_value_t = TableFormat::Parquet)]
    format: TableFormat,
}

/// The file format of `eddy nexmark generate`.
#[derive(Clone, Copy, ValueEnum)]
enum TableFormat {
    /// person.parquet, auction.parquet, bid.parquet.
    Parquet,
    /// person.csv, auction.csv, bid.csv, without a header.
    Csv,
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: `info`), less what would show a secret.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let filter = eddy_connectors::LOG_DIRECTIVES_HIDING_SECRETS
        .iter()
        .fold(filter, |filter, directive| {
            filter.add_directive(directive.parse().expect("a valid directive"))
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help and --version
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            let rendered = error.render().to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or("error: invalid arguments");
            eprintln!("{first} (see `eddy --help`)");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = cli.check() {
        eprintln!("error: {error:#} (see `eddy --help`)");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Nexmark { command } => match command {
            NexmarkCommand::Run(args) => report(run(*args)),
            NexmarkCommand::Generate(args) => report(generate_files(args)),
        },
        Command::Copy(args) => report(copy(args)),
        Command::Explain(args) => report(explain(args)),
        Command::Graph(args) => report(graph(args)),
        #[cfg(all(feature = "amqp", feature = "kafka", feature = "http"))]
        Command::Example {
            example: Example::Orders(args),
        } => report(orders_example(args)),
    }
}

fn report(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn output(args: &RunArgs) -> Result<Output> {
    let dir = || {
        args.out
            .clone()
            .context("--out DIR is required for --format parquet and jsonl")
    };
    Ok(match args.format {
        Format::Parquet => Output::Parquet {
            dir: dir()?,
            row_group_size: args.row_group_size,
        },
        Format::Jsonl => Output::JsonLines { dir: dir()? },
        Format::Table => Output::Table,
        Format::Count => Output::Count,
    })
}

fn runtime(args: &RunArgs) -> Result<Runtime> {
    let runtime = args
        .checkpoints
        .apply(args.view.apply(Runtime::new(args.workers.workers))?);
    if args.processes <= 1 && args.hosts.is_none() {
        return Ok(runtime);
    }
    let cluster = match &args.hosts {
        Some(path) => Cluster::from_hosts_file(args.process, path)?,
        None => Cluster {
            process: args.process,
            hosts: (0..args.processes)
                .map(|i| format!("localhost:{}", 2101 + i))
                .collect(),
        },
    };
    if cluster.hosts.len() != args.processes {
        bail!(
            "--processes is {} but the hosts file names {} processes: give one host:port line per process",
            args.processes,
            cluster.hosts.len()
        );
    }
    Ok(runtime.cluster(cluster))
}

fn run(args: RunArgs) -> Result<()> {
    let output = output(&args)?;
    let runtime = runtime(&args)?;
    let config = NexmarkConfig {
        events: args.events,
        events_per_second: args.rate,
        ..Default::default()
    };
    let pipeline = match (&args.source, &args.side_input) {
        (Some(uri), _) => {
            let endpoint: Endpoint = uri.parse()?;
            let mut options = EndpointOptions {
                event_time: EventTimeOf::extract(json_event_time),
                ..Default::default()
            };
            if let Some(idle) = args.idle_exit {
                options.stop = StopRule::never().idle_exit(*idle);
            }
            let source = eddy_connectors::endpoints::source(&endpoint, &options)?;
            args.query.pipeline_from(source, &output)
        }
        (None, Some(path)) => args
            .query
            .pipeline_with_side_input(config, &output, path)
            .map_err(anyhow::Error::msg)?,
        (None, None) => args.query.pipeline(config, &output),
    };
    pipeline.batch_size(args.batch_size);
    let summary = run_live(&runtime, &pipeline, &args.view)?;
    print_summary(&summary);
    Ok(())
}

/// Runs `pipeline` with the live view and, when asked, the metrics endpoint.
fn run_live(runtime: &Runtime, pipeline: &Pipeline, view: &ViewArgs) -> Result<RunSummary> {
    let handle = runtime.start(pipeline)?;
    let _signals = Shutdown::install(handle.stopper(), *view.shutdown_timeout)
        .context("cannot listen for SIGTERM and SIGINT")?;
    if let Some(addr) = handle.metrics_addr() {
        tracing::info!("metrics at http://{addr}/metrics, the explainer at http://{addr}/explain");
    }
    let live = Live::start(handle.observer(), handle.progress().1, view.quiet);
    let summary = handle.join();
    live.finish();
    Ok(summary?)
}

fn print_summary(summary: &RunSummary) {
    println!("{summary}");
    for file in summary.files().iter().take(8) {
        println!("wrote {}", file.display());
    }
    if summary.files().len() > 8 {
        println!("... and {} more files", summary.files().len() - 8);
    }
}

fn copy(args: CopyArgs) -> Result<()> {
    let endpoint = |uri: &str| uri.parse::<Endpoint>().map_err(anyhow::Error::from);
    let mut spec = Copy::new(endpoint(&args.from)?, endpoint(&args.to)?);
    spec.format = args
        .format
        .as_deref()
        .map(str::parse::<ConnectorFormat>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--format: {e}"))?;
    spec.limit = args.limit;
    spec.idle_exit = args.idle_exit.map(Into::into);
    spec.event_time = args.event_time;
    spec.dead_letters = args.dead_letters.as_deref().map(endpoint).transpose()?;
    let pipeline = spec.pipeline()?;
    let runtime = args
        .checkpoints
        .apply(args.view.apply(Runtime::new(args.workers.workers))?);
    let summary = run_live(&runtime, &pipeline, &args.view)?;
    if !args.view.quiet {
        eprintln!("{summary}");
        for file in summary.files().iter().take(8) {
            eprintln!("wrote {}", file.display());
        }
    }
    Ok(())
}

#[cfg(all(feature = "amqp", feature = "kafka", feature = "http"))]
fn orders_example(args: OrdersArgs) -> Result<()> {
    use eddy_connectors::amqp::AmqpConfig;
    use eddy_connectors::http_sink::HttpSinkConfig;
    use eddy_connectors::kafka::KafkaSourceConfig;
    use eddy_queries::examples::orders::OrdersExample;

    let endpoint = |uri: &str| uri.parse::<Endpoint>().map_err(anyhow::Error::from);
    let mut example = OrdersExample::new(
        AmqpConfig::from_source_endpoint(&endpoint(&args.orders)?)?,
        KafkaSourceConfig::from_endpoint(&endpoint(&args.clicks)?)?,
        &args.out,
    );
    if let Some(alert) = &args.alert {
        example.alert = Some(HttpSinkConfig::from_endpoint(&endpoint(alert)?)?);
    }
    example.threshold = args.threshold;
    example.window = *args.window;
    if let Some(idle) = args.idle_exit {
        example.stop = StopRule::never().idle_exit(*idle);
    }
    example.dead_letters = args.dead_letters.as_deref().map(endpoint).transpose()?;
    let summary = Runtime::new(args.workers.workers).run(&example.pipeline()?)?;
    print_summary(&summary);
    Ok(())
}

fn explain(args: ExplainArgs) -> Result<()> {
    let addr = socket_addr(&args.addr, "--addr")?;
    let url = format!("http://{addr}/explain");
    let mut response = ureq::get(&url)
        .config()
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .build()
        .call()
        .with_context(|| {
            format!("cannot reach {url}: is a pipeline running with --metrics-addr {addr}?")
        })?;
    let text = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading {url}"))?;
    print!("{text}");
    Ok(())
}

fn graph(args: GraphArgs) -> Result<()> {
    let pipeline = args
        .query
        .pipeline(NexmarkConfig::default(), &Output::Count);
    let dot = pipeline.to_dot();
    let Some(path) = args.svg else {
        print!("{dot}");
        return Ok(());
    };
    let mut child = match std::process::Command::new("dot")
        .args(["-Tsvg", "-o"])
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "--svg needs Graphviz's `dot`, which is not installed: `apt-get install graphviz` \
             (Debian, Ubuntu) or `brew install graphviz`; without --svg the DOT text is printed"
        ),
        Err(e) => bail!("cannot run Graphviz's `dot`: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(dot.as_bytes())
        .context("writing the graph to `dot`")?;
    let status = child.wait().context("waiting for `dot`")?;
    if !status.success() {
        bail!("`dot` failed ({status}) writing {}", path.display());
    }
    println!("wrote {}", path.display());
    Ok(())
}

fn generate_files(args: GenerateArgs) -> Result<()> {
    let config = NexmarkConfig {
        events: args.events,
        events_per_second: args.rate,
        ..Default::default()
    };
    let events = generate(&config, Partition { index: 0, count: 1 });
    let tables = NexmarkTables::from_events(events.iter().map(|(_, e)| e));
    let out = &args.out;
    let (persons, auctions, bids) = match args.format {
        TableFormat::Parquet => (
            write_parquet(
                out.join("person.parquet"),
                &tables.persons,
                PersonRow::TIMESTAMP_FIELDS,
            )?,
            write_parquet(
                out.join("auction.parquet"),
                &tables.auctions,
                AuctionRow::TIMESTAMP_FIELDS,
            )?,
            write_parquet(
                out.join("bid.parquet"),
                &tables.bids,
                BidRow::TIMESTAMP_FIELDS,
            )?,
        ),
        TableFormat::Csv => (
            write_csv(out.join("person.csv"), &tables.persons)?,
            write_csv(out.join("auction.csv"), &tables.auctions)?,
            write_csv(out.join("bid.csv"), &tables.bids)?,
        ),
    };
    println!(
        "wrote {} events to {}: {persons} people, {auctions} auctions, {bids} bids",
        events.len(),
        out.display()
    );
    Ok(())
}
