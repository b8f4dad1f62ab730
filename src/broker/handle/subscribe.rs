//! SUBSCRIBE → SUBACK and UNSUBSCRIBE → UNSUBACK, plain and shared.

use std::borrow::Cow;

use bytestring::ByteString;

use crate::packet::{
    AckProperties, Packet, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck,
    Unsubscribe,
};
use crate::topic::{parse_subscription_with, session_key, SubscriptionFilter};

use std::sync::atomic::Ordering;

use crate::broker::acl::{Identity, ReadGuard};
use crate::broker::delivery::{Delivery, Occasion};
use crate::broker::handle::context::ConnectionCtx;
use crate::broker::handle::error::ConnectionError;
use crate::broker::session::StoredSubscription;
use crate::broker::shared::Membership;
use crate::broker::stats::DropReason;

pub(crate) fn subscribe(
    ctx: &mut ConnectionCtx,
    subscribe: Subscribe,
) -> Result<(), ConnectionError> {
    let session = ctx.session()?;
    let max_levels = ctx.broker.config.limits.max_topic_levels;
    let max_subscriptions = ctx.broker.config.limits.max_subscriptions_per_client;
    let syntax = ctx.broker.share_syntax();
    let identifier = subscribe.properties.subscription_identifier;
    // A member may state its relative weight for weighted strategies.
    let weight = subscribe
        .properties
        .user_properties
        .iter()
        .find(|(key, _)| &**key == "weight")
        .and_then(|(_, value)| value.trim().parse::<u32>().ok())
        .unwrap_or(1);
    let mut reason_codes = Vec::with_capacity(subscribe.filters.len());
    let mut retained = Vec::new();
    let mut joined_group = false;
    let acl = ctx.broker.acl.current();
    let who = Identity {
        username: ctx.username.as_deref(),
        client_id: &session.client_id,
    };
    for requested in subscribe.filters {
        let options = requested.options;
        let parsed = match parse_subscription_with(&requested.filter, max_levels, syntax) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::debug!(client_id = %session.client_id, filter = %requested.filter, error = %e, "subscription refused");
                reason_codes.push(ReasonCode::TOPIC_FILTER_INVALID);
                continue;
            }
        };
        if let Some(acl) = &acl {
            let allowed = match &parsed {
                SubscriptionFilter::Shared { group, filter } => {
                    acl.may_subscribe(who, filter) && acl.may_join(who, group)
                }
                SubscriptionFilter::Plain(filter) => acl.may_subscribe(who, filter),
            };
            if !allowed {
                tracing::debug!(client_id = %session.client_id, filter = %requested.filter, "subscription refused by the ACL");
                ctx.broker.stats.acl_denied.fetch_add(1, Ordering::Relaxed);
                reason_codes.push(ReasonCode::NOT_AUTHORIZED);
                continue;
            }
        }
        let read = match &parsed {
            SubscriptionFilter::Shared { filter, .. } | SubscriptionFilter::Plain(filter) => {
                ReadGuard::new(&ctx.broker.acl, who, filter)
            }
        };
        let key = stored_name(&requested.filter, &parsed);
        if !session.has_room_for_subscription(&key, max_subscriptions) {
            ctx.broker
                .stats
                .subscription_quota_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client_id = %session.client_id, filter = %requested.filter, "subscription refused: limits.max_subscriptions_per_client");
            reason_codes.push(ReasonCode::QUOTA_EXCEEDED);
            continue;
        }
        let stored = StoredSubscription {
            options,
            identifier,
        };
        match parsed {
            SubscriptionFilter::Shared { group, filter } => {
                if options.no_local {
                    // [MQTT-3.8.3-4]
                    return Err(ConnectionError::Protocol(
                        "No Local set on a shared subscription",
                    ));
                }
                session.add_subscription(key, stored);
                let membership = Membership {
                    options,
                    identifier,
                    weight,
                    user_properties: subscribe.properties.user_properties.clone(),
                    read,
                };
                let broker = &ctx.broker;
                broker
                    .router
                    .join_group(group, filter, &session, membership, |name, filter| {
                        broker.make_group(name, filter)
                    });
                joined_group = true;
                // Shared subscriptions never receive retained messages at subscribe time.
            }
            SubscriptionFilter::Plain(filter) => {
                let existed = session.add_subscription(key, stored).is_some();
                ctx.broker
                    .router
                    .subscribe(filter, &session, options, identifier, read.clone());
                let send_retained = match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
                if send_retained {
                    let mut unreadable = 0;
                    for message in ctx.broker.retained.matching(filter) {
                        // The same rule as live messages: a granted filter may reach
                        // topics this client may not read.
                        if read.as_ref().is_some_and(|r| !r.admits(&message.topic)) {
                            unreadable += 1;
                            continue;
                        }
                        retained.push(Delivery::new(
                            message,
                            &options,
                            identifier.into_iter().collect(),
                            Occasion::RetainedOnSubscribe,
                            None,
                        ));
                    }
                    ctx.broker.stats.record_drop(DropReason::Acl, unreadable);
                }
            }
        }
        reason_codes.push(granted(options.qos));
    }
    ctx.out.send(&Packet::SubAck(SubAck {
        packet_id: subscribe.packet_id,
        reason_codes,
        properties: AckProperties::default(),
    }));
    // After the SUBACK in the write buffer, so the client sees the grant first.
    let limits = ctx.broker.queue_limits();
    for delivery in retained {
        let _ = session.enqueue(delivery, limits);
    }
    if joined_group {
        ctx.broker.drain_groups_of(&session);
    }
    Ok(())
}

pub(crate) fn unsubscribe(
    ctx: &mut ConnectionCtx,
    unsubscribe: Unsubscribe,
) -> Result<(), ConnectionError> {
    let session = ctx.session()?;
    let syntax = ctx.broker.share_syntax();
    let mut reason_codes = Vec::with_capacity(unsubscribe.filters.len());
    for filter in &unsubscribe.filters {
        let key = match parse_subscription_with(filter, usize::MAX, syntax) {
            Ok(parsed) => stored_name(filter, &parsed),
            Err(_) => {
                reason_codes.push(ReasonCode::TOPIC_FILTER_INVALID);
                continue;
            }
        };
        let existed = session.remove_subscription(&key).is_some();
        if existed {
            ctx.broker.remove_from_router(&key, &session);
            reason_codes.push(ReasonCode::SUCCESS);
        } else {
            reason_codes.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
        }
    }
    ctx.out.send(&Packet::UnsubAck(UnsubAck {
        packet_id: unsubscribe.packet_id,
        reason_codes,
        properties: AckProperties::default(),
    }));
    Ok(())
}

/// The name the session keeps `requested` under (see [`session_key`]), without copying it
/// when it is already that name.
fn stored_name(requested: &ByteString, parsed: &SubscriptionFilter<'_>) -> ByteString {
    match session_key(requested, parsed) {
        Cow::Borrowed(_) => requested.clone(),
        Cow::Owned(name) => ByteString::from(name),
    }
}

fn granted(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
        QoS::AtLeastOnce => ReasonCode::GRANTED_QOS_1,
        QoS::ExactlyOnce => ReasonCode::GRANTED_QOS_2,
    }
}
