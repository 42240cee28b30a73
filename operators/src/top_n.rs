//! Updating top-N per key: each key's `n` best records so far, numbered by rank, as a change
//! log (Flink SQL's `ROW_NUMBER() OVER (PARTITION BY k ORDER BY s DESC) <= n` over an
//! append-only input; with `n = 1` and a time as the score, the latest record per key).
//!
//! - **Input**: a [`Keyed`] stream of `(key, value)`, append-only; values must be `Ord` (ties
//!   are broken by it).
//! - **Output**: [`Change`]`<`[`Ranked`]`<K, V>>`: a row `(key, rank, value)` for each of the
//!   key's `n` best values, `rank` from 1. **Ranking**: by `score(value)` descending (compared
//!   by [`total_cmp`], so a NaN float is below every number), then by the value's own order
//!   ascending — the order of the [`TopN`](crate::TopN) aggregate, so among values tied at
//!   the boundary the smallest stay. Equal values count once each (a value that arrives twice
//!   takes two ranks). When a value enters the top `n`, the rows whose rank changed are
//!   retracted and inserted again with their new ranks, and the value pushed past `n` (if
//!   any) is retracted: a new best value of a full key changes `2n` rows, a new `n`-th best
//!   two.
//! - **When it emits**: built on the keyed process ([`crate::process`]): the step at event
//!   time `t` runs once the watermark passes `t` and handles the records with event time `t`
//!   in order of value; at the end of the step each key whose ranking changed emits the
//!   difference between its ranking before and after the step — retractions first, then
//!   insertions — with event time and timestamp `t`. So the changes are consolidated per row
//!   and timestamp (a value that enters and leaves within one step emits nothing), and
//!   summing the diffs of the changes stamped `≤ T` gives the top `n` of each key over the
//!   records with event time `≤ T`. The output is the same at any number of workers and
//!   whatever the batching.
//! - **Late records**: as the keyed process: a record whose event time is below the watermark
//!   it arrives at (its step may have run) is late — counted, or written to the side output.
//! - **State**: per key, its `n` best values (and, during a step that changed them, the
//!   ranking as last emitted). Keys are never forgotten: the state grows with the number of
//!   keys, as Flink's top-N without a state TTL. The gauge counts keys plus pending step-end
//!   timers.
//! - **Checkpoint**: the per-key rankings at frontier `W`, plus the keyed process's waiting
//!   records (event times `≥ W`).

use std::marker::PhantomData;

use eddy_engine::{Change, Data, Stream};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::aggregate::{rank_insert, total_cmp};
use crate::keyed::{Key, Keyed};
use crate::process::{KeyedProcess, ProcessContext};

/// One row of an updating top-N: a key's value at a rank.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ranked<K, V> {
    /// The key.
    pub key: K,
    /// The rank, from 1 (the best).
    pub rank: u64,
    /// The value at that rank.
    pub value: V,
}

impl<K: Key, V: Data + Ord + Clone> Keyed<K, V> {
    /// Each key's `n` values with the highest `score(value)` (ties: the smaller value first),
    /// with their ranks, as a change log updated at the end of each event-time step (see the
    /// [module docs](crate::top_n)).
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # use eddy_engine::{Change, Stream};
    /// # fn f(bids: Keyed<u64, (u64, u64)>) -> Stream<Change<Ranked<u64, (u64, u64)>>> {
    /// // per auction, the three highest (price, bidder) bids
    /// bids.top_n_updating("top_bids", 3, |b: &(u64, u64)| b.0)
    /// # }
    /// ```
    pub fn top_n_updating<N, F>(
        self,
        name: &str,
        n: usize,
        score: F,
    ) -> Stream<Change<Ranked<K, V>>>
    where
        N: PartialOrd + 'static,
        F: Fn(&V) -> N + Clone + Send + Sync + 'static,
    {
        self.process(
            name,
            TopNUpdating {
                n,
                score,
                _types: PhantomData,
            },
        )
    }
}

/// The keyed process behind [`Keyed::top_n_updating`].
struct TopNUpdating<V, N, F> {
    n: usize,
    score: F,
    _types: PhantomData<fn(&V) -> N>,
}

impl<V, N, F: Clone> Clone for TopNUpdating<V, N, F> {
    fn clone(&self) -> Self {
        TopNUpdating {
            n: self.n,
            score: self.score.clone(),
            _types: PhantomData,
        }
    }
}

/// A key's ranking, and the ranking as last emitted while a step is changing it.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "V: Serialize", deserialize = "V: DeserializeOwned"))]
struct Ranking<V> {
    best: Vec<V>,
    shown: Option<Vec<V>>,
}

impl<V> Default for Ranking<V> {
    fn default() -> Self {
        Ranking {
            best: Vec::new(),
            shown: None,
        }
    }
}

impl<K, V, N, F> KeyedProcess<K, V> for TopNUpdating<V, N, F>
where
    K: Key,
    V: Data + Ord + Clone,
    N: PartialOrd + 'static,
    F: Fn(&V) -> N + Clone + Send + Sync + 'static,
{
    type State = Ranking<V>;
    type Out = Change<Ranked<K, V>>;

    fn on_record(
        &mut self,
        _key: &K,
        now: u64,
        value: V,
        ranking: &mut Ranking<V>,
        ctx: &mut ProcessContext<Self::Out>,
    ) {
        let cmp =
            |a: &V, b: &V| total_cmp(&(self.score)(b), &(self.score)(a)).then_with(|| a.cmp(b));
        let enters = self.n > 0
            && (ranking.best.len() < self.n
                || ranking
                    .best
                    .last()
                    .is_some_and(|last| cmp(&value, last).is_lt()));
        if !enters {
            return;
        }
        if ranking.shown.is_none() {
            ranking.shown = Some(ranking.best.clone());
            ctx.set_timer(now);
        }
        rank_insert(&mut ranking.best, self.n, value, cmp);
    }

    fn on_timer(
        &mut self,
        key: &K,
        _now: u64,
        ranking: &mut Ranking<V>,
        ctx: &mut ProcessContext<Self::Out>,
    ) {
        let Some(shown) = ranking.shown.take() else {
            return;
        };
        let row = |rank: usize, value: &V| Ranked {
            key: key.clone(),
            rank: rank as u64 + 1,
            value: value.clone(),
        };
        let changed = |i: &usize| shown.get(*i) != ranking.best.get(*i);
        let ranks = 0..shown.len().max(ranking.best.len());
        for i in ranks.clone().filter(changed) {
            if let Some(old) = shown.get(i) {
                ctx.emit(Change::retract(row(i, old)));
            }
        }
        for i in ranks.filter(changed) {
            if let Some(new) = ranking.best.get(i) {
                ctx.emit(Change::insert(row(i, new)));
            }
        }
    }
}
