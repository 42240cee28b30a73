//! Aggregates for windows: the [`Aggregate`] trait and the built-in ones.
//!
//! An aggregate folds the values of one key in one window: `create` an accumulator, `add`
//! values to it, `merge` two accumulators (partial results of panes or of workers), and
//! `finish` it into the output. `merge` must agree with `add`: adding values to two
//! accumulators and merging them gives the same result as adding all to one.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use eddy_engine::Data;

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

/// Arg-max: the values with the largest key read from them, **all of them when tied**, in no
/// particular order.
#[derive(Debug)]
pub struct MaxBy<V, N, F> {
    by: F,
    _types: PhantomData<fn(&V) -> N>,
}

impl<V, N, F: Clone> Clone for MaxBy<V, N, F> {
    fn clone(&self) -> Self {
        MaxBy {
            by: self.by.clone(),
            _types: PhantomData,
        }
    }
}

impl<V, N, F: Fn(&V) -> N> MaxBy<V, N, F> {
    /// The values with the largest `by(value)`.
    pub fn new(by: F) -> Self {
        MaxBy {
            by,
            _types: PhantomData,
        }
    }
}

impl<V, N, F> Aggregate<V> for MaxBy<V, N, F>
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
        match acc
            .first()
            .map(|best| (self.by)(&value).partial_cmp(&(self.by)(best)))
        {
            None => acc.push(value),
            Some(Some(std::cmp::Ordering::Greater)) => {
                acc.clear();
                acc.push(value);
            }
            Some(Some(std::cmp::Ordering::Equal)) => acc.push(value),
            Some(_) => {}
        }
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
    fn max_by_keeps_all_ties() {
        let agg = MaxBy::new(|v: &(u64, u64)| v.1);
        let mut acc = fold(&agg, [(1, 5), (2, 9), (3, 9), (4, 2)]);
        agg.merge(&mut acc, fold(&agg, [(5, 9), (6, 1)]));
        acc.sort();
        assert_eq!(acc, vec![(2, 9), (3, 9), (5, 9)]);
    }
}
