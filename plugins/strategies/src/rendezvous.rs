//! Rendezvous (highest-random-weight) hashing.
//!
//! Each member scores every key; the key goes to the highest score among online members. When
//! a member joins it takes only the keys it now wins (~1/n), and when one leaves only its own
//! keys move — unlike `hash mod n`, where a change of n moves almost every key. It needs no
//! ring to maintain, so joins and leaves cost nothing; a pick costs one 16-byte xxh3 per
//! online member, which for groups of tens of members is cheaper than a ring lookup's cache
//! misses.

use alloc::vec::Vec;

use crate::members::{MemberState, MemberTable};
use crate::MemberId;

/// Score of `member_key` for `key`: xxh3-64 of `key` (8 bytes LE) followed by `member_key`
/// (8 bytes LE). Fixed by spec so that the host's native fallback and any guest agree.
pub fn score(key: u64, member_key: u64) -> u64 {
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(&key.to_le_bytes());
    buf[8..].copy_from_slice(&member_key.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&buf)
}

/// The online member that wins `key`. Members are identified by their client-id hash, so a
/// client that comes back with a new session id wins the same keys; two sessions of one client
/// (a takeover in progress) tie and the higher id, the newer session, wins.
pub fn pick<'a, X: 'a>(
    key: u64,
    members: impl Iterator<Item = &'a MemberState<X>>,
) -> Option<MemberId> {
    members
        .filter(|m| m.online)
        .map(|m| (score(key, m.client_hash), m.id))
        .max()
        .map(|(_, id)| id)
}

/// Slots in a [`PickCache`]; a power of two.
const CACHE_SLOTS: usize = 4096;

/// Remembers recent picks, so that a key seen again costs one lookup instead of one score per
/// online member: a group of 1,024 members picks as fast as one of 4 while its keys repeat
/// (publishers and topics do). A pick depends only on the key and the online members, so an
/// entry stays right until the table's generation changes; a miss costs what `pick` costs.
#[derive(Clone, Debug, Default)]
pub struct PickCache {
    /// Direct-mapped by the key's low bits (keys are xxh3 output): (key, member, table
    /// generation). Allocated on the first pick.
    slots: Vec<(u64, MemberId, u64)>,
}

impl PickCache {
    /// What [`pick`] answers for `key` over `table`'s members.
    pub fn pick<X>(&mut self, key: u64, table: &MemberTable<X>) -> Option<MemberId> {
        if self.slots.is_empty() {
            // u64::MAX is a generation no table reaches: every slot starts empty.
            self.slots = alloc::vec![(0, 0, u64::MAX); CACHE_SLOTS];
        }
        let generation = table.generation();
        let slot = &mut self.slots[(key as usize) & (CACHE_SLOTS - 1)];
        if slot.0 == key && slot.2 == generation {
            return Some(slot.1);
        }
        let picked = pick(key, table.iter())?;
        *slot = (key, picked, generation);
        Some(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::members::MemberTable;
    use crate::testutil::member;
    use std::vec::Vec;

    fn table(ids: impl IntoIterator<Item = u64>) -> MemberTable {
        let mut t = MemberTable::default();
        for id in ids {
            t.join(&member(id), 1);
            t.load(id, 0, 100, true);
        }
        t
    }

    fn assign(t: &MemberTable, keys: u64) -> Vec<Option<MemberId>> {
        (0..keys)
            .map(|k| pick(crate::hash_bytes(&k.to_le_bytes()), t.iter()))
            .collect()
    }

    #[test]
    fn adding_an_eleventh_member_moves_about_one_eleventh() {
        let mut t = table(1..=10);
        let before = assign(&t, 10_000);
        t.join(&member(11), 1);
        t.load(11, 0, 100, true);
        let after = assign(&t, 10_000);
        let moved: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
        assert!(
            moved.len() * 11 <= 10_000 * 3 / 2,
            "moved {} of 10000, bound 1.5/11",
            moved.len()
        );
        assert!(!moved.is_empty());
        // Every key that moved went to the newcomer.
        assert!(moved.iter().all(|(_, a)| **a == Some(11)));
    }

    #[test]
    fn removing_a_member_moves_only_its_keys() {
        let mut t = table(1..=10);
        let before = assign(&t, 10_000);
        t.leave(4);
        let after = assign(&t, 10_000);
        for (b, a) in before.iter().zip(&after) {
            if *b == Some(4) {
                assert_ne!(*a, Some(4));
            } else {
                assert_eq!(b, a, "a key not on member 4 moved");
            }
        }
        // Member 4 held a fair share before it left.
        let had = before.iter().filter(|b| **b == Some(4)).count();
        assert!((700..1300).contains(&had), "member 4 had {had}");
    }

    #[test]
    fn going_offline_behaves_like_leaving_and_coming_back_restores() {
        let mut t = table(1..=5);
        let before = assign(&t, 2_000);
        t.load(2, 0, 100, false);
        let during = assign(&t, 2_000);
        assert!(during.iter().all(|a| *a != Some(2)));
        t.load(2, 0, 100, true);
        assert_eq!(assign(&t, 2_000), before);
    }

    #[test]
    fn cached_picks_equal_fresh_picks_through_changes() {
        let mut t = table(1..=20);
        let mut cache = PickCache::default();
        let keys: Vec<u64> = (0..3_000u64)
            .map(|k| crate::hash_bytes(&(k % 700).to_le_bytes()))
            .collect();
        let check = |t: &MemberTable, cache: &mut PickCache| {
            for key in &keys {
                assert_eq!(cache.pick(*key, t), pick(*key, t.iter()));
            }
        };
        check(&t, &mut cache);
        t.load(7, 0, 100, false);
        check(&t, &mut cache);
        t.load(3, 100, 100, true);
        check(&t, &mut cache);
        t.leave(12);
        check(&t, &mut cache);
        t.join(&member(40), 1);
        t.load(40, 0, 100, true);
        check(&t, &mut cache);
        // Same id, another client: it scores differently.
        let mut renamed = member(40);
        renamed.client_id = "someone-else".into();
        t.join(&renamed, 1);
        check(&t, &mut cache);
        t.load(7, 0, 100, true);
        check(&t, &mut cache);
    }

    #[test]
    fn nobody_online_is_none() {
        let mut t = table(1..=2);
        t.load(1, 0, 1, false);
        t.load(2, 0, 1, false);
        assert_eq!(pick(7, t.iter()), None);
    }
}
