//! Lookup joins with a bounded side input: each record is joined, by key, with a table loaded
//! once on every worker (from a file, say, with `eddy_connectors::SideInputFile`).
//!
//! - **Input**: any stream of records, and a [`SideTable`]: a description and a function that
//!   loads the table as a `HashMap<K, V>`. **Output**: for `lookup_join`, one record per input
//!   record whose key is in the table (an inner join); for `lookup_join_left`, one per input
//!   record, with `None` where the key is missing. Output records keep the input's event time
//!   and timestamp.
//! - **State**: the table, loaded when the stage is built on each worker and never changed
//!   (the side input is bounded: Flink's `FOR SYSTEM_TIME AS OF` a table that does not change).
//!   No exchange: every worker holds the whole table.
//! - **Emits**: at once, in the same batch; no waiting for the watermark.
//! - **Late records**: not a notion here; they are joined like any other.
//! - **Checkpoint**: holds nothing; the table is reloaded from its source on restart.
//!
//! A table that fails to load (a missing or malformed file) fails the stage: the run ends with
//! the loader's error, and the stage drops its input meanwhile.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use eddy_engine::timely::dataflow::channels::pact::Pipeline as Local;
use eddy_engine::timely::dataflow::operators::generic::Operator;
use eddy_engine::{ConnectorError, Data, Stream};

type Loader<K, V> = dyn Fn() -> Result<HashMap<K, V>, ConnectorError> + Send + Sync;

/// A bounded key-value table for lookup joins: how to load it, and what it is.
pub struct SideTable<K, V> {
    describe: String,
    load: Arc<Loader<K, V>>,
}

impl<K, V> Clone for SideTable<K, V> {
    fn clone(&self) -> Self {
        SideTable {
            describe: self.describe.clone(),
            load: Arc::clone(&self.load),
        }
    }
}

impl<K: Clone + Send + Sync + 'static, V: Clone + Send + Sync + 'static> SideTable<K, V> {
    /// A table `load` reads on every worker (e.g. from a file); `describe` names it in graphs.
    pub fn new<F>(describe: impl Into<String>, load: F) -> Self
    where
        F: Fn() -> Result<HashMap<K, V>, ConnectorError> + Send + Sync + 'static,
    {
        SideTable {
            describe: describe.into(),
            load: Arc::new(load),
        }
    }

    /// A table held in memory (each worker gets a copy).
    pub fn from_map(describe: impl Into<String>, table: HashMap<K, V>) -> Self {
        let table = Arc::new(table);
        Self::new(describe, move || Ok((*table).clone()))
    }

    /// The table's description.
    pub fn describe(&self) -> &str {
        &self.describe
    }
}

/// Lookup joins with a [`SideTable`].
pub trait LookupJoin<T: Data> {
    /// Joins each record with the table's value for `key(&record)`; records whose key is not in
    /// the table are dropped (an inner join).
    fn lookup_join<K, V, U, FK, FJ>(
        self,
        name: &str,
        table: SideTable<K, V>,
        key: FK,
        join: FJ,
    ) -> Stream<U>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Send + Sync + 'static,
        U: Data,
        FK: Fn(&T) -> K + Send + Sync + 'static,
        FJ: Fn(T, &V) -> U + Send + Sync + 'static;

    /// Joins each record with the table's value for `key(&record)`, `None` when the key is not
    /// in the table (a left outer join).
    fn lookup_join_left<K, V, U, FK, FJ>(
        self,
        name: &str,
        table: SideTable<K, V>,
        key: FK,
        join: FJ,
    ) -> Stream<U>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Send + Sync + 'static,
        U: Data,
        FK: Fn(&T) -> K + Send + Sync + 'static,
        FJ: Fn(T, Option<&V>) -> U + Send + Sync + 'static;
}

impl<T: Data> LookupJoin<T> for Stream<T> {
    fn lookup_join<K, V, U, FK, FJ>(
        self,
        name: &str,
        table: SideTable<K, V>,
        key: FK,
        join: FJ,
    ) -> Stream<U>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Send + Sync + 'static,
        U: Data,
        FK: Fn(&T) -> K + Send + Sync + 'static,
        FJ: Fn(T, &V) -> U + Send + Sync + 'static,
    {
        lookup_stage(self, name, "lookup_join", table, key, move |x, v| {
            v.map(|v| join(x, v))
        })
    }

    fn lookup_join_left<K, V, U, FK, FJ>(
        self,
        name: &str,
        table: SideTable<K, V>,
        key: FK,
        join: FJ,
    ) -> Stream<U>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Send + Sync + 'static,
        U: Data,
        FK: Fn(&T) -> K + Send + Sync + 'static,
        FJ: Fn(T, Option<&V>) -> U + Send + Sync + 'static,
    {
        lookup_stage(self, name, "lookup_join_left", table, key, move |x, v| {
            Some(join(x, v))
        })
    }
}

/// The stage both joins are: `join` gets each record with its match, if any, and says what to
/// emit.
fn lookup_stage<T, K, V, U, FK, FJ>(
    stream: Stream<T>,
    name: &str,
    kind: &str,
    table: SideTable<K, V>,
    key: FK,
    join: FJ,
) -> Stream<U>
where
    T: Data,
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    U: Data,
    FK: Fn(&T) -> K + Send + Sync + 'static,
    FJ: Fn(T, Option<&V>) -> Option<U> + Send + Sync + 'static,
{
    let (key, join) = (Arc::new(key), Arc::new(join));
    let detail = table.describe.clone();
    stream.stage(name, kind, detail, move |input, stage| {
        let loaded = match (table.load)() {
            Ok(map) => Some(map),
            Err(error) => {
                stage.fail(error);
                None
            }
        };
        let (key, join) = (Arc::clone(&key), Arc::clone(&join));
        let op_name = stage.name().to_string();
        input.unary(Local, &op_name, move |_, _| {
            move |input, output| {
                input.for_each(|cap, batch| {
                    stage.metrics().add_in(batch.len());
                    let Some(map) = loaded.as_ref() else {
                        batch.clear();
                        return;
                    };
                    let mut out: Vec<_> = batch
                        .drain(..)
                        .filter_map(|(t, x)| {
                            let v = map.get(&key(&x));
                            join(x, v).map(|y| (t, y))
                        })
                        .collect();
                    stage.metrics().add_out(out.len());
                    if !out.is_empty() {
                        output.session(&cap).give_container(&mut out);
                    }
                });
            }
        })
    })
}
