//! An application message as the broker routes it, independent of any one connection: the
//! vocabulary below the store (which keeps messages) and every queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use crate::packet::{Publish, PublishProperties, QoS};

/// Identifies a session for the lifetime of the broker process; never reused.
pub type SessionId = u64;

/// A published message, shared by reference count between every subscriber it goes to.
#[derive(Debug)]
pub struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    /// The QoS it was published with; each delivery downgrades it to the subscription's QoS.
    pub qos: QoS,
    /// The RETAIN flag as published, for Retain As Published.
    pub retain: bool,
    /// Forwarded properties: Topic Alias and Subscription Identifiers are stripped, since they
    /// belong to one connection; Message Expiry Interval is recomputed per delivery.
    pub properties: PublishProperties,
    /// The publishing session, so No Local subscriptions can skip it; none for wills of ended
    /// sessions and for `$SYS`.
    pub publisher: Option<SessionId>,
    /// The publisher's client id, for strategies that route by publisher.
    pub publisher_client_id: Option<ByteString>,
    /// When the Message Expiry Interval runs out; none means never.
    pub expires_at: Option<Instant>,
    /// When the broker got it (kept in the store in wall-clock time), for the age of a
    /// group's oldest waiting message.
    pub received_at: Instant,
    /// What the message costs every bound it is held under: topic, payload and every property.
    /// Fixed at construction, so a queue's byte count always adds and subtracts the same value.
    weight: usize,
}

impl Message {
    /// Builds the routable message from a client's PUBLISH whose topic alias is resolved.
    pub fn from_publish(
        publish: Publish,
        topic: ByteString,
        publisher: Option<SessionId>,
        publisher_client_id: Option<ByteString>,
    ) -> Arc<Message> {
        let mut properties = publish.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        let expires_at = properties
            .message_expiry_interval
            .take()
            .map(|secs| Instant::now() + Duration::from_secs(u64::from(secs)));
        let weight = whole_weight(&topic, &publish.payload, &properties);
        Arc::new(Message {
            topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            publisher,
            publisher_client_id,
            expires_at,
            received_at: Instant::now(),
            weight,
        })
    }

    /// A message read back from the store: its expiry was kept in wall-clock time and its
    /// publisher's session is gone (No Local has nobody to compare against after a restart).
    pub fn restored(
        publish: Publish,
        topic: ByteString,
        publisher_client_id: Option<ByteString>,
        expires_at: Option<Instant>,
        received_at: Instant,
    ) -> Arc<Message> {
        let mut properties = publish.properties;
        properties.topic_alias = None;
        properties.message_expiry_interval = None;
        properties.subscription_identifiers.clear();
        let weight = whole_weight(&topic, &publish.payload, &properties);
        Arc::new(Message {
            topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            publisher: None,
            publisher_client_id,
            expires_at,
            received_at,
            weight,
        })
    }

    /// A message the broker publishes itself (`$SYS`), with no properties and no publisher.
    pub fn internal(topic: ByteString, payload: Bytes, qos: QoS, retain: bool) -> Arc<Message> {
        let properties = PublishProperties::default();
        let weight = whole_weight(&topic, &payload, &properties);
        Arc::new(Message {
            topic,
            payload,
            qos,
            retain,
            properties,
            publisher: None,
            publisher_client_id: None,
            expires_at: None,
            received_at: Instant::now(),
            weight,
        })
    }

    /// A copy of `original` for a dead-letter topic: same payload, QoS and properties (its
    /// expiry kept), the user properties that tell where it came from added, no publisher (No
    /// Local does not apply to it).
    pub fn dead_letter(
        original: &Message,
        topic: ByteString,
        about: Vec<(ByteString, ByteString)>,
    ) -> Arc<Message> {
        let mut properties = original.properties.clone();
        properties.user_properties.extend(about);
        let weight = whole_weight(&topic, &original.payload, &properties);
        Arc::new(Message {
            topic,
            payload: original.payload.clone(),
            qos: original.qos,
            retain: false,
            properties,
            publisher: None,
            publisher_client_id: original.publisher_client_id.clone(),
            expires_at: original.expires_at,
            received_at: Instant::now(),
            weight,
        })
    }

    /// Whole seconds left before expiry (rounded up so a live message never reads 0), `None` if
    /// the message never expires, `Err(Expired)` once it has expired.
    pub fn remaining_expiry(&self, now: Instant) -> Result<Option<u32>, Expired> {
        match self.expires_at {
            None => Ok(None),
            Some(at) if at <= now => Err(Expired),
            Some(at) => {
                let left = at - now;
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                Ok(Some(u32::try_from(secs).unwrap_or(u32::MAX)))
            }
        }
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.remaining_expiry(now).is_err()
    }

    /// Bytes counted against every queue, window and store bound: topic, payload and every
    /// property (user properties can outweigh the payload by far).
    pub fn weight(&self) -> usize {
        self.weight
    }
}

fn whole_weight(topic: &str, payload: &[u8], properties: &PublishProperties) -> usize {
    topic.len() + payload.len() + crate::codec::publish_properties_len(properties)
}

/// A configured bound that made the broker refuse a message. Its config key is what a v5
/// publisher reads in the reason string of PUBACK/PUBREC 0x97 (Quota exceeded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quota {
    SessionMessages,
    SessionBytes,
    GroupMessages,
    GroupBytes,
    RetainedMessages,
    RetainedBytes,
}

impl Quota {
    pub const ALL: [Quota; 6] = [
        Quota::SessionMessages,
        Quota::SessionBytes,
        Quota::GroupMessages,
        Quota::GroupBytes,
        Quota::RetainedMessages,
        Quota::RetainedBytes,
    ];

    /// The config key that sets this bound.
    pub fn key(self) -> &'static str {
        match self {
            Quota::SessionMessages => "limits.max_queued_messages",
            Quota::SessionBytes => "limits.max_queued_bytes",
            Quota::GroupMessages => "shared.group_queue_max_messages",
            Quota::GroupBytes => "shared.group_queue_max_bytes",
            Quota::RetainedMessages => "limits.max_retained_messages",
            Quota::RetainedBytes => "limits.max_retained_bytes",
        }
    }

    /// A short name for statistics (`$SYS/broker/messages/refused/<label>`).
    pub fn label(self) -> &'static str {
        match self {
            Quota::SessionMessages => "session_queue_messages",
            Quota::SessionBytes => "session_queue_bytes",
            Quota::GroupMessages => "group_queue_messages",
            Quota::GroupBytes => "group_queue_bytes",
            Quota::RetainedMessages => "retained_messages",
            Quota::RetainedBytes => "retained_bytes",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The message's Message Expiry Interval has run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired;
