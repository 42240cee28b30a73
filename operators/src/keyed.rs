//! `key_by`: pairs each record with its key, so the next stateful stage can exchange records
//! between workers by the key's hash.
//!
//! - **Input**: any stream. **Output**: a [`Keyed`] stream of `(key, record)` pairs, same event
//!   time and timestamp as the input record.
//! - **State**: none. **Emits**: at once. **Late records**: pass through.
//! - **Exchange**: the stateful stage that reads a [`Keyed`] stream routes each pair to worker
//!   `hash(key) % workers`, with a hash that is the same in every process ([`route`]).
//! - **Checkpoint**: holds nothing.

use std::hash::{Hash, Hasher};

use eddy_engine::{Data, Stream};

use crate::stateless::map_stage;

/// A stream of `(key, value)` pairs, to be exchanged by key at the next stateful stage.
pub struct Keyed<K, V> {
    pub(crate) stream: Stream<(K, V)>,
}

impl<K: Data, V: Data> Keyed<K, V> {
    /// Forgets the keying and returns the stream of pairs.
    pub fn into_stream(self) -> Stream<(K, V)> {
        self.stream
    }
}

/// What keys must be: data that hash and compare.
pub trait Key: Data + Hash + Eq + Clone {}
impl<K: Data + Hash + Eq + Clone> Key for K {}

/// `key_by` on pipeline streams.
pub trait KeyBy<T: Data> {
    /// Pairs each record with its key (for example an auction id).
    ///
    /// ```
    /// # use eddy_operators::prelude::*;
    /// # fn f(s: eddy_engine::Stream<(u64, String)>) -> Keyed<u64, (u64, String)> {
    /// s.key_by("by_user", |r: &(u64, String)| r.0)
    /// # }
    /// ```
    fn key_by<K: Key, F>(self, name: &str, key: F) -> Keyed<K, T>
    where
        F: Fn(&T) -> K + Clone + Send + Sync + 'static;
}

impl<T: Data> KeyBy<T> for Stream<T> {
    fn key_by<K: Key, F>(self, name: &str, key: F) -> Keyed<K, T>
    where
        F: Fn(&T) -> K + Clone + Send + Sync + 'static,
    {
        Keyed {
            stream: map_stage(self, name, "key_by", move |x| (key(&x), x)),
        }
    }
}

/// The route of a key: a hash that is the same in every process and spreads small integers
/// evenly (FxHash, then the splitmix64 finalizer).
#[inline]
pub fn route<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut hasher = rustc_hash::FxHasher::default();
    key.hash(&mut hasher);
    let mut h = hasher.finish();
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}
