//! The bridge between broker and HTTP clients, which run as tasks on one shared tokio runtime,
//! and the timely workers, which poll sources without blocking.
//!
//! A connector's client task sends each message it receives as a [`Delivery`] into a bounded
//! [`Feed`]; a worker's [`ChannelReader`] takes deliveries out of the matching [`Inbox`],
//! decodes them ([`Format`]), finds their event times ([`EventTimeOf`]) and hands them to the
//! pipeline. The channel is bounded, so when the pipeline falls behind, [`Feed::deliver`] waits,
//! the task stops pulling, and the broker's own flow control takes over (Kafka's fetch queue,
//! AMQP's prefetch window, NATS pull batches, MQTT's in-flight window, the webhook's 429s):
//! memory stays bounded however slow the sink.
//!
//! **Acknowledgements.** Every delivery carries an acknowledgement token `A` (a delivery tag,
//! an offset, the broker's message handle, a webhook request's answer). A reader keeps the
//! tokens of the records each poll returned until the engine *releases* that poll
//! ([`SourceReader::released`]): once every sink has committed what those records produced
//! (see `eddy_engine::durability`), or, in a run with checkpoints, once the engine has taken
//! them. Only then does it send the tokens back to the task, which acknowledges them to the
//! broker (or commits the offsets, or answers the webhook's sender). A record that does not
//! decode is dead-lettered and acknowledged with its poll. Records not released when the
//! process stops — a crash, a failed sink, an abort — are not acknowledged, so the broker
//! delivers them again: at least once.
//!
//! **Stopping.** A reader ends when its task ends the feed ([`Feed::end`], a bounded source),
//! after a record limit shared by all readers of a source ([`StopRule::limit`]), or once no
//! message has come for an idle timeout ([`StopRule::idle_exit`]) while its client, if it can
//! tell, has read all the broker holds ([`Feed::set_caught_up`]); it then reports
//! [`ReadStatus::Done`] (the engine releases its last records once they are committed). When the last reader is dropped the task sees the
//! acknowledgement channel close, finishes its acknowledgements and closes its connection; the
//! reader waits (a few seconds at most) for that, so a process that exits right after a run does
//! not lose acknowledgements.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use eddy_engine::{
    wall_clock_ms, BacklogProbe, ConnectorError, ReadStatus, Record, RecordError, SourceReader,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::event_time::EventTimeOf;
use crate::format::Format;
use crate::lines::{DEFAULT_MAX_RECORD_SIZE, KEPT_OF_OVERSIZED};

/// The tokio runtime every connector's client tasks run on: started on first use, shared by
/// all connectors of the process, with two worker threads (named `eddy-io`).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("eddy-io")
            .enable_all()
            .build()
            .expect("the connectors' tokio runtime starts (threads and an I/O driver)")
    })
}

/// How long a dropped reader waits for its client task to finish acknowledging.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// One message, as a client task hands it to the workers.
#[derive(Debug)]
pub struct Delivery<A> {
    /// The message's bytes.
    pub payload: Vec<u8>,
    /// Where it came from, for dead letters and errors: `partition 3 offset 17`, `queue orders
    /// delivery tag 5`, `POST /orders from 127.0.0.1:50312`.
    pub location: String,
    /// The broker's timestamp of the message (ms since the Unix epoch), when it has one.
    pub timestamp_ms: Option<u64>,
    /// What the task needs to acknowledge the message once it is in the pipeline.
    pub ack: A,
}

enum Event<A> {
    Delivery(Delivery<A>),
    Failed(ConnectorError),
    End,
}

/// Set once the client task has finished (acknowledged everything and closed its connection).
#[derive(Default)]
struct Closed {
    done: Mutex<bool>,
    signal: Condvar,
}

impl Closed {
    fn set(&self) {
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.signal.notify_all();
    }

    fn wait(&self, timeout: Duration) {
        let done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self
            .signal
            .wait_timeout_while(done, timeout, |done| !*done)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// A bounded channel from one client task to the readers of its messages: the task holds the
/// [`Feed`], each reader a clone of the [`Inbox`]. `capacity` bounds the messages waiting.
pub fn channel<A: Send + 'static>(capacity: usize) -> (Feed<A>, Inbox<A>) {
    let (tx, rx) = async_channel::bounded(capacity.max(1));
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let closed = Arc::new(Closed::default());
    let broker_backlog = Arc::new(AtomicU64::new(UNKNOWN_BACKLOG));
    let behind = Arc::new(AtomicBool::new(false));
    let weak_tx = tx.downgrade();
    (
        Feed {
            tx,
            acks: ack_rx,
            closed: Arc::clone(&closed),
            broker_backlog: Arc::clone(&broker_backlog),
            behind: Arc::clone(&behind),
        },
        Inbox {
            weak_tx,
            rx,
            acks: ack_tx,
            closed,
            broker_backlog,
            behind,
        },
    )
}

/// A broker backlog not (yet) reported.
const UNKNOWN_BACKLOG: u64 = u64::MAX;

/// The client task's end of a channel: deliveries go in, acknowledgement tokens come back.
pub struct Feed<A> {
    tx: async_channel::Sender<Event<A>>,
    acks: mpsc::UnboundedReceiver<Vec<A>>,
    closed: Arc<Closed>,
    broker_backlog: Arc<AtomicU64>,
    /// Whether the client says it is behind its broker ([`Feed::set_caught_up`]); a client
    /// that never says is not.
    behind: Arc<AtomicBool>,
}

impl<A> Feed<A> {
    /// Whether the client has read everything its broker holds for it now (a Kafka consumer
    /// at the end of every partition). Once a client has said so, even `false`, its readers
    /// are idle only while it is caught up: a consumer that is still connecting, or behind a
    /// slow broker, has not run out of messages. So neither an idle exit
    /// ([`StopRule::idle_exit`]) nor the engine's idle watermark, which follows the wall clock
    /// ([`SourceReader::caught_up`]), makes late the messages still waiting.
    pub fn set_caught_up(&self, caught_up: bool) {
        self.behind.store(!caught_up, Ordering::Relaxed);
    }

    /// Where the client reports how many messages wait at the broker for it (a Kafka
    /// consumer's lag): the readers add it to what waits in the channel
    /// ([`SourceReader::backlog_probe`]).
    pub fn broker_backlog(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.broker_backlog)
    }
}

impl<A: Send + 'static> Feed<A> {
    /// Hands one message to the readers, waiting while the channel is full (the pipeline is
    /// behind). `false` when every reader is gone: stop consuming.
    pub async fn deliver(&self, delivery: Delivery<A>) -> bool {
        self.tx.send(Event::Delivery(delivery)).await.is_ok()
    }

    /// Hands one message over if there is room now; gives it back when the channel is full
    /// (`Err(Some(..))`) or every reader is gone (`Err(None)`). For sources that answer
    /// "busy" instead of waiting (the webhook's 429).
    pub fn try_deliver(&self, delivery: Delivery<A>) -> Result<(), Option<Delivery<A>>> {
        match self.tx.try_send(Event::Delivery(delivery)) {
            Ok(()) => Ok(()),
            Err(async_channel::TrySendError::Full(Event::Delivery(d))) => Err(Some(d)),
            Err(_) => Err(None),
        }
    }

    /// Whether the channel is full now.
    pub fn is_full(&self) -> bool {
        self.tx.is_full()
    }

    /// How many messages wait in the channel now.
    pub fn backlog(&self) -> usize {
        self.tx.len()
    }

    /// The client failed for good (it gave up reconnecting): the readers fail the run with
    /// `error`, naming the source.
    pub async fn fail(&self, error: ConnectorError) {
        let _ = self.tx.send(Event::Failed(error)).await;
    }

    /// A bounded source has delivered everything: readers end once the channel is drained.
    pub async fn end(&self) {
        let _ = self.tx.send(Event::End).await;
    }

    /// The next batch of tokens to acknowledge; `None` once every reader is gone and every
    /// token has been received (acknowledge nothing more, close the connection, then call
    /// [`Feed::closed`]).
    pub async fn next_acks(&mut self) -> Option<Vec<A>> {
        self.acks.recv().await
    }

    /// Tokens to acknowledge that have already arrived, without waiting.
    pub fn ready_acks(&mut self) -> Vec<A> {
        let mut all = Vec::new();
        while let Ok(mut batch) = self.acks.try_recv() {
            all.append(&mut batch);
        }
        all
    }

    /// Whether every reader is gone.
    pub fn readers_gone(&self) -> bool {
        self.tx.receiver_count() == 0
    }

    /// Tells the readers the task has finished: everything acknowledged, connection closed.
    pub fn closed(&self) {
        self.closed.set();
    }
}

impl<A> Drop for Feed<A> {
    fn drop(&mut self) {
        // A task that ends (or panics) without saying so must not keep a reader waiting.
        self.closed.set();
    }
}

/// A reader's end of a channel. Clones share the channel: several workers may take from one
/// task's messages (each message goes to one of them).
pub struct Inbox<A> {
    rx: async_channel::Receiver<Event<A>>,
    acks: mpsc::UnboundedSender<Vec<A>>,
    closed: Arc<Closed>,
    broker_backlog: Arc<AtomicU64>,
    behind: Arc<AtomicBool>,
    /// For the backlog probe: a weak sender reads the channel's length without keeping a
    /// receiver alive (readers' count says when they are all gone) or the channel open.
    weak_tx: async_channel::WeakSender<Event<A>>,
}

impl<A> Clone for Inbox<A> {
    fn clone(&self) -> Self {
        Inbox {
            rx: self.rx.clone(),
            acks: self.acks.clone(),
            closed: Arc::clone(&self.closed),
            broker_backlog: Arc::clone(&self.broker_backlog),
            behind: Arc::clone(&self.behind),
            weak_tx: self.weak_tx.clone(),
        }
    }
}

impl<A: Send + 'static> Inbox<A> {
    /// Reads the messages waiting: in the channel, plus at the broker when the client reports
    /// it.
    fn backlog_probe(&self) -> BacklogProbe {
        let (tx, at_broker) = (self.weak_tx.clone(), Arc::clone(&self.broker_backlog));
        Arc::new(move || {
            let at_broker = at_broker.load(Ordering::Relaxed);
            let at_broker = if at_broker == UNKNOWN_BACKLOG {
                0
            } else {
                at_broker
            };
            let buffered = tx.upgrade().map_or(0, |tx| tx.len());
            buffered as u64 + at_broker
        })
    }
}

/// When the readers of a source stop: after a number of records over all of them, or after an
/// idle stretch. By default they run until their client ends the feed.
#[derive(Clone, Debug, Default)]
pub struct StopRule {
    remaining: Option<Arc<AtomicU64>>,
    idle_exit: Option<Duration>,
}

impl StopRule {
    /// Run until the client ends the feed.
    pub fn never() -> Self {
        StopRule::default()
    }

    /// Stop once `records` have been read, over every reader sharing this rule (clones share
    /// the count).
    pub fn limit(mut self, records: u64) -> Self {
        self.remaining = Some(Arc::new(AtomicU64::new(records)));
        self
    }

    /// Stop once no message has arrived for `idle` (and the client, if it tells, has caught
    /// up with its broker: see [`Feed::set_caught_up`]).
    pub fn idle_exit(mut self, idle: Duration) -> Self {
        self.idle_exit = Some(idle);
        self
    }

    /// Takes one record from the limit; `false` once it is spent.
    fn take_one(&self) -> bool {
        match &self.remaining {
            None => true,
            Some(left) => left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok(),
        }
    }

    /// How many records the readers may still take under the limit (`None`: no limit).
    /// Sources that answer their senders (the webhook) refuse what would go beyond it.
    pub fn remaining(&self) -> Option<u64> {
        self.remaining
            .as_ref()
            .map(|left| left.load(Ordering::Acquire))
    }

    fn spent(&self) -> bool {
        self.remaining
            .as_ref()
            .is_some_and(|left| left.load(Ordering::Acquire) == 0)
    }
}

/// How a broker source turns messages into records, and when its readers stop: what every
/// broker source is configured with, besides where it reads.
pub struct Decoding<T> {
    /// How messages are encoded (default JSON).
    pub format: Format,
    /// Where records take their event time from (default: arrival).
    pub event_time: EventTimeOf<T>,
    /// When the readers stop (default: never).
    pub stop: StopRule,
    /// The largest message taken, in bytes (default [`DEFAULT_MAX_RECORD_SIZE`], 1 MiB): a
    /// larger one is a dead letter, with its first 4 KiB.
    pub max_record_size: usize,
}

impl<T> Default for Decoding<T> {
    fn default() -> Self {
        Decoding {
            format: Format::Json,
            event_time: EventTimeOf::Arrival,
            stop: StopRule::never(),
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
        }
    }
}

impl<T> Clone for Decoding<T> {
    fn clone(&self) -> Self {
        Decoding {
            format: self.format.clone(),
            event_time: self.event_time.clone(),
            stop: self.stop.clone(),
            max_record_size: self.max_record_size,
        }
    }
}

impl<T: DeserializeOwned + Serialize + 'static> Decoding<T> {
    /// A worker's reader of `inbox`, decoding and stopping as configured.
    pub fn reader<A: Send + 'static>(&self, inbox: Inbox<A>) -> Box<dyn SourceReader<T>> {
        Box::new(self.channel_reader(inbox))
    }

    /// [`Self::reader`], unboxed.
    pub fn channel_reader<A: Send + 'static>(&self, inbox: Inbox<A>) -> ChannelReader<T, A> {
        ChannelReader::new(
            inbox,
            self.format.clone(),
            self.event_time.clone(),
            self.stop.clone(),
        )
        .max_record_size(self.max_record_size)
    }
}

/// The builder methods every broker source shares, over its [`Decoding`].
pub trait BrokerSource<T>: Sized {
    /// The source's decoding settings.
    fn decoding_mut(&mut self) -> &mut Decoding<T>;

    /// Decodes messages as `format` (default JSON).
    fn format(mut self, format: Format) -> Self {
        self.decoding_mut().format = format;
        self
    }

    /// Takes each record's event time as `event_time` says (default: arrival;
    /// [`EventTimeOf::Broker`] is the broker's timestamp of the message, where it has one).
    fn event_time(mut self, event_time: EventTimeOf<T>) -> Self {
        self.decoding_mut().event_time = event_time;
        self
    }

    /// Stops the readers by `stop` (default: never; a record limit, an idle timeout).
    fn stop(mut self, stop: StopRule) -> Self {
        self.decoding_mut().stop = stop;
        self
    }

    /// Takes messages of at most `bytes` (default [`DEFAULT_MAX_RECORD_SIZE`], 1 MiB); a larger
    /// one is a dead letter with its first 4 KiB, and the source goes on.
    fn max_record_size(mut self, bytes: usize) -> Self {
        self.decoding_mut().max_record_size = bytes;
        self
    }
}

/// The reader of a worker that has nothing to read (no partition, not the subscriber): done
/// at once.
pub struct NothingToRead;

impl<T> SourceReader<T> for NothingToRead {
    fn poll(
        &mut self,
        _out: &mut Vec<Record<T>>,
        _max: usize,
        _rejected: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError> {
        Ok(ReadStatus::Done)
    }

    /// Finished before it starts, so any checkpoint has it at its end.
    fn position(&self) -> Option<Vec<u8>> {
        Some(Vec::new())
    }
}

/// Where a reader is in its broker's log, worked out from the acknowledgement tokens of the
/// records it returned: what checkpoints save for sources that can seek (Kafka offsets).
pub trait Tracks<A>: Send {
    /// A record with token `ack` was returned (or rejected): it is behind the position now.
    fn note(&mut self, ack: &A);
    /// The position after every record noted, encoded for [`SourceReader::position`].
    fn position(&self) -> Vec<u8>;

    /// A checkpoint holding the reader at `position` completed ([`SourceReader::committed`]):
    /// what is before it may be forgotten. The default does nothing.
    fn committed(&mut self, position: &[u8]) {
        let _ = position;
    }

    /// The engine released the records with tokens `acks` ([`SourceReader::released`]), just
    /// before the reader sends the tokens to its client task: a source whose position is its
    /// own (a write-ahead log) may record it. The default does nothing.
    fn released(&mut self, acks: &[A]) {
        let _ = acks;
    }
}

/// A worker's reader of a channel: decodes each delivery into `T` and acknowledges what it
/// handed to the pipeline once the engine releases it (see the module docs).
pub struct ChannelReader<T, A> {
    inbox: Option<Inbox<A>>,
    format: Format,
    event_time: EventTimeOf<T>,
    stop: StopRule,
    tracker: Option<Box<dyn Tracks<A>>>,
    /// The tokens of the records each poll returned, by poll number, until the engine releases
    /// them ([`SourceReader::released`]).
    handed: VecDeque<(u64, Vec<A>)>,
    polls: u64,
    max_record_size: usize,
    last_delivery: Instant,
    /// Read what the channel holds now, then finish ([`ChannelReader::drain`]).
    draining: bool,
    finished: bool,
    _marker: PhantomData<fn() -> T>,
}

impl<T, A> ChannelReader<T, A>
where
    T: DeserializeOwned + Serialize + 'static,
    A: Send + 'static,
{
    /// A reader of `inbox`'s messages, decoded as `format`, timed by `event_time`, stopping by
    /// `stop`.
    pub fn new(
        inbox: Inbox<A>,
        format: Format,
        event_time: EventTimeOf<T>,
        stop: StopRule,
    ) -> Self {
        ChannelReader {
            inbox: Some(inbox),
            format,
            event_time,
            stop,
            tracker: None,
            handed: VecDeque::new(),
            polls: 0,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            last_delivery: Instant::now(),
            draining: false,
            finished: false,
            _marker: PhantomData,
        }
    }

    /// The same reader, taking messages of at most `bytes` ([`BrokerSource::max_record_size`]).
    pub fn max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = bytes;
        self
    }

    /// Reads what the channel holds, then finishes: for a source that acknowledged records
    /// before they were read (a webhook's 2xx) and stops taking more.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// The same reader, keeping its position with `tracker` (so it can be checkpointed).
    pub fn tracked(mut self, tracker: impl Tracks<A> + 'static) -> Self {
        self.tracker = Some(Box::new(tracker));
        self
    }

    /// Sends the tokens of the first `polls` polls to the client task, to acknowledge.
    fn acknowledge(&mut self, polls: u64) {
        let mut tokens = Vec::new();
        while self.handed.front().is_some_and(|(poll, _)| *poll <= polls) {
            tokens.extend(self.handed.pop_front().expect("checked").1);
        }
        if let (false, Some(tracker)) = (tokens.is_empty(), &mut self.tracker) {
            tracker.released(&tokens);
        }
        if let (false, Some(inbox)) = (tokens.is_empty(), &self.inbox) {
            // A task that is gone cannot acknowledge; its broker redelivers.
            let _ = inbox.acks.send(tokens);
        }
    }

    fn take(
        &mut self,
        delivery: Delivery<A>,
        out: &mut Vec<Record<T>>,
        rejected: &mut Vec<RecordError>,
    ) {
        let arrival = wall_clock_ms();
        let size = delivery.payload.len();
        let decoded = if size > self.max_record_size {
            Err(format!(
                "the message is {size} bytes, over max_record_size ({} bytes): raise the \
                 limit, or have the producer split it",
                self.max_record_size
            ))
        } else {
            self.format.decode::<T>(&delivery.payload)
        };
        let decoded = decoded.and_then(|record| {
            let time = self
                .event_time
                .of(&record, delivery.timestamp_ms, arrival)?;
            Ok((time, record))
        });
        match decoded {
            Ok(record) => out.push(record),
            Err(message) => {
                let mut raw = delivery.payload;
                if size > self.max_record_size {
                    raw.truncate(KEPT_OF_OVERSIZED);
                }
                rejected.push(RecordError::new(delivery.location, message).with_raw(raw));
            }
        }
        if let Some(tracker) = &mut self.tracker {
            tracker.note(&delivery.ack);
        }
        match self.handed.back_mut() {
            Some((poll, tokens)) if *poll == self.polls => tokens.push(delivery.ack),
            _ => self.handed.push_back((self.polls, vec![delivery.ack])),
        }
    }
}

impl<T, A> SourceReader<T> for ChannelReader<T, A>
where
    T: DeserializeOwned + Serialize + 'static,
    A: Send + 'static,
{
    fn backlog_probe(&self) -> Option<BacklogProbe> {
        self.inbox.as_ref().map(Inbox::backlog_probe)
    }

    fn position(&self) -> Option<Vec<u8>> {
        self.tracker.as_ref().map(|t| t.position())
    }

    fn committed(&mut self, position: &[u8]) {
        if let Some(tracker) = &mut self.tracker {
            tracker.committed(position);
        }
    }

    /// Acknowledges the records of the first `polls` polls: they are durable downstream.
    fn released(&mut self, polls: u64) {
        self.acknowledge(polls);
    }

    /// What the client said ([`Feed::set_caught_up`]); `true` if it never says.
    fn caught_up(&self) -> bool {
        self.inbox
            .as_ref()
            .is_none_or(|inbox| !inbox.behind.load(Ordering::Relaxed))
    }

    fn poll(
        &mut self,
        out: &mut Vec<Record<T>>,
        max: usize,
        rejected: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError> {
        self.polls += 1;
        if self.finished {
            return Ok(ReadStatus::Done);
        }
        let Some(inbox) = self.inbox.clone() else {
            return Ok(ReadStatus::Done);
        };
        let mut took = 0;
        while took < max {
            if self.stop.spent() {
                self.finished = true;
                break;
            }
            match inbox.rx.try_recv() {
                Ok(Event::Delivery(delivery)) => {
                    if !self.stop.take_one() {
                        // Another reader spent the limit first: leave this one unacknowledged,
                        // for the broker to deliver again to whoever reads next.
                        self.finished = true;
                        break;
                    }
                    took += 1;
                    self.take(delivery, out, rejected);
                }
                Ok(Event::Failed(error)) => {
                    self.finished = true;
                    return Err(error);
                }
                Ok(Event::End) | Err(async_channel::TryRecvError::Closed) => {
                    self.finished = true;
                    break;
                }
                Err(async_channel::TryRecvError::Empty) => {
                    self.finished |= self.draining;
                    break;
                }
            }
        }
        let now = Instant::now();
        if took > 0 {
            self.last_delivery = now;
        } else if self
            .stop
            .idle_exit
            .is_some_and(|idle| now.duration_since(self.last_delivery) >= idle)
            && self.caught_up()
        {
            self.finished = true;
        }
        Ok(match (took, self.finished) {
            // Finished: the next poll reports Done (the engine releases the last records once
            // the sinks have committed them).
            (_, true) => ReadStatus::Ready,
            (0, false) => ReadStatus::Idle,
            (_, false) => ReadStatus::Ready,
        })
    }
}

impl<T, A> Drop for ChannelReader<T, A> {
    fn drop(&mut self) {
        if let Some(inbox) = self.inbox.take() {
            let closed = Arc::clone(&inbox.closed);
            let last = inbox.rx.receiver_count() == 1;
            drop(inbox);
            if last {
                closed.wait(CLOSE_WAIT);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Reading {
        ts: u64,
        value: i64,
    }

    fn delivery(i: u64, payload: &str) -> Delivery<u64> {
        Delivery {
            payload: payload.as_bytes().to_vec(),
            location: format!("offset {i}"),
            timestamp_ms: None,
            ack: i,
        }
    }

    fn poll(
        reader: &mut ChannelReader<Reading, u64>,
    ) -> (ReadStatus, Vec<Record<Reading>>, Vec<RecordError>) {
        let (mut out, mut rejected) = (Vec::new(), Vec::new());
        let status = reader.poll(&mut out, 100, &mut rejected).unwrap();
        (status, out, rejected)
    }

    #[test]
    fn deliveries_are_decoded_rejected_and_acknowledged_after_they_were_handed_over() {
        let (mut feed, inbox) = channel::<u64>(8);
        let mut reader = ChannelReader::new(
            inbox,
            Format::Json,
            EventTimeOf::field("ts"),
            StopRule::never(),
        );
        runtime().block_on(async {
            assert!(
                feed.deliver(delivery(1, r#"{"ts": 10, "value": -1}"#))
                    .await
            );
            assert!(feed.deliver(delivery(2, "{broken")).await);
            assert!(feed.deliver(delivery(3, r#"{"value": 3}"#)).await);
        });
        let (status, out, rejected) = poll(&mut reader);
        assert_eq!(status, ReadStatus::Ready);
        assert_eq!(out, vec![(10, Reading { ts: 10, value: -1 })]);
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[0].location, "offset 2");
        assert_eq!(rejected[0].raw, b"{broken");
        assert!(
            rejected[1].message.contains("missing field `ts`"),
            "{}",
            rejected[1].message
        );
        let (status, ..) = poll(&mut reader);
        assert_eq!(status, ReadStatus::Idle);
        assert!(
            feed.ready_acks().is_empty(),
            "nothing is acknowledged before the engine releases it"
        );
        reader.released(1);
        assert_eq!(feed.ready_acks(), vec![1, 2, 3]);
        runtime().block_on(feed.end());
        assert_eq!(poll(&mut reader).0, ReadStatus::Ready);
        assert_eq!(poll(&mut reader).0, ReadStatus::Done);
        // The task's side of a shutdown: it sees the readers gone, then says it has closed,
        // which the dropped reader waits for.
        let task = runtime().spawn(async move {
            let rest = feed.next_acks().await;
            feed.closed();
            rest
        });
        drop(reader);
        assert_eq!(
            runtime().block_on(task).unwrap(),
            None,
            "the reader is gone"
        );
    }

    #[test]
    fn a_shared_limit_stops_every_reader_and_leaves_the_rest_unacknowledged() {
        let (mut feed, inbox) = channel::<u64>(16);
        let stop = StopRule::never().limit(3);
        let mut a = ChannelReader::new(
            inbox.clone(),
            Format::Json,
            EventTimeOf::field("ts"),
            stop.clone(),
        );
        let mut b = ChannelReader::new(inbox, Format::Json, EventTimeOf::field("ts"), stop);
        runtime().block_on(async {
            for i in 0..6 {
                feed.deliver(delivery(i, &format!(r#"{{"ts": {i}, "value": 0}}"#)))
                    .await;
            }
        });
        let (mut out, mut rejected) = (Vec::new(), Vec::new());
        a.poll(&mut out, 2, &mut rejected).unwrap();
        b.poll(&mut out, 100, &mut rejected).unwrap();
        assert_eq!(out.len(), 3);
        // b spent the limit and finished in its first poll; a finds it spent in its next.
        assert_eq!(poll(&mut b).0, ReadStatus::Done);
        assert_eq!(poll(&mut a).0, ReadStatus::Ready);
        assert_eq!(poll(&mut a).0, ReadStatus::Done);
        assert!(feed.ready_acks().is_empty(), "nothing released yet");
        a.released(3);
        b.released(2);
        let mut acked = feed.ready_acks();
        acked.sort();
        assert_eq!(acked, vec![0, 1, 2]);
        assert_eq!(
            feed.backlog(),
            3,
            "the rest wait for the next reader, unacknowledged"
        );
        // The task ends (its feed is dropped), so the readers need not wait for it to close.
        drop(feed);
    }

    #[test]
    fn a_message_over_max_record_size_is_rejected_and_the_next_is_read() {
        let (feed, inbox) = channel::<u64>(8);
        let mut reader = ChannelReader::new(
            inbox,
            Format::Json,
            EventTimeOf::field("ts"),
            StopRule::never(),
        )
        .max_record_size(64);
        let big = format!(r#"{{"ts": 1, "value": 2, "pad": "{}"}}"#, "x".repeat(8000));
        runtime().block_on(async {
            assert!(feed.deliver(delivery(1, &big)).await);
            assert!(feed.deliver(delivery(2, r#"{"ts": 5, "value": 6}"#)).await);
        });
        let (_, out, rejected) = poll(&mut reader);
        assert_eq!(out, vec![(5, Reading { ts: 5, value: 6 })]);
        assert_eq!(rejected.len(), 1);
        assert!(
            rejected[0]
                .message
                .contains("over max_record_size (64 bytes)"),
            "{}",
            rejected[0].message
        );
        assert_eq!(
            rejected[0].raw.len(),
            KEPT_OF_OVERSIZED,
            "the start is kept"
        );
        drop(feed);
    }

    #[test]
    fn an_idle_reader_exits_after_its_timeout() {
        let (feed, inbox) = channel::<u64>(4);
        let stop = StopRule::never().idle_exit(Duration::from_millis(20));
        let mut reader =
            ChannelReader::<Reading, u64>::new(inbox, Format::Json, EventTimeOf::Arrival, stop);
        assert_eq!(poll(&mut reader).0, ReadStatus::Idle);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(poll(&mut reader).0, ReadStatus::Ready);
        assert_eq!(poll(&mut reader).0, ReadStatus::Done);
        drop(feed);
    }

    #[test]
    fn an_idle_reader_waits_for_its_client_to_catch_up() {
        let (feed, inbox) = channel::<u64>(4);
        feed.set_caught_up(false);
        let stop = StopRule::never().idle_exit(Duration::from_millis(20));
        let mut reader =
            ChannelReader::<Reading, u64>::new(inbox, Format::Json, EventTimeOf::Arrival, stop);
        std::thread::sleep(Duration::from_millis(30));
        // Idle past the timeout, but the client is still behind (connecting, slow): go on.
        assert_eq!(poll(&mut reader).0, ReadStatus::Idle);
        feed.set_caught_up(true);
        assert_eq!(poll(&mut reader).0, ReadStatus::Ready);
        assert_eq!(poll(&mut reader).0, ReadStatus::Done);
        drop(feed);
    }
}
