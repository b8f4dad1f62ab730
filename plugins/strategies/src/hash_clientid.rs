//! `hash_clientid`: all messages of one publisher go to the same member, by rendezvous hashing
//! of the publisher's client-id hash over the online members. When a member joins or leaves,
//! only ~1/n of the publishers move (see [`crate::rendezvous`]). Broker-internal messages
//! (publisher hash 0) form one key like any other. No params.
//!
//! Affinity is kept when the chosen member is full: per-publisher order is the point of the
//! strategy, and the host queues for a full member.

use alloc::string::String;

use crate::members::MemberTable;
use crate::{params, rendezvous, Member, MemberId, MsgMeta, Needs, Strategy};

#[derive(Clone, Debug, Default)]
pub struct HashClientId {
    members: MemberTable,
    picks: rendezvous::PickCache,
}

impl Strategy for HashClientId {
    fn init(&mut self, _group: &str, params: &[(String, String)]) -> Result<Needs, String> {
        params::check_keys("hash_clientid", params, &[], &[])?;
        *self = Self::default();
        Ok(Needs::NONE)
    }

    forward_membership!();

    fn select(&mut self, meta: &MsgMeta) -> Option<MemberId> {
        self.picks.pick(meta.publisher_hash, &self.members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::collections::BTreeMap;

    #[test]
    fn affinity_per_publisher_and_spread_across_publishers() {
        let mut s = HashClientId::default();
        s.init("g", &[]).unwrap();
        join_online(&mut s, 1..=5, 10);
        let mut owner = BTreeMap::new();
        for round in 0..3 {
            for i in 0..1000 {
                let publisher = std::format!("dev-{i}");
                let got = s
                    .select(&meta(&std::format!("t/{round}"), &publisher))
                    .unwrap();
                assert_eq!(*owner.entry(i).or_insert(got), got, "publisher {i} moved");
            }
        }
        let mut h = [0usize; 6];
        for id in owner.values() {
            h[*id as usize] += 1;
        }
        assert!(h[1..].iter().all(|&c| (150..250).contains(&c)), "{h:?}");
    }

    #[test]
    fn full_member_keeps_its_publishers_offline_one_loses_them() {
        let mut s = HashClientId::default();
        s.init("g", &[]).unwrap();
        join_online(&mut s, 1..=3, 10);
        let m = meta("t", "the-publisher");
        let owner = s.select(&m).unwrap();
        s.member_load(owner, 10, 10, true);
        assert_eq!(s.select(&m), Some(owner));
        s.member_load(owner, 0, 10, false);
        assert_ne!(s.select(&m), Some(owner));
        s.member_load(owner, 0, 10, true);
        assert_eq!(s.select(&m), Some(owner));
    }
}
