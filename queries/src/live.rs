//! The live view of `eddy nexmark run` and `eddy copy`: events per second, how far the
//! watermark trails the wall clock, and per source its backlog — records waiting at the source
//! (a Kafka consumer's lag, messages buffered between a broker client and the workers), which
//! grows when the pipeline cannot keep up — and how many of its readers are idle.
//!
//! On a terminal it is a line under the progress bar, refreshed in place; otherwise a plain log
//! line every [`LOG_EVERY`]; `--quiet` turns it off.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use eddy_engine::{wall_clock_ms, Observer};
use indicatif::{ProgressBar, ProgressStyle};

/// How often the line is refreshed on a terminal.
const REFRESH: Duration = Duration::from_millis(200);
/// How often a log line is written when stderr is not a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// One source's readers, summed.
#[derive(Debug, Default, PartialEq, Eq)]
struct SourceLine {
    name: String,
    watermark: u64,
    backlog: Option<u64>,
    idle: usize,
    readers: usize,
}

/// What the line says at one moment.
#[derive(Debug)]
pub struct Sample {
    at: Instant,
    records: u64,
}

impl Sample {
    /// A first sample: nothing read yet.
    pub fn start() -> Self {
        Sample {
            at: Instant::now(),
            records: 0,
        }
    }
}

fn rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2} M", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1} k", per_second / 1e3)
    } else {
        format!("{per_second:.0}")
    }
}

fn lag(watermark: u64, now_ms: u64) -> String {
    if watermark == u64::MAX {
        return "done".to_string();
    }
    let ms = now_ms.saturating_sub(watermark);
    if ms >= 3_600_000 {
        format!("{:.1} h", ms as f64 / 3_600_000.0)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

fn sources(observer: &Observer) -> Vec<SourceLine> {
    let mut lines: Vec<SourceLine> = Vec::new();
    for (name, _, reading) in observer.sources() {
        let line = match lines.iter_mut().position(|l| l.name == name) {
            Some(i) => &mut lines[i],
            None => {
                lines.push(SourceLine {
                    name,
                    watermark: u64::MAX,
                    ..SourceLine::default()
                });
                lines.last_mut().expect("just pushed")
            }
        };
        line.readers += 1;
        let watermark = reading.watermark.unwrap_or(0);
        line.watermark = line.watermark.min(watermark);
        if let Some(b) = reading.backlog {
            line.backlog = Some(line.backlog.unwrap_or(0) + b);
        }
        if reading.idle_since_ms.is_some() && watermark != u64::MAX {
            line.idle += 1;
        }
    }
    lines
}

/// The live line: events per second since `previous` (which it updates), the watermark's lag
/// at the sinks, and each source's lag, backlog and idle readers.
pub fn line(observer: &Observer, previous: &mut Sample) -> String {
    let now = Instant::now();
    let records = observer.records_read();
    let seconds = now.duration_since(previous.at).as_secs_f64().max(1e-3);
    let per_second = records.saturating_sub(previous.records) as f64 / seconds;
    *previous = Sample { at: now, records };
    let now_ms = wall_clock_ms();
    let mut text = format!(
        "{} events/s | watermark lag {}",
        rate(per_second),
        lag(observer.watermark(), now_ms)
    );
    for source in sources(observer) {
        text.push_str(&format!(
            " | {}: lag {}",
            source.name,
            lag(source.watermark, now_ms)
        ));
        if let Some(backlog) = source.backlog {
            text.push_str(&format!(", backlog {backlog}"));
        }
        if source.idle > 0 {
            text.push_str(&format!(", {}/{} idle", source.idle, source.readers));
        }
    }
    text
}

/// A running live view; [`Live::finish`] stops it and clears the line.
pub struct Live {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Live {
    /// Starts the view of `observer`: off when `quiet`; a progress bar (towards `expected`
    /// records when known) with the live line on a terminal; log lines otherwise.
    pub fn start(observer: Observer, expected: Option<u64>, quiet: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (!quiet).then(|| {
            let stop = Arc::clone(&stop);
            if std::io::stderr().is_terminal() {
                std::thread::spawn(move || terminal(&observer, expected, &stop))
            } else {
                std::thread::spawn(move || log_lines(&observer, &stop))
            }
        });
        Live { stop, thread }
    }

    /// Stops the view.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn terminal(observer: &Observer, expected: Option<u64>, stop: &AtomicBool) {
    let (bar, template) = match expected {
        Some(n) => (
            ProgressBar::new(n),
            "{spinner} {bar:30} {pos}/{len} events  eta {eta}\n  {msg}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {pos} events\n  {msg}",
        ),
    };
    bar.set_style(ProgressStyle::with_template(template).expect("the template is valid"));
    let mut sample = Sample::start();
    let mut last_line = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        bar.set_position(observer.records_read());
        if last_line.elapsed() >= Duration::from_secs(1) {
            bar.set_message(line(observer, &mut sample));
            last_line = Instant::now();
        }
        bar.tick();
        std::thread::sleep(REFRESH);
    }
    bar.finish_and_clear();
}

fn log_lines(observer: &Observer, stop: &AtomicBool) {
    let mut sample = Sample::start();
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(REFRESH);
        if last.elapsed() >= LOG_EVERY {
            let read = observer.records_read();
            tracing::info!("{read} events read | {}", line(observer, &mut sample));
            last = Instant::now();
        }
    }
}
