//! `random`: a uniformly random online member, preferring those with room in their window.
//!
//! Params: `seed` (u64, decimal or 0x hex; default derived from the group name). Randomness
//! comes only from the seed, as the contract demands, so a rebuilt instance replays the same
//! sequence.

use alloc::string::String;

use crate::members::MemberTable;
use crate::rng::SplitMix64;
use crate::{params, Member, MemberId, MsgMeta, Needs, Strategy};

#[derive(Clone, Debug)]
pub struct Random {
    members: MemberTable,
    rng: SplitMix64,
}

impl Default for Random {
    fn default() -> Self {
        Self {
            members: MemberTable::default(),
            rng: SplitMix64::new(0),
        }
    }
}

/// Picks uniformly among online members with room, else among all online members.
pub(crate) fn pick_online<X>(members: &MemberTable<X>, rng: &mut SplitMix64) -> Option<MemberId> {
    let with_room = members.online().filter(|m| m.has_room()).count();
    if with_room > 0 {
        let k = rng.below(with_room);
        return members
            .online()
            .filter(|m| m.has_room())
            .nth(k)
            .map(|m| m.id);
    }
    let online = members.online().count();
    if online == 0 {
        return None;
    }
    let k = rng.below(online);
    members.online().nth(k).map(|m| m.id)
}

impl Strategy for Random {
    fn init(&mut self, group: &str, params: &[(String, String)]) -> Result<Needs, String> {
        params::check_keys("random", params, &["seed"], &[])?;
        *self = Self {
            members: MemberTable::default(),
            rng: SplitMix64::new(params::seed(group, params)?),
        };
        Ok(Needs::NONE)
    }

    forward_membership!();

    fn select(&mut self, _meta: &MsgMeta) -> Option<MemberId> {
        pick_online(&self.members, &mut self.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn seeded(seed: &str) -> Random {
        let mut s = Random::default();
        s.init("g", &p(&[("seed", seed)])).unwrap();
        s
    }

    #[test]
    fn uniform_within_chi_square_bound() {
        let mut s = seeded("42");
        join_online(&mut s, 1..=10, 100);
        let n = 100_000;
        let h = histogram(&mut s, n, 10, &meta("t", "p"));
        let expected = n as f64 / 10.0;
        let chi2: f64 = h[1..]
            .iter()
            .map(|&o| {
                let d = o as f64 - expected;
                d * d / expected
            })
            .sum();
        // 9 degrees of freedom: P(chi2 > 27.88) = 0.001.
        assert!(chi2 < 27.88, "chi2 = {chi2}, histogram {h:?}");
    }

    #[test]
    fn same_seed_same_sequence_and_different_seed_differs() {
        let run = |seed: &str| {
            let mut s = seeded(seed);
            join_online(&mut s, 1..=5, 10);
            (0..64)
                .map(|_| s.select(&MsgMeta::default()))
                .collect::<std::vec::Vec<_>>()
        };
        assert_eq!(run("1"), run("1"));
        assert_ne!(run("1"), run("2"));
    }

    #[test]
    fn avoids_full_and_offline_members() {
        let mut s = seeded("3");
        join_online(&mut s, 1..=4, 10);
        s.member_load(1, 10, 10, true);
        s.member_load(2, 0, 10, false);
        for _ in 0..1000 {
            let id = s.select(&MsgMeta::default()).unwrap();
            assert!(id == 3 || id == 4, "{id}");
        }
        // All online members full: still delivers to one of them rather than queueing.
        s.member_load(3, 10, 10, true);
        s.member_load(4, 10, 10, true);
        let h = histogram(&mut s, 1000, 4, &MsgMeta::default());
        assert_eq!(h[2], 0);
        assert!(h[1] > 0 && h[3] > 0 && h[4] > 0, "{h:?}");
        s.member_left(1);
        s.member_left(3);
        s.member_left(4);
        assert_eq!(s.select(&MsgMeta::default()), None);
    }

    #[test]
    fn bad_seed_names_the_param() {
        let err = Random::default()
            .init("g", &p(&[("seed", "banana")]))
            .unwrap_err();
        assert!(err.contains("`seed`"), "{err}");
    }
}
