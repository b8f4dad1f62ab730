//! `churn-loop`: issue #9's stress test, looped. One shared group of clean-session QoS 1 members
//! (4 by default) receives a steady stream (5k msg/s by default) while one member after the
//! other leaves every 500 ms — dropping its socket (`--disconnect abrupt`) or sending
//! DISCONNECT (`--disconnect clean`) — and comes straight back with the same client id. Every
//! message carries a unique id; after each run every id the broker acknowledged to the
//! publisher must have reached some member. MQTT 3.1.1 or 5 (`--protocol`).
//!
//! ```text
//! cargo run --example sharq_bench -- churn-loop --port 1883 --runs 100 --protocol 3.1.1 \
//!     --disconnect abrupt
//! ```
//!
//! One JSON line per run, then a summary line; the exit status is 1 if any run lost a message.
//! A run that lost messages lists each lost id with what the tool knows around it: when it was
//! published and acknowledged, which members received its neighbours, and every member's
//! connection events (connect, CONNACK, SUBACK, drop/DISCONNECT, errors) around that time.
//!
//! The tool must not lose messages itself. rumqttc acknowledges a QoS 1 PUBLISH as soon as its
//! event loop has read it: a read of several packets is acknowledged as a batch, and the
//! PUBLISH events wait in `EventLoop::state.events` for the application to poll them. A member
//! that leaves therefore first takes what its event loop already read (and, leaving cleanly,
//! what it reads until DISCONNECT is out) and counts it as received: the broker was told these
//! arrived. Such receipts are reported apart (`via_buffer`), and `naive_lost` counts the ids
//! that *only* arrived that way — what a tool that simply drops its event loop would have
//! reported as lost.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Args, ValueEnum};
use parking_lot::Mutex;
use rumqttc::v5::mqttbytes::v5 as p5;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

use super::{check_loopback, now_ns, round3};

/// Payload header: run id, message id, send time (`now_ns`).
const HEADER: usize = 24;
/// Lost ids described in detail per run; the rest are only listed.
const DETAILED_LOSSES: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    #[value(name = "3.1.1")]
    V311,
    #[value(name = "5")]
    V5,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Leave {
    /// Close the socket without DISCONNECT, as a crashed worker would.
    Abrupt,
    /// Send DISCONNECT (normal disconnection), then close.
    Clean,
}

#[derive(Debug, Args, Clone)]
pub struct ChurnLoopArgs {
    /// Broker host; must resolve to loopback addresses only.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Runs, each with a fresh group, fresh client ids and a fresh id space.
    #[arg(long, default_value_t = 100)]
    pub runs: u32,
    #[arg(long, value_enum, default_value = "3.1.1")]
    pub protocol: Protocol,
    /// How a churning member leaves.
    #[arg(long, value_enum, default_value = "abrupt")]
    pub disconnect: Leave,
    /// Members of the group (clean sessions, QoS 1).
    #[arg(long, default_value_t = 4)]
    pub members: u32,
    /// Publish rate, messages/s.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Messages per run (their count over the rate is the run's publishing time).
    #[arg(long, default_value_t = 15_000)]
    pub messages: u64,
    /// A member leaves every this many milliseconds while publishing (members take turns).
    #[arg(long, default_value_t = 500)]
    pub churn_ms: u64,
    /// How long a member stays away before reconnecting, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub down_ms: u64,
    /// Payload bytes (at least 24).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// After publishing, wait this long without progress for acknowledgements and deliveries.
    #[arg(long, default_value_t = 3.0)]
    pub drain_secs: f64,
    /// Work each member does per message it polls, in microseconds (a busy wait, as an
    /// application's processing would be): a slower consumer lets rumqttc read, and
    /// acknowledge, several messages ahead of what it has handed out.
    #[arg(long, default_value_t = 0)]
    pub work_us: u64,
    /// Stop after the first run that lost a message.
    #[arg(long)]
    pub stop_on_loss: bool,
    /// Free text copied into every JSON line.
    #[arg(long, default_value = "")]
    pub label: String,
}

// ---------------------------------------------------------------------------------------------
// One client, MQTT 3.1.1 or 5, reduced to the events this tool needs.

enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

enum Events {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// The events the tool acts on, for either protocol.
#[derive(Debug)]
enum Ev {
    ConnAck(bool),
    SubAck(bool),
    Publish(Bytes),
    /// PUBACK for one of our publishes; false when the broker reported no matching subscriber.
    PubAck(u16, bool),
    /// Our PUBLISH with this packet id went out (in request order).
    OutPublish(u16),
    OutDisconnect,
    Other,
}

fn connection(
    protocol: Protocol,
    host: &str,
    port: u16,
    client_id: String,
    inflight: u16,
    requests: usize,
) -> (Client, Events) {
    match protocol {
        Protocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(client_id, host, port);
            o.set_keep_alive(Duration::from_secs(60));
            o.set_clean_session(true);
            o.set_inflight(inflight.max(1));
            o.set_max_packet_size(1 << 20, 1 << 20);
            let (client, mut events) = rumqttc::AsyncClient::new(o, requests);
            let mut network = events.network_options();
            network.set_tcp_nodelay(true);
            events.set_network_options(network);
            (Client::V4(client), Events::V4(Box::new(events)))
        }
        Protocol::V5 => {
            let mut o = rumqttc::v5::MqttOptions::new(client_id, host, port);
            o.set_keep_alive(Duration::from_secs(60));
            o.set_clean_start(true);
            o.set_outgoing_inflight_upper_limit(inflight.max(1));
            o.set_max_packet_size(Some(1 << 20));
            let mut network = o.network_options();
            network.set_tcp_nodelay(true);
            o.set_network_options(network);
            let (client, events) = rumqttc::v5::AsyncClient::new(o, requests);
            (Client::V5(client), Events::V5(Box::new(events)))
        }
    }
}

impl Client {
    async fn subscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .subscribe(filter, p5_qos1())
                .await
                .map_err(|e| e.to_string()),
        }
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .publish_bytes(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .publish_bytes(topic, p5_qos1(), false, payload)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    fn try_disconnect(&self) -> bool {
        match self {
            Client::V4(c) => c.try_disconnect().is_ok(),
            Client::V5(c) => c.try_disconnect().is_ok(),
        }
    }
}

fn p5_qos1() -> rumqttc::v5::mqttbytes::QoS {
    rumqttc::v5::mqttbytes::QoS::AtLeastOnce
}

fn ev4(e: rumqttc::Event) -> Ev {
    use rumqttc::{Event, Outgoing, Packet};
    match e {
        Event::Incoming(Packet::ConnAck(c)) => {
            Ev::ConnAck(c.code == rumqttc::ConnectReturnCode::Success)
        }
        Event::Incoming(Packet::SubAck(s)) => Ev::SubAck(
            !s.return_codes
                .iter()
                .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)),
        ),
        Event::Incoming(Packet::Publish(p)) => Ev::Publish(p.payload),
        Event::Incoming(Packet::PubAck(a)) => Ev::PubAck(a.pkid, true),
        Event::Outgoing(Outgoing::Publish(pkid)) => Ev::OutPublish(pkid),
        Event::Outgoing(Outgoing::Disconnect) => Ev::OutDisconnect,
        _ => Ev::Other,
    }
}

fn ev5(e: rumqttc::v5::Event) -> Ev {
    use rumqttc::v5::Event;
    use rumqttc::Outgoing;
    match e {
        Event::Incoming(p5::Packet::ConnAck(c)) => {
            Ev::ConnAck(c.code == p5::ConnectReturnCode::Success)
        }
        Event::Incoming(p5::Packet::SubAck(s)) => Ev::SubAck(
            s.return_codes
                .iter()
                .all(|c| matches!(c, p5::SubscribeReasonCode::Success(_))),
        ),
        Event::Incoming(p5::Packet::Publish(p)) => Ev::Publish(p.payload),
        Event::Incoming(p5::Packet::PubAck(a)) => {
            Ev::PubAck(a.pkid, a.reason != p5::PubAckReason::NoMatchingSubscribers)
        }
        Event::Outgoing(Outgoing::Publish(pkid)) => Ev::OutPublish(pkid),
        Event::Outgoing(Outgoing::Disconnect) => Ev::OutDisconnect,
        _ => Ev::Other,
    }
}

impl Events {
    async fn poll(&mut self) -> Result<Ev, String> {
        match self {
            Events::V4(e) => e.poll().await.map(ev4).map_err(|e| e.to_string()),
            Events::V5(e) => e.poll().await.map(ev5).map_err(|e| e.to_string()),
        }
    }

    /// Events the event loop has already produced (and, for PUBLISH, acknowledged) but not
    /// yet handed out by `poll`.
    fn take_buffered(&mut self) -> Vec<Ev> {
        match self {
            Events::V4(e) => e.state.events.drain(..).map(ev4).collect(),
            Events::V5(e) => e.state.events.drain(..).map(ev5).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A run.

/// How a member got a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Polled from the event loop while connected.
    Poll,
    /// Already read (and acknowledged) by the event loop when the member left: taken from its
    /// buffer, or read while its DISCONNECT was going out.
    Buffer,
}

struct Receipt {
    id: u64,
    incarnation: u32,
    via: Via,
}

/// What one member saw over the run.
#[derive(Default)]
struct MemberLog {
    receipts: Vec<Receipt>,
    /// (time `now_ns`, incarnation, what happened).
    events: Vec<(u64, u32, String)>,
    leaves: u32,
}

enum Command {
    Leave,
    Stop,
}

/// What every task of one run shares.
struct RunCtx {
    args: ChurnLoopArgs,
    id: u64,
    filter: String,
    topic: String,
    /// Ids received so far (any member, any way); the drain phase waits on it.
    seen: Mutex<Vec<bool>>,
    unique: AtomicU64,
    last_progress_ns: AtomicU64,
}

impl RunCtx {
    fn record(&self, log: &mut MemberLog, payload: &[u8], incarnation: u32, via: Via) {
        let Some(id) = parse(payload, self.id) else {
            log.events
                .push((now_ns(), incarnation, "foreign payload".into()));
            return;
        };
        log.receipts.push(Receipt {
            id,
            incarnation,
            via,
        });
        let mut seen = self.seen.lock();
        if let Some(slot) = seen.get_mut(id as usize) {
            if !*slot {
                *slot = true;
                self.unique.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.last_progress_ns.store(now_ns(), Ordering::Relaxed);
    }
}

fn parse(payload: &[u8], run_id: u64) -> Option<u64> {
    let word = |i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(payload.get(i..i + 8)?.try_into().ok()?))
    };
    (word(0)? == run_id).then_some(())?;
    word(8)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Leave,
    Stop,
    Failed,
}

/// What a member does next; decided outside `select!` so its arms never hold the event loop.
enum Step {
    Command(Option<Command>),
    Event(Result<Ev, String>),
}

/// One member: connects, subscribes, records, and leaves/returns on command. Reports the first
/// SUBACK on `ready`.
async fn member(
    run: Arc<RunCtx>,
    index: u32,
    mut commands: mpsc::UnboundedReceiver<Command>,
    ready: oneshot::Sender<Result<(), String>>,
) -> MemberLog {
    let args = &run.args;
    let client_id = format!("cl-{:08x}-m{index}", run.id as u32);
    let mut log = MemberLog::default();
    let mut ready = Some(ready);
    let mut incarnation = 0;
    loop {
        incarnation += 1;
        log.events.push((now_ns(), incarnation, "connect".into()));
        let (client, mut events) = connection(
            args.protocol,
            &args.host,
            args.port,
            client_id.clone(),
            100,
            64,
        );
        if let Err(e) = client.subscribe(&run.filter).await {
            log.events
                .push((now_ns(), incarnation, format!("subscribe request: {e}")));
            return log;
        }
        // Until told to leave or stop, or the connection fails.
        let outcome = loop {
            let step = tokio::select! {
                biased;
                c = commands.recv() => Step::Command(c),
                e = events.poll() => Step::Event(e),
            };
            match step {
                Step::Command(Some(Command::Leave)) => break Outcome::Leave,
                Step::Command(Some(Command::Stop) | None) => break Outcome::Stop,
                Step::Event(Ok(Ev::Publish(payload))) => {
                    run.record(&mut log, &payload, incarnation, Via::Poll);
                    if args.work_us > 0 {
                        let until = Instant::now() + Duration::from_micros(args.work_us);
                        while Instant::now() < until {
                            std::hint::spin_loop();
                        }
                    }
                }
                Step::Event(Ok(Ev::ConnAck(ok))) => {
                    log.events.push((
                        now_ns(),
                        incarnation,
                        if ok { "connack" } else { "connack refused" }.into(),
                    ));
                }
                Step::Event(Ok(Ev::SubAck(ok))) => {
                    log.events.push((
                        now_ns(),
                        incarnation,
                        if ok { "suback" } else { "suback refused" }.into(),
                    ));
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(if ok {
                            Ok(())
                        } else {
                            Err(format!("{client_id}: SUBACK refused"))
                        });
                    }
                }
                Step::Event(Ok(_)) => {}
                Step::Event(Err(e)) => {
                    // The broker closed us or the connection failed: note it and reconnect
                    // (what the event loop had read before counts, as for a leave).
                    log.events
                        .push((now_ns(), incarnation, format!("connection error: {e}")));
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(Err(format!("{client_id}: {e}")));
                        return log;
                    }
                    break Outcome::Failed;
                }
            }
        };
        // Leaving: first everything the event loop already read, then (clean) DISCONNECT.
        let mut buffered = 0;
        for ev in events.take_buffered() {
            if let Ev::Publish(payload) = ev {
                buffered += 1;
                run.record(&mut log, &payload, incarnation, Via::Buffer);
            }
        }
        let stop = outcome == Outcome::Stop;
        let clean = stop || (outcome == Outcome::Leave && args.disconnect == Leave::Clean);
        let mut how = match outcome {
            Outcome::Failed => "connection failed",
            _ => "socket dropped",
        };
        if clean && client.try_disconnect() {
            how = "DISCONNECT not confirmed";
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            while let Ok(Ok(ev)) = tokio::time::timeout_at(deadline, events.poll()).await {
                match ev {
                    Ev::Publish(payload) => {
                        buffered += 1;
                        run.record(&mut log, &payload, incarnation, Via::Buffer);
                    }
                    Ev::OutDisconnect => {
                        how = "DISCONNECT sent";
                        break;
                    }
                    _ => {}
                }
            }
            for ev in events.take_buffered() {
                if let Ev::Publish(payload) = ev {
                    buffered += 1;
                    run.record(&mut log, &payload, incarnation, Via::Buffer);
                }
            }
        }
        drop(events);
        drop(client);
        log.events.push((
            now_ns(),
            incarnation,
            format!("{how} ({buffered} read but not yet polled)"),
        ));
        if stop {
            return log;
        }
        if outcome == Outcome::Leave {
            log.leaves += 1;
        }
        if args.down_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.down_ms)).await;
        }
    }
}

/// The publisher's view: when each id was sent and acknowledged.
#[derive(Default)]
struct PubLog {
    sent_ns: Vec<u64>,
    acked_ns: Vec<Option<u64>>,
    /// Ids handed to the client whose PUBLISH has not gone out yet, in order.
    requested: VecDeque<u64>,
    /// Packet id → message id of PUBLISHes awaiting PUBACK.
    in_flight: BTreeMap<u16, u64>,
    acked: u64,
    no_subscribers: u64,
    errors: Vec<String>,
}

async fn publisher_events(
    mut events: Events,
    log: Arc<Mutex<PubLog>>,
    connected: oneshot::Sender<Result<(), String>>,
    mut done: watch::Receiver<bool>,
) -> Events {
    let mut connected = Some(connected);
    loop {
        // `poll` is only cancelled once the run is over: cancelled while writing a request, it
        // could leave a PUBLISH unsent.
        let ev = tokio::select! {
            _ = done.changed() => break,
            ev = events.poll() => ev,
        };
        match ev {
            Ok(Ev::ConnAck(ok)) => {
                if let Some(tx) = connected.take() {
                    let _ = tx.send(if ok {
                        Ok(())
                    } else {
                        Err("publisher: CONNACK refused".into())
                    });
                }
            }
            Ok(Ev::OutPublish(pkid)) => {
                let mut log = log.lock();
                if let Some(id) = log.requested.pop_front() {
                    log.in_flight.insert(pkid, id);
                }
            }
            Ok(Ev::PubAck(pkid, matched)) => {
                let mut log = log.lock();
                if let Some(id) = log.in_flight.remove(&pkid) {
                    if let Some(slot) = log.acked_ns.get_mut(id as usize) {
                        *slot = Some(now_ns());
                    }
                    log.acked += 1;
                    if !matched {
                        log.no_subscribers += 1;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                let msg = format!("publisher: connection error: {e}");
                match connected.take() {
                    Some(tx) => {
                        let _ = tx.send(Err(msg));
                    }
                    None => log.lock().errors.push(msg),
                }
                break;
            }
        }
    }
    events
}

async fn publish_loop(run: Arc<RunCtx>, client: Arc<Client>, log: Arc<Mutex<PubLog>>) {
    let args = &run.args;
    let start = Instant::now();
    for id in 0..args.messages {
        let due = start + Duration::from_secs_f64(id as f64 / args.rate.max(1) as f64);
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        let mut buf = BytesMut::with_capacity(args.payload.max(HEADER));
        buf.put_u64_le(run.id);
        buf.put_u64_le(id);
        let sent = now_ns();
        buf.put_u64_le(sent);
        buf.resize(args.payload.max(HEADER), 0x5a);
        {
            let mut log = log.lock();
            log.sent_ns.push(sent);
            log.acked_ns.push(None);
            log.requested.push_back(id);
        }
        if let Err(e) = client.publish(&run.topic, buf.freeze()).await {
            let mut log = log.lock();
            log.requested.pop_back();
            log.sent_ns.pop();
            log.acked_ns.pop();
            log.errors.push(format!("publish request: {e}"));
            return;
        }
    }
}

fn ms(ns: u64, base: u64) -> f64 {
    round3((ns as f64 - base as f64) / 1e6)
}

async fn one_run(args: &ChurnLoopArgs, index: u32) -> Value {
    let id = rand::random::<u64>();
    let prefix = format!("sharq-churn/{id:016x}");
    let run = Arc::new(RunCtx {
        args: args.clone(),
        id,
        filter: format!("$share/cl{:08x}/{prefix}/#", id as u32),
        topic: format!("{prefix}/load"),
        seen: Mutex::new(vec![false; args.messages as usize]),
        unique: AtomicU64::new(0),
        last_progress_ns: AtomicU64::new(now_ns()),
    });
    let mut errors: Vec<String> = Vec::new();
    let setup = Duration::from_secs(10);

    // Members first, each confirmed by its SUBACK.
    let mut members = Vec::new();
    for m in 0..args.members {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(member(run.clone(), m, rx, ready_tx));
        match tokio::time::timeout(setup, ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => errors.push(e),
            _ => errors.push(format!("member {m}: no SUBACK within {setup:?}")),
        }
        members.push((tx, task));
    }

    // The publisher.
    let publog = Arc::new(Mutex::new(PubLog::default()));
    let (client, events) = connection(
        args.protocol,
        &args.host,
        args.port,
        format!("cl-{:08x}-p", id as u32),
        100,
        1024,
    );
    let client = Arc::new(client);
    let (done_tx, done_rx) = watch::channel(false);
    let (conn_tx, conn_rx) = oneshot::channel();
    let pub_events = tokio::spawn(publisher_events(events, publog.clone(), conn_tx, done_rx));
    match tokio::time::timeout(setup, conn_rx).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => errors.push(e),
        _ => errors.push(format!("publisher: no CONNACK within {setup:?}")),
    }

    let start_ns = now_ns();
    if errors.is_empty() {
        // Publish, with a member leaving every churn_ms (members take turns).
        let publishing = tokio::spawn(publish_loop(run.clone(), client.clone(), publog.clone()));
        let period = Duration::from_millis(args.churn_ms.max(1));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut turn = 0usize;
        tokio::pin!(publishing);
        loop {
            tokio::select! {
                _ = &mut publishing => break,
                _ = tick.tick() => {
                    let _ = members[turn % members.len()].0.send(Command::Leave);
                    turn += 1;
                }
            }
        }
        // Acknowledgements of everything sent, then deliveries, each while progress is made.
        let idle = Duration::from_secs_f64(args.drain_secs);
        let mut last = (u64::MAX, Instant::now());
        loop {
            let (acked, sent) = {
                let log = publog.lock();
                (log.acked, log.sent_ns.len() as u64)
            };
            let unique = run.unique.load(Ordering::Relaxed);
            if acked == sent && unique >= acked {
                break;
            }
            let progress = acked + unique;
            if progress != last.0 {
                last = (progress, Instant::now());
            } else if last.1.elapsed() >= idle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // Stop everyone and collect.
    let mut logs = Vec::new();
    for (m, (tx, task)) in members.into_iter().enumerate() {
        let _ = tx.send(Command::Stop);
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(log)) => logs.push(log),
            _ => {
                errors.push(format!("member {m} did not stop"));
                logs.push(MemberLog::default());
            }
        }
    }
    let _ = done_tx.send(true);
    if let Ok(Ok(mut events)) = tokio::time::timeout(Duration::from_secs(2), pub_events).await {
        if client.try_disconnect() {
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                while let Ok(ev) = events.poll().await {
                    if matches!(ev, Ev::OutDisconnect) {
                        break;
                    }
                }
            })
            .await;
        }
    }

    let publog = publog.lock();
    report(&run, index, start_ns, &publog, &logs, errors)
}

fn report(
    run: &RunCtx,
    index: u32,
    start_ns: u64,
    publog: &PubLog,
    logs: &[MemberLog],
    mut errors: Vec<String>,
) -> Value {
    let args = &run.args;
    let sent = publog.sent_ns.len();
    // Who got each id: (member, incarnation, via).
    let mut got: Vec<Vec<(usize, u32, Via)>> = vec![Vec::new(); sent];
    for (m, log) in logs.iter().enumerate() {
        for r in &log.receipts {
            match got.get_mut(r.id as usize) {
                Some(list) => list.push((m, r.incarnation, r.via)),
                None => errors.push(format!("member {m} got id {} never sent", r.id)),
            }
        }
    }
    let acked: Vec<usize> = (0..sent)
        .filter(|&i| publog.acked_ns[i].is_some())
        .collect();
    let lost: Vec<usize> = acked
        .iter()
        .copied()
        .filter(|&i| got[i].is_empty())
        .collect();
    let unacked_lost = (0..sent)
        .filter(|&i| publog.acked_ns[i].is_none() && got[i].is_empty())
        .count();
    let naive_lost: Vec<usize> = (0..sent)
        .filter(|&i| !got[i].is_empty() && got[i].iter().all(|&(_, _, v)| v == Via::Buffer))
        .collect();
    let duplicates: usize = got.iter().map(|g| g.len().saturating_sub(1)).sum();
    let via_buffer: usize = got
        .iter()
        .flatten()
        .filter(|&&(_, _, v)| v == Via::Buffer)
        .count();
    errors.extend(publog.errors.iter().cloned());
    if sent > acked.len() {
        errors.push(format!(
            "{} of {sent} publishes not acknowledged",
            sent - acked.len()
        ));
    }
    if publog.no_subscribers > 0 {
        errors.push(format!(
            "{} publishes acknowledged with 0x10 No matching subscribers",
            publog.no_subscribers
        ));
    }
    let details: Vec<Value> = lost
        .iter()
        .take(DETAILED_LOSSES)
        .map(|&i| loss_detail(i, start_ns, publog, logs, &got))
        .collect();
    json!({
        "scenario": "churn-loop",
        "label": args.label,
        "run": index,
        "protocol": match args.protocol { Protocol::V311 => "3.1.1", Protocol::V5 => "5" },
        "disconnect": match args.disconnect { Leave::Abrupt => "abrupt", Leave::Clean => "clean" },
        "members": args.members,
        "rate": args.rate,
        "work_us": args.work_us,
        "published": sent,
        "acked": acked.len(),
        "lost": lost.len(),
        "lost_ids": lost.iter().take(200).collect::<Vec<_>>(),
        "lost_unacked": unacked_lost,
        "duplicates": duplicates,
        "leaves": logs.iter().map(|l| l.leaves).sum::<u32>(),
        "via_buffer": via_buffer,
        "naive_lost": naive_lost.len(),
        "naive_lost_ids": naive_lost.iter().take(20).collect::<Vec<_>>(),
        "losses": details,
        "errors": errors,
    })
}

/// What the tool knows around one lost id.
fn loss_detail(
    i: usize,
    start_ns: u64,
    publog: &PubLog,
    logs: &[MemberLog],
    got: &[Vec<(usize, u32, Via)>],
) -> Value {
    let sent = publog.sent_ns[i];
    let lo = sent.saturating_sub(300_000_000);
    let hi = sent + 1_000_000_000;
    let neighbours: Vec<Value> = (i.saturating_sub(4)..(i + 5).min(got.len()))
        .filter(|&j| j != i)
        .map(|j| {
            let who: Vec<String> = got[j]
                .iter()
                .map(|&(m, inc, via)| {
                    format!(
                        "m{m}#{inc}{}",
                        if via == Via::Buffer { "(buf)" } else { "" }
                    )
                })
                .collect();
            json!([j, who])
        })
        .collect();
    let likely: Vec<String> = (0..logs.len())
        .filter(|&m| {
            !(i.saturating_sub(3)..(i + 4).min(got.len()))
                .any(|j| got[j].iter().any(|&(who, _, _)| who == m))
        })
        .map(|m| format!("m{m}"))
        .collect();
    let mut events = serde_json::Map::new();
    for (m, log) in logs.iter().enumerate() {
        let around: Vec<Value> = log
            .events
            .iter()
            .filter(|(t, _, _)| (lo..=hi).contains(t))
            .map(|(t, inc, what)| json!([ms(*t, start_ns), inc, what]))
            .collect();
        events.insert(format!("m{m}"), json!(around));
    }
    json!({
        "id": i,
        "published_ms": ms(sent, start_ns),
        "puback_ms": publog.acked_ns[i].map(|t| ms(t, start_ns)),
        // No member's client ever read it, so which member the broker last sent it to is not
        // observable here; the members that got none of its neighbours (the round robin's
        // turn) are the likely ones.
        "likely_members": likely,
        "neighbours": neighbours,
        "member_events": events,
    })
}

pub async fn run(args: ChurnLoopArgs) -> Value {
    let variant = format!(
        "{} {}",
        match args.protocol {
            Protocol::V311 => "3.1.1",
            Protocol::V5 => "5",
        },
        match args.disconnect {
            Leave::Abrupt => "abrupt",
            Leave::Clean => "clean",
        }
    );
    if let Err(e) = check_loopback(&args.host, args.port) {
        return json!({ "scenario": "churn-loop", "summary": true, "errors": [e] });
    }
    if args.payload < HEADER || args.members < 2 || args.messages == 0 {
        return json!({ "scenario": "churn-loop", "summary": true,
            "errors": [format!("need --payload ≥ {HEADER}, --members ≥ 2, --messages ≥ 1")] });
    }
    let started = Instant::now();
    let (mut runs, mut lossy, mut lost, mut naive, mut naive_runs) = (0, 0, 0, 0, 0);
    let (mut dups, mut leaves, mut via_buffer, mut published) = (0, 0, 0, 0);
    let mut error_runs = 0;
    let mut lost_per_run = Vec::new();
    for index in 0..args.runs {
        let line = one_run(&args, index).await;
        println!("{line}");
        runs += 1;
        let n = line["lost"].as_u64().unwrap_or(0);
        lost += n;
        if n > 0 {
            lossy += 1;
            lost_per_run.push(json!([index, n]));
        }
        let nl = line["naive_lost"].as_u64().unwrap_or(0);
        naive += nl;
        naive_runs += u64::from(nl > 0);
        dups += line["duplicates"].as_u64().unwrap_or(0);
        leaves += line["leaves"].as_u64().unwrap_or(0);
        via_buffer += line["via_buffer"].as_u64().unwrap_or(0);
        published += line["published"].as_u64().unwrap_or(0);
        error_runs += u64::from(line["errors"].as_array().is_some_and(|e| !e.is_empty()));
        if n > 0 && args.stop_on_loss {
            break;
        }
    }
    json!({
        "scenario": "churn-loop",
        "summary": true,
        "label": args.label,
        "variant": variant,
        "runs": runs,
        "published": published,
        "runs_with_loss": lossy,
        "lost": lost,
        "lost_per_run": lost_per_run,
        "duplicates": dups,
        "leaves": leaves,
        "via_buffer": via_buffer,
        "naive_lost": naive,
        "runs_with_naive_loss": naive_runs,
        "runs_with_errors": error_runs,
        "secs": round3(started.elapsed().as_secs_f64()),
        "errors": if lossy > 0 { json!([format!("{lost} messages lost in {lossy} runs")]) } else { json!([]) },
    })
}
