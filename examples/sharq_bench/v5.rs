//! The `shared` and `fanout` scenarios over MQTT 5 (`--protocol 5`): the same receivers and
//! publishers as the 3.1.1 ones in `main.rs`, on rumqttc's v5 client, without member churn.
//! Payloads, receipts and statistics are shared with 3.1.1, so the two protocols' figures
//! compare directly.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::Outgoing;
use tokio::sync::{oneshot, watch};

use crate::{record, PubState, Receipts, Run};

fn qos(q: rumqttc::QoS) -> QoS {
    match q {
        rumqttc::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

pub fn client(run: &Run, client_id: String, requests: usize) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(client_id, run.host.clone(), run.port);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_clean_start(true);
    o.set_max_packet_size(Some(1 << 20));
    o.set_outgoing_inflight_upper_limit(run.inflight.max(1));
    o.set_transport(run.transport.clone());
    // As for 3.1.1: Nagle would hold small publishes back and count as broker latency.
    let mut network = o.network_options();
    network.set_tcp_nodelay(true);
    o.set_network_options(network);
    AsyncClient::new(o, requests)
}

fn buffered_publishes(events: &mut EventLoop) -> Vec<Bytes> {
    events
        .state
        .events
        .drain(..)
        .filter_map(|e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p.payload),
            _ => None,
        })
        .collect()
}

/// A receiver: subscribes `filters` (one SUBSCRIBE each), signals `ready` after the last
/// SUBACK, and records deliveries until `stop`.
pub async fn receiver(
    run: Arc<Run>,
    client_id: String,
    filters: Vec<String>,
    ready: oneshot::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) -> Receipts {
    let mut r = Receipts::default();
    // Room for every SUBSCRIBE before the event loop first runs.
    let (client, mut events) = client(&run, client_id.clone(), 64 + filters.len());
    let mut ready = Some(ready);
    let mut pending = filters.len();
    for filter in &filters {
        if let Err(e) = client.subscribe(filter.clone(), qos(run.qos)).await {
            if let Some(tx) = ready.take() {
                let _ = tx.send(Err(format!("{client_id}: subscribe request: {e}")));
            }
            return r;
        }
    }
    loop {
        let event = tokio::select! {
            _ = stop.changed() => break,
            e = events.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(p))) => record(&run, &mut r, &p.payload),
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused = !ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                pending = pending.saturating_sub(1);
                if refused || pending == 0 {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(if refused {
                            Err(format!("{client_id}: SUBACK refused a filter"))
                        } else {
                            Ok(())
                        });
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                let msg = format!("{client_id}: connection error: {e}");
                match ready.take() {
                    Some(tx) => {
                        let _ = tx.send(Err(msg));
                    }
                    None => run.error(msg),
                }
                return r;
            }
        }
    }
    for payload in buffered_publishes(&mut events) {
        record(&run, &mut r, &payload);
    }
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while let Ok(e) = events.poll().await {
                match e {
                    Event::Outgoing(Outgoing::Disconnect) => break,
                    Event::Incoming(Packet::Publish(p)) => record(&run, &mut r, &p.payload),
                    _ => {}
                }
            }
        })
        .await;
    }
    for payload in buffered_publishes(&mut events) {
        record(&run, &mut r, &payload);
    }
    r
}

/// A publisher's event loop: counts completions (written at QoS 0, PUBACK at 1, PUBCOMP at 2).
pub async fn publisher_events(
    run: Arc<Run>,
    client_id: String,
    client: AsyncClient,
    mut events: EventLoop,
    state: Arc<PubState>,
    connected: oneshot::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connected = Some(connected);
    let q = run.qos;
    loop {
        let event = tokio::select! {
            _ = stop.changed() => break,
            e = events.poll() => e,
        };
        let completion = match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Some(tx) = connected.take() {
                    let _ = tx.send(Ok(()));
                }
                false
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => q == rumqttc::QoS::AtMostOnce,
            Ok(Event::Incoming(Packet::PubAck(_))) => q == rumqttc::QoS::AtLeastOnce,
            Ok(Event::Incoming(Packet::PubComp(_))) => q == rumqttc::QoS::ExactlyOnce,
            Ok(_) => false,
            Err(e) => {
                let msg = format!("{client_id}: connection error: {e}");
                match connected.take() {
                    Some(tx) => {
                        let _ = tx.send(Err(msg));
                    }
                    None => run.error(msg),
                }
                break;
            }
        };
        if completion {
            state.completed.fetch_add(1, Ordering::Relaxed);
            state
                .last_completion_ns
                .store(crate::now_ns(), Ordering::Relaxed);
        }
    }
    state.dead.store(true, Ordering::Relaxed);
    if *stop.borrow() && client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while let Ok(e) = events.poll().await {
                if matches!(e, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
}

pub async fn publish(
    client: &AsyncClient,
    topic: String,
    q: rumqttc::QoS,
    payload: Bytes,
) -> Result<(), String> {
    client
        .publish_bytes(topic, qos(q), false, payload)
        .await
        .map_err(|e| e.to_string())
}
