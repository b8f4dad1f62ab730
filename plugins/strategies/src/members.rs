//! The member table every strategy keeps.
//!
//! A `Vec` sorted by id rather than a hash map: iteration order must be deterministic (the host
//! may rebuild an instance and replay membership, and must get the same answers), rotation
//! "the next id after the cursor" is a binary search, and groups are small enough that a
//! linear scan on the hot path beats hashing.

use alloc::vec::Vec;

use crate::{hash_bytes, Member, MemberId};

/// What the table knows of one member. `X` is per-strategy scratch state that must live and
/// die with the member (a weighted-round-robin counter, a pick count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberState<X = ()> {
    pub id: MemberId,
    /// Effective weight, after any per-client override from the group's params.
    pub weight: u32,
    /// xxh3-64 of the client id: the member's identity for rendezvous hashing, so that a
    /// client that reconnects with a new session (new id) gets its keys back.
    pub client_hash: u64,
    pub subscribed_at_ms: u64,
    /// Members join offline; the host's first `member-load` says otherwise.
    pub online: bool,
    pub inflight: u32,
    pub capacity: u32,
    pub ext: X,
}

impl<X> MemberState<X> {
    /// Whether the host last reported room in the member's window.
    pub fn has_room(&self) -> bool {
        self.inflight < self.capacity
    }
}

#[derive(Clone, Debug)]
pub struct MemberTable<X = ()> {
    members: Vec<MemberState<X>>,
    /// Changes whenever the set of online members or a member's identity changes: whatever
    /// a rendezvous pick depends on. A load report that changes only the room does not.
    generation: u64,
}

impl<X> Default for MemberTable<X> {
    fn default() -> Self {
        Self {
            members: Vec::new(),
            generation: 0,
        }
    }
}

impl<X: Default> MemberTable<X> {
    /// Adds `member` with effective weight `weight`. A second join of the same id (a host
    /// replaying after a hiccup) refreshes the static fields and keeps the load state.
    pub fn join(&mut self, member: &Member, weight: u32) {
        let client_hash = hash_bytes(member.client_id.as_bytes());
        match self.position(member.id) {
            Ok(i) => {
                let m = &mut self.members[i];
                m.weight = weight;
                if m.client_hash != client_hash {
                    m.client_hash = client_hash;
                    self.generation += 1;
                }
                m.subscribed_at_ms = member.subscribed_at_ms;
            }
            // Joins offline: the online set changes only with its first load report.
            Err(i) => self.members.insert(
                i,
                MemberState {
                    id: member.id,
                    weight,
                    client_hash,
                    subscribed_at_ms: member.subscribed_at_ms,
                    online: false,
                    inflight: 0,
                    // Unknown until the first load report; the member is offline until then.
                    capacity: u32::MAX,
                    ext: X::default(),
                },
            ),
        }
    }
}

impl<X> MemberTable<X> {
    fn position(&self, id: MemberId) -> Result<usize, usize> {
        self.members.binary_search_by_key(&id, |m| m.id)
    }

    pub fn leave(&mut self, id: MemberId) -> Option<MemberState<X>> {
        let left = self.position(id).ok().map(|i| self.members.remove(i));
        if left.as_ref().is_some_and(|m| m.online) {
            self.generation += 1;
        }
        left
    }

    /// See the field: equal generations mean the same online members with the same
    /// identities.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records a load report; returns the member's previous online state, or `None` for an
    /// unknown id (ignored: the host only reports members it announced).
    pub fn load(
        &mut self,
        id: MemberId,
        inflight: u32,
        capacity: u32,
        online: bool,
    ) -> Option<bool> {
        let i = self.position(id).ok()?;
        let m = &mut self.members[i];
        let was = m.online;
        m.inflight = inflight;
        m.capacity = capacity;
        m.online = online;
        if was != online {
            self.generation += 1;
        }
        Some(was)
    }

    pub fn get(&self, id: MemberId) -> Option<&MemberState<X>> {
        self.position(id).ok().map(|i| &self.members[i])
    }

    pub fn get_mut(&mut self, id: MemberId) -> Option<&mut MemberState<X>> {
        self.position(id).ok().map(move |i| &mut self.members[i])
    }

    pub fn is_online(&self, id: MemberId) -> bool {
        self.get(id).is_some_and(|m| m.online)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// All members, in id order.
    pub fn iter(&self) -> core::slice::Iter<'_, MemberState<X>> {
        self.members.iter()
    }

    pub fn iter_mut(&mut self) -> core::slice::IterMut<'_, MemberState<X>> {
        self.members.iter_mut()
    }

    pub fn online(&self) -> impl Iterator<Item = &MemberState<X>> {
        self.members.iter().filter(|m| m.online)
    }

    /// Members in rotation order: those with an id greater than `cursor` first, then the rest
    /// from the lowest id. A cursor that names a departed member still works, which is why the
    /// cursor is an id and not an index.
    pub fn rotation(&self, cursor: Option<MemberId>) -> impl Iterator<Item = &MemberState<X>> {
        let start = match cursor {
            Some(c) => self.members.partition_point(|m| m.id <= c),
            None => 0,
        };
        let (before, after) = self.members.split_at(start);
        after.iter().chain(before.iter())
    }

    /// The next member after `cursor` (wrapping) that is online and has room, or failing
    /// that the next one online: a full member still beats queueing in the group.
    pub fn next_online(&self, cursor: Option<MemberId>) -> Option<MemberId> {
        self.rotation(cursor)
            .find(|m| m.online && m.has_room())
            .or_else(|| self.rotation(cursor).find(|m| m.online))
            .map(|m| m.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::member;

    #[test]
    fn stays_sorted_and_rotates_from_a_departed_cursor() {
        let mut t: MemberTable = MemberTable::default();
        for id in [5, 1, 3] {
            t.join(&member(id), 1);
            t.load(id, 0, 10, true);
        }
        let ids: Vec<_> = t.iter().map(|m| m.id).collect();
        assert_eq!(ids, [1, 3, 5]);
        t.leave(3);
        // Cursor 3 no longer exists: the rotation still continues with the next id.
        assert_eq!(t.next_online(Some(3)), Some(5));
        assert_eq!(t.next_online(Some(5)), Some(1));
        assert_eq!(t.next_online(None), Some(1));
    }

    #[test]
    fn prefers_room_then_any_online_then_none() {
        let mut t: MemberTable = MemberTable::default();
        for id in 1..=3 {
            t.join(&member(id), 1);
        }
        assert_eq!(t.next_online(None), None, "joined members start offline");
        t.load(1, 10, 10, true);
        t.load(2, 0, 10, true);
        assert_eq!(t.next_online(Some(2)), Some(2), "1 is full, 3 offline");
        t.load(2, 10, 10, true);
        assert_eq!(t.next_online(Some(2)), Some(1), "all full: any online");
        assert_eq!(t.load(99, 0, 1, true), None);
    }

    #[test]
    fn rejoin_keeps_load_state() {
        let mut t: MemberTable = MemberTable::default();
        t.join(&member(1), 1);
        t.load(1, 2, 10, true);
        t.join(&member(1), 7);
        let m = t.get(1).unwrap();
        assert!(m.online);
        assert_eq!((m.inflight, m.capacity, m.weight), (2, 10, 7));
        assert_eq!(t.len(), 1);
    }
}
