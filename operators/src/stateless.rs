//! Stateless operators: `map`, `try_map`, `filter`, `flat_map`, `split`.
//!
//! - **Input**: any stream of records. **Output**: records derived one by one; each output
//!   record keeps the event time and the timestamp (watermark) of the record it came from.
//! - **State**: none. **Emits**: at once, in the same batch; no waiting for the watermark.
//! - **Late records**: not a notion here; they pass through and windows downstream decide.
//! - **Failures**: `try_map`'s function may fail on a record: the record is rejected — counted
//!   on the stage and, with a dead-letter sink, written there as JSON with the error — and the
//!   run goes on.
//! - **Checkpoint**: holds nothing.
//!
//! Records are moved, never cloned: `filter` keeps the batch it received and drops rejected
//! records in place. `split` is the exception, and the cheap way to read one stream twice: a
//! stream read by two stages is forked and every batch cloned for the second reader, whereas
//! `split` drops what neither side wants first and forks only the rest.

use eddy_engine::timely::dataflow::channels::pact::Pipeline as Local;
use eddy_engine::timely::dataflow::operators::generic::Operator;
use eddy_engine::{Data, Record, StageContext, Stream};
use serde::{Deserialize, Serialize};

/// Which output of [`Stateless::split`] a record goes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Split<A, B> {
    /// The first output.
    First(A),
    /// The second output.
    Second(B),
}

/// `map`, `filter` and `flat_map` on pipeline streams.
pub trait Stateless<T: Data> {
    /// Transforms each record.
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # fn f(s: eddy_engine::Stream<u64>) -> eddy_engine::Stream<u64> {
    /// s.map("double", |x| x * 2)
    /// # }
    /// ```
    fn map<U: Data, F>(self, name: &str, f: F) -> Stream<U>
    where
        F: Fn(T) -> U + Clone + Send + Sync + 'static;

    /// Transforms each record with a function that may fail. A record it fails on is rejected:
    /// counted on this stage and written, with the error, to the pipeline's dead-letter sink
    /// when there is one ([`Pipeline::dead_letters`](eddy_engine::Pipeline::dead_letters)).
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # fn f(s: eddy_engine::Stream<String>) -> eddy_engine::Stream<u64> {
    /// s.try_map("parse", |text: &String| text.trim().parse::<u64>())
    /// # }
    /// ```
    fn try_map<U: Data, E, F>(self, name: &str, f: F) -> Stream<U>
    where
        E: std::fmt::Display,
        F: Fn(&T) -> Result<U, E> + Clone + Send + Sync + 'static;

    /// Keeps the records for which `keep` is true.
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # fn f(s: eddy_engine::Stream<u64>) -> eddy_engine::Stream<u64> {
    /// s.filter("even", |x| x % 2 == 0)
    /// # }
    /// ```
    fn filter<F>(self, name: &str, keep: F) -> Stream<T>
    where
        F: Fn(&T) -> bool + Clone + Send + Sync + 'static;

    /// Transforms each record into any number of records (all with its event time).
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # fn f(s: eddy_engine::Stream<String>) -> eddy_engine::Stream<String> {
    /// s.flat_map("words", |line: String| line.split(' ').map(String::from).collect::<Vec<_>>())
    /// # }
    /// ```
    fn flat_map<U: Data, I, F>(self, name: &str, f: F) -> Stream<U>
    where
        I: IntoIterator<Item = U>,
        F: Fn(T) -> I + Clone + Send + Sync + 'static;

    /// Splits the stream in two: `f` sends each record to the first output, the second, or
    /// (`None`) neither. A stage `name` routes the records; `name.first` and `name.second`
    /// unwrap each side. Only the records a side wants are copied when the two sides are read
    /// (see the module's note), so prefer it to reading one stream in two `flat_map`s when most
    /// records go nowhere, as Nexmark's people and auctions among its bids.
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # fn f(s: eddy_engine::Stream<i64>) -> (eddy_engine::Stream<u64>, eddy_engine::Stream<u64>) {
    /// s.split("sign", |x| match x {
    ///     0 => None,
    ///     x if x > 0 => Some(Split::First(x as u64)),
    ///     x => Some(Split::Second(x.unsigned_abs())),
    /// })
    /// # }
    /// ```
    fn split<A, B, F>(self, name: &str, f: F) -> (Stream<A>, Stream<B>)
    where
        A: Data + Clone,
        B: Data + Clone,
        F: Fn(T) -> Option<Split<A, B>> + Clone + Send + Sync + 'static;
}

impl<T: Data> Stateless<T> for Stream<T> {
    fn map<U: Data, F>(self, name: &str, f: F) -> Stream<U>
    where
        F: Fn(T) -> U + Clone + Send + Sync + 'static,
    {
        map_stage(self, name, "map", f)
    }

    fn try_map<U: Data, E, F>(self, name: &str, f: F) -> Stream<U>
    where
        E: std::fmt::Display,
        F: Fn(&T) -> Result<U, E> + Clone + Send + Sync + 'static,
    {
        batch_stage(self, name, "try_map", move |batch, stage| {
            let mut out = Vec::with_capacity(batch.len());
            for (t, x) in batch.drain(..) {
                match f(&x) {
                    Ok(y) => out.push((t, y)),
                    Err(error) => stage.reject(&x, t, error),
                }
            }
            out
        })
    }

    fn filter<F>(self, name: &str, keep: F) -> Stream<T>
    where
        F: Fn(&T) -> bool + Clone + Send + Sync + 'static,
    {
        batch_stage(self, name, "filter", move |batch, _| {
            batch.retain(|(_, x)| keep(x));
            std::mem::take(batch)
        })
    }

    fn flat_map<U: Data, I, F>(self, name: &str, f: F) -> Stream<U>
    where
        I: IntoIterator<Item = U>,
        F: Fn(T) -> I + Clone + Send + Sync + 'static,
    {
        batch_stage(self, name, "flat_map", move |batch, _| {
            // Most flat_maps emit at most one record per input: room for as many avoids
            // regrowing the batch (a `flat_map` iterator's size hint is unbounded).
            let mut out = Vec::with_capacity(batch.len());
            out.extend(
                batch
                    .drain(..)
                    .flat_map(|(t, x)| f(x).into_iter().map(move |y| (t, y))),
            );
            out
        })
    }

    fn split<A, B, F>(self, name: &str, f: F) -> (Stream<A>, Stream<B>)
    where
        A: Data + Clone,
        B: Data + Clone,
        F: Fn(T) -> Option<Split<A, B>> + Clone + Send + Sync + 'static,
    {
        let routed = self.flat_map(name, f);
        let first = routed
            .clone()
            .flat_map(&format!("{name}.first"), |side| match side {
                Split::First(a) => Some(a),
                Split::Second(_) => None,
            });
        let second = routed.flat_map(&format!("{name}.second"), |side| match side {
            Split::First(_) => None,
            Split::Second(b) => Some(b),
        });
        (first, second)
    }
}

/// A stage that transforms each record with `f`; `kind` names it in graphs (`map`, `key_by`).
pub(crate) fn map_stage<T: Data, U: Data, F>(
    stream: Stream<T>,
    name: &str,
    kind: &str,
    f: F,
) -> Stream<U>
where
    F: Fn(T) -> U + Clone + Send + Sync + 'static,
{
    batch_stage(stream, name, kind, move |batch, _| {
        batch.drain(..).map(|(t, x)| (t, f(x))).collect()
    })
}

/// A stateless stage: `f` turns each received batch into the batch to send, at the same
/// timestamp (with the stage's context, to reject records); records in and out are counted per
/// batch.
fn batch_stage<T: Data, U: Data, F>(stream: Stream<T>, name: &str, kind: &str, f: F) -> Stream<U>
where
    F: Fn(&mut Vec<Record<T>>, &StageContext) -> Vec<Record<U>> + Clone + Send + Sync + 'static,
{
    stream.stage(name, kind, String::new(), move |input, stage| {
        let f = f.clone();
        let name = stage.name().to_string();
        input.unary(Local, &name, move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    stage.metrics().add_in(data.len());
                    let mut out = f(data, &stage);
                    stage.metrics().add_out(out.len());
                    if !out.is_empty() {
                        output.session(&cap).give_container(&mut out);
                    }
                });
            }
        })
    })
}
