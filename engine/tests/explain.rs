//! The watermark explainer, asked over real HTTP while a pipeline runs: a deliberately
//! stalled source is named as what holds the watermark back; an idle source that its idle
//! timeout releases is reported idle, and the window it held fires.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_engine::testing::CollectSink;
use eddy_engine::timely::dataflow::channels::pact::Pipeline as Local;
use eddy_engine::timely::dataflow::operators::generic::Operator;
use eddy_engine::{
    ConnectorError, Partition, Pipeline, ReadStatus, Record, RecordError, RunHandle, Runtime,
    Source, SourceReader, WatermarkConfig,
};

/// A source that reads its records, then nothing until released, then ends.
#[derive(Clone)]
struct Gate {
    records: Vec<Record<u64>>,
    release: Arc<AtomicBool>,
}

impl Source<u64> for Gate {
    fn describe(&self) -> String {
        "gate (test)".into()
    }

    fn open(&self, _: Partition) -> Result<Box<dyn SourceReader<u64>>, ConnectorError> {
        Ok(Box::new(GateReader {
            records: self.records.clone(),
            release: Arc::clone(&self.release),
        }))
    }
}

struct GateReader {
    records: Vec<Record<u64>>,
    release: Arc<AtomicBool>,
}

impl SourceReader<u64> for GateReader {
    fn poll(
        &mut self,
        out: &mut Vec<Record<u64>>,
        _: usize,
        _: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError> {
        if !self.records.is_empty() {
            out.append(&mut self.records);
            return Ok(ReadStatus::Ready);
        }
        Ok(if self.release.load(Ordering::Relaxed) {
            ReadStatus::Done
        } else {
            ReadStatus::Idle
        })
    }
}

/// `busy` reads records up to event time 5 000; `quiet` reads nothing, with `quiet_config`.
/// Both feed a tumbling count window of 1 s. Returns the running handle, the release switch
/// and the collected windows.
fn start(quiet_config: WatermarkConfig) -> (RunHandle, Arc<AtomicBool>, CollectSink<u64>) {
    let release = Arc::new(AtomicBool::new(false));
    let now = eddy_engine::wall_clock_ms();
    let busy = Gate {
        // Event times near the wall clock, so an idle watermark (the wall clock) is past them.
        records: (0..50).map(|i| (now - 60_000 + i * 100, i)).collect(),
        release: Arc::clone(&release),
    };
    let quiet = Gate {
        records: Vec::new(),
        release: Arc::clone(&release),
    };
    let no_disorder = WatermarkConfig {
        max_disorder: Duration::ZERO,
        idle_timeout: None,
    };
    let pipeline = Pipeline::new("explained");
    let out = CollectSink::new();
    let a = pipeline.source("busy", busy, no_disorder);
    let b = pipeline.source("quiet", quiet, quiet_config);
    a.union(b, "both")
        .stage(
            "first_second",
            "window",
            "1 s".into(),
            move |input, stage| {
                // A minimal window: counts the records of the first second of the input's
                // event times and emits the count once the watermark passes its end.
                let end = now - 59_000;
                input.unary_frontier(Local, "first_second", move |_, _| {
                    let mut count = 0;
                    let mut cap = None;
                    move |(input, frontier), output| {
                        input.for_each(|c, data| {
                            count += data.iter().filter(|(t, _)| *t < end).count() as u64;
                            if cap.is_none() {
                                cap = c.retain_least(0);
                            }
                        });
                        let passed = frontier.frontier().iter().all(|t| *t >= end);
                        match (&cap, passed) {
                            (Some(c), true) => {
                                output.session(c).give((end - 1, count));
                                cap = None;
                                stage.gauge().set_open_window(None);
                            }
                            (Some(_), false) => {
                                stage.gauge().set_open_window(Some((end - 1000, end)))
                            }
                            _ => {}
                        }
                    }
                })
            },
        )
        .sink("out", out.clone());
    let handle = Runtime::new(1)
        .metrics_addr("127.0.0.1:0".parse().unwrap())
        .start(&pipeline)
        .unwrap();
    (handle, release, out)
}

/// The line of `text` that starts (after indentation) with `start`.
fn line<'t>(text: &'t str, start: &str) -> &'t str {
    text.lines()
        .find(|l| l.trim_start().starts_with(start))
        .unwrap_or_else(|| panic!("no line starts with {start}:\n{text}"))
}

fn get(handle: &RunHandle, path: &str) -> String {
    let addr = handle.metrics_addr().expect("the endpoint is on");
    ureq::get(&format!("http://{addr}{path}"))
        .config()
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .build()
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// Asks `/explain` until `ready` holds for the answer (at most 10 s); returns the last answer.
fn explain_until(handle: &RunHandle, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = get(handle, "/explain");
        if ready(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_explainer_names_a_stalled_source() {
    let (handle, release, out) = start(WatermarkConfig {
        max_disorder: Duration::ZERO,
        idle_timeout: None,
    });
    let text = explain_until(&handle, |t| t.contains("stalled: nothing read for"));
    assert!(
        text.contains("held back by: source 'quiet' worker 0"),
        "the stalled source is named:\n{text}"
    );
    let quiet = line(&text, "'quiet' worker 0:");
    assert!(
        quiet.contains("watermark 1970-01-01T00:00:00.000Z"),
        "{text}"
    );
    assert!(quiet.contains("stalled: nothing read for"), "{text}");
    assert!(
        text.contains("oldest open window") && text.contains("it fires when the watermark reaches"),
        "the window says what it waits for:\n{text}"
    );
    assert!(
        out.rows().is_empty(),
        "the window waits for the stalled source"
    );
    // The same text as the handle gives directly.
    assert!(handle
        .observer()
        .explain()
        .contains("held back by: source 'quiet' worker 0"));
    release.store(true, Ordering::Relaxed);
    handle.join().unwrap();
    assert_eq!(out.rows().len(), 1, "released, the window fires");
}

#[test]
fn the_explainer_reports_an_idle_source_its_timeout_released() {
    let (handle, release, out) = start(WatermarkConfig {
        max_disorder: Duration::ZERO,
        idle_timeout: Some(Duration::from_millis(300)),
    });
    let text = explain_until(&handle, |t| t.contains("past its idle timeout"));
    let quiet = line(&text, "'quiet' worker 0:");
    assert!(
        quiet.contains("past its idle timeout of 300 ms") && !quiet.contains("stalled"),
        "the quiet source is idle and released:\n{text}"
    );
    // Its watermark follows the wall clock: the window the busy source filled fires while the
    // quiet one is still idle.
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.rows().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        out.rows(),
        vec![(out.rows()[0].0, 10)],
        "10 records in the first second"
    );
    let metrics = get(&handle, "/metrics");
    assert!(
        metrics.contains("eddy_source_idle{pipeline=\"explained\",stage=\"quiet\",kind=\"source\",worker=\"0\"} 1"),
        "{metrics}"
    );
    release.store(true, Ordering::Relaxed);
    handle.join().unwrap();
}
