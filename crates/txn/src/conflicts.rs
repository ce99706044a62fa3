//! The conflict index: the newest commit timestamp of every recently written key, which is all
//! optimistic validation needs.
//!
//! A read-write transaction that read at `read_ts` may commit only if no key it read, and no key
//! in a range it scanned, was committed by another transaction after `read_ts`. Commits insert
//! their writes here (under the same lock as their validation), so the check is a lookup per read
//! key and a range walk per scanned range. Entries at or below the oldest read timestamp still in
//! use can never cause a conflict again and are pruned.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use bytes::Bytes;

use boundkv_clockbound::Timestamp;

/// A range of keys a transaction scanned.
pub type KeyRange = (Bound<Bytes>, Bound<Bytes>);

#[derive(Default)]
pub(crate) struct ConflictIndex {
    writes: BTreeMap<Bytes, Timestamp>,
    /// Entries at or below this were pruned: transactions that read below it cannot be validated.
    pruned_below: Timestamp,
    commits_since_prune: u64,
}

/// Prune at most this often (in commits), or when the index is this large.
const PRUNE_EVERY: u64 = 1024;
const PRUNE_SIZE: usize = 64 * 1024;

impl ConflictIndex {
    /// The first read key or scanned key written after `read_ts`, with its commit timestamp.
    pub(crate) fn check(
        &self,
        read_ts: Timestamp,
        keys: &BTreeSet<Bytes>,
        ranges: &[KeyRange],
    ) -> Option<(Bytes, Timestamp)> {
        for key in keys {
            if let Some(&ts) = self.writes.get(key)
                && ts > read_ts
            {
                return Some((key.clone(), ts));
            }
        }
        for range in ranges {
            if !valid(range) {
                continue;
            }
            if let Some((key, &ts)) =
                self.writes.range(range.clone()).find(|(_, ts)| **ts > read_ts)
            {
                return Some((key.clone(), ts));
            }
        }
        None
    }

    /// Whether a transaction that read at `read_ts` can still be validated.
    pub(crate) fn can_validate(&self, read_ts: Timestamp) -> bool {
        read_ts >= self.pruned_below
    }

    /// Records a commit's writes at `ts`.
    pub(crate) fn record<'a>(&mut self, keys: impl Iterator<Item = &'a Bytes>, ts: Timestamp) {
        for key in keys {
            let e = self.writes.entry(key.clone()).or_insert(ts);
            *e = (*e).max(ts);
        }
        self.commits_since_prune += 1;
    }

    /// Whether it is time to prune.
    pub(crate) fn wants_prune(&self) -> bool {
        self.commits_since_prune >= PRUNE_EVERY || self.writes.len() >= PRUNE_SIZE
    }

    /// Drops entries at or below `horizon` (no live transaction read below it).
    pub(crate) fn prune(&mut self, horizon: Timestamp) {
        if horizon > self.pruned_below {
            self.writes.retain(|_, ts| *ts > horizon);
            self.pruned_below = horizon;
        }
        self.commits_since_prune = 0;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.writes.len()
    }
}

/// Whether a range is non-empty in the sense `BTreeMap::range` accepts (it panics otherwise).
pub(crate) fn valid(range: &KeyRange) -> bool {
    match range {
        (Bound::Included(a), Bound::Included(b)) => a <= b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b)) => a < b,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(n: u64) -> Timestamp {
        Timestamp::from_nanos(n)
    }

    #[test]
    fn keys_and_ranges_conflict_only_with_later_writes() {
        let mut idx = ConflictIndex::default();
        idx.record([Bytes::from("b"), Bytes::from("d")].iter(), ts(20));
        let keys: BTreeSet<Bytes> = [Bytes::from("b")].into();
        assert_eq!(idx.check(ts(19), &keys, &[]), Some((Bytes::from("b"), ts(20))));
        assert_eq!(idx.check(ts(20), &keys, &[]), None, "a write at read_ts was seen");
        let r = (Bound::Included(Bytes::from("c")), Bound::Excluded(Bytes::from("e")));
        assert_eq!(
            idx.check(ts(10), &BTreeSet::new(), std::slice::from_ref(&r)),
            Some((Bytes::from("d"), ts(20)))
        );
        let r2 = (Bound::Excluded(Bytes::from("d")), Bound::Unbounded);
        assert_eq!(idx.check(ts(10), &BTreeSet::new(), &[r2]), None);
        let empty = (Bound::Included(Bytes::from("z")), Bound::Excluded(Bytes::from("a")));
        assert_eq!(idx.check(ts(10), &BTreeSet::new(), &[empty]), None, "inverted range: no panic");
        idx.prune(ts(20));
        assert_eq!(idx.len(), 0);
        assert!(!idx.can_validate(ts(19)));
        assert!(idx.can_validate(ts(20)));
    }
}
