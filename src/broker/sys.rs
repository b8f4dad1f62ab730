//! `$SYS/broker/...`: broker statistics as retained messages. `crate::server` publishes them
//! every `server.sys_interval_secs`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use bytestring::ByteString;

use crate::packet::QoS;

use crate::broker::message::{Message, Quota};
use crate::broker::shared::SharedGroup;
use crate::broker::stats::Stats;
use crate::broker::BrokerState;

/// Publishes every `$SYS` topic once.
pub fn publish_all(broker: &BrokerState) {
    let stats = &broker.stats;
    let values: [(&str, String); 11] = [
        (
            "$SYS/broker/version",
            format!("sharq {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "$SYS/broker/uptime",
            format!("{} seconds", broker.started_at.elapsed().as_secs()),
        ),
        (
            "$SYS/broker/clients/connected",
            Stats::get(&stats.clients_connected).to_string(),
        ),
        (
            "$SYS/broker/clients/total",
            broker.session_count().to_string(),
        ),
        (
            "$SYS/broker/messages/received",
            Stats::get(&stats.messages_received).to_string(),
        ),
        (
            "$SYS/broker/messages/sent",
            Stats::get(&stats.messages_sent).to_string(),
        ),
        (
            "$SYS/broker/messages/dropped",
            Stats::get(&stats.messages_dropped).to_string(),
        ),
        (
            "$SYS/broker/acl/denied",
            Stats::get(&stats.acl_denied).to_string(),
        ),
        (
            "$SYS/broker/subscriptions/count",
            broker.router.subscription_count().to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            broker.retained.len().to_string(),
        ),
        (
            "$SYS/broker/bytes/received",
            Stats::get(&stats.bytes_received).to_string(),
        ),
    ];
    for (topic, value) in values {
        publish_one(broker, topic, value);
    }
    publish_one(
        broker,
        "$SYS/broker/bytes/sent",
        Stats::get(&stats.bytes_sent).to_string(),
    );
    publish_one(
        broker,
        "$SYS/broker/retained messages/bytes",
        broker.retained.bytes().to_string(),
    );
    publish_one(
        broker,
        "$SYS/broker/connections/open",
        broker.open_sockets().to_string(),
    );
    publish_one(
        broker,
        "$SYS/broker/clients/auth_failed",
        Stats::get(&stats.auth_failed).to_string(),
    );
    publish_one(
        broker,
        "$SYS/broker/connections/refused",
        Stats::get(&stats.connections_refused).to_string(),
    );
    for quota in Quota::ALL {
        publish_one(
            broker,
            &format!("$SYS/broker/messages/refused/{}", quota.label()),
            Stats::get(&stats.refused_by_quota[quota.index()]).to_string(),
        );
    }
    publish_shared_groups(broker);
}

/// One retained JSON document per group name, `$SYS/broker/shared/{group}`, listing each of its
/// filters with the counters and per-member dispatch counts. Filters may contain `#` and `+`,
/// which a topic name cannot, so they travel in the payload rather than in the topic.
fn publish_shared_groups(broker: &BrokerState) {
    let mut by_name: std::collections::BTreeMap<ByteString, Vec<serde_json::Value>> =
        Default::default();
    for group in broker.router.groups() {
        let members: Vec<serde_json::Value> = group
            .member_stats()
            .into_iter()
            .map(|m| serde_json::json!({"client_id": &*m.client_id, "dispatched": m.dispatched, "online": m.online}))
            .collect();
        by_name
            .entry(group.name.clone())
            .or_default()
            .push(serde_json::json!({
                "filter": &*group.filter,
                "declared": group.is_declared(),
                "dispatched": group.counters.dispatched.load(Ordering::Relaxed),
                "redispatched": group.counters.redispatched.load(Ordering::Relaxed),
                "dropped": group.counters.dropped.load(Ordering::Relaxed),
                "queued": group.queued(),
                "dead_lettered": group.counters.dead_lettered.load(Ordering::Relaxed),
                "late_acks": group.tally.late_acks.load(Ordering::Relaxed),
                "settings": group.settings().to_json(),
                "strategy": strategy_json(&group),
                "members": members,
            }));
    }
    for (name, filters) in by_name {
        let mut topic = String::from("$SYS/broker/shared/");
        let _ = write!(topic, "{name}");
        publish_one(
            broker,
            &topic,
            serde_json::json!({ "filters": filters }).to_string(),
        );
    }
}

/// What the group's dispatch strategy is and what it did.
fn strategy_json(group: &SharedGroup) -> serde_json::Value {
    let counters = &group.strategy_counters;
    let read = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    serde_json::json!({
        "name": group.strategy_label(),
        "pinned_to_fallback": group.strategy_is_pinned(),
        "selections": read(&counters.selections),
        "fallbacks": counters.fallbacks.total(),
        "fallbacks_by": {
            "trap": read(&counters.fallbacks.trap),
            "timeout": read(&counters.fallbacks.timeout),
            "invalid_answer": read(&counters.fallbacks.invalid_answer),
            "declined": read(&counters.fallbacks.declined),
            "rebuilding": read(&counters.fallbacks.rebuilding),
        },
        "spills": read(&counters.spills),
        "pinned_messages": read(&counters.pinned_messages),
        "traps": read(&counters.traps),
        "timeouts": read(&counters.timeouts),
        "invalid_answers": read(&counters.fallbacks.invalid_answer),
        "rebuilds": read(&counters.rebuilds),
        "log_dropped": read(&counters.log_dropped),
    })
}

fn publish_one(broker: &BrokerState, topic: &str, value: String) {
    let message = Message::internal(
        ByteString::from(topic),
        Bytes::from(value),
        QoS::AtMostOnce,
        true,
    );
    broker.publish_internal(message);
}
