//! PUBLISH from a client: topic alias, validation, QoS 1/2 acknowledgement, retain, routing.

use std::sync::atomic::Ordering;

use bytestring::ByteString;

use crate::packet::{Ack, Packet, Publish, QoS, ReasonCode};
use crate::topic::validate_topic_name;

use crate::broker::acl::Identity;
use crate::broker::handle::context::ConnectionCtx;
use crate::broker::handle::error::ConnectionError;
use crate::broker::message::{Message, Quota};
use crate::broker::routing::router::Routed;
use crate::broker::session::Session;

/// What became of one published message, for its acknowledgement.
struct Outcome {
    routed: Routed,
    /// The bound that kept a retained message out of the retained store.
    not_retained: Option<Quota>,
}

pub(crate) fn handle(ctx: &mut ConnectionCtx, publish: Publish) -> Result<(), ConnectionError> {
    let Some(client) = &ctx.client else {
        return Err(ConnectionError::Protocol("PUBLISH before CONNECT"));
    };
    let session = client.session.clone();
    let config = &ctx.broker.config;
    ctx.broker
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
                match ctx.topic_aliases.get(&alias) {
                    Some(topic) => topic.clone(),
                    None => return Err(ConnectionError::Protocol("unknown topic alias")),
                }
            } else {
                ctx.topic_aliases.insert(alias, publish.topic.clone());
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

    let who = Identity {
        username: ctx.username.as_deref(),
        client_id: &session.client_id,
    };
    if !ctx.acl_cache.may_publish(&ctx.broker.acl, who, &topic) {
        refuse_unauthorized(ctx, &publish, &session);
        return Ok(());
    }

    match (publish.qos, publish.packet_id) {
        (QoS::AtMostOnce, _) => {
            route(ctx, publish, topic, &session);
        }
        (QoS::AtLeastOnce, Some(packet_id)) => {
            let outcome = route(ctx, publish, topic, &session);
            let ack = ack_for(ctx, packet_id, &outcome);
            ctx.out.send_when_durable(Packet::PubAck(ack));
        }
        (QoS::ExactlyOnce, Some(packet_id)) => {
            if session.is_incoming_qos2_pending(packet_id) {
                // A resend of a message already routed: acknowledge again, route once.
                ctx.out
                    .send_when_durable(Packet::PubRec(Ack::new(packet_id)));
                return Ok(());
            }
            if session.incoming_qos2_pending() >= usize::from(config.limits.receive_maximum) {
                return Err(ConnectionError::Refused {
                    code: ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                    message: "more unacknowledged QoS 2 messages than Receive Maximum",
                });
            }
            let outcome = route(ctx, publish, topic, &session);
            let ack = ack_for(ctx, packet_id, &outcome);
            // A PUBREC with a failure code ends the exchange: no PUBREL will follow.
            if !ack.reason_code.is_error() {
                session.begin_incoming_qos2(packet_id);
            }
            ctx.out.send_when_durable(Packet::PubRec(ack));
        }
        (_, None) => {
            return Err(ConnectionError::Protocol(
                "QoS > 0 PUBLISH without packet identifier",
            ))
        }
    }
    Ok(())
}

/// Answers a PUBLISH the ACL does not allow; it is never routed nor retained. A v5 client
/// hears 0x87 (Not authorized); 3.1.1 has no way to say it, so the message is acknowledged
/// and dropped, as that spec allows.
fn refuse_unauthorized(ctx: &mut ConnectionCtx, publish: &Publish, session: &Session) {
    tracing::debug!(client_id = %session.client_id, topic = %publish.topic, "publish refused by the ACL");
    ctx.broker.stats.acl_denied.fetch_add(1, Ordering::Relaxed);
    let Some(packet_id) = publish.packet_id else {
        return;
    };
    let ack = if ctx.version().is_v5() {
        Ack::with_reason(packet_id, ReasonCode::NOT_AUTHORIZED)
    } else {
        Ack::new(packet_id)
    };
    match publish.qos {
        QoS::AtLeastOnce => ctx.out.send(&Packet::PubAck(ack)),
        QoS::ExactlyOnce => {
            if !ctx.version().is_v5() {
                // The exchange goes on to PUBREL/PUBCOMP, with nothing routed.
                session.begin_incoming_qos2(packet_id);
            }
            ctx.out.send(&Packet::PubRec(ack));
        }
        QoS::AtMostOnce => {}
    }
}

/// The PUBACK/PUBREC for a routed message. A v5 publisher hears 0x97 (Quota exceeded),
/// with the bound's config key as reason string, when quotas kept the message out of every
/// queue it matched or out of the retained store; 0x10 (No matching subscribers) when
/// nobody subscribed, which is still a success. A 3.1.1 publisher has no way to hear either.
fn ack_for(ctx: &ConnectionCtx, packet_id: u16, outcome: &Outcome) -> Ack {
    if !ctx.version().is_v5() {
        return Ack::new(packet_id);
    }
    let refusal = match (outcome.routed.refused_entirely(), outcome.not_retained) {
        (Some(quota), _) => Some(format!("quota exceeded: {}", quota.key())),
        (None, Some(quota)) => Some(format!(
            "quota exceeded: {}; delivered to current subscribers but not retained",
            quota.key()
        )),
        (None, None) => None,
    };
    match refusal {
        Some(reason) => {
            let mut ack = Ack::with_reason(packet_id, ReasonCode::QUOTA_EXCEEDED);
            if ctx.request_problem_information {
                ack.properties.reason_string = Some(ByteString::from(reason));
            }
            ack
        }
        None if !outcome.routed.matched() => {
            Ack::with_reason(packet_id, ReasonCode::NO_MATCHING_SUBSCRIBERS)
        }
        None => Ack::new(packet_id),
    }
}

fn route(ctx: &ConnectionCtx, publish: Publish, topic: ByteString, publisher: &Session) -> Outcome {
    let message = Message::from_publish(
        publish,
        topic,
        Some(publisher.id),
        Some(publisher.client_id.clone()),
    );
    let not_retained = ctx.broker.retain(&message);
    let routed = ctx.broker.router.route(
        &message,
        ctx.broker.queue_limits(),
        ctx.broker.group_limits(),
    );
    ctx.broker.stats.record_routed(&routed);
    Outcome {
        routed,
        not_retained,
    }
}
