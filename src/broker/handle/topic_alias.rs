//! Topic aliases the broker assigns towards one v5 client (server to client, MQTT 5 §3.3.2.3.4).
//!
//! Shared groups carry many messages on few topics, so after the first PUBLISH on a topic the
//! rest go with a two-byte alias and an empty topic. The client's Topic Alias Maximum bounds the
//! table; when it is full the least recently used topic gives up its alias. Aliases belong to one
//! connection: a reconnecting client starts with an empty table.

use std::collections::{BTreeMap, HashMap};

use bytestring::ByteString;

use crate::packet::Publish;

#[derive(Debug)]
pub struct OutgoingAliases {
    /// Aliases 1..=max may be used (the smaller of the client's Topic Alias Maximum and ours).
    max: u16,
    /// Topic → (alias, the use stamp it was last sent with).
    by_topic: HashMap<ByteString, (u16, u64), ahash::RandomState>,
    /// Use stamp → topic, oldest first: the eviction order.
    by_use: BTreeMap<u64, ByteString>,
    /// Increases with every PUBLISH that goes through the table.
    stamp: u64,
}

/// How a PUBLISH was rewritten, so a PUBLISH that could not be written after all can be undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aliased {
    /// The topic was replaced by its known alias.
    Reused,
    /// The topic goes out with a new alias, which this PUBLISH establishes.
    Assigned,
}

impl OutgoingAliases {
    /// `None` when no alias may be used (the client allows none, or our cap is 0).
    pub fn new(client_maximum: u16, our_maximum: u16) -> Option<OutgoingAliases> {
        let max = client_maximum.min(our_maximum);
        (max > 0).then(|| OutgoingAliases {
            max,
            by_topic: HashMap::default(),
            by_use: BTreeMap::new(),
            stamp: 0,
        })
    }

    /// Rewrites `publish` to use an alias for its topic.
    pub fn apply(&mut self, publish: &mut Publish) -> Aliased {
        self.stamp += 1;
        let stamp = self.stamp;
        if let Some((alias, last_used)) = self.by_topic.get_mut(&publish.topic) {
            self.by_use.remove(last_used);
            *last_used = stamp;
            self.by_use.insert(stamp, publish.topic.clone());
            publish.properties.topic_alias = Some(*alias);
            publish.topic = ByteString::new();
            return Aliased::Reused;
        }
        let alias = if self.by_topic.len() < usize::from(self.max) {
            // Aliases are handed out 1, 2, ... and never freed until the table is full.
            self.by_topic.len() as u16 + 1
        } else {
            match self.by_use.pop_first() {
                Some((_, oldest)) => match self.by_topic.remove(&oldest) {
                    Some((alias, _)) => alias,
                    None => 1,
                },
                None => 1,
            }
        };
        self.by_topic.insert(publish.topic.clone(), (alias, stamp));
        self.by_use.insert(stamp, publish.topic.clone());
        publish.properties.topic_alias = Some(alias);
        Aliased::Assigned
    }

    /// Forgets the alias `apply` just assigned to `topic`, because that PUBLISH was never written:
    /// the client must not be sent the alias alone before it has seen the mapping.
    pub fn forget(&mut self, topic: &str) {
        if let Some((_, stamp)) = self.by_topic.remove(topic) {
            self.by_use.remove(&stamp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::QoS;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn publish(topic: &str) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: ByteString::from(topic),
            packet_id: None,
            payload: Bytes::new(),
            properties: Default::default(),
        }
    }

    #[test]
    fn first_use_sends_topic_and_alias_then_alias_alone() {
        let mut aliases = OutgoingAliases::new(10, 64).unwrap();
        let mut first = publish("a/b");
        assert_eq!(aliases.apply(&mut first), Aliased::Assigned);
        assert_eq!(
            (&*first.topic, first.properties.topic_alias),
            ("a/b", Some(1))
        );
        let mut second = publish("a/b");
        assert_eq!(aliases.apply(&mut second), Aliased::Reused);
        assert_eq!(
            (&*second.topic, second.properties.topic_alias),
            ("", Some(1))
        );
    }

    #[test]
    fn full_table_replaces_the_least_recently_used() {
        let mut aliases = OutgoingAliases::new(2, 64).unwrap();
        aliases.apply(&mut publish("a"));
        aliases.apply(&mut publish("b"));
        aliases.apply(&mut publish("a")); // b is now the least recently used
        let mut c = publish("c");
        assert_eq!(aliases.apply(&mut c), Aliased::Assigned);
        assert_eq!(c.properties.topic_alias, Some(2), "c takes b's alias");
        let mut a = publish("a");
        assert_eq!(aliases.apply(&mut a), Aliased::Reused);
        assert_eq!(a.properties.topic_alias, Some(1));
        assert_eq!(aliases.by_topic.len(), 2);
    }

    #[test]
    fn no_table_when_either_side_allows_none() {
        assert!(OutgoingAliases::new(0, 64).is_none());
        assert!(OutgoingAliases::new(10, 0).is_none());
    }

    proptest! {
        /// Replaying what a client sees against its own alias table always yields the topic
        /// that was published, whatever the order of topics and the table size.
        #[test]
        fn client_view_resolves_every_topic(
            max in 1u16..6,
            topics in proptest::collection::vec(0u8..10, 1..200),
        ) {
            let mut aliases = OutgoingAliases::new(max, u16::MAX).unwrap();
            let mut client: HashMap<u16, ByteString> = HashMap::new();
            for t in topics {
                let topic = format!("t/{t}");
                let mut p = publish(&topic);
                aliases.apply(&mut p);
                let alias = p.properties.topic_alias.unwrap();
                prop_assert!(alias >= 1 && alias <= max);
                if !p.topic.is_empty() {
                    client.insert(alias, p.topic.clone());
                }
                prop_assert_eq!(client.get(&alias).map(|t| t.to_string()), Some(topic));
            }
        }
    }
}
