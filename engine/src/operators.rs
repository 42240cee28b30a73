//! The engine's own timely operators: the source driver that turns watermarks into timestamps,
//! the sink driver, and the fork that lets one stream feed several stages.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::Pipeline as Local;
use timely::dataflow::channels::pullers::Counter as PullCounter;
use timely::dataflow::channels::pushers::{Counter as PushCounter, Tee, TeeHelper};
use timely::dataflow::channels::Message;
use timely::dataflow::operators::generic::builder_raw::OperatorBuilder;
use timely::dataflow::operators::generic::operator::source as timely_source;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Scope;
use timely::progress::{Source as Port, Timestamp};

use crate::dead_letter::DeadLetterKind;
use crate::metrics::new_histogram;
use crate::pipeline::{Records, StageContext};
use crate::sink::{Sink, SinkReport};
use crate::source::{ReadStatus, Source};
use crate::time::{wall_clock_ms, WatermarkConfig, WatermarkTracker};

/// How long an idle source waits before it polls again.
const IDLE_POLL: Duration = Duration::from_millis(1);
/// How often a sink adds the latencies it measured to the run's histogram.
const LATENCY_MERGE: Duration = Duration::from_millis(500);

/// Drives one worker's reader: each activation reads one batch, stamps it with the current
/// watermark (the capability's time), then downgrades the capability to the new watermark.
/// A finished reader drops the capability.
pub(crate) fn source<'s, T: 'static>(
    scope: Scope<'s, u64>,
    stage: StageContext,
    source: Arc<dyn Source<T>>,
    watermarks: WatermarkConfig,
    batch_size: usize,
) -> Records<'s, T> {
    let name = stage.name().to_string();
    timely_source(scope, &name, move |capability, info| {
        let activator = scope.activator_for(info.address);
        let mut reader = match source.open(stage.partition()) {
            Ok(reader) => Some(reader),
            Err(error) => {
                stage.fail(error);
                None
            }
        };
        let mut capability = reader.as_ref().map(|_| capability);
        stage.metrics().set_idle_timeout(watermarks.idle_timeout);
        stage
            .gauge()
            .set_backlog_probe(reader.as_ref().and_then(|r| r.backlog_probe()));
        let clock = stage.run_metrics().register_source(stage.partition().index);
        let mut tracker = WatermarkTracker::new(watermarks);
        let mut polled = Vec::with_capacity(batch_size);
        let mut rejected = Vec::new();
        let mut last_noted = None;
        let metrics = stage.run_metrics_handle();
        let gauge = stage.clone();
        let advance = move |cap: &mut Capability<u64>, watermark: u64| {
            if watermark > *cap.time() {
                cap.downgrade(&watermark);
                metrics.note_watermark(clock, watermark, Instant::now());
                gauge.gauge().set_watermark(watermark);
            }
        };
        let metrics = stage.run_metrics_handle();
        let gauge = stage.clone();
        let finish = move |capability: &mut Option<Capability<u64>>| {
            *capability = None;
            metrics.note_watermark(clock, u64::MAX, Instant::now());
            gauge.gauge().set_watermark(u64::MAX);
        };
        move |output| {
            let (Some(cap), Some(r)) = (capability.as_mut(), reader.as_mut()) else {
                return;
            };
            let status = r.poll(&mut polled, batch_size, &mut rejected);
            stage.reject_all(DeadLetterKind::Decode, &mut rejected);
            if !polled.is_empty() {
                let mut newest = 0;
                for (t, _) in &polled {
                    tracker.observe(*t);
                    newest = newest.max(*t);
                }
                stage.gauge().note_records(newest, wall_clock_ms());
                stage.metrics().add_out(polled.len());
                if last_noted != Some(*cap.time()) {
                    stage
                        .run_metrics()
                        .note_stamp(clock, *cap.time(), Instant::now());
                    last_noted = Some(*cap.time());
                }
                output.session(&*cap).give_container(&mut polled);
                let watermark = r.watermark().unwrap_or_else(|| tracker.on_data());
                advance(cap, watermark);
            }
            match status {
                Ok(ReadStatus::Ready) => {
                    if let Some(watermark) = r.watermark() {
                        advance(cap, watermark);
                    }
                    activator.activate()
                }
                Ok(ReadStatus::Idle) => {
                    if polled.is_empty() {
                        stage.gauge().note_idle(wall_clock_ms());
                    }
                    let watermark = r
                        .watermark()
                        .unwrap_or_else(|| tracker.on_idle(Instant::now(), wall_clock_ms()));
                    advance(cap, watermark);
                    activator.activate_after(IDLE_POLL);
                }
                Ok(ReadStatus::Done) => finish(&mut capability),
                Err(error) => {
                    stage.fail(error);
                    finish(&mut capability);
                }
            }
        }
    })
}

/// Where a forked stream comes from on one worker: the fork's output port and the registry its
/// readers attach to. Both are free of the scope's lifetime, so a worker can keep them while
/// it builds the rest of the dataflow.
pub(crate) type ForkPoint<T> = (Port, TeeHelper<u64, Vec<crate::time::Record<T>>>);

/// Passes `input` through unchanged to any number of readers. Each reader attached to the
/// returned registry receives every batch (cloned for all but the last reader); progress flows
/// as through any operator. Built like timely's `probe`, with a registry the caller keeps.
pub(crate) fn fork<T: Clone + 'static>(input: Records<'_, T>) -> ForkPoint<T> {
    let mut builder = OperatorBuilder::new("Fork".to_owned(), input.scope());
    let mut puller = PullCounter::new(builder.new_input(input, Local));
    // The builder's own output stream is replaced by a registry this function hands back.
    let (_unused, stream) = builder.new_output::<Vec<crate::time::Record<T>>>();
    let port = *stream.name();
    let (tee, registry) = Tee::new();
    let mut output = PushCounter::new(tee);
    let mut started = false;
    builder.build(move |progress| {
        if !started {
            // Operators start holding a capability at the minimum time; a fork needs none.
            progress.internals[0].update(u64::minimum(), -1);
            started = true;
        }
        while let Some(message) = puller.next() {
            Message::push_at(&mut message.data, message.stamp.clone(), &mut output);
        }
        timely::communication::Push::done(&mut output);
        puller
            .consumed()
            .borrow_mut()
            .drain_into(&mut progress.consumeds[0]);
        output
            .produced()
            .borrow_mut()
            .drain_into(&mut progress.produceds[0]);
        false
    });
    (port, registry)
}

/// Hands every batch to the worker's sink writer, records latency, and finishes the writer when
/// the input frontier is empty. After a failure the sink keeps draining its input (so the run
/// ends) but writes nothing more.
pub(crate) fn sink<T: 'static>(
    input: Records<'_, T>,
    stage: StageContext,
    sink: Arc<dyn Sink<T>>,
    reports: Rc<RefCell<Vec<(String, SinkReport)>>>,
) {
    let mut writer = match sink.open(stage.partition()) {
        Ok(writer) => Some(writer),
        Err(error) => {
            stage.fail(error);
            None
        }
    };
    let mut latency = new_histogram();
    let mut merged_at = Instant::now();
    let name = stage.name().to_string();
    let mut watermark = 0u64;
    input.sink(Local, &name, move |(input, frontier)| {
        input.for_each(|cap, batch| {
            let n = batch.len();
            stage.metrics().add_in(n);
            if let (Some(stamp), false) = (cap.least(), batch.is_empty()) {
                let worker = stage.partition().index;
                if let Some(at) = stage.run_metrics().stamp_instant(*stamp, worker) {
                    let micros = at.elapsed().as_micros().clamp(1, 3_600_000_000) as u64;
                    latency
                        .record_n(micros, n as u64)
                        .expect("clamped into the histogram's bounds");
                }
            }
            if let Some(w) = writer.as_mut() {
                let written = w.write_at(cap.least().copied().unwrap_or(0), batch);
                stage.reject_all(DeadLetterKind::Delivery, &mut w.undeliverable());
                if let Err(error) = written {
                    stage.fail(error);
                    writer = None;
                }
            }
            batch.clear();
        });
        if merged_at.elapsed() >= LATENCY_MERGE && !latency.is_empty() {
            // The run's histogram is read live (the metrics endpoint): hand it what this sink
            // measured so far.
            stage.run_metrics().merge_latency(&latency);
            latency.reset();
            merged_at = Instant::now();
        }
        if let Some(&least) = frontier.frontier().iter().min() {
            if least > watermark {
                watermark = least;
                stage.gauge().set_watermark(least);
                if let Some(w) = writer.as_mut() {
                    let advanced = w.on_watermark(least);
                    stage.reject_all(DeadLetterKind::Delivery, &mut w.undeliverable());
                    if let Err(error) = advanced {
                        stage.fail(error);
                        writer = None;
                    }
                }
            }
        }
        if frontier.is_empty() {
            stage.gauge().set_watermark(u64::MAX);
            if let Some(mut w) = writer.take() {
                let finished = w.finish();
                stage.reject_all(DeadLetterKind::Delivery, &mut w.undeliverable());
                match finished {
                    Ok(report) => reports
                        .borrow_mut()
                        .push((stage.name().to_string(), report)),
                    Err(error) => stage.fail(error),
                }
                stage.run_metrics().merge_latency(&latency);
            }
        }
    });
}
