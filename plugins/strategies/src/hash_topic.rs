//! `hash_topic`: all messages on one topic go to the same member, by rendezvous hashing of the
//! topic hash over the online members; ~1/n of the topics move when a member joins or leaves.
//! Affinity is kept when the member is full, to keep per-topic order. No params.

use alloc::string::String;

use crate::members::MemberTable;
use crate::{params, rendezvous, Member, MemberId, MsgMeta, Needs, Strategy};

#[derive(Clone, Debug, Default)]
pub struct HashTopic {
    members: MemberTable,
    picks: rendezvous::PickCache,
}

impl Strategy for HashTopic {
    fn init(&mut self, _group: &str, params: &[(String, String)]) -> Result<Needs, String> {
        params::check_keys("hash_topic", params, &[], &[])?;
        *self = Self::default();
        Ok(Needs::NONE)
    }

    forward_membership!();

    fn select(&mut self, meta: &MsgMeta) -> Option<MemberId> {
        self.picks.pick(meta.topic_hash, &self.members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::vec::Vec;

    #[test]
    fn affinity_per_topic_and_minimal_movement_on_join() {
        let mut s = HashTopic::default();
        s.init("g", &[]).unwrap();
        join_online(&mut s, 1..=10, 10);
        let topics: Vec<_> = (0..10_000)
            .map(|i| std::format!("sensors/{i}/temp"))
            .collect();
        let before: Vec<_> = topics
            .iter()
            .map(|t| s.select(&meta(t, "p")).unwrap())
            .collect();
        // Publisher does not matter.
        for (t, b) in topics.iter().zip(&before).take(100) {
            assert_eq!(s.select(&meta(t, "other")), Some(*b));
        }
        join_online(&mut s, [11], 10);
        let moved = topics
            .iter()
            .zip(&before)
            .filter(|(t, b)| s.select(&meta(t, "p")) != Some(**b))
            .count();
        assert!(moved * 11 <= 15_000, "moved {moved}");
    }
}
