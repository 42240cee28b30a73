//! Deduplication per key: the first record of each key per window, or per time-to-live.
//!
//! **[`Keyed::dedup_window`]** — the first record of each key in each window.
//! - **Input**: a [`Keyed`] stream of `(key, value)`; values are `Ord`.
//! - **Output**: one [`WindowResult`] per key and window holding at least one of its records:
//!   the key, the window, and the first value: the one with the smallest event time, ties to the
//!   smallest value (so it is the same at any worker count). Event time `end - 1`.
//! - **Windows**: a [`WindowSpec`], meant tumbling; with a hopping spec, each window a record
//!   belongs to has its own first record.
//! - **When it emits**: once per key and window, when the watermark reaches the window's end.
//! - **State**: the window operator's: one candidate per key and pane, kept until its windows
//!   fire (see [`window`](crate::window)); the state gauge counts them.
//! - **Late records**: as in windows: a window `[s, e)` takes a record stamped `t` if and only
//!   if `t < e`; a record none of whose windows is open is late (counted, or written to the side
//!   output).
//! - **Checkpoint**: as a window's (phase 2's candidates per key and pane and its stash; see
//!   [`window`](crate::window)).
//!
//! **[`Keyed::dedup_ttl`]** — drop repeats of a key within a time-to-live.
//! - **Input**: a [`Keyed`] stream of `(key, value)`; values are `Ord`.
//! - **Output**: the records that pass, unchanged (their own event time), as a [`Keyed`] stream.
//! - **Rule**: per key, records are taken in order of event time, ties by value. A record at
//!   event time `t` passes unless a record of the same key *passed* at an event time `t'` with
//!   `t' <= t < t' + ttl_ms`. Suppressed records do not extend the time-to-live. With
//!   `ttl_ms = 0` every record passes.
//! - **When it emits**: a record at event time `t` is decided, and emitted stamped `t`, once the
//!   watermark passes `t` (every record it could follow has arrived by then).
//! - **State**: records waiting for the watermark to pass their event time, and per key the
//!   event time of its last passed record, dropped once the watermark reaches that time +
//!   `ttl_ms` (no later record can then be suppressed by it). The state gauge counts both.
//! - **Late records**: a record whose event time is below its timestamp (the watermark it
//!   arrived at) is late: records after it in event time may already have been decided. It is
//!   counted, or written to the side output with lateness `watermark - event time`.
//! - **Checkpoint**: when the frontier crosses a checkpoint boundary, before deciding what it
//!   allows: the waiting records (with their stamps) and each key's last passed time. Restored
//!   at checkpoint `W`, it keeps the waiting records stamped below `W` and sends nothing decided
//!   for an event time below `W` (sent before it).

use std::collections::BTreeMap;

use eddy_engine::timely::dataflow::channels::pact::Exchange;
use eddy_engine::timely::dataflow::operators::generic::Operator;
use eddy_engine::timely::dataflow::operators::vec::Map;
use eddy_engine::timely::dataflow::operators::Capability;
use eddy_engine::{Data, Record, Stream};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::aggregate::ArgMin;
use crate::keyed::{route, Key, Keyed};
use crate::window::{frontier_time, two_phase, WindowResult, WindowSpec};

/// The event time of a `(event time, value)` pair: what [`Keyed::dedup_window`] minimizes.
fn event_time<V>(record: &(u64, V)) -> u64 {
    record.0
}

impl<K: Key, V: Data + Clone + Ord> Keyed<K, V> {
    /// The first record (smallest event time, ties to the smallest value) of each key in each
    /// window, emitted when the watermark passes the window's end. See the [module](self) docs.
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # fn f(clicks: eddy_engine::Stream<(u64, String)>) -> eddy_engine::Stream<WindowResult<u64, (u64, String)>> {
    /// // each user's first click per minute
    /// clicks
    ///     .key_by("by_user", |c: &(u64, String)| c.0)
    ///     .dedup_window("first_clicks", WindowSpec::tumbling(60_000))
    /// # }
    /// ```
    pub fn dedup_window(self, name: &str, spec: WindowSpec) -> Stream<WindowResult<K, V>> {
        self.stream
            .stage(name, "dedup", spec.describe(), move |input, stage| {
                let timed = input.map(|(t, (k, v))| (t, (k, (t, v))));
                let agg = ArgMin::new(event_time::<V> as fn(&(u64, V)) -> u64);
                two_phase(timed, stage, spec, agg).flat_map(|(t, r)| {
                    r.value.map(|(_, value)| {
                        (
                            t,
                            WindowResult {
                                key: r.key,
                                start: r.start,
                                end: r.end,
                                value,
                            },
                        )
                    })
                })
            })
            .exchanged("by key")
            .checkpointed()
    }

    /// Passes a record unless a record of the same key passed within `ttl_ms` before it in
    /// event time; decides each record once the watermark passes its event time. See the
    /// [module](self) docs for the exact rule.
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # fn f(alerts: eddy_engine::Stream<(u64, String)>) -> eddy_engine::Stream<(u64, (u64, String))> {
    /// // at most one alert per host every 5 minutes
    /// alerts
    ///     .key_by("by_host", |a: &(u64, String)| a.0)
    ///     .dedup_ttl("quiet_alerts", 300_000)
    ///     .into_stream()
    /// # }
    /// ```
    pub fn dedup_ttl(self, name: &str, ttl_ms: u64) -> Keyed<K, V> {
        let stream = self
            .stream
            .stage(
                name,
                "dedup",
                format!("ttl {ttl_ms} ms"),
                move |input, stage| {
                    let name = stage.name().to_string();
                    let by_key = Exchange::new(|r: &Record<(K, V)>| route(&r.1 .0));
                    input.unary_frontier(by_key, &name, move |initial, _| {
                        let mut state = TtlState::<K, V>::new(ttl_ms);
                        let mut held: Option<Capability<u64>> = None;
                        let mut gauge = stage.state_gauge();
                        let mut checkpoints = stage.checkpointer();
                        let resumed_at = checkpoints.resumed_at();
                        if resumed_at > 0 {
                            let entries = checkpoints.restore(|e: &TtlEntry<K, V>| route(e.key()));
                            for entry in entries {
                                state.restore(entry, resumed_at);
                            }
                            held = state.next_waiting().map(|t| initial.delayed(&t));
                        }
                        move |(input, frontier), output| {
                            input.for_each(|cap, data| {
                                let Some(&stamp) = cap.least() else { return };
                                stage.metrics().add_in(data.len());
                                for (t, (key, value)) in data.drain(..) {
                                    if t < stamp {
                                        stage.late(&(&key, &value), t, stamp, t);
                                        continue;
                                    }
                                    if held.as_ref().is_none_or(|c| *c.time() > t) {
                                        held = Some(cap.delayed(&t, 0));
                                    }
                                    state.wait(t, stamp, key, value);
                                }
                            });
                            let limit = frontier_time(frontier);
                            checkpoints.at_frontier(limit, || state.snapshot());
                            while let Some((t, passed)) = state.decide_next(limit) {
                                // Decided before the checkpoint resumed from: sent before it.
                                if passed.is_empty() || t < resumed_at {
                                    continue;
                                }
                                let cap = held.as_mut().expect(
                                    "a waiting record holds a capability; this is a bug in Eddy",
                                );
                                cap.downgrade(&t);
                                stage.metrics().add_out(passed.len());
                                output
                                    .session(cap)
                                    .give_iterator(passed.into_iter().map(|kv| (t, kv)));
                            }
                            state.expire(limit);
                            match state.next_waiting() {
                                Some(t) => {
                                    if let Some(c) = held.as_mut() {
                                        c.downgrade(&t);
                                    }
                                }
                                None => held = None,
                            }
                            gauge.set(state.size());
                        }
                    })
                },
            )
            .exchanged("by key")
            .checkpointed();
        Keyed { stream }
    }
}

/// One entry of a [`Keyed::dedup_ttl`] stage's checkpoint part.
#[derive(Serialize, Deserialize)]
enum TtlEntry<K, V> {
    /// A waiting record: `(key, value, event time, stamp)`.
    Waiting(K, V, u64, u64),
    /// A key's last passed event time.
    Last(K, u64),
}

impl<K, V> TtlEntry<K, V> {
    fn key(&self) -> &K {
        match self {
            TtlEntry::Waiting(k, ..) | TtlEntry::Last(k, _) => k,
        }
    }
}

/// The state of [`Keyed::dedup_ttl`] on one worker.
struct TtlState<K, V> {
    ttl: u64,
    /// Records waiting for the frontier to pass their event time, by event time, with their
    /// stamps.
    waiting: BTreeMap<u64, Vec<(K, V, u64)>>,
    /// How many records `waiting` holds.
    waiting_len: usize,
    /// Per key, the event time of its last passed record.
    last: FxHashMap<K, u64>,
    /// Keys by the time their entry in `last` expires (last passed + ttl); an entry whose key
    /// passed again since is stale and skipped.
    expiry: BTreeMap<u64, Vec<K>>,
}

impl<K: Key, V: Ord> TtlState<K, V> {
    fn new(ttl: u64) -> Self {
        TtlState {
            ttl,
            waiting: BTreeMap::new(),
            waiting_len: 0,
            last: FxHashMap::default(),
            expiry: BTreeMap::new(),
        }
    }

    fn wait(&mut self, t: u64, stamp: u64, key: K, value: V) {
        self.waiting.entry(t).or_default().push((key, value, stamp));
        self.waiting_len += 1;
    }

    /// The waiting records and the keys' last passed times, for a checkpoint part.
    fn snapshot(&self) -> impl Iterator<Item = TtlEntry<&K, &V>> {
        let waiting = self.waiting.iter().flat_map(|(t, records)| {
            records
                .iter()
                .map(move |(k, v, stamp)| TtlEntry::Waiting(k, v, *t, *stamp))
        });
        let last = self.last.iter().map(|(k, t)| TtlEntry::Last(k, *t));
        waiting.chain(last)
    }

    /// Puts back an entry of a checkpoint part restored at `at` (records stamped at or after it
    /// come again from upstream).
    fn restore(&mut self, entry: TtlEntry<K, V>, at: u64) {
        match entry {
            TtlEntry::Waiting(k, v, t, stamp) => {
                if stamp < at {
                    self.wait(t, stamp, k, v);
                }
            }
            TtlEntry::Last(k, t) => {
                self.expiry
                    .entry(t.saturating_add(self.ttl))
                    .or_default()
                    .push(k.clone());
                self.last.insert(k, t);
            }
        }
    }

    /// Decides the records of the earliest waiting event time below `limit`, in value order:
    /// returns that time and the records that pass.
    fn decide_next(&mut self, limit: u64) -> Option<(u64, Vec<(K, V)>)> {
        let entry = self.waiting.first_entry()?;
        let t = *entry.key();
        if t >= limit {
            return None;
        }
        let mut records = entry.remove();
        self.waiting_len -= records.len();
        records.sort_by(|a, b| a.1.cmp(&b.1));
        records.retain(|(key, _, _)| {
            let passes = self
                .last
                .get(key)
                .is_none_or(|&last| t.saturating_sub(last) >= self.ttl);
            if passes {
                self.last.insert(key.clone(), t);
                self.expiry
                    .entry(t.saturating_add(self.ttl))
                    .or_default()
                    .push(key.clone());
            }
            passes
        });
        Some((t, records.into_iter().map(|(k, v, _)| (k, v)).collect()))
    }

    /// Forgets keys whose last passed record is `ttl` or more behind the frontier `limit`: every
    /// record still to be decided has an event time at or after `limit`, so passes regardless.
    fn expire(&mut self, limit: u64) {
        while let Some(entry) = self.expiry.first_entry() {
            let at = *entry.key();
            if at > limit {
                break;
            }
            for key in entry.remove() {
                if self
                    .last
                    .get(&key)
                    .is_some_and(|&last| last.saturating_add(self.ttl) == at)
                {
                    self.last.remove(&key);
                }
            }
        }
    }

    fn next_waiting(&self) -> Option<u64> {
        self.waiting.keys().next().copied()
    }

    /// Entries held: waiting records and keys remembered.
    fn size(&self) -> usize {
        self.waiting_len + self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_state_forgets_keys_once_the_watermark_passes_their_ttl() {
        let ttl = 100;
        let mut state = TtlState::<u64, u64>::new(ttl);
        let mut passed = 0;
        for i in 0..10_000u64 {
            // 1000 keys, each seen every 1000 ms: more than the ttl apart, so every record passes
            state.wait(i, i, i % 1_000, 0);
            while let Some((_, records)) = state.decide_next(i + 1) {
                passed += records.len();
            }
            state.expire(i + 1);
            // only keys seen within the last ttl are remembered
            assert!(
                state.size() <= ttl as usize,
                "{} entries at {i}",
                state.size()
            );
        }
        assert_eq!(passed, 10_000);
        state.expire(u64::MAX);
        assert_eq!(state.size(), 0);
        assert!(state.expiry.is_empty());
    }
}
