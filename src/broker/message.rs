//! An application message as the broker routes it, independent of any one connection.

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
        Arc::new(Message {
            topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            publisher,
            publisher_client_id,
            expires_at,
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

    /// Bytes counted against queue limits: payload and topic, the parts that scale.
    pub fn weight(&self) -> usize {
        self.payload.len() + self.topic.len()
    }
}

/// The message's Message Expiry Interval has run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired;
