//! PUBLISH from a client: topic alias, validation, QoS 1/2 acknowledgement, retain, routing.

use std::sync::atomic::Ordering;

use crate::packet::{Ack, Packet, Publish, QoS, ReasonCode};
use crate::topic::validate_topic_name;

use super::connection::Connection;
use super::error::ConnectionError;
use super::message::Message;
use super::router::Routed;

impl Connection {
    pub(super) fn handle_publish(&mut self, publish: Publish) -> Result<(), ConnectionError> {
        let Some(client) = &self.client else {
            return Err(ConnectionError::Protocol("PUBLISH before CONNECT"));
        };
        let session = client.session.clone();
        let config = &self.broker.config;
        self.broker
            .stats
            .messages_received
            .fetch_add(1, Ordering::Relaxed);

        let topic = match publish.properties.topic_alias {
            Some(alias) => {
                if alias == 0 || alias > config.limits.topic_alias_maximum {
                    return Err(ConnectionError::Refused {
                        code: ReasonCode::TOPIC_ALIAS_INVALID,
                        message: "topic alias out of range",
                    });
                }
                if publish.topic.is_empty() {
                    match self.topic_aliases.get(&alias) {
                        Some(topic) => topic.clone(),
                        None => return Err(ConnectionError::Protocol("unknown topic alias")),
                    }
                } else {
                    self.topic_aliases.insert(alias, publish.topic.clone());
                    publish.topic.clone()
                }
            }
            None if publish.topic.is_empty() => {
                return Err(ConnectionError::Protocol(
                    "empty topic without a topic alias",
                ))
            }
            None => publish.topic.clone(),
        };
        if validate_topic_name(&topic, config.limits.max_topic_levels).is_err() {
            return Err(ConnectionError::Refused {
                code: ReasonCode::TOPIC_NAME_INVALID,
                message: "invalid topic name",
            });
        }
        if !publish.properties.subscription_identifiers.is_empty() {
            return Err(ConnectionError::Protocol(
                "client PUBLISH carries a Subscription Identifier",
            ));
        }

        match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, _) => {
                self.route(publish, topic, &session);
            }
            (QoS::AtLeastOnce, Some(packet_id)) => {
                let routed = self.route(publish, topic, &session);
                let reason = self.ack_reason(routed);
                self.send(&Packet::PubAck(Ack::with_reason(packet_id, reason)));
            }
            (QoS::ExactlyOnce, Some(packet_id)) => {
                if session.is_incoming_qos2_pending(packet_id) {
                    // A resend of a message already routed: acknowledge again, route once.
                    self.send(&Packet::PubRec(Ack::new(packet_id)));
                    return Ok(());
                }
                if session.incoming_qos2_pending() >= usize::from(config.limits.receive_maximum) {
                    return Err(ConnectionError::Refused {
                        code: ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                        message: "more unacknowledged QoS 2 messages than Receive Maximum",
                    });
                }
                let routed = self.route(publish, topic, &session);
                session.begin_incoming_qos2(packet_id);
                let reason = self.ack_reason(routed);
                self.send(&Packet::PubRec(Ack::with_reason(packet_id, reason)));
            }
            (_, None) => {
                return Err(ConnectionError::Protocol(
                    "QoS > 0 PUBLISH without packet identifier",
                ))
            }
        }
        Ok(())
    }

    /// 0x10 (No matching subscribers) tells a v5 publisher nobody got it; still a success.
    fn ack_reason(&self, routed: Routed) -> ReasonCode {
        if self.version.is_v5() && !routed.matched() {
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        } else {
            ReasonCode::SUCCESS
        }
    }

    fn route(
        &self,
        publish: Publish,
        topic: bytestring::ByteString,
        publisher: &super::session::Session,
    ) -> Routed {
        let message = Message::from_publish(
            publish,
            topic,
            Some(publisher.id),
            Some(publisher.client_id.clone()),
        );
        if message.retain {
            let _ = self
                .broker
                .retained
                .set(&message, self.broker.config.limits.max_retained_messages);
        }
        let routed = self.broker.router.route(
            &message,
            self.broker.queue_limits(),
            self.broker.group_limits(),
        );
        self.broker.stats.record_dropped(routed.dropped);
        routed
    }
}
