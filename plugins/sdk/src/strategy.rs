//! The author's side of the contract: a [`Strategy`] answers `select` from the [`Members`]
//! the SDK keeps, and [`Managed`] turns the contract's calls into that.

use crate::members::{first_value, Member, Members};
use crate::{MemberId, MsgMeta, Needs};

/// What `init` gets: the group's share name and the params of its `[[shared.groups]]` rule.
#[derive(Clone, Copy, Debug)]
pub struct Init<'a> {
    pub group: &'a str,
    pub params: &'a [(String, String)],
}

impl<'a> Init<'a> {
    /// The param named `key`, if the config set it.
    pub fn param(&self, key: &str) -> Option<&'a str> {
        first_value(self.params, key)
    }

    /// The param named `key` parsed as `T`, or `default` when unset; the error names the key.
    pub fn parse_param<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.param(key) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|_| format!("param `{key}`: cannot parse `{raw}`")),
        }
    }

    /// Refuses params other than `known`, naming the first stranger: a typo in the config then
    /// fails loudly instead of being ignored.
    pub fn allow_only(&self, known: &[&str]) -> Result<(), String> {
        match self
            .params
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            None => Ok(()),
            Some((k, _)) => Err(format!("unknown param `{k}`; known: {}", known.join(", "))),
        }
    }
}

/// A message as `select` sees it. The fields `init`'s [`Needs`] did not ask for are empty:
/// the host copies into the plugin only what it asked for.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    pub topic: &'a str,
    /// The publisher's client id.
    pub publisher: &'a str,
    pub payload: Option<&'a [u8]>,
    /// The PUBLISH's user properties, in the order sent (a key may repeat).
    pub user_properties: &'a [(String, String)],
    pub content_type: Option<&'a str>,
    /// Always present: hashes of the topic, publisher and ordering key, QoS, retain, size.
    pub meta: MsgMeta,
}

impl<'a> Message<'a> {
    /// The first user property named `key`.
    pub fn user_property(&self, key: &str) -> Option<&'a str> {
        first_value(self.user_properties, key)
    }

    /// xxh3-64 of the group's ordering key (`ordered_by`), else of the topic.
    pub fn key_hash(&self) -> u64 {
        self.meta.key_hash
    }
}

/// A dispatch strategy: one value serves one group. Only `select` is required.
pub trait Strategy: Default {
    /// Configures the strategy; `Err` refuses the group's params (the broker keeps the previous
    /// strategy and logs the message). The [`Needs`] say which message fields `select` reads.
    fn init(&mut self, init: &Init<'_>) -> Result<Needs, String> {
        init.allow_only(&[])?;
        Ok(Needs::NONE)
    }

    /// The member to hand `message` to, or `None` to let the broker's round robin decide.
    /// Choose among [`Members::candidates`]: a member that is offline or full makes the broker
    /// spill the message to another member.
    fn select(&mut self, members: &Members, message: &Message<'_>) -> Option<MemberId>;

    /// A member joined; it is already in `members`, offline until its first load report.
    fn member_joined(&mut self, member: &Member) {
        let _ = member;
    }

    /// A member left; it is no longer in `members`.
    fn member_left(&mut self, member: &Member) {
        let _ = member;
    }
}

/// A [`Strategy`] plus the member table the contract's calls keep up to date. The export glue
/// drives it; tests of a strategy can drive it the same way, natively.
#[derive(Default)]
pub struct Managed<S> {
    pub strategy: S,
    pub members: Members,
}

impl<S: Strategy> Managed<S> {
    /// Resets everything, as the host's `init` of a fresh or rebuilt instance does.
    pub fn init(&mut self, group: &str, params: &[(String, String)]) -> Result<Needs, String> {
        let mut fresh = Self::default();
        let needs = fresh.strategy.init(&Init { group, params })?;
        *self = fresh;
        Ok(needs)
    }

    pub fn member_joined(&mut self, member: Member) {
        let id = member.id;
        self.members.join(member);
        if let Some(m) = self.members.get(id) {
            self.strategy.member_joined(m);
        }
    }

    pub fn member_left(&mut self, id: MemberId) {
        if let Some(m) = self.members.leave(id) {
            self.strategy.member_left(&m);
        }
    }

    pub fn member_load(&mut self, id: MemberId, inflight: u32, capacity: u32, online: bool) {
        self.members.load(id, inflight, capacity, online);
    }

    /// `select` with nothing but the metadata (the strategy asked for no fields).
    pub fn select(&mut self, meta: &MsgMeta) -> Option<MemberId> {
        let message = Message {
            topic: "",
            publisher: "",
            payload: None,
            user_properties: &[],
            content_type: None,
            meta: *meta,
        };
        self.select_message(&message)
    }

    pub fn select_message(&mut self, message: &Message<'_>) -> Option<MemberId> {
        self.strategy.select(&self.members, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RoundRobin;

    /// The scaffold's example, in miniature: route by the user property `tenant`.
    #[derive(Default)]
    struct ByTenant {
        round_robin: RoundRobin,
        joins: u32,
    }

    impl Strategy for ByTenant {
        fn init(&mut self, init: &Init<'_>) -> Result<Needs, String> {
            init.allow_only(&["spare"])?;
            Ok(Needs::USER_PROPERTIES)
        }

        fn select(&mut self, members: &Members, msg: &Message<'_>) -> Option<MemberId> {
            match msg.user_property("tenant") {
                Some(t) => members.rendezvous(crate::hash_bytes(t.as_bytes())),
                None => self.round_robin.next(members),
            }
        }

        fn member_joined(&mut self, _member: &Member) {
            self.joins += 1;
        }
    }

    fn member(id: MemberId) -> Member {
        Member {
            id,
            client_id: format!("worker-{id}"),
            weight: 1,
            subscribed_at_ms: 0,
            user_properties: Vec::new(),
            online: false,
            inflight: 0,
            capacity: 0,
            client_hash: 0,
        }
    }

    fn message<'a>(props: &'a [(String, String)]) -> Message<'a> {
        Message {
            topic: "t",
            publisher: "p",
            payload: None,
            user_properties: props,
            content_type: None,
            meta: MsgMeta::default(),
        }
    }

    #[test]
    fn managed_keeps_the_table_and_routes_by_property() {
        let mut s = Managed::<ByTenant>::default();
        assert_eq!(s.init("g", &[]), Ok(Needs::USER_PROPERTIES));
        for id in 1..=3 {
            s.member_joined(member(id));
            s.member_load(id, 0, 8, true);
        }
        assert_eq!(s.strategy.joins, 3);
        let tenant = [("tenant".to_owned(), "acme".to_owned())];
        let first = s.select_message(&message(&tenant));
        assert!(first.is_some());
        for _ in 0..10 {
            assert_eq!(s.select_message(&message(&tenant)), first);
        }
        let rr: Vec<_> = (0..3).map(|_| s.select_message(&message(&[]))).collect();
        assert_eq!(rr, [Some(1), Some(2), Some(3)]);
        s.member_left(2);
        assert_eq!(s.members.len(), 2);
    }

    #[test]
    fn init_refuses_unknown_params_by_name_and_resets() {
        let mut s = Managed::<ByTenant>::default();
        s.init("g", &[]).unwrap();
        s.member_joined(member(1));
        let err = s.init("g", &[("bogus".into(), "1".into())]).unwrap_err();
        assert!(err.contains("`bogus`"), "{err}");
        assert_eq!(s.members.len(), 1, "a refused init keeps the instance");
        s.init("g", &[("spare".into(), "1".into())]).unwrap();
        assert!(s.members.is_empty(), "a successful init starts afresh");
    }

    #[test]
    fn parse_param_names_the_key() {
        let params = [("n".to_owned(), "x".to_owned())];
        let init = Init {
            group: "g",
            params: &params,
        };
        assert_eq!(init.parse_param("m", 3u32), Ok(3));
        assert!(init.parse_param("n", 3u32).unwrap_err().contains("`n`"));
    }
}
