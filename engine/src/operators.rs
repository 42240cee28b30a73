//! The engine's own timely operators: the source driver that turns watermarks into timestamps,
//! the sink driver, and the fork that lets one stream feed several stages.

use std::cell::RefCell;
use std::collections::{btree_map, BTreeMap};
use std::path::PathBuf;
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

use serde::{Deserialize, Serialize};

use crate::checkpoint::{boundary_above, decode, encode, segment_file_name, StageCheckpoint};
use crate::dead_letter::DeadLetterKind;
use crate::error::{ConnectorError, Fault};
use crate::metrics::new_histogram;
use crate::pipeline::{Records, StageContext};
use crate::sink::{FileOutput, Sink, SinkReport, SinkWriter};
use crate::source::{Partition, ReadStatus, RecordError, Source, SourcePositions, SourceReader};
use crate::time::{wall_clock_ms, Record, WatermarkConfig, WatermarkTracker};

/// How long an idle source waits before it polls again.
const IDLE_POLL: Duration = Duration::from_millis(1);
/// How often a sink adds the latencies it measured to the run's histogram.
const LATENCY_MERGE: Duration = Duration::from_millis(500);

/// A source reader's part of a checkpoint: where it is (`None`: finished) and the watermark it
/// holds.
#[derive(Serialize, Deserialize)]
struct SourcePart {
    position: Option<Vec<u8>>,
    watermark: u64,
    max_seen: Option<u64>,
}

/// What a source reader resumes from: the positions of the old readers handed to it, and the
/// watermark they held.
struct Resume {
    positions: SourcePositions,
    watermark: u64,
    max_seen: Option<u64>,
}

/// The positions this worker's reader resumes from, when the run resumes.
fn resume(checkpoint: &StageCheckpoint) -> Option<Resume> {
    let at = checkpoint.restored_at()?;
    let mut resume = Resume {
        positions: SourcePositions {
            workers: checkpoint.restored_workers(),
            positions: Vec::new(),
        },
        watermark: at,
        max_seen: None,
    };
    let mut held = None::<u64>;
    for (old, name, payload) in checkpoint.restored_parts(|_| true) {
        match decode::<SourcePart>(&payload) {
            Ok(part) => {
                resume
                    .positions
                    .positions
                    .extend(part.position.map(|p| (old, p)));
                held = Some(held.map_or(part.watermark, |h| h.min(part.watermark)));
                resume.max_seen = resume.max_seen.max(part.max_seen);
            }
            Err(error) => checkpoint.decode_failed(&name, error.to_string()),
        }
    }
    // The least watermark the old readers held: never below the checkpoint. Old readers that
    // had all finished held none (their parts say u64::MAX): the reader resumes at the
    // checkpoint, at their end positions finds nothing to read, and its last part starts
    // there, as every part of this run does.
    resume.watermark = held.filter(|&h| h != u64::MAX).map_or(at, |h| h.max(at));
    Some(resume)
}

/// The positions a reader's parts saved, until a checkpoint they belong to completes.
#[derive(Default)]
struct Saved {
    /// `(lo, hi, position)` of the parts saved and not yet behind a completed checkpoint.
    parts: std::collections::VecDeque<(u64, u64, Vec<u8>)>,
    /// The last completed checkpoint handed to the reader.
    told: u64,
}

impl Saved {
    /// The position of the part checkpoint `w` holds, once, when `w` is new; forgets the parts
    /// before it.
    fn committed(&mut self, w: u64) -> Option<Vec<u8>> {
        if w <= self.told {
            return None;
        }
        self.told = w;
        while self.parts.front().is_some_and(|(_, hi, _)| *hi < w) {
            self.parts.pop_front();
        }
        let (lo, _, position) = self.parts.front()?;
        (*lo < w).then(|| position.clone())
    }
}

/// Drives one worker's reader: each activation reads one batch, stamps it with the current
/// watermark (the capability's time), then downgrades the capability to the new watermark.
/// A finished reader drops the capability. With checkpoints, every downgrade across a
/// checkpoint boundary writes the reader's position (and finishing writes the last part); a
/// resumed reader reopens at its positions, holding the watermark it held then.
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
        let partition = stage.partition();
        let checkpoint = stage.checkpoint().cloned();
        let resume = checkpoint.as_ref().and_then(resume);
        let opened = match &resume {
            // Restored from the final checkpoint: the job had finished; there is nothing to
            // read (a broker's records now would all be late), and the run ends at once.
            Some(r) if r.watermark == u64::MAX => Ok(None),
            Some(r) => source.open_at(partition, &r.positions).map(Some),
            None => source.open(partition).map(Some),
        };
        let mut reader = opened.unwrap_or_else(|error| {
            stage.fail(error);
            None
        });
        if checkpoint.is_some() && reader.as_ref().is_some_and(|r| r.position().is_none()) {
            stage.fail(ConnectorError::user(format!(
                "{} cannot be checkpointed (its reader has no position to resume from); run it \
                 without --checkpoint-dir",
                source.describe()
            )));
            reader = None;
        }
        let mut capability = reader.as_ref().map(|_| capability);
        let mut tracker = match &resume {
            Some(r) => WatermarkTracker::resume(watermarks, r.watermark, r.max_seen),
            None => WatermarkTracker::new(watermarks),
        };
        if let (Some(cap), Some(r)) = (capability.as_mut(), &resume) {
            cap.downgrade(&r.watermark);
        }
        stage.metrics().set_idle_timeout(watermarks.idle_timeout);
        stage
            .gauge()
            .set_backlog_probe(reader.as_ref().and_then(|r| r.backlog_probe()));
        let clock = stage.run_metrics().register_source(stage.partition().index);
        let mut polled = Vec::with_capacity(batch_size);
        let mut rejected = Vec::new();
        let mut last_noted = None;
        let saved = Rc::new(RefCell::new(Saved::default()));
        let saving = Rc::clone(&saved);
        let save = move |from: u64, to: u64, position: Option<Vec<u8>>, max_seen| {
            if let Some(c) = checkpoint.as_ref().filter(|c| c.crosses(from, to)) {
                let part = SourcePart {
                    position,
                    watermark: to,
                    max_seen,
                };
                c.save_bytes(from, to, &encode(&part));
                if let Some(position) = part.position {
                    saving.borrow_mut().parts.push_back((from, to, position));
                }
            }
        };
        let committed = stage.checkpoint().cloned();
        let metrics = stage.run_metrics_handle();
        let gauge = stage.clone();
        let save_at = save.clone();
        let advance = move |cap: &mut Capability<u64>,
                            watermark: u64,
                            reader: &dyn SourceReader<T>,
                            max_seen: Option<u64>| {
            if watermark > *cap.time() {
                let from = *cap.time();
                cap.downgrade(&watermark);
                metrics.note_watermark(clock, watermark, Instant::now());
                gauge.gauge().set_watermark(watermark);
                save_at(from, watermark, reader.position(), max_seen);
            }
        };
        let metrics = stage.run_metrics_handle();
        let gauge = stage.clone();
        // `done`: the reader that finished, whose last part saves where it ended (a restore
        // hands that on, so a finished share is not read again); `None` when it failed.
        let finish = move |capability: &mut Option<Capability<u64>>,
                           max_seen,
                           done: Option<&dyn SourceReader<T>>| {
            if let (Some(cap), Some(reader)) = (capability.as_ref(), done) {
                save(*cap.time(), u64::MAX, reader.position(), max_seen);
            }
            *capability = None;
            metrics.note_watermark(clock, u64::MAX, Instant::now());
            gauge.gauge().set_watermark(u64::MAX);
        };
        move |output| {
            let (Some(cap), Some(r)) = (capability.as_mut(), reader.as_mut()) else {
                return;
            };
            if let Some(w) = committed.as_ref().and_then(StageCheckpoint::committed) {
                if let Some(position) = saved.borrow_mut().committed(w) {
                    r.committed(&position);
                }
            }
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
                advance(cap, watermark, &**r, tracker.max_seen());
            }
            match status {
                Ok(ReadStatus::Ready) => {
                    if let Some(watermark) = r.watermark() {
                        advance(cap, watermark, &**r, tracker.max_seen());
                    }
                    activator.activate()
                }
                Ok(ReadStatus::Idle) => {
                    if polled.is_empty() {
                        stage.gauge().note_idle(wall_clock_ms());
                    }
                    let watermark = r.watermark().unwrap_or_else(|| {
                        if r.caught_up() {
                            tracker.on_idle(Instant::now(), wall_clock_ms())
                        } else {
                            // Slow, not idle: records wait at the source.
                            tracker.on_data()
                        }
                    });
                    advance(cap, watermark, &**r, tracker.max_seen());
                    activator.activate_after(IDLE_POLL);
                }
                Ok(ReadStatus::Done) => finish(&mut capability, tracker.max_seen(), Some(&**r)),
                Err(error) => {
                    stage.fail(error);
                    finish(&mut capability, tracker.max_seen(), None);
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

/// What a sink driver writes to: the sink's one writer, or — in a run with checkpoints, for a
/// file sink — one file per checkpoint interval.
enum Writers<T> {
    One(Box<dyn SinkWriter<T>>),
    Segments(Segments<T>),
}

impl<T: 'static> Writers<T> {
    fn open(sink: &Arc<dyn Sink<T>>, stage: &StageContext) -> Result<Writers<T>, ConnectorError> {
        let files = stage.checkpoint().and_then(|c| Some((c, sink.files()?)));
        Ok(match files {
            Some((checkpoint, files)) => Writers::Segments(Segments {
                sink: Arc::clone(sink),
                partition: stage.partition(),
                pending: checkpoint.pending_dir(stage.name()),
                files,
                every: checkpoint.every(),
                open: BTreeMap::new(),
                report: SinkReport::default(),
            }),
            None => Writers::One(sink.open(stage.partition())?),
        })
    }

    fn write_at(&mut self, stamp: u64, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        match self {
            Writers::One(w) => w.write_at(stamp, batch),
            Writers::Segments(s) => s.write_at(stamp, batch),
        }
    }

    fn on_watermark(&mut self, watermark: u64) -> Result<(), ConnectorError> {
        match self {
            Writers::One(w) => w.on_watermark(watermark),
            Writers::Segments(s) => s.close_until(watermark),
        }
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        match self {
            Writers::One(w) => w.finish(),
            Writers::Segments(s) => {
                s.close_until(u64::MAX)?;
                Ok(std::mem::take(&mut s.report))
            }
        }
    }

    fn undeliverable(&mut self) -> Vec<RecordError> {
        match self {
            Writers::One(w) => w.undeliverable(),
            Writers::Segments(s) => s
                .open
                .values_mut()
                .flat_map(|w| w.undeliverable())
                .collect(),
        }
    }
}

/// One worker's result files of a file sink in a run with checkpoints: the records stamped in
/// `[k * every, (k + 1) * every)` go to the file of interval `k`, written under the checkpoint
/// directory's `pending/` and closed once the watermark passes its end; the coordinator
/// publishes it when the checkpoint at its end completes.
struct Segments<T> {
    sink: Arc<dyn Sink<T>>,
    partition: Partition,
    pending: PathBuf,
    files: FileOutput,
    every: u64,
    /// Open files by the end of their interval.
    open: BTreeMap<u64, Box<dyn SinkWriter<T>>>,
    report: SinkReport,
}

impl<T: 'static> Segments<T> {
    fn write_at(&mut self, stamp: u64, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        let end = boundary_above(self.every, stamp);
        let writer = match self.open.entry(end) {
            btree_map::Entry::Occupied(o) => o.into_mut(),
            btree_map::Entry::Vacant(v) => {
                let name = segment_file_name(
                    &self.files.prefix,
                    self.partition.index,
                    end,
                    &self.files.extension,
                );
                v.insert(self.sink.open_file(self.partition, &self.pending, &name)?)
            }
        };
        writer.write_at(stamp, batch)
    }

    /// Closes the files of the intervals ending at or before `watermark`.
    fn close_until(&mut self, watermark: u64) -> Result<(), ConnectorError> {
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            let report = entry.remove().finish()?;
            self.report.rows += report.rows;
            let published = report.files.iter().filter_map(|f| f.file_name());
            self.report
                .files
                .extend(published.map(|name| self.files.dir.join(name)));
        }
        Ok(())
    }
}

/// Hands every batch to the worker's sink writer, records latency, and finishes the writer when
/// the input frontier is empty. After a failure the sink keeps draining its input (so the run
/// ends) but writes nothing more. With checkpoints, file sinks write one file per interval
/// ([`Segments`]), and every sink writes an (empty) part when its watermark crosses a
/// checkpoint boundary, after closing the files it completes; other sinks write as they go
/// (at least once).
pub(crate) fn sink<T: 'static>(
    input: Records<'_, T>,
    stage: StageContext,
    sink: Arc<dyn Sink<T>>,
    reports: Rc<RefCell<Vec<(String, SinkReport)>>>,
) {
    let mut writer = match Writers::open(&sink, &stage) {
        Ok(writer) => Some(writer),
        Err(error) => {
            stage.fail(error);
            None
        }
    };
    let checkpoint = stage.checkpoint().cloned();
    // Results stamped below the checkpoint resumed from are in the published files already.
    let resumed_at = checkpoint
        .as_ref()
        .and_then(|c| c.restored_at())
        .unwrap_or(0);
    let mut latency = new_histogram();
    let mut merged_at = Instant::now();
    let name = stage.name().to_string();
    let mut watermark = resumed_at;
    input.sink(Local, &name, move |(input, frontier)| {
        input.for_each(|cap, batch| {
            let n = batch.len();
            stage.metrics().add_in(n);
            let stamp = cap.least().copied().unwrap_or(0);
            if stamp < resumed_at && !batch.is_empty() {
                // Every stage sends nothing stamped below the checkpoint it resumed from (that
                // is downstream already): such records here would be written twice.
                stage.fail(ConnectorError {
                    what: format!(
                        "{n} records stamped {stamp} reached the sink after a restore from the \
                         checkpoint at {resumed_at}; a stage upstream sent them again"
                    ),
                    fault: Fault::Internal,
                    source: None,
                });
                writer = None;
            }
            if !batch.is_empty() {
                let worker = stage.partition().index;
                if let Some(at) = stage.run_metrics().stamp_instant(stamp, worker) {
                    let micros = at.elapsed().as_micros().clamp(1, 3_600_000_000) as u64;
                    latency
                        .record_n(micros, n as u64)
                        .expect("clamped into the histogram's bounds");
                }
            }
            if let Some(w) = writer.as_mut() {
                let written = w.write_at(stamp, batch);
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
                stage.gauge().set_watermark(least);
                if let Some(w) = writer.as_mut() {
                    let advanced = w.on_watermark(least);
                    stage.reject_all(DeadLetterKind::Delivery, &mut w.undeliverable());
                    match advanced {
                        Ok(()) => save_sink_part(&checkpoint, watermark, least),
                        Err(error) => {
                            stage.fail(error);
                            writer = None;
                        }
                    }
                }
                watermark = least;
            }
        }
        if frontier.is_empty() {
            stage.gauge().set_watermark(u64::MAX);
            if let Some(mut w) = writer.take() {
                let finished = w.finish();
                stage.reject_all(DeadLetterKind::Delivery, &mut w.undeliverable());
                match finished {
                    Ok(report) => {
                        save_sink_part(&checkpoint, watermark, u64::MAX);
                        reports
                            .borrow_mut()
                            .push((stage.name().to_string(), report))
                    }
                    Err(error) => stage.fail(error),
                }
                stage.run_metrics().merge_latency(&latency);
            }
        }
    });
}

/// A sink's part: empty, it says the sink has closed every file of the intervals up to `to`.
fn save_sink_part(checkpoint: &Option<StageCheckpoint>, from: u64, to: u64) {
    if let Some(c) = checkpoint.as_ref().filter(|c| c.crosses(from, to)) {
        c.save_bytes(from, to, &[]);
    }
}
