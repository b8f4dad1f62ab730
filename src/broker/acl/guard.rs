//! The read check at delivery for one subscription, decided as far as possible when it is
//! made.

use std::sync::Arc;

use bytestring::ByteString;

use super::{decide_over, intersects, Access, AclHandle, Identity};

/// What one subscription may receive: the read check at delivery, decided as far as possible
/// when the subscription is made, so that the publish path stays cheap. A filter readable
/// throughout (the common case) costs one atomic load per message; one that also reaches
/// unreadable topics (`#` beside `topic deny test/nosubscribe`) is matched per message against
/// the few rules that meet it, not the whole file. After a reload the precomputed answer is
/// stale, and every message is checked against the rules in force then, for the identity that
/// subscribed, until the client subscribes again.
#[derive(Debug)]
pub struct ReadGuard {
    handle: Arc<AclHandle>,
    /// The ACL generation `rules` was computed under.
    generation: u64,
    username: Option<ByteString>,
    client_id: ByteString,
    /// `None`: every topic the filter matches is readable. Otherwise the rules (patterns filled
    /// in) that can match a topic of the filter, which decide as the whole file would.
    rules: Option<Box<[(Access, String)]>>,
}

impl ReadGuard {
    /// The guard for `filter` (for `$share/G/F`, the `F`) subscribed by `who`; none when there
    /// is no ACL (and, there being no `acl_file`, never will be).
    pub fn new(handle: &Arc<AclHandle>, who: Identity<'_>, filter: &str) -> Option<Arc<ReadGuard>> {
        let (generation, acl) = handle.snapshot();
        let acl = acl?;
        let rules = if acl.reads_all(who, filter) {
            None
        } else {
            Some(
                acl.topic_rules(who)
                    .filter(|(_, rule)| intersects(rule, filter))
                    .collect(),
            )
        };
        Some(Arc::new(ReadGuard {
            handle: handle.clone(),
            generation,
            username: who.username.map(ByteString::from),
            client_id: ByteString::from(who.client_id),
            rules,
        }))
    }

    /// Whether the subscriber may receive a message on `topic` (one its filter matches).
    pub fn admits(&self, topic: &str) -> bool {
        if self.handle.generation() == self.generation {
            return match &self.rules {
                None => true,
                Some(rules) => {
                    decide_over(rules.iter().map(|(a, r)| (*a, r)), topic, Access::reads)
                }
            };
        }
        let who = Identity {
            username: self.username.as_deref(),
            client_id: &self.client_id,
        };
        self.handle
            .current()
            .is_none_or(|acl| acl.may_read(who, topic))
    }

    /// Whether messages are matched against rules one by one.
    pub fn checks_each_message(&self) -> bool {
        self.rules.is_some() || self.handle.generation() != self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{who, PAHO};
    use super::super::Acl;
    use super::*;

    #[test]
    fn a_guard_checks_only_filters_that_reach_unreadable_topics() {
        let handle = Arc::new(AclHandle::new(Some(Acl::parse(PAHO, "t").unwrap())));
        let anon = who(None, "c");
        let everything = ReadGuard::new(&handle, anon, "#").unwrap();
        assert!(everything.checks_each_message());
        assert!(everything.admits("TopicA/B"));
        assert!(!everything.admits("test/nosubscribe"));
        assert!(everything.admits("test/nosubscribe/deeper"));
        let plain = ReadGuard::new(&handle, anon, "TopicA/#").unwrap();
        assert!(!plain.checks_each_message(), "readable throughout");
        assert!(plain.admits("TopicA/B"));
        // A reload narrows the rules under both: checked per message from then on.
        handle.replace(Some(
            Acl::parse("topic read #\ntopic deny TopicA/B\n", "t").unwrap(),
        ));
        assert!(plain.checks_each_message());
        assert!(!plain.admits("TopicA/B"));
        assert!(plain.admits("TopicA/C"));
        assert!(everything.admits("test/nosubscribe"));
        assert!(ReadGuard::new(&Arc::new(AclHandle::new(None)), anon, "#").is_none());
    }
}
