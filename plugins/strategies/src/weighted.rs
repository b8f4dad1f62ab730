//! `weighted`: smooth weighted round robin, as nginx does it. Over any run of W picks (W the
//! sum of the weights) each member gets exactly its weight, and the picks are interleaved
//! (5:1:1 gives a a b a c a a, not a a a a a b c), so no member sees bursts.
//!
//! Weights: param `weight.<client-id> = N` overrides the member's own `weight` (from the group
//! config or its SUBSCRIBE user property). Weight 0 parks a member: it gets nothing while any
//! weighted member is online; if only parked members are online the answer is `None`, so the
//! host's round robin delivers rather than the message waiting. Members reported full are
//! skipped while another has room. The running counters restart whenever a member joins,
//! leaves, or goes on- or offline, so the exact proportions hold for each stable stretch.

use alloc::collections::BTreeMap;
use alloc::string::String;

use crate::members::MemberTable;
use crate::{params, Member, MemberId, MsgMeta, Needs, Strategy};

const PREFIX: &str = "weight.";

#[derive(Clone, Debug, Default)]
pub struct Weighted {
    /// Per member: nginx's `current_weight`.
    members: MemberTable<i64>,
    overrides: BTreeMap<String, u32>,
}

impl Weighted {
    fn restart(&mut self) {
        for m in self.members.iter_mut() {
            m.ext = 0;
        }
    }
}

impl Strategy for Weighted {
    fn init(&mut self, _group: &str, params: &[(String, String)]) -> Result<Needs, String> {
        params::check_keys("weighted", params, &[], &[PREFIX])?;
        let mut overrides = BTreeMap::new();
        for (k, v) in params {
            // check_keys let through only keys with the prefix.
            let client = &k[PREFIX.len()..];
            if client.is_empty() {
                return Err(alloc::format!(
                    "param `{k}`: a client id must follow `{PREFIX}`"
                ));
            }
            overrides.insert(client.into(), params::parse_u32(k, v)?);
        }
        *self = Self {
            members: MemberTable::default(),
            overrides,
        };
        Ok(Needs::NONE)
    }

    fn member_joined(&mut self, member: Member) {
        let weight = self
            .overrides
            .get(&member.client_id)
            .copied()
            .unwrap_or(member.weight);
        self.members.join(&member, weight);
        self.restart();
    }

    fn member_left(&mut self, id: MemberId) {
        if self.members.leave(id).is_some() {
            self.restart();
        }
    }

    fn member_load(&mut self, id: MemberId, inflight: u32, capacity: u32, online: bool) {
        if self.members.load(id, inflight, capacity, online) == Some(!online) {
            self.restart();
        }
    }

    fn select(&mut self, _meta: &MsgMeta) -> Option<MemberId> {
        let eligible_with_room =
            |m: &crate::members::MemberState<i64>| m.online && m.weight > 0 && m.has_room();
        let any_room = self.members.iter().any(eligible_with_room);
        let mut total: i64 = 0;
        let mut best: Option<(i64, MemberId)> = None;
        for m in self.members.iter_mut() {
            if !(m.online && m.weight > 0) || (any_room && !m.has_room()) {
                continue;
            }
            let w = i64::from(m.weight);
            m.ext += w;
            total += w;
            if best.is_none_or(|(bc, _)| m.ext > bc) {
                best = Some((m.ext, m.id));
            }
        }
        let (_, pick) = best?;
        if let Some(m) = self.members.get_mut(pick) {
            m.ext -= total;
        }
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::vec::Vec;

    fn join_weighted(s: &mut Weighted, id: MemberId, weight: u32) {
        s.member_joined(Member {
            weight,
            ..member(id)
        });
        s.member_load(id, 0, 100, true);
    }

    #[test]
    fn exact_and_smooth_over_a_cycle() {
        let mut s = Weighted::default();
        s.init("g", &[]).unwrap();
        join_weighted(&mut s, 1, 5);
        join_weighted(&mut s, 2, 1);
        join_weighted(&mut s, 3, 1);
        let cycle: Vec<_> = (0..7)
            .map(|_| s.select(&MsgMeta::default()).unwrap())
            .collect();
        assert_eq!(cycle, [1, 1, 2, 1, 3, 1, 1]);
        let h = histogram(&mut s, 7 * 100, 3, &MsgMeta::default());
        assert_eq!(&h[1..], &[500, 100, 100]);
    }

    #[test]
    fn params_override_member_weights() {
        let mut s = Weighted::default();
        s.init(
            "g",
            &p(&[("weight.client-1", "3"), ("weight.client-3", "0")]),
        )
        .unwrap();
        join_online(&mut s, 1..=3, 100); // all carry weight 1 of their own
        let h = histogram(&mut s, 400, 3, &MsgMeta::default());
        assert_eq!(&h[1..], &[300, 100, 0]);
    }

    #[test]
    fn only_parked_members_online_means_none() {
        let mut s = Weighted::default();
        s.init("g", &p(&[("weight.client-1", "0")])).unwrap();
        join_online(&mut s, [1], 10);
        assert_eq!(s.select(&MsgMeta::default()), None);
    }

    #[test]
    fn skips_full_and_offline_and_restarts_on_change() {
        let mut s = Weighted::default();
        s.init("g", &[]).unwrap();
        join_weighted(&mut s, 1, 2);
        join_weighted(&mut s, 2, 1);
        s.member_load(1, 100, 100, true);
        assert_eq!(s.select(&MsgMeta::default()), Some(2));
        s.member_load(1, 0, 100, true);
        s.member_load(2, 0, 100, false);
        assert_eq!(s.select(&MsgMeta::default()), Some(1));
        s.member_load(2, 0, 100, true);
        let h = histogram(&mut s, 300, 2, &MsgMeta::default());
        assert_eq!(&h[1..], &[200, 100]);
    }

    #[test]
    fn bad_weights_name_the_param() {
        for (k, v) in [("weight.a", "-1"), ("weight.a", "x"), ("weight.", "1")] {
            let err = Weighted::default().init("g", &p(&[(k, v)])).unwrap_err();
            assert!(err.contains(&std::format!("`{k}`")), "{err}");
        }
        assert!(Weighted::default()
            .init("g", &p(&[("weights.a", "1")]))
            .is_err());
    }
}
