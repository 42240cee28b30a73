//! Aggregates for windows: the [`Aggregate`] trait and the built-in ones.
//!
//! An aggregate folds the values of one key in one window: `create` an accumulator, `add`
//! values to it, `merge` two accumulators (partial results of panes or of workers), and
//! `finish` it into the output. `merge` must agree with `add`: adding values to two
//! accumulators and merging them gives the same result as adding all to one.
//!
//! Built in: [`Count`], [`Sum`], [`Min`], [`Max`], [`Avg`]; [`MaxBy`] and [`MinBy`] (every value
//! with the extreme projection, ties kept); [`ArgMax`] and [`ArgMin`] (one value, ties to the
//! smallest value); [`CountDistinct`] (exact, a set of projections); [`TopN`] (the `n` best by
//! a score, ties to the smallest values). Where a result could depend on the order values
//! arrive in — which differs between worker counts and batchings — the tie rule makes it
//! depend only on the set of values ([`ExtremeBy`] needs [`ExtremeBy::sorted`] for that).
//! Projections that are only `PartialOrd` (floats) compare by [`total_cmp`]: NaN lowest.
//!
//! Any type implementing [`Aggregate`] works in keyed windows (`window`) and global ones
//! (`window_all`): the trait is the user-defined aggregate.

use std::cmp::Ordering;
use std::hash::Hash;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use eddy_engine::Data;
use rustc_hash::FxHashSet;

/// A user-defined aggregate over values of type `V`.
///
/// ```
/// use eddy_operators::Aggregate;
///
/// /// The longest string.
/// #[derive(Clone)]
/// struct Longest;
///
/// impl Aggregate<String> for Longest {
///     type Acc = String;
///     type Out = String;
///     fn create(&self) -> String { String::new() }
///     fn add(&self, acc: &mut String, value: String) {
///         if value.len() > acc.len() { *acc = value; }
///     }
///     fn merge(&self, acc: &mut String, other: String) { self.add(acc, other) }
///     fn finish(&self, acc: String) -> String { acc }
/// }
/// let mut acc = Longest.create();
/// Longest.add(&mut acc, "ab".into());
/// Longest.add(&mut acc, "abc".into());
/// assert_eq!(Longest.finish(acc), "abc");
/// ```
pub trait Aggregate<V>: Clone + Send + Sync + 'static {
    /// The accumulator: partial state of one key in one window (or one pane of it).
    type Acc: Data + Clone;
    /// The result.
    type Out: Data;
    /// A new, empty accumulator.
    fn create(&self) -> Self::Acc;
    /// Adds one value.
    fn add(&self, acc: &mut Self::Acc, value: V);
    /// Merges another accumulator into `acc`.
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc);
    /// Turns the accumulator into the result.
    fn finish(&self, acc: Self::Acc) -> Self::Out;
}

/// Counts values.
#[derive(Clone, Copy, Debug, Default)]
pub struct Count;

impl<V> Aggregate<V> for Count {
    type Acc = u64;
    type Out = u64;
    fn create(&self) -> u64 {
        0
    }
    #[inline]
    fn add(&self, acc: &mut u64, _value: V) {
        *acc += 1;
    }
    fn merge(&self, acc: &mut u64, other: u64) {
        *acc += other;
    }
    fn finish(&self, acc: u64) -> u64 {
        acc
    }
}

/// What `Sum`, `Min`, `Max` and `Avg` can read from a value.
pub trait Number: Data + Copy + PartialOrd + std::ops::Add<Output = Self> + Default {
    /// As a float, for averages.
    fn as_f64(self) -> f64;
}

macro_rules! number {
    ($($t:ty),*) => {$(
        impl Number for $t {
            fn as_f64(self) -> f64 { self as f64 }
        }
    )*};
}
number!(u64, i64, u32, i32, usize, f64, f32);

/// Sums a number read from each value.
#[derive(Clone, Debug)]
pub struct Sum<F>(pub F);

impl<V, N: Number, F: Fn(&V) -> N + Clone + Send + Sync + 'static> Aggregate<V> for Sum<F> {
    type Acc = N;
    type Out = N;
    fn create(&self) -> N {
        N::default()
    }
    #[inline]
    fn add(&self, acc: &mut N, value: V) {
        *acc = *acc + (self.0)(&value);
    }
    fn merge(&self, acc: &mut N, other: N) {
        *acc = *acc + other;
    }
    fn finish(&self, acc: N) -> N {
        acc
    }
}

/// Keeps the smaller (`KEEP_MAX == false`) or larger of two optional numbers.
fn pick<N: PartialOrd, const KEEP_MAX: bool>(acc: &mut Option<N>, n: N) {
    let replace = match acc {
        None => true,
        Some(a) => (KEEP_MAX && n > *a) || (!KEEP_MAX && n < *a),
    };
    if replace {
        *acc = Some(n);
    }
}

/// An aggregate keeping the extreme number read from the values (`None` for an empty window,
/// which never fires): `Min` keeps the smallest, `Max` the largest.
macro_rules! extreme {
    ($(#[$doc:meta])* $name:ident, keep_max = $keep_max:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name<F>(pub F);

        impl<V, N: Number, F: Fn(&V) -> N + Clone + Send + Sync + 'static> Aggregate<V> for $name<F> {
            type Acc = Option<N>;
            type Out = Option<N>;
            fn create(&self) -> Option<N> {
                None
            }
            #[inline]
            fn add(&self, acc: &mut Option<N>, value: V) {
                pick::<N, $keep_max>(acc, (self.0)(&value));
            }
            fn merge(&self, acc: &mut Option<N>, other: Option<N>) {
                if let Some(n) = other {
                    pick::<N, $keep_max>(acc, n);
                }
            }
            fn finish(&self, acc: Option<N>) -> Option<N> {
                acc
            }
        }
    };
}

extreme!(
    /// The smallest number read from the values.
    Min,
    keep_max = false
);
extreme!(
    /// The largest number read from the values.
    Max,
    keep_max = true
);

/// The mean of a number read from the values.
#[derive(Clone, Debug)]
pub struct Avg<F>(pub F);

/// Sum and count, the accumulator of [`Avg`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SumCount {
    /// The sum so far.
    pub sum: f64,
    /// How many values.
    pub count: u64,
}

impl<V, N: Number, F: Fn(&V) -> N + Clone + Send + Sync + 'static> Aggregate<V> for Avg<F> {
    type Acc = SumCount;
    type Out = f64;
    fn create(&self) -> SumCount {
        SumCount::default()
    }
    #[inline]
    fn add(&self, acc: &mut SumCount, value: V) {
        acc.sum += (self.0)(&value).as_f64();
        acc.count += 1;
    }
    fn merge(&self, acc: &mut SumCount, other: SumCount) {
        acc.sum += other.sum;
        acc.count += other.count;
    }
    fn finish(&self, acc: SumCount) -> f64 {
        if acc.count == 0 {
            0.0
        } else {
            acc.sum / acc.count as f64
        }
    }
}

/// A total order on projections that are only `PartialOrd` (floats): values incomparable with
/// themselves (NaN) come first, below every other value, and equal to each other; the rest are
/// ordered by `partial_cmp`. For `Ord` projections this is their `cmp`.
pub fn total_cmp<N: PartialOrd>(a: &N, b: &N) -> Ordering {
    a.partial_cmp(b).unwrap_or_else(|| {
        let a_nan = a.partial_cmp(a).is_none();
        let b_nan = b.partial_cmp(b).is_none();
        b_nan.cmp(&a_nan)
    })
}

/// Keeps `list` sorted by `cmp` and at most `n` long: inserts `item` after every entry not
/// greater than it (so equal entries keep their arrival order), then drops what falls past `n`.
pub(crate) fn rank_insert<T>(
    list: &mut Vec<T>,
    n: usize,
    item: T,
    cmp: impl Fn(&T, &T) -> Ordering,
) {
    if n == 0 {
        return;
    }
    if list.len() >= n && list.last().is_some_and(|last| cmp(&item, last).is_ge()) {
        return;
    }
    let at = list.partition_point(|x| cmp(x, &item).is_le());
    list.insert(at, item);
    list.truncate(n);
}

/// Sorts tied values ascending, for [`ExtremeBy::sorted`].
fn sort_values<V: Ord>(values: &mut [V]) {
    values.sort();
}

/// The values with the extreme projection, **all of them when tied**: [`MaxBy`] keeps the
/// values with the largest `by(value)`, [`MinBy`] those with the smallest (projections compare
/// by [`total_cmp`], so a NaN float is below every number).
///
/// Order of the tied values: with [`ExtremeBy::sorted`] (values that are `Ord`), ascending by
/// the values' order, the same at any worker count; without it, the order in which they were
/// added and merged, which depends on batching and the worker count.
///
/// ```
/// use eddy_operators::{Aggregate, MaxBy, MinBy};
///
/// let agg = MaxBy::new(|v: &(u64, u64)| v.1).sorted();
/// let mut acc = agg.create();
/// for v in [(3, 9), (1, 5), (2, 9)] {
///     agg.add(&mut acc, v);
/// }
/// assert_eq!(agg.finish(acc), vec![(2, 9), (3, 9)]);
///
/// let agg = MinBy::new(|v: &(u64, u64)| v.1);
/// let mut acc = agg.create();
/// agg.add(&mut acc, (3, 9));
/// agg.add(&mut acc, (1, 5));
/// assert_eq!(agg.finish(acc), vec![(1, 5)]);
/// ```
pub struct ExtremeBy<V, N, F, const MAX: bool> {
    by: F,
    sort: Option<fn(&mut [V])>,
    _types: PhantomData<fn(&V) -> N>,
}

/// Arg-max keeping ties: the values with the largest `by(value)`. See [`ExtremeBy`].
pub type MaxBy<V, N, F> = ExtremeBy<V, N, F, true>;
/// Arg-min keeping ties: the values with the smallest `by(value)`. See [`ExtremeBy`].
pub type MinBy<V, N, F> = ExtremeBy<V, N, F, false>;

impl<V, N, F: Clone, const MAX: bool> Clone for ExtremeBy<V, N, F, MAX> {
    fn clone(&self) -> Self {
        ExtremeBy {
            by: self.by.clone(),
            sort: self.sort,
            _types: PhantomData,
        }
    }
}

impl<V, N, F, const MAX: bool> std::fmt::Debug for ExtremeBy<V, N, F, MAX> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(if MAX { "MaxBy" } else { "MinBy" })
            .field("sorted", &self.sort.is_some())
            .finish()
    }
}

impl<V, N, F: Fn(&V) -> N, const MAX: bool> ExtremeBy<V, N, F, MAX> {
    /// The values with the extreme `by(value)`, ties in the order they were added and merged.
    pub fn new(by: F) -> Self {
        ExtremeBy {
            by,
            sort: None,
            _types: PhantomData,
        }
    }

    /// Returns tied values in ascending order of the values themselves, so the result is the
    /// same at any worker count.
    pub fn sorted(mut self) -> Self
    where
        V: Ord,
    {
        self.sort = Some(sort_values::<V>);
        self
    }
}

impl<V, N, F, const MAX: bool> Aggregate<V> for ExtremeBy<V, N, F, MAX>
where
    V: Data + Clone,
    N: PartialOrd + 'static,
    F: Fn(&V) -> N + Clone + Send + Sync + 'static,
    Vec<V>: DeserializeOwned,
{
    type Acc = Vec<V>;
    type Out = Vec<V>;
    fn create(&self) -> Vec<V> {
        Vec::new()
    }
    #[inline]
    fn add(&self, acc: &mut Vec<V>, value: V) {
        let Some(best) = acc.first() else {
            acc.push(value);
            return;
        };
        let order = total_cmp(&(self.by)(&value), &(self.by)(best));
        match if MAX { order } else { order.reverse() } {
            Ordering::Greater => {
                acc.clear();
                acc.push(value);
            }
            Ordering::Equal => acc.push(value),
            Ordering::Less => {}
        }
    }
    fn merge(&self, acc: &mut Vec<V>, other: Vec<V>) {
        for v in other {
            self.add(acc, v);
        }
    }
    fn finish(&self, mut acc: Vec<V>) -> Vec<V> {
        if let Some(sort) = self.sort {
            sort(&mut acc);
        }
        acc
    }
}

/// One value with the extreme projection: [`ArgMax`] the value with the largest `by(value)`,
/// [`ArgMin`] the one with the smallest (projections compare by [`total_cmp`]). **Ties** go to
/// the smallest value by the values' own order, so the result is the same at any worker count.
/// `None` only for an empty accumulator (a window never fires empty).
///
/// ```
/// use eddy_operators::{Aggregate, ArgMax, ArgMin};
///
/// // (bidder, price): the highest price, ties to the smallest bidder id
/// let agg = ArgMax::new(|b: &(u64, u64)| b.1);
/// let mut acc = agg.create();
/// for b in [(7, 30), (4, 30), (9, 10)] {
///     agg.add(&mut acc, b);
/// }
/// assert_eq!(agg.finish(acc), Some((4, 30)));
///
/// let agg = ArgMin::new(|b: &(u64, u64)| b.1);
/// let mut acc = agg.create();
/// agg.add(&mut acc, (7, 30));
/// agg.add(&mut acc, (9, 10));
/// assert_eq!(agg.finish(acc), Some((9, 10)));
/// ```
pub struct ArgBy<V, N, F, const MAX: bool> {
    by: F,
    _types: PhantomData<fn(&V) -> N>,
}

/// The value with the largest `by(value)`, ties to the smallest value. See [`ArgBy`].
pub type ArgMax<V, N, F> = ArgBy<V, N, F, true>;
/// The value with the smallest `by(value)`, ties to the smallest value. See [`ArgBy`].
pub type ArgMin<V, N, F> = ArgBy<V, N, F, false>;

impl<V, N, F: Clone, const MAX: bool> Clone for ArgBy<V, N, F, MAX> {
    fn clone(&self) -> Self {
        ArgBy {
            by: self.by.clone(),
            _types: PhantomData,
        }
    }
}

impl<V, N, F, const MAX: bool> std::fmt::Debug for ArgBy<V, N, F, MAX> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if MAX { "ArgMax" } else { "ArgMin" })
    }
}

impl<V, N, F: Fn(&V) -> N, const MAX: bool> ArgBy<V, N, F, MAX> {
    /// The value with the extreme `by(value)`.
    pub fn new(by: F) -> Self {
        ArgBy {
            by,
            _types: PhantomData,
        }
    }

    /// Whether `a` wins over `b`: a more extreme projection, or an equal one and a smaller value.
    fn beats(&self, a: &V, b: &V) -> bool
    where
        V: Ord,
        N: PartialOrd,
    {
        let order = total_cmp(&(self.by)(a), &(self.by)(b));
        match if MAX { order } else { order.reverse() } {
            Ordering::Greater => true,
            Ordering::Equal => a < b,
            Ordering::Less => false,
        }
    }
}

impl<V, N, F, const MAX: bool> Aggregate<V> for ArgBy<V, N, F, MAX>
where
    V: Data + Clone + Ord,
    N: PartialOrd + 'static,
    F: Fn(&V) -> N + Clone + Send + Sync + 'static,
    Option<V>: DeserializeOwned,
{
    type Acc = Option<V>;
    type Out = Option<V>;
    fn create(&self) -> Option<V> {
        None
    }
    #[inline]
    fn add(&self, acc: &mut Option<V>, value: V) {
        if acc.as_ref().is_none_or(|best| self.beats(&value, best)) {
            *acc = Some(value);
        }
    }
    fn merge(&self, acc: &mut Option<V>, other: Option<V>) {
        if let Some(v) = other {
            self.add(acc, v);
        }
    }
    fn finish(&self, acc: Option<V>) -> Option<V> {
        acc
    }
}

/// Exact count of distinct `by(value)`: the accumulator is the set of projections seen, so its
/// size grows with the number of distinct projections per key and window (or pane).
///
/// ```
/// use eddy_operators::{Aggregate, CountDistinct};
///
/// // distinct bidders among (bidder, price) bids
/// let agg = CountDistinct::new(|b: &(u64, u64)| b.0);
/// let mut acc = agg.create();
/// for b in [(1, 10), (2, 10), (1, 99)] {
///     agg.add(&mut acc, b);
/// }
/// assert_eq!(agg.finish(acc), 2);
/// ```
pub struct CountDistinct<V, N, F> {
    by: F,
    _types: PhantomData<fn(&V) -> N>,
}

impl<V, N, F: Clone> Clone for CountDistinct<V, N, F> {
    fn clone(&self) -> Self {
        CountDistinct {
            by: self.by.clone(),
            _types: PhantomData,
        }
    }
}

impl<V, N, F> std::fmt::Debug for CountDistinct<V, N, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CountDistinct")
    }
}

impl<V, N, F: Fn(&V) -> N> CountDistinct<V, N, F> {
    /// Counts the distinct values of `by(value)`.
    pub fn new(by: F) -> Self {
        CountDistinct {
            by,
            _types: PhantomData,
        }
    }
}

impl<V, N, F> Aggregate<V> for CountDistinct<V, N, F>
where
    V: 'static,
    N: Data + Hash + Eq + Clone,
    F: Fn(&V) -> N + Clone + Send + Sync + 'static,
{
    type Acc = FxHashSet<N>;
    type Out = u64;
    fn create(&self) -> FxHashSet<N> {
        FxHashSet::default()
    }
    #[inline]
    fn add(&self, acc: &mut FxHashSet<N>, value: V) {
        acc.insert((self.by)(&value));
    }
    fn merge(&self, acc: &mut FxHashSet<N>, mut other: FxHashSet<N>) {
        if other.len() > acc.len() {
            std::mem::swap(acc, &mut other);
        }
        acc.extend(other);
    }
    fn finish(&self, acc: FxHashSet<N>) -> u64 {
        acc.len() as u64
    }
}

/// The `n` values with the highest `score(value)`, best first. **Ties**: values are ranked by
/// score descending (compared by [`total_cmp`]), then by the values' own order ascending; the
/// first `n` in that ranking are kept. So when several values tie at the boundary, the smallest
/// ones are kept, and the result is the same at any worker count. Equal values count once each
/// (a value that arrives twice can take two places). The accumulator holds at most `n` values.
///
/// ```
/// use eddy_operators::{Aggregate, TopN};
///
/// // (bidder, price): the two highest prices; (1, 50) and (3, 50) tie, (1, 50) is smaller
/// let agg = TopN::new(2, |b: &(u64, u64)| b.1);
/// let mut acc = agg.create();
/// for b in [(3, 50), (2, 70), (1, 50), (4, 10)] {
///     agg.add(&mut acc, b);
/// }
/// assert_eq!(agg.finish(acc), vec![(2, 70), (1, 50)]);
/// ```
pub struct TopN<V, N, F> {
    n: usize,
    score: F,
    _types: PhantomData<fn(&V) -> N>,
}

impl<V, N, F: Clone> Clone for TopN<V, N, F> {
    fn clone(&self) -> Self {
        TopN {
            n: self.n,
            score: self.score.clone(),
            _types: PhantomData,
        }
    }
}

impl<V, N, F> std::fmt::Debug for TopN<V, N, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopN").field("n", &self.n).finish()
    }
}

impl<V, N, F: Fn(&V) -> N> TopN<V, N, F> {
    /// The `n` values with the highest `score(value)`.
    pub fn new(n: usize, score: F) -> Self {
        TopN {
            n,
            score,
            _types: PhantomData,
        }
    }
}

impl<V: Ord, N: PartialOrd, F: Fn(&V) -> N> TopN<V, N, F> {
    /// The ranking: score descending, then value ascending.
    fn rank(&self, a: &V, b: &V) -> Ordering {
        total_cmp(&(self.score)(b), &(self.score)(a)).then_with(|| a.cmp(b))
    }
}

impl<V, N, F> Aggregate<V> for TopN<V, N, F>
where
    V: Data + Clone + Ord,
    N: PartialOrd + 'static,
    F: Fn(&V) -> N + Clone + Send + Sync + 'static,
    Vec<V>: DeserializeOwned,
{
    type Acc = Vec<V>;
    type Out = Vec<V>;
    fn create(&self) -> Vec<V> {
        Vec::new()
    }
    #[inline]
    fn add(&self, acc: &mut Vec<V>, value: V) {
        rank_insert(acc, self.n, value, |a, b| self.rank(a, b));
    }
    fn merge(&self, acc: &mut Vec<V>, other: Vec<V>) {
        for v in other {
            self.add(acc, v);
        }
    }
    fn finish(&self, acc: Vec<V>) -> Vec<V> {
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold<V, A: Aggregate<V>>(agg: &A, values: impl IntoIterator<Item = V>) -> A::Acc {
        let mut acc = agg.create();
        for v in values {
            agg.add(&mut acc, v);
        }
        acc
    }

    #[test]
    fn merge_agrees_with_add() {
        let values = [5u64, 1, 9, 9, 3];
        let (a, b) = values.split_at(2);
        let whole = fold(&Sum(|v: &u64| *v), values);
        let mut parts = fold(&Sum(|v: &u64| *v), a.iter().copied());
        Sum(|v: &u64| *v).merge(&mut parts, fold(&Sum(|v: &u64| *v), b.iter().copied()));
        assert_eq!(whole, parts);
        assert_eq!(
            Min(|v: &u64| *v).finish(fold(&Min(|v: &u64| *v), values)),
            Some(1)
        );
        assert_eq!(
            Max(|v: &u64| *v).finish(fold(&Max(|v: &u64| *v), values)),
            Some(9)
        );
        assert_eq!(
            Avg(|v: &u64| *v).finish(fold(&Avg(|v: &u64| *v), values)),
            27.0 / 5.0
        );
        assert_eq!(
            <Count as Aggregate<u64>>::finish(&Count, fold(&Count, values)),
            5
        );
    }

    #[test]
    fn total_cmp_puts_nan_first() {
        assert_eq!(total_cmp(&f64::NAN, &1.0), Ordering::Less);
        assert_eq!(total_cmp(&1.0, &f64::NAN), Ordering::Greater);
        assert_eq!(total_cmp(&f64::NAN, &f64::NAN), Ordering::Equal);
        assert_eq!(total_cmp(&2.0, &1.0), Ordering::Greater);
        assert_eq!(total_cmp(&3u64, &3), Ordering::Equal);
    }

    #[test]
    fn rank_insert_keeps_n_in_order() {
        let mut list = Vec::new();
        for x in [5, 1, 9, 3, 7, 3] {
            rank_insert(&mut list, 3, x, |a: &i32, b: &i32| a.cmp(b));
        }
        assert_eq!(list, vec![1, 3, 3]);
        let mut none = Vec::new();
        rank_insert(&mut none, 0, 1, |a: &i32, b: &i32| a.cmp(b));
        assert!(none.is_empty());
    }

    /// Every split of the values into two accumulators, merged, gives the fold of all of them.
    fn check_merge<V: Clone, A: Aggregate<V>>(agg: &A, values: &[V])
    where
        A::Out: PartialEq + std::fmt::Debug,
    {
        let whole = agg.finish(fold(agg, values.iter().cloned()));
        for cut in 0..=values.len() {
            let (a, b) = values.split_at(cut);
            let mut left = fold(agg, b.iter().cloned());
            agg.merge(&mut left, fold(agg, a.iter().cloned()));
            assert_eq!(agg.finish(left), whole, "split at {cut}");
        }
    }

    #[test]
    fn new_aggregates_merge_like_add() {
        let values = [(3u64, 9u64), (1, 5), (2, 9), (4, 5), (0, 1), (5, 9)];
        check_merge(&MaxBy::new(|v: &(u64, u64)| v.1).sorted(), &values);
        check_merge(&MinBy::new(|v: &(u64, u64)| v.1).sorted(), &values);
        check_merge(&ArgMax::new(|v: &(u64, u64)| v.1), &values);
        check_merge(&ArgMin::new(|v: &(u64, u64)| v.1), &values);
        check_merge(&CountDistinct::new(|v: &(u64, u64)| v.1), &values);
        for n in 0..=7 {
            check_merge(&TopN::new(n, |v: &(u64, u64)| v.1), &values);
        }
        let agg = TopN::new(4, |v: &(u64, u64)| v.1);
        assert_eq!(
            agg.finish(fold(&agg, values)),
            vec![(2, 9), (3, 9), (5, 9), (1, 5)]
        );
        let agg = ArgMin::new(|v: &(u64, u64)| v.1 / 5);
        assert_eq!(agg.finish(fold(&agg, values)), Some((0, 1)));
        let agg = MinBy::new(|v: &(u64, u64)| v.1).sorted();
        assert_eq!(agg.finish(fold(&agg, values)), vec![(0, 1)]);
        let agg = CountDistinct::new(|v: &(u64, u64)| v.1);
        assert_eq!(agg.finish(fold(&agg, values)), 3);
    }

    #[test]
    fn float_scores_rank_nan_last() {
        let agg = TopN::new(
            2,
            |v: &(u64, u64)| if v.0 == 0 { f64::NAN } else { v.1 as f64 },
        );
        assert_eq!(
            agg.finish(fold(&agg, [(0, 100), (1, 1), (2, 2)])),
            vec![(2, 2), (1, 1)]
        );
    }

    #[test]
    fn max_by_keeps_all_ties() {
        let agg = MaxBy::new(|v: &(u64, u64)| v.1);
        let mut acc = fold(&agg, [(1, 5), (2, 9), (3, 9), (4, 2)]);
        agg.merge(&mut acc, fold(&agg, [(5, 9), (6, 1)]));
        acc.sort();
        assert_eq!(acc, vec![(2, 9), (3, 9), (5, 9)]);
    }
}
