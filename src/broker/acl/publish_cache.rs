//! A connection's cache of publish decisions, dropped when the ACL is replaced.

use std::collections::HashMap;

use bytestring::ByteString;

use super::{AclHandle, Identity};

/// A connection's publish decisions by topic, so the hot path matches the ACL once per topic
/// (a device publishes to a handful), not once per message. Bounded: cleared when full.
#[derive(Debug, Default)]
pub struct PublishCache {
    generation: u64,
    decisions: HashMap<ByteString, bool>,
}

/// Topics one connection's cache remembers before it starts afresh.
const CACHE_TOPICS: usize = 1024;

impl PublishCache {
    /// Whether `who` may publish on `topic` under the ACL in `handle`.
    pub fn may_publish(
        &mut self,
        handle: &AclHandle,
        who: Identity<'_>,
        topic: &ByteString,
    ) -> bool {
        let generation = handle.generation();
        if generation != self.generation {
            self.decisions.clear();
            self.generation = generation;
        }
        if let Some(decision) = self.decisions.get(topic) {
            return *decision;
        }
        let decision = handle
            .current()
            .is_none_or(|acl| acl.may_publish(who, topic));
        if self.decisions.len() >= CACHE_TOPICS {
            self.decisions.clear();
        }
        self.decisions.insert(topic.clone(), decision);
        decision
    }
}
