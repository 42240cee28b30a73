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
//! The frontier covers stateless stages exactly. A stateful stage (a window, a join) folds a
//! record into state stamped with the watermark it was read at and emits its effect when the
//! watermark closes the window: without checkpoints, the record is released once the sinks have
//! committed past its stamp, so a crash loses the open windows' state (the graceful stop below
//! does not). Run stateful pipelines over queues with checkpoints where the source supports
//! them.
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
//! delivered again (at least once). With checkpoints, no checkpoint completes after the stop:
//! the next run resumes from the last completed one, exactly once.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use timely::scheduling::SyncActivator;

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
