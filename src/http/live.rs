//! `GET /api/v1/live`: what the dashboard draws, pushed as server-sent events. Once a second a
//! `snapshot` (broker totals and every group with its rate; members and reasons for the
//! busiest groups and those the page watches), and each group event as it happens.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::views::GroupSample;
use super::HttpState;
use crate::broker::{BrokerState, Stats};

/// How often a snapshot goes out.
const TICK: Duration = Duration::from_secs(1);
/// Groups sent with their members and reasons without being watched: the busiest.
const TOP_GROUPS: usize = 20;
/// Events and snapshots a slow page may fall behind by before the feed drops it.
const BACKLOG: usize = 16;

#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    /// Share names (comma-separated) whose members the page shows whatever their traffic.
    #[serde(default)]
    watch: String,
}

pub async fn live(
    State(http): State<Arc<HttpState>>,
    Query(query): Query<LiveQuery>,
) -> impl IntoResponse {
    let (sender, receiver) = mpsc::channel(BACKLOG);
    let watched: Vec<String> = query
        .watch
        .split(',')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    tokio::spawn(push(http.broker.clone(), watched, sender));
    Sse::new(Feed(receiver)).keep_alive(KeepAlive::default())
}

/// The stream axum writes out: what `push` produces.
pub struct Feed(mpsc::Receiver<Event>);

impl futures_core::Stream for Feed {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|event| event.map(Ok))
    }
}

/// Produces one page's feed until the page goes away or the broker stops.
async fn push(broker: Arc<BrokerState>, watched: Vec<String>, feed: mpsc::Sender<Event>) {
    let mut events = broker.router.events.subscribe();
    let recent: Vec<Value> = broker
        .router
        .events
        .recent()
        .iter()
        .map(|e| json!(**e))
        .collect();
    if feed
        .send(
            Event::default()
                .event("events")
                .data(json!(recent).to_string()),
        )
        .await
        .is_err()
    {
        return;
    }
    let mut rates = Rates::default();
    let mut ticker = tokio::time::interval(TICK);
    loop {
        let event = tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            _ = feed.closed() => return,
            _ = ticker.tick() => {
                let snapshot = snapshot(&broker, &watched, &mut rates);
                Event::default().event("snapshot").data(snapshot.to_string())
            }
            received = events.recv() => match received {
                Ok(event) => Event::default().event("event").data(json!(*event).to_string()),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    Event::default().event("missed").data(missed.to_string())
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        // A page that cannot keep up loses this update, not the broker its pace.
        if let Err(mpsc::error::TrySendError::Closed(_)) = feed.try_send(event) {
            return;
        }
    }
}

/// The counters of the previous snapshot, to turn them into rates.
#[derive(Default)]
struct Rates {
    at: Option<Instant>,
    /// By group id: dispatched, and dispatched per member.
    groups: HashMap<u64, (u64, HashMap<String, u64>)>,
    received: u64,
    sent: u64,
}

fn per_second(now: u64, before: Option<u64>, seconds: f64) -> f64 {
    match before {
        Some(before) if seconds > 0.0 => now.saturating_sub(before) as f64 / seconds,
        _ => 0.0,
    }
}

fn snapshot(broker: &BrokerState, watched: &[String], rates: &mut Rates) -> Value {
    let now = Instant::now();
    let seconds = rates
        .at
        .map_or(0.0, |at| now.duration_since(at).as_secs_f64());
    let stats = &broker.stats;
    let received = Stats::get(&stats.messages_received);
    let sent = Stats::get(&stats.messages_sent);
    let first = rates.at.is_none();
    let groups = GroupSample::all(broker);
    let mut rated: Vec<(f64, &GroupSample)> = groups
        .iter()
        .map(|g| {
            let before = rates.groups.get(&g.id).map(|(d, _)| *d);
            (per_second(g.dispatched, before, seconds), g)
        })
        .collect();
    let mut busiest: Vec<(f64, u64)> = rated.iter().map(|(rate, g)| (*rate, g.id)).collect();
    busiest.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let detailed: Vec<u64> = busiest.iter().take(TOP_GROUPS).map(|(_, id)| *id).collect();
    let mut next = HashMap::with_capacity(groups.len());
    let rows: Vec<Value> = rated
        .drain(..)
        .map(|(rate, g)| {
            let previous = rates.groups.get(&g.id);
            let mut row = json!({
                "group": g.group, "filter": g.filter, "declared": g.declared,
                "strategy": g.strategy, "strategy_version": g.strategy_version,
                "strategy_overridden": g.strategy_overridden, "pinned": g.pinned,
                "members_online": g.members_online, "members_offline": g.members_offline,
                "queued": g.queued, "queued_bytes": g.queued_bytes, "lag_seconds": g.lag_seconds,
                "in_flight": g.in_flight, "dispatched": g.dispatched, "acked": g.acked,
                "redelivered": g.redelivered, "dropped": g.dropped, "rate": rate,
                "failures": g.strategy_stats.traps + g.strategy_stats.timeouts + g.strategy_stats.invalid_answers,
            });
            let wanted = detailed.contains(&g.id) || watched.contains(&g.group);
            if let (true, Some(object)) = (wanted, row.as_object_mut()) {
                let members: Vec<Value> = g
                    .members
                    .iter()
                    .map(|m| {
                        let before = previous.and_then(|(_, per)| per.get(&m.client_id)).copied();
                        json!({
                            "client_id": m.client_id, "online": m.online,
                            "dispatched": m.dispatched, "busy": m.busy, "window": m.window,
                            "rate": per_second(m.dispatched, before, seconds),
                        })
                    })
                    .collect();
                object.insert("members".into(), json!(members));
                object.insert("redelivered_by".into(), json!(g.redelivered_by));
                object.insert("dropped_by".into(), json!(g.dropped_by));
                let s = &g.strategy_stats;
                object.insert("failures_by".into(), json!({"trap": s.traps, "timeout": s.timeouts, "invalid_answer": s.invalid_answers}));
                object.insert("pinned_messages".into(), json!(s.pinned_messages));
                object.insert("fallbacks_by".into(), json!(s.fallbacks_by));
                object.insert("settings".into(), g.settings.clone());
                object.insert("dead_lettered".into(), json!(g.dead_lettered));
            }
            let per_member = g.members.iter().map(|m| (m.client_id.clone(), m.dispatched)).collect();
            next.insert(g.id, (g.dispatched, per_member));
            row
        })
        .collect();
    let sessions = broker.sessions();
    let online = sessions.iter().filter(|s| s.is_online()).count();
    let value = json!({
        "at_ms": crate::clock::unix_now_ms(),
        "broker": {
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": broker.started_at.elapsed().as_secs(),
            "received": received, "sent": sent,
            "received_rate": if first { 0.0 } else { per_second(received, Some(rates.received), seconds) },
            "sent_rate": if first { 0.0 } else { per_second(sent, Some(rates.sent), seconds) },
            "dropped": Stats::get(&stats.messages_dropped),
            "connections": broker.open_sockets(),
            "sessions_online": online, "sessions_offline": sessions.len() - online,
            "retained": broker.retained.len(),
            "strategies": crate::strategy::builtin::names(),
        },
        "groups": rows,
    });
    rates.at = Some(now);
    rates.groups = next;
    rates.received = received;
    rates.sent = sent;
    value
}
