//! Acknowledgement follows durability, and graceful stops.
//!
//! **The commit cycle.** A source that acknowledges what it reads (a broker message, a webhook
//! request's 2xx, a Kafka offset) must not do so before everything the record produced is
//! durable in the sinks. Without checkpoints, a run whose pipeline reads such a source
//! ([`Source::acknowledges`](crate::Source::acknowledges)) *commits* its sinks every
//! [`Runtime::commit_every`](crate::Runtime::commit_every) (default 1 s): when a sink's input
//! frontier has moved past what it last committed, it makes every record it holds durable
//! ([`SinkWriter::commit`](crate::SinkWriter::commit); a file sink closes its open file,
//! renames it into place and starts the next, `{prefix}-{worker:05}-{n:05}.{ext}`), and then
//! holds a *durability capability* at that frontier on an output of its own. A probe on the
//! sinks' durability outputs sees, through timely's progress tracking, the least durable
//! frontier over every sink of every worker and process; a source reader's records stamped
//! below it are durable wherever they went, and the engine tells the reader
//! ([`SourceReader::released`](crate::SourceReader::released)), which acknowledges them. A run
//! that fails (a sink that cannot write, a connector error) releases nothing more: what was
//! read and not committed is delivered again by the broker on the next run. With checkpoints,
//! sources resume by position and sinks publish per checkpoint (see
//! [`checkpoint`](crate::checkpoint)), and a reader's records are released as soon as the
//! engine has taken them.
//!
//! **Stateful stages hold what they have not emitted.** The sinks' frontier covers stateless
//! stages exactly: a record's effects travel at its stamp or later. A stateful stage (a window,
//! a session, a count window, a windowed join) keeps a record in its state past the frontier
//! and emits its effect later, when the watermark closes its window. Such a stage takes a
//! [`Hold`] ([`StageContext::hold`](crate::StageContext::hold)) and says, on every activation,
//! the least stamp of the records whose effects still wait in its state, and, when it emits,
//! which stamps the emitted results carry: a record stays held until its window has fired *and*
//! the sinks have committed the window's results. One *hold reporter* per worker holds a
//! capability at the least of its stages' holds on an output probed like the sinks'; sources
//! release a poll only below both frontiers, so a crash redelivers every record of a window
//! that had not fired or whose results were not committed (at least once), and a graceful stop
//! releases nothing of the windows still open. State a stage keeps for ever (a keyed process
//! function's values, a dedup's seen set, an updating aggregate, a lookup table) is not
//! covered: its records are released once their immediate effects are committed, and the state
//! itself lives only in memory without checkpoints.
//!
//! **Graceful stop.** [`RunHandle::stop`](crate::RunHandle::stop) (what SIGTERM and SIGINT
//! do in the `eddy` binary) stops every source of the process where it is: its reader reads
//! nothing more and its watermark stays where it was, so no window the watermark has not
//! closed fires. (A reader that has acknowledged records it still holds — a webhook that
//! answered 2xx for what waits in its buffer — first reads them to the end,
//! [`SourceReader::stop`](crate::SourceReader::stop).) Every sink is woken to watch for the
//! end of the stop. Once the sinks' input frontier reaches the least of those watermarks, every
//! record read before the stop and stamped below it has reached the sinks or the state it
//! belongs to: the sinks commit and finish (files renamed into place), the sources release
//! what the sinks hold and acknowledge it, and the run ends with its summary. A record of a
//! source that was ahead of that watermark may be written and still not acknowledged: it is
//! delivered again (at least once). With checkpoints, each source reads on to the next
//! checkpoint boundary and stops there, so the checkpoint at that boundary completes before the
//! run ends and the next run resumes exactly where this one stopped.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source as timely_source;
use timely::dataflow::operators::Probe;
use timely::dataflow::{ProbeHandle, Scope};
use timely::scheduling::{Activator, SyncActivator};

/// The default commit interval of a run whose sources acknowledge.
pub const DEFAULT_COMMIT_EVERY: Duration = Duration::from_secs(1);

/// What every worker of a process shares about stopping and committing.
pub(crate) struct RunControl {
    /// A graceful stop was asked for.
    stop: AtomicBool,
    /// The run stops without reading more or releasing anything (a sink failed to open, a
    /// connector failed).
    abort: AtomicBool,
    /// The least watermark the sources of this process held when they stopped.
    stop_watermark: AtomicU64,
    /// Source readers of this process still reading (not finished, not stopped).
    reading: AtomicUsize,
    /// Sink writers of this process not finished yet.
    sinks_open: AtomicUsize,
    /// Every sink operator of the process, woken when a stop is asked for (a sink whose input
    /// does not move would not look otherwise).
    sinks: Mutex<Vec<SyncActivator>>,
    /// How often sinks commit, when the sources acknowledge and there are no checkpoints.
    pub(crate) commit_every: Option<Duration>,
}

impl RunControl {
    pub(crate) fn new(commit_every: Option<Duration>) -> Arc<Self> {
        Arc::new(RunControl {
            stop: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            stop_watermark: AtomicU64::new(u64::MAX),
            reading: AtomicUsize::new(0),
            sinks_open: AtomicUsize::new(0),
            sinks: Mutex::new(Vec::new()),
            commit_every,
        })
    }

    /// Asks every source of the process to stop where it is, and wakes every sink to watch
    /// for the end of the stop.
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for sink in self
            .sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            // A worker that has ended has nothing left to stop.
            let _ = sink.activate();
        }
    }

    /// A sink operator to wake on a stop.
    pub(crate) fn register_sink(&self, activator: SyncActivator) {
        self.sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(activator);
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Stops the run at once: sources read and release nothing more.
    pub(crate) fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
    }

    pub(crate) fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }

    /// A source reader starts reading.
    pub(crate) fn reader_opened(&self) {
        self.reading.fetch_add(1, Ordering::SeqCst);
    }

    /// A source reader finished (its input ended, or it failed): it holds no watermark back.
    pub(crate) fn reader_finished(&self) {
        self.reading.fetch_sub(1, Ordering::SeqCst);
    }

    /// A source reader stopped, holding `watermark`.
    pub(crate) fn reader_stopped(&self, watermark: u64) {
        self.stop_watermark.fetch_min(watermark, Ordering::SeqCst);
        self.reading.fetch_sub(1, Ordering::SeqCst);
    }

    /// A sink writer of this process was opened.
    pub(crate) fn sink_opened(&self) {
        self.sinks_open.fetch_add(1, Ordering::SeqCst);
    }

    /// A sink writer of this process finished (or failed): it writes nothing more.
    pub(crate) fn sink_finished(&self) {
        self.sinks_open.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether every sink writer of this process has finished.
    pub(crate) fn sinks_finished(&self) -> bool {
        self.sinks_open.load(Ordering::SeqCst) == 0
    }

    /// Once every source of the process has stopped or finished after a stop was asked for:
    /// the least watermark they hold (`u64::MAX`: none holds one).
    pub(crate) fn stopped_at(&self) -> Option<u64> {
        (self.stop_requested() && self.reading.load(Ordering::SeqCst) == 0)
            .then(|| self.stop_watermark.load(Ordering::SeqCst))
    }
}

/// How many emitted results a hold keeps apart before it merges them.
const MAX_EMITTED: usize = 64;

/// How often a hold reporter whose stages emitted results looks whether the sinks committed them.
const HOLD_POLL: Duration = Duration::from_millis(20);

/// A stateful stage's hold on one worker: the records whose effects wait in its state are not
/// released to their sources ([`crate::durability`], "Stateful stages hold what they have not
/// emitted"). Inert (every call does nothing) unless the run has a commit cycle.
#[derive(Default)]
pub struct Hold {
    held: Option<(Rc<Held>, Activator)>,
}

/// What a stage holds: the least stamp waiting in its state, and its emitted results not yet
/// known to be committed.
#[derive(Default)]
struct Held {
    waiting: Cell<u64>,
    /// `(stamp of the results, least stamp of the records they came from)`.
    emitted: RefCell<Vec<(u64, u64)>>,
}

impl Held {
    /// The least stamp held once the sinks are durable below `durable`, dropping the results
    /// committed by then; and whether results wait for the sinks still.
    fn least(&self, durable: u64) -> (u64, bool) {
        let mut emitted = self.emitted.borrow_mut();
        emitted.retain(|&(at, _)| at >= durable);
        let least = emitted.iter().map(|&(_, least)| least).min();
        (
            least.map_or(self.waiting.get(), |l| l.min(self.waiting.get())),
            !emitted.is_empty(),
        )
    }
}

impl Hold {
    /// Whether the run acknowledges through a commit cycle, so that holding matters: a stage may
    /// skip keeping track of stamps when it does not.
    pub fn is_active(&self) -> bool {
        self.held.is_some()
    }

    /// The stage's input frontier is `frontier` and the least stamp of the records whose effects
    /// wait in its state is what `waiting` gives (`None`: nothing waits; called only when the
    /// hold is active): records stamped from the lesser on are held. A stage calls this on
    /// every activation; the value may only grow.
    pub fn waiting(&self, frontier: u64, waiting: impl FnOnce() -> Option<u64>) {
        let Some((held, activator)) = &self.held else {
            return;
        };
        let least = waiting().map_or(frontier, |w| w.min(frontier));
        if held.waiting.replace(least) != least {
            activator.activate();
        }
    }

    /// The stage emitted results stamped `at` from records stamped from `least` on: those stay
    /// held until the sinks have committed past `at`.
    pub fn emitted(&self, at: u64, least: u64) {
        if let Some((held, activator)) = &self.held {
            let mut emitted = held.emitted.borrow_mut();
            let full = emitted.len() >= MAX_EMITTED;
            match emitted.last_mut() {
                // Bounded: past that many, the newest entry grows to cover the next ones.
                Some(last) if full || last.0 >= at => {
                    *last = (last.0.max(at), last.1.min(least));
                }
                _ => emitted.push((at, least)),
            }
            activator.activate();
        }
    }
}

/// The holds of a worker's stateful stages and the reporter that holds a capability at their
/// least; `Holds::default()` (no commit cycle) hands out inert holds.
#[derive(Clone, Default)]
pub(crate) struct Holds {
    registry: Option<Rc<Registry>>,
}

struct Registry {
    held: RefCell<Vec<Rc<Held>>>,
    reporter: RefCell<Option<Activator>>,
}

impl Holds {
    /// Builds the worker's hold reporter: its output, probed by `held`, carries a capability at
    /// the least stamp any stage holds, given that the sinks are durable below `durable`'s
    /// frontier. Stages register while the dataflow is built, before the reporter first runs.
    pub(crate) fn reporter(
        scope: Scope<'_, u64>,
        durable: ProbeHandle<u64>,
        held: &ProbeHandle<u64>,
    ) -> Holds {
        let registry = Rc::new(Registry {
            held: RefCell::new(Vec::new()),
            reporter: RefCell::new(None),
        });
        let stages = Rc::clone(&registry);
        timely_source::<_, CapacityContainerBuilder<Vec<()>>, _, _>(
            scope,
            "holds",
            move |capability, info| {
                let activator = scope.activator_for(info.address);
                *stages.reporter.borrow_mut() = Some(activator.clone());
                let mut capability = Some(capability);
                move |_output| {
                    let durable = least(&durable);
                    let (mut least, mut emitted) = (u64::MAX, false);
                    for held in stages.held.borrow().iter() {
                        let (l, e) = held.least(durable);
                        least = least.min(l);
                        emitted |= e;
                    }
                    if least == u64::MAX {
                        capability = None;
                    } else if let Some(cap) = capability.as_mut().filter(|c| least > *c.time()) {
                        cap.downgrade(&least);
                    }
                    if emitted {
                        activator.activate_after(HOLD_POLL);
                    }
                }
            },
        )
        .probe_with(held);
        Holds {
            registry: Some(registry),
        }
    }

    /// Has the reporter look at its stages' holds again (the sinks may have committed).
    pub(crate) fn wake(&self) {
        if let Some(activator) = self
            .registry
            .as_ref()
            .and_then(|r| r.reporter.borrow().clone())
        {
            activator.activate();
        }
    }

    /// A new stage's hold, holding everything until the stage first says what it waits for.
    pub(crate) fn hold(&self) -> Hold {
        let Some(registry) = &self.registry else {
            return Hold::default();
        };
        let held = Rc::new(Held::default());
        registry.held.borrow_mut().push(Rc::clone(&held));
        let activator = registry
            .reporter
            .borrow()
            .clone()
            .expect("the hold reporter is built before the stages; this is a bug in Eddy");
        Hold {
            held: Some((held, activator)),
        }
    }
}

/// What a source driver needs to release its polls: the sinks' durable frontier, the stages'
/// holds, and the worker's end of run.
#[derive(Clone)]
pub(crate) struct Releases {
    /// The least durable frontier of every sink.
    pub(crate) durable: ProbeHandle<u64>,
    /// The worker's stateful stages' holds.
    pub(crate) holds: Holds,
    /// The least stamp any stateful stage holds ([`Holds::reporter`]).
    pub(crate) held: ProbeHandle<u64>,
    /// Work for the end of the worker's run.
    pub(crate) finishers: crate::pipeline::Finishers,
}

impl Releases {
    /// Records stamped below this are durable wherever they went (`u64::MAX`: all).
    pub(crate) fn frontier(&self) -> u64 {
        self.durable_frontier().min(self.held_frontier())
    }

    /// The least stamp a stateful stage holds (`u64::MAX`: none).
    pub(crate) fn held_frontier(&self) -> u64 {
        least(&self.held)
    }

    fn durable_frontier(&self) -> u64 {
        least(&self.durable)
    }
}

/// A probe's frontier as one time; `u64::MAX` once it is empty.
fn least(probe: &ProbeHandle<u64>) -> u64 {
    probe
        .with_frontier(|f| f.iter().min().copied())
        .unwrap_or(u64::MAX)
}

/// Which polls of a source reader are durable downstream: the stamps of the polls not yet
/// released, in order.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// `(stamp, polls)`: the records of the first `polls` polls were stamped at most `stamp`.
    stamps: std::collections::VecDeque<(u64, u64)>,
    polls: u64,
    released: u64,
}

impl Pending {
    /// One more poll, whose records (if any) were stamped `stamp`.
    pub(crate) fn polled(&mut self, stamp: u64) {
        self.polls += 1;
        match self.stamps.back_mut() {
            Some((last, polls)) if *last == stamp => *polls = self.polls,
            _ => self.stamps.push_back((stamp, self.polls)),
        }
    }

    /// How many polls are durable once every sink is durable below `frontier`, when that is
    /// more than were released before.
    pub(crate) fn release_below(&mut self, frontier: u64) -> Option<u64> {
        let mut upto = None;
        while let Some(&(stamp, polls)) = self.stamps.front() {
            if stamp >= frontier {
                break;
            }
            upto = Some(polls);
            self.stamps.pop_front();
        }
        let upto = upto.filter(|&n| n > self.released)?;
        self.released = upto;
        Some(upto)
    }

    /// Every poll so far, when some were not released yet.
    pub(crate) fn release_all(&mut self) -> Option<u64> {
        self.stamps.clear();
        (self.polls > self.released).then(|| {
            self.released = self.polls;
            self.polls
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_are_released_in_order_below_the_frontier() {
        let mut p = Pending::default();
        p.polled(10);
        p.polled(10);
        p.polled(20);
        p.polled(30);
        assert_eq!(p.release_below(10), None);
        assert_eq!(p.release_below(11), Some(2));
        assert_eq!(p.release_below(11), None);
        assert_eq!(p.release_below(31), Some(4));
        p.polled(30);
        assert_eq!(p.release_all(), Some(5));
        assert_eq!(p.release_all(), None);
    }

    #[test]
    fn the_stop_watermark_is_the_least_of_the_stopped_readers() {
        let c = RunControl::new(None);
        c.reader_opened();
        c.reader_opened();
        c.reader_opened();
        c.request_stop();
        c.reader_stopped(50);
        assert_eq!(c.stopped_at(), None);
        c.reader_finished();
        c.reader_stopped(40);
        assert_eq!(c.stopped_at(), Some(40));
    }
}
