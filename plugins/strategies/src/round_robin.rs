//! `round_robin`: one rotation per group, whatever the number of publishers (EMQX #8454 is
//! the complaint this answers: per-publisher rotations overload the first member when every
//! publisher sends one message).
//!
//! The cursor is the id of the last member picked, and the next pick is the next online
//! member with room in id order, so the rotation is exact while every member has room, and
//! joins and leaves neither reset nor skip it. No params.

use alloc::string::String;

use crate::members::MemberTable;
use crate::{params, Member, MemberId, MsgMeta, Needs, Strategy};

#[derive(Clone, Debug, Default)]
pub struct RoundRobin {
    members: MemberTable,
    cursor: Option<MemberId>,
}

impl Strategy for RoundRobin {
    fn init(&mut self, _group: &str, params: &[(String, String)]) -> Result<Needs, String> {
        params::check_keys("round_robin", params, &[], &[])?;
        *self = Self::default();
        Ok(Needs::NONE)
    }

    forward_membership!();

    fn select(&mut self, _meta: &MsgMeta) -> Option<MemberId> {
        let pick = self.members.next_online(self.cursor)?;
        self.cursor = Some(pick);
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::vec::Vec;

    fn rr() -> RoundRobin {
        let mut s = RoundRobin::default();
        s.init("g", &[]).unwrap();
        s
    }

    fn picks(s: &mut RoundRobin, n: usize) -> Vec<MemberId> {
        (0..n)
            .map(|_| s.select(&MsgMeta::default()).unwrap())
            .collect()
    }

    #[test]
    fn exact_rotation_regardless_of_publisher() {
        let mut s = rr();
        join_online(&mut s, [3, 1, 2], 10);
        let got: Vec<_> = (0..9)
            .map(|i| s.select(&meta("t", &std::format!("pub-{i}"))).unwrap())
            .collect();
        assert_eq!(got, [1, 2, 3, 1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn join_and_leave_keep_the_rotation() {
        let mut s = rr();
        join_online(&mut s, [1, 2, 3], 10);
        assert_eq!(picks(&mut s, 2), [1, 2]);
        s.member_left(2);
        join_online(&mut s, [4], 10);
        assert_eq!(picks(&mut s, 4), [3, 4, 1, 3]);
    }

    #[test]
    fn skips_full_and_offline_then_falls_back_to_full() {
        let mut s = rr();
        join_online(&mut s, [1, 2, 3], 10);
        s.member_load(2, 10, 10, true);
        s.member_load(3, 0, 10, false);
        assert_eq!(picks(&mut s, 3), [1, 1, 1]);
        s.member_load(1, 10, 10, true);
        assert_eq!(picks(&mut s, 4), [2, 1, 2, 1]);
        s.member_load(1, 0, 10, false);
        s.member_load(2, 0, 10, false);
        assert_eq!(s.select(&MsgMeta::default()), None);
    }

    #[test]
    fn fair_counts_over_many_messages() {
        let mut s = rr();
        join_online(&mut s, 1..=7, 10);
        let h = histogram(&mut s, 7 * 1000, 7, &MsgMeta::default());
        assert!(h[1..].iter().all(|&c| c == 1000), "{h:?}");
    }

    #[test]
    fn no_params_accepted() {
        let err = RoundRobin::default()
            .init("g", &p(&[("seed", "1")]))
            .unwrap_err();
        assert!(err.contains("`seed`") && err.contains("none"), "{err}");
    }
}
