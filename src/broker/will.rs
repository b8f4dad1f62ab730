//! Publishing will messages: when a connection ends without a normal DISCONNECT, after the Will
//! Delay Interval, unless the session is resumed first; at the latest when the session ends.
//! The broker publishes them (ACL check, routing); the session only keeps the will it was
//! given (`Session::forget_will`, its stored record).

use std::sync::Arc;
use std::time::Duration;

use crate::packet::{LastWill, Publish};

use crate::broker::acl::Identity;
use crate::broker::message::Message;
use crate::broker::session::Session;
use crate::broker::BrokerState;

/// Publishes `will` now, or schedules it after its delay (capped at the session expiry),
/// skipping it if a new connection attaches to the session in the meantime.
pub fn schedule(
    broker: &Arc<BrokerState>,
    session: &Arc<Session>,
    will: LastWill,
    detached_generation: u64,
) {
    let delay = will.properties.will_delay_interval.unwrap_or(0);
    let delay = delay.min(session.expiry_interval());
    schedule_in(broker, session, will, detached_generation, delay);
}

/// Publishes `will` after `delay` seconds (now if 0), unless a connection attaches first.
pub fn schedule_in(
    broker: &Arc<BrokerState>,
    session: &Arc<Session>,
    will: LastWill,
    detached_generation: u64,
    delay: u32,
) {
    if delay == 0 {
        publish(broker, session, will);
        return;
    }
    let broker = broker.clone();
    let session = session.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(u64::from(delay))) => {}
            _ = broker.shutdown.cancelled() => return,
        }
        if session.generation() == detached_generation {
            publish(&broker, &session, will);
        }
    });
}

pub fn publish(broker: &BrokerState, session: &Session, will: LastWill) {
    session.forget_will();
    let username = session.username();
    let who = Identity {
        username: username.as_deref(),
        client_id: &session.client_id,
    };
    if !broker.may_publish(who, &will.topic) {
        tracing::info!(client_id = %session.client_id, topic = %will.topic, "will message not sent: the ACL does not allow publishing it");
        return;
    }
    tracing::debug!(client_id = %session.client_id, topic = %will.topic, "publishing will message");
    let properties = will.properties;
    let publish = Publish {
        dup: false,
        qos: will.qos,
        retain: will.retain,
        topic: will.topic.clone(),
        packet_id: None,
        payload: will.payload,
        properties: crate::packet::PublishProperties {
            payload_format_indicator: properties.payload_format_indicator,
            message_expiry_interval: properties.message_expiry_interval,
            topic_alias: None,
            response_topic: properties.response_topic,
            correlation_data: properties.correlation_data,
            user_properties: properties.user_properties,
            subscription_identifiers: Vec::new(),
            content_type: properties.content_type,
        },
    };
    let message = Message::from_publish(
        publish,
        will.topic,
        Some(session.id),
        Some(session.client_id.clone()),
    );
    broker
        .stats
        .messages_received
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    broker.publish_internal(message);
}
