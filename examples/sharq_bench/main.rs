//! `sharq_bench`: an MQTT load generator that drives any broker on a loopback address with real
//! MQTT 3.1.1 or 5 clients (rumqttc) and prints one JSON line per run.
//!
//! ```text
//! cargo run --release --example sharq_bench -- shared --port 1883 --publishers 2 --groups 1 \
//!     --members 4 --qos 1 --payload 64 --messages 200000 --max-secs 10
//! cargo run --release --example sharq_bench -- fanout --port 1883 --subscribers 4 --qos 0
//! ```
//!
//! Every payload carries a run id, the publisher's index, a sequence number and the send time,
//! so the receivers can count what was lost and what arrived twice, and measure latency (send
//! to receipt, both clocks in this process). A run is bounded in messages (`--messages`) and in
//! time (`--max-secs` for publishing, `--drain-secs` waiting for stragglers) and always ends by
//! itself; a broker that misbehaves (refuses a connection, drops it, stops acknowledging) is
//! reported in the JSON line's `errors` rather than aborting the run.
//!
//! Scenarios:
//! - `shared`: P publishers → G groups (`$share/g<k>/<prefix>/#`) × N members each. Each group
//!   should receive every message exactly once (QoS ≥ 1), spread evenly over its members.
//! - `fanout`: P publishers → S plain subscribers of `<prefix>/#`; each subscriber should
//!   receive every message.
//! - `fill` / `drain`: a backlog published with nobody subscribed, and taken down later
//!   (`backlog.rs`).
//! - `handshakes`: connections per second — connect, CONNACK, DISCONNECT, over and over by
//!   concurrent workers (`handshakes.rs`).
//!
//! `--tls-ca FILE` (`shared`, `fanout`, `handshakes`) connects over TLS trusting that CA
//! (`tls.rs`; not used by the `--runs` stress mode). `--protocol 5` runs `shared` and `fanout`
//! over MQTT 5 (`v5.rs`). `--idle-connections` and `--background-subs` add load the run
//! carries without measuring it (`background.rs`), for the scale curves.

use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Args, Parser, Subcommand};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

mod background;
mod backlog;
mod churn_loop;
mod handshakes;
mod idle;
mod procfs;
mod subchurn;
mod tls;
mod v5;

/// Bytes of the header every payload starts with: run id, publisher, sequence, send time.
const HEADER: usize = 28;

#[derive(Debug, Parser)]
#[command(
    name = "sharq_bench",
    about = "MQTT load generator for shared subscriptions"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Publishers → G shared groups × N members.
    Shared {
        #[command(flatten)]
        common: Common,
        /// Shared groups, each subscribed to every message.
        #[arg(long, default_value_t = 1)]
        groups: u32,
        /// Members per group.
        #[arg(long, default_value_t = 4)]
        members: u32,
        /// Each group gets its own topic (`<prefix>/g<k>/#`) and every message goes to one
        /// group (message i to group i mod G), so the delivered total does not grow with G;
        /// the N members are N connections, each a member of every group.
        #[arg(long)]
        group_topics: bool,
        #[command(flatten)]
        churn: ChurnArgs,
    },
    /// Publishers → S plain subscribers, each receiving every message.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 4)]
        subscribers: u32,
    },
    /// Many idle connections: the broker's resident memory per connection.
    Idle(idle::IdleArgs),
    /// Shared subscribes and unsubscribes per second.
    SubChurn(subchurn::SubChurnArgs),
    /// Issue #9's stress, looped: a shared group of clean-session QoS 1 members, one leaving
    /// every 500 ms; every message id must arrive, in every run.
    ChurnLoop(churn_loop::ChurnLoopArgs),
    /// Publishers only: build a backlog (QoS 1 pipelined, PUBACKs counted), e.g. into a
    /// declared group with no member.
    Fill(backlog::FillArgs),
    /// Members that take a backlog down (or `--setup-only`: create persistent sessions).
    Drain(backlog::DrainArgs),
    /// Connections per second: connect (TLS with `--tls-ca`), CONNACK, DISCONNECT, repeated
    /// by concurrent workers.
    Handshakes(handshakes::HandshakesArgs),
}

/// Member churn in the `shared` scenario.
#[derive(Debug, Args, Clone)]
struct ChurnArgs {
    /// Outages while publishing, one member at a time (member i mod N of every group), spread
    /// evenly over the publishing time; needs a fixed `--rate` so that time is known.
    #[arg(long, default_value_t = 0)]
    churn: u32,
    /// How long a churning member stays away, in seconds.
    #[arg(long, default_value_t = 1.0)]
    churn_down_secs: f64,
    /// Members use persistent sessions (clean session = 0) instead of clean ones, so a member
    /// that returns resumes its session.
    #[arg(long)]
    persistent_members: bool,
    /// Stress mode: repeat the churn scenario this many times, each run with a fresh group and
    /// unique message ids, and report every id no member received with the members' last
    /// events (one clean-session group, outages evenly spread; see `churn-loop`).
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// Protocol of the stress mode's clients.
    #[arg(long, value_enum, default_value = "3.1.1")]
    churn_protocol: churn_loop::Protocol,
    /// How a member leaves in the stress mode.
    #[arg(long, value_enum, default_value = "abrupt")]
    churn_leave: churn_loop::Leave,
}

impl ChurnArgs {
    /// `shared --churn N --runs R` as the looped stress (`churn-loop`): N outages spread over
    /// the publishing time become one leave every publishing-time / (N + 1).
    fn as_loop(&self, common: &Common, members: u32) -> Option<churn_loop::ChurnLoopArgs> {
        if self.runs <= 1 || self.churn == 0 || common.rate == 0 {
            return None;
        }
        let publish_ms = common.messages * 1000 / common.rate;
        Some(churn_loop::ChurnLoopArgs {
            host: common.host.clone(),
            port: common.port,
            runs: self.runs,
            protocol: self.churn_protocol,
            disconnect: self.churn_leave,
            members,
            rate: common.rate,
            messages: common.messages,
            churn_ms: (publish_ms / u64::from(self.churn + 1)).max(1),
            down_ms: (self.churn_down_secs * 1000.0) as u64,
            payload: common.payload,
            drain_secs: common.drain_secs,
            work_us: 0,
            stop_on_loss: false,
            label: common.label.clone(),
        })
    }
}

#[derive(Debug, Args, Clone)]
struct Common {
    /// Broker host; must resolve to a loopback address.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    #[arg(long, default_value_t = 1)]
    publishers: u32,
    /// QoS of the publishes and of the subscriptions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload size in bytes (suffix k/K for KiB), at least 28: e.g. 64 or 4k.
    #[arg(long, default_value = "64", value_parser = parse_size)]
    payload: usize,
    /// Messages in total, shared evenly among the publishers.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Target publish rate in messages/s over all publishers; 0 publishes as fast as the
    /// client and broker allow.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Publishing stops after this many seconds even if messages remain.
    #[arg(long, default_value_t = 30.0)]
    max_secs: f64,
    /// After publishing, wait at most this long for acknowledgements, and then for deliveries
    /// while they keep arriving (the wait ends this long after the last one).
    #[arg(long, default_value_t = 3.0)]
    drain_secs: f64,
    /// In-flight window of each client (rumqttc's `inflight`).
    #[arg(long, default_value_t = 100)]
    inflight: u16,
    /// Free text copied into the JSON line (e.g. which broker or config this was).
    #[arg(long, default_value = "")]
    label: String,
    /// Connect with TLS, trusting the CA certificate(s) in this PEM file (`shared`, `fanout`).
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// Topics per publisher: message n of publisher i goes to `<prefix>/p<i>/k<n mod KEYS>`
    /// (for groups with `ordered_by = "topic"`); 0 publishes each publisher on one topic.
    #[arg(long, default_value_t = 0)]
    keys: u64,
    /// MQTT version of every client (3.1.1 or 5). Member churn is 3.1.1 only.
    #[arg(long, value_enum, default_value = "3.1.1")]
    protocol: churn_loop::Protocol,
    #[command(flatten)]
    background: background::BackgroundArgs,
    /// The broker's process id: its CPU time over the measured phase (publishing and the drain,
    /// not the setup of clients, subscriptions and background) is read from /proc and reported
    /// as `broker_cpu_secs_measured`.
    #[arg(long)]
    broker_pid: Option<u32>,
}

/// Share names are `g<k>`, or `<SHARQ_BENCH_GROUP_PREFIX><k>` when that is set, so that
/// concurrent runs can target groups with different strategies (bench/slow_guest.sh).
fn group_name_prefix() -> String {
    std::env::var("SHARQ_BENCH_GROUP_PREFIX").unwrap_or_else(|_| "g".to_owned())
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("KiB") {
        (n, 1024)
    } else if let Some(n) = t.strip_suffix(['k', 'K']) {
        (n, 1024)
    } else {
        (t, 1)
    };
    let n: usize = num
        .trim()
        .parse()
        .map_err(|_| format!("expected a size like 64 or 4k, got `{s}`"))?;
    let n = n * mult;
    if n < HEADER {
        return Err(format!("payload must be at least {HEADER} bytes"));
    }
    Ok(n)
}

fn qos_of(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Nanoseconds since the process's time base; all timestamps in payloads use it.
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// What every client of a run shares.
struct Run {
    host: String,
    port: u16,
    id: u64,
    qos: QoS,
    inflight: u16,
    payload: usize,
    /// Topics per publisher (`--keys`); 0: one.
    keys: u64,
    /// `--group-topics`: the number of groups, each with its own topic; 0: one topic.
    group_topics: u32,
    /// TCP, or TLS with `--tls-ca`.
    transport: rumqttc::Transport,
    /// Deliveries so far, over all receivers.
    received: AtomicU64,
    /// Time of the latest delivery (`now_ns`).
    last_receipt_ns: AtomicU64,
    /// Errors reported by clients, in the order they happened.
    errors: parking_lot::Mutex<Vec<String>>,
}

impl Run {
    fn prefix(&self) -> String {
        format!("sharq-bench/{:016x}", self.id)
    }

    fn options(&self, client_id: String) -> MqttOptions {
        let mut o = MqttOptions::new(client_id, self.host.clone(), self.port);
        o.set_keep_alive(Duration::from_secs(60));
        o.set_clean_session(true);
        o.set_max_packet_size(1 << 20, 1 << 20);
        o.set_inflight(self.inflight.max(1));
        o.set_transport(self.transport.clone());
        o
    }

    fn error(&self, what: String) {
        self.errors.lock().push(what);
    }
}

/// What one receiver saw.
#[derive(Default)]
struct Receipts {
    /// (publisher, sequence) of every valid delivery, duplicates included.
    seen: Vec<(u32, u64)>,
    latencies_ns: Vec<u64>,
    /// Receipt time (`now_ns`) of every valid delivery, in the order of `seen`.
    received_ns: Vec<u64>,
    /// Deliveries whose payload was not ours (another run, or corrupt).
    foreign: u64,
    /// Churn: (connection dropped, SUBACK again) times (`now_ns`) of each outage.
    outages: Vec<(u64, u64)>,
}

/// When a churning member drops its connection and comes back, relative to the publish start.
#[derive(Clone, Copy, Debug)]
struct Outage {
    drop_at: Duration,
    back_at: Duration,
}

/// What a receiver does next, decided outside `select!` so that the arms never need the
/// client or its event loop while a poll future still borrows them.
enum Step {
    Stop,
    Started,
    Drop(Outage),
    Event(Result<Event, rumqttc::ConnectionError>),
}

/// Connects, subscribes and records deliveries until `stop`. Signals `ready` once the SUBACK
/// arrived (or with the error that prevented it). With a churn schedule it drops its
/// connection at each `drop_at` (closing the socket without DISCONNECT, as a crashed worker
/// would) and reconnects with the same client id at `back_at`.
#[allow(clippy::too_many_arguments)]
async fn receiver(
    run: Arc<Run>,
    client_id: String,
    filters: Vec<String>,
    ready: oneshot::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
    mut started: watch::Receiver<Option<Instant>>,
    schedule: Vec<Outage>,
    persistent: bool,
) -> Receipts {
    let mut r = Receipts::default();
    let mut options = run.options(client_id.clone());
    options.set_clean_session(!persistent);
    // Room for every SUBSCRIBE before the event loop first runs.
    let requests = 64 + filters.len();
    let (mut client, mut events) = AsyncClient::new(options.clone(), requests);
    no_delay(&mut events);
    let mut ready = Some(ready);
    let filter = filters.join(" ");
    let mut pending = filters.len();
    if let Err(e) = subscribe_all(&client, &filters, run.qos).await {
        if let Some(tx) = ready.take() {
            let _ = tx.send(Err(format!("{client_id}: subscribe request: {e}")));
        }
        return r;
    }
    let mut schedule = schedule.into_iter();
    let mut next = schedule.next();
    let mut start_at: Option<Instant> = None;
    // Set while reconnecting after an outage: the drop time, until the SUBACK arrives.
    let mut dropped_at: Option<u64> = None;
    loop {
        let due = match (start_at, next) {
            (Some(s), Some(o)) => Some(tokio::time::Instant::from_std(s + o.drop_at)),
            _ => None,
        };
        let step = tokio::select! {
            _ = stop.changed() => Step::Stop,
            _ = started.changed(), if start_at.is_none() => Step::Started,
            _ = sleep_until_opt(due) => match next { Some(o) => Step::Drop(o), None => Step::Stop },
            e = events.poll() => Step::Event(e),
        };
        let event = match step {
            Step::Stop => break,
            Step::Started => {
                start_at = *started.borrow();
                continue;
            }
            Step::Drop(outage) => {
                next = schedule.next();
                let down = now_ns();
                // rumqttc acknowledged what its event loop already read, in a batch, before
                // handing it out one poll at a time: that counts as received, or a broker that
                // did its job would be charged with losing it.
                for payload in take_buffered_publishes(&mut events) {
                    record(&run, &mut r, &payload);
                }
                // Dropping the event loop closes the socket with no DISCONNECT.
                drop(events);
                drop(client);
                if let Some(s) = start_at {
                    let back = tokio::time::Instant::from_std(s + outage.back_at);
                    tokio::select! {
                        _ = stop.changed() => return r,
                        _ = tokio::time::sleep_until(back) => {}
                    }
                }
                (client, events) = AsyncClient::new(options.clone(), requests);
                no_delay(&mut events);
                if let Err(e) = subscribe_all(&client, &filters, run.qos).await {
                    run.error(format!("{client_id}: resubscribe request: {e}"));
                    return r;
                }
                pending = filters.len();
                dropped_at = Some(down);
                continue;
            }
            Step::Event(e) => e,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(p))) => record(&run, &mut r, &p.payload),
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                pending = pending.saturating_sub(1);
                if pending > 0 && !refused {
                    continue;
                }
                if let Some(down) = dropped_at.take() {
                    r.outages.push((down, now_ns()));
                    if refused {
                        run.error(format!("{client_id}: SUBACK refused `{filter}` on return"));
                    }
                }
                if let Some(tx) = ready.take() {
                    let _ = tx.send(if refused {
                        Err(format!("{client_id}: SUBACK refused `{filter}`"))
                    } else {
                        Ok(())
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
                    None => run.error(msg),
                }
                return r;
            }
        }
    }
    for payload in take_buffered_publishes(&mut events) {
        record(&run, &mut r, &payload);
    }
    for payload in goodbye(&client, &mut events).await {
        record(&run, &mut r, &payload);
    }
    r
}

/// One SUBSCRIBE per filter: a receiver of `--group-topics` has one filter per group.
async fn subscribe_all(client: &AsyncClient, filters: &[String], qos: QoS) -> Result<(), String> {
    for f in filters {
        client
            .subscribe(f.clone(), qos)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Records one delivery to a receiver.
fn record(run: &Run, r: &mut Receipts, payload: &[u8]) {
    let now = now_ns();
    match parse(payload, run.id) {
        Some((publisher, seq, sent)) => {
            r.seen.push((publisher, seq));
            r.latencies_ns.push(now.saturating_sub(sent));
            r.received_ns.push(now);
            run.received.fetch_add(1, Ordering::Relaxed);
            run.last_receipt_ns.fetch_max(now, Ordering::Relaxed);
        }
        None => r.foreign += 1,
    }
}

/// PUBLISH payloads the event loop has read (and acknowledged) but `poll` not yet handed out.
fn take_buffered_publishes(events: &mut EventLoop) -> Vec<Bytes> {
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

/// Sleeps until `due`, or forever when there is nothing due.
async fn sleep_until_opt(due: Option<tokio::time::Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Sends DISCONNECT, giving the event loop a moment to write it. Returns the payloads of the
/// PUBLISHes read meanwhile (rumqttc acknowledged them, so they count as received).
async fn goodbye(client: &AsyncClient, events: &mut EventLoop) -> Vec<Bytes> {
    let mut read = Vec::new();
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while let Ok(e) = events.poll().await {
                match e {
                    Event::Outgoing(Outgoing::Disconnect) => break,
                    Event::Incoming(Packet::Publish(p)) => read.push(p.payload),
                    _ => {}
                }
            }
        })
        .await;
    }
    read.extend(take_buffered_publishes(events));
    read
}

fn parse(payload: &[u8], run_id: u64) -> Option<(u32, u64, u64)> {
    if payload.len() < HEADER {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().unwrap());
    if u64_at(0) != run_id {
        return None;
    }
    let publisher = u32::from_le_bytes(payload[8..12].try_into().unwrap());
    Some((publisher, u64_at(12), u64_at(20)))
}

/// One publisher's counters, shared between its publishing loop and its event loop.
#[derive(Default)]
struct PubState {
    /// Publishes handed to the client.
    sent: AtomicU64,
    /// Publishes completed: written (QoS 0), PUBACK (QoS 1) or PUBCOMP (QoS 2) received.
    completed: AtomicU64,
    last_completion_ns: AtomicU64,
    /// The publishing loop finished (all sent, time cap, or the client died).
    done: AtomicBool,
    /// The event loop ended (connection error or stop).
    dead: AtomicBool,
}

impl PubState {
    fn finished(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
            || (self.done.load(Ordering::Relaxed)
                && self.completed.load(Ordering::Relaxed) >= self.sent.load(Ordering::Relaxed))
    }
}

async fn publisher_events(
    run: Arc<Run>,
    client_id: String,
    client: AsyncClient,
    mut events: EventLoop,
    state: Arc<PubState>,
    connected: oneshot::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connected = Some(connected);
    let qos = run.qos;
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
            Ok(Event::Outgoing(Outgoing::Publish(_))) => qos == QoS::AtMostOnce,
            Ok(Event::Incoming(Packet::PubAck(_))) => qos == QoS::AtLeastOnce,
            Ok(Event::Incoming(Packet::PubComp(_))) => qos == QoS::ExactlyOnce,
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
            state.last_completion_ns.store(now_ns(), Ordering::Relaxed);
        }
    }
    state.dead.store(true, Ordering::Relaxed);
    if *stop.borrow() {
        let _ = goodbye(&client, &mut events).await;
    }
}

/// A publisher's client, of either protocol.
#[derive(Clone)]
enum PubClient {
    V4(AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl PubClient {
    async fn publish(&self, topic: String, qos: QoS, payload: Bytes) -> Result<(), String> {
        match self {
            PubClient::V4(c) => c
                .publish_bytes(topic, qos, false, payload)
                .await
                .map_err(|e| e.to_string()),
            PubClient::V5(c) => v5::publish(c, topic, qos, payload).await,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn publish_loop(
    run: Arc<Run>,
    client: PubClient,
    index: u32,
    count: u64,
    rate_per_publisher: f64,
    start: Instant,
    deadline: tokio::time::Instant,
    state: Arc<PubState>,
) {
    let topic = format!("{}/p{index}", run.prefix());
    for seq in 0..count {
        if rate_per_publisher > 0.0 {
            let due = start + Duration::from_secs_f64(seq as f64 / rate_per_publisher);
            let due = tokio::time::Instant::from_std(due);
            if due >= deadline {
                break;
            }
            if due > tokio::time::Instant::now() {
                tokio::time::sleep_until(due).await;
            }
        }
        if tokio::time::Instant::now() >= deadline || state.dead.load(Ordering::Relaxed) {
            break;
        }
        let mut buf = BytesMut::with_capacity(run.payload);
        buf.put_u64_le(run.id);
        buf.put_u32_le(index);
        buf.put_u64_le(seq);
        buf.put_u64_le(now_ns());
        buf.resize(run.payload, 0x5a);
        let payload: Bytes = buf.freeze();
        let topic = match (run.group_topics, run.keys) {
            (0, 0) => topic.clone(),
            (0, keys) => format!("{topic}/k{}", seq % keys),
            (groups, _) => format!("{}/g{}/p{index}", run.prefix(), seq % u64::from(groups)),
        };
        match tokio::time::timeout_at(deadline, client.publish(topic, run.qos, payload)).await {
            Ok(Ok(())) => {
                state.sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                run.error(format!("publisher {index}: publish request failed: {e}"));
                break;
            }
            Err(_) => break, // time cap while the client was backed up
        }
    }
    state.done.store(true, Ordering::Relaxed);
}

/// A receiver's place in the topology: its group (`None` for fanout) and index in it.
struct ReceiverSpec {
    group: Option<u32>,
    index: u32,
    /// Churn: when this receiver drops out and returns.
    outages: Vec<Outage>,
}

struct Topology {
    scenario: &'static str,
    receivers: Vec<ReceiverSpec>,
    /// Receivers each message should reach once: groups for shared, subscribers for fanout.
    copies: u64,
    /// Receivers keep their session across outages.
    persistent: bool,
    /// `--group-topics`: this many groups, each receiver a member of all of them.
    group_topics: u32,
}

/// Percentiles at which the latency CDF is reported: dense in the tail, where brokers differ.
const CDF_POINTS: [f64; 22] = [
    0.0, 1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 97.0, 98.0, 99.0,
    99.5, 99.8, 99.9, 99.95, 99.99, 100.0,
];

fn percentile(sorted: &[u64], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let v = sorted[rank.clamp(1, sorted.len()) - 1];
    json!((v as f64 / 100.0).round() / 10.0) // µs with one decimal
}

fn jain(counts: &[u64]) -> f64 {
    let n = counts.len() as f64;
    let sum: f64 = counts.iter().map(|&c| c as f64).sum();
    let squares: f64 = counts.iter().map(|&c| (c as f64) * (c as f64)).sum();
    if squares == 0.0 {
        0.0
    } else {
        sum * sum / (n * squares)
    }
}

/// Unique and duplicate deliveries of one receiving unit (a group or a fanout subscriber),
/// given how many each publisher sent. Sequence numbers past what was sent count as `bogus`.
fn dedup<'a>(sent: &[u64], seen: impl Iterator<Item = &'a (u32, u64)>) -> (u64, u64, u64) {
    let mut bits: Vec<Vec<u64>> = sent
        .iter()
        .map(|&n| vec![0; n.div_ceil(64) as usize])
        .collect();
    let (mut unique, mut dup, mut bogus) = (0, 0, 0);
    for &(p, s) in seen {
        let Some(b) = bits.get_mut(p as usize) else {
            bogus += 1;
            continue;
        };
        if s >= sent[p as usize] {
            bogus += 1;
            continue;
        }
        let (w, m) = ((s / 64) as usize, 1u64 << (s % 64));
        if b[w] & m != 0 {
            dup += 1;
        } else {
            b[w] |= m;
            unique += 1;
        }
    }
    (unique, dup, bogus)
}

async fn run_scenario(common: Common, topology: Topology, extra: Value) -> Value {
    let mut out = json!({
        "scenario": topology.scenario,
        "label": common.label,
        "broker": format!("{}:{}", common.host, common.port),
        "qos": common.qos,
        "payload_bytes": common.payload,
        "publishers": common.publishers,
        "messages_target": common.messages,
        "rate_target": common.rate,
        "tls": common.tls_ca.is_some(),
        "protocol": if common.protocol == churn_loop::Protocol::V5 { "5" } else { "3.1.1" },
    });
    merge(&mut out, extra);

    if let Err(e) = check_loopback(&common.host, common.port) {
        out["errors"] = json!([e]);
        return out;
    }
    if common.publishers == 0 || topology.receivers.is_empty() {
        out["errors"] = json!(["need at least one publisher and one receiver"]);
        return out;
    }

    let transport = match tls::transport(common.tls_ca.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            out["errors"] = json!([e]);
            return out;
        }
    };
    let run = Arc::new(Run {
        transport,
        host: common.host.clone(),
        port: common.port,
        id: rand::random::<u64>(),
        qos: qos_of(common.qos),
        inflight: common.inflight,
        payload: common.payload,
        keys: common.keys,
        group_topics: topology.group_topics,
        received: AtomicU64::new(0),
        last_receipt_ns: AtomicU64::new(0),
        errors: parking_lot::Mutex::new(Vec::new()),
    });
    let prefix = run.prefix();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (start_tx, start_rx) = watch::channel(None::<Instant>);
    let setup_timeout = Duration::from_secs(10);
    let v5 = common.protocol == churn_loop::Protocol::V5;
    if v5 && topology.receivers.iter().any(|r| !r.outages.is_empty()) {
        out["errors"] = json!(["member churn is measured over MQTT 3.1.1 only"]);
        return out;
    }

    // The background first, so that the run's own clients meet a broker already carrying it.
    let background = match background::start(
        &common.background,
        &common.host,
        common.port,
        &format!("sb-{:08x}", run.id as u32),
        &prefix,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => {
            out["errors"] = json!([format!("background: {e}")]);
            return out;
        }
    };
    merge(&mut out, background.report.clone());

    // Receivers first, each confirmed by its SUBACK.
    let mut receivers: Vec<(ReceiverSpec, JoinHandle<Receipts>)> = Vec::new();
    let mut setup_errors = Vec::new();
    for spec in topology.receivers {
        let (client_id, filters) = match (spec.group, topology.group_topics) {
            (Some(_), groups) if groups > 0 => (
                format!("sb-{:08x}-m{}", run.id as u32, spec.index),
                (0..groups)
                    .map(|g| format!("$share/{}{g}/{prefix}/g{g}/#", group_name_prefix()))
                    .collect(),
            ),
            (Some(g), _) => (
                format!("sb-{:08x}-g{g}-m{}", run.id as u32, spec.index),
                vec![format!("$share/{}{g}/{prefix}/#", group_name_prefix())],
            ),
            (None, _) => (
                format!("sb-{:08x}-s{}", run.id as u32, spec.index),
                vec![format!("{prefix}/#")],
            ),
        };
        let (tx, rx) = oneshot::channel();
        let task = if v5 {
            tokio::spawn(v5::receiver(
                run.clone(),
                client_id.clone(),
                filters,
                tx,
                stop_rx.clone(),
            ))
        } else {
            tokio::spawn(receiver(
                run.clone(),
                client_id.clone(),
                filters,
                tx,
                stop_rx.clone(),
                start_rx.clone(),
                spec.outages.clone(),
                topology.persistent,
            ))
        };
        match tokio::time::timeout(setup_timeout, rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => setup_errors.push(e),
            _ => setup_errors.push(format!("{client_id}: no SUBACK within {setup_timeout:?}")),
        }
        receivers.push((spec, task));
    }

    // Publishers, each confirmed by its CONNACK.
    let per_publisher = common.messages / common.publishers as u64;
    let remainder = common.messages % common.publishers as u64;
    let mut publishers = Vec::new();
    for i in 0..common.publishers {
        let client_id = format!("sb-{:08x}-p{i}", run.id as u32);
        let state = Arc::new(PubState::default());
        let (tx, rx) = oneshot::channel();
        let (client, task) = if v5 {
            let (client, events) = v5::client(&run, client_id.clone(), 1024);
            let task = tokio::spawn(v5::publisher_events(
                run.clone(),
                client_id.clone(),
                client.clone(),
                events,
                state.clone(),
                tx,
                stop_rx.clone(),
            ));
            (PubClient::V5(client), task)
        } else {
            let (client, mut events) = AsyncClient::new(run.options(client_id.clone()), 1024);
            no_delay(&mut events);
            let task = tokio::spawn(publisher_events(
                run.clone(),
                client_id.clone(),
                client.clone(),
                events,
                state.clone(),
                tx,
                stop_rx.clone(),
            ));
            (PubClient::V4(client), task)
        };
        match tokio::time::timeout(setup_timeout, rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => setup_errors.push(e),
            _ => setup_errors.push(format!("{client_id}: no CONNACK within {setup_timeout:?}")),
        }
        let count = per_publisher + u64::from((i as u64) < remainder);
        publishers.push((client, state, task, count));
    }

    let mut published_secs = 0.0;
    let start_ns;
    let mut sent: Vec<u64> = vec![0; publishers.len()];
    let cpu_at_start = common.broker_pid.and_then(procfs::cpu_secs);
    if setup_errors.is_empty() {
        // Publish.
        start_ns = now_ns();
        let start = Instant::now();
        let _ = start_tx.send(Some(start));
        let deadline =
            tokio::time::Instant::from_std(start + Duration::from_secs_f64(common.max_secs));
        let rate_per_publisher = common.rate as f64 / common.publishers as f64;
        let mut loops = Vec::new();
        for (i, (client, state, _, count)) in publishers.iter().enumerate() {
            loops.push(tokio::spawn(publish_loop(
                run.clone(),
                client.clone(),
                i as u32,
                *count,
                rate_per_publisher,
                start,
                deadline,
                state.clone(),
            )));
        }
        for l in loops {
            let _ = l.await;
        }
        // Wait for the acknowledgements of what was sent.
        let ack_deadline = Instant::now() + Duration::from_secs_f64(common.drain_secs);
        while !publishers.iter().all(|(_, s, _, _)| s.finished()) && Instant::now() < ack_deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for (i, (_, s, _, _)) in publishers.iter().enumerate() {
            sent[i] = s.sent.load(Ordering::Relaxed);
            let completed = s.completed.load(Ordering::Relaxed);
            if completed < sent[i] {
                run.error(format!(
                    "publisher {i}: {} of {} publishes not acknowledged",
                    sent[i] - completed,
                    sent[i]
                ));
            }
        }
        let last = publishers
            .iter()
            .map(|(_, s, _, _)| s.last_completion_ns.load(Ordering::Relaxed))
            .max()
            .unwrap_or(start_ns);
        published_secs = secs(last.saturating_sub(start_ns));

        // Wait for deliveries while they keep coming.
        let expected = sent.iter().sum::<u64>() * topology.copies;
        let mut last_count = run.received.load(Ordering::Relaxed);
        let mut last_progress = Instant::now();
        let idle = Duration::from_secs_f64(common.drain_secs);
        loop {
            let n = run.received.load(Ordering::Relaxed);
            if n >= expected {
                break;
            }
            if n != last_count {
                last_count = n;
                last_progress = Instant::now();
            } else if last_progress.elapsed() >= idle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    } else {
        start_ns = now_ns();
    }

    let broker_cpu = match (cpu_at_start, common.broker_pid.and_then(procfs::cpu_secs)) {
        (Some(a), Some(b)) => json!(round3(b - a)),
        _ => Value::Null,
    };
    // Stop everyone and collect; the background goes last, after the run's own clients.
    let _ = stop_tx.send(true);
    for (_, _, task, _) in publishers {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    let mut results: Vec<(ReceiverSpec, Receipts)> = Vec::new();
    for (spec, task) in receivers {
        match tokio::time::timeout(Duration::from_secs(2), task).await {
            Ok(Ok(r)) => results.push((spec, r)),
            _ => setup_errors.push(format!("receiver {} did not stop", spec.index)),
        }
    }

    drop(background);

    // Statistics.
    let total_sent: u64 = sent.iter().sum();
    let delivered: u64 = results.iter().map(|(_, r)| r.seen.len() as u64).sum();
    let foreign: u64 = results.iter().map(|(_, r)| r.foreign).sum();
    let last_receipt = run.last_receipt_ns.load(Ordering::Relaxed);
    let delivered_secs = secs(last_receipt.saturating_sub(start_ns));
    let mut units: Vec<Value> = Vec::new();
    let (mut unique_all, mut dup_all, mut bogus_all, mut lost_all) = (0, 0, 0, 0);
    let mut jains = Vec::new();
    let mut churn_events: Vec<Value> = Vec::new();
    if topology.scenario == "shared" {
        let groups: std::collections::BTreeSet<u32> =
            results.iter().filter_map(|(s, _)| s.group).collect();
        for g in groups {
            let members: Vec<&Receipts> = results
                .iter()
                .filter(|(s, _)| s.group == Some(g))
                .map(|(_, r)| r)
                .collect();
            let counts: Vec<u64> = members.iter().map(|r| r.seen.len() as u64).collect();
            let (unique, dup, bogus) = dedup(&sent, members.iter().flat_map(|r| r.seen.iter()));
            let lost = total_sent - unique;
            let j = jain(&counts);
            jains.push(j);
            (unique_all, dup_all, bogus_all, lost_all) = (
                unique_all + unique,
                dup_all + dup,
                bogus_all + bogus,
                lost_all + lost,
            );
            let outages = churn_report(&members, common.rate as f64);
            churn_events.extend(outages.iter().cloned());
            units.push(json!({
                "group": format!("g{g}"), "per_member": counts, "jain": round3(j),
                "unique": unique, "lost": lost, "duplicates": dup, "outages": outages,
            }));
        }
    } else {
        let counts: Vec<u64> = results.iter().map(|(_, r)| r.seen.len() as u64).collect();
        for (_, r) in &results {
            let (unique, dup, bogus) = dedup(&sent, r.seen.iter());
            (unique_all, dup_all, bogus_all, lost_all) = (
                unique_all + unique,
                dup_all + dup,
                bogus_all + bogus,
                lost_all + (total_sent - unique),
            );
        }
        jains.push(jain(&counts));
        units.push(json!({ "per_subscriber": counts, "jain": round3(jain(&counts)) }));
    }
    let mut latencies: Vec<u64> = results
        .iter()
        .flat_map(|(_, r)| r.latencies_ns.iter().copied())
        .collect();
    latencies.sort_unstable();

    let mut errors = setup_errors;
    errors.extend(run.errors.lock().drain(..));
    if foreign > 0 {
        errors.push(format!(
            "{foreign} deliveries with a payload not from this run"
        ));
    }
    if bogus_all > 0 {
        errors.push(format!(
            "{bogus_all} deliveries with a sequence number never sent"
        ));
    }
    let rate = |n: u64, s: f64| if s > 0.0 { (n as f64 / s).round() } else { 0.0 };
    merge(
        &mut out,
        json!({
            "published": total_sent,
            "publish_secs": round3(published_secs),
            "publish_rate": rate(total_sent, published_secs),
            "expected": total_sent * topology.copies,
            "delivered": delivered,
            "unique": unique_all,
            "lost": lost_all,
            "duplicates": dup_all,
            "delivered_secs": round3(delivered_secs),
            "delivered_rate": rate(delivered, delivered_secs),
            "broker_cpu_secs_measured": broker_cpu,
            "jain_min": jains.iter().copied().reduce(f64::min).map(round3),
            "units": units,
            "churn": churn_summary(&churn_events),
            "latency_cdf_us": CDF_POINTS
                .iter()
                .map(|&p| json!([p, percentile(&latencies, p)]))
                .collect::<Vec<_>>(),
            "latency_us": {
                "samples": latencies.len(),
                "p50": percentile(&latencies, 50.0),
                "p90": percentile(&latencies, 90.0),
                "p99": percentile(&latencies, 99.0),
                "p99.9": percentile(&latencies, 99.9),
                "max": percentile(&latencies, 100.0),
            },
            "errors": errors,
        }),
    );
    out
}

/// Length of the window over which "full rate" is judged after a member returns.
const WINDOW_NS: u64 = 100_000_000;

/// For each outage of a member of one group: when the member got its first message after its
/// SUBACK, and when the group was back to full rate — the first 100 ms window (sliding in 10 ms
/// steps) from the return on in which the group received ≥ 90 % of the publish rate and the
/// returning member ≥ 50 % of its fair share. `rate` is the publish rate per group (0: the
/// group's mean rate over the run stands in).
fn churn_report(members: &[&Receipts], rate: f64) -> Vec<Value> {
    let mut group: Vec<u64> = members
        .iter()
        .flat_map(|r| r.received_ns.iter().copied())
        .collect();
    group.sort_unstable();
    let rate = if rate > 0.0 {
        rate
    } else {
        match (group.first(), group.last()) {
            (Some(&a), Some(&b)) if b > a => group.len() as f64 / secs(b - a),
            _ => 0.0,
        }
    };
    let in_window = |times: &[u64], t: u64| {
        let a = times.partition_point(|&x| x < t);
        let b = times.partition_point(|&x| x < t + WINDOW_NS);
        (b - a) as f64
    };
    let window_secs = secs(WINDOW_NS);
    let group_needed = 0.9 * rate * window_secs;
    let member_needed = 0.5 * rate / members.len().max(1) as f64 * window_secs;
    let last = group.last().copied().unwrap_or(0);
    let mut out = Vec::new();
    for (m, r) in members.iter().enumerate() {
        let mut own = r.received_ns.clone();
        own.sort_unstable();
        for &(down, back) in &r.outages {
            let first = own.iter().find(|&&t| t >= back).map(|&t| t - back);
            let mut full = None;
            let mut t = back;
            while t + WINDOW_NS <= last {
                if in_window(&group, t) >= group_needed && in_window(&own, t) >= member_needed {
                    full = Some(t - back);
                    break;
                }
                t += 10_000_000;
            }
            // The longest the whole group went without a delivery from the drop until 1 s
            // after the return: a broker that stalls the group on a member failure shows here.
            let a = group.partition_point(|&x| x < down);
            let b = group.partition_point(|&x| x < back + 1_000_000_000);
            let gap = group[a..b]
                .windows(2)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or(0);
            out.push(json!({
                "member": m,
                "down_ms": round3((back - down) as f64 / 1e6),
                "max_group_gap_ms": round3(gap as f64 / 1e6),
                "first_delivery_ms": first.map(|f| round3(f as f64 / 1e6)),
                "full_rate_ms": full.map(|f| round3(f as f64 / 1e6)),
            }));
        }
    }
    out
}

/// The worst recovery over all outages, or `null` when there were none.
fn churn_summary(events: &[Value]) -> Value {
    if events.is_empty() {
        return Value::Null;
    }
    let worst = |key: &str| {
        // An outage after which the group never got back to full rate counts as unrecovered.
        let vals: Vec<Option<f64>> = events.iter().map(|e| e[key].as_f64()).collect();
        if vals.iter().any(Option::is_none) {
            Value::Null
        } else {
            json!(vals.into_iter().flatten().fold(0.0, f64::max))
        }
    };
    json!({
        "outages": events.len(),
        "max_first_delivery_ms": worst("first_delivery_ms"),
        "max_full_rate_ms": worst("full_rate_ms"),
        "max_group_gap_ms": worst("max_group_gap_ms"),
        "unrecovered": events.iter().filter(|e| e["full_rate_ms"].is_null()).count(),
    })
}

/// Turns Nagle's algorithm off on a client's socket, as both brokers do on theirs. rumqttc
/// leaves it on, which holds small QoS 0 publishes back for milliseconds (p50 ≈ 14 ms at
/// 10k msg/s on both brokers alike) and would be reported as broker latency.
fn no_delay(events: &mut EventLoop) {
    let mut network = events.network_options();
    network.set_tcp_nodelay(true);
    events.set_network_options(network);
}

/// Loopback only: this tool floods whatever it is pointed at.
fn check_loopback(host: &str, port: u16) -> Result<(), String> {
    let loopback = (host, port)
        .to_socket_addrs()
        .map(|mut addrs| addrs.all(|a| a.ip().is_loopback()))
        .unwrap_or(false);
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "{host} does not resolve to loopback addresses only; refusing to run"
        ))
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    now_ns(); // fix the time base
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    let out = match cli.scenario {
        Scenario::Shared {
            common,
            groups,
            members,
            group_topics,
            churn,
        } => match (
            churn.as_loop(&common, members),
            churn_schedule(&common, &churn, members),
        ) {
            (Some(stress), _) => runtime.block_on(churn_loop::run(stress)),
            (None, Err(e)) => {
                json!({ "scenario": "shared", "label": common.label, "errors": [e] })
            }
            (None, Ok(schedule)) => {
                // With group topics the members are shared by all groups, and each message
                // reaches one group: one unit to count losses and duplicates over.
                let receiver_groups = if group_topics { 1 } else { groups };
                let receivers = (0..receiver_groups)
                    .flat_map(|g| {
                        let schedule = &schedule;
                        (0..members).map(move |m| ReceiverSpec {
                            group: Some(g),
                            index: m,
                            outages: schedule[m as usize].clone(),
                        })
                    })
                    .collect();
                let topology = Topology {
                    scenario: "shared",
                    receivers,
                    copies: receiver_groups as u64,
                    persistent: churn.persistent_members,
                    group_topics: if group_topics { groups } else { 0 },
                };
                let extra = json!({
                    "groups": groups, "members": members, "group_topics": group_topics,
                    "churn_outages": churn.churn,
                    "churn_down_secs": churn.churn_down_secs,
                    "persistent_members": churn.persistent_members,
                });
                runtime.block_on(run_scenario(common, topology, extra))
            }
        },
        Scenario::Fanout {
            common,
            subscribers,
        } => {
            let topology = Topology {
                scenario: "fanout",
                receivers: (0..subscribers)
                    .map(|i| ReceiverSpec {
                        group: None,
                        index: i,
                        outages: Vec::new(),
                    })
                    .collect(),
                copies: subscribers as u64,
                persistent: false,
                group_topics: 0,
            };
            let extra = json!({ "subscribers": subscribers });
            runtime.block_on(run_scenario(common, topology, extra))
        }
        Scenario::Idle(args) => runtime.block_on(idle::run(args)),
        Scenario::SubChurn(args) => runtime.block_on(subchurn::run(args)),
        Scenario::ChurnLoop(args) => runtime.block_on(churn_loop::run(args)),
        Scenario::Fill(args) => runtime.block_on(backlog::fill(args)),
        Scenario::Drain(args) => runtime.block_on(backlog::drain(args)),
        Scenario::Handshakes(args) => runtime.block_on(handshakes::run(args)),
    };
    let failed = out["errors"].as_array().is_some_and(|e| !e.is_empty());
    println!("{out}");
    // Don't wait for stragglers (a client stuck on a broker that stopped answering).
    runtime.shutdown_timeout(Duration::from_secs(1));
    if failed {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// Outages per member index: outage i hits member i mod N at (i + 1) / (churn + 1) of the
/// publishing time, which a fixed rate makes known in advance.
fn churn_schedule(
    common: &Common,
    churn: &ChurnArgs,
    members: u32,
) -> Result<Vec<Vec<Outage>>, String> {
    let mut schedule = vec![Vec::new(); members as usize];
    if churn.churn == 0 {
        return Ok(schedule);
    }
    if common.rate == 0 || members < 2 {
        return Err("--churn needs a fixed --rate and at least 2 members".into());
    }
    if !(churn.churn_down_secs.is_finite() && churn.churn_down_secs >= 0.0) {
        return Err("--churn-down-secs must be a non-negative number".into());
    }
    let publish_secs = (common.messages as f64 / common.rate as f64).min(common.max_secs);
    for i in 0..churn.churn {
        let at = publish_secs * f64::from(i + 1) / f64::from(churn.churn + 1);
        schedule[(i % members) as usize].push(Outage {
            drop_at: Duration::from_secs_f64(at),
            back_at: Duration::from_secs_f64(at + churn.churn_down_secs),
        });
    }
    Ok(schedule)
}
