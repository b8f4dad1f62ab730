//! `failover`: active/standby. The earliest-subscribed online member (ties by id) takes every
//! message; the others receive nothing until it goes offline or leaves. When an earlier
//! member comes back it takes over again, so the active one is always predictable from the
//! membership alone. Load is ignored: standbys exist for failure, not for overflow. No params.

use alloc::string::String;

use crate::members::MemberTable;
use crate::{params, Member, MemberId, MsgMeta, Needs, Strategy};

#[derive(Clone, Debug, Default)]
pub struct Failover {
    members: MemberTable,
}

impl Strategy for Failover {
    fn init(&mut self, _group: &str, params: &[(String, String)]) -> Result<Needs, String> {
        params::check_keys("failover", params, &[], &[])?;
        *self = Self::default();
        Ok(Needs::NONE)
    }

    forward_membership!();

    fn select(&mut self, _meta: &MsgMeta) -> Option<MemberId> {
        self.members
            .online()
            .min_by_key(|m| (m.subscribed_at_ms, m.id))
            .map(|m| m.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn join_at(s: &mut Failover, id: MemberId, at: u64) {
        s.member_joined(Member {
            subscribed_at_ms: at,
            ..member(id)
        });
        s.member_load(id, 0, 10, true);
    }

    #[test]
    fn standby_only_when_active_is_offline_or_gone() {
        let mut s = Failover::default();
        s.init("g", &[]).unwrap();
        // Ids do not follow subscription order: the earliest subscriber wins, not the lowest id.
        join_at(&mut s, 7, 100);
        join_at(&mut s, 3, 200);
        join_at(&mut s, 5, 300);
        let m = meta("t", "p");
        let h = histogram(&mut s, 1000, 7, &m);
        assert_eq!(h[7], 1000);
        s.member_load(7, 10, 10, true);
        assert_eq!(s.select(&m), Some(7), "full is not failed");
        s.member_load(7, 0, 10, false);
        assert_eq!(s.select(&m), Some(3));
        s.member_load(7, 0, 10, true);
        assert_eq!(s.select(&m), Some(7), "active takes over again");
        s.member_left(7);
        assert_eq!(s.select(&m), Some(3));
        s.member_left(3);
        assert_eq!(s.select(&m), Some(5));
        s.member_load(5, 0, 10, false);
        assert_eq!(s.select(&m), None);
    }

    #[test]
    fn same_timestamp_breaks_ties_by_id() {
        let mut s = Failover::default();
        s.init("g", &[]).unwrap();
        join_at(&mut s, 9, 100);
        join_at(&mut s, 4, 100);
        assert_eq!(s.select(&MsgMeta::default()), Some(4));
    }
}
