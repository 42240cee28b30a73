//! The engine's own timely operators: the source driver that turns watermarks into timestamps,
//! the sink driver, and the fork that lets one stream feed several stages.
//!
//! - **Source driver.** Input: its reader's polls. Output: the records of each poll, stamped
//!   with the reader's watermark before the poll; the capability then moves to the new
//!   watermark. State: the reader, and the stamps of the polls not yet released to it
//!   ([`crate::durability`]). A late record is not its concern (it is stamped with the current
//!   watermark; the windows decide). Checkpoint: the reader's position and watermark at each
//!   boundary it crosses. On a stop it reads no more (with checkpoints: once its watermark
//!   reaches the next checkpoint boundary) and holds its watermark until the sinks of the
//!   process have finished.
//! - **Sink driver.** Input: any stream. Output: none but its durability capability, held at
//!   the frontier it last committed. It writes every batch as it arrives, commits on a commit
//!   cycle, and finishes its writer when the frontier is empty, or, after a stop, when the
//!   frontier reaches the stop watermark. Checkpoint: an empty part at each boundary, after
//!   closing the files of the intervals before it.

use std::cell::{Cell, RefCell};
use std::collections::{btree_map, BTreeMap};
use std::mem::take;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline as Local;
use timely::dataflow::channels::pullers::Counter as PullCounter;
use timely::dataflow::channels::pushers::{Counter as PushCounter, Tee, TeeHelper};
use timely::dataflow::channels::Message;
use timely::dataflow::operators::generic::builder_raw::OperatorBuilder;
use timely::dataflow::operators::generic::operator::source as timely_source;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::Probe;
use timely::dataflow::{ProbeHandle, Scope};
use timely::progress::{Source as Port, Timestamp};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{boundary_above, decode, encode, segment_file_name, StageCheckpoint};
use crate::dead_letter::DeadLetterKind;
use crate::durability::{Pending, Releases, RunControl};
use crate::error::{ConnectorError, Fault};
use crate::metrics::new_histogram;
use crate::pipeline::{Records, StageContext};
use crate::sink::{FileOutput, Sink, SinkReport, SinkWriter};
use crate::source::{
    Partition, ReadStatus, RecordError, ReleaseMode, Source, SourcePositions, SourceReader,
};
use crate::time::{wall_clock_ms, Record, WatermarkConfig, WatermarkTracker};

/// How long an idle source waits before it polls again.
const IDLE_POLL: Duration = Duration::from_millis(1);
/// How often a stopping source or sink looks whether the stop has drained.
const STOP_POLL: Duration = Duration::from_millis(5);
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
    releases: Releases,
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
        let control = Arc::clone(stage.control());
        if reader.is_some() {
            control.reader_opened();
        }
        // Without a commit cycle (no acknowledging source, or checkpoints) a poll's records
        // are released as soon as they are handed on.
        let commit_cycle = control.commit_every.is_some() && checkpoint.is_none();
        if let Some(r) = reader.as_mut() {
            r.release_mode(match (&checkpoint, commit_cycle) {
                (Some(_), _) => ReleaseMode::Checkpointed,
                (None, true) => ReleaseMode::Committed,
                (None, false) => ReleaseMode::Taken,
            });
        }
        let mut pending = Pending::default();
        // After a stop: the least stamp the stateful stages held once the sinks had finished,
        // below which the stopped reader's records are released at the end.
        let held_at_stop = Rc::new(Cell::new(0));
        let mut stopped = false;
        // After a stop: the watermark at which the reader stops reading.
        let mut stop_at: Option<u64> = None;
        let boundaries = stage.checkpoint().cloned();
        let mut settling = false;
        let mut draining = false;
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
        stage
            .gauge()
            .set_counter_probe(reader.as_ref().and_then(|r| r.counters()));
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
            if stopped {
                // Stopped where it was: holds its watermark until every sink of the process
                // has finished, so nothing the watermark has not closed fires before.
                if (control.sinks_finished() || control.aborted()) && !settling {
                    // The hold reporters look again now that the sinks have committed all.
                    releases.holds.wake();
                    settling = true;
                    activator.activate_after(STOP_POLL);
                } else if settling {
                    held_at_stop.set(releases.held_frontier());
                    capability = None;
                    stopped = false;
                } else {
                    activator.activate_after(STOP_POLL);
                }
                return;
            }
            let (Some(cap), Some(r)) = (capability.as_mut(), reader.as_mut()) else {
                return;
            };
            if stage.run_failed() {
                // A failed or aborted run reads and releases nothing more: what this reader
                // took and did not release is delivered again.
                reader = None;
                control.reader_finished();
                finish(&mut capability, tracker.max_seen(), None);
                return;
            }
            if control.stop_requested() && !draining && stop_at.is_none() {
                stop_at = Some(match &boundaries {
                    // With checkpoints, the reader reads on to the next checkpoint boundary, so
                    // that the final checkpoint is where the run stops.
                    Some(c) => c.boundary_above(*cap.time()),
                    None => *cap.time(),
                });
                // A reader that acknowledged records it still holds reads them to the end.
                draining = boundaries.is_none() && r.stop();
            }
            if stop_at.is_some_and(|at| *cap.time() >= at) && !draining {
                let at = *cap.time();
                stop_reader(
                    &mut reader,
                    at,
                    take(&mut pending),
                    (&releases, &control),
                    &held_at_stop,
                );
                stopped = true;
                activator.activate_after(STOP_POLL);
                return;
            }
            // After a stop with checkpoints, the watermark goes no further than the boundary
            // (a reader draining what it acknowledged moves on, so its records are written).
            let limit = stop_at.filter(|_| !draining).unwrap_or(u64::MAX);
            if let Some(w) = committed.as_ref().and_then(StageCheckpoint::committed) {
                if let Some(position) = saved.borrow_mut().committed(w) {
                    r.committed(&position);
                }
            }
            if commit_cycle {
                if let Some(n) = pending.release_below(releases.frontier()) {
                    r.released(n);
                }
            }
            let stamp = *cap.time();
            let status = r.poll(&mut polled, batch_size, &mut rejected);
            pending.polled(stamp);
            if !commit_cycle {
                if let Some(n) = pending.release_all() {
                    r.released(n);
                }
            }
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
                advance(cap, watermark.min(limit), &**r, tracker.max_seen());
            }
            match status {
                Ok(ReadStatus::Ready) => {
                    if let Some(watermark) = r.watermark() {
                        advance(cap, watermark.min(limit), &**r, tracker.max_seen());
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
                    advance(cap, watermark.min(limit), &**r, tracker.max_seen());
                    activator.activate_after(IDLE_POLL);
                }
                Ok(ReadStatus::Done) if draining => {
                    // Drained after a stop: it holds its watermark as a stopped reader does.
                    let at = *cap.time();
                    stop_reader(
                        &mut reader,
                        at,
                        take(&mut pending),
                        (&releases, &control),
                        &held_at_stop,
                    );
                    stopped = true;
                    activator.activate_after(STOP_POLL);
                }
                Ok(ReadStatus::Done) => {
                    finish(&mut capability, tracker.max_seen(), Some(&**r));
                    control.reader_finished();
                    // Its last records are released once the run has committed them.
                    let r = reader.take().expect("polled above");
                    release_at_end(&releases, &control, r, take(&mut pending), None);
                }
                Err(error) => {
                    stage.fail(error);
                    control.reader_finished();
                    finish(&mut capability, tracker.max_seen(), None);
                }
            }
        }
    })
}

/// Stops a reader after a stop, holding watermark `at` (until the sinks of the process have
/// finished): it reads no more, and what it took is released at the end of the run.
fn stop_reader<T: 'static>(
    reader: &mut Option<Box<dyn SourceReader<T>>>,
    at: u64,
    pending: Pending,
    (releases, control): (&Releases, &Arc<RunControl>),
    held_at_stop: &Rc<Cell<u64>>,
) {
    let Some(r) = reader.take() else { return };
    control.reader_stopped(at);
    let held = Some(Rc::clone(held_at_stop));
    release_at_end(releases, control, r, pending, held);
}

/// Hands a reader that reads no more to the worker's end of run: if the run succeeds, its
/// records the sinks hold are released. After a stop, only those below the stop watermark (a
/// record of a reader that was ahead of it may not have reached them) and below what the
/// stateful stages held once the sinks had finished (`held_at_stop`: the open windows'
/// records, whose effects were never written).
fn release_at_end<T: 'static>(
    releases: &Releases,
    control: &Arc<RunControl>,
    mut reader: Box<dyn SourceReader<T>>,
    mut pending: Pending,
    held_at_stop: Option<Rc<Cell<u64>>>,
) {
    let control = Arc::clone(control);
    releases.finishers.borrow_mut().push(Box::new(move |ok| {
        let held = held_at_stop.map_or(u64::MAX, |h| h.get());
        let limit = control.stopped_at().unwrap_or(u64::MAX).min(held);
        if let Some(n) = pending.release_below(limit).filter(|_| ok) {
            reader.released(n);
        }
    }));
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

/// What a sink driver writes to: the sink's one writer; in a run with checkpoints, for a file
/// sink, one file per checkpoint interval; in a run with a commit cycle, for a file sink, a
/// file per commit.
pub(crate) enum Writers<T> {
    One(Box<dyn SinkWriter<T>>),
    Segments(Segments<T>),
    Rolling(Rolling<T>),
}

impl<T: 'static> Writers<T> {
    /// Opens worker `partition`'s writers of `sink`, in stage `stage` with its checkpoints
    /// (`None`: a run without, or a side output such as the dead letters, which are not
    /// checkpointed) and whether the run commits periodically.
    pub(crate) fn open(
        sink: &Arc<dyn Sink<T>>,
        partition: Partition,
        checkpoint: Option<(&StageCheckpoint, &str)>,
        commit_cycle: bool,
    ) -> Result<Writers<T>, ConnectorError> {
        if let Some(files) = sink.files() {
            prove_writable(&files.dir, partition)?;
        }
        if let Some(((checkpoint, stage), files)) =
            checkpoint.and_then(|c| Some((c, sink.files()?)))
        {
            return Ok(Writers::Segments(Segments {
                sink: Arc::clone(sink),
                partition,
                pending: checkpoint.pending_dir(stage),
                files,
                every: checkpoint.every(),
                open: BTreeMap::new(),
                report: SinkReport::default(),
            }));
        }
        if let Some(files) = sink.files().filter(|_| commit_cycle) {
            return Rolling::open(Arc::clone(sink), partition, files).map(Writers::Rolling);
        }
        Ok(Writers::One(sink.open(partition)?))
    }

    pub(crate) fn write_at(
        &mut self,
        stamp: u64,
        batch: &mut Vec<Record<T>>,
    ) -> Result<(), ConnectorError> {
        match self {
            Writers::One(w) => w.write_at(stamp, batch),
            Writers::Segments(s) => s.write_at(stamp, batch),
            Writers::Rolling(r) => r.current()?.write_at(stamp, batch),
        }
    }

    fn on_watermark(&mut self, watermark: u64) -> Result<(), ConnectorError> {
        match self {
            Writers::One(w) => w.on_watermark(watermark),
            Writers::Segments(s) => s.close_until(watermark),
            Writers::Rolling(r) => r
                .current
                .as_mut()
                .map_or(Ok(()), |w| w.on_watermark(watermark)),
        }
    }

    /// Makes what was written durable: the writer's commit, or a rolled file.
    pub(crate) fn commit(&mut self) -> Result<(), ConnectorError> {
        match self {
            Writers::One(w) => w.commit(),
            Writers::Segments(_) => Ok(()),
            Writers::Rolling(r) => r.close(),
        }
    }

    pub(crate) fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        match self {
            Writers::One(w) => w.finish(),
            Writers::Segments(s) => {
                s.close_until(u64::MAX)?;
                Ok(std::mem::take(&mut s.report))
            }
            Writers::Rolling(r) => {
                r.close()?;
                Ok(std::mem::take(&mut r.report))
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
            Writers::Rolling(r) => r
                .current
                .as_mut()
                .map_or_else(Vec::new, |w| w.undeliverable()),
        }
    }
}

/// One worker's files of a file sink in a run that commits without checkpoints:
/// `{prefix}-{worker:05}-{n:05}.{ext}`, the first opened at the start; each commit closes the
/// open file, renamed into place, and the next record opens the next.
pub(crate) struct Rolling<T> {
    sink: Arc<dyn Sink<T>>,
    partition: Partition,
    files: FileOutput,
    current: Option<Box<dyn SinkWriter<T>>>,
    rolled: u64,
    report: SinkReport,
}

impl<T: 'static> Rolling<T> {
    /// Opens the worker's first file, numbered after the files earlier runs left in the
    /// directory (so a run started again adds to them), after removing the temporary files
    /// an aborted run of this worker left.
    fn open(
        sink: Arc<dyn Sink<T>>,
        partition: Partition,
        files: FileOutput,
    ) -> Result<Self, ConnectorError> {
        let mine = format!("{}-{:05}-", files.prefix, partition.index);
        let suffix = format!(".{}", files.extension);
        let mut rolled = 0;
        for entry in std::fs::read_dir(&files.dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stale) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) {
                if stale.starts_with(&mine) {
                    let _ = std::fs::remove_file(entry.path());
                }
                continue;
            }
            let n = name
                .strip_prefix(&mine)
                .and_then(|rest| rest.strip_suffix(&suffix))
                .and_then(|n| n.parse::<u64>().ok());
            rolled = rolled.max(n.unwrap_or(0));
        }
        let mut rolling = Rolling {
            sink,
            partition,
            files,
            current: None,
            rolled,
            report: SinkReport::default(),
        };
        rolling.current()?;
        Ok(rolling)
    }

    fn current(&mut self) -> Result<&mut Box<dyn SinkWriter<T>>, ConnectorError> {
        if self.current.is_none() {
            self.rolled += 1;
            let name = format!(
                "{}-{:05}-{:05}.{}",
                self.files.prefix, self.partition.index, self.rolled, self.files.extension
            );
            let writer = self
                .sink
                .open_file(self.partition, &self.files.dir, &name)?;
            self.current = Some(writer);
        }
        Ok(self.current.as_mut().expect("opened above"))
    }

    fn close(&mut self) -> Result<(), ConnectorError> {
        if let Some(mut writer) = self.current.take() {
            let report = writer.finish()?;
            self.report.rows += report.rows;
            self.report.files.extend(report.files);
        }
        Ok(())
    }
}

/// Creates `dir` if missing and proves this worker can write there, before any source reads:
/// a sink that cannot write fails the run at its start, with nothing read or acknowledged.
fn prove_writable(dir: &std::path::Path, partition: Partition) -> Result<(), ConnectorError> {
    let cannot = |e: std::io::Error| {
        ConnectorError::user(format!(
            "cannot write into {}: {e}; give a directory this process can create and write to",
            dir.display()
        ))
        .caused_by(e)
    };
    std::fs::create_dir_all(dir).map_err(cannot)?;
    let probe = dir.join(format!(".eddy-writable-{:05}", partition.index));
    std::fs::write(&probe, b"").map_err(cannot)?;
    std::fs::remove_file(&probe).map_err(cannot)
}

/// One worker's result files of a file sink in a run with checkpoints: the records stamped in
/// `[k * every, (k + 1) * every)` go to the file of interval `k`, written under the checkpoint
/// directory's `pending/` and closed once the watermark passes its end; the coordinator
/// publishes it when the checkpoint at its end completes.
pub(crate) struct Segments<T> {
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
/// (at least once). With a commit cycle ([`crate::durability`]) the sink commits its writer
/// when its frontier has moved and the interval has passed, and holds its durability
/// capability at the frontier it committed; after a stop it finishes once its frontier reaches
/// the stop watermark.
pub(crate) fn sink<T: 'static>(
    input: Records<'_, T>,
    stage: StageContext,
    sink: Arc<dyn Sink<T>>,
    reports: Rc<RefCell<Vec<(String, SinkReport)>>>,
    durable: &ProbeHandle<u64>,
) {
    let checkpoint = stage.checkpoint().cloned();
    let control = Arc::clone(stage.control());
    let commit_every = control.commit_every.filter(|_| checkpoint.is_none());
    let checkpointed = checkpoint.as_ref().map(|c| (c, stage.name()));
    let mut writer = match Writers::open(
        &sink,
        stage.partition(),
        checkpointed,
        commit_every.is_some(),
    ) {
        Ok(writer) => {
            control.sink_opened();
            Some(writer)
        }
        Err(error) => {
            stage.fail(error);
            None
        }
    };
    // Results stamped below the checkpoint resumed from are in the published files already.
    let resumed_at = checkpoint
        .as_ref()
        .and_then(|c| c.restored_at())
        .unwrap_or(0);
    let mut latency = new_histogram();
    let mut merged_at = Instant::now();
    let name = stage.name().to_string();
    let mut watermark = resumed_at;
    let scope = input.scope();
    let durability = input.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Local,
        &name,
        move |durable_cap, info| {
            stage
                .control()
                .register_sink(scope.worker().sync_activator_for(info.address.to_vec()));
            let activator = scope.activator_for(info.address);
            let mut durable_cap = Some(durable_cap);
            let mut committed_at = Instant::now();
            let mut dirty = false;
            let mut stopped = false;
            // Gives the writer up (finished or failed): it writes nothing more.
            let close = move |writer: &mut Option<Writers<T>>| {
                if writer.take().is_some() {
                    control.sink_finished();
                }
            };
            let control = Arc::clone(stage.control());
            move |(input, frontier), _output| {
                input.for_each(|cap, batch| {
                    if stopped {
                        // Finished at the stop: what comes after is not written.
                        batch.clear();
                        return;
                    }
                    let n = batch.len();
                    stage.metrics().add_in(n);
                    let stamp = cap.least().copied().unwrap_or(0);
                    if stamp < resumed_at && !batch.is_empty() {
                        // Every stage sends nothing stamped below the checkpoint it resumed
                        // from (that is downstream already): such records here would be
                        // written twice.
                        stage.fail(ConnectorError {
                            what: format!(
                                "{n} records stamped {stamp} reached the sink after a restore \
                                 from the checkpoint at {resumed_at}; a stage upstream sent them \
                                 again"
                            ),
                            fault: Fault::Internal,
                            source: None,
                        });
                        close(&mut writer);
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
                        dirty |= !batch.is_empty();
                        let written = w.write_at(stamp, batch);
                        stage.reject_all(DeadLetterKind::Delivery, &mut w.undeliverable());
                        if let Err(error) = written {
                            stage.fail(error);
                            close(&mut writer);
                        }
                    }
                    batch.clear();
                });
                if merged_at.elapsed() >= LATENCY_MERGE && !latency.is_empty() {
                    // The run's histogram is read live (the metrics endpoint): hand it what
                    // this sink measured so far.
                    stage.run_metrics().merge_latency(&latency);
                    latency.reset();
                    merged_at = Instant::now();
                }
                let least = frontier.frontier().iter().min().copied();
                if let Some(least) = least.filter(|&l| l > watermark) {
                    stage.gauge().set_watermark(least);
                    if let Some(w) = writer.as_mut() {
                        let advanced = w.on_watermark(least);
                        stage.reject_all(DeadLetterKind::Delivery, &mut w.undeliverable());
                        match advanced {
                            Ok(()) => save_sink_part(&checkpoint, watermark, least),
                            Err(error) => {
                                stage.fail(error);
                                close(&mut writer);
                            }
                        }
                    }
                    watermark = least;
                }
                if let (Some(every), Some(least), Some(cap)) =
                    (commit_every, least, durable_cap.as_mut())
                {
                    if least > *cap.time() && !stopped {
                        let waited = committed_at.elapsed();
                        if !dirty {
                            cap.downgrade(&least);
                        } else if waited < every {
                            activator.activate_after(every - waited);
                        } else if let Some(w) = writer.as_mut() {
                            // Dead letters first: durable before what they go with.
                            let committed = stage.commit_rejects().and_then(|()| w.commit());
                            stage.reject_all(DeadLetterKind::Delivery, &mut w.undeliverable());
                            match committed {
                                Ok(()) => {
                                    cap.downgrade(&least);
                                    committed_at = Instant::now();
                                    dirty = false;
                                }
                                Err(error) => {
                                    stage.fail(error);
                                    close(&mut writer);
                                }
                            }
                        }
                    }
                }
                if !stopped && least.is_some() && control.stop_requested() {
                    match control.stopped_at() {
                        Some(at) if least.is_some_and(|l| l >= at) => {
                            // Everything read before the stop and stamped below the stop
                            // watermark is here or in the state it belongs to: commit. No
                            // checkpoint part: the next run resumes from the last complete one.
                            stopped = true;
                            if let Some(report) = finish_writer(&mut writer, &stage) {
                                reports
                                    .borrow_mut()
                                    .push((stage.name().to_string(), report));
                            }
                            if let (Some(cap), Some(l)) = (durable_cap.as_mut(), least) {
                                cap.downgrade(&l.max(*cap.time()));
                            }
                        }
                        _ => activator.activate_after(STOP_POLL),
                    }
                }
                if frontier.is_empty() {
                    stage.gauge().set_watermark(u64::MAX);
                    if let Some(report) = finish_writer(&mut writer, &stage) {
                        save_sink_part(&checkpoint, watermark, u64::MAX);
                        reports
                            .borrow_mut()
                            .push((stage.name().to_string(), report));
                    }
                    if durable_cap.take().is_some() {
                        stage.run_metrics().merge_latency(&latency);
                    }
                }
            }
        },
    );
    durability.probe_with(durable);
}

/// Finishes a sink's writer, if it has one still: its dead letters committed first, then its
/// output. The report, when it finished; a failure is the stage's.
fn finish_writer<T: 'static>(
    writer: &mut Option<Writers<T>>,
    stage: &StageContext,
) -> Option<SinkReport> {
    let mut w = writer.take()?;
    stage.control().sink_finished();
    let finished = stage.commit_rejects().and_then(|()| w.finish());
    stage.reject_all(DeadLetterKind::Delivery, &mut w.undeliverable());
    finished.map_err(|error| stage.fail(error)).ok()
}

/// A sink's part: empty, it says the sink has closed every file of the intervals up to `to`.
fn save_sink_part(checkpoint: &Option<StageCheckpoint>, from: u64, to: u64) {
    if let Some(c) = checkpoint.as_ref().filter(|c| c.crosses(from, to)) {
        c.save_bytes(from, to, &[]);
    }
}
