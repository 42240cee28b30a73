//! The stamps of the records a stateful stage holds, for its [`Hold`](eddy_engine::Hold): a
//! counted set, so that the least stamp held is known at once while entries come and go. Both
//! sets keep nothing unless made with `tracking(true)` (a run whose hold is active), so a run
//! without a commit cycle pays nothing for them.

use std::collections::BTreeMap;

/// A multiset of stamps.
#[derive(Default)]
pub(crate) struct Stamps {
    counts: BTreeMap<u64, usize>,
    tracking: bool,
}

impl Stamps {
    /// A set that keeps its stamps if `tracking` (otherwise it stays empty).
    pub(crate) fn tracking(tracking: bool) -> Self {
        Stamps {
            counts: BTreeMap::new(),
            tracking,
        }
    }

    /// Whether it keeps stamps.
    pub(crate) fn is_tracking(&self) -> bool {
        self.tracking
    }

    /// One more entry stamped `t`.
    pub(crate) fn add(&mut self, t: u64) {
        if self.tracking {
            *self.counts.entry(t).or_default() += 1;
        }
    }

    /// One entry stamped `t` fewer (one that was added).
    pub(crate) fn remove(&mut self, t: u64) {
        if let Some(n) = self.counts.get_mut(&t) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&t);
            }
        }
    }

    /// The least stamp held, if any.
    pub(crate) fn least(&self) -> Option<u64> {
        self.counts.keys().next().copied()
    }
}

/// Per index (a window's start, an event time), the least stamp of the records held under it,
/// for state that is dropped in order of that index.
#[derive(Default)]
pub(crate) struct IndexedStamps {
    by_index: BTreeMap<u64, u64>,
    stamps: Stamps,
}

impl IndexedStamps {
    /// A set that keeps its stamps if `tracking` (otherwise it stays empty).
    pub(crate) fn tracking(tracking: bool) -> Self {
        IndexedStamps {
            by_index: BTreeMap::new(),
            stamps: Stamps::tracking(tracking),
        }
    }

    /// A record stamped `stamp` is held under `index`.
    pub(crate) fn hold(&mut self, index: u64, stamp: u64) {
        if !self.stamps.is_tracking() {
            return;
        }
        match self.by_index.get_mut(&index) {
            Some(least) if *least <= stamp => {}
            Some(least) => {
                self.stamps.remove(*least);
                self.stamps.add(stamp);
                *least = stamp;
            }
            None => {
                self.by_index.insert(index, stamp);
                self.stamps.add(stamp);
            }
        }
    }

    /// Every record under `index` is gone: the least stamp they had.
    pub(crate) fn take(&mut self, index: u64) -> Option<u64> {
        let least = self.by_index.remove(&index)?;
        self.stamps.remove(least);
        Some(least)
    }

    /// Every record under an index below `cutoff` is gone.
    pub(crate) fn drop_before(&mut self, cutoff: u64) {
        let kept = self.by_index.split_off(&cutoff);
        for least in std::mem::replace(&mut self.by_index, kept).into_values() {
            self.stamps.remove(least);
        }
    }

    /// The least stamp held, if any.
    pub(crate) fn least(&self) -> Option<u64> {
        self.stamps.least()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_stamp_follows_adds_and_removes() {
        let mut s = Stamps::tracking(true);
        assert_eq!(s.least(), None);
        s.add(5);
        s.add(3);
        s.add(3);
        assert_eq!(s.least(), Some(3));
        s.remove(3);
        assert_eq!(s.least(), Some(3));
        s.remove(3);
        assert_eq!(s.least(), Some(5));
        s.remove(5);
        assert_eq!(s.least(), None);
    }

    #[test]
    fn indexed_stamps_drop_in_order_of_index() {
        let mut untracked = IndexedStamps::default();
        untracked.hold(10, 7);
        assert_eq!(untracked.least(), None, "not tracking: nothing kept");
        let mut s = IndexedStamps::tracking(true);
        s.hold(10, 7);
        s.hold(10, 4);
        s.hold(20, 2);
        s.hold(30, 9);
        assert_eq!(s.least(), Some(2));
        assert_eq!(s.take(20), Some(2));
        assert_eq!(s.take(20), None);
        assert_eq!(s.least(), Some(4));
        s.drop_before(21);
        assert_eq!(s.least(), Some(9));
        s.drop_before(u64::MAX);
        assert_eq!(s.least(), None);
    }
}
