//! CONNECT → CONNACK: client identifier, authentication, session resume or takeover, and the
//! limits both sides announce.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;

use crate::packet::{ConnAck, ConnAckProperties, Connect, Packet, ReasonCode};
use crate::topic::validate_topic_name;

use crate::broker::acl::Identity;
use crate::broker::handle::context::{Client, ConnectionCtx};
use crate::broker::handle::error::ConnectionError;
use crate::broker::handle::topic_alias::OutgoingAliases;
use crate::broker::owner::Owner;
use crate::broker::shared::Redelivery;
use crate::broker::will;
use crate::broker::SessionRefused;
use crate::client_id_pattern::ClientIdPattern;

/// Largest packet the spec allows; the default for a client that states no Maximum Packet Size.
const SPEC_MAX_PACKET_SIZE: u32 = 268_435_460;

/// Answers a CONNECT that authentication (`handle/auth.rs`) accepted; `auth_method` and
/// `auth_data` go into the CONNACK (SCRAM's server-final). Returns false if the client was
/// refused (the refusing CONNACK is in the write buffer).
pub(crate) fn handle(
    ctx: &mut ConnectionCtx,
    connect: Connect,
    auth_method: Option<ByteString>,
    auth_data: Option<Bytes>,
) -> Result<bool, ConnectionError> {
    let v5 = ctx.version().is_v5();
    // Who the ACL sees: the user SCRAM proved, else CONNECT's (checked by authentication).
    ctx.username = ctx
        .auth
        .username
        .as_deref()
        .map(ByteString::from)
        .or_else(|| connect.username.clone());
    let config = &ctx.broker.config;
    let pattern = config
        .auth
        .client_id_pattern
        .as_deref()
        .and_then(|p| ClientIdPattern::parse(p).ok());
    let username = ctx.username.as_deref();
    let mut assigned_client_identifier = None;
    let client_id = if connect.client_id.is_empty() {
        // 3.1.1 allows an empty id only with a clean session [MQTT-3.1.3-7].
        if !v5 && !connect.clean_start {
            return Ok(refuse(ctx, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID));
        }
        let unique = format!("{:016x}", rand::random::<u64>());
        let id = match &pattern {
            None => format!("sharq-{unique}"),
            Some(pattern) => match pattern.assign(username, &unique) {
                Some(id) => id,
                None => return Ok(refuse_client_id(ctx, &connect.client_id)),
            },
        };
        let id = ByteString::from(id);
        if v5 {
            assigned_client_identifier = Some(id.clone());
        }
        id
    } else {
        if pattern
            .as_ref()
            .is_some_and(|p| !p.allows(username, &connect.client_id))
        {
            return Ok(refuse_client_id(ctx, &connect.client_id));
        }
        connect.client_id.clone()
    };
    if let Some(will) = &connect.will {
        if validate_topic_name(&will.topic, config.limits.max_topic_levels).is_err() {
            return Ok(refuse(ctx, ReasonCode::TOPIC_NAME_INVALID));
        }
    }

    let requested_expiry = if v5 {
        connect.properties.session_expiry_interval.unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        u32::MAX
    };
    let expiry = requested_expiry.min(config.session.max_expiry_secs);
    let claimant = Owner::of(ctx.username.as_ref());
    let opened = match ctx
        .broker
        .open_session(&client_id, &claimant, connect.clean_start, expiry)
    {
        Ok(opened) => opened,
        Err(refused) => return Ok(refuse_session(ctx, &client_id, &claimant, &refused)),
    };
    if let Some(discarded) = opened.discarded {
        // Clean Start over an existing session: that session ends here, and its connection,
        // if any, is taken over.
        discarded.kick(ReasonCode::SESSION_TAKEN_OVER);
        if let Some(last_will) = discarded.take_will() {
            will::publish(&ctx.broker, &discarded, last_will);
        }
        ctx.broker.end_session(&discarded);
    }
    let session = opened.session;

    let client_receive_maximum = connect.properties.receive_maximum.unwrap_or(u16::MAX);
    let window = usize::from(client_receive_maximum.min(config.limits.max_inflight));
    let client_max_packet_size = connect
        .properties
        .maximum_packet_size
        .unwrap_or(SPEC_MAX_PACKET_SIZE);
    ctx.request_problem_information = connect
        .properties
        .request_problem_information
        .unwrap_or(true);

    let mut keep_alive = connect.keep_alive;
    let mut server_keep_alive = None;
    if v5 {
        if let Some(forced) = config.keep_alive.server_secs {
            keep_alive = forced;
            server_keep_alive = Some(forced);
        } else if keep_alive > config.keep_alive.max_secs
            || (keep_alive == 0 && config.keep_alive.max_secs < u16::MAX)
        {
            keep_alive = config.keep_alive.max_secs;
            server_keep_alive = Some(keep_alive);
        }
    }
    ctx.keep_alive = (keep_alive > 0).then(|| Duration::from_secs(u64::from(keep_alive)));

    // Take over any connection still attached before attaching this one: its unfinished
    // shared copies must go to other members, not back to this same client.
    let taken = session.take_over(ReasonCode::SESSION_TAKEN_OVER);
    ctx.broker.redispatch(
        taken.redispatch,
        Redelivery::SessionTakenOver,
        &session.client_id,
    );
    if let Some(previous_will) = taken.previous_will {
        // The connection we took over ended without DISCONNECT; a delayed will is
        // cancelled by this very reconnection, an immediate one goes out now.
        if previous_will.properties.will_delay_interval.unwrap_or(0) == 0 {
            will::publish(&ctx.broker, &session, previous_will);
        }
    }
    ctx.broker.renew_read_guards(
        &session,
        Identity {
            username: ctx.username.as_deref(),
            client_id: &session.client_id,
        },
    );
    let attached = session.attach(
        ctx.version(),
        window,
        client_max_packet_size,
        connect.will,
        expiry,
    );
    ctx.broker.redispatch(
        attached.redispatch,
        Redelivery::SessionTakenOver,
        &session.client_id,
    );

    let mut properties = ConnAckProperties::default();
    if v5 {
        if expiry != requested_expiry {
            properties.session_expiry_interval = Some(expiry);
        }
        properties.receive_maximum = Some(config.limits.receive_maximum);
        properties.maximum_packet_size = Some(config.limits.max_packet_size);
        properties.topic_alias_maximum = Some(config.limits.topic_alias_maximum);
        properties.assigned_client_identifier = assigned_client_identifier;
        properties.retain_available = Some(true);
        properties.wildcard_subscription_available = Some(true);
        properties.subscription_identifiers_available = Some(true);
        // Stated explicitly: some client test suites refuse to use $share without it.
        properties.shared_subscription_available = Some(true);
        properties.server_keep_alive = server_keep_alive;
        properties.authentication_method = auth_method;
        properties.authentication_data = auth_data;
    }
    ctx.out.send(&Packet::ConnAck(ConnAck {
        session_present: opened.present,
        reason_code: ReasonCode::SUCCESS,
        properties,
    }));
    // Aliases are per connection: the resent PUBLISHes establish them afresh.
    let aliases = if v5 {
        OutgoingAliases::new(
            connect.properties.topic_alias_maximum.unwrap_or(0),
            ctx.broker.config.limits.outgoing_topic_alias_maximum,
        )
    } else {
        None
    };
    ctx.out.set_aliases(aliases);
    for packet in attached.resend {
        ctx.out.send_delivery(packet);
    }
    ctx.broker
        .stats
        .clients_connected
        .fetch_add(1, Ordering::Relaxed);
    ctx.broker
        .stats
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        client_id = %client_id,
        listener = %ctx.listener(),
        peer = %ctx.peer(),
        username = %connect.username.as_deref().unwrap_or(""),
        version = ?ctx.version(),
        clean_start = connect.clean_start,
        session_present = opened.present,
        keep_alive,
        "client connected"
    );
    ctx.client = Some(Client {
        session: session.clone(),
        generation: attached.generation,
        notify: attached.notify,
        kicked: attached.kicked,
    });
    // A member coming online may take messages its groups kept while nobody could.
    ctx.broker.drain_groups_of(&session);
    Ok(true)
}

/// Refuses a client id that `[auth] client_id_pattern` does not allow this client.
fn refuse_client_id(ctx: &mut ConnectionCtx, client_id: &str) -> bool {
    ctx.broker
        .stats
        .client_id_refused
        .fetch_add(1, Ordering::Relaxed);
    if let Some(suppressed) = ctx.broker.session_refusal_log.allow() {
        tracing::info!(client_id, username = %ctx.username.as_deref().unwrap_or(""), listener = %ctx.listener(), peer = %ctx.peer(), suppressed, "connection refused: client id not allowed by auth.client_id_pattern");
    }
    refuse(ctx, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)
}

/// Refuses a CONNECT the session registry turned down: the client id's session is another
/// identity's, or a new persistent session would pass `limits.max_sessions`. The session
/// and any connection it has are left as they are.
fn refuse_session(
    ctx: &mut ConnectionCtx,
    client_id: &str,
    claimant: &Owner,
    refused: &SessionRefused,
) -> bool {
    let stats = &ctx.broker.stats;
    match refused {
        SessionRefused::NotOwner(_) => &stats.session_owner_refused,
        SessionRefused::Quota => &stats.session_quota_refused,
    }
    .fetch_add(1, Ordering::Relaxed);
    if let Some(suppressed) = ctx.broker.session_refusal_log.allow() {
        tracing::info!(client_id, username = %claimant.describe(), listener = %ctx.listener(), peer = %ctx.peer(), reason = %refused, suppressed, "connection refused");
    }
    refuse(ctx, refused.reason_code())
}

/// Writes a refusing CONNACK; the connection closes after it.
pub(crate) fn refuse(ctx: &mut ConnectionCtx, code: ReasonCode) -> bool {
    ctx.out.send(&Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: code,
        ..ConnAck::default()
    }));
    false
}
