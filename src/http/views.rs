//! What the HTTP side shows of the broker, read once per request: groups with their members,
//! queue and counters, and clients. `/metrics`, the admin API and the live feed all read
//! these, so the three always agree.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;

use crate::broker::session::Session;
use crate::broker::shared::{GroupDrop, GroupView, Redelivery, SharedGroup};
use crate::broker::BrokerState;
use crate::strategy::latency::LatencySnapshot;

/// One group (a share name with one filter), as read now.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSample {
    /// The broker's id for it: creation order, never reused.
    #[serde(skip)]
    pub id: u64,
    pub group: String,
    pub filter: String,
    pub declared: bool,
    pub strategy: String,
    pub strategy_version: String,
    /// Set through the admin API rather than by the config's `[shared]` rules.
    pub strategy_overridden: bool,
    /// Gave up on its strategy after repeated failures: the native round robin serves.
    pub pinned: bool,
    pub members: Vec<MemberSample>,
    pub members_online: usize,
    pub members_offline: usize,
    pub queued: usize,
    pub queued_bytes: usize,
    /// Age of the oldest waiting message.
    pub lag_seconds: f64,
    /// Handed to members and not finished yet.
    pub in_flight: usize,
    pub dispatched: u64,
    pub acked: u64,
    pub redelivered: u64,
    pub redelivered_by: Vec<(&'static str, u64)>,
    pub dropped: u64,
    /// By reason: the group's own, then those its members' sessions count.
    pub dropped_by: Vec<(&'static str, u64)>,
    pub dead_lettered: u64,
    /// Acknowledgements after the ack deadline: messages delivered twice.
    pub late_acks: u64,
    /// The work-queue settings in force (those set).
    pub settings: serde_json::Value,
    pub strategy_stats: StrategySample,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberSample {
    pub client_id: String,
    pub online: bool,
    pub weight: u32,
    pub dispatched: u64,
    /// Its session's copies queued and in flight (all its subscriptions), and its window.
    pub busy: u32,
    pub window: u32,
    pub subscribed_at_ms: u64,
}

/// Messages placed by the round robin instead of the strategy, by cause (see
/// `strategy::FallbackCounters`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FallbackSample {
    pub trap: u64,
    pub timeout: u64,
    pub invalid_answer: u64,
    pub declined: u64,
    pub rebuilding: u64,
}

impl FallbackSample {
    /// Each cause with its name, as metrics and the API label them.
    pub fn by_cause(&self) -> [(&'static str, u64); 5] {
        [
            ("trap", self.trap),
            ("timeout", self.timeout),
            ("invalid_answer", self.invalid_answer),
            ("declined", self.declined),
            ("rebuilding", self.rebuilding),
        ]
    }

    pub fn absorb(&mut self, other: &FallbackSample) {
        self.trap += other.trap;
        self.timeout += other.timeout;
        self.invalid_answer += other.invalid_answer;
        self.declined += other.declined;
        self.rebuilding += other.rebuilding;
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StrategySample {
    pub selections: u64,
    /// The sum of `fallbacks_by`.
    pub fallbacks: u64,
    pub fallbacks_by: FallbackSample,
    pub spills: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub invalid_answers: u64,
    pub rebuilds: u64,
    pub reloads: u64,
    pub pinned_messages: u64,
    pub log_dropped: u64,
    #[serde(skip)]
    pub select_latency: Option<LatencySnapshot>,
    pub select_count: u64,
    pub select_seconds_total: f64,
}

impl GroupSample {
    pub fn of(broker: &BrokerState, group: &SharedGroup) -> GroupSample {
        let view: GroupView = group.view();
        let members_online = view.members.iter().filter(|m| m.online).count();
        let counters = &group.counters;
        let tally = &group.tally;
        let read = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let mut dropped_by: Vec<(&'static str, u64)> = GroupDrop::ALL
            .iter()
            .map(|r| (r.label(), counters.dropped_by(*r)))
            .collect();
        dropped_by.push(("expired", read(&tally.expired)));
        dropped_by.push(("too_large", read(&tally.too_large)));
        dropped_by.push(("ended_with_member", read(&tally.ended_with_member)));
        let redelivered_by: Vec<(&'static str, u64)> = Redelivery::ALL
            .iter()
            .map(|r| (r.label(), counters.redelivered(*r)))
            .collect();
        let s = &group.strategy_counters;
        let latency = s.select_latency.snapshot();
        GroupSample {
            id: group.id,
            group: group.name.to_string(),
            filter: group.filter.to_string(),
            declared: view.declared,
            strategy_overridden: broker.strategies.is_overridden(&group.name),
            strategy: view.strategy,
            strategy_version: view.strategy_version,
            pinned: view.pinned,
            members_online,
            members_offline: view.members.len() - members_online,
            members: view
                .members
                .iter()
                .map(|m| MemberSample {
                    client_id: m.client_id.to_string(),
                    online: m.online,
                    weight: m.weight,
                    dispatched: m.dispatched,
                    busy: m.busy,
                    window: m.window,
                    subscribed_at_ms: m.subscribed_at_ms,
                })
                .collect(),
            queued: view.queued,
            queued_bytes: view.queued_bytes,
            lag_seconds: view.lag.as_secs_f64(),
            in_flight: group.in_flight(),
            dispatched: read(&counters.dispatched),
            acked: read(&tally.acked),
            redelivered: read(&counters.redispatched),
            redelivered_by,
            dropped: dropped_by.iter().map(|(_, n)| n).sum(),
            dropped_by,
            dead_lettered: read(&counters.dead_lettered),
            late_acks: read(&tally.late_acks),
            settings: view.settings.to_json(),
            strategy_stats: StrategySample {
                selections: read(&s.selections),
                fallbacks: s.fallbacks.total(),
                fallbacks_by: FallbackSample {
                    trap: read(&s.fallbacks.trap),
                    timeout: read(&s.fallbacks.timeout),
                    invalid_answer: read(&s.fallbacks.invalid_answer),
                    declined: read(&s.fallbacks.declined),
                    rebuilding: read(&s.fallbacks.rebuilding),
                },
                spills: read(&s.spills),
                traps: read(&s.traps),
                timeouts: read(&s.timeouts),
                invalid_answers: read(&s.fallbacks.invalid_answer),
                rebuilds: read(&s.rebuilds),
                reloads: read(&s.reloads),
                pinned_messages: read(&s.pinned_messages),
                log_dropped: read(&s.log_dropped),
                select_count: latency.count,
                select_seconds_total: latency.sum_seconds,
                select_latency: Some(latency),
            },
        }
    }

    /// Every live group, oldest first.
    pub fn all(broker: &BrokerState) -> Vec<GroupSample> {
        let mut groups: Vec<Arc<SharedGroup>> = broker.router.groups();
        groups.sort_by_key(|g| g.id);
        groups.iter().map(|g| GroupSample::of(broker, g)).collect()
    }
}

/// A client (a session, connected or not).
#[derive(Debug, Clone, Serialize)]
pub struct ClientSample {
    pub client_id: String,
    pub online: bool,
    pub username: Option<String>,
    /// Seconds the session outlives its connection (`u32::MAX`: never expires).
    pub session_expiry_interval: u32,
    pub subscriptions: Vec<String>,
    pub queued: usize,
    pub in_flight: usize,
}

impl ClientSample {
    pub fn of(session: &Session) -> ClientSample {
        ClientSample {
            client_id: session.client_id.to_string(),
            online: session.is_online(),
            username: session.username().map(|u| u.to_string()),
            session_expiry_interval: session.expiry_interval(),
            subscriptions: session.subscription_filters(),
            queued: session.queued(),
            in_flight: session.inflight(),
        }
    }

    pub fn all(broker: &BrokerState) -> Vec<ClientSample> {
        let mut clients: Vec<ClientSample> = broker
            .sessions()
            .iter()
            .map(|s| ClientSample::of(s))
            .collect();
        clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        clients
    }
}
