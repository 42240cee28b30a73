//! Updating-mode operators: results that change as records arrive, emitted as a change log.
//!
//! Final-mode operators ([`window`](crate::window)) emit each result once, when the watermark
//! passes it. The operators here emit [`Change`]s instead — a row with `diff > 0` when it
//! appears, `diff < 0` when it is retracted — so a result is visible as soon as the watermark
//! passes the records that make it, and is corrected later, like a database view.
//!
//! - [`Keyed::join_updating`] (and [`Keyed::inner_join_updating`]): inner, left outer and full
//!   outer equi-joins of two keyed streams, on differential dataflow (`join`, `semijoin`,
//!   `distinct`). A left row without a match stands as `(key, Some(left), None)` and is
//!   retracted when its first match arrives.
//! - [`Keyed::join_updating_ttl`]: the same with state bounded in event time (see *TTL* below).
//! - [`Keyed::aggregate_updating`]: one running aggregate per key over the whole stream.
//! - [`Keyed::window_updating`]: a running aggregate per key and window, with corrections for
//!   late records under [`LatePolicy::Correct`](eddy_engine::LatePolicy).
//!
//! ## Common contract
//!
//! - **Input**: [`Keyed`] streams of `(event time, (key, value))` records; each record counts
//!   once (an insertion with multiplicity +1 at the record's timely timestamp).
//! - **Output**: `Change<Row>` records. The row is a struct ([`Joined`], [`Aggregated`],
//!   [`WindowResult`]), so the change serializes as the row's fields and a `diff` column. A
//!   change that takes effect at timestamp `t` is emitted **stamped `t` with event time `t`**
//!   once the input frontier (the watermark) passes `t`. Changes are consolidated per row and
//!   timestamp: one `Change` per row and `t`, with `diff` the net multiplicity change (so a
//!   join whose inputs repeat a record can emit `diff = 2`); rows whose changes cancel within
//!   `t` are not emitted. Summing the diffs of every change stamped `<= T` gives the result
//!   as it stands at `T`: the operator evaluated on the records stamped `<= T`.
//! - **State at frontier `W`**: joins — the differential arrangements of both inputs, i.e.
//!   every input record stamped `< W` (with TTL, only those still alive at `W`), plus changes
//!   not yet emitted; aggregates — per key (and window) the accumulator and the value last
//!   emitted, plus records stamped `>= W` waiting for the frontier. The stage's state gauge
//!   counts input records held (joins) or key/window slots (aggregates).
//! - **Checkpoint**: joins keep a log of each input's accepted records (with their stamps and
//!   expiries) and write it, per input, when the frontier crosses a boundary (records expired
//!   before the last part are dropped from it). Restored at checkpoint `W`, each input sends
//!   its logged records stamped below `W` again at their stamps, the arrangements rebuild from
//!   them, and the change log sends no change stamped below `W`. The aggregates write their slots
//!   (accumulator and value shown) and stash when the frontier crosses a boundary; restored at
//!   `W`, they keep the stashed records stamped below `W` and send no change stamped below it.
//!
//! ## Late records
//!
//! - Joins without TTL and [`Keyed::aggregate_updating`] have no late records: a record
//!   updates the result whenever it arrives.
//! - **TTL** ([`Keyed::join_updating_ttl`]): a record with event time `e` stamped `t` is *alive*
//!   for the timestamps `[t, e + ttl)`: it is inserted into its side's input at `t` and
//!   retracted from it at `e + ttl`, when the watermark passes `e + ttl`. Every join result
//!   it takes part in is therefore retracted at that time, i.e. **at the earlier of the two
//!   records' expiries**; in an outer join the surviving side then stands unmatched again
//!   (`(key, Some(left), None)`) until its own expiry. A record with `e + ttl <= t` would
//!   never be alive: it is late — counted, and written to the side output under
//!   [`LatePolicy::SideOutput`](eddy_engine::LatePolicy) with `e + ttl` as its window end.
//! - **Windows** ([`Keyed::window_updating`]): a window `[s, end)` takes a record stamped `t`
//!   if and only if `t < end + allowed_lateness` (the pipeline's
//!   [`LatePolicy::Correct`](eddy_engine::LatePolicy) `allowed_lateness_ms`, else 0). A record
//!   stamped `t < end` is an early update; one stamped in `[end, end + allowed_lateness)` is a
//!   *correction* of a result already shown: the old row is retracted and the new one
//!   inserted. A record none of whose windows takes it is late: counted (and side-output).
//!   A window's state is dropped once the frontier reaches `end + allowed_lateness`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;

use differential_dataflow::{AsCollection, VecCollection};
use eddy_engine::timely::dataflow::channels::pact::{Exchange, Pipeline as Local};
use eddy_engine::timely::dataflow::operators::generic::Operator;
use eddy_engine::timely::dataflow::operators::Capability;
use eddy_engine::timely::dataflow::StreamVec;
use eddy_engine::{Change, Data, Record, Records, StageCheckpoint, StageContext, Stream};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::keyed::{route, Key, Keyed};
use crate::window::{frontier_time, Stash, WindowResult, WindowSpec};

/// What values in updating results must be: pipeline data that compare and print (differential
/// dataflow sorts and consolidates them).
pub trait Row: Data + Ord + Debug + Clone {}
impl<T: Data + Ord + Debug + Clone> Row for T {}

/// Which rows a join keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    /// Only matched pairs: `(key, Some(left), Some(right))`.
    Inner,
    /// Matched pairs, and each left record without a match as `(key, Some(left), None)`.
    LeftOuter,
    /// Matched pairs, and each record of either side without a match, with `None` for the
    /// other side.
    FullOuter,
}

impl JoinKind {
    fn describe(self) -> &'static str {
        match self {
            JoinKind::Inner => "inner",
            JoinKind::LeftOuter => "left outer",
            JoinKind::FullOuter => "full outer",
        }
    }
}

/// One row of a join result: the key and the two sides (`Option`s for outer joins).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Joined<K, L, R> {
    /// The join key.
    pub key: K,
    /// The left record.
    pub left: L,
    /// The right record.
    pub right: R,
}

/// A row of an outer join (either side may be missing; an inner join gives both).
pub type OuterJoined<K, A, B> = Joined<K, Option<A>, Option<B>>;

/// The running aggregate of one key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Aggregated<K, V> {
    /// The key.
    pub key: K,
    /// The aggregate's result over the key's records so far.
    pub value: V,
}

/// A join's output as differential updates, before it becomes a change log.
type Updates<'s, D> = VecCollection<'s, u64, D, isize>;

impl<K, A> Keyed<K, A>
where
    K: Key + Ord + Debug,
    A: Row,
{
    /// Joins this stream with `other` on the key, in updating mode: the result changes as
    /// records of either side arrive (see the [module docs](self)). State grows with the
    /// input; see [`Keyed::join_updating_ttl`] to bound it.
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # use eddy_engine::{Change, Stream};
    /// # fn f(auctions: Keyed<u64, String>, bids: Keyed<u64, u64>)
    /// #     -> Stream<Change<Joined<u64, Option<String>, Option<u64>>>> {
    /// // every auction, with each of its bids, or alone while it has none
    /// auctions.join_updating("auction_bids", bids, JoinKind::LeftOuter)
    /// # }
    /// ```
    pub fn join_updating<B: Row>(
        self,
        name: &str,
        other: Keyed<K, B>,
        kind: JoinKind,
    ) -> Stream<Change<OuterJoined<K, A, B>>> {
        self.join_stage(name, other, kind, None)
    }

    /// As [`Keyed::join_updating`], with each record alive only until the watermark passes its
    /// event time plus `ttl_ms`: it is then retracted from its side, and every result it is
    /// part of with it. Records that arrive already expired are late.
    pub fn join_updating_ttl<B: Row>(
        self,
        name: &str,
        other: Keyed<K, B>,
        kind: JoinKind,
        ttl_ms: u64,
    ) -> Stream<Change<OuterJoined<K, A, B>>> {
        self.join_stage(name, other, kind, Some(ttl_ms))
    }

    /// An inner join in updating mode, with plain (not optional) sides.
    pub fn inner_join_updating<B: Row>(
        self,
        name: &str,
        other: Keyed<K, B>,
    ) -> Stream<Change<Joined<K, A, B>>> {
        self.stream
            .stage2(
                other.stream,
                name,
                "join",
                "updating inner".to_string(),
                move |left, right, stage| {
                    let (l, r) = (
                        input_updates(left, stage.clone(), "left", None),
                        input_updates(right, stage.clone(), "right", None),
                    );
                    let joined = l.join_map(r, |k, a, b| Joined {
                        key: k.clone(),
                        left: a.clone(),
                        right: b.clone(),
                    });
                    change_log(joined, stage, |row| route(&row.key))
                },
            )
            .exchanged("by key")
            .checkpointed_parts(&["left", "right"])
    }

    fn join_stage<B: Row>(
        self,
        name: &str,
        other: Keyed<K, B>,
        kind: JoinKind,
        ttl_ms: Option<u64>,
    ) -> Stream<Change<OuterJoined<K, A, B>>> {
        let detail = match ttl_ms {
            Some(ttl) => format!("updating {}, ttl {ttl} ms", kind.describe()),
            None => format!("updating {}", kind.describe()),
        };
        self.stream
            .stage2(
                other.stream,
                name,
                "join",
                detail,
                move |left, right, stage| join_records(left, right, stage, kind, ttl_ms),
            )
            .exchanged("by key")
            .checkpointed_parts(&["left", "right"])
    }

    /// Aggregates each key's values over the whole stream, in updating mode: whenever the
    /// watermark passes records of a key whose result they change, emits the retraction of
    /// the key's old result (if any) and the new one.
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # use eddy_engine::{Change, Stream};
    /// # fn f(bids: Keyed<u64, u64>) -> Stream<Change<Aggregated<u64, u64>>> {
    /// bids.aggregate_updating("bids_per_auction", Count)
    /// # }
    /// ```
    pub fn aggregate_updating<G>(self, name: &str, agg: G) -> Stream<Change<Aggregated<K, G::Out>>>
    where
        G: Aggregate<A>,
        G::Out: Clone + PartialEq,
    {
        self.stream
            .stage(
                name,
                "aggregate",
                "updating".to_string(),
                move |input, stage| {
                    fold_records(input, stage, None, agg.clone(), |key, _, value| {
                        Aggregated { key, value }
                    })
                },
            )
            .exchanged("by key")
            .checkpointed()
    }

    /// Aggregates each key's values per window, in updating mode: a window's result appears as
    /// soon as the watermark passes its first records (before the window ends) and is updated
    /// (old row retracted, new row inserted) by later records, including late ones within the
    /// allowed lateness of [`LatePolicy::Correct`](eddy_engine::LatePolicy); records later
    /// than that are late (see the [module docs](self)).
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # use eddy_engine::{Change, Stream};
    /// # fn f(bids: Keyed<u64, u64>) -> Stream<Change<WindowResult<u64, u64>>> {
    /// bids.window_updating("bid_counts", WindowSpec::tumbling(10_000), Count)
    /// # }
    /// ```
    pub fn window_updating<G>(
        self,
        name: &str,
        spec: WindowSpec,
        agg: G,
    ) -> Stream<Change<WindowResult<K, G::Out>>>
    where
        G: Aggregate<A>,
        G::Out: Clone + PartialEq,
    {
        self.stream
            .stage(
                name,
                "window",
                format!("updating {}", spec.describe()),
                move |input, stage| {
                    fold_records(
                        input,
                        stage,
                        Some(spec),
                        agg.clone(),
                        move |key, start, value| WindowResult {
                            key,
                            start,
                            end: start + spec.size(),
                            value,
                        },
                    )
                },
            )
            .exchanged("by key")
            .checkpointed()
    }
}

/// The timely body of [`Keyed::join_updating`] and [`Keyed::join_updating_ttl`], for custom
/// stages built with [`Stream::stage2`]: joins `left` and `right` as the stage `stage`.
pub fn join_records<'s, K, A, B>(
    left: Records<'s, (K, A)>,
    right: Records<'s, (K, B)>,
    stage: StageContext,
    kind: JoinKind,
    ttl_ms: Option<u64>,
) -> Records<'s, Change<OuterJoined<K, A, B>>>
where
    K: Key + Ord + Debug,
    A: Row,
    B: Row,
{
    let l = input_updates(left, stage.clone(), "left", ttl_ms);
    let r = input_updates(right, stage.clone(), "right", ttl_ms);
    let matched = l.clone().join_map(r.clone(), |k, a, b| Joined {
        key: k.clone(),
        left: Some(a.clone()),
        right: Some(b.clone()),
    });
    let joined = match kind {
        JoinKind::Inner => matched,
        JoinKind::LeftOuter => matched.concat(unmatched(l, r).map(|(key, a)| Joined {
            key,
            left: Some(a),
            right: None,
        })),
        JoinKind::FullOuter => {
            let lonely_left = unmatched(l.clone(), r.clone()).map(|(key, a)| Joined {
                key,
                left: Some(a),
                right: None,
            });
            let lonely_right = unmatched(r, l).map(|(key, b)| Joined {
                key,
                left: None,
                right: Some(b),
            });
            matched.concat(lonely_left).concat(lonely_right)
        }
    };
    change_log(joined, stage, |row| route(&row.key))
}

/// The records of `this` whose key has no record in `other`: `this` minus its semijoin with
/// the distinct keys of `other`.
fn unmatched<'s, K, V, W>(
    this: Updates<'s, (K, V)>,
    other: Updates<'s, (K, W)>,
) -> Updates<'s, (K, V)>
where
    K: Key + Ord + Debug,
    V: Row,
    W: Row,
{
    let keys = other.map(|(k, _)| k).distinct();
    this.clone().concat(this.semijoin(keys).negate())
}

/// Turns one input's records into differential updates: `((key, value), t, +1)` at the
/// record's timestamp `t`, and with a TTL `((key, value), e + ttl, -1)`; drops (and reports)
/// records already expired. Keeps this operator's share of the state gauge: the records the
/// join holds at the frontier (stamped before it and not yet expired).
fn input_updates<'s, K: Key, V: Data + Clone>(
    input: Records<'s, (K, V)>,
    stage: StageContext,
    side: &str,
    ttl_ms: Option<u64>,
) -> Updates<'s, (K, V)> {
    let name = format!("{}-{side}", stage.name());
    let checkpoint = stage.checkpoint().map(|c| c.part(side));
    input
        .unary_frontier(Local, &name, move |initial, _| {
            let mut gauge = stage.state_gauge();
            // Expiry times of records received but not yet passed by the frontier, by stamp.
            let mut pending: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            // Records held at the frontier, by expiry time.
            let mut held: BTreeMap<u64, usize> = BTreeMap::new();
            let mut held_total = 0usize;
            let mut log = InputLog::<K, V>::default();
            let mut replay = BTreeMap::new();
            if let Some(c) = &checkpoint {
                log.folded = c.restored_at().unwrap_or(0);
                replay = log.restore(c, &initial, ttl_ms);
                for (t, records) in &log.by_stamp {
                    let expiries = pending.entry(*t).or_default();
                    expiries.extend(records.iter().map(|(expiry, _, _)| *expiry));
                }
            }
            move |(input, frontier), output| {
                // A restored run first sends the records of the checkpoint again, at their
                // stamps: the arrangements downstream rebuild from them.
                for (_, (cap, mut updates)) in std::mem::take(&mut replay) {
                    output.session(&cap).give_container(&mut updates);
                }
                input.for_each(|cap, data| {
                    let Some(&t) = cap.least() else { return };
                    stage.metrics().add_in(data.len());
                    let mut updates = Vec::with_capacity(data.len() * 2);
                    let expiries = pending.entry(t).or_default();
                    for (event_time, (key, value)) in data.drain(..) {
                        let expiry = ttl_ms.map_or(u64::MAX, |ttl| event_time.saturating_add(ttl));
                        if expiry <= t {
                            stage.late(&(&key, &value), event_time, t, expiry);
                            continue;
                        }
                        expiries.push(expiry);
                        if checkpoint.is_some() {
                            log.push(t, expiry, &key, &value);
                        }
                        if ttl_ms.is_some() {
                            updates.push(((key.clone(), value.clone()), expiry, -1));
                        }
                        updates.push(((key, value), t, 1));
                    }
                    if !updates.is_empty() {
                        output.session(&cap).give_container(&mut updates);
                    }
                });
                let limit = frontier_time(frontier);
                if let Some(c) = &checkpoint {
                    log.save(c, limit);
                }
                while let Some(entry) = pending.first_entry() {
                    if *entry.key() >= limit {
                        break;
                    }
                    for expiry in entry.remove() {
                        *held.entry(expiry).or_default() += 1;
                        held_total += 1;
                    }
                }
                // A record expiring at `x` is retracted from the arrangement once the
                // frontier passes `x`; at the end (empty frontier) nothing is held.
                while let Some(entry) = held.first_entry() {
                    if *entry.key() >= limit && limit != u64::MAX {
                        break;
                    }
                    held_total -= entry.remove();
                }
                gauge.set(held_total);
            }
        })
        .as_collection()
}

/// The accepted records of one input of an updating join, kept for checkpoints: the join's
/// arrangements hold exactly the records stamped below the frontier, so a part is the log of
/// those records, and a restore sends them again at their stamps.
struct InputLog<K, V> {
    /// `(expiry, key, value)` by stamp.
    by_stamp: BTreeMap<u64, Vec<(u64, K, V)>>,
    /// The frontier of the last part.
    folded: u64,
}

impl<K, V> Default for InputLog<K, V> {
    fn default() -> Self {
        InputLog {
            by_stamp: BTreeMap::new(),
            folded: 0,
        }
    }
}

/// A logged record in a checkpoint part: `(stamp, expiry, key, value)`.
type Logged<K, V> = (u64, u64, K, V);

impl<K: Key, V: Data + Clone> InputLog<K, V> {
    fn push(&mut self, t: u64, expiry: u64, key: &K, value: &V) {
        self.by_stamp
            .entry(t)
            .or_default()
            .push((expiry, key.clone(), value.clone()));
    }

    /// Writes a part when the frontier crosses a boundary. Records expired by the frontier
    /// saved before are dropped first: at any checkpoint after it they are gone from the
    /// arrangement (inserted and retracted before it).
    fn save(&mut self, checkpoint: &StageCheckpoint, limit: u64) {
        if !checkpoint.crosses(self.folded, limit) {
            self.folded = self.folded.max(limit);
            return;
        }
        let folded = self.folded;
        for records in self.by_stamp.values_mut() {
            records.retain(|(expiry, _, _)| *expiry > folded);
        }
        self.by_stamp.retain(|_, records| !records.is_empty());
        let entries = self.by_stamp.iter().flat_map(|(t, records)| {
            records
                .iter()
                .map(move |(expiry, key, value)| (*t, *expiry, key, value))
        });
        checkpoint.save(folded, limit, entries);
        self.folded = limit;
    }

    /// Reads this input's log back (the records stamped below the checkpoint) and returns the
    /// updates to send again, with a capability at each stamp.
    #[allow(clippy::type_complexity)]
    fn restore(
        &mut self,
        checkpoint: &StageCheckpoint,
        initial: &Capability<u64>,
        ttl_ms: Option<u64>,
    ) -> BTreeMap<u64, (Capability<u64>, Vec<((K, V), u64, isize)>)> {
        let mut replay = BTreeMap::new();
        let Some(at) = checkpoint.restored_at() else {
            return replay;
        };
        let entries = checkpoint.restore(|e: &Logged<K, V>| route(&e.2));
        for (t, expiry, key, value) in entries.into_iter().filter(|e| e.0 < at) {
            let (_, updates) = replay
                .entry(t)
                .or_insert_with(|| (initial.delayed(&t), Vec::new()));
            if ttl_ms.is_some() {
                updates.push(((key.clone(), value.clone()), expiry, -1));
            }
            updates.push(((key.clone(), value.clone()), t, 1));
            self.push(t, expiry, &key, &value);
        }
        replay
    }
}

/// Turns differential updates into a change log: exchanged by `route` (so every change of a
/// row meets on one worker), held until the frontier passes their time, consolidated per row
/// and time, and emitted as `Change`s stamped with their time, event time the same.
fn change_log<'s, D, F>(
    updates: Updates<'s, D>,
    stage: StageContext,
    route: F,
) -> Records<'s, Change<D>>
where
    D: Row,
    F: Fn(&D) -> u64 + 'static,
{
    let name = format!("{}-changes", stage.name());
    // Changes stamped below the checkpoint resumed from were sent before it.
    let resumed_at = stage
        .checkpoint()
        .and_then(|c| c.restored_at())
        .unwrap_or(0);
    let by_row = Exchange::new(move |u: &(D, u64, isize)| route(&u.0));
    let stream: StreamVec<'s, u64, (D, u64, isize)> = updates.inner;
    stream.unary_frontier(by_row, &name, move |_, _| {
        let mut stash: Held<D> = BTreeMap::new();
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                for (row, time, diff) in data.drain(..) {
                    stash
                        .entry(time)
                        .or_insert_with(|| (cap.delayed(&time, 0), Vec::new()))
                        .1
                        .push((row, diff));
                }
            });
            let limit = frontier_time(frontier);
            while let Some(entry) = stash.first_entry() {
                if *entry.key() >= limit {
                    break;
                }
                let t = *entry.key();
                let (cap, mut changes) = entry.remove();
                if t < resumed_at {
                    continue;
                }
                differential_dataflow::consolidation::consolidate(&mut changes);
                stage.metrics().add_out(changes.len());
                let mut records: Vec<Record<Change<D>>> = changes
                    .into_iter()
                    .map(|(row, diff)| {
                        (
                            t,
                            Change {
                                row,
                                diff: diff as i64,
                            },
                        )
                    })
                    .collect();
                if !records.is_empty() {
                    output.session(&cap).give_container(&mut records);
                }
            }
        }
    })
}

/// Updates waiting for the frontier, by time, with a capability for their time.
type Held<D> = BTreeMap<u64, (Capability<u64>, Vec<(D, isize)>)>;

/// Running aggregates by window start (0 without windows), then key.
type Slots<K, Acc, Out> = BTreeMap<u64, FxHashMap<K, Slot<Acc, Out>>>;

/// One key's (and window's) running aggregate.
struct Slot<Acc, Out> {
    acc: Acc,
    /// The value last emitted (standing in the result).
    shown: Option<Out>,
    /// Whether the batch being folded touched it.
    dirty: bool,
}

/// The timely body of [`Keyed::aggregate_updating`] (`spec: None`: one group per key, never
/// late, never evicted) and [`Keyed::window_updating`] (`spec: Some(..)`), for custom stages:
/// folds each key's values into running aggregates as the stage `stage`; `row` builds an
/// output row from the key, the window start (0 without windows) and the aggregate's result.
pub fn fold_records<'s, K, V, G, R, F>(
    input: Records<'s, (K, V)>,
    stage: StageContext,
    spec: Option<WindowSpec>,
    agg: G,
    row: F,
) -> Records<'s, Change<R>>
where
    K: Key,
    V: Data + Clone,
    G: Aggregate<V>,
    G::Out: Clone + PartialEq,
    R: Data,
    F: Fn(K, u64, G::Out) -> R + 'static,
{
    let name = stage.name().to_string();
    let by_key = Exchange::new(|r: &Record<(K, V)>| route(&r.1 .0));
    let allowed = stage.allowed_lateness_ms();
    input.unary_frontier(by_key, &name, move |initial, _| {
        let mut stash: Stash<(K, V)> = Stash::default();
        let mut slots: Slots<K, G::Acc, G::Out> = BTreeMap::new();
        let mut slot_count = 0usize;
        let mut gauge = stage.state_gauge();
        let mut checkpoints = stage.checkpointer();
        let resumed_at = checkpoints.resumed_at();
        if resumed_at > 0 {
            for entry in
                checkpoints.restore(|e: &SlotEntry<K, V, G::Acc, Option<G::Out>>| route(e.key()))
            {
                match entry {
                    SlotEntry::Slot(start, key, acc, shown) => {
                        let slot = Slot {
                            acc,
                            shown,
                            dirty: false,
                        };
                        if slots.entry(start).or_default().insert(key, slot).is_none() {
                            slot_count += 1;
                        }
                    }
                    SlotEntry::Stashed(stamp, event_time, key, value) => {
                        if stamp < resumed_at {
                            stash.restore(&initial, stamp, (event_time, (key, value)));
                        }
                    }
                }
            }
        }
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                stage.metrics().add_in(data.len());
                stash.absorb(&cap, data);
            });
            let limit = frontier_time(frontier);
            checkpoints.at_frontier(limit, || {
                let held = slots.iter().flat_map(|(start, accs)| {
                    accs.iter()
                        .map(move |(k, slot)| SlotEntry::Slot(*start, k, &slot.acc, &slot.shown))
                });
                let stashed = stash
                    .before(limit)
                    .map(|(stamp, (e, (k, v)))| SlotEntry::Stashed(stamp, *e, k, v));
                held.chain(stashed)
            });
            while let Some((t, cap, records)) = stash.pop_passed(limit) {
                let mut touched: Vec<(u64, K)> = Vec::new();
                for (event_time, (key, value)) in records {
                    let mut add = |start: u64, value: V| {
                        let accs = slots.entry(start).or_default();
                        let slot = accs.entry(key.clone()).or_insert_with(|| {
                            slot_count += 1;
                            Slot {
                                acc: agg.create(),
                                shown: None,
                                dirty: false,
                            }
                        });
                        agg.add(&mut slot.acc, value);
                        if !slot.dirty {
                            slot.dirty = true;
                            touched.push((start, key.clone()));
                        }
                    };
                    let Some(spec) = spec else {
                        add(0, value);
                        continue;
                    };
                    let open: Vec<u64> = window_starts(spec, event_time)
                        .filter(|start| start + spec.size() + allowed > t)
                        .collect();
                    match open.split_last() {
                        None => {
                            let last_end = spec.last_end(event_time);
                            stage.late(&(&key, &value), event_time, t, last_end);
                        }
                        Some((last, others)) => {
                            for start in others {
                                add(*start, value.clone());
                            }
                            add(*last, value);
                        }
                    }
                }
                let mut changes = Vec::new();
                for (start, key) in touched {
                    let Some(slot) = slots.get_mut(&start).and_then(|accs| accs.get_mut(&key))
                    else {
                        continue;
                    };
                    slot.dirty = false;
                    let value = agg.finish(slot.acc.clone());
                    if slot.shown.as_ref() == Some(&value) {
                        continue;
                    }
                    if let Some(old) = slot.shown.replace(value.clone()) {
                        changes.push((t, Change::retract(row(key.clone(), start, old))));
                    }
                    changes.push((t, Change::insert(row(key, start, value))));
                }
                // Changes at a stamp before the checkpoint resumed from were sent before it.
                if t < resumed_at {
                    changes.clear();
                }
                stage.metrics().add_out(changes.len());
                if !changes.is_empty() {
                    output.session(&cap).give_container(&mut changes);
                }
            }
            if let Some(spec) = spec {
                // No record stamped at or after `limit` can enter a window ending by
                // `limit - allowed`.
                while let Some(entry) = slots.first_entry() {
                    if entry.key() + spec.size() + allowed > limit {
                        break;
                    }
                    slot_count -= entry.remove().len();
                }
            }
            gauge.set(slot_count);
        }
    })
}

/// One entry of an updating aggregate's checkpoint part: a slot `(window start, key,
/// accumulator, value shown)`, or a record stashed under its stamp `(stamp, event time, key,
/// value)`.
#[derive(Serialize, Deserialize)]
enum SlotEntry<K, V, Acc, Out> {
    Slot(u64, K, Acc, Out),
    Stashed(u64, u64, K, V),
}

impl<K, V, Acc, Out> SlotEntry<K, V, Acc, Out> {
    fn key(&self) -> &K {
        match self {
            SlotEntry::Slot(_, k, ..) | SlotEntry::Stashed(_, _, k, _) => k,
        }
    }
}

/// The starts of the windows an event time belongs to, earliest first.
fn window_starts(spec: WindowSpec, event_time: u64) -> impl Iterator<Item = u64> {
    let (size, slide) = (spec.size(), spec.slide());
    let last = event_time / slide * slide;
    let first = if event_time >= size {
        ((event_time - size) / slide + 1) * slide
    } else {
        0
    };
    (first..=last).step_by(slide as usize)
}
