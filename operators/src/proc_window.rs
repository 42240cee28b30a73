//! Tumbling windows in processing time: records are grouped by the wall-clock time at which they
//! reach the window stage, not by their event time.
//!
//! - **Input**: a [`Keyed`] stream of `(key, value)`, exchanged by key.
//! - **Windows**: `[start, end)` of `size` ms of wall-clock time (ms since the Unix epoch),
//!   aligned to epoch 0. A record belongs to the window holding the wall-clock time at which the
//!   worker that owns its key receives it.
//! - **Output**: one [`WindowResult`] per key and window with at least one record: the key,
//!   the window's start and end (in processing time) and the aggregate's result. Its event time,
//!   and timestamp, is the stage's watermark when it is emitted (so it is never late
//!   downstream).
//! - **When it emits**: when the wall clock passes the window's end (the stage wakes itself up
//!   then, data or not), and, for the windows still open, when the input ends (the frontier
//!   empties), so that a bounded input is counted whole.
//! - **State**: one accumulator per key and open window; the stage's state gauge counts them.
//! - **Late records**: none: a record always falls in the current window.
//! - **Checkpoint**: none: processing time cannot be replayed, so a pipeline with this stage
//!   refuses to run with checkpoints.
//!
//! Results are **not deterministic**: which window a record lands in depends on when it
//! arrives, hence on machine speed, batching and the number of workers. Only sums over windows
//! (e.g. each key's total count) are reproducible.

use std::collections::BTreeMap;

use eddy_engine::timely::dataflow::channels::pact::Exchange;
use eddy_engine::timely::dataflow::operators::generic::Operator;
use eddy_engine::timely::dataflow::operators::Capability;
use eddy_engine::{wall_clock_ms, Data, Record, Stream};
use rustc_hash::FxHashMap;

use crate::aggregate::Aggregate;
use crate::keyed::{route, Key, Keyed};
use crate::window::WindowResult;

impl<K: Key, V: Data> Keyed<K, V> {
    /// Aggregates each key's values per tumbling window of `size_ms` of *processing* (wall-clock)
    /// time; emits when the wall clock passes the window's end, or when the input ends (see the
    /// [module docs](crate::proc_window): results are not deterministic).
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # fn f(bids: eddy_engine::Stream<(u64, u64)>) -> eddy_engine::Stream<WindowResult<u64, u64>> {
    /// // bids per bidder in 10 s of wall-clock time
    /// bids.key_by("by_bidder", |b: &(u64, u64)| b.1)
    ///     .processing_time_window("bids_per_bidder", 10_000, Count)
    /// # }
    /// ```
    pub fn processing_time_window<A: Aggregate<V>>(
        self,
        name: &str,
        size_ms: u64,
        agg: A,
    ) -> Stream<WindowResult<K, A::Out>> {
        let size = size_ms.max(1);
        let detail = format!("processing-time tumbling {size} ms");
        self.stream
            .stage(name, "window", detail, move |input, stage| {
                let agg = agg.clone();
                let by_key = Exchange::new(|r: &Record<(K, V)>| route(&r.1 .0));
                let scope = input.scope();
                let op_name = stage.name().to_string();
                input.unary_frontier(by_key, &op_name, move |_, info| {
                    let activator = scope.activator_for(info.address);
                    let mut windows: BTreeMap<u64, FxHashMap<K, A::Acc>> = BTreeMap::new();
                    let mut held: Option<Capability<u64>> = None;
                    let mut gauge = stage.state_gauge();
                    let hold = stage.hold();
                    // Per window (by start), the least stamp of its records.
                    let mut stamps: BTreeMap<u64, u64> = BTreeMap::new();
                    let mut accs = 0usize;
                    move |(input, frontier), output| {
                        input.for_each(|cap, data| {
                            stage.metrics().add_in(data.len());
                            if let (Some(&t), Some(c)) = (cap.least(), cap.retain_least(0)) {
                                if held.as_ref().is_none_or(|h| *h.time() > t) {
                                    held = Some(c);
                                }
                            }
                            let now = wall_clock_ms();
                            let start = now - now % size;
                            if let Some(&t) = cap.least() {
                                stamps.entry(start).or_insert(t);
                            }
                            let window = windows.entry(start).or_default();
                            for (_, (key, value)) in data.drain(..) {
                                let acc = window.entry(key).or_insert_with(|| {
                                    accs += 1;
                                    agg.create()
                                });
                                agg.add(acc, value);
                            }
                        });
                        let watermark = frontier.frontier().iter().min().copied();
                        if let (Some(h), Some(w)) = (held.as_mut(), watermark) {
                            if *h.time() < w {
                                h.downgrade(&w);
                            }
                        }
                        // Due: windows whose end the wall clock has passed; all at the end.
                        let now = wall_clock_ms();
                        while let Some(entry) = windows.first_entry() {
                            let start = *entry.key();
                            if watermark.is_some() && start + size > now {
                                break;
                            }
                            let Some(cap) = held.as_ref() else { break };
                            let stamp = *cap.time();
                            if let Some(least) = stamps.remove(&start) {
                                hold.emitted(stamp, least);
                            }
                            let mut session = output.session(cap);
                            let mut emitted = 0;
                            for (key, acc) in entry.remove() {
                                accs -= 1;
                                emitted += 1;
                                let value = agg.finish(acc);
                                let end = start + size;
                                session.give((
                                    stamp,
                                    WindowResult {
                                        key,
                                        start,
                                        end,
                                        value,
                                    },
                                ));
                            }
                            stage.metrics().add_out(emitted);
                        }
                        gauge.set(accs);
                        let limit = watermark.unwrap_or(u64::MAX);
                        hold.waiting(limit, || stamps.values().min().copied());
                        match windows.first_key_value() {
                            Some((start, _)) => {
                                let wait = (start + size).saturating_sub(now).max(1);
                                activator.activate_after(std::time::Duration::from_millis(wait));
                            }
                            None => held = None,
                        }
                    }
                })
            })
            .exchanged("by key")
    }
}
