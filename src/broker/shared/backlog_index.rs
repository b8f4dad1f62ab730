//! Which groups have messages waiting, so that a member freeing room pulls only from those.
//!
//! A member's acknowledgement (or its coming online) lets every group it is in hand it waiting
//! messages. Asking each of its groups costs as much as it has groups, on every send round,
//! even when nothing waits anywhere. Groups announce instead when their queue stops or starts
//! being empty, and a member looks at the smaller of its own groups and the waiting ones.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::broker::routing::delivery::GroupId;

#[derive(Debug, Default)]
pub struct BacklogIndex {
    /// The ids of groups whose queue (memory or disk) is not empty.
    ///
    /// Lock order: the last lock of all. A group updates it under its own state lock (so that
    /// one group's transitions arrive in order), a member reads it under the registry's read
    /// lock; nothing is locked or called while it is held.
    waiting: Mutex<HashSet<GroupId, ahash::RandomState>>,
    /// `waiting.len()`, readable without the lock: "nothing waits anywhere" is the common case
    /// on every send round, and costs one load.
    count: AtomicUsize,
}

impl BacklogIndex {
    /// Records that group `id`'s queue became non-empty (`true`) or empty (`false`). Called
    /// only on a change, under the group's state lock.
    pub fn set(&self, id: GroupId, waiting: bool) {
        let mut set = self.waiting.lock();
        let changed = if waiting {
            set.insert(id)
        } else {
            set.remove(&id)
        };
        if changed {
            // Read by a drainer after its SeqCst fence; the group's own fence (in its drain)
            // comes after this store, which is what the fence pairing needs.
            self.count.store(set.len(), Ordering::Relaxed);
        }
    }

    /// How many groups have messages waiting, without the lock.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Calls `each` with every waiting group's id, under the lock: `each` must not lock.
    pub fn for_each(&self, mut each: impl FnMut(GroupId)) {
        for id in self.waiting.lock().iter() {
            each(*id);
        }
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
        let mut seen = Vec::new();
        index.for_each(|id| seen.push(id));
        assert_eq!(seen, vec![9]);
    }
}
