//! Which groups have messages waiting, so that a member freeing room pulls only from those.
//!
//! A member's acknowledgement (or its coming online) lets every group it is in hand it waiting
//! messages. Asking each of its groups costs as much as it has groups, on every send round,
//! even when nothing waits anywhere. Groups announce instead when their queue stops or starts
//! being empty, and a member looks at the smaller of its own groups and the waiting ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::broker::delivery::GroupId;

#[derive(Debug, Default)]
pub struct BacklogIndex {
    /// The groups whose queue (memory or disk) is not empty.
    ///
    /// Lock order: the last lock of all. A group updates it under its own state lock (so that
    /// one group's transitions arrive in order), a member reads it under the registry's read
    /// lock; nothing is locked or called while it is held.
    waiting: Mutex<Waiting>,
    /// How many groups `waiting` holds, readable without the lock: "nothing waits anywhere"
    /// is the common case on every send round, and costs one load.
    count: AtomicUsize,
}

/// A set that can be walked from any position: a member takes the first few of its waiting
/// groups from a random place, so that its room goes to each of them in turn.
#[derive(Debug, Default)]
struct Waiting {
    ids: Vec<GroupId>,
    /// Each id's index in `ids`.
    position: HashMap<GroupId, usize, ahash::RandomState>,
}

impl BacklogIndex {
    /// Records that group `id`'s queue became non-empty (`true`) or empty (`false`). Called
    /// only on a change, under the group's state lock.
    pub fn set(&self, id: GroupId, waiting: bool) {
        let mut set = self.waiting.lock();
        let Waiting { ids, position } = &mut *set;
        if waiting {
            if position.contains_key(&id) {
                return;
            }
            position.insert(id, ids.len());
            ids.push(id);
        } else {
            let Some(index) = position.remove(&id) else {
                return;
            };
            ids.swap_remove(index);
            if let Some(moved) = ids.get(index) {
                position.insert(*moved, index);
            }
        }
        // Read by a drainer after its SeqCst fence; the group's own fence (in its drain)
        // comes after this store, which is what the fence pairing needs.
        self.count.store(ids.len(), Ordering::Relaxed);
    }

    /// How many groups have messages waiting, without the lock.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Up to `limit` waiting groups that `wanted` accepts, walking from `start` (any number;
    /// taken modulo the count) and wrapping. `wanted` runs under the lock and must not lock.
    pub fn find(
        &self,
        start: usize,
        limit: usize,
        mut wanted: impl FnMut(GroupId) -> bool,
    ) -> Vec<GroupId> {
        let set = self.waiting.lock();
        let ids = &set.ids;
        let mut found = Vec::new();
        if ids.is_empty() {
            return found;
        }
        let start = start % ids.len();
        for id in ids[start..].iter().chain(&ids[..start]) {
            if found.len() == limit {
                break;
            }
            if wanted(*id) {
                found.push(*id);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_changes_and_ignores_repeats() {
        let index = BacklogIndex::default();
        assert_eq!(index.count(), 0);
        index.set(7, true);
        index.set(7, true);
        index.set(9, true);
        assert_eq!(index.count(), 2);
        index.set(7, false);
        index.set(7, false);
        assert_eq!(index.count(), 1);
        assert_eq!(index.find(0, 10, |_| true), vec![9]);
    }

    #[test]
    fn find_walks_from_the_start_wrapping_and_stops_at_the_limit() {
        let index = BacklogIndex::default();
        for id in 1..=6 {
            index.set(id, true);
        }
        // Removing from the middle keeps every other id findable.
        index.set(3, false);
        let mut all = index.find(0, 10, |_| true);
        all.sort_unstable();
        assert_eq!(all, vec![1, 2, 4, 5, 6]);
        let even = |id: GroupId| id % 2 == 0;
        assert_eq!(index.find(0, 10, even).len(), 3);
        assert_eq!(index.find(7, 2, even).len(), 2);
        // Every start position reaches every wanted id once.
        for start in 0..5 {
            let mut seen = index.find(start, 10, even);
            seen.sort_unstable();
            assert_eq!(seen, vec![2, 4, 6], "from {start}");
        }
    }
}
