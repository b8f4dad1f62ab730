//! The group as a strategy sees it: every member the host announced, with its client id,
//! weight, SUBSCRIBE user properties and last reported load, kept up to date by [`Managed`]
//! from the contract's membership calls so that a strategy never tracks them itself.
//!
//! [`Managed`]: crate::Managed

use crate::{hash_bytes, MemberId};

/// One member of the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: MemberId,
    /// The MQTT client identifier of the member's session.
    pub client_id: String,
    /// Relative weight (the config's `weights`, else 1).
    pub weight: u32,
    /// Milliseconds since the Unix epoch when the member subscribed: orders members for
    /// active/standby schemes.
    pub subscribed_at_ms: u64,
    /// The user properties of the SUBSCRIBE that made the session a member (MQTT 5).
    pub user_properties: Vec<(String, String)>,
    /// Connected now. A member joins offline; the host's first load report says otherwise.
    pub online: bool,
    /// Messages sent to the member and not yet acknowledged.
    pub inflight: u32,
    /// The member's window (its Receive Maximum or the broker's inflight limit).
    pub capacity: u32,
    /// xxh3-64 of `client_id`: the member's identity for rendezvous hashing, so a client that
    /// comes back with a new session wins the same keys.
    pub client_hash: u64,
}

impl Member {
    /// Whether the host last reported room in the member's window. The host reports "full"
    /// when `inflight` reaches `capacity` and "room" again only once a quarter of the window
    /// is free (see the member lifecycle in `docs/plugins.md`).
    pub fn has_room(&self) -> bool {
        self.inflight < self.capacity
    }

    /// The first SUBSCRIBE user property named `key`.
    pub fn user_property(&self, key: &str) -> Option<&str> {
        first_value(&self.user_properties, key)
    }
}

pub(crate) fn first_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Every member of the group, in id order (deterministic, so a rebuilt instance that is
/// replayed the same membership answers the same).
#[derive(Clone, Debug, Default)]
pub struct Members {
    sorted: Vec<Member>,
}

impl Members {
    fn position(&self, id: MemberId) -> Result<usize, usize> {
        self.sorted.binary_search_by_key(&id, |m| m.id)
    }

    /// A member joined (offline, window unknown). A repeated join of the same id refreshes the
    /// static fields and keeps the load state.
    pub(crate) fn join(&mut self, mut member: Member) {
        member.client_hash = hash_bytes(member.client_id.as_bytes());
        match self.position(member.id) {
            Ok(i) => {
                let old = &self.sorted[i];
                member.online = old.online;
                member.inflight = old.inflight;
                member.capacity = old.capacity;
                self.sorted[i] = member;
            }
            Err(i) => self.sorted.insert(i, member),
        }
    }

    pub(crate) fn leave(&mut self, id: MemberId) -> Option<Member> {
        self.position(id).ok().map(|i| self.sorted.remove(i))
    }

    pub(crate) fn load(&mut self, id: MemberId, inflight: u32, capacity: u32, online: bool) {
        if let Ok(i) = self.position(id) {
            let m = &mut self.sorted[i];
            m.inflight = inflight;
            m.capacity = capacity;
            m.online = online;
        }
    }

    pub fn get(&self, id: MemberId) -> Option<&Member> {
        self.position(id).ok().map(|i| &self.sorted[i])
    }

    /// The member whose session has this client id (the newest, if a takeover is in progress).
    pub fn by_client_id(&self, client_id: &str) -> Option<&Member> {
        self.sorted.iter().rev().find(|m| m.client_id == client_id)
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// All members, in id order, online or not.
    pub fn iter(&self) -> std::slice::Iter<'_, Member> {
        self.sorted.iter()
    }

    pub fn online(&self) -> impl Iterator<Item = &Member> {
        self.sorted.iter().filter(|m| m.online)
    }

    /// The members worth choosing: online with room; when none has room, every online member
    /// (a full member still beats the group's queue). Empty when nobody is online.
    pub fn candidates(&self) -> impl Iterator<Item = &Member> {
        let any_room = self.online().any(Member::has_room);
        self.online().filter(move |m| !any_room || m.has_room())
    }

    /// The candidate that wins `key` by rendezvous (highest-random-weight) hashing: one key's
    /// messages stay with one member, and a join or leave moves only the keys that member wins
    /// or held. Hash a string key with [`hash_bytes`](crate::hash_bytes).
    pub fn rendezvous(&self, key: u64) -> Option<MemberId> {
        self.candidates()
            .map(|m| {
                (
                    sharq_strategies::rendezvous::score(key, m.client_hash),
                    m.id,
                )
            })
            .max()
            .map(|(_, id)| id)
    }

    /// A candidate drawn at random, in proportion to the members' weights.
    pub fn weighted_random(&self, rng: &mut crate::Rng) -> Option<MemberId> {
        let total: u64 = self.candidates().map(|m| u64::from(m.weight.max(1))).sum();
        if total == 0 {
            return None;
        }
        let mut ticket = rng.next_u64() % total;
        for m in self.candidates() {
            let w = u64::from(m.weight.max(1));
            if ticket < w {
                return Some(m.id);
            }
            ticket -= w;
        }
        None
    }
}

/// One rotation over the candidates, in id order; joins and leaves neither reset nor skip it.
#[derive(Clone, Debug, Default)]
pub struct RoundRobin {
    /// The id of the last member chosen (an id, not an index, so a departed member's cursor
    /// still says where to continue).
    last: Option<MemberId>,
}

impl RoundRobin {
    /// The next candidate after the last one chosen, wrapping; `None` when nobody is online.
    pub fn next(&mut self, members: &Members) -> Option<MemberId> {
        let after = |m: &&Member| self.last.is_none_or(|last| m.id > last);
        let pick = members
            .candidates()
            .find(after)
            .or_else(|| members.candidates().next())?
            .id;
        self.last = Some(pick);
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn member(id: MemberId, client: &str) -> Member {
        Member {
            id,
            client_id: client.to_owned(),
            weight: 1,
            subscribed_at_ms: id,
            user_properties: vec![("zone".into(), format!("z{id}"))],
            online: false,
            inflight: 0,
            capacity: 0,
            client_hash: 0,
        }
    }

    fn group(ids: &[MemberId]) -> Members {
        let mut g = Members::default();
        for &id in ids {
            g.join(member(id, &format!("c{id}")));
            g.load(id, 0, 10, true);
        }
        g
    }

    #[test]
    fn joined_members_are_offline_until_loaded_and_rejoin_keeps_load() {
        let mut g = Members::default();
        g.join(member(2, "b"));
        assert_eq!(g.candidates().count(), 0);
        g.load(2, 3, 10, true);
        g.join(member(2, "b"));
        let m = g.get(2).unwrap();
        assert!(m.online && m.inflight == 3);
        assert_eq!(m.user_property("zone"), Some("z2"));
        assert_eq!(g.by_client_id("b").map(|m| m.id), Some(2));
    }

    #[test]
    fn candidates_prefer_room_then_any_online() {
        let mut g = group(&[1, 2, 3]);
        g.load(1, 10, 10, true);
        g.load(3, 0, 10, false);
        assert_eq!(g.candidates().map(|m| m.id).collect::<Vec<_>>(), [2]);
        g.load(2, 10, 10, true);
        assert_eq!(g.candidates().map(|m| m.id).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn round_robin_rotates_over_joins_and_leaves() {
        let mut g = group(&[1, 2, 3]);
        let mut rr = RoundRobin::default();
        assert_eq!(rr.next(&g), Some(1));
        assert_eq!(rr.next(&g), Some(2));
        g.leave(2);
        assert_eq!(rr.next(&g), Some(3));
        assert_eq!(rr.next(&g), Some(1));
        g.load(1, 0, 10, false);
        g.load(3, 0, 10, false);
        assert_eq!(rr.next(&g), None);
    }

    #[test]
    fn rendezvous_moves_about_one_in_n_when_a_member_joins() {
        let mut g = group(&(1..=4).collect::<Vec<_>>());
        let before: Vec<_> = (0..2000u64)
            .map(|k| g.rendezvous(hash_bytes(&k.to_le_bytes())))
            .collect();
        g.join(member(5, "c5"));
        g.load(5, 0, 10, true);
        let moved = (0..2000u64)
            .filter(|&k| g.rendezvous(hash_bytes(&k.to_le_bytes())) != before[k as usize])
            .count();
        // One in five, give or take the hash's noise.
        assert!((300..=500).contains(&moved), "{moved}");
    }

    #[test]
    fn weighted_random_follows_weights() {
        let mut g = group(&[1, 2]);
        let mut m = member(2, "c2");
        m.weight = 3;
        g.join(m);
        let mut rng = crate::Rng::new(7);
        let twos = (0..4000)
            .filter(|_| g.weighted_random(&mut rng) == Some(2))
            .count();
        assert!((2800..=3200).contains(&twos), "{twos}");
    }
}
