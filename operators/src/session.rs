//! Session windows: per key, the records separated by less than a gap of event time.
//!
//! - **Input**: a [`Keyed`] stream of `(key, value)`; records are exchanged by key ([`route`]).
//! - **Sessions**: each record at event time `e` covers `[e, e + gap)`; the records of a key
//!   whose intervals overlap, directly or through a chain of others, form one session
//!   `[first, last + gap)`. Two records of a key are in one session exactly when every step
//!   between consecutive event times is `< gap`; a step of `gap` or more starts a new session.
//!   A record that arrives between two open sessions of its key and overlaps both merges them
//!   (their accumulators are combined with [`Aggregate::merge`]).
//! - **Output**: one [`WindowResult`] per session: the key, `start` = the first record's event
//!   time, `end` = the last record's event time + gap (exclusive, as Flink's `SESSION_END`),
//!   and the aggregate of the session's values. Its event time and timestamp are `end - 1`.
//! - **When it emits**: once per session, when the input frontier (the watermark) reaches the
//!   session's end; the session is then closed for good.
//! - **Late records**: records are handled in timestamp order. A record stamped `W` (the
//!   watermark when it was read) of key `k` at event time `e` is **late** if and only if
//!   1. `e + gap <= W`: a session made of it alone would already be complete; or
//!   2. `e < C`, where `C` is the end of the last session of `k` already emitted (a session
//!      with end `<= W`): it falls into, or would bridge into, a session that was emitted.
//!
//!   A late record is counted and, under
//!   [`LatePolicy::SideOutput`](eddy_engine::LatePolicy), written to the side output (lateness
//!   `W - (e + gap)` for rule 1, `W - C` for rule 2). Every other record joins, or starts, an
//!   open session. Both rules depend only on the record and on records stamped before `W`, so
//!   the output depends neither on the number of workers nor on how records are batched; and
//!   an emitted session never changes. (Rule 1 is per record, like a window's "all its windows
//!   have closed": a record whose own interval has closed is late even when it would reach an
//!   open session through another record — that would make lateness depend on the order of
//!   records within a timestamp and would need the end of every session ever emitted.)
//! - **State**, per worker, for the keys routed to it: the open sessions (start, last event
//!   time, accumulator), and per key the end `C` of its last emitted session for `gap` ms after
//!   that session closed (after that, rule 1 rejects every record rule 2 would). The state
//!   gauge counts open sessions plus such remembered ends; a bounded run ends with 0.
//! - **Checkpoint**: when the frontier crosses a checkpoint boundary, before adding anything
//!   stamped at or after the frontier it had folded up to: the open sessions, the remembered
//!   ends, and the stashed records. Restored at checkpoint `W`, it keeps the stashed records
//!   stamped below `W` and emits no session ending at or before `W` (emitted before it).

use std::collections::BTreeMap;

use eddy_engine::timely::dataflow::channels::pact::Exchange;
use eddy_engine::timely::dataflow::operators::generic::Operator;
use eddy_engine::timely::dataflow::operators::Capability;
use eddy_engine::{Data, Hold, Record, Records, StageContext, Stream};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::keyed::{route, Key, Keyed};
use crate::stamps::Stamps;
use crate::window::{frontier_time, held_until, Out, Stash, WindowResult};

impl<K: Key, V: Data> Keyed<K, V> {
    /// Aggregates each key's values per session: runs of records less than `gap_ms` apart in
    /// event time. Emits once per session when the watermark passes its end (the last
    /// record's event time + `gap_ms`). A `gap_ms` of 0 is taken as 1.
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # fn f(bids: eddy_engine::Stream<(u64, u64)>) -> eddy_engine::Stream<WindowResult<u64, u64>> {
    /// // bids per bidder in each session, a session closing after 10 s without a bid
    /// bids.key_by("by_bidder", |b: &(u64, u64)| b.0)
    ///     .session_window("bid_sessions", 10_000, Count)
    /// # }
    /// ```
    pub fn session_window<A: Aggregate<V>>(
        self,
        name: &str,
        gap_ms: u64,
        agg: A,
    ) -> Stream<WindowResult<K, A::Out>> {
        let gap = gap_ms.max(1);
        self.stream
            .stage(
                name,
                "session_window",
                format!("gap {gap} ms"),
                move |input, stage| sessions(input, stage, gap, agg.clone()),
            )
            .exchanged("by key")
            .checkpointed()
    }
}

/// An open session of one key (its start is the key in [`KeyState::open`]).
struct Open<Acc> {
    /// The event time of its last record.
    last: u64,
    /// The least stamp of its records (0 when restored from a checkpoint).
    stamp: u64,
    acc: Acc,
}

/// What a worker holds for one key.
struct KeyState<Acc> {
    /// Open sessions by start. They are disjoint, so their ends grow with their starts.
    open: BTreeMap<u64, Open<Acc>>,
    /// The end of the last emitted session, while it can still make a record late (rule 2).
    closed_until: Option<u64>,
    /// The live entry of this key in [`Sessions::due`]: at most the earliest open session's end.
    timer: Option<u64>,
}

impl<Acc> KeyState<Acc> {
    fn is_empty(&self) -> bool {
        self.open.is_empty() && self.closed_until.is_none()
    }
}

/// The sessions of the keys one worker owns.
struct Sessions<K, Acc> {
    gap: u64,
    keys: FxHashMap<K, KeyState<Acc>>,
    /// When a key may have a session to emit. An entry is live when it equals the key's
    /// `timer`; others are stale and skipped.
    due: BTreeMap<u64, Vec<K>>,
    /// When a key's remembered end may expire (`closed_until + gap`).
    expiries: BTreeMap<u64, Vec<K>>,
    open_sessions: usize,
    remembered: usize,
    /// The open sessions' stamps, for the stage's hold.
    stamps: Stamps,
}

impl<K: Key, Acc> Sessions<K, Acc> {
    /// The sessions of a stage with gap `gap`, keeping their stamps if `tracking` (its hold is
    /// active).
    fn new(gap: u64, tracking: bool) -> Self {
        Sessions {
            gap,
            keys: FxHashMap::default(),
            due: BTreeMap::new(),
            expiries: BTreeMap::new(),
            open_sessions: 0,
            remembered: 0,
            stamps: Stamps::tracking(tracking),
        }
    }

    /// Entries for the state gauge.
    fn entries(&self) -> usize {
        self.open_sessions + self.remembered
    }

    /// The state as checkpoint entries.
    fn snapshot<'a, V: 'a>(&'a self) -> impl Iterator<Item = SessionEntry<&'a K, &'a V, &'a Acc>> {
        self.keys.iter().flat_map(|(key, state)| {
            let open = state.open.iter().map(move |(start, o)| SessionEntry::Open {
                key,
                start: *start,
                last: o.last,
                acc: &o.acc,
            });
            let closed = state
                .closed_until
                .map(|until| SessionEntry::Closed { key, until });
            open.chain(closed)
        })
    }

    /// Puts back an open session or a remembered end from a checkpoint; [`Self::rearm`] must
    /// follow once every entry is back.
    fn restore<V>(&mut self, entry: SessionEntry<K, V, Acc>) {
        let blank = || KeyState {
            open: BTreeMap::new(),
            closed_until: None,
            timer: None,
        };
        match entry {
            SessionEntry::Open {
                key,
                start,
                last,
                acc,
            } => {
                let state = self.keys.entry(key).or_insert_with(blank);
                state.open.insert(
                    start,
                    Open {
                        last,
                        stamp: 0,
                        acc,
                    },
                );
                self.open_sessions += 1;
                self.stamps.add(0);
            }
            SessionEntry::Closed { key, until } => {
                self.expiries
                    .entry(until.saturating_add(self.gap))
                    .or_default()
                    .push(key.clone());
                let state = self.keys.entry(key).or_insert_with(blank);
                if state.closed_until.replace(until).is_none() {
                    self.remembered += 1;
                }
            }
            SessionEntry::Stashed { .. } => {}
        }
    }

    /// Sets every restored key's timer at its earliest session end.
    fn rearm(&mut self) {
        let gap = self.gap;
        for (key, state) in &mut self.keys {
            if let Some((_, first)) = state.open.iter().next() {
                let end = first.last.saturating_add(gap);
                state.timer = Some(end);
                self.due.entry(end).or_default().push(key.clone());
            }
        }
    }

    /// The earliest time a session may end (a lower bound of every open session's end).
    fn next_due(&self) -> Option<u64> {
        self.due.keys().next().copied()
    }

    /// Adds the records stamped `w` (the frontier has passed `w`, and every session ending at
    /// or before `w` has been emitted).
    fn add<V: Data, A: Aggregate<V, Acc = Acc>>(
        &mut self,
        w: u64,
        records: Vec<Record<(K, V)>>,
        stage: &StageContext,
        agg: &A,
    ) {
        let gap = self.gap;
        for (e, (key, value)) in records {
            let own_end = e.saturating_add(gap);
            if own_end <= w {
                stage.late(&(&key, &value), e, w, own_end);
                continue;
            }
            if let Some(closed) = self.keys.get(&key).and_then(|k| k.closed_until) {
                if e < closed {
                    stage.late(&(&key, &value), e, w, closed);
                    continue;
                }
            }
            let state = self.keys.entry(key.clone()).or_insert_with(|| KeyState {
                open: BTreeMap::new(),
                closed_until: None,
                timer: None,
            });
            // The open sessions `[s, last + gap)` overlapping `[e, e + gap)`: starts below
            // `e + gap`, scanned down while their end is above `e`.
            let overlapping: Vec<u64> = state
                .open
                .range(..own_end)
                .rev()
                .take_while(|(_, o)| o.last.saturating_add(gap) > e)
                .map(|(s, _)| *s)
                .collect();
            let mut acc = agg.create();
            agg.add(&mut acc, value);
            let (mut start, mut last, mut stamp) = (e, e, w);
            for s in overlapping {
                let o = state
                    .open
                    .remove(&s)
                    .expect("an overlapping session was just found; this is a bug in Eddy");
                self.open_sessions -= 1;
                self.stamps.remove(o.stamp);
                start = start.min(s);
                last = last.max(o.last);
                stamp = stamp.min(o.stamp);
                agg.merge(&mut acc, o.acc);
            }
            state.open.insert(start, Open { last, stamp, acc });
            self.open_sessions += 1;
            self.stamps.add(stamp);
            // Merging only moves ends later, so the key's timer stays at or below the earliest
            // end; a new session ending earlier than it needs an earlier timer.
            let end = last.saturating_add(gap);
            if state.timer.is_none_or(|t| end < t) {
                state.timer = Some(end);
                self.due.entry(end).or_default().push(key);
            }
        }
    }

    /// Emits, in order of end, every session ending at or before `limit`, and forgets the
    /// emitted ends that can no longer make a record late.
    #[allow(clippy::too_many_arguments)]
    fn close<V, A: Aggregate<V, Acc = Acc>>(
        &mut self,
        limit: u64,
        resumed_at: u64,
        cap: &mut Option<Capability<u64>>,
        output: &mut Out<'_, WindowResult<K, A::Out>>,
        stage: &StageContext,
        agg: &A,
        hold: &Hold,
    ) {
        let gap = self.gap;
        while let Some(entry) = self.due.first_entry() {
            let t = *entry.key();
            if t > limit {
                break;
            }
            let keys = entry.remove();
            let mut emitted = 0;
            for key in keys {
                let Some(state) = self.keys.get_mut(&key) else {
                    continue;
                };
                if state.timer != Some(t) {
                    continue;
                }
                state.timer = None;
                // The timer is at most the earliest end, so the sessions ending at `t` are
                // the earliest; later ones get the next timer.
                while let Some(first) = state.open.first_entry() {
                    let end = first.get().last.saturating_add(gap);
                    if end > t {
                        state.timer = Some(end);
                        self.due.entry(end).or_default().push(key.clone());
                        break;
                    }
                    let (start, session) = first.remove_entry();
                    self.open_sessions -= 1;
                    self.stamps.remove(session.stamp);
                    hold.emitted(end - 1, session.stamp);
                    // A session ending at or before the checkpoint resumed from was emitted
                    // before it.
                    if end > resumed_at {
                        let cap = cap
                            .as_mut()
                            .expect("an open session holds a capability; this is a bug in Eddy");
                        cap.downgrade(&(end - 1));
                        output.session(cap).give((
                            end - 1,
                            WindowResult {
                                key: key.clone(),
                                start,
                                end,
                                value: agg.finish(session.acc),
                            },
                        ));
                        emitted += 1;
                    }
                    if state.closed_until.replace(end).is_none() {
                        self.remembered += 1;
                    }
                    self.expiries
                        .entry(end.saturating_add(gap))
                        .or_default()
                        .push(key.clone());
                }
            }
            stage.metrics().add_out(emitted);
        }
        while let Some(entry) = self.expiries.first_entry() {
            let t = *entry.key();
            if t > limit {
                break;
            }
            for key in entry.remove() {
                let Some(state) = self.keys.get_mut(&key) else {
                    continue;
                };
                if state
                    .closed_until
                    .is_some_and(|c| c.saturating_add(gap) <= limit)
                {
                    state.closed_until = None;
                    self.remembered -= 1;
                }
                if state.is_empty() {
                    self.keys.remove(&key);
                }
            }
        }
    }
}

/// The session operator on the worker each key routes to: stash records by timestamp; once the
/// frontier passes a timestamp, emit the sessions ending at or before it, then add its records;
/// emit every session the frontier has reached.
fn sessions<'s, K: Key, V: Data, A: Aggregate<V>>(
    input: Records<'s, (K, V)>,
    stage: StageContext,
    gap: u64,
    agg: A,
) -> Records<'s, WindowResult<K, A::Out>> {
    let name = stage.name().to_string();
    let by_key = Exchange::new(|r: &Record<(K, V)>| route(&r.1 .0));
    input.unary_frontier(by_key, &name, move |initial, _| {
        let mut stash: Stash<(K, V)> = Stash::default();
        let hold = stage.hold();
        let mut sessions: Sessions<K, A::Acc> = Sessions::new(gap, hold.is_active());
        let mut gauge = stage.state_gauge_of::<(K, A::Acc)>();
        // Held at or below every open session's end - 1, to emit it at that time.
        let mut cap: Option<Capability<u64>> = None;
        let mut checkpoints = stage.checkpointer();
        let resumed_at = checkpoints.resumed_at();
        if resumed_at > 0 {
            let entries = checkpoints.restore(|e: &SessionEntry<K, V, A::Acc>| route(e.key()));
            for entry in entries {
                match entry {
                    SessionEntry::Stashed {
                        stamp,
                        event_time,
                        key,
                        value,
                    } => {
                        if stamp < resumed_at {
                            stash.restore(&initial, stamp, (event_time, (key, value)));
                        }
                    }
                    other => sessions.restore(other),
                }
            }
            sessions.rearm();
            cap = sessions.next_due().map(|due| initial.delayed(&(due - 1)));
        }
        move |(input, frontier), output| {
            input.for_each(|c, data| {
                stage.metrics().add_in(data.len());
                stash.absorb(&c, data);
            });
            let limit = frontier_time(frontier);
            checkpoints.at_frontier(limit, || {
                let stashed = stash
                    .before(limit)
                    .map(
                        |(stamp, (event_time, (key, value)))| SessionEntry::Stashed {
                            stamp,
                            event_time: *event_time,
                            key,
                            value,
                        },
                    );
                sessions.snapshot().chain(stashed)
            });
            while let Some((t, c, records)) = stash.pop_passed(limit) {
                sessions.close(t, resumed_at, &mut cap, output, &stage, &agg, &hold);
                sessions.add(t, records, &stage, &agg);
                if let Some(due) = sessions.next_due() {
                    // Every new session ends after `t`, so `c` (at `t`) can reach `due - 1`.
                    if cap.as_ref().is_none_or(|held| *held.time() > due - 1) {
                        cap = Some(c.delayed(&(due - 1)));
                    }
                }
            }
            sessions.close(limit, resumed_at, &mut cap, output, &stage, &agg, &hold);
            hold.waiting(limit, || sessions.stamps.least());
            stage.gauge().set_next_due(sessions.next_due());
            match sessions.next_due() {
                Some(due) => {
                    if let Some(held) = cap.as_mut() {
                        held.downgrade(&(due - 1));
                    }
                }
                None => cap = None,
            }
            stage.gauge().set_watermark(held_until(&cap, limit));
            gauge.set(sessions.entries());
        }
    })
}

/// One entry of a session stage's checkpoint part.
#[derive(Serialize, Deserialize)]
enum SessionEntry<K, V, Acc> {
    /// An open session `[start, last + gap)`.
    Open {
        key: K,
        start: u64,
        last: u64,
        acc: Acc,
    },
    /// The end of the key's last emitted session (late-record rule 2).
    Closed { key: K, until: u64 },
    /// A record stashed under its stamp, not yet added.
    Stashed {
        stamp: u64,
        event_time: u64,
        key: K,
        value: V,
    },
}

impl<K, V, Acc> SessionEntry<K, V, Acc> {
    fn key(&self) -> &K {
        match self {
            SessionEntry::Open { key, .. }
            | SessionEntry::Closed { key, .. }
            | SessionEntry::Stashed { key, .. } => key,
        }
    }
}
