//! `GET /metrics`: the broker and every shared group in Prometheus text format (OpenMetrics
//! when the scraper asks for it), encoded by `prometheus-client` from a reading taken at scrape
//! time: the counters live where they are counted, and nothing is kept twice.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::broker::message::Quota;
use crate::broker::BrokerState;
use crate::broker::{DropReason, Stats};
use crate::strategy::latency::{LatencyHistogram, LatencySnapshot};

use super::views::GroupSample;

/// The label value that sums the groups past `http.max_labelled_groups`.
pub const OTHER: &str = "_other";

type Labels = Vec<(&'static str, String)>;

/// A registry holding the one collector that reads `broker` at each scrape.
pub fn registry(broker: Arc<BrokerState>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(BrokerCollector { broker }));
    registry
}

/// Encodes everything, as Prometheus text (0.0.4) or as OpenMetrics text.
pub fn encode(registry: &Registry, openmetrics: bool) -> Result<String, std::fmt::Error> {
    let mut text = String::with_capacity(64 * 1024);
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut text, registry)?;
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
    }
    Ok(text)
}

#[derive(Debug)]
struct BrokerCollector {
    broker: Arc<BrokerState>,
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let broker = &self.broker;
        encode_broker(&mut encoder, broker)?;
        let groups = GroupSample::all(broker);
        encode_groups(
            &mut encoder,
            &groups,
            broker.config.http.max_labelled_groups,
        )
    }
}

enum Value {
    Int(u64),
    Float(f64),
}

/// One family: its samples, each with its labels.
fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[(Labels, Value)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let mut sample = metric.encode_family(labels)?;
        match (&kind, value) {
            (MetricType::Counter, Value::Int(v)) => {
                sample.encode_counter::<NoLabelSet, _, u64>(v, None)?
            }
            (MetricType::Counter, Value::Float(v)) => {
                sample.encode_counter::<NoLabelSet, _, f64>(v, None)?
            }
            (_, Value::Int(v)) => sample.encode_gauge(v)?,
            (_, Value::Float(v)) => sample.encode_gauge(v)?,
        }
    }
    Ok(())
}

fn one(value: u64) -> Vec<(Labels, Value)> {
    vec![(Vec::new(), Value::Int(value))]
}

fn encode_broker(
    encoder: &mut DescriptorEncoder,
    broker: &BrokerState,
) -> Result<(), std::fmt::Error> {
    let stats = &broker.stats;
    let get = Stats::get;
    let (mut open, mut accepted) = (Vec::new(), Vec::new());
    for (label, counts) in broker.listeners.read().iter() {
        let labels: Labels = vec![("listener", label.to_string())];
        open.push((
            labels.clone(),
            Value::Int(counts.open.load(Ordering::Relaxed)),
        ));
        accepted.push((labels, Value::Int(counts.accepted.load(Ordering::Relaxed))));
    }
    family(
        encoder,
        "sharq_connections",
        "Sockets open now, per listener (TLS handshakes and CONNECTs under way included).",
        MetricType::Gauge,
        &open,
    )?;
    family(
        encoder,
        "sharq_connections_accepted",
        "Sockets accepted per listener since start.",
        MetricType::Counter,
        &accepted,
    )?;
    family(
        encoder,
        "sharq_connections_refused",
        "Sockets closed at accept by limits.max_connections or limits.max_connections_per_ip.",
        MetricType::Counter,
        &one(get(&stats.connections_refused)),
    )?;
    if let Some(journal) = &broker.journal {
        family(
            encoder,
            "sharq_store_damaged_records",
            "Stored records that failed their checksum or layout when read back since start: not delivered, moved to the store's damaged_records table.",
            MetricType::Counter,
            &one(journal.damaged_records()),
        )?;
    }
    family(
        encoder,
        "sharq_auth_failures",
        "Logins refused by authentication.",
        MetricType::Counter,
        &one(get(&stats.auth_failed)),
    )?;
    let connects_refused: Vec<(Labels, Value)> = [
        ("not_owner", &stats.session_owner_refused),
        ("session_quota", &stats.session_quota_refused),
        ("client_id_pattern", &stats.client_id_refused),
    ]
    .into_iter()
    .map(|(reason, count)| (vec![("reason", reason.to_owned())], Value::Int(get(count))))
    .collect();
    family(
        encoder,
        "sharq_connects_refused",
        "CONNECTs refused after authentication, by reason: the client id's session belongs to another identity, limits.max_sessions, auth.client_id_pattern.",
        MetricType::Counter,
        &connects_refused,
    )?;
    family(
        encoder,
        "sharq_subscriptions_refused",
        "Subscriptions refused with 0x97 because the session holds limits.max_subscriptions_per_client.",
        MetricType::Counter,
        &one(get(&stats.subscription_quota_refused)),
    )?;
    family(
        encoder,
        "sharq_acl_denied",
        "PUBLISHes, subscriptions and group joins the ACL refused.",
        MetricType::Counter,
        &one(get(&stats.acl_denied)),
    )?;
    family(
        encoder,
        "sharq_messages_received",
        "PUBLISH packets received from clients.",
        MetricType::Counter,
        &one(get(&stats.messages_received)),
    )?;
    family(
        encoder,
        "sharq_messages_sent",
        "PUBLISH packets sent to clients.",
        MetricType::Counter,
        &one(get(&stats.messages_sent)),
    )?;
    let mut dropped: Vec<(Labels, Value)> = DropReason::ALL
        .iter()
        .map(|r| {
            (
                vec![("reason", r.label().to_owned())],
                Value::Int(stats.dropped_by(*r)),
            )
        })
        .collect();
    for quota in [
        Quota::SessionMessages,
        Quota::SessionBytes,
        Quota::GroupMessages,
        Quota::GroupBytes,
    ] {
        dropped.push((
            vec![("reason", quota.label().to_owned())],
            Value::Int(get(&stats.refused_by_quota[quota.index()])),
        ));
    }
    family(encoder, "sharq_messages_dropped", "Copies of messages not delivered, by reason: a full queue (named by its bound), expiry, size, a group that ended, a topic the subscriber may not read (acl).", MetricType::Counter, &dropped)?;
    let retained_refused: Vec<(Labels, Value)> = [Quota::RetainedMessages, Quota::RetainedBytes]
        .iter()
        .map(|q| {
            (
                vec![("reason", q.label().to_owned())],
                Value::Int(get(&stats.refused_by_quota[q.index()])),
            )
        })
        .collect();
    family(encoder, "sharq_retained_refused", "Retained messages not kept because the retained store was full (the message is still routed).", MetricType::Counter, &retained_refused)?;
    family(
        encoder,
        "sharq_received_bytes",
        "Bytes read from client sockets.",
        MetricType::Counter,
        &one(get(&stats.bytes_received)),
    )?;
    family(
        encoder,
        "sharq_sent_bytes",
        "Bytes written to client sockets.",
        MetricType::Counter,
        &one(get(&stats.bytes_sent)),
    )?;
    family(
        encoder,
        "sharq_retained_messages",
        "Retained messages held.",
        MetricType::Gauge,
        &one(broker.retained.len() as u64),
    )?;
    family(
        encoder,
        "sharq_retained_bytes",
        "Whole-message bytes of the retained messages held.",
        MetricType::Gauge,
        &one(broker.retained.bytes() as u64),
    )?;
    let sessions = broker.sessions();
    let online = sessions.iter().filter(|s| s.is_online()).count() as u64;
    family(
        encoder,
        "sharq_sessions",
        "Sessions held, by whether a connection is attached.",
        MetricType::Gauge,
        &[
            (vec![("state", "online".to_owned())], Value::Int(online)),
            (
                vec![("state", "offline".to_owned())],
                Value::Int(sessions.len() as u64 - online),
            ),
        ],
    )?;
    family(
        encoder,
        "sharq_subscriptions",
        "Subscriptions, plain and shared.",
        MetricType::Gauge,
        &one(broker.router.subscription_count() as u64),
    )?;
    family(
        encoder,
        "sharq_uptime_seconds",
        "Seconds since the broker started.",
        MetricType::Gauge,
        &[(
            Vec::new(),
            Value::Float(broker.started_at.elapsed().as_secs_f64()),
        )],
    )?;
    family(
        encoder,
        "sharq_build_info",
        "The broker's version.",
        MetricType::Gauge,
        &[(
            vec![("version", env!("CARGO_PKG_VERSION").to_owned())],
            Value::Int(1),
        )],
    )?;
    Ok(())
}

/// The groups labelled one by one, and the sum of the rest under [`OTHER`].
fn labelled(
    groups: &[GroupSample],
    max_labelled: usize,
) -> (Vec<&GroupSample>, Option<GroupSample>) {
    let (named, rest) = groups.split_at(groups.len().min(max_labelled));
    let other = rest.iter().fold(None::<GroupSample>, |sum, g| {
        Some(match sum {
            None => {
                let mut first = g.clone();
                first.group = OTHER.to_owned();
                first.filter = OTHER.to_owned();
                first.members.clear();
                first
            }
            Some(mut sum) => {
                sum.members_online += g.members_online;
                sum.members_offline += g.members_offline;
                sum.queued += g.queued;
                sum.queued_bytes += g.queued_bytes;
                sum.lag_seconds = sum.lag_seconds.max(g.lag_seconds);
                sum.in_flight += g.in_flight;
                sum.dispatched += g.dispatched;
                sum.acked += g.acked;
                sum.dead_lettered += g.dead_lettered;
                sum.late_acks += g.late_acks;
                sum.redelivered += g.redelivered;
                for (mine, theirs) in sum.redelivered_by.iter_mut().zip(&g.redelivered_by) {
                    mine.1 += theirs.1;
                }
                sum.dropped += g.dropped;
                for (mine, theirs) in sum.dropped_by.iter_mut().zip(&g.dropped_by) {
                    mine.1 += theirs.1;
                }
                let (s, t) = (&mut sum.strategy_stats, &g.strategy_stats);
                s.selections += t.selections;
                s.fallbacks += t.fallbacks;
                s.fallbacks_by.absorb(&t.fallbacks_by);
                s.log_dropped += t.log_dropped;
                s.spills += t.spills;
                s.traps += t.traps;
                s.timeouts += t.timeouts;
                s.invalid_answers += t.invalid_answers;
                s.rebuilds += t.rebuilds;
                s.reloads += t.reloads;
                s.pinned_messages += t.pinned_messages;
                if let (Some(into), Some(other)) = (&mut s.select_latency, &t.select_latency) {
                    LatencyHistogram::absorb(into, other);
                }
                sum.pinned |= g.pinned;
                sum
            }
        })
    });
    (named.iter().collect(), other)
}

fn group_labels(g: &GroupSample) -> Labels {
    vec![("group", g.group.clone()), ("filter", g.filter.clone())]
}

fn per_group(
    groups: &[&GroupSample],
    value: impl Fn(&GroupSample) -> Value,
) -> Vec<(Labels, Value)> {
    groups.iter().map(|g| (group_labels(g), value(g))).collect()
}

fn encode_groups(
    encoder: &mut DescriptorEncoder,
    groups: &[GroupSample],
    max_labelled: usize,
) -> Result<(), std::fmt::Error> {
    family(
        encoder,
        "sharq_groups",
        "Shared groups alive (one per share name and filter).",
        MetricType::Gauge,
        &one(groups.len() as u64),
    )?;
    let (named, other) = labelled(groups, max_labelled);
    let mut all: Vec<&GroupSample> = named;
    if let Some(other) = &other {
        all.push(other);
    }
    let all = &all[..];
    let mut members = Vec::new();
    for g in all {
        members.push((
            with(group_labels(g), "state", "online"),
            Value::Int(g.members_online as u64),
        ));
        members.push((
            with(group_labels(g), "state", "offline"),
            Value::Int(g.members_offline as u64),
        ));
    }
    family(
        encoder,
        "sharq_group_members",
        "Members of the group, by whether their session is connected.",
        MetricType::Gauge,
        &members,
    )?;
    let per_member: Vec<(Labels, Value)> = all
        .iter()
        .flat_map(|g| {
            g.members.iter().map(move |m| {
                (
                    with(group_labels(g), "client_id", &m.client_id),
                    Value::Int(m.dispatched),
                )
            })
        })
        .collect();
    family(encoder, "sharq_group_member_dispatched", "Messages the group handed to each member since it joined (not for groups summed under _other).", MetricType::Counter, &per_member)?;
    family(
        encoder,
        "sharq_group_dispatched",
        "Messages the group handed to members.",
        MetricType::Counter,
        &per_group(all, |g| Value::Int(g.dispatched)),
    )?;
    family(
        encoder,
        "sharq_group_acked",
        "Copies members finished: PUBACK, PUBCOMP, or sent at QoS 0.",
        MetricType::Counter,
        &per_group(all, |g| Value::Int(g.acked)),
    )?;
    let redelivered: Vec<(Labels, Value)> = all
        .iter()
        .flat_map(|g| {
            g.redelivered_by
                .iter()
                .map(move |(reason, n)| (with(group_labels(g), "reason", reason), Value::Int(*n)))
        })
        .collect();
    family(
        encoder,
        "sharq_group_redelivered",
        "Copies that came back from a member to go to another, by reason.",
        MetricType::Counter,
        &redelivered,
    )?;
    let dropped: Vec<(Labels, Value)> = all
        .iter()
        .flat_map(|g| {
            g.dropped_by
                .iter()
                .map(move |(reason, n)| (with(group_labels(g), "reason", reason), Value::Int(*n)))
        })
        .collect();
    family(
        encoder,
        "sharq_group_dead_lettered",
        "Messages published to the group's dead-letter topic (max_deliveries reached, or refused by a member).",
        MetricType::Counter,
        &per_group(all, |g| Value::Int(g.dead_lettered)),
    )?;
    family(
        encoder,
        "sharq_group_late_acks",
        "PUBACKs that came after the ack deadline, when another member had the message already: each a message delivered twice.",
        MetricType::Counter,
        &per_group(all, |g| Value::Int(g.late_acks)),
    )?;
    family(
        encoder,
        "sharq_group_dropped",
        "Messages of the group not delivered, by reason.",
        MetricType::Counter,
        &dropped,
    )?;
    family(
        encoder,
        "sharq_group_queued_messages",
        "Messages waiting in the group for a member with room (memory and disk).",
        MetricType::Gauge,
        &per_group(all, |g| Value::Int(g.queued as u64)),
    )?;
    family(
        encoder,
        "sharq_group_queued_bytes",
        "Whole-message bytes waiting in the group.",
        MetricType::Gauge,
        &per_group(all, |g| Value::Int(g.queued_bytes as u64)),
    )?;
    family(
        encoder,
        "sharq_group_lag_seconds",
        "Age of the oldest message waiting in the group (0 when none waits).",
        MetricType::Gauge,
        &per_group(all, |g| Value::Float(g.lag_seconds)),
    )?;
    family(
        encoder,
        "sharq_group_in_flight",
        "Copies handed to members and not finished yet.",
        MetricType::Gauge,
        &per_group(all, |g| Value::Int(g.in_flight as u64)),
    )?;
    let info: Vec<(Labels, Value)> = all
        .iter()
        .filter(|g| g.group != OTHER)
        .map(|g| {
            let mut labels = group_labels(g);
            labels.push(("strategy", g.strategy.clone()));
            labels.push(("version", g.strategy_version.clone()));
            (labels, Value::Int(1))
        })
        .collect();
    family(
        encoder,
        "sharq_group_strategy_info",
        "The group's strategy and its version (a digest of the component).",
        MetricType::Gauge,
        &info,
    )?;
    family(
        encoder,
        "sharq_group_strategy_pinned",
        "1 while the group is pinned to the native round robin after repeated strategy failures.",
        MetricType::Gauge,
        &per_group(all, |g| Value::Int(u64::from(g.pinned))),
    )?;
    let failures: Vec<(Labels, Value)> = all
        .iter()
        .flat_map(|g| {
            let s = &g.strategy_stats;
            [
                ("trap", s.traps),
                ("timeout", s.timeouts),
                ("invalid_answer", s.invalid_answers),
            ]
            .into_iter()
            .map(move |(kind, n)| (with(group_labels(g), "kind", kind), Value::Int(n)))
        })
        .collect();
    family(
        encoder,
        "sharq_group_strategy_failures",
        "Strategy calls that failed (membership calls too), by kind.",
        MetricType::Counter,
        &failures,
    )?;
    family(
        encoder,
        "sharq_group_strategy_selections",
        "Messages delivered to the member the strategy chose.",
        MetricType::Counter,
        &per_group(all, |g| Value::Int(g.strategy_stats.selections)),
    )?;
    let fallbacks: Vec<(Labels, Value)> = all
        .iter()
        .flat_map(|g| {
            g.strategy_stats
                .fallbacks_by
                .by_cause()
                .into_iter()
                .map(move |(cause, n)| (with(group_labels(g), "cause", cause), Value::Int(n)))
        })
        .collect();
    family(
        encoder,
        "sharq_group_strategy_fallbacks",
        "Messages the native round robin placed because the strategy did not choose, by cause: trap, timeout, invalid_answer, declined (it answered none), rebuilding (its instance was being rebuilt after a failure).",
        MetricType::Counter,
        &fallbacks,
    )?;
    family(
        encoder,
        "sharq_group_plugin_log_dropped",
        "Plugin log lines dropped by the log import's rate limit.",
        MetricType::Counter,
        &per_group(all, |g| Value::Int(g.strategy_stats.log_dropped)),
    )?;
    family(
        encoder,
        "sharq_group_strategy_spills",
        "Messages whose chosen member had no room, placed by the round robin on a member with room.",
        MetricType::Counter,
        &per_group(all, |g| Value::Int(g.strategy_stats.spills)),
    )?;
    family(
        encoder,
        "sharq_group_strategy_rebuilds",
        "Strategy instances rebuilt after a failure.",
        MetricType::Counter,
        &per_group(all, |g| Value::Int(g.strategy_stats.rebuilds)),
    )?;
    family(
        encoder,
        "sharq_group_strategy_reloads",
        "New strategies swapped in while the group lived (config reload, admin API).",
        MetricType::Counter,
        &per_group(all, |g| Value::Int(g.strategy_stats.reloads)),
    )?;
    family(
        encoder,
        "sharq_group_pinned_messages",
        "Messages handled while the group was pinned to the native round robin.",
        MetricType::Counter,
        &per_group(all, |g| Value::Int(g.strategy_stats.pinned_messages)),
    )?;
    let mut latency = encoder.encode_descriptor(
        "sharq_group_select_duration_seconds",
        "How long the strategy's select call took.",
        None,
        MetricType::Histogram,
    )?;
    for g in all {
        let Some(snapshot): Option<&LatencySnapshot> = g.strategy_stats.select_latency.as_ref()
        else {
            continue;
        };
        let labels = group_labels(g);
        latency
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(
                snapshot.sum_seconds,
                snapshot.count,
                &snapshot.buckets,
                None,
            )?;
    }
    Ok(())
}

fn with(mut labels: Labels, key: &'static str, value: &str) -> Labels {
    labels.push((key, value.to_owned()));
    labels
}
