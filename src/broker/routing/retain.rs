//! Retained messages: the last retained message per topic, handed to new subscriptions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use parking_lot::RwLock;

use crate::broker::message::{Message, Quota};
use crate::broker::store::{Journal, Persistence};
use crate::topic::filter_matches;

#[derive(Debug, Default)]
pub struct RetainStore {
    /// The messages and their byte total, under one lock so the total never drifts. Changes
    /// are journalled under it, so the store sees a topic's changes in order.
    inner: RwLock<Retaining>,
    /// Where retained messages are kept across restarts; none without a store. `$SYS` topics
    /// are the broker's own and are not kept.
    persistence: Option<Persistence>,
}

#[derive(Debug, Default)]
struct Retaining {
    messages: HashMap<ByteString, Arc<Message>>,
    /// Sum of the stored messages' whole-message weights.
    bytes: usize,
}

impl Retaining {
    fn remove(&mut self, topic: &str) {
        if let Some(old) = self.messages.remove(topic) {
            self.bytes -= old.weight();
        }
    }
}

/// Bounds on the retained store.
#[derive(Debug, Clone, Copy)]
pub struct RetainLimits {
    pub max_messages: usize,
    /// Whole-message bytes (topic, payload, properties) over all retained messages.
    pub max_bytes: usize,
}

/// Whether a stored message replaced, was added, or could not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retained {
    Stored,
    Cleared,
    /// Storing it would break this bound; the previous retained message of the topic stays.
    Full(Quota),
}

impl RetainStore {
    pub fn new(journal: Option<Arc<Journal>>) -> RetainStore {
        RetainStore {
            persistence: journal.map(Persistence::new),
            ..RetainStore::default()
        }
    }

    fn persistence_for(&self, topic: &str) -> Option<&Persistence> {
        self.persistence
            .as_ref()
            .filter(|_| !topic.starts_with("$SYS"))
    }

    fn forget_stored(&self, topic: &str) {
        if let Some(persistence) = self.persistence_for(topic) {
            persistence.retained_cleared(topic);
        }
    }

    /// Puts back a retained message read from the store at start (no bound is checked: it was
    /// within bounds when it was stored).
    pub fn restore(&self, message: Arc<Message>) {
        let mut inner = self.inner.write();
        inner.remove(&message.topic);
        inner.bytes += message.weight();
        inner.messages.insert(message.topic.clone(), message);
    }

    /// Stores `message` as the topic's retained message; an empty payload clears it
    /// [MQTT-3.3.1-6].
    pub fn set(&self, message: &Arc<Message>, limits: RetainLimits) -> Retained {
        let mut inner = self.inner.write();
        if message.payload.is_empty() {
            inner.remove(&message.topic);
            self.forget_stored(&message.topic);
            return Retained::Cleared;
        }
        let replaced = inner.messages.get(&message.topic).map_or(0, |m| m.weight());
        if replaced == 0 && inner.messages.len() >= limits.max_messages {
            return Retained::Full(Quota::RetainedMessages);
        }
        if inner.bytes - replaced + message.weight() > limits.max_bytes {
            return Retained::Full(Quota::RetainedBytes);
        }
        inner.bytes = inner.bytes - replaced + message.weight();
        inner
            .messages
            .insert(message.topic.clone(), message.clone());
        if let Some(persistence) = self.persistence_for(&message.topic) {
            persistence.retained_set(message);
        }
        Retained::Stored
    }

    pub fn len(&self) -> usize {
        self.inner.read().messages.len()
    }

    /// Whole-message bytes held, counted as `limits.max_retained_bytes` counts them.
    pub fn bytes(&self) -> usize {
        self.inner.read().bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The retained messages matching `filter`, expired ones left out (and removed).
    pub fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        let now = Instant::now();
        let mut found = Vec::new();
        let mut expired = Vec::new();
        {
            let inner = self.inner.read();
            let messages = &inner.messages;
            if !filter.contains(['+', '#']) {
                if let Some(message) = messages.get(filter) {
                    if message.is_expired(now) {
                        expired.push(message.topic.clone());
                    } else {
                        found.push(message.clone());
                    }
                }
            } else {
                for (topic, message) in messages.iter() {
                    if !filter_matches(filter, topic) {
                        continue;
                    }
                    if message.is_expired(now) {
                        expired.push(topic.clone());
                    } else {
                        found.push(message.clone());
                    }
                }
            }
        }
        if !expired.is_empty() {
            let mut inner = self.inner.write();
            for topic in expired {
                if inner
                    .messages
                    .get(&topic)
                    .is_some_and(|m| m.is_expired(now))
                {
                    inner.remove(&topic);
                    self.forget_stored(&topic);
                }
            }
        }
        found
    }
}
