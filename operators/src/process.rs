//! Keyed process functions: user code per key, with typed state and event-time timers (Flink's
//! `KeyedProcessFunction`, Bytewax's stateful map).
//!
//! - **Input**: a [`Keyed`] stream of `(key, value)`; values must be `Ord` (ties are broken by
//!   it, see below). Records are exchanged by key: every key lives on one worker.
//! - **What runs**: a [`KeyedProcess`]: [`on_record`](KeyedProcess::on_record) for each record
//!   and [`on_timer`](KeyedProcess::on_timer) for each timer, each with the key's state (a
//!   `State` value, `Default` for a key never seen or cleared) and a [`ProcessContext`] to emit
//!   results, set and delete the key's timers, and clear its state.
//! - **Order**: time advances in steps. A step at time `t` runs once the input frontier (the
//!   watermark) has passed `t`, so every record with event time `t` has arrived; steps run in
//!   increasing `t`. A step first handles the records with event time `t`, in order of value
//!   (`V: Ord`; equal values are interchangeable), then fires the timers set for `t`, key by
//!   key; a timer set for `t` (or earlier) while the step runs fires in the same step, after
//!   the calls before it. So for one key, a timer at `t` fires after its records with event
//!   time `≤ t` and before those with event time `> t`. The calls a key sees, and so its
//!   results, do not depend on how records were batched nor on the number of workers.
//! - **Timers**: event-time timers, at most one per key and time (setting it twice is setting
//!   it once). A timer for a time before the step's time is set for the step's time (it is
//!   already due). Like in Flink, an `on_timer` that always sets a timer for its own time
//!   loops forever.
//! - **Output**: what the calls emit, with event time `t`, the step's time (the record's event
//!   time, or the timer's time), stamped `t`; so it is never late for the stages downstream.
//! - **Late records**: a record whose event time is below its batch's timestamp (the watermark
//!   it arrived at) is late: its step may already have run. It is counted and dropped, or
//!   written to the side output under [`LatePolicy::SideOutput`](eddy_engine::LatePolicy),
//!   with lateness `timestamp − (event time + 1)`. A record with event time equal to or after
//!   its timestamp is never late. Whether a record is late depends only on its event time and
//!   its timestamp, so it is the same whatever the number of workers.
//! - **State**: per worker, the keys whose state differs from `State::default()` (a state equal
//!   to the default is removed, so a function that clears its keys' state keeps bounded state),
//!   the pending timers, and the records waiting for their step. The stage's state gauge counts
//!   keys with state plus pending timers; the waiting records are input in flight (as much as
//!   the sources run ahead of the watermark), not counted.
//! - **Checkpoint**: when the frontier crosses a checkpoint boundary, before running the steps
//!   it allows: the states, the timers and the waiting records (with their stamps). Restored
//!   at checkpoint `W`, it keeps the waiting records stamped below `W`, runs the steps as
//!   before, and sends nothing from a step before `W` (sent before the checkpoint). So the
//!   function must be deterministic: the same calls give the same results.
//!
//! The function's `&mut self` is one instance per worker, shared by the keys on that worker:
//! keep per-key data in `State`, or results will depend on the number of workers.

use std::collections::BTreeMap;

use eddy_engine::timely::dataflow::channels::pact::Exchange;
use eddy_engine::timely::dataflow::operators::generic::Operator;
use eddy_engine::timely::dataflow::operators::Capability;
use eddy_engine::{Data, Record, Records, StageContext, Stream};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::keyed::{route, Key, Keyed};
use crate::stamps::IndexedStamps;
use crate::window::{frontier_time, held_until, Out};

/// A user-written stateful function per key, with event-time timers.
///
/// ```
/// use eddy_operators::prelude::*;
///
/// /// Counts each key's records and emits `(key, count)` when the watermark passes the first
/// /// record's time + 1 s; then forgets the key.
/// #[derive(Clone)]
/// struct CountForASecond;
///
/// impl KeyedProcess<u64, u64> for CountForASecond {
///     type State = u64;
///     type Out = (u64, u64);
///     fn on_record(&mut self, _key: &u64, event_time: u64, _value: u64, count: &mut u64,
///                  ctx: &mut ProcessContext<(u64, u64)>) {
///         if *count == 0 {
///             ctx.set_timer(event_time + 1_000);
///         }
///         *count += 1;
///     }
///     fn on_timer(&mut self, key: &u64, _timer: u64, count: &mut u64,
///                 ctx: &mut ProcessContext<(u64, u64)>) {
///         ctx.emit((*key, *count));
///         ctx.clear_state();
///     }
/// }
/// # fn f(s: eddy_engine::Stream<u64>) -> eddy_engine::Stream<(u64, u64)> {
/// s.key_by("by_value", |v: &u64| v % 10).process("counts", CountForASecond)
/// # }
/// ```
pub trait KeyedProcess<K, V>: Clone + Send + Sync + 'static {
    /// The state of one key. A key whose state equals `State::default()` holds nothing.
    type State: Default + PartialEq + Serialize + DeserializeOwned + 'static;
    /// What the function emits.
    type Out: Data;

    /// Handles one record of `key` with event time `event_time`.
    fn on_record(
        &mut self,
        key: &K,
        event_time: u64,
        record: V,
        state: &mut Self::State,
        ctx: &mut ProcessContext<Self::Out>,
    );

    /// Handles a timer of `key` set for `timer_time`, once the watermark has passed it. Does
    /// nothing unless overridden.
    fn on_timer(
        &mut self,
        key: &K,
        timer_time: u64,
        state: &mut Self::State,
        ctx: &mut ProcessContext<Self::Out>,
    ) {
        let _ = (key, timer_time, state, ctx);
    }
}

/// What a [`KeyedProcess`] call can do besides changing its state: emit results, set and
/// delete its key's timers, clear its key's state.
#[derive(Debug)]
pub struct ProcessContext<Out> {
    time: u64,
    out: Vec<Out>,
    timers: Vec<(u64, bool)>,
    clear: bool,
}

impl<Out> ProcessContext<Out> {
    fn new() -> Self {
        ProcessContext {
            time: 0,
            out: Vec::new(),
            timers: Vec::new(),
            clear: false,
        }
    }

    /// Emits `out`. Its event time is the time of the call: the record's event time in
    /// [`KeyedProcess::on_record`], the timer's time in [`KeyedProcess::on_timer`].
    pub fn emit(&mut self, out: Out) {
        self.out.push(out);
    }

    /// Sets a timer for this key at event time `t`: `on_timer` runs once the watermark passes
    /// `t`. A time already passed (before [`Self::watermark`]) means now: it fires in this step.
    pub fn set_timer(&mut self, t: u64) {
        self.timers.push((t, true));
    }

    /// Deletes this key's timer at `t` (with the same rule for passed times as
    /// [`Self::set_timer`]), if it is set.
    pub fn delete_timer(&mut self, t: u64) {
        self.timers.push((t, false));
    }

    /// The time of this call: every record with an earlier event time, and every timer at an
    /// earlier time, has been handled. It is the record's event time in `on_record` and the
    /// timer's time in `on_timer` — not the input's frontier, which depends on batching.
    pub fn watermark(&self) -> u64 {
        self.time
    }

    /// Resets this key's state to `State::default()` at the end of this call (discarding what
    /// the call wrote to it), so the key holds nothing. Its timers stay.
    pub fn clear_state(&mut self) {
        self.clear = true;
    }

    fn start(&mut self, time: u64) {
        self.time = time;
        self.clear = false;
    }
}

impl<K: Key, V: Data + Ord> Keyed<K, V> {
    /// Runs `f` per key: [`KeyedProcess::on_record`] for each record, in event-time order, and
    /// [`KeyedProcess::on_timer`] when the watermark passes a timer (see [the module
    /// docs](crate::process) for the exact order).
    pub fn process<P: KeyedProcess<K, V>>(self, name: &str, f: P) -> Stream<P::Out> {
        self.stream
            .stage(
                name,
                "process",
                "keyed process".into(),
                move |input, stage| process_records(input, stage, f.clone()),
            )
            .exchanged("by key")
            .checkpointed()
    }
}

/// The keyed process operator on a timely stream, for building custom stages: what
/// [`Keyed::process`] runs inside its stage. Reports late records and state size to `stage`.
pub fn process_records<'s, K: Key, V: Data + Ord, P: KeyedProcess<K, V>>(
    input: Records<'s, (K, V)>,
    stage: StageContext,
    mut f: P,
) -> Records<'s, P::Out> {
    let name = stage.name().to_string();
    let by_key = Exchange::new(|r: &Record<(K, V)>| route(&r.1 .0));
    input.unary_frontier(by_key, &name, move |initial, _| {
        let mut keys: KeySpace<K, V, P::State> = KeySpace::default();
        let mut held: Option<Capability<u64>> = None;
        let mut ctx = ProcessContext::new();
        let mut gauge = stage.state_gauge();
        let hold = stage.hold();
        // Per event time, the least stamp of the records waiting for its step.
        let mut stamps = IndexedStamps::tracking(hold.is_active());
        let mut checkpoints = stage.checkpointer();
        keys.resumed_at = checkpoints.resumed_at();
        if keys.resumed_at > 0 {
            let entries = checkpoints.restore(|e: &ProcessEntry<K, V, P::State>| route(e.key()));
            for entry in entries {
                keys.restore(entry);
            }
            held = keys.next_time().map(|t| initial.delayed(&t));
        }
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                let Some(&t) = cap.least() else { return };
                stage.metrics().add_in(data.len());
                let mut earliest = u64::MAX;
                for (event_time, (key, value)) in data.drain(..) {
                    if event_time < t {
                        stage.late(&(&key, &value), event_time, t, event_time.saturating_add(1));
                        continue;
                    }
                    earliest = earliest.min(event_time);
                    stamps.hold(event_time, t);
                    keys.records
                        .entry(event_time)
                        .or_default()
                        .push((key, value, t));
                    keys.waiting += 1;
                }
                if earliest != u64::MAX && held.as_ref().is_none_or(|h| *h.time() > earliest) {
                    held = Some(cap.delayed(&earliest, 0));
                }
            });
            let limit = frontier_time(frontier);
            checkpoints.at_frontier(limit, || keys.snapshot());
            while let Some(now) = keys.next_time().filter(|&now| now < limit) {
                let cap = held
                    .as_mut()
                    .expect("pending records or timers hold a capability; this is a bug in Eddy");
                cap.downgrade(&now);
                let emitted = keys.step(now, &mut f, &mut ctx, output, cap);
                stage.metrics().add_out(emitted);
                if let Some(least) = stamps.take(now) {
                    hold.emitted(now, least);
                }
            }
            hold.waiting(limit, || stamps.least());
            match keys.next_time() {
                Some(next) => {
                    if let Some(h) = held.as_mut() {
                        h.downgrade(&next);
                    }
                }
                None => held = None,
            }
            // The next step (a record's event time or a timer) is the earliest pending result.
            stage
                .gauge()
                .set_next_due(keys.next_time().map(|t| t.saturating_add(1)));
            stage.gauge().set_watermark(held_until(&held, limit));
            gauge.set(keys.states.len() + keys.timer_count);
        }
    })
}

/// One entry of a keyed process stage's checkpoint part.
#[derive(Serialize, Deserialize)]
enum ProcessEntry<K, V, S> {
    /// A key's state.
    State(K, S),
    /// A key's timer.
    Timer(K, u64),
    /// A record waiting for its step: `(key, value, event time, stamp)`.
    Waiting(K, V, u64, u64),
}

impl<K, V, S> ProcessEntry<K, V, S> {
    fn key(&self) -> &K {
        match self {
            ProcessEntry::State(k, _)
            | ProcessEntry::Timer(k, _)
            | ProcessEntry::Waiting(k, ..) => k,
        }
    }
}

/// One worker's keys: their states, their timers, and the records waiting for their step.
struct KeySpace<K, V, S> {
    states: FxHashMap<K, S>,
    timers: BTreeMap<u64, FxHashSet<K>>,
    timer_count: usize,
    /// Waiting records by event time: `(key, value, stamp)`.
    records: BTreeMap<u64, Vec<(K, V, u64)>>,
    waiting: usize,
    /// The checkpoint resumed from (0: none): steps before it sent their results before it.
    resumed_at: u64,
}

impl<K, V, S> Default for KeySpace<K, V, S> {
    fn default() -> Self {
        KeySpace {
            states: FxHashMap::default(),
            timers: BTreeMap::new(),
            timer_count: 0,
            records: BTreeMap::new(),
            waiting: 0,
            resumed_at: 0,
        }
    }
}

/// Which call a step makes.
enum Call<V> {
    Record(V),
    Timer,
}

impl<K: Key, V, S> KeySpace<K, V, S> {
    /// The states, timers and waiting records, for a checkpoint part.
    fn snapshot(&self) -> impl Iterator<Item = ProcessEntry<&K, &V, &S>> + '_ {
        let states = self.states.iter().map(|(k, s)| ProcessEntry::State(k, s));
        let timers = self
            .timers
            .iter()
            .flat_map(|(t, keys)| keys.iter().map(move |k| ProcessEntry::Timer(k, *t)));
        let waiting = self.records.iter().flat_map(|(e, records)| {
            records
                .iter()
                .map(move |(k, v, stamp)| ProcessEntry::Waiting(k, v, *e, *stamp))
        });
        states.chain(timers).chain(waiting)
    }

    /// Puts back an entry of a checkpoint part (records stamped at or after the checkpoint
    /// come again from upstream, and are left out).
    fn restore(&mut self, entry: ProcessEntry<K, V, S>) {
        match entry {
            ProcessEntry::State(k, s) => {
                self.states.insert(k, s);
            }
            ProcessEntry::Timer(k, t) => {
                if self.timers.entry(t).or_default().insert(k) {
                    self.timer_count += 1;
                }
            }
            ProcessEntry::Waiting(k, v, event_time, stamp) => {
                if stamp < self.resumed_at {
                    self.records
                        .entry(event_time)
                        .or_default()
                        .push((k, v, stamp));
                    self.waiting += 1;
                }
            }
        }
    }
}

impl<K: Key, V: Ord, S: Default + PartialEq> KeySpace<K, V, S> {
    /// The time of the next step: the earliest waiting record or timer.
    fn next_time(&self) -> Option<u64> {
        let record = self.records.keys().next().copied();
        let timer = self.timers.keys().next().copied();
        match (record, timer) {
            (Some(r), Some(t)) => Some(r.min(t)),
            (r, t) => r.or(t),
        }
    }

    /// Runs the step at `now`: its records in value order, then its timers until none is left
    /// at `now`. Returns how many results it emitted.
    fn step<P: KeyedProcess<K, V, State = S>>(
        &mut self,
        now: u64,
        f: &mut P,
        ctx: &mut ProcessContext<P::Out>,
        output: &mut Out<'_, P::Out>,
        cap: &Capability<u64>,
    ) -> usize {
        let mut session = output.session(cap);
        let mut emitted = 0;
        // A step before the checkpoint resumed from sent its results before it.
        let sent = now < self.resumed_at;
        let mut give = |ctx: &mut ProcessContext<P::Out>| {
            if sent {
                ctx.out.clear();
                return;
            }
            emitted += ctx.out.len();
            session.give_iterator(ctx.out.drain(..).map(|out| (now, out)));
        };
        if let Some(mut records) = self.records.remove(&now) {
            self.waiting -= records.len();
            records.sort_by(|a, b| a.1.cmp(&b.1));
            for (key, value, _) in records {
                self.call(key, now, Call::Record(value), f, ctx);
                give(ctx);
            }
        }
        while let Some(due) = self.timers.remove(&now) {
            self.timer_count -= due.len();
            for key in due {
                self.call(key, now, Call::Timer, f, ctx);
                give(ctx);
            }
        }
        emitted
    }

    /// One call of the function for `key` at `now`, then its effects on the key's timers and
    /// state. Its results stay in `ctx`.
    fn call<P: KeyedProcess<K, V, State = S>>(
        &mut self,
        key: K,
        now: u64,
        call: Call<V>,
        f: &mut P,
        ctx: &mut ProcessContext<P::Out>,
    ) {
        ctx.start(now);
        let run = |key: &K, state: &mut S, ctx: &mut ProcessContext<P::Out>| match call {
            Call::Record(value) => f.on_record(key, now, value, state, ctx),
            Call::Timer => f.on_timer(key, now, state, ctx),
        };
        match self.states.get_mut(&key) {
            Some(state) => {
                run(&key, state, ctx);
                let empty = ctx.clear || *state == S::default();
                Self::apply_timers(&mut self.timers, &mut self.timer_count, &key, now, ctx);
                if empty {
                    self.states.remove(&key);
                }
            }
            None => {
                let mut state = S::default();
                run(&key, &mut state, ctx);
                Self::apply_timers(&mut self.timers, &mut self.timer_count, &key, now, ctx);
                if !ctx.clear && state != S::default() {
                    self.states.insert(key, state);
                }
            }
        }
    }

    /// Applies the timer changes of one call, in the order the call made them.
    fn apply_timers<O>(
        timers: &mut BTreeMap<u64, FxHashSet<K>>,
        count: &mut usize,
        key: &K,
        now: u64,
        ctx: &mut ProcessContext<O>,
    ) {
        for (t, set) in ctx.timers.drain(..) {
            let t = t.max(now);
            if set {
                if timers.entry(t).or_default().insert(key.clone()) {
                    *count += 1;
                }
            } else if let Some(keys) = timers.get_mut(&t) {
                if keys.remove(key) {
                    *count -= 1;
                    if keys.is_empty() {
                        timers.remove(&t);
                    }
                }
            }
        }
    }
}
