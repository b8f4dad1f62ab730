//! Helpers for the shared-subscription integration tests: an in-process broker on an ephemeral
//! port, and a raw MQTT client over TCP built on the crate's own codec, so tests see (and can
//! withhold) every packet, including acknowledgements.
//!
//! Every wait here is bounded: a test can fail, never hang.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use parking_lot::Mutex;
use sharq::codec::{self, Decoder};
use sharq::packet::{
    Ack, ConnAck, Connect, ConnectProperties, Disconnect, DisconnectProperties, Packet,
    ProtocolVersion, Publish, PublishProperties, QoS, ReasonCode, Subscribe, SubscribeProperties,
    SubscriptionOptions, TopicSubscription, Unsubscribe, UnsubscribeProperties,
};
use sharq::{Broker, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[allow(unused_imports)]
pub use ProtocolVersion::{V3_1_1, V5};

/// The default bound on waiting for one expected packet.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing more arrives" is observed.
pub const QUIET: Duration = Duration::from_millis(300);

/// A per-call strategy deadline no healthy call reaches, however busy the machine: the default
/// 20 ms of wall-clock time can pass while the test process is descheduled, and a timed-out
/// call hands its message to the fallback round robin, which would falsify any test of a
/// distribution. Tests about deadlines set their own.
pub const TEST_PLUGIN_DEADLINE_MS: u64 = 5000;

/// Starts a broker on 127.0.0.1 with an ephemeral port; `$SYS` is off unless `tweak` turns it on.
/// Strategy calls get [`TEST_PLUGIN_DEADLINE_MS`] unless `tweak` says otherwise.
pub async fn start_broker(tweak: impl FnOnce(&mut Config)) -> (Broker, SocketAddr) {
    let mut config = Config::default();
    config.server.listeners = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
    config.server.sys_interval_secs = 0;
    config.shared.plugin_deadline_ms = TEST_PLUGIN_DEADLINE_MS;
    tweak(&mut config);
    let broker = tokio::time::timeout(WAIT, Broker::start(config))
        .await
        .expect("broker start timed out")
        .expect("broker start");
    let addr = broker.local_addrs()[0];
    (broker, addr)
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the broker has settled the end of `client_id`'s connection: its session is
/// offline (kept for a later connection) or gone. A client seeing its socket closed is not
/// enough: the broker closes the socket before it detaches the session.
pub async fn wait_session_offline(broker: &Broker, client_id: &str) {
    wait_until(WAIT, &format!("session {client_id} offline"), || {
        broker
            .state()
            .session(client_id)
            .is_none_or(|session| !session.is_online())
    })
    .await
}

/// Waits until the broker has ended `client_id`'s session.
pub async fn wait_session_ended(broker: &Broker, client_id: &str) {
    wait_until(WAIT, &format!("session {client_id} ended"), || {
        broker.state().session(client_id).is_none()
    })
    .await
}

/// Polls `condition` every 10 ms until it holds (true) or `limit` passes (false).
pub async fn poll_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A sequence-numbered payload, so tests can tell every message apart.
pub fn seq_payload(seq: u32) -> Bytes {
    Bytes::from(format!("{seq}"))
}

pub fn payload_seq(payload: &[u8]) -> u32 {
    std::str::from_utf8(payload)
        .expect("utf-8 payload")
        .parse()
        .expect("sequence-number payload")
}

/// Options of a CONNECT.
#[derive(Debug, Clone)]
pub struct ConnectOpts {
    pub version: ProtocolVersion,
    pub client_id: String,
    pub clean_start: bool,
    /// v5 only: Session Expiry Interval.
    pub session_expiry: Option<u32>,
    pub keep_alive: u16,
    /// v5 only: Receive Maximum.
    pub receive_maximum: Option<u16>,
}

impl ConnectOpts {
    pub fn new(version: ProtocolVersion, client_id: &str) -> ConnectOpts {
        ConnectOpts {
            version,
            client_id: client_id.to_owned(),
            clean_start: true,
            session_expiry: None,
            keep_alive: 0,
            receive_maximum: None,
        }
    }

    /// A session that outlives its connection: Clean Start 0, and for v5 an expiry of 300 s.
    pub fn persistent(mut self) -> ConnectOpts {
        self.clean_start = false;
        if self.version == V5 {
            self.session_expiry = Some(300);
        }
        self
    }

    pub fn keep_alive(mut self, secs: u16) -> ConnectOpts {
        self.keep_alive = secs;
        self
    }
}

/// What one read produced.
// Short-lived values in tests; boxing would only add noise at every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Read {
    /// A packet and the raw first byte of its fixed header.
    Packet(u8, Packet),
    Timeout,
    /// The server closed the connection (or it failed).
    Closed,
}

/// A raw MQTT client over TCP: it sends exactly what it is told and acknowledges nothing by
/// itself.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    pub version: ProtocolVersion,
    pub client_id: String,
    decoder: Decoder,
    buf: BytesMut,
    /// Packets read while waiting for another one (e.g. PUBLISHes before a SUBACK).
    pending: VecDeque<(u8, Packet)>,
    next_packet_id: u16,
    closed: bool,
}

impl RawClient {
    /// Connects and expects a successful CONNACK.
    pub async fn connect(addr: SocketAddr, opts: ConnectOpts) -> (RawClient, ConnAck) {
        let (client, connack) = RawClient::try_connect(addr, opts).await;
        assert!(
            !connack.reason_code.is_error(),
            "CONNACK refused: {:?}",
            connack.reason_code
        );
        (client, connack)
    }

    pub async fn try_connect(addr: SocketAddr, opts: ConnectOpts) -> (RawClient, ConnAck) {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect");
        stream.set_nodelay(true).unwrap();
        let mut client = RawClient {
            stream,
            version: opts.version,
            client_id: opts.client_id.clone(),
            decoder: Decoder::with_version(opts.version, 16 * 1024 * 1024),
            buf: BytesMut::with_capacity(64 * 1024),
            pending: VecDeque::new(),
            next_packet_id: 1,
            closed: false,
        };
        let connect = Connect {
            protocol: opts.version,
            clean_start: opts.clean_start,
            keep_alive: opts.keep_alive,
            client_id: ByteString::from(opts.client_id.as_str()),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties {
                session_expiry_interval: opts.session_expiry,
                receive_maximum: opts.receive_maximum,
                ..ConnectProperties::default()
            },
        };
        client.send(&Packet::Connect(Box::new(connect))).await;
        match client.expect_packet().await {
            Packet::ConnAck(connack) => (client, connack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub fn next_id(&mut self) -> u16 {
        let id = self.next_packet_id;
        self.next_packet_id = if id == u16::MAX { 1 } else { id + 1 };
        id
    }

    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        codec::encode(packet, self.version, &mut out).expect("encode");
        self.send_raw(&out).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        tokio::time::timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write");
    }

    /// Reads the next packet (pending ones first), waiting at most `limit`.
    pub async fn read(&mut self, limit: Duration) -> Read {
        if let Some((first, packet)) = self.pending.pop_front() {
            return Read::Packet(first, packet);
        }
        self.read_wire(limit).await
    }

    async fn read_wire(&mut self, limit: Duration) -> Read {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(&first) = self.buf.first() {
                match self.decoder.decode(&mut self.buf) {
                    Ok(Some(packet)) => return Read::Packet(first, packet),
                    Ok(None) => {}
                    Err(e) => panic!("{}: cannot decode from server: {e:?}", self.client_id),
                }
            }
            if self.closed {
                return Read::Closed;
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Read::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The next packet, or a panic after [`WAIT`].
    pub async fn expect_packet(&mut self) -> Packet {
        self.expect_packet_raw().await.1
    }

    pub async fn expect_packet_raw(&mut self) -> (u8, Packet) {
        match self.read(WAIT).await {
            Read::Packet(first, packet) => (first, packet),
            other => panic!("{}: expected a packet, got {other:?}", self.client_id),
        }
    }

    /// Reads until a packet `pick` accepts, keeping the others for later reads.
    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Packet) -> Option<T>) -> T {
        for index in 0..self.pending.len() {
            if let Some(found) = pick(&self.pending[index].1) {
                self.pending.remove(index);
                return found;
            }
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut skipped = Vec::new();
        let found = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_wire(left).await {
                Read::Packet(first, packet) => match pick(&packet) {
                    Some(found) => break found,
                    None => skipped.push((first, packet)),
                },
                other => panic!("{}: waiting for {what}, got {other:?}", self.client_id),
            }
        };
        self.pending.extend(skipped);
        found
    }

    /// SUBSCRIBE with one options set for every filter; returns the SUBACK reason codes.
    pub async fn subscribe_opts(
        &mut self,
        filters: &[(&str, SubscriptionOptions)],
        identifier: Option<u32>,
    ) -> Vec<ReasonCode> {
        let packet_id = self.next_id();
        let subscribe = Subscribe {
            packet_id,
            filters: filters
                .iter()
                .map(|(f, options)| TopicSubscription {
                    filter: ByteString::from(*f),
                    options: *options,
                })
                .collect(),
            properties: SubscribeProperties {
                subscription_identifier: identifier,
                ..SubscribeProperties::default()
            },
        };
        self.send(&Packet::Subscribe(subscribe)).await;
        self.wait_for("SUBACK", |p| match p {
            Packet::SubAck(ack) if ack.packet_id == packet_id => Some(ack.reason_codes.clone()),
            _ => None,
        })
        .await
    }

    pub async fn subscribe_many(&mut self, filters: &[&str], qos: QoS) -> Vec<ReasonCode> {
        let options = SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        };
        let list: Vec<_> = filters.iter().map(|f| (*f, options)).collect();
        self.subscribe_opts(&list, None).await
    }

    /// Subscribes to one filter and asserts it was granted `qos`.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let codes = self.subscribe_many(&[filter], qos).await;
        assert_eq!(
            codes,
            vec![ReasonCode(qos as u8)],
            "{}: SUBSCRIBE {filter}",
            self.client_id
        );
    }

    pub async fn subscribe_with_id(&mut self, filter: &str, qos: QoS, identifier: u32) {
        let options = SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        };
        let codes = self
            .subscribe_opts(&[(filter, options)], Some(identifier))
            .await;
        assert_eq!(codes, vec![ReasonCode(qos as u8)]);
    }

    /// UNSUBSCRIBE; waits for the UNSUBACK and returns its reason codes (none for 3.1.1).
    pub async fn unsubscribe_many(&mut self, filters: &[&str]) -> Vec<ReasonCode> {
        let packet_id = self.next_id();
        self.send(&Packet::Unsubscribe(Unsubscribe {
            packet_id,
            filters: filters.iter().map(|f| ByteString::from(*f)).collect(),
            properties: UnsubscribeProperties::default(),
        }))
        .await;
        self.wait_for("UNSUBACK", |p| match p {
            Packet::UnsubAck(ack) if ack.packet_id == packet_id => Some(ack.reason_codes.clone()),
            _ => None,
        })
        .await
    }

    /// Sends a PUBLISH and does not wait for anything; returns its packet id (QoS > 0).
    pub async fn publish_nowait(
        &mut self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Option<u16> {
        let packet_id = (qos != QoS::AtMostOnce).then(|| self.next_id());
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos,
            retain,
            topic: ByteString::from(topic),
            packet_id,
            payload,
            properties: PublishProperties::default(),
        }))
        .await;
        packet_id
    }

    /// Publishes and completes the QoS flow (PUBACK, or PUBREC/PUBREL/PUBCOMP). For QoS 0 it
    /// makes a PINGREQ round trip, so the broker has routed the message when this returns.
    pub async fn publish(&mut self, topic: &str, payload: Bytes, qos: QoS, retain: bool) {
        let packet_id = self.publish_nowait(topic, payload, qos, retain).await;
        match qos {
            QoS::AtMostOnce => self.ping().await,
            QoS::AtLeastOnce => {
                let id = packet_id.unwrap();
                self.wait_for("PUBACK", |p| match p {
                    Packet::PubAck(ack) if ack.packet_id == id => Some(()),
                    _ => None,
                })
                .await
            }
            QoS::ExactlyOnce => {
                let id = packet_id.unwrap();
                self.wait_for("PUBREC", |p| match p {
                    Packet::PubRec(ack) if ack.packet_id == id => Some(()),
                    _ => None,
                })
                .await;
                self.send(&Packet::PubRel(Ack::new(id))).await;
                self.wait_for("PUBCOMP", |p| match p {
                    Packet::PubComp(ack) if ack.packet_id == id => Some(()),
                    _ => None,
                })
                .await
            }
        }
    }

    /// Publishes `seqs` as sequence-numbered payloads, pipelined: all are sent, then every
    /// acknowledgement is awaited (a PINGREQ round trip for QoS 0).
    pub async fn publish_seqs(
        &mut self,
        topic: &str,
        seqs: impl IntoIterator<Item = u32>,
        qos: QoS,
    ) {
        let mut ids = Vec::new();
        for seq in seqs {
            if let Some(id) = self
                .publish_nowait(topic, seq_payload(seq), qos, false)
                .await
            {
                ids.push(id);
            }
        }
        match qos {
            QoS::AtMostOnce => self.ping().await,
            QoS::AtLeastOnce => {
                for id in ids {
                    self.wait_for("PUBACK", |p| match p {
                        Packet::PubAck(ack) if ack.packet_id == id => Some(()),
                        _ => None,
                    })
                    .await
                }
            }
            QoS::ExactlyOnce => {
                for id in ids {
                    self.wait_for("PUBREC", |p| match p {
                        Packet::PubRec(ack) if ack.packet_id == id => Some(()),
                        _ => None,
                    })
                    .await;
                    self.send(&Packet::PubRel(Ack::new(id))).await;
                    self.wait_for("PUBCOMP", |p| match p {
                        Packet::PubComp(ack) if ack.packet_id == id => Some(()),
                        _ => None,
                    })
                    .await
                }
            }
        }
    }

    /// PINGREQ → PINGRESP: everything this client sent before has been processed.
    pub async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        self.wait_for("PINGRESP", |p| matches!(p, Packet::PingResp).then_some(()))
            .await
    }

    /// Acknowledges a received PUBLISH the normal way (PUBACK, or PUBREC for QoS 2).
    pub async fn ack(&mut self, publish: &Publish) {
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => self.send(&Packet::PubAck(Ack::new(id))).await,
            (QoS::ExactlyOnce, Some(id)) => self.send(&Packet::PubRec(Ack::new(id))).await,
            _ => {}
        }
    }

    pub async fn puback(&mut self, packet_id: u16, reason: ReasonCode) {
        self.send(&Packet::PubAck(Ack::with_reason(packet_id, reason)))
            .await
    }

    pub async fn pubrec(&mut self, packet_id: u16, reason: ReasonCode) {
        self.send(&Packet::PubRec(Ack::with_reason(packet_id, reason)))
            .await
    }

    pub async fn pubcomp(&mut self, packet_id: u16) {
        self.send(&Packet::PubComp(Ack::new(packet_id))).await
    }

    /// The next PUBLISH (other packets are an error), with the raw first byte.
    pub async fn expect_publish(&mut self) -> (u8, Publish) {
        match self.expect_packet_raw().await {
            (first, Packet::Publish(p)) => (first, p),
            (_, other) => panic!("{}: expected PUBLISH, got {other:?}", self.client_id),
        }
    }

    /// Asserts that no PUBLISH arrives within `limit` (other packets are kept for later).
    pub async fn expect_no_publish(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut kept = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read(left).await {
                Read::Packet(_, Packet::Publish(p)) => {
                    panic!("{}: unexpected PUBLISH {p:?}", self.client_id)
                }
                Read::Packet(first, other) => kept.push((first, other)),
                Read::Timeout | Read::Closed => break,
            }
        }
        self.pending.extend(kept);
    }

    /// DISCONNECT with `reason` (v5) or the plain 3.1.1 DISCONNECT, then closes the socket.
    pub async fn disconnect(mut self, reason: ReasonCode) {
        self.send(&Packet::Disconnect(Disconnect {
            reason_code: reason,
            properties: DisconnectProperties::default(),
        }))
        .await;
        let _ = self.stream.shutdown().await;
        // Wait for the server to close its side, so the disconnect has been handled.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_wire(left).await {
                Read::Packet(..) => continue,
                Read::Closed => return,
                Read::Timeout => panic!(
                    "{}: server kept the connection open after DISCONNECT",
                    self.client_id
                ),
            }
        }
    }

    /// Waits until the server closes the connection, returning the packets it sent meanwhile.
    pub async fn expect_closed(&mut self, limit: Duration) -> Vec<Packet> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read(left).await {
                Read::Packet(_, p) => seen.push(p),
                Read::Closed => return seen,
                Read::Timeout => panic!(
                    "{}: connection still open after {limit:?}; got {seen:?}",
                    self.client_id
                ),
            }
        }
    }

    /// Reads raw bytes until the server closes (or `limit`), without decoding.
    pub async fn read_raw_until_closed(&mut self, limit: Duration) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut all = self.buf.split().to_vec();
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!("{}: connection still open after {limit:?}", self.client_id),
                Ok(Ok(0)) | Ok(Err(_)) => return all,
                Ok(Ok(n)) => all.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Closes the socket without any MQTT goodbye.
    pub fn drop_socket(self) {
        drop(self);
    }
}

/// What a member does with the QoS 1/2 messages it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// PUBACK / PUBREC → PUBCOMP, at once.
    Ack,
    /// Like `Ack`, then a PINGREQ round trip: once [`Member::acked`] counts a message, the
    /// broker has processed its acknowledgement, so a test can control each member's in-flight
    /// count instead of racing the members' tasks.
    AckConfirmed,
    /// Never acknowledge anything.
    Never,
    /// PUBACK / PUBREC with this (failure) reason code.
    Reject(u8),
}

/// One message as a member received it.
#[derive(Debug, Clone)]
pub struct Got {
    pub first_byte: u8,
    pub publish: Publish,
    pub seq: u32,
}

/// A member reading in its own task, recording everything it receives.
pub struct Member {
    pub received: Arc<Mutex<Vec<Got>>>,
    /// Messages acknowledged (PUBACK or PUBREC sent; with `AckConfirmed`, also processed).
    acked: Arc<std::sync::atomic::AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<RawClient>,
}

impl Member {
    pub fn spawn(mut client: RawClient, mode: AckMode) -> Member {
        let received: Arc<Mutex<Vec<Got>>> = Arc::default();
        let (stop, mut stopped) = oneshot::channel();
        let log = received.clone();
        let acked: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let acks = acked.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return client,
                    read = client.read(Duration::from_secs(3600)) => match read {
                        Read::Packet(first, Packet::Publish(publish)) => {
                            let seq = payload_seq(&publish.payload);
                            log.lock().push(Got { first_byte: first, publish: publish.clone(), seq });
                            if let Some(id) = publish.packet_id {
                                match (mode, publish.qos) {
                                    (AckMode::Ack, _) => {
                                        client.ack(&publish).await;
                                        acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                    }
                                    (AckMode::AckConfirmed, _) => {
                                        client.ack(&publish).await;
                                        client.ping().await;
                                        acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                    }
                                    (AckMode::Never, _) => {}
                                    (AckMode::Reject(code), QoS::AtLeastOnce) => client.puback(id, ReasonCode(code)).await,
                                    (AckMode::Reject(code), _) => client.pubrec(id, ReasonCode(code)).await,
                                }
                            }
                        }
                        Read::Packet(_, Packet::PubRel(rel)) => {
                            if matches!(mode, AckMode::Ack | AckMode::AckConfirmed) {
                                client.pubcomp(rel.packet_id).await;
                            }
                        }
                        Read::Packet(..) => {}
                        Read::Timeout => {}
                        Read::Closed => {
                            // Wait to be stopped; the test decides what a closed link means.
                            let _ = (&mut stopped).await;
                            return client;
                        }
                    }
                }
            }
        });
        Member {
            received,
            acked,
            stop: Some(stop),
            task,
        }
    }

    pub fn count(&self) -> usize {
        self.received.lock().len()
    }

    /// Messages this member has acknowledged (see [`AckMode::AckConfirmed`]).
    pub fn acked(&self) -> usize {
        self.acked.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn seqs(&self) -> Vec<u32> {
        self.received.lock().iter().map(|g| g.seq).collect()
    }

    pub fn got(&self) -> Vec<Got> {
        self.received.lock().clone()
    }

    /// Stops reading and hands the client back (packets not yet read stay unread).
    pub async fn stop(mut self) -> RawClient {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("member task did not stop")
            .expect("member task panicked")
    }
}

/// Total messages received by `members`.
pub fn total(members: &[&Member]) -> usize {
    members.iter().map(|m| m.count()).sum()
}

/// Waits until `members` together received `n` messages, then watches a quiet period for
/// extra copies.
pub async fn wait_total(members: &[&Member], n: usize) {
    wait_until(
        Duration::from_secs(10),
        &format!("{n} messages in total"),
        || total(members) >= n,
    )
    .await;
    tokio::time::sleep(QUIET).await;
}

/// How many times each sequence number appears.
pub fn histogram(seqs: impl IntoIterator<Item = u32>) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for seq in seqs {
        *counts.entry(seq).or_insert(0) += 1;
    }
    counts
}

/// Asserts that `seqs` is exactly `expected`, each once.
pub fn assert_exactly_once(
    what: &str,
    seqs: impl IntoIterator<Item = u32>,
    expected: std::ops::Range<u32>,
) {
    let counts = histogram(seqs);
    let missing: Vec<u32> = expected
        .clone()
        .filter(|s| !counts.contains_key(s))
        .collect();
    let dups: Vec<(u32, usize)> = counts
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(&s, &c)| (s, c))
        .collect();
    let stray: Vec<u32> = counts
        .keys()
        .filter(|s| !expected.contains(s))
        .copied()
        .collect();
    assert!(
        missing.is_empty() && dups.is_empty() && stray.is_empty(),
        "{what}: missing {missing:?}, duplicated (seq, copies) {dups:?}, unexpected {stray:?}"
    );
}

/// SubscriptionOptions at `qos`.
pub fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}
