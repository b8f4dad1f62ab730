//! `round_robin_per_publisher`: each publisher's messages rotate over the members on their
//! own, so every publisher's stream is spread evenly (what EMQX calls `round_robin`).
//!
//! Cursors live in a fixed table of 4096 slots indexed by the publisher hash; a publisher whose
//! slot was taken by another starts again from the group-wide cursor. A fixed table bounds the
//! memory however many publishers come and go, costs no allocation per message, and stays
//! deterministic, which an LRU keyed on arrival time would need more state to be. No params.

use alloc::string::String;
use alloc::vec::Vec;

use crate::members::MemberTable;
use crate::{params, Member, MemberId, MsgMeta, Needs, Strategy};

/// Power of two so that the slot index is a mask of the (uniform) xxh3 publisher hash.
pub const SLOTS: usize = 4096;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    publisher_hash: u64,
    /// `None` marks a slot no publisher has used yet.
    cursor: Option<MemberId>,
}

#[derive(Clone, Debug, Default)]
pub struct RoundRobinPerPublisher {
    members: MemberTable,
    /// Allocated by `init`, so an instance that is never configured costs nothing.
    slots: Vec<Slot>,
    /// Where a publisher without a slot starts: continuing the group's rotation spreads new
    /// publishers' first messages instead of sending them all to the lowest id.
    group_cursor: Option<MemberId>,
}

impl Strategy for RoundRobinPerPublisher {
    fn init(&mut self, _group: &str, params: &[(String, String)]) -> Result<Needs, String> {
        params::check_keys("round_robin_per_publisher", params, &[], &[])?;
        *self = Self {
            slots: alloc::vec![Slot::default(); SLOTS],
            ..Self::default()
        };
        Ok(Needs::NONE)
    }

    forward_membership!();

    fn select(&mut self, meta: &MsgMeta) -> Option<MemberId> {
        if self.slots.is_empty() {
            // Not initialised: the host would not call us, but be total rather than panic.
            self.slots = alloc::vec![Slot::default(); SLOTS];
        }
        let i = (meta.publisher_hash as usize) & (SLOTS - 1);
        let slot = &mut self.slots[i];
        let cursor = match slot.cursor {
            Some(c) if slot.publisher_hash == meta.publisher_hash => Some(c),
            _ => self.group_cursor,
        };
        let pick = self.members.next_online(cursor)?;
        *slot = Slot {
            publisher_hash: meta.publisher_hash,
            cursor: Some(pick),
        };
        self.group_cursor = Some(pick);
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::vec::Vec;

    fn strategy() -> RoundRobinPerPublisher {
        let mut s = RoundRobinPerPublisher::default();
        s.init("g", &[]).unwrap();
        s
    }

    #[test]
    fn each_publisher_rotates_on_its_own() {
        let mut s = strategy();
        join_online(&mut s, 1..=3, 10);
        let a = meta("t", "a");
        let b = meta("t", "b");
        let mut got_a = Vec::new();
        let mut got_b = Vec::new();
        for _ in 0..6 {
            got_a.push(s.select(&a).unwrap());
            got_b.push(s.select(&b).unwrap());
            got_b.push(s.select(&b).unwrap());
        }
        // Each publisher's own sequence is an exact rotation, whatever the interleaving.
        for seq in [&got_a, &got_b] {
            for w in seq.windows(2) {
                assert_eq!(w[1], w[0] % 3 + 1, "{seq:?}");
            }
        }
    }

    #[test]
    fn many_single_message_publishers_still_spread() {
        let mut s = strategy();
        join_online(&mut s, 1..=4, 10);
        let mut h = [0usize; 5];
        for i in 0..400 {
            h[s.select(&meta("t", &std::format!("p{i}"))).unwrap() as usize] += 1;
        }
        assert_eq!(&h[1..], &[100, 100, 100, 100]);
    }

    #[test]
    fn memory_is_bounded_and_evicted_publishers_continue() {
        let mut s = strategy();
        join_online(&mut s, 1..=2, 10);
        for i in 0..20_000u64 {
            let m = MsgMeta {
                publisher_hash: crate::hash_bytes(&i.to_le_bytes()),
                ..MsgMeta::default()
            };
            assert!(s.select(&m).is_some());
        }
        assert_eq!(s.slots.len(), SLOTS);
    }

    #[test]
    fn none_when_nobody_online() {
        let mut s = strategy();
        s.member_joined(member(1));
        assert_eq!(s.select(&meta("t", "a")), None);
    }
}
