//! `sticky`: every message goes to the same member until that member leaves or goes offline;
//! then a new one is chosen and kept. Useful when a consumer holds per-stream state and the
//! group exists for failover, not for load sharing.
//!
//! Params: `initial` = `random` (default) | `hash_clientid` | `hash_topic`: how a new member is
//! chosen (the hash forms pick by rendezvous on the publisher or topic of the message that
//! needs a choice); `seed` for `random`. A full member is kept: moving would break the order
//! the strategy exists to preserve, and the host queues for it.

use alloc::format;
use alloc::string::String;

use crate::members::MemberTable;
use crate::rng::SplitMix64;
use crate::{params, random, rendezvous, Member, MemberId, MsgMeta, Needs, Strategy};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Initial {
    #[default]
    Random,
    HashClientId,
    HashTopic,
}

#[derive(Clone, Debug)]
pub struct Sticky {
    members: MemberTable,
    initial: Initial,
    rng: SplitMix64,
    current: Option<MemberId>,
}

impl Default for Sticky {
    fn default() -> Self {
        Self {
            members: MemberTable::default(),
            initial: Initial::default(),
            rng: SplitMix64::new(0),
            current: None,
        }
    }
}

impl Strategy for Sticky {
    fn init(&mut self, group: &str, params: &[(String, String)]) -> Result<Needs, String> {
        params::check_keys("sticky", params, &["initial", "seed"], &[])?;
        let initial = match params::get(params, "initial").map(str::trim) {
            None | Some("random") => Initial::Random,
            Some("hash_clientid") => Initial::HashClientId,
            Some("hash_topic") => Initial::HashTopic,
            Some(other) => {
                return Err(format!(
                    "param `initial`: expected `random`, `hash_clientid` or `hash_topic`, got `{other}`"
                ))
            }
        };
        *self = Self {
            members: MemberTable::default(),
            initial,
            rng: SplitMix64::new(params::seed(group, params)?),
            current: None,
        };
        Ok(Needs::NONE)
    }

    fn member_joined(&mut self, member: Member) {
        self.members.join(&member, member.weight);
    }

    fn member_left(&mut self, id: MemberId) {
        self.members.leave(id);
        if self.current == Some(id) {
            self.current = None;
        }
    }

    fn member_load(&mut self, id: MemberId, inflight: u32, capacity: u32, online: bool) {
        self.members.load(id, inflight, capacity, online);
        // Forget a member that went offline at once: if it comes back before the next
        // message, the choice is made afresh rather than depending on timing.
        if !online && self.current == Some(id) {
            self.current = None;
        }
    }

    fn select(&mut self, meta: &MsgMeta) -> Option<MemberId> {
        if let Some(c) = self.current {
            if self.members.is_online(c) {
                return Some(c);
            }
        }
        let pick = match self.initial {
            Initial::Random => random::pick_online(&self.members, &mut self.rng),
            Initial::HashClientId => rendezvous::pick(meta.publisher_hash, self.members.iter()),
            Initial::HashTopic => rendezvous::pick(meta.topic_hash, self.members.iter()),
        }?;
        self.current = Some(pick);
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn sticky(pairs: &[(&str, &str)]) -> Sticky {
        let mut s = Sticky::default();
        s.init("g", &p(pairs)).unwrap();
        s
    }

    #[test]
    fn stays_until_the_member_goes_then_moves_and_stays_again() {
        let mut s = sticky(&[("seed", "9")]);
        join_online(&mut s, 1..=5, 10);
        let first = s.select(&meta("a", "x")).unwrap();
        for i in 0..500 {
            let m = meta(&std::format!("t{i}"), &std::format!("p{i}"));
            assert_eq!(s.select(&m), Some(first));
        }
        // Full is not a reason to move.
        s.member_load(first, 10, 10, true);
        assert_eq!(s.select(&meta("a", "x")), Some(first));
        s.member_load(first, 0, 10, false);
        let second = s.select(&meta("a", "x")).unwrap();
        assert_ne!(second, first);
        // Coming back does not steal the stream back.
        s.member_load(first, 0, 10, true);
        for _ in 0..100 {
            assert_eq!(s.select(&meta("b", "y")), Some(second));
        }
        s.member_left(second);
        let third = s.select(&meta("a", "x")).unwrap();
        assert_ne!(third, second);
    }

    #[test]
    fn hash_initial_is_deterministic_by_key() {
        let choose = |initial: &str, topic: &str, publisher: &str| {
            let mut s = sticky(&[("initial", initial)]);
            join_online(&mut s, 1..=8, 10);
            s.select(&meta(topic, publisher)).unwrap()
        };
        // Same key, same first choice, whatever the other field.
        assert_eq!(
            choose("hash_topic", "t1", "a"),
            choose("hash_topic", "t1", "b")
        );
        assert_eq!(
            choose("hash_clientid", "x", "p1"),
            choose("hash_clientid", "y", "p1")
        );
        // Different keys spread over members.
        let distinct: std::collections::BTreeSet<_> = (0..64)
            .map(|i| choose("hash_topic", &std::format!("t{i}"), "a"))
            .collect();
        assert!(distinct.len() >= 6, "{distinct:?}");
    }

    #[test]
    fn bad_initial_names_the_param() {
        let err = Sticky::default()
            .init("g", &p(&[("initial", "hash_payload")]))
            .unwrap_err();
        assert!(
            err.contains("`initial`") && err.contains("hash_payload"),
            "{err}"
        );
    }

    #[test]
    fn none_when_nobody_online() {
        let mut s = sticky(&[]);
        s.member_joined(member(1));
        assert_eq!(s.select(&MsgMeta::default()), None);
    }
}
