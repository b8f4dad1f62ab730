//! `least_inflight`: the online member with the most free window (capacity − in-flight),
//! ties broken in round-robin order. A member reported full is avoided while any member has
//! room.
//!
//! The host reports load only on transitions (online/offline, full, room again), not per
//! message, so between reports this instance counts its own picks against each member: it
//! assumes every message it sends is still in flight until the host says otherwise. Without
//! that, a stale report would send every message to the same member until it filled up. No
//! params.

use alloc::string::String;

use crate::members::{MemberState, MemberTable};
use crate::{params, Member, MemberId, MsgMeta, Needs, Strategy};

#[derive(Clone, Debug, Default)]
pub struct LeastInflight {
    /// Per member: picks since its last load report.
    members: MemberTable<u32>,
    cursor: Option<MemberId>,
}

fn free(m: &MemberState<u32>) -> i64 {
    i64::from(m.capacity) - i64::from(m.inflight) - i64::from(m.ext)
}

impl Strategy for LeastInflight {
    fn init(&mut self, _group: &str, params: &[(String, String)]) -> Result<Needs, String> {
        params::check_keys("least_inflight", params, &[], &[])?;
        *self = Self::default();
        Ok(Needs::NONE)
    }

    fn member_joined(&mut self, member: Member) {
        self.members.join(&member, member.weight);
    }

    fn member_left(&mut self, id: MemberId) {
        self.members.leave(id);
    }

    fn member_load(&mut self, id: MemberId, inflight: u32, capacity: u32, online: bool) {
        if self.members.load(id, inflight, capacity, online).is_some() {
            if let Some(m) = self.members.get_mut(id) {
                m.ext = 0;
            }
        }
    }

    fn select(&mut self, _meta: &MsgMeta) -> Option<MemberId> {
        let any_room = self.members.online().any(|m| m.has_room());
        let mut best: Option<(i64, MemberId)> = None;
        // Rotation order, strictly-greater wins: among equals the first after the cursor.
        for m in self.members.rotation(self.cursor) {
            if !m.online || (any_room && !m.has_room()) {
                continue;
            }
            let f = free(m);
            if best.is_none_or(|(bf, _)| f > bf) {
                best = Some((f, m.id));
            }
        }
        let (_, pick) = best?;
        self.cursor = Some(pick);
        if let Some(m) = self.members.get_mut(pick) {
            m.ext = m.ext.saturating_add(1);
        }
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::vec::Vec;

    fn strategy() -> LeastInflight {
        let mut s = LeastInflight::default();
        s.init("g", &[]).unwrap();
        s
    }

    #[test]
    fn avoids_a_full_member() {
        let mut s = strategy();
        join_online(&mut s, 1..=3, 10);
        s.member_load(2, 10, 10, true);
        let h = histogram(&mut s, 3000, 3, &MsgMeta::default());
        assert_eq!(h[2], 0, "{h:?}");
        assert_eq!(h[1], 1500);
        assert_eq!(h[3], 1500);
    }

    #[test]
    fn prefers_most_free_then_round_robins_ties() {
        let mut s = strategy();
        join_online(&mut s, 1..=3, 10);
        s.member_load(1, 6, 10, true); // 4 free
        s.member_load(2, 8, 10, true); // 2 free
        s.member_load(3, 0, 10, true); // 10 free
        let got: Vec<_> = (0..12)
            .map(|_| s.select(&MsgMeta::default()).unwrap())
            .collect();
        // 3 is picked until it is down to 4 free, then 1 and 3 alternate; once all three are
        // at 2 free the rotation continues after the last pick (3): 1, then 2.
        assert_eq!(got, [3, 3, 3, 3, 3, 3, 1, 3, 1, 3, 1, 2]);
    }

    #[test]
    fn a_load_report_resets_the_estimate() {
        let mut s = strategy();
        join_online(&mut s, 1..=2, 4);
        for _ in 0..8 {
            s.select(&MsgMeta::default());
        }
        // The host says 1 drained everything and 2 still has 4 in flight.
        s.member_load(1, 0, 4, true);
        s.member_load(2, 3, 4, true);
        assert_eq!(s.select(&MsgMeta::default()), Some(1));
        assert_eq!(s.select(&MsgMeta::default()), Some(1));
        assert_eq!(s.select(&MsgMeta::default()), Some(1));
    }

    #[test]
    fn all_full_still_delivers_and_offline_never() {
        let mut s = strategy();
        join_online(&mut s, 1..=3, 10);
        for id in 1..=2 {
            s.member_load(id, 10, 10, true);
        }
        s.member_load(3, 0, 10, false);
        let h = histogram(&mut s, 100, 3, &MsgMeta::default());
        assert_eq!((h[1], h[2], h[3]), (50, 50, 0));
    }
}
