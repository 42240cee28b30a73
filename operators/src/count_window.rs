//! Count windows: every `n` records of a key, in event-time order, make one window.
//!
//! - **Input**: a [`Keyed`] stream of `(key, value)`; records are exchanged by key ([`route`]).
//!   Values must be ordered (`V: Ord`): records of a key with the same event time are taken in
//!   order of value, so which records share a window does not depend on arrival order.
//! - **Windows**: per key, the records sorted by `(event time, value)` are cut into runs of `n`:
//!   records 1..=n form the first window, n+1..=2n the second, and so on.
//! - **Output**: one [`WindowResult`] per full window: the key, `start` = its first record's
//!   event time, `end` = its last record's event time + 1 (exclusive), and the aggregate of its
//!   values. Its event time and timestamp are the last record's event time (`end - 1`).
//! - **When it emits**: a window is complete once its `n`-th record is known to be the `n`-th,
//!   that is once the input frontier (the watermark) passes that record's event time; it is
//!   emitted then, once. **A partial window at the end of the stream is dropped**, as with
//!   Flink's `countWindow`: a count window fires on its `n`-th record only. (Its records are not
//!   late and are not counted as late.)
//! - **Late records**: records are released into windows in event-time order as the frontier
//!   passes their event time, so a record stamped `W` (the watermark when it was read) is late
//!   if and only if its event time is below `W`: the records before `W` have been released and
//!   counted already. A late record is counted and, under
//!   [`LatePolicy::SideOutput`](eddy_engine::LatePolicy), written to the side output with
//!   lateness `W - event time`. The rule depends only on the record, so the output depends
//!   neither on the number of workers nor on batching.
//! - **State**, per worker, for the keys routed to it: the records not yet released (event time
//!   at or after the frontier), and per key with a partial window its count, first event time
//!   and accumulator. The state gauge counts both; a bounded run ends with 0 (partial windows
//!   are dropped when the input ends). Keys whose last window is partial stay in state until
//!   the input ends: the state grows with the number of such keys.
//! - **Checkpoint**: when the frontier crosses a checkpoint boundary, before taking anything
//!   stamped at or after the frontier it had taken up to: the unreleased records, the partial
//!   windows and the stash. Restored at checkpoint `W`, it keeps the stashed records stamped
//!   below `W` and sends no window completed at an event time below `W` (sent before it).

use std::collections::{btree_map, BTreeMap};

use eddy_engine::timely::dataflow::channels::pact::Exchange;
use eddy_engine::timely::dataflow::operators::generic::Operator;
use eddy_engine::timely::dataflow::operators::Capability;
use eddy_engine::{Data, Hold, Record, Records, StageContext, Stream};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::keyed::{route, Key, Keyed};
use crate::stamps::Stamps;
use crate::window::{frontier_time, Out, Stash, WindowResult};

impl<K: Key, V: Data + Ord> Keyed<K, V> {
    /// Aggregates every `n` records of each key, in order of event time (ties in order of
    /// value); emits a window when the watermark passes its last record. A partial window at
    /// the end of the stream is dropped. An `n` of 0 is taken as 1.
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # fn f(bids: eddy_engine::Stream<(u64, u64)>) -> eddy_engine::Stream<WindowResult<u64, Option<u64>>> {
    /// // the highest of every 10 bids of a bidder
    /// bids.key_by("by_bidder", |b: &(u64, u64)| b.0)
    ///     .count_window("every_10", 10, Max(|b: &(u64, u64)| b.1))
    /// # }
    /// ```
    pub fn count_window<A: Aggregate<V>>(
        self,
        name: &str,
        n: u64,
        agg: A,
    ) -> Stream<WindowResult<K, A::Out>> {
        let n = n.max(1);
        self.stream
            .stage(
                name,
                "count_window",
                format!("every {n} records"),
                move |input, stage| count_windows(input, stage, n, agg.clone()),
            )
            .exchanged("by key")
            .checkpointed()
    }
}

/// A key's window in progress.
struct Partial<Acc> {
    count: u64,
    start: u64,
    /// The least stamp of its records (0 when restored from a checkpoint).
    stamp: u64,
    acc: Acc,
}

/// The count windows of the keys one worker owns.
struct CountWindows<K, V, Acc> {
    n: u64,
    /// Records waiting for the frontier to pass their event time, by event time.
    pending: BTreeMap<u64, Vec<(K, V)>>,
    pending_records: usize,
    /// Per event time pending, the least stamp of its records.
    pending_stamps: BTreeMap<u64, u64>,
    partial: FxHashMap<K, Partial<Acc>>,
    /// The stamps of `pending_stamps` and of the windows in progress, for the stage's hold.
    stamps: Stamps,
    /// The checkpoint resumed from (0: none): windows completed before it were sent before it.
    resumed_at: u64,
}

/// One entry of a count-window stage's checkpoint part.
#[derive(Serialize, Deserialize)]
enum CountEntry<K, V, Acc> {
    /// A record released into its key's window at the next step: `(key, value, event time)`.
    Pending(K, V, u64),
    /// A key's window in progress: `(key, count, start, accumulator)`.
    Partial(K, u64, u64, Acc),
    /// A record stashed under its stamp: `(key, value, event time, stamp)`.
    Stashed(K, V, u64, u64),
}

impl<K, V, Acc> CountEntry<K, V, Acc> {
    fn key(&self) -> &K {
        match self {
            CountEntry::Pending(k, ..)
            | CountEntry::Partial(k, ..)
            | CountEntry::Stashed(k, ..) => k,
        }
    }
}

impl<K: Key, V, Acc> CountWindows<K, V, Acc> {
    /// The pending records and windows in progress, for a checkpoint part (the stash is added
    /// by the caller).
    fn snapshot(&self) -> impl Iterator<Item = CountEntry<&K, &V, &Acc>> {
        let pending = self.pending.iter().flat_map(|(e, records)| {
            records
                .iter()
                .map(move |(k, v)| CountEntry::Pending(k, v, *e))
        });
        let partial = self
            .partial
            .iter()
            .map(|(k, p)| CountEntry::Partial(k, p.count, p.start, &p.acc));
        pending.chain(partial)
    }
}

impl<K: Key, V: Data + Ord, Acc> CountWindows<K, V, Acc> {
    fn entries(&self) -> usize {
        self.pending_records + self.partial.len()
    }

    /// The earliest event time waiting.
    fn next_pending(&self) -> Option<u64> {
        self.pending.keys().next().copied()
    }

    /// Takes the records stamped `w`; those with event time below `w` are late.
    fn add(&mut self, w: u64, records: Vec<Record<(K, V)>>, stage: &StageContext) {
        for (e, (key, value)) in records {
            if e < w {
                stage.late(&(&key, &value), e, w, e);
                continue;
            }
            self.pending.entry(e).or_default().push((key, value));
            self.pending_records += 1;
            if !self.stamps.is_tracking() {
                continue;
            }
            if let btree_map::Entry::Vacant(v) = self.pending_stamps.entry(e) {
                // Records come in order of stamp: the first of an event time is its least.
                v.insert(w);
                self.stamps.add(w);
            }
        }
    }

    /// Releases the records with event time below `limit` into their keys' windows, in order of
    /// event time, then value; emits each window completed, at its last record's event time.
    fn release<A: Aggregate<V, Acc = Acc>>(
        &mut self,
        limit: u64,
        cap: &mut Option<Capability<u64>>,
        output: &mut Out<'_, WindowResult<K, A::Out>>,
        stage: &StageContext,
        agg: &A,
        hold: &Hold,
    ) {
        let mut emitted = 0;
        while let Some(entry) = self.pending.first_entry() {
            let e = *entry.key();
            // An empty frontier (`u64::MAX`) releases everything, `u64::MAX` included.
            if e >= limit && limit != u64::MAX {
                break;
            }
            let mut records = entry.remove();
            self.pending_records -= records.len();
            let stamp = self.pending_stamps.remove(&e).unwrap_or(0);
            self.stamps.remove(stamp);
            records.sort_by(|a, b| a.1.cmp(&b.1));
            for (key, value) in records {
                let partial = self.partial.entry(key.clone()).or_insert_with(|| {
                    self.stamps.add(stamp);
                    Partial {
                        count: 0,
                        start: e,
                        stamp,
                        acc: agg.create(),
                    }
                });
                if stamp < partial.stamp {
                    self.stamps.remove(partial.stamp);
                    self.stamps.add(stamp);
                    partial.stamp = stamp;
                }
                agg.add(&mut partial.acc, value);
                partial.count += 1;
                if partial.count < self.n {
                    continue;
                }
                let done = self
                    .partial
                    .remove(&key)
                    .expect("the partial window was just updated; this is a bug in Eddy");
                self.stamps.remove(done.stamp);
                hold.emitted(e, done.stamp);
                let cap = cap
                    .as_mut()
                    .expect("a pending record holds a capability; this is a bug in Eddy");
                if e < self.resumed_at {
                    continue;
                }
                cap.downgrade(&e);
                output.session(cap).give((
                    e,
                    WindowResult {
                        key,
                        start: done.start,
                        end: e + 1,
                        value: agg.finish(done.acc),
                    },
                ));
                emitted += 1;
            }
        }
        stage.metrics().add_out(emitted);
    }
}

/// The count-window operator on the worker each key routes to: stash records by timestamp;
/// once the frontier passes a timestamp, release the records before it, then take its records;
/// release every record the frontier has passed.
fn count_windows<'s, K: Key, V: Data + Ord, A: Aggregate<V>>(
    input: Records<'s, (K, V)>,
    stage: StageContext,
    n: u64,
    agg: A,
) -> Records<'s, WindowResult<K, A::Out>> {
    let name = stage.name().to_string();
    let by_key = Exchange::new(|r: &Record<(K, V)>| route(&r.1 .0));
    input.unary_frontier(by_key, &name, move |initial, _| {
        let mut stash: Stash<(K, V)> = Stash::default();
        let mut checkpoints = stage.checkpointer();
        let resumed_at = checkpoints.resumed_at();
        let hold = stage.hold();
        let mut windows: CountWindows<K, V, A::Acc> = CountWindows {
            n,
            pending: BTreeMap::new(),
            pending_records: 0,
            pending_stamps: BTreeMap::new(),
            partial: FxHashMap::default(),
            stamps: Stamps::tracking(hold.is_active()),
            resumed_at,
        };
        let mut gauge = stage.state_gauge();
        // Held at or below the earliest pending event time, to emit a window at its last one.
        let mut cap: Option<Capability<u64>> = None;
        if resumed_at > 0 {
            for entry in checkpoints.restore(|e: &CountEntry<K, V, A::Acc>| route(e.key())) {
                match entry {
                    CountEntry::Pending(k, v, e) => {
                        windows.pending.entry(e).or_default().push((k, v));
                        windows.pending_records += 1;
                    }
                    CountEntry::Partial(k, count, start, acc) => {
                        let stamp = 0;
                        windows.partial.insert(
                            k,
                            Partial {
                                count,
                                start,
                                stamp,
                                acc,
                            },
                        );
                    }
                    CountEntry::Stashed(k, v, e, stamp) => {
                        if stamp < resumed_at {
                            stash.restore(&initial, stamp, (e, (k, v)));
                        }
                    }
                }
            }
            cap = windows.next_pending().map(|first| initial.delayed(&first));
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
                    .map(|(stamp, (e, (k, v)))| CountEntry::Stashed(k, v, *e, stamp));
                windows.snapshot().chain(stashed)
            });
            while let Some((t, c, records)) = stash.pop_passed(limit) {
                windows.release(t, &mut cap, output, &stage, &agg, &hold);
                windows.add(t, records, &stage);
                if let Some(first) = windows.next_pending() {
                    // Records kept have event times at or after `t`, so `c` can reach them.
                    if cap.as_ref().is_none_or(|held| *held.time() > first) {
                        cap = Some(c.delayed(&first));
                    }
                }
            }
            windows.release(limit, &mut cap, output, &stage, &agg, &hold);
            match windows.next_pending() {
                Some(first) => {
                    if let Some(held) = cap.as_mut() {
                        held.downgrade(&first);
                    }
                }
                None => cap = None,
            }
            if frontier.is_empty() {
                // The input has ended: partial windows will never fill.
                windows.partial.clear();
                windows.stamps = Stamps::tracking(hold.is_active());
            }
            hold.waiting(limit, || windows.stamps.least());
            gauge.set(windows.entries());
        }
    })
}
