//! `fill` and `drain`: a backlog built with no subscriber online, and taken down later — the
//! durable store's measurements (issue #11), and the kill -9 loop's two halves.
//!
//! ```text
//! sharq_bench fill --port 1883 --topic bulk --publishers 4 --qos 1 --payload 1k --messages 2000000
//! sharq_bench drain --port 1883 --filter '$share/bulk/bulk/#' --members 4 --expect 2000000
//! ```
//!
//! `fill` only publishes (QoS 1 or 2 pipelined up to `--inflight` per publisher, or QoS 0) to
//! `<topic>/p<i>` and counts completions (PUBACK / PUBCOMP); it needs nobody to subscribe. It
//! stops when everything is acknowledged, at `--max-secs`, or when the broker goes away (a
//! kill -9 mid-run is expected: the count and the ids then say what the broker acknowledged
//! before it died). `--acked-out FILE` writes one line per acknowledged message,
//! `<run id hex> <publisher> <sequence>`.
//!
//! `drain` connects `--members` clients (`<client-prefix>-m<i>`; `--persistent`: clean
//! session 0, so a session made earlier is resumed with its queue) subscribed to `--filter`, and
//! counts what arrives until `--expect` unique messages came or nothing arrived for
//! `--quiet-secs`. `--setup-only` just creates the sessions (connect, subscribe, SUBACK,
//! DISCONNECT). `--ids-out FILE` writes the received ids like `fill --acked-out`. Payloads are
//! the header `fill` writes (any run id is accepted, so several fills can be drained at once).

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::Args;
use parking_lot::Mutex;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::procfs;
use super::{check_loopback, no_delay, now_ns, parse_size, qos_of, round3, secs, HEADER};

#[derive(Debug, Args, Clone)]
pub struct FillArgs {
    /// Broker host; must resolve to loopback addresses only.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Topic prefix: publisher i publishes to `<topic>/p<i>`.
    #[arg(long, default_value = "bulk")]
    topic: String,
    #[arg(long, default_value_t = 4)]
    publishers: u32,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload size in bytes (suffix k/K for KiB), at least 28.
    #[arg(long, default_value = "1k", value_parser = parse_size)]
    payload: usize,
    /// Messages in total, shared evenly among the publishers.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Publishing stops after this many seconds even if messages remain.
    #[arg(long, default_value_t = 600.0)]
    max_secs: f64,
    /// After publishing, wait at most this long for the outstanding acknowledgements.
    #[arg(long, default_value_t = 10.0)]
    drain_secs: f64,
    /// Unacknowledged publishes per publisher (rumqttc's `inflight`).
    #[arg(long, default_value_t = 100)]
    inflight: u16,
    /// Print a progress line on stderr every this many seconds (0: never).
    #[arg(long, default_value_t = 0.0)]
    progress_secs: f64,
    /// Writes `<run id hex> <publisher> <sequence>` for every acknowledged message.
    #[arg(long)]
    acked_out: Option<std::path::PathBuf>,
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Debug, Args, Clone)]
pub struct DrainArgs {
    /// Broker host; must resolve to loopback addresses only.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// What the members subscribe to, e.g. `$share/bulk/bulk/#` or `bulk/#`.
    #[arg(long, default_value = "$share/bulk/bulk/#")]
    filter: String,
    #[arg(long, default_value_t = 4)]
    members: u32,
    /// Subscription QoS.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Client ids are `<client-prefix>-m<i>`.
    #[arg(long, default_value = "drain")]
    client_prefix: String,
    /// Clean session 0: resume (or create) a persistent session with its queue.
    #[arg(long)]
    persistent: bool,
    /// Create the sessions and subscriptions, then disconnect without waiting for messages.
    #[arg(long)]
    setup_only: bool,
    /// Stop once this many unique messages arrived (0: only the quiet period ends the run).
    #[arg(long, default_value_t = 0)]
    expect: u64,
    /// Stop when nothing arrived for this long (counted from the last SUBACK at first).
    #[arg(long, default_value_t = 5.0)]
    quiet_secs: f64,
    /// Give up after this long in any case.
    #[arg(long, default_value_t = 900.0)]
    max_secs: f64,
    /// In-flight window of each member (rumqttc's `inflight`; it bounds what a member sends,
    /// not what it receives: the broker's limit decides that).
    #[arg(long, default_value_t = 100)]
    inflight: u16,
    /// Print a progress line on stderr every this many seconds (0: never).
    #[arg(long, default_value_t = 0.0)]
    progress_secs: f64,
    /// The broker's process id: its peak VmRSS while draining is reported.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Writes `<run id hex> <publisher> <sequence>` for every delivery (duplicates included).
    #[arg(long)]
    ids_out: Option<std::path::PathBuf>,
    #[arg(long, default_value = "")]
    label: String,
}

fn options(host: &str, port: u16, client_id: String, inflight: u16) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, host.to_owned(), port);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_clean_session(true);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_inflight(inflight.max(1));
    o
}

/// (run id, publisher, sequence) of a payload with `fill`'s header.
fn parse_id(payload: &[u8]) -> Option<(u64, u32, u64)> {
    if payload.len() < HEADER {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().unwrap());
    let publisher = u32::from_le_bytes(payload[8..12].try_into().unwrap());
    Some((u64_at(0), publisher, u64_at(12)))
}

fn write_ids(path: &std::path::Path, ids: &[(u64, u32, u64)]) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    for (run, p, s) in ids {
        writeln!(w, "{run:016x} {p} {s}").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    w.flush().map_err(|e| format!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// fill

#[derive(Default)]
struct Publisher {
    sent: AtomicU64,
    completed: AtomicU64,
    last_completion_ns: AtomicU64,
    done: AtomicBool,
    dead: AtomicBool,
    /// Sequence numbers acknowledged, in acknowledgement order.
    acked: Mutex<Vec<u64>>,
}

pub async fn fill(args: FillArgs) -> Value {
    let run_id = rand::random::<u64>();
    let mut out = json!({
        "scenario": "fill", "label": args.label, "run_id": format!("{run_id:016x}"),
        "broker": format!("{}:{}", args.host, args.port), "topic": args.topic,
        "publishers": args.publishers, "qos": args.qos, "payload_bytes": args.payload,
        "messages_target": args.messages, "inflight": args.inflight,
    });
    if let Err(e) = check_loopback(&args.host, args.port) {
        out["errors"] = json!([e]);
        return out;
    }
    if args.publishers == 0 {
        out["errors"] = json!(["need at least one publisher"]);
        return out;
    }
    let qos = qos_of(args.qos);
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut pubs = Vec::new();
    for i in 0..args.publishers {
        let client_id = format!("fill-{:08x}-p{i}", run_id as u32);
        let (client, mut events) = AsyncClient::new(
            options(&args.host, args.port, client_id.clone(), args.inflight),
            1024,
        );
        no_delay(&mut events);
        let state = Arc::new(Publisher::default());
        let (ctx, crx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(fill_events(
            client_id.clone(),
            events,
            qos,
            state.clone(),
            ctx,
            stop_rx.clone(),
            errors.clone(),
        ));
        match tokio::time::timeout(Duration::from_secs(10), crx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => errors.lock().push(e),
            _ => errors
                .lock()
                .push(format!("{client_id}: no CONNACK within 10 s")),
        }
        pubs.push((client, state, task));
    }
    if !errors.lock().is_empty() {
        let _ = stop_tx.send(true);
        out["errors"] = json!(*errors.lock());
        return out;
    }

    let start = Instant::now();
    let start_ns = now_ns();
    let deadline = tokio::time::Instant::from_std(start + Duration::from_secs_f64(args.max_secs));
    let per = args.messages / u64::from(args.publishers);
    let extra = args.messages % u64::from(args.publishers);
    let mut loops = Vec::new();
    for (i, (client, state, _)) in pubs.iter().enumerate() {
        let count = per + u64::from((i as u64) < extra);
        let (client, state) = (client.clone(), state.clone());
        let topic = format!("{}/p{i}", args.topic);
        let payload = args.payload;
        loops.push(tokio::spawn(async move {
            for seq in 0..count {
                if tokio::time::Instant::now() >= deadline || state.dead.load(Ordering::Relaxed) {
                    break;
                }
                let mut buf = BytesMut::with_capacity(payload);
                buf.put_u64_le(run_id);
                buf.put_u32_le(i as u32);
                buf.put_u64_le(seq);
                buf.put_u64_le(now_ns());
                buf.resize(payload, 0x5a);
                let body: Bytes = buf.freeze();
                match tokio::time::timeout_at(
                    deadline,
                    client.publish_bytes(topic.clone(), qos, false, body),
                )
                .await
                {
                    Ok(Ok(())) => {
                        state.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
            state.done.store(true, Ordering::Relaxed);
        }));
    }
    let progress = {
        let states: Vec<Arc<Publisher>> = pubs.iter().map(|(_, s, _)| s.clone()).collect();
        let every = args.progress_secs;
        tokio::spawn(async move {
            if every <= 0.0 {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_secs_f64(every)).await;
                let acked: u64 = states
                    .iter()
                    .map(|s| s.completed.load(Ordering::Relaxed))
                    .sum();
                let t = start.elapsed().as_secs_f64();
                eprintln!(
                    "fill: {acked} acknowledged after {t:.1} s ({:.0} msg/s)",
                    acked as f64 / t
                );
            }
        })
    };
    for l in loops {
        let _ = l.await;
    }
    let finished = |s: &Publisher| {
        s.dead.load(Ordering::Relaxed)
            || (s.done.load(Ordering::Relaxed)
                && s.completed.load(Ordering::Relaxed) >= s.sent.load(Ordering::Relaxed))
    };
    let ack_deadline = Instant::now() + Duration::from_secs_f64(args.drain_secs);
    while !pubs.iter().all(|(_, s, _)| finished(s)) && Instant::now() < ack_deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    progress.abort();
    let _ = stop_tx.send(true);
    for (_, _, task) in pubs.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }

    let sent: u64 = pubs
        .iter()
        .map(|(_, s, _)| s.sent.load(Ordering::Relaxed))
        .sum();
    let acked: u64 = pubs
        .iter()
        .map(|(_, s, _)| s.completed.load(Ordering::Relaxed))
        .sum();
    let last = pubs
        .iter()
        .map(|(_, s, _)| s.last_completion_ns.load(Ordering::Relaxed))
        .max()
        .unwrap_or(start_ns);
    let publish_secs = secs(last.saturating_sub(start_ns));
    let mut errors = std::mem::take(&mut *errors.lock());
    if let Some(path) = &args.acked_out {
        let ids: Vec<(u64, u32, u64)> = pubs
            .iter()
            .enumerate()
            .flat_map(|(i, (_, s, _))| {
                let acked = s.acked.lock().clone();
                acked.into_iter().map(move |seq| (run_id, i as u32, seq))
            })
            .collect();
        if let Err(e) = write_ids(path, &ids) {
            errors.push(e);
        }
    }
    super::merge(
        &mut out,
        json!({
            "sent": sent,
            "acked": acked,
            "publish_secs": round3(publish_secs),
            "publish_rate": if publish_secs > 0.0 { (acked as f64 / publish_secs).round() } else { 0.0 },
            "errors": errors,
        }),
    );
    out
}

async fn fill_events(
    client_id: String,
    mut events: rumqttc::EventLoop,
    qos: QoS,
    state: Arc<Publisher>,
    connected: tokio::sync::oneshot::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
    errors: Arc<Mutex<Vec<String>>>,
) {
    let mut connected = Some(connected);
    // Packet id → sequence: the n-th outgoing PUBLISH is the n-th request, sequence n (this
    // client never reconnects, so nothing is retransmitted).
    let mut in_flight: HashMap<u16, u64> = HashMap::new();
    let mut next_seq = 0u64;
    loop {
        let event = tokio::select! {
            _ = stop.changed() => break,
            e = events.poll() => e,
        };
        let done = match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Some(tx) = connected.take() {
                    let _ = tx.send(Ok(()));
                }
                None
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let seq = next_seq;
                next_seq += 1;
                if qos == QoS::AtMostOnce {
                    Some(seq)
                } else {
                    in_flight.insert(pkid, seq);
                    None
                }
            }
            Ok(Event::Incoming(Packet::PubAck(a))) if qos == QoS::AtLeastOnce => {
                in_flight.remove(&a.pkid)
            }
            Ok(Event::Incoming(Packet::PubComp(c))) if qos == QoS::ExactlyOnce => {
                in_flight.remove(&c.pkid)
            }
            Ok(_) => None,
            Err(e) => {
                let msg = format!("{client_id}: connection error: {e}");
                match connected.take() {
                    Some(tx) => {
                        let _ = tx.send(Err(msg));
                    }
                    None => errors.lock().push(msg),
                }
                break;
            }
        };
        if let Some(seq) = done {
            state.acked.lock().push(seq);
            state.completed.fetch_add(1, Ordering::Relaxed);
            state.last_completion_ns.store(now_ns(), Ordering::Relaxed);
        }
    }
    state.dead.store(true, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------
// drain

struct DrainShared {
    received: AtomicU64,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    errors: Mutex<Vec<String>>,
}

pub async fn drain(args: DrainArgs) -> Value {
    let broker_pid = args.broker_pid;
    let mut out = json!({
        "scenario": "drain", "label": args.label,
        "broker": format!("{}:{}", args.host, args.port), "filter": args.filter,
        "members": args.members, "qos": args.qos, "persistent": args.persistent,
        "expect": args.expect,
    });
    if let Err(e) = check_loopback(&args.host, args.port) {
        out["errors"] = json!([e]);
        return out;
    }
    let shared = Arc::new(DrainShared {
        received: AtomicU64::new(0),
        first_ns: AtomicU64::new(u64::MAX),
        last_ns: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
    });
    let start = Instant::now();
    let start_ns = now_ns();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut ready = Vec::new();
    for i in 0..args.members {
        let client_id = format!("{}-m{i}", args.client_prefix);
        let mut o = options(&args.host, args.port, client_id.clone(), args.inflight);
        o.set_clean_session(!args.persistent);
        let (tx, rx) = tokio::sync::oneshot::channel();
        ready.push((client_id.clone(), rx));
        tasks.push(tokio::spawn(member(
            client_id,
            o,
            args.filter.clone(),
            qos_of(args.qos),
            tx,
            stop_rx.clone(),
            shared.clone(),
        )));
    }
    let mut errors = Vec::new();
    let mut session_present = Vec::new();
    for (client_id, rx) in ready {
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(Ok(present))) => session_present.push(present),
            Ok(Ok(Err(e))) => errors.push(e),
            _ => errors.push(format!("{client_id}: no SUBACK within 10 s")),
        }
    }
    let subscribed_ns = now_ns();
    let mut rss_max_kib = broker_pid.and_then(procfs::rss_kib);
    if !args.setup_only && errors.is_empty() {
        let quiet = Duration::from_secs_f64(args.quiet_secs);
        let deadline = start + Duration::from_secs_f64(args.max_secs);
        let mut last_count = shared.received.load(Ordering::Relaxed);
        let mut last_progress = Instant::now();
        let mut last_report = Instant::now();
        loop {
            let n = shared.received.load(Ordering::Relaxed);
            if args.expect > 0 && n >= args.expect {
                break;
            }
            if n != last_count {
                last_count = n;
                last_progress = Instant::now();
            } else if last_progress.elapsed() >= quiet {
                break;
            }
            if Instant::now() >= deadline {
                errors.push(format!("gave up after {} s", args.max_secs));
                break;
            }
            if let Some(pid) = broker_pid {
                rss_max_kib = rss_max_kib.max(procfs::rss_kib(pid));
            }
            if args.progress_secs > 0.0 && last_report.elapsed().as_secs_f64() >= args.progress_secs
            {
                last_report = Instant::now();
                let t = start.elapsed().as_secs_f64();
                eprintln!("drain: {n} received after {t:.1} s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let _ = stop_tx.send(true);
    let mut per_member = Vec::new();
    let mut ids: Vec<(u64, u32, u64)> = Vec::new();
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(seen)) => {
                per_member.push(seen.len());
                ids.extend(seen);
            }
            _ => errors.push("a member did not stop".to_owned()),
        }
    }
    errors.extend(shared.errors.lock().drain(..));
    if let Some(path) = &args.ids_out {
        if let Err(e) = write_ids(path, &ids) {
            errors.push(e);
        }
    }
    let delivered = ids.len() as u64;
    ids.sort_unstable();
    ids.dedup();
    let unique = ids.len() as u64;
    let first = shared.first_ns.load(Ordering::Relaxed);
    let last = shared.last_ns.load(Ordering::Relaxed);
    let (from_sub, first_to_last) = if delivered > 0 {
        (
            secs(last.saturating_sub(subscribed_ns)),
            secs(last.saturating_sub(first)),
        )
    } else {
        (0.0, 0.0)
    };
    let rate = |n: u64, s: f64| if s > 0.0 { (n as f64 / s).round() } else { 0.0 };
    super::merge(
        &mut out,
        json!({
            "session_present": session_present,
            "subscribe_secs": round3(secs(subscribed_ns.saturating_sub(start_ns))),
            "delivered": delivered,
            "unique": unique,
            "duplicates": delivered - unique,
            "per_member": per_member,
            "first_delivery_secs": if delivered > 0 { round3(secs(first.saturating_sub(subscribed_ns))) } else { 0.0 },
            "drain_secs": round3(from_sub),
            "drain_rate": rate(delivered, from_sub),
            "drain_rate_first_to_last": rate(delivered, first_to_last),
            "broker_rss_max_kib": rss_max_kib,
            "errors": errors,
        }),
    );
    out
}

/// One drain member: connects, subscribes, records every delivery until `stop`, then sends
/// DISCONNECT. Signals `ready` with Session Present once the SUBACK arrived.
async fn member(
    client_id: String,
    options: MqttOptions,
    filter: String,
    qos: QoS,
    ready: tokio::sync::oneshot::Sender<Result<bool, String>>,
    mut stop: watch::Receiver<bool>,
    shared: Arc<DrainShared>,
) -> Vec<(u64, u32, u64)> {
    let mut seen = Vec::new();
    let (client, mut events) = AsyncClient::new(options, 64);
    no_delay(&mut events);
    let mut ready = Some(ready);
    let mut present = false;
    if let Err(e) = client.subscribe(filter.clone(), qos).await {
        if let Some(tx) = ready.take() {
            let _ = tx.send(Err(format!("{client_id}: subscribe request: {e}")));
        }
        return seen;
    }
    let record = |seen: &mut Vec<(u64, u32, u64)>, payload: &[u8]| {
        if let Some(id) = parse_id(payload) {
            seen.push(id);
            let now = now_ns();
            shared.received.fetch_add(1, Ordering::Relaxed);
            shared.first_ns.fetch_min(now, Ordering::Relaxed);
            shared.last_ns.fetch_max(now, Ordering::Relaxed);
        }
    };
    loop {
        let event = tokio::select! {
            _ = stop.changed() => break,
            e = events.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(c))) => present = c.session_present,
            Ok(Event::Incoming(Packet::Publish(p))) => record(&mut seen, &p.payload),
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                if let Some(tx) = ready.take() {
                    let _ = tx.send(if refused {
                        Err(format!("{client_id}: SUBACK refused `{filter}`"))
                    } else {
                        Ok(present)
                    });
                }
            }
            Ok(_) => {}
            Err(e) => {
                let msg = format!("{client_id}: connection error: {e}");
                match ready.take() {
                    Some(tx) => {
                        let _ = tx.send(Err(msg));
                    }
                    None => shared.errors.lock().push(msg),
                }
                return seen;
            }
        }
    }
    for payload in super::take_buffered_publishes(&mut events) {
        record(&mut seen, &payload);
    }
    for payload in super::goodbye(&client, &mut events).await {
        record(&mut seen, &payload);
    }
    seen
}
