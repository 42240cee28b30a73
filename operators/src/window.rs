//! Tumbling and hopping event-time windows, keyed or global.
//!
//! - **Input**: a [`Keyed`] stream of `(key, value)` (keyed windows) or any stream (global
//!   windows, [`GlobalWindow::window_all`]).
//! - **Windows**: `[start, end)` in event time, aligned to the epoch: tumbling windows of `size`
//!   start at multiples of `size`; hopping windows of `size` start every `slide`, so a record
//!   belongs to `size / slide` windows.
//! - **Output**: one [`WindowResult`] per key and window with at least one record: the key, the
//!   window's start and end, and the aggregate's result. Its event time is `end - 1` (the
//!   window's last instant), so windows downstream place it in the right window.
//! - **When it emits**: once, when the input frontier (the watermark) reaches the window's end;
//!   results are stamped `end - 1`.
//! - **State**: two phases. Phase 1, on every worker, folds each received batch into one
//!   partial accumulator per key and *pane* (a pane is `gcd(size, slide)` long, so a record is
//!   added once however many windows it belongs to) and sends the partials, exchanged by key,
//!   at the batch's timestamp; it keeps nothing between batches. Phase 2, on the worker the key
//!   routes to, stashes partials by timestamp and, when the frontier passes a timestamp, merges
//!   them into per-pane accumulators kept in an index ordered by time; a window merges its panes
//!   when it fires, and firing and eviction touch only the windows that are due. So state at
//!   frontier `W` is exactly the fold of the records stamped before `W`. The stage's state gauge
//!   counts the pane accumulators held (one per key and pane); it returns to 0 once the
//!   watermark has passed every window.
//! - **Late records**: a window `[s, e)` takes a record stamped `t` if and only if `t < e`. A
//!   record none of whose windows is still open is late: counted, and written to the side output
//!   under [`LatePolicy::SideOutput`](eddy_engine::LatePolicy). A record some of whose windows
//!   are still open goes into those.
//! - **Checkpoint**: phase 2 writes its panes and stash when its frontier crosses a checkpoint
//!   boundary, before folding anything stamped at or after the frontier it had folded up to
//!   (phase 1 holds nothing). Restored at checkpoint `W`, it keeps the stashed partials stamped
//!   below `W` and closes every window ending at or before `W` (its result, stamped below `W`,
//!   is downstream already).
//!
//! Phase 1 is a combiner: a hot key costs one partial per batch, and only partials cross
//! between workers. Phase 2 splits the work of firing windows between workers by key. A global
//! window is a window keyed by `()`: phase 2 runs on one worker.
//!
//! [`TopNPerWindow::top_n_per_window`] is a second stage after a keyed window: the `n` best keys
//! of each window (two-stage aggregation: per-key partials, then a global step per window).

use std::cmp::Ordering;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::hash::Hash;

use eddy_engine::timely::container::CapacityContainerBuilder;
use eddy_engine::timely::dataflow::channels::pact::{Exchange, Pipeline as Local};
use eddy_engine::timely::dataflow::operators::generic::{Operator, OutputBuilderSession};
use eddy_engine::timely::dataflow::operators::{Capability, InputCapability};
use eddy_engine::timely::progress::frontier::MutableAntichain;
use eddy_engine::{Checkpointer, Data, Hold, Record, Records, StageContext, Stream};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::aggregate::{rank_insert, total_cmp, Aggregate};
use crate::keyed::{route, Key, Keyed};

/// The shape of a window: tumbling or hopping, in event-time milliseconds, aligned to epoch 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    size: u64,
    slide: u64,
}

impl WindowSpec {
    /// Back-to-back windows of `size_ms`.
    pub fn tumbling(size_ms: u64) -> Self {
        WindowSpec {
            size: size_ms.max(1),
            slide: size_ms.max(1),
        }
    }

    /// Windows of `size_ms` starting every `slide_ms` (`slide_ms <= size_ms`; a larger slide is
    /// clamped to the size).
    pub fn hopping(size_ms: u64, slide_ms: u64) -> Self {
        let size = size_ms.max(1);
        WindowSpec {
            size,
            slide: slide_ms.clamp(1, size),
        }
    }

    /// The window length in ms.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How often a window starts, in ms.
    pub fn slide(&self) -> u64 {
        self.slide
    }

    fn pane(&self) -> u64 {
        gcd(self.size, self.slide)
    }

    /// The end of the last window an event time belongs to.
    pub(crate) fn last_end(&self, event_time: u64) -> u64 {
        event_time / self.slide * self.slide + self.size
    }

    pub(crate) fn describe(&self) -> String {
        if self.size == self.slide {
            format!("tumbling {} ms", self.size)
        } else {
            format!("hopping {} ms every {} ms", self.size, self.slide)
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The result of one key in one window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowResult<K, V> {
    /// The key (`()` for global windows).
    pub key: K,
    /// The window's start (ms, inclusive).
    pub start: u64,
    /// The window's end (ms, exclusive).
    pub end: u64,
    /// The aggregate's result.
    pub value: V,
}

impl<K: Key, V: Data> Keyed<K, V> {
    /// Aggregates each key's values per window; emits once per key and window when the
    /// watermark passes the window's end.
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # fn f(bids: eddy_engine::Stream<(u64, u64)>) -> eddy_engine::Stream<WindowResult<u64, u64>> {
    /// // bids per auction in 10 s windows starting every 2 s
    /// bids.key_by("by_auction", |b: &(u64, u64)| b.0)
    ///     .window("bid_counts", WindowSpec::hopping(10_000, 2_000), Count)
    /// # }
    /// ```
    pub fn window<A: Aggregate<V>>(
        self,
        name: &str,
        spec: WindowSpec,
        agg: A,
    ) -> Stream<WindowResult<K, A::Out>> {
        self.stream
            .stage(name, "window", spec.describe(), move |input, stage| {
                two_phase(input, stage, spec, agg.clone())
            })
            .exchanged("by key")
            .checkpointed()
    }
}

/// Windows over a whole stream, not per key.
pub trait GlobalWindow<T: Data> {
    /// Aggregates all values per window (two steps: partial accumulators on every worker, merged
    /// on one); emits once per window when the watermark passes its end.
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # fn f(prices: eddy_engine::Stream<u64>) -> eddy_engine::Stream<WindowResult<(), Option<u64>>> {
    /// prices.window_all("max_price", WindowSpec::tumbling(10_000), Max(|p: &u64| *p))
    /// # }
    /// ```
    fn window_all<A: Aggregate<T>>(
        self,
        name: &str,
        spec: WindowSpec,
        agg: A,
    ) -> Stream<WindowResult<(), A::Out>>;
}

impl<T: Data> GlobalWindow<T> for Stream<T> {
    fn window_all<A: Aggregate<T>>(
        self,
        name: &str,
        spec: WindowSpec,
        agg: A,
    ) -> Stream<WindowResult<(), A::Out>> {
        self.stage(
            name,
            "window",
            format!("{}, global", spec.describe()),
            move |input, stage| {
                let local = input.unary(Local, &format!("{}-key", stage.name()), |_, _| {
                    |input, output| {
                        input.for_each(|cap, data| {
                            let mut keyed: Vec<_> =
                                data.drain(..).map(|(t, v)| (t, ((), v))).collect();
                            output.session(&cap).give_container(&mut keyed);
                        })
                    }
                });
                two_phase(local, stage, spec, agg.clone())
            },
        )
        .exchanged("to one worker")
        .checkpointed()
    }
}

/// Per-pane accumulators of one worker, in an index ordered by pane start.
struct Panes<K, Acc> {
    spec: WindowSpec,
    pane: u64,
    panes: BTreeMap<u64, FxHashMap<K, Acc>>,
    /// The start of the earliest window not yet fired or closed: every window starting before
    /// it has fired, or ended at or before the frontier while this worker held none of its panes.
    next_start: u64,
    /// How many accumulators (key and pane) the panes hold: the stage's state gauge.
    accs: usize,
    /// How many keys the largest pane so far held: new panes start with room for as many.
    keys_hint: usize,
    /// Per pane held, the least stamp of the partials merged into it (what the stage's
    /// [`Hold`] holds).
    stamps: BTreeMap<u64, u64>,
}

impl<K: Hash + Eq + Clone, Acc: Clone> Panes<K, Acc> {
    fn new(spec: WindowSpec) -> Self {
        Panes {
            spec,
            pane: spec.pane(),
            panes: BTreeMap::new(),
            next_start: 0,
            accs: 0,
            keys_hint: 0,
            stamps: BTreeMap::new(),
        }
    }

    /// The least stamp of the partials merged into the panes of `[start, end)` (`None`: none).
    fn least_stamp(&self, start: u64, end: u64) -> Option<u64> {
        self.stamps.range(start..end).map(|(_, &t)| t).min()
    }

    /// Closes every window ending at or before `frontier`: the earliest window still to fire
    /// starts no earlier than the first window ending after `frontier`. Windows that held panes
    /// of this worker have fired by then; this also covers those that held none, so a partial
    /// that arrives after an idle stretch goes only into windows still open. Without it, such a
    /// partial would reopen a window that ended while this worker held nothing.
    fn close_until(&mut self, frontier: u64) {
        let (size, slide) = (self.spec.size, self.spec.slide);
        let first_open = if frontier >= size {
            ((frontier - size) / slide)
                .saturating_add(1)
                .saturating_mul(slide)
        } else {
            0
        };
        if first_open > self.next_start {
            self.next_start = first_open;
            self.evict();
        }
    }

    /// Drops panes before `next_start`: no window still to fire contains them.
    fn evict(&mut self) {
        while let Some(entry) = self.panes.first_entry() {
            if *entry.key() >= self.next_start {
                break;
            }
            self.accs -= entry.remove().len();
        }
        self.stamps = self.stamps.split_off(&self.next_start);
    }

    /// The earliest window still to fire, if any pane holds data.
    fn next_window(&self) -> Option<(u64, u64)> {
        let pane = *self.panes.keys().next()?;
        let (size, slide) = (self.spec.size, self.spec.slide);
        let first_containing = if pane >= size {
            ((pane - size) / slide + 1) * slide
        } else {
            0
        };
        let start = first_containing.max(self.next_start);
        Some((start, start + size))
    }

    /// Merges partial accumulators `(pane start, (key, acc))` stamped `stamp` into their panes.
    /// Consecutive partials of one pane (the common case) share one lookup of the pane.
    fn merge<V, A: Aggregate<V, Acc = Acc>>(
        &mut self,
        agg: &A,
        stamp: u64,
        partials: Vec<Record<(K, Acc)>>,
    ) {
        let mut open: Option<(u64, FxHashMap<K, Acc>)> = None;
        for (pane, (key, partial)) in partials {
            let accs = match &mut open {
                Some((p, accs)) if *p == pane => accs,
                _ => {
                    if let Some((p, accs)) = open.take() {
                        self.put(p, accs);
                    }
                    let least = self.stamps.entry(pane).or_insert(stamp);
                    *least = (*least).min(stamp);
                    let accs = self.panes.remove(&pane).unwrap_or_else(|| {
                        FxHashMap::with_capacity_and_hasher(self.keys_hint, Default::default())
                    });
                    &mut open.insert((pane, accs)).1
                }
            };
            match accs.entry(key) {
                std::collections::hash_map::Entry::Occupied(o) => agg.merge(o.into_mut(), partial),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(partial);
                    self.accs += 1;
                }
            }
        }
        if let Some((p, accs)) = open {
            self.put(p, accs);
        }
    }

    fn put(&mut self, pane: u64, accs: FxHashMap<K, Acc>) {
        self.keys_hint = self.keys_hint.max(accs.len());
        self.panes.insert(pane, accs);
    }

    /// Fires window `[start, end)`, handing each key's accumulator to `emit`, and evicts panes
    /// no later window needs.
    fn fire<V, A: Aggregate<V, Acc = Acc>>(
        &mut self,
        agg: &A,
        start: u64,
        end: u64,
        mut emit: impl FnMut(K, Acc),
    ) {
        if self.pane == self.spec.size {
            self.stamps.remove(&start);
            if let Some(accs) = self.panes.remove(&start) {
                self.accs -= accs.len();
                accs.into_iter().for_each(|(k, acc)| emit(k, acc));
            }
        } else {
            let mut merged: FxHashMap<K, Acc> = FxHashMap::default();
            for accs in self.panes.range(start..end).map(|(_, accs)| accs) {
                for (k, acc) in accs {
                    match merged.get_mut(k) {
                        Some(m) => agg.merge(m, acc.clone()),
                        None => {
                            merged.insert(k.clone(), acc.clone());
                        }
                    }
                }
            }
            merged.into_iter().for_each(|(k, acc)| emit(k, acc));
        }
        self.next_start = start + self.spec.slide;
        self.evict();
    }
}

/// Records waiting for the frontier to pass their timestamp, with a capability per timestamp.
pub(crate) struct Stash<X> {
    pub(crate) by_time: BTreeMap<u64, (Capability<u64>, Vec<Record<X>>)>,
}

impl<X> Default for Stash<X> {
    fn default() -> Self {
        Stash {
            by_time: BTreeMap::new(),
        }
    }
}

impl<X> Stash<X> {
    /// Takes a received batch (moving its records) under its timestamp.
    pub(crate) fn absorb(&mut self, cap: &InputCapability<u64>, data: &mut Vec<Record<X>>) {
        let (Some(&t), Some(held)) = (cap.least(), cap.retain_least(0)) else {
            return;
        };
        match self.by_time.entry(t) {
            Entry::Vacant(v) => {
                v.insert((held, std::mem::take(data)));
            }
            Entry::Occupied(mut o) => o.get_mut().1.append(data),
        }
    }

    /// Every stashed record stamped below `limit`, with its stamp (for a checkpoint part).
    pub(crate) fn before(&self, limit: u64) -> impl Iterator<Item = (u64, &Record<X>)> {
        self.by_time
            .range(..limit)
            .flat_map(|(t, (_, records))| records.iter().map(move |r| (*t, r)))
    }

    /// Takes a batch under its stamp, holding `cap` (a join's gate).
    pub(crate) fn push(&mut self, cap: Capability<u64>, data: &mut Vec<Record<X>>) {
        let t = *cap.time();
        match self.by_time.entry(t) {
            Entry::Vacant(v) => {
                v.insert((cap, std::mem::take(data)));
            }
            Entry::Occupied(mut o) => o.get_mut().1.append(data),
        }
    }

    /// The earliest stashed batch stamped below `limit`, with its capability.
    pub(crate) fn pop_before(&mut self, limit: u64) -> Option<(Capability<u64>, Vec<Record<X>>)> {
        self.pop_passed(limit)
            .map(|(_, cap, records)| (cap, records))
    }

    /// How many records are stashed.
    pub(crate) fn len(&self) -> usize {
        self.by_time.values().map(|(_, r)| r.len()).sum()
    }

    /// Puts back a record restored from a checkpoint under its stamp `t`, holding a capability
    /// for `t` made from the operator's initial one.
    pub(crate) fn restore(&mut self, initial: &Capability<u64>, t: u64, record: Record<X>) {
        self.by_time
            .entry(t)
            .or_insert_with(|| (initial.delayed(&t), Vec::new()))
            .1
            .push(record);
    }

    /// The earliest stashed timestamp below `limit` (the frontier), with its capability and
    /// records, in timestamp order.
    pub(crate) fn pop_passed(
        &mut self,
        limit: u64,
    ) -> Option<(u64, Capability<u64>, Vec<Record<X>>)> {
        let entry = self.by_time.first_entry()?;
        let t = *entry.key();
        (t < limit).then(|| {
            let (cap, records) = entry.remove();
            (t, cap, records)
        })
    }
}

/// An operator's output watermark: the least of its input frontier `limit` and the time of the
/// capability it holds, if any.
pub(crate) fn held_until(held: &Option<Capability<u64>>, limit: u64) -> u64 {
    held.as_ref().map_or(limit, |c| (*c.time()).min(limit))
}

/// The frontier as one time (timestamps are totally ordered); `u64::MAX` once it is empty.
pub(crate) fn frontier_time(frontier: &MutableAntichain<u64>) -> u64 {
    frontier
        .frontier()
        .iter()
        .min()
        .copied()
        .unwrap_or(u64::MAX)
}

pub(crate) type Out<'a, T> =
    OutputBuilderSession<'a, u64, CapacityContainerBuilder<Vec<Record<T>>>>;

/// Both phases of a window: [`combine`] on every worker, then [`fold_windows`] on the worker each
/// key routes to.
pub(crate) fn two_phase<'s, K: Key, V: Data, A: Aggregate<V>>(
    input: Records<'s, (K, V)>,
    stage: StageContext,
    spec: WindowSpec,
    agg: A,
) -> Records<'s, WindowResult<K, A::Out>> {
    let partials = combine(input, stage.clone(), spec, agg.clone());
    fold_windows(partials, stage, spec, agg)
}

/// Phase 1, on every worker, per received batch: drops (and reports) late records, and folds the
/// others into one partial accumulator per key and pane, sent at the batch's timestamp with the
/// pane's start as event time. Holds nothing between batches. Lateness depends only on a
/// record's event time and timestamp, so it is decided exactly here.
fn combine<'s, K: Key, V: Data, A: Aggregate<V>>(
    input: Records<'s, (K, V)>,
    stage: StageContext,
    spec: WindowSpec,
    agg: A,
) -> Records<'s, (K, A::Acc)> {
    let name = format!("{}-combine", stage.name());
    let pane = spec.pane();
    input.unary(Local, &name, move |_, _| {
        let mut combined: FxHashMap<(K, u64), A::Acc> = FxHashMap::default();
        move |input, output| {
            input.for_each(|cap, data| {
                let Some(&t) = cap.least() else { return };
                stage.metrics().add_in(data.len());
                for (event_time, (key, value)) in data.drain(..) {
                    let last_end = spec.last_end(event_time);
                    if last_end <= t {
                        stage.late(&(&key, &value), event_time, t, last_end);
                        continue;
                    }
                    let acc = combined
                        .entry((key, event_time / pane * pane))
                        .or_insert_with(|| agg.create());
                    agg.add(acc, value);
                }
                if !combined.is_empty() {
                    let mut partials: Vec<_> = combined
                        .drain()
                        .map(|((key, p), acc)| (p, (key, acc)))
                        .collect();
                    output.session(&cap).give_container(&mut partials);
                }
            });
        }
    })
}

/// Phase 2, on the worker each key routes to: stash partials by timestamp; once the frontier
/// passes a timestamp `t`, fire the windows ending at or before `t`, close those this worker
/// held nothing of ([`Panes::close_until`]), then merge its partials into their panes; fire
/// every window the frontier has reached. Reports the pane accumulators held on the stage's
/// state gauge.
fn fold_windows<'s, K: Key, V: Data, A: Aggregate<V>>(
    partials: Records<'s, (K, A::Acc)>,
    stage: StageContext,
    spec: WindowSpec,
    agg: A,
) -> Records<'s, WindowResult<K, A::Out>> {
    let name = stage.name().to_string();
    let by_key = Exchange::new(|r: &Record<(K, A::Acc)>| route(&r.1 .0));
    partials.unary_frontier(by_key, &name, move |initial, _| {
        let mut stash: Stash<(K, A::Acc)> = Stash::default();
        let mut panes: Panes<K, A::Acc> = Panes::new(spec);
        let mut window_cap: Option<Capability<u64>> = None;
        let mut gauge = stage.state_gauge_of::<(K, A::Acc)>();
        let hold = stage.hold();
        let mut checkpoints = stage.checkpointer();
        if checkpoints.resumed_at() > 0 {
            restore_windows(&checkpoints, &initial, &mut panes, &mut stash);
            if let Some((_, end)) = panes.next_window() {
                window_cap = Some(initial.delayed(&(end - 1)));
            }
        }
        move |(input, frontier), output| {
            input.for_each(|cap, data| stash.absorb(&cap, data));
            let limit = frontier_time(frontier);
            checkpoints.at_frontier(limit, || window_entries(&panes, &stash, limit));
            while let Some((t, cap, partials)) = stash.pop_passed(limit) {
                fire_due(&mut panes, &mut window_cap, output, &stage, &agg, t, &hold);
                panes.close_until(t);
                panes.merge(&agg, t, partials);
                if let Some((_, end)) = panes.next_window() {
                    if window_cap.as_ref().is_none_or(|c| *c.time() > end - 1) {
                        window_cap = Some(cap.delayed(&(end - 1)));
                    }
                }
            }
            fire_due(
                &mut panes,
                &mut window_cap,
                output,
                &stage,
                &agg,
                limit,
                &hold,
            );
            hold.waiting(limit, || panes.least_stamp(0, u64::MAX));
            let next = panes.next_window();
            match next {
                Some((_, end)) => {
                    if let Some(c) = window_cap.as_mut() {
                        c.downgrade(&(end - 1));
                    }
                }
                None => window_cap = None,
            }
            stage.gauge().set_open_window(next);
            stage.gauge().set_watermark(held_until(&window_cap, limit));
            gauge.set(panes.accs);
        }
    })
}

/// One entry of a window stage's checkpoint part: a pane's accumulator for a key, or a partial
/// stashed under its stamp and not yet folded.
#[derive(Serialize, Deserialize)]
enum WindowEntry<K, Acc> {
    Pane {
        start: u64,
        key: K,
        acc: Acc,
    },
    Stashed {
        stamp: u64,
        pane: u64,
        key: K,
        acc: Acc,
    },
}

impl<K, Acc> WindowEntry<K, Acc> {
    fn key(&self) -> &K {
        match self {
            WindowEntry::Pane { key, .. } | WindowEntry::Stashed { key, .. } => key,
        }
    }
}

/// A window stage's state for a checkpoint part taken at frontier `limit`.
fn window_entries<'a, K: Key, Acc: Data + Clone>(
    panes: &'a Panes<K, Acc>,
    stash: &'a Stash<(K, Acc)>,
    limit: u64,
) -> impl Iterator<Item = WindowEntry<&'a K, &'a Acc>> {
    let held = panes.panes.iter().flat_map(|(start, accs)| {
        accs.iter().map(|(key, acc)| WindowEntry::Pane {
            start: *start,
            key,
            acc,
        })
    });
    let stashed = stash
        .before(limit)
        .map(|(stamp, (pane, (key, acc)))| WindowEntry::Stashed {
            stamp,
            pane: *pane,
            key,
            acc,
        });
    held.chain(stashed)
}

/// Restores a window stage at checkpoint `at`: the panes of windows still open at `at` and the
/// partials stashed below it. Every window ending at or before `at` has been emitted (its
/// result, stamped below `at`, is downstream already), so it is closed.
fn restore_windows<K: Key, Acc: Data + Clone>(
    checkpoints: &Checkpointer,
    initial: &Capability<u64>,
    panes: &mut Panes<K, Acc>,
    stash: &mut Stash<(K, Acc)>,
) {
    let (spec, at) = (panes.spec, checkpoints.resumed_at());
    for entry in checkpoints.restore(|e: &WindowEntry<K, Acc>| route(e.key())) {
        match entry {
            WindowEntry::Pane { start, key, acc } => {
                let accs = panes.panes.entry(start).or_default();
                if accs.insert(key, acc).is_none() {
                    panes.accs += 1;
                }
            }
            WindowEntry::Stashed {
                stamp,
                pane,
                key,
                acc,
            } => {
                if stamp < at && spec.last_end(pane) > at {
                    stash.restore(initial, stamp, (pane, (key, acc)));
                }
            }
        }
    }
    panes.close_until(at);
}

/// Fires every window whose end is at or below `limit`, in order of end, stamped `end - 1`;
/// its partials' stamps stay on `hold` until the sinks have committed it.
fn fire_due<K: Key, V, A: Aggregate<V>>(
    panes: &mut Panes<K, A::Acc>,
    window_cap: &mut Option<Capability<u64>>,
    output: &mut Out<'_, WindowResult<K, A::Out>>,
    stage: &StageContext,
    agg: &A,
    limit: u64,
    hold: &Hold,
) {
    while let Some((start, end)) = panes.next_window() {
        if end > limit {
            break;
        }
        if hold.is_active() {
            if let Some(least) = panes.least_stamp(start, end) {
                hold.emitted(end - 1, least);
            }
        }
        let cap = window_cap
            .as_mut()
            .expect("a pending window holds a capability; this is a bug in Eddy");
        cap.downgrade(&(end - 1));
        let mut session = output.session(cap);
        let mut emitted = 0;
        panes.fire(agg, start, end, |key, acc| {
            emitted += 1;
            session.give((
                end - 1,
                WindowResult {
                    key,
                    start,
                    end,
                    value: agg.finish(acc),
                },
            ));
        });
        stage.metrics().add_out(emitted);
    }
}

/// Top-N across keys per window: the second, global step of a two-stage aggregation.
///
/// - **Input**: window results (`WindowResult<K, V>`), typically a keyed window's per-key
///   results. **Output**: for each window (`start`, `end`), the `n` results with the highest
///   `score`, unchanged, event time `end - 1`.
/// - **Ranking and ties**: score descending (compared by [`total_cmp`]), then key ascending;
///   the first `n` are kept. A keyed window emits one result per key and window, so the ranking
///   is total and the output the same at any worker count.
/// - **State and steps**: step 1, on every worker, keeps the `n` best of each window within each
///   received batch (nothing between batches) and sends them, exchanged by window; step 2, on
///   the worker the window routes to, merges them into the window's `n` best and emits them when
///   the watermark reaches the window's end. The state gauge counts the results held; it
///   returns to 0 once the watermark has passed every window.
/// - **Late results**: a result stamped at or after its window's end is late (its window may
///   have been emitted): counted, or written to the side output. A window stage's results are
///   stamped `end - 1`, so they are never late.
/// - **Checkpoint**: step 2 writes its ranked lists and stash when its frontier crosses a
///   checkpoint boundary, before ranking anything stamped at or after the frontier it had
///   ranked up to; restored at checkpoint `W`, it keeps the stashed results stamped below `W`
///   and sends no window ending at or before `W` (sent before it).
pub trait TopNPerWindow<K, V> {
    /// Keeps the `n` results of each window with the highest `score`.
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # fn f(bids: eddy_engine::Stream<(u64, u64)>) -> eddy_engine::Stream<WindowResult<u64, u64>> {
    /// // the 3 auctions with the most bids in each 10 s window
    /// bids.key_by("by_auction", |b: &(u64, u64)| b.0)
    ///     .window("bid_counts", WindowSpec::tumbling(10_000), Count)
    ///     .top_n_per_window("top_auctions", 3, |r: &WindowResult<u64, u64>| r.value)
    /// # }
    /// ```
    fn top_n_per_window<N, F>(self, name: &str, n: usize, score: F) -> Stream<WindowResult<K, V>>
    where
        N: PartialOrd + 'static,
        F: Fn(&WindowResult<K, V>) -> N + Clone + Send + Sync + 'static;
}

impl<K: Key + Ord, V: Data + Clone> TopNPerWindow<K, V> for Stream<WindowResult<K, V>> {
    fn top_n_per_window<N, F>(self, name: &str, n: usize, score: F) -> Stream<WindowResult<K, V>>
    where
        N: PartialOrd + 'static,
        F: Fn(&WindowResult<K, V>) -> N + Clone + Send + Sync + 'static,
    {
        self.stage(
            name,
            "top_n",
            format!("top {n} per window"),
            move |input, stage| {
                let score = score.clone();
                let rank = move |a: &WindowResult<K, V>, b: &WindowResult<K, V>| {
                    total_cmp(&score(b), &score(a)).then_with(|| a.key.cmp(&b.key))
                };
                let local = top_n_local(input, stage.clone(), n, rank.clone());
                top_n_global(local, stage, n, rank)
            },
        )
        .exchanged("by window")
        .checkpointed()
    }
}

/// Step 1 of [`TopNPerWindow`]: per received batch, the `n` best results of each window.
fn top_n_local<'s, K: Key, V: Data + Clone>(
    input: Records<'s, WindowResult<K, V>>,
    stage: StageContext,
    n: usize,
    rank: impl Fn(&WindowResult<K, V>, &WindowResult<K, V>) -> Ordering + 'static,
) -> Records<'s, WindowResult<K, V>> {
    let name = format!("{}-local", stage.name());
    input.unary(Local, &name, move |_, _| {
        let mut best: FxHashMap<(u64, u64), Vec<WindowResult<K, V>>> = FxHashMap::default();
        move |input, output| {
            input.for_each(|cap, data| {
                let Some(&t) = cap.least() else { return };
                stage.metrics().add_in(data.len());
                for (event_time, result) in data.drain(..) {
                    if result.end <= t {
                        stage.late(&result, event_time, t, result.end);
                        continue;
                    }
                    let list = best.entry((result.start, result.end)).or_default();
                    rank_insert(list, n, result, &rank);
                }
                let mut kept: Vec<_> = best
                    .drain()
                    .flat_map(|(_, list)| list)
                    .map(|r| (r.end - 1, r))
                    .collect();
                if !kept.is_empty() {
                    output.session(&cap).give_container(&mut kept);
                }
            });
        }
    })
}

/// Step 2 of [`TopNPerWindow`], on the worker each window routes to: merges the steps 1' lists
/// per window and emits a window's `n` best once the frontier reaches its end.
fn top_n_global<'s, K: Key, V: Data + Clone>(
    local: Records<'s, WindowResult<K, V>>,
    stage: StageContext,
    n: usize,
    rank: impl Fn(&WindowResult<K, V>, &WindowResult<K, V>) -> Ordering + 'static,
) -> Records<'s, WindowResult<K, V>> {
    let name = stage.name().to_string();
    let by_window = Exchange::new(|r: &Record<WindowResult<K, V>>| route(&(r.1.start, r.1.end)));
    local.unary_frontier(by_window, &name, move |initial, _| {
        let mut stash: Stash<WindowResult<K, V>> = Stash::default();
        // Per window, by (end, start): its best results so far.
        let mut windows: BTreeMap<(u64, u64), Vec<WindowResult<K, V>>> = BTreeMap::new();
        // Per window, the least stamp of the results ranked into it (for the stage's hold).
        let mut stamps: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        let hold = stage.hold();
        let mut held = 0usize;
        let mut window_cap: Option<Capability<u64>> = None;
        let mut gauge = stage.state_gauge();
        let mut checkpoints = stage.checkpointer();
        let resumed_at = checkpoints.resumed_at();
        if resumed_at > 0 {
            let entries =
                checkpoints.restore(|e: &RankedEntry<WindowResult<K, V>>| route(&e.window()));
            for entry in entries {
                match entry {
                    RankedEntry::Ranked(result) => {
                        held += 1;
                        windows
                            .entry((result.end, result.start))
                            .or_default()
                            .push(result);
                    }
                    RankedEntry::Stashed(stamp, result) if stamp < resumed_at => {
                        stash.restore(&initial, stamp, (result.end - 1, result));
                    }
                    RankedEntry::Stashed(..) => {}
                }
            }
            if let Some(((end, _), _)) = windows.first_key_value() {
                window_cap = Some(initial.delayed(&(end - 1)));
            }
        }
        move |(input, frontier), output| {
            input.for_each(|cap, data| stash.absorb(&cap, data));
            let limit = frontier_time(frontier);
            checkpoints.at_frontier(limit, || {
                let ranked = windows.values().flatten().map(RankedEntry::Ranked);
                let stashed = stash
                    .before(limit)
                    .map(|(stamp, (_, result))| RankedEntry::Stashed(stamp, result));
                ranked.chain(stashed)
            });
            while let Some((t, cap, results)) = stash.pop_passed(limit) {
                for (_, result) in results {
                    let end = result.end;
                    stamps.entry((end, result.start)).or_insert(t);
                    if window_cap.as_ref().is_none_or(|c| *c.time() > end - 1) {
                        window_cap = Some(cap.delayed(&(end - 1)));
                    }
                    let list = windows.entry((end, result.start)).or_default();
                    held -= list.len();
                    rank_insert(list, n, result, &rank);
                    held += list.len();
                }
            }
            while let Some(entry) = windows.first_entry() {
                let end = entry.key().0;
                if end > limit {
                    break;
                }
                let (window, list) = entry.remove_entry();
                held -= list.len();
                if let Some(least) = stamps.remove(&window) {
                    hold.emitted(end - 1, least);
                }
                // A window ending at or before the checkpoint resumed from was sent before it.
                if end <= resumed_at {
                    continue;
                }
                let cap = window_cap
                    .as_mut()
                    .expect("a pending window holds a capability; this is a bug in Eddy");
                cap.downgrade(&(end - 1));
                stage.metrics().add_out(list.len());
                output
                    .session(cap)
                    .give_iterator(list.into_iter().map(|r| (end - 1, r)));
            }
            hold.waiting(limit, || stamps.values().min().copied());
            let oldest = windows
                .first_key_value()
                .map(|((end, start), _)| (*start, *end));
            match oldest {
                Some((_, end)) => {
                    if let Some(c) = window_cap.as_mut() {
                        c.downgrade(&(end - 1));
                    }
                }
                None => window_cap = None,
            }
            stage.gauge().set_open_window(oldest);
            stage.gauge().set_watermark(held_until(&window_cap, limit));
            gauge.set(held);
        }
    })
}

/// One entry of a top-N-per-window stage's checkpoint part: a result ranked among its window's
/// best so far, or one stashed under its stamp and not yet ranked.
#[derive(Serialize, Deserialize)]
enum RankedEntry<R> {
    Ranked(R),
    Stashed(u64, R),
}

impl<K, V> RankedEntry<WindowResult<K, V>> {
    /// The window `(start, end)`, which the stage exchanges by.
    fn window(&self) -> (u64, u64) {
        match self {
            RankedEntry::Ranked(r) | RankedEntry::Stashed(_, r) => (r.start, r.end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Count;

    /// Drives `Panes` as phase 2 does: before merging partials stamped `t`, fire due windows and
    /// close the rest up to `t`. Returns what fired.
    fn step(
        panes: &mut Panes<u64, u64>,
        t: u64,
        partials: Vec<Record<(u64, u64)>>,
    ) -> Vec<(u64, u64, u64, u64)> {
        let mut fired = Vec::new();
        while let Some((start, end)) = panes.next_window() {
            if end > t {
                break;
            }
            panes.fire::<u64, Count>(&Count, start, end, |k, n| fired.push((k, start, end, n)));
        }
        panes.close_until(t);
        panes.merge::<u64, Count>(&Count, 0, partials);
        fired
    }

    #[test]
    fn panes_hold_only_open_windows() {
        let spec = WindowSpec::hopping(100, 25);
        let mut panes: Panes<u64, u64> = Panes::new(spec);
        let mut fired = 0;
        for i in 0..2_000u64 {
            let t = i * 10;
            // ten keys, one partial each, in the pane of time t + 5
            let partials = (0..10).map(|k| ((t + 5) / 25 * 25, (k, 1))).collect();
            fired += step(&mut panes, t, partials).len();
            // open windows span at most size + slide of event time: 5 panes of 10 keys
            assert!(panes.accs <= 50, "{} accumulators at {t}", panes.accs);
            assert_eq!(
                panes.accs,
                panes.panes.values().map(|p| p.len()).sum::<usize>()
            );
        }
        fired += step(&mut panes, u64::MAX, Vec::new()).len();
        assert_eq!(panes.accs, 0);
        assert!(panes.panes.is_empty());
        // every key in every window from [0, 100) on
        assert_eq!(fired, 10 * (20_005 / 25));
    }

    #[test]
    fn close_until_skips_windows_a_worker_held_nothing_of() {
        let mut panes: Panes<u64, u64> = Panes::new(WindowSpec::hopping(10, 5));
        assert!(step(&mut panes, 16, vec![(10, (1, 1))]).is_empty());
        assert_eq!(panes.next_window(), Some((10, 20)));
        let fired = step(&mut panes, u64::MAX, Vec::new());
        assert_eq!(fired, vec![(1, 10, 20, 1)]);
    }
}
