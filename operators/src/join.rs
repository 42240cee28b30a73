//! Joins of two keyed streams that emit final, append-only results: the windowed equi-join, the
//! interval join and the as-of join.
//!
//! - **Input**: two [`Keyed`] streams with the same key type, the *left* (`A`) and the *right*
//!   (`B`). Both are exchanged by the key's [`route`], so equal keys meet on one worker.
//! - **Output**, **state** and **when it emits**, per join:
//!   - [`Keyed::window_join`]: one [`WindowJoined`] per pair of a left and a right record with
//!     equal keys whose event times lie in the same tumbling or hopping window `[start, end)`.
//!     State: per window still open and key, the records of both sides (a record is held once
//!     per open window it belongs to; a record some of whose windows have closed joins only in
//!     the open ones). Emits a window's pairs once both input frontiers reach `end`, with event
//!     time `end - 1` (the window's last instant, as [`window`](crate::window) does).
//!   - [`Keyed::interval_join`]: `(key, a, b)` for every pair with equal keys and
//!     `b.time ∈ [a.time − lower, a.time + upper]`. Emits a pair at once when its second record
//!     arrives (without waiting for the watermark), under that record's timestamp, with event
//!     time `max(a.time, b.time)` (never behind that timestamp, see late records below).
//!     State: the records that may still meet a future record: a left record is dropped once
//!     the right frontier passes `a.time + upper`, a right record once the left frontier passes
//!     `b.time + lower`.
//!   - [`Keyed::asof_join`]: `(key, a, Some(b))` for each left record, where `b` is the right
//!     record with the same key and the latest event time not after `a.time` (ties in time:
//!     the greatest `b`), or `(key, a, None)` when there is none. Emits `a` once the right
//!     frontier passes `a.time` (so every right record at or before it has arrived), with event
//!     time `a.time`. State: the left records waiting for that, and per key the right versions
//!     a future left record may still need: at or before the horizon (the lesser of the left
//!     frontier and the earliest waiting left record), only the latest version is kept, so
//!     the right state is about one version per key; all of it goes once both inputs end.
//! - **Late records**: lateness depends only on a record's event time and its timestamp (the
//!   watermark it arrived at), never on how far the other input or other workers have got, so
//!   the output is the same whatever the worker count and batching.
//!   - Windowed join: as [`window`](crate::window): window `[s, e)` takes a record stamped `t`
//!     iff `t < e`; a record none of whose windows is open is late.
//!   - Interval and as-of joins: a record is late iff its event time is below its timestamp
//!     (as in Flink's interval join). Such a record could have met a record the operator has
//!     already dropped (or, as-of, changed a result already emitted), so whether it matched
//!     would depend on timing; it is refused instead. In exchange, every pair of on-time records
//!     that satisfies the join condition is emitted, exactly once.
//!
//!   Late records are counted and, under
//!   [`LatePolicy::SideOutput`](eddy_engine::LatePolicy), written to the side output.
//! - **Checkpoint**: when the lesser of the two frontiers crosses a checkpoint boundary, the
//!   state above — the fold of the records stamped below the frontier the last part was taken
//!   at: a batch stamped at or after the next boundary waits at a gate until the part is
//!   written — and the batches at the gate, with their stamps. Restored at checkpoint `W`, it
//!   takes the gate's batches stamped below `W` (their results and late records are not sent
//!   again) and sends no result stamped below `W`.
//!
//! The three joins share one driver (`drive`): it exchanges both inputs, hands every batch to
//! the join's state at once (no stash: a record is matched as it arrives), and releases pending
//! results as the frontiers advance.

use std::collections::BTreeMap;

use eddy_engine::timely::dataflow::channels::pact::Exchange;
use eddy_engine::timely::dataflow::operators::generic::Operator;
use eddy_engine::timely::dataflow::operators::Capability;
use eddy_engine::{Data, Hold, Record, Records, StageCheckpoint, StageContext, Stream};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::keyed::{route, Key, Keyed};
use crate::stamps::IndexedStamps;
use crate::window::{frontier_time, held_until, Out, Stash, WindowSpec};

/// A pair of the windowed join: a left and a right record with the same key in one window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowJoined<K, A, B> {
    /// The key both records share.
    pub key: K,
    /// The window's start (ms, inclusive).
    pub start: u64,
    /// The window's end (ms, exclusive).
    pub end: u64,
    /// The left record.
    pub a: A,
    /// The right record.
    pub b: B,
}

impl<K: Key, A: Data + Clone> Keyed<K, A> {
    /// Pairs every record of this stream with every record of `other` that has the same key
    /// and lies in the same window; emits a window's pairs once the watermark of both inputs
    /// passes its end.
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # fn f(people: eddy_engine::Stream<(u64, String)>, auctions: eddy_engine::Stream<(u64, u64)>)
    /// #     -> eddy_engine::Stream<WindowJoined<u64, (u64, String), (u64, u64)>> {
    /// // people who created an auction in the 10 s window they registered in
    /// people
    ///     .key_by("people_by_id", |p: &(u64, String)| p.0)
    ///     .window_join(
    ///         "new_sellers",
    ///         auctions.key_by("auctions_by_seller", |a: &(u64, u64)| a.1),
    ///         WindowSpec::tumbling(10_000),
    ///     )
    /// # }
    /// ```
    pub fn window_join<B: Data + Clone>(
        self,
        name: &str,
        other: Keyed<K, B>,
        spec: WindowSpec,
    ) -> Stream<WindowJoined<K, A, B>> {
        self.stream
            .stage2(
                other.stream,
                name,
                "window_join",
                spec.describe(),
                move |left, right, stage| drive(left, right, stage, WindowJoin::new(spec)),
            )
            .exchanged("by key")
            .checkpointed()
    }

    /// Pairs every record `a` of this stream with every record `b` of `other` that has the same
    /// key and `b.time ∈ [a.time − lower_ms, a.time + upper_ms]`; emits a pair as soon as both
    /// records have arrived, with event time `max(a.time, b.time)`. A record whose event time
    /// is behind the watermark it arrives at is late.
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # fn f(bids: eddy_engine::Stream<(u64, u64)>, clicks: eddy_engine::Stream<(u64, u64)>)
    /// #     -> eddy_engine::Stream<(u64, (u64, u64), (u64, u64))> {
    /// // bids with the clicks of the same user from 5 s before to 1 s after
    /// bids.key_by("bids_by_user", |b: &(u64, u64)| b.0).interval_join(
    ///     "bids_after_clicks",
    ///     clicks.key_by("clicks_by_user", |c: &(u64, u64)| c.0),
    ///     5_000,
    ///     1_000,
    /// )
    /// # }
    /// ```
    pub fn interval_join<B: Data + Clone>(
        self,
        name: &str,
        other: Keyed<K, B>,
        lower_ms: u64,
        upper_ms: u64,
    ) -> Stream<(K, A, B)> {
        self.stream
            .stage2(
                other.stream,
                name,
                "interval_join",
                format!("b.time in [a.time - {lower_ms} ms, a.time + {upper_ms} ms]"),
                move |left, right, stage| {
                    drive(left, right, stage, IntervalJoin::new(lower_ms, upper_ms))
                },
            )
            .exchanged("by key")
            .checkpointed()
    }

    /// Enriches every record `a` of this stream with the latest record of `other` with the same
    /// key and an event time not after `a.time` (the greatest one when several share that
    /// time), or `None`; emits `a` once the watermark of `other` passes `a.time`, with event
    /// time `a.time`. A record whose event time is behind the watermark it arrives at is late.
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # fn f(bids: eddy_engine::Stream<(u64, u64)>, prices: eddy_engine::Stream<(u64, u64)>)
    /// #     -> eddy_engine::Stream<(u64, (u64, u64), Option<(u64, u64)>)> {
    /// // each bid with its auction's reserve price as it stood at the bid's time
    /// bids.key_by("bids_by_auction", |b: &(u64, u64)| b.0).asof_join(
    ///     "bid_reserve",
    ///     prices.key_by("reserves_by_auction", |p: &(u64, u64)| p.0),
    /// )
    /// # }
    /// ```
    pub fn asof_join<B: Data + Clone + Ord>(
        self,
        name: &str,
        other: Keyed<K, B>,
    ) -> Stream<(K, A, Option<B>)> {
        self.stream
            .stage2(
                other.stream,
                name,
                "asof_join",
                "latest b.time <= a.time".to_string(),
                move |left, right, stage| drive(left, right, stage, AsOfJoin::new()),
            )
            .exchanged("by key")
            .checkpointed()
    }
}

/// What a join keeps between batches: the part that differs between the joins. The driver
/// ([`drive`]) calls it; every method runs on the worker the keys route to.
pub(crate) trait JoinState<K, A, B> {
    /// The join's output rows.
    type Out: Data;

    /// Takes a batch of left records stamped `t`: hands the late ones to `late` (with their
    /// event time and the end of the last window they belonged to, or their event time), keeps
    /// the others, and pushes results complete at once to `now` (event times at or after `t`).
    fn left(
        &mut self,
        t: u64,
        batch: &mut Vec<Record<(K, A)>>,
        now: &mut Vec<Record<Self::Out>>,
        late: impl FnMut(&K, &A, u64, u64),
    );

    /// [`Self::left`] for the right input.
    fn right(
        &mut self,
        t: u64,
        batch: &mut Vec<Record<(K, B)>>,
        now: &mut Vec<Record<Self::Out>>,
        late: impl FnMut(&K, &B, u64, u64),
    );

    /// Given the left and right input frontiers (`u64::MAX` once an input has ended): pushes
    /// the pending results they complete to `out`, in order of event time, and drops the state
    /// no future record can need. A pending result is stamped with its event time.
    fn advance(&mut self, left: u64, right: u64, out: &mut Vec<Record<Self::Out>>);

    /// The event time of the earliest pending result. Absorbing a batch stamped `t` adds only
    /// pending results at or after `t`.
    fn next_due(&self) -> Option<u64>;

    /// Entries held in state (records or versions), for the stage's state gauge.
    fn entries(&self) -> usize;

    /// The least stamp of the records held whose effects may still come (`None`: none); the
    /// driver holds it ([`StageContext::hold`]). Versions kept for ever (the as-of join's right
    /// side) are not counted. Kept only once [`Self::track_stamps`] was called.
    fn least_stamp(&self) -> Option<u64>;

    /// Keeps the stamps of the records held from now on (the stage's hold is active).
    fn track_stamps(&mut self);

    /// One entry of the state in a checkpoint part.
    type Entry: Data;

    /// The whole state as entries, for a checkpoint part.
    fn snapshot(&self) -> Vec<Self::Entry>;

    /// Puts back an entry of a checkpoint part.
    fn restore(&mut self, entry: Self::Entry);

    /// The key an entry belongs to (entries are routed by it at another worker count).
    fn entry_key(entry: &Self::Entry) -> &K;
}

/// An entry of a join's checkpoint part: the state's, or a batch held back at the gate.
#[derive(Serialize, Deserialize)]
enum JoinEntry<E, K, A, B> {
    State(E),
    Left(u64, Record<(K, A)>),
    Right(u64, Record<(K, B)>),
}

impl<E, K: Key, A, B> JoinEntry<E, K, A, B> {
    fn key(&self, state_key: impl Fn(&E) -> &K) -> u64 {
        match self {
            JoinEntry::State(e) => route(state_key(e)),
            JoinEntry::Left(_, (_, (k, _))) => route(k),
            JoinEntry::Right(_, (_, (k, _))) => route(k),
        }
    }
}

/// The operator under every join: both inputs exchanged by key; each batch goes to the state
/// as it arrives (results complete at once leave under the batch's capability); after every
/// activation the state releases what the frontiers complete, under one capability held at the
/// earliest pending result.
///
/// With checkpoints the state must be the fold of the records stamped below the last frontier
/// it saved at, so a batch stamped at or after the next checkpoint boundary waits at a gate
/// until the frontier has crossed it and the state is saved (with the gate's batches); a
/// restored join then takes the saved batches stamped below the checkpoint, and sends no result
/// stamped below it (those are downstream already).
pub(crate) fn drive<'s, K, A, B, S>(
    left: Records<'s, (K, A)>,
    right: Records<'s, (K, B)>,
    stage: StageContext,
    mut state: S,
) -> Records<'s, S::Out>
where
    K: Key,
    A: Data + Clone,
    B: Data + Clone,
    S: JoinState<K, A, B> + 'static,
{
    let name = stage.name().to_string();
    let left_by_key = Exchange::new(|r: &Record<(K, A)>| route(&r.1 .0));
    let right_by_key = Exchange::new(|r: &Record<(K, B)>| route(&r.1 .0));
    left.binary_frontier(
        right,
        left_by_key,
        right_by_key,
        &name,
        move |initial, _| {
            let mut held: Option<Capability<u64>> = None;
            let mut gauge = stage.state_gauge();
            let mut holding = Holding::new(stage.hold());
            if holding.hold.is_active() {
                state.track_stamps();
            }
            let mut results: Vec<Record<S::Out>> = Vec::new();
            let checkpoint = stage.checkpoint().cloned();
            let resumed_at = checkpoint
                .as_ref()
                .and_then(|c| c.restored_at())
                .unwrap_or(0);
            let mut gate = Gate::<K, A, B>::default();
            if let Some(c) = checkpoint.as_ref().filter(|_| resumed_at > 0) {
                restore_join(c, resumed_at, &mut state);
                held = state.next_due().map(|due| initial.delayed(&due));
                gate.folded = resumed_at;
            }
            move |(left, left_frontier), (right, right_frontier), output| {
                left.for_each(|cap, batch| {
                    let Some(cap) = cap.retain_least(0) else {
                        return;
                    };
                    stage.metrics().add_in(batch.len());
                    if gate.holds(&checkpoint, *cap.time()) {
                        return gate.left.push(cap, batch);
                    }
                    absorb(
                        &mut state,
                        &cap,
                        batch,
                        &mut held,
                        &mut results,
                        output,
                        &stage,
                        &mut holding,
                        |s, t, b, r, late| s.left(t, b, r, late),
                    );
                });
                right.for_each(|cap, batch| {
                    let Some(cap) = cap.retain_least(0) else {
                        return;
                    };
                    stage.metrics().add_in(batch.len());
                    if gate.holds(&checkpoint, *cap.time()) {
                        return gate.right.push(cap, batch);
                    }
                    absorb(
                        &mut state,
                        &cap,
                        batch,
                        &mut held,
                        &mut results,
                        output,
                        &stage,
                        &mut holding,
                        |s, t, b, r, late| s.right(t, b, r, late),
                    );
                });
                let (left_at, right_at) =
                    (frontier_time(left_frontier), frontier_time(right_frontier));
                if let Some(c) = &checkpoint {
                    let limit = left_at.min(right_at);
                    if c.crosses(gate.folded, limit) {
                        c.save(gate.folded, limit, gate.entries(&state));
                    }
                    gate.folded = gate.folded.max(limit);
                    let open = c.boundary_above(gate.folded);
                    while let Some((cap, mut batch)) = gate.left.pop_before(open) {
                        absorb(
                            &mut state,
                            &cap,
                            &mut batch,
                            &mut held,
                            &mut results,
                            output,
                            &stage,
                            &mut holding,
                            |s, t, b, r, late| s.left(t, b, r, late),
                        );
                    }
                    while let Some((cap, mut batch)) = gate.right.pop_before(open) {
                        absorb(
                            &mut state,
                            &cap,
                            &mut batch,
                            &mut held,
                            &mut results,
                            output,
                            &stage,
                            &mut holding,
                            |s, t, b, r, late| s.right(t, b, r, late),
                        );
                    }
                }
                state.advance(left_at, right_at, &mut results);
                if resumed_at > 0 {
                    results.retain(|(t, _)| *t >= resumed_at);
                }
                holding.emitted_upto(results.last().map(|r| r.0));
                release(&held, &mut results, output, &stage);
                holding.update(left_at.min(right_at), state.least_stamp());
                stage.gauge().set_next_due(state.next_due());
                match state.next_due() {
                    Some(due) => held
                        .as_mut()
                        .expect("a pending join result holds a capability; this is a bug in Eddy")
                        .downgrade(&due),
                    None => held = None,
                }
                stage
                    .gauge()
                    .set_watermark(held_until(&held, left_at.min(right_at)));
                gauge.set(state.entries() + gate.len());
            }
        },
    )
}

/// A batch of one input, stamped `cap`'s time, into the join's state: `side` hands it to the
/// state's method for that input ([`JoinState::left`] or [`JoinState::right`]) with the
/// stage's late-record handler; then the results it completed leave.
#[allow(clippy::too_many_arguments)]
fn absorb<K: Key, X: Serialize, A, B, S: JoinState<K, A, B>>(
    state: &mut S,
    cap: &Capability<u64>,
    batch: &mut Vec<Record<(K, X)>>,
    held: &mut Option<Capability<u64>>,
    results: &mut Vec<Record<S::Out>>,
    output: &mut Out<'_, S::Out>,
    stage: &StageContext,
    holding: &mut Holding,
    side: impl FnOnce(&mut S, u64, &mut Vec<Record<(K, X)>>, &mut Vec<Record<S::Out>>, &Late<'_, K, X>),
) {
    let t = *cap.time();
    let late = |key: &K, x: &X, time: u64, end: u64| stage.late(&(key, x), time, t, end);
    side(state, t, batch, results, &late);
    holding.emitted_upto((!results.is_empty()).then_some(t));
    after_batch(cap, state.next_due(), held, results, output, stage);
}

/// A join's [`Hold`]: records held in state stay held until what the join has sent since is
/// committed. A record leaves the state after its results were sent, stamped at most the
/// greatest stamp sent so far, so when the least stamp held moves up, the records it passed
/// stay held until the sinks have committed past that greatest stamp.
struct Holding {
    hold: Hold,
    /// The greatest stamp of a result sent so far.
    sent: Option<u64>,
    /// What was held after the last activation.
    least: u64,
}

impl Holding {
    fn new(hold: Hold) -> Self {
        Holding {
            hold,
            sent: None,
            least: 0,
        }
    }

    /// Results stamped up to `at` (if any) are sent.
    fn emitted_upto(&mut self, at: Option<u64>) {
        self.sent = self.sent.max(at);
    }

    /// After an activation: the inputs' frontier is `frontier`, the state holds from `least`.
    fn update(&mut self, frontier: u64, least: Option<u64>) {
        let now = least.map_or(frontier, |l| l.min(frontier));
        if now > self.least {
            if let Some(sent) = self.sent {
                self.hold.emitted(sent, self.least);
            }
            self.least = now;
        }
        self.hold.waiting(frontier, || least);
    }
}

/// A join's handler of a late record: `(key, record, event time, end of its last window)`.
type Late<'a, K, X> = dyn Fn(&K, &X, u64, u64) + 'a;

/// Batches a join holds back until its state is saved (see [`drive`]).
struct Gate<K, A, B> {
    left: Stash<(K, A)>,
    right: Stash<(K, B)>,
    /// The frontier the state is the fold up to (the last one saved at).
    folded: u64,
}

impl<K, A, B> Default for Gate<K, A, B> {
    fn default() -> Self {
        Gate {
            left: Stash::default(),
            right: Stash::default(),
            folded: 0,
        }
    }
}

impl<K: Key, A: Data + Clone, B: Data + Clone> Gate<K, A, B> {
    /// Whether a batch stamped `t` must wait: it is at or after the next boundary.
    fn holds(&self, checkpoint: &Option<StageCheckpoint>, t: u64) -> bool {
        checkpoint
            .as_ref()
            .is_some_and(|c| t >= c.boundary_above(self.folded))
    }

    fn len(&self) -> usize {
        self.left.len() + self.right.len()
    }

    /// The part: the state and the held batches.
    fn entries<S: JoinState<K, A, B>>(&self, state: &S) -> Vec<JoinEntry<S::Entry, K, A, B>> {
        let mut entries: Vec<_> = state.snapshot().into_iter().map(JoinEntry::State).collect();
        let lefts = self.left.before(u64::MAX);
        entries.extend(lefts.map(|(t, r)| JoinEntry::Left(t, r.clone())));
        let rights = self.right.before(u64::MAX);
        entries.extend(rights.map(|(t, r)| JoinEntry::Right(t, r.clone())));
        entries
    }
}

/// Restores a join at checkpoint `at`: the state, then the held batches stamped below `at`
/// (their results and late records were sent before the checkpoint: dropped here).
fn restore_join<K: Key, A: Data + Clone, B: Data + Clone, S: JoinState<K, A, B>>(
    checkpoint: &StageCheckpoint,
    at: u64,
    state: &mut S,
) {
    let mut lefts: BTreeMap<u64, Vec<Record<(K, A)>>> = BTreeMap::new();
    let mut rights: BTreeMap<u64, Vec<Record<(K, B)>>> = BTreeMap::new();
    let entries = checkpoint.restore(|e: &JoinEntry<S::Entry, K, A, B>| e.key(S::entry_key));
    for entry in entries {
        match entry {
            JoinEntry::State(e) => state.restore(e),
            JoinEntry::Left(t, r) if t < at => lefts.entry(t).or_default().push(r),
            JoinEntry::Right(t, r) if t < at => rights.entry(t).or_default().push(r),
            JoinEntry::Left(..) | JoinEntry::Right(..) => {}
        }
    }
    let mut sent = Vec::new();
    let ignore = |_: &K, _: &_, _: u64, _: u64| {};
    for (t, mut batch) in lefts {
        state.left(t, &mut batch, &mut sent, ignore);
    }
    for (t, mut batch) in rights {
        state.right(t, &mut batch, &mut sent, |_, _, _, _| {});
    }
}

/// Sends the results a batch completed under the batch's capability, and makes sure a
/// capability is held at the earliest pending result.
fn after_batch<T: Data>(
    cap: &Capability<u64>,
    due: Option<u64>,
    held: &mut Option<Capability<u64>>,
    results: &mut Vec<Record<T>>,
    output: &mut Out<'_, T>,
    stage: &StageContext,
) {
    if !results.is_empty() {
        stage.metrics().add_out(results.len());
        output.session(cap).give_container(results);
        results.clear();
    }
    if let Some(due) = due {
        if held.as_ref().is_none_or(|h| *h.time() > due) {
            assert!(
                due >= *cap.time(),
                "a join result pending before its batch's timestamp; this is a bug in Eddy"
            );
            *held = Some(cap.delayed(&due));
        }
    }
}

/// Sends pending results, in order of event time, each stamped with its event time.
fn release<T: Data>(
    held: &Option<Capability<u64>>,
    results: &mut Vec<Record<T>>,
    output: &mut Out<'_, T>,
    stage: &StageContext,
) {
    if results.is_empty() {
        return;
    }
    stage.metrics().add_out(results.len());
    let held = held
        .as_ref()
        .expect("a released join result had a capability; this is a bug in Eddy");
    let mut results = results.drain(..).peekable();
    while let Some(first) = results.next() {
        let time = first.0;
        let cap = held.delayed(&time);
        let mut session = output.session(&cap);
        session.give(first);
        while let Some(next) = results.next_if(|r| r.0 == time) {
            session.give(next);
        }
    }
}

/// One key's records in one window: the left ones and the right ones.
type Pair<A, B> = (Vec<A>, Vec<B>);

/// The windowed join's state: per open window (by start), per key, the records of each side.
struct WindowJoin<K, A, B> {
    spec: WindowSpec,
    windows: BTreeMap<u64, FxHashMap<K, Pair<A, B>>>,
    entries: usize,
    /// Per window (by start), the least stamp of its records.
    stamps: IndexedStamps,
}

impl<K: Key, A: Clone, B: Clone> WindowJoin<K, A, B> {
    fn new(spec: WindowSpec) -> Self {
        WindowJoin {
            spec,
            windows: BTreeMap::new(),
            entries: 0,
            stamps: IndexedStamps::default(),
        }
    }

    /// Puts each record of a batch stamped `t` into its windows still open (end > `t`), on the
    /// side `side` picks; hands the records with none to `late`.
    fn absorb<V: Clone>(
        &mut self,
        t: u64,
        batch: &mut Vec<Record<(K, V)>>,
        mut late: impl FnMut(&K, &V, u64, u64),
        side: fn(&mut Pair<A, B>) -> &mut Vec<V>,
    ) {
        let (size, slide) = (self.spec.size(), self.spec.slide());
        for (time, (key, value)) in batch.drain(..) {
            let last_end = self.spec.last_end(time);
            if last_end <= t {
                late(&key, &value, time, last_end);
                continue;
            }
            // Window starts from the last one containing `time` down to the first whose end
            // is past both `time` and `t`.
            let mut start = time / slide * slide;
            loop {
                let entry = self
                    .windows
                    .entry(start)
                    .or_default()
                    .entry(key.clone())
                    .or_default();
                side(entry).push(value.clone());
                self.entries += 1;
                self.stamps.hold(start, t);
                match start.checked_sub(slide) {
                    Some(s) if s.saturating_add(size) > time.max(t) => start = s,
                    _ => break,
                }
            }
        }
    }
}

impl<K: Key, A: Data + Clone, B: Data + Clone> JoinState<K, A, B> for WindowJoin<K, A, B> {
    type Out = WindowJoined<K, A, B>;

    fn left(
        &mut self,
        t: u64,
        batch: &mut Vec<Record<(K, A)>>,
        _now: &mut Vec<Record<Self::Out>>,
        late: impl FnMut(&K, &A, u64, u64),
    ) {
        self.absorb(t, batch, late, |e| &mut e.0);
    }

    fn right(
        &mut self,
        t: u64,
        batch: &mut Vec<Record<(K, B)>>,
        _now: &mut Vec<Record<Self::Out>>,
        late: impl FnMut(&K, &B, u64, u64),
    ) {
        self.absorb(t, batch, late, |e| &mut e.1);
    }

    fn advance(&mut self, left: u64, right: u64, out: &mut Vec<Record<Self::Out>>) {
        let watermark = left.min(right);
        let size = self.spec.size();
        while let Some(window) = self.windows.first_entry() {
            let (start, end) = (*window.key(), window.key().saturating_add(size));
            if end > watermark {
                break;
            }
            for (key, (lefts, rights)) in window.remove() {
                self.entries -= lefts.len() + rights.len();
                for a in &lefts {
                    for b in &rights {
                        out.push((
                            end - 1,
                            WindowJoined {
                                key: key.clone(),
                                start,
                                end,
                                a: a.clone(),
                                b: b.clone(),
                            },
                        ));
                    }
                }
            }
        }
        let open = self.windows.keys().next().copied();
        self.stamps.drop_before(open.unwrap_or(u64::MAX));
    }

    fn least_stamp(&self) -> Option<u64> {
        self.stamps.least()
    }

    fn track_stamps(&mut self) {
        self.stamps = IndexedStamps::tracking(true);
    }

    fn next_due(&self) -> Option<u64> {
        let start = *self.windows.keys().next()?;
        Some(start.saturating_add(self.spec.size()) - 1)
    }

    fn entries(&self) -> usize {
        self.entries
    }

    /// A window's records of one key: `(start, key, lefts, rights)`.
    type Entry = (u64, K, Vec<A>, Vec<B>);

    fn snapshot(&self) -> Vec<Self::Entry> {
        let windows = self.windows.iter();
        windows
            .flat_map(|(start, keys)| {
                keys.iter()
                    .map(|(k, (a, b))| (*start, k.clone(), a.clone(), b.clone()))
            })
            .collect()
    }

    fn restore(&mut self, (start, key, lefts, rights): Self::Entry) {
        self.entries += lefts.len() + rights.len();
        let pair = self
            .windows
            .entry(start)
            .or_default()
            .entry(key)
            .or_default();
        pair.0.extend(lefts);
        pair.1.extend(rights);
    }

    fn entry_key(entry: &Self::Entry) -> &K {
        &entry.1
    }
}

/// One input's records for the interval join: per key, by event time, with an index by event
/// time for eviction.
struct Side<K, V> {
    by_key: FxHashMap<K, BTreeMap<u64, Vec<V>>>,
    /// The keys with records at each event time (a key once per record; repeats are harmless).
    by_time: BTreeMap<u64, Vec<K>>,
    entries: usize,
    /// Per event time, the least stamp of its records.
    stamps: IndexedStamps,
}

impl<K: Key, V> Side<K, V> {
    fn new() -> Self {
        Side {
            by_key: FxHashMap::default(),
            by_time: BTreeMap::new(),
            entries: 0,
            stamps: IndexedStamps::default(),
        }
    }

    /// Keeps `value` of `key` at event time `time`, stamped `stamp`.
    fn insert(&mut self, key: K, time: u64, stamp: u64, value: V) {
        self.stamps.hold(time, stamp);
        self.by_time.entry(time).or_default().push(key.clone());
        self.by_key
            .entry(key)
            .or_default()
            .entry(time)
            .or_default()
            .push(value);
        self.entries += 1;
    }

    /// Every record held: `(key, event time, record)`.
    fn records(&self) -> impl Iterator<Item = (&K, u64, &V)> {
        self.by_key.iter().flat_map(|(k, times)| {
            times
                .iter()
                .flat_map(move |(t, values)| values.iter().map(move |v| (k, *t, v)))
        })
    }

    /// The records of `key` with event times in `[from, to]`.
    fn range(&self, key: &K, from: u64, to: u64) -> impl Iterator<Item = (u64, &V)> {
        self.by_key
            .get(key)
            .into_iter()
            .flat_map(move |times| times.range(from..=to))
            .flat_map(|(&time, values)| values.iter().map(move |v| (time, v)))
    }

    /// Drops every record with an event time below `cutoff`.
    fn drop_before(&mut self, cutoff: u64) {
        self.stamps.drop_before(cutoff);
        while let Some(first) = self.by_time.first_entry() {
            if *first.key() >= cutoff {
                break;
            }
            for key in first.remove() {
                let Some(times) = self.by_key.get_mut(&key) else {
                    continue;
                };
                let kept = times.split_off(&cutoff);
                self.entries -= times.values().map(Vec::len).sum::<usize>();
                if kept.is_empty() {
                    self.by_key.remove(&key);
                } else {
                    *times = kept;
                }
            }
        }
    }
}

/// The interval join's state: the records of both sides that may still meet a future record.
struct IntervalJoin<K, A, B> {
    lower: u64,
    upper: u64,
    lefts: Side<K, A>,
    rights: Side<K, B>,
}

impl<K: Key, A, B> IntervalJoin<K, A, B> {
    fn new(lower: u64, upper: u64) -> Self {
        IntervalJoin {
            lower,
            upper,
            lefts: Side::new(),
            rights: Side::new(),
        }
    }
}

/// The first event time a record may still need once the other input's frontier is
/// `frontier`, when it matches records up to `reach` ms after its own time: everything
/// before it can go.
fn keep_from(frontier: u64, reach: u64) -> u64 {
    if frontier == u64::MAX {
        u64::MAX
    } else {
        frontier.saturating_sub(reach)
    }
}

/// One side's batch in the interval join, stamped `t`: each on-time record meets the other
/// side's records of its key with event times in `[time − back, time + ahead]` (`reach` is
/// `(back, ahead)`), each pair made by `pair` with event time the later of the two, and is then
/// kept for the records still to come; a record with event time below `t` is late.
#[allow(clippy::too_many_arguments)]
fn probe_and_keep<K: Key, X, Y, O>(
    t: u64,
    batch: &mut Vec<Record<(K, X)>>,
    own: &mut Side<K, X>,
    other: &Side<K, Y>,
    (back, ahead): (u64, u64),
    pair: impl Fn(&K, &X, &Y) -> O,
    now: &mut Vec<Record<O>>,
    mut late: impl FnMut(&K, &X, u64, u64),
) {
    for (time, (key, x)) in batch.drain(..) {
        if time < t {
            late(&key, &x, time, time);
            continue;
        }
        let (from, to) = (time.saturating_sub(back), time.saturating_add(ahead));
        for (y_time, y) in other.range(&key, from, to) {
            now.push((time.max(y_time), pair(&key, &x, y)));
        }
        own.insert(key, time, t, x);
    }
}

impl<K: Key, A: Data + Clone, B: Data + Clone> JoinState<K, A, B> for IntervalJoin<K, A, B> {
    type Out = (K, A, B);

    fn left(
        &mut self,
        t: u64,
        batch: &mut Vec<Record<(K, A)>>,
        now: &mut Vec<Record<Self::Out>>,
        late: impl FnMut(&K, &A, u64, u64),
    ) {
        let reach = (self.lower, self.upper);
        let pair = |key: &K, a: &A, b: &B| (key.clone(), a.clone(), b.clone());
        probe_and_keep(
            t,
            batch,
            &mut self.lefts,
            &self.rights,
            reach,
            pair,
            now,
            late,
        );
    }

    fn right(
        &mut self,
        t: u64,
        batch: &mut Vec<Record<(K, B)>>,
        now: &mut Vec<Record<Self::Out>>,
        late: impl FnMut(&K, &B, u64, u64),
    ) {
        let reach = (self.upper, self.lower);
        let pair = |key: &K, b: &B, a: &A| (key.clone(), a.clone(), b.clone());
        probe_and_keep(
            t,
            batch,
            &mut self.rights,
            &self.lefts,
            reach,
            pair,
            now,
            late,
        );
    }

    fn advance(&mut self, left: u64, right: u64, _out: &mut Vec<Record<Self::Out>>) {
        // A future right record is on time, so its event time is at least the right frontier:
        // a left record meets none once `a.time + upper` is below it (and symmetrically).
        self.lefts.drop_before(keep_from(right, self.upper));
        self.rights.drop_before(keep_from(left, self.lower));
    }

    fn next_due(&self) -> Option<u64> {
        None
    }

    fn least_stamp(&self) -> Option<u64> {
        match (self.lefts.stamps.least(), self.rights.stamps.least()) {
            (Some(l), Some(r)) => Some(l.min(r)),
            (l, r) => l.or(r),
        }
    }

    fn track_stamps(&mut self) {
        self.lefts.stamps = IndexedStamps::tracking(true);
        self.rights.stamps = IndexedStamps::tracking(true);
    }

    fn entries(&self) -> usize {
        self.lefts.entries + self.rights.entries
    }

    /// A record kept on one side: `(key, event time, left or right record)`.
    type Entry = (K, u64, Result<A, B>);

    fn snapshot(&self) -> Vec<Self::Entry> {
        let lefts = self
            .lefts
            .records()
            .map(|(k, t, a)| (k.clone(), t, Ok(a.clone())));
        let rights = self
            .rights
            .records()
            .map(|(k, t, b)| (k.clone(), t, Err(b.clone())));
        lefts.chain(rights).collect()
    }

    fn restore(&mut self, (key, time, record): Self::Entry) {
        match record {
            Ok(a) => self.lefts.insert(key, time, 0, a),
            Err(b) => self.rights.insert(key, time, 0, b),
        }
    }

    fn entry_key(entry: &Self::Entry) -> &K {
        &entry.0
    }
}

/// The as-of join's state: left records waiting for the right frontier, and right versions.
struct AsOfJoin<K, A, B> {
    waiting: BTreeMap<u64, Vec<(K, A)>>,
    waiting_len: usize,
    /// Per key, the right versions by event time (the greatest record of each time).
    versions: FxHashMap<K, BTreeMap<u64, B>>,
    versions_len: usize,
    /// The keys that received a version at each event time, for pruning.
    touched: BTreeMap<u64, Vec<K>>,
    /// Per event time waiting, the least stamp of its left records.
    stamps: IndexedStamps,
}

impl<K, A, B> AsOfJoin<K, A, B> {
    fn new() -> Self {
        AsOfJoin {
            waiting: BTreeMap::new(),
            waiting_len: 0,
            versions: FxHashMap::default(),
            versions_len: 0,
            touched: BTreeMap::new(),
            stamps: IndexedStamps::default(),
        }
    }
}

impl<K: Key, A: Data + Clone, B: Data + Clone + Ord> JoinState<K, A, B> for AsOfJoin<K, A, B> {
    type Out = (K, A, Option<B>);

    fn left(
        &mut self,
        t: u64,
        batch: &mut Vec<Record<(K, A)>>,
        _now: &mut Vec<Record<Self::Out>>,
        mut late: impl FnMut(&K, &A, u64, u64),
    ) {
        for (time, (key, a)) in batch.drain(..) {
            if time < t {
                late(&key, &a, time, time);
                continue;
            }
            self.waiting.entry(time).or_default().push((key, a));
            self.waiting_len += 1;
            self.stamps.hold(time, t);
        }
    }

    fn right(
        &mut self,
        t: u64,
        batch: &mut Vec<Record<(K, B)>>,
        _now: &mut Vec<Record<Self::Out>>,
        mut late: impl FnMut(&K, &B, u64, u64),
    ) {
        use std::collections::btree_map::Entry;
        for (time, (key, b)) in batch.drain(..) {
            if time < t {
                late(&key, &b, time, time);
                continue;
            }
            match self.versions.entry(key.clone()).or_default().entry(time) {
                Entry::Vacant(v) => {
                    v.insert(b);
                    self.versions_len += 1;
                    self.touched.entry(time).or_default().push(key);
                }
                Entry::Occupied(mut o) => {
                    if b > *o.get() {
                        o.insert(b);
                    }
                }
            }
        }
    }

    fn advance(&mut self, left: u64, right: u64, out: &mut Vec<Record<Self::Out>>) {
        // Every on-time right record at or before `right - 1` has arrived.
        while let Some(first) = self.waiting.first_entry() {
            let time = *first.key();
            if time >= right {
                break;
            }
            for (key, a) in first.remove() {
                self.waiting_len -= 1;
                let b = self
                    .versions
                    .get(&key)
                    .and_then(|times| times.range(..=time).next_back())
                    .map(|(_, b)| b.clone());
                out.push((time, (key, a, b)));
            }
        }
        self.stamps.drop_before(right);
        // Every left record still to be emitted, waiting or future, has a time at or after
        // `horizon`: of the versions at or before it, only the latest can still be the answer.
        let horizon = self.waiting.keys().next().map_or(left, |&t| t.min(left));
        if horizon == u64::MAX {
            self.versions.clear();
            self.touched.clear();
            self.versions_len = 0;
            return;
        }
        while let Some(first) = self.touched.first_entry() {
            if *first.key() > horizon {
                break;
            }
            for key in first.remove() {
                let Some(times) = self.versions.get_mut(&key) else {
                    continue;
                };
                let Some(&latest) = times.range(..=horizon).next_back().map(|(t, _)| t) else {
                    continue;
                };
                let kept = times.split_off(&latest);
                self.versions_len -= times.len();
                *times = kept;
            }
        }
    }

    fn next_due(&self) -> Option<u64> {
        self.waiting.keys().next().copied()
    }

    fn least_stamp(&self) -> Option<u64> {
        self.stamps.least()
    }

    fn track_stamps(&mut self) {
        self.stamps = IndexedStamps::tracking(true);
    }

    fn entries(&self) -> usize {
        self.waiting_len + self.versions_len
    }

    /// `(key, event time, a waiting left record or a right version)`.
    type Entry = (K, u64, Result<A, B>);

    fn snapshot(&self) -> Vec<Self::Entry> {
        let waiting = self
            .waiting
            .iter()
            .flat_map(|(t, records)| records.iter().map(|(k, a)| (k.clone(), *t, Ok(a.clone()))));
        let versions = self
            .versions
            .iter()
            .flat_map(|(k, times)| times.iter().map(|(t, b)| (k.clone(), *t, Err(b.clone()))));
        waiting.chain(versions).collect()
    }

    fn restore(&mut self, (key, time, record): Self::Entry) {
        match record {
            Ok(a) => {
                self.waiting.entry(time).or_default().push((key, a));
                self.waiting_len += 1;
            }
            Err(b) => {
                self.touched.entry(time).or_default().push(key.clone());
                self.versions.entry(key).or_default().insert(time, b);
                self.versions_len += 1;
            }
        }
    }

    fn entry_key(entry: &Self::Entry) -> &K {
        &entry.0
    }
}

#[cfg(test)]
mod tests {
    //! The peak of each join's state over a long run, which the stage's gauge (a current value)
    //! cannot show: the joins' states driven directly, as the operator drives them, through many
    //! windows with the watermark close behind.

    use super::*;

    const KEYS: u64 = 20;
    /// Records per key, side and step.
    const PER_KEY: u64 = 3;
    const STEP: u64 = 100;
    const STEPS: u64 = 1_000;

    /// Feeds `state` `STEPS` steps of `STEP` ms: in step `i`, `PER_KEY` records per key and side
    /// with event times in `[i * STEP, (i + 1) * STEP)`, stamped `i * STEP`, then both frontiers
    /// at `(i + 1) * STEP`. Returns the peak of the state's entries and the output count; checks
    /// that the state is empty once both inputs have ended.
    fn run<S: JoinState<u64, u64, u64>>(mut state: S) -> (usize, usize) {
        let (mut peak, mut emitted) = (0, 0);
        let mut out = Vec::new();
        let no_late = |_: &u64, _: &u64, _: u64, _: u64| panic!("no record here is late");
        for i in 0..STEPS {
            let t = i * STEP;
            let batch = || -> Vec<Record<(u64, u64)>> {
                (0..KEYS * PER_KEY)
                    .map(|n| (t + n * STEP / (KEYS * PER_KEY), (n % KEYS, n)))
                    .collect()
            };
            state.left(t, &mut batch(), &mut out, no_late);
            state.right(t, &mut batch(), &mut out, no_late);
            peak = peak.max(state.entries());
            state.advance(t + STEP, t + STEP, &mut out);
            emitted += out.len();
            out.clear();
        }
        state.advance(u64::MAX, u64::MAX, &mut out);
        assert_eq!(state.entries(), 0, "state left after both inputs ended");
        assert_eq!(state.next_due(), None);
        (peak, emitted + out.len())
    }

    #[test]
    fn window_join_holds_at_most_the_open_windows() {
        // Tumbling: a step's records are one window's.
        let (peak, emitted) = run(WindowJoin::new(WindowSpec::tumbling(STEP)));
        assert_eq!(peak as u64, 2 * KEYS * PER_KEY);
        assert_eq!(emitted as u64, STEPS * KEYS * PER_KEY * PER_KEY);
        // Hopping, 4 windows per record: each record in its windows still open, and only the
        // records of the windows still open (those within `size` of the frontier, and the step
        // just absorbed) are held.
        let spec = WindowSpec::hopping(2 * STEP, STEP / 2);
        let (peak, _) = run(WindowJoin::new(spec));
        let steps_held = (spec.size() + STEP) / STEP;
        assert!(
            peak as u64 <= 4 * steps_held * 2 * KEYS * PER_KEY,
            "peak {peak}"
        );
    }

    #[test]
    fn interval_join_holds_only_what_may_still_match() {
        // A record is kept while the other frontier is at most `reach` past it: at most the
        // records of the current step and of the one before.
        let (peak, emitted) = run(IntervalJoin::new(STEP / 2, STEP / 4));
        assert!(peak as u64 <= 2 * 2 * KEYS * PER_KEY, "peak {peak}");
        assert!(emitted > 0);
    }

    #[test]
    fn asof_join_holds_one_version_per_key_and_the_waiting_records() {
        let (peak, emitted) = run(AsOfJoin::new());
        // After a step: one version per key at or before the horizon, plus the step's records.
        assert!(peak as u64 <= KEYS + 2 * KEYS * PER_KEY, "peak {peak}");
        assert_eq!(emitted as u64, STEPS * KEYS * PER_KEY);
    }
}
