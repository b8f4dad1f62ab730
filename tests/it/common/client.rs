//! A raw MQTT client built on our own codec, the packets it sends, and the streams it talks
//! over (TCP, TLS, WebSocket).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use sharq::codec::{self, Decoder};
use sharq::packet::{
    Ack, ConnAck, Connect, ConnectProperties, Disconnect, DisconnectProperties, Packet,
    ProtocolVersion, Publish, PublishProperties, QoS, ReasonCode, SubAck, Subscribe,
    SubscribeProperties, SubscriptionOptions, TopicSubscription, UnsubAck, Unsubscribe,
    UnsubscribeProperties,
};

use super::{seq_payload, TIMEOUT, V5};

pub fn connect_packet(version: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 60,
        client_id: ByteString::from(client_id),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

/// The CONNECT options the shared-subscription tests vary, for [`RawClient::connect_opts`].
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

    pub fn packet(&self) -> Connect {
        Connect {
            protocol: self.version,
            clean_start: self.clean_start,
            keep_alive: self.keep_alive,
            client_id: ByteString::from(self.client_id.as_str()),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties {
                session_expiry_interval: self.session_expiry,
                receive_maximum: self.receive_maximum,
                ..ConnectProperties::default()
            },
        }
    }
}

pub fn publish_packet(topic: &str, payload: &[u8], qos: QoS, packet_id: Option<u16>) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from(topic),
        packet_id,
        payload: Bytes::copy_from_slice(payload),
        properties: PublishProperties::default(),
    }
}

pub fn sub_options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

/// Encodes `packet` for `version` with our codec.
pub fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    codec::encode(packet, version, &mut buf).expect("encode");
    buf.to_vec()
}

/// What the next read produced.
#[allow(clippy::large_enum_variant)] // a test helper: one value at a time
#[derive(Debug)]
pub enum Event {
    Packet(Packet),
    Closed,
    Timeout,
}

/// A bare MQTT client over TCP: it sends exactly what the test says, acknowledges nothing by
/// itself, and reports exactly what arrives, decoded with our codec (malformed input from the
/// broker fails the test).
///
/// Writes: [`RawClient::send`] tolerates a broker that already closed (tests of a close check
/// what was received instead); the helpers that write without waiting for an answer
/// ([`RawClient::send_checked`], `publish_nowait`, `ack_nowait`, `puback`, `pubrec`, `pubcomp`)
/// fail the test when the write fails, since no later read would reveal it, and so does
/// `disconnect_and_wait`.
#[derive(Debug)]
pub struct RawClient {
    stream: Box<dyn ClientStream>,
    pub version: ProtocolVersion,
    /// The CONNECT's client id (empty until one is sent), to name the client in failures.
    pub client_id: String,
    decoder: Decoder,
    buf: BytesMut,
    /// Packets read while waiting for another kind, returned first by later reads, each with
    /// the raw first byte of its fixed header.
    stash: VecDeque<(u8, Packet)>,
    /// The raw first byte of the fixed header of the packet `next_event` last returned.
    first_byte: u8,
    next_packet_id: u16,
    closed: bool,
    /// The connection ended in a reset (ECONNRESET) rather than an orderly close.
    reset: bool,
}

/// What a [`RawClient`] talks over: a TCP socket, or a TLS or WebSocket stream.
pub trait ClientStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug> ClientStream
    for T
{
}

impl RawClient {
    /// Opens a TCP connection; sends nothing.
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> RawClient {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect failed");
        stream.set_nodelay(true).unwrap();
        RawClient::over(stream, version)
    }

    /// A client over an established stream (TLS, WebSocket); sends nothing.
    pub fn over(stream: impl ClientStream + 'static, version: ProtocolVersion) -> RawClient {
        RawClient {
            stream: Box::new(stream),
            version,
            client_id: String::new(),
            decoder: Decoder::with_version(version, 268_435_460),
            buf: BytesMut::with_capacity(4096),
            stash: VecDeque::new(),
            first_byte: 0,
            next_packet_id: 1,
            closed: false,
            reset: false,
        }
    }

    /// Opens a connection, sends `connect` and returns the CONNACK.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (RawClient, ConnAck) {
        let client = RawClient::open(addr, connect.protocol).await;
        client.connect_as(connect).await
    }

    /// Sends `connect` on this (fresh) connection and returns the CONNACK.
    pub async fn connect_as(self, connect: Connect) -> (RawClient, ConnAck) {
        let mut client = self;
        client.client_id = connect.client_id.to_string();
        client.send(&Packet::Connect(Box::new(connect))).await;
        match client.recv().await {
            Packet::ConnAck(connack) => (client, connack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects with Clean Start and asserts success.
    pub async fn connect(addr: SocketAddr, version: ProtocolVersion, client_id: &str) -> RawClient {
        let (client, connack) =
            RawClient::connect_with(addr, connect_packet(version, client_id)).await;
        assert_eq!(
            connack.reason_code,
            ReasonCode::SUCCESS,
            "CONNACK refused: {connack:?}"
        );
        client
    }

    /// Connects with `opts` and asserts the CONNACK is not a refusal.
    pub async fn connect_opts(addr: SocketAddr, opts: ConnectOpts) -> (RawClient, ConnAck) {
        let (client, connack) = RawClient::connect_with(addr, opts.packet()).await;
        assert!(
            !connack.reason_code.is_error(),
            "CONNACK refused: {:?}",
            connack.reason_code
        );
        (client, connack)
    }

    pub async fn v5(addr: SocketAddr, client_id: &str) -> RawClient {
        RawClient::connect(addr, ProtocolVersion::V5, client_id).await
    }

    pub async fn v311(addr: SocketAddr, client_id: &str) -> RawClient {
        RawClient::connect(addr, ProtocolVersion::V3_1_1, client_id).await
    }

    /// True once the connection ended in a reset instead of an orderly close (FIN).
    pub fn was_reset(&self) -> bool {
        self.reset
    }

    pub fn packet_id(&mut self) -> u16 {
        let id = self.next_packet_id;
        self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
        id
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        // A broker that already closed may reset the socket: tests check what it sent instead.
        // Flushed: a TLS or WebSocket stream may hold written bytes until then.
        let stream = &mut self.stream;
        let _ = tokio::time::timeout(TIMEOUT, async move {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await;
    }

    /// Writes `bytes` and reports the write's own result: a write after the broker reset the
    /// connection fails.
    pub async fn try_send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let stream = &mut self.stream;
        let write = async move {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        match tokio::time::timeout(TIMEOUT, write).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::other("write timed out")),
        }
    }

    pub async fn send(&mut self, packet: &Packet) {
        let bytes = encode(packet, self.version);
        self.send_bytes(&bytes).await;
    }

    /// Sends `packet`; a failed or timed-out write fails the test.
    pub async fn send_checked(&mut self, packet: &Packet) {
        let bytes = encode(packet, self.version);
        if let Err(e) = self.try_send_bytes(&bytes).await {
            panic!("{}: write failed: {e}", self.client_id);
        }
    }

    /// The next packet, the close of the connection, or a timeout after `limit`.
    pub async fn next_event(&mut self, limit: Duration) -> Event {
        if let Some((first, packet)) = self.stash.pop_front() {
            self.first_byte = first;
            return Event::Packet(packet);
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let first = self.buf.first().copied();
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(packet)) => {
                    self.first_byte = first.unwrap_or_default();
                    return Event::Packet(packet);
                }
                Ok(None) => {}
                Err(e) => panic!(
                    "{}: the broker sent bytes our codec cannot decode: {e}; buffer {:02x?}",
                    self.client_id,
                    &self.buf[..]
                ),
            }
            if self.closed {
                return Event::Closed;
            }
            self.buf.reserve(4096);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Event::Timeout,
                Ok(Ok(0)) => self.closed = true,
                Ok(Err(e)) => {
                    self.closed = true;
                    self.reset = e.kind() == std::io::ErrorKind::ConnectionReset;
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The raw first byte of the fixed header (type and flags) of the packet the last read
    /// returned, for tests of what the broker put on the wire.
    pub fn first_byte(&self) -> u8 {
        self.first_byte
    }

    /// The next packet; fails on close or timeout.
    pub async fn recv(&mut self) -> Packet {
        match self.next_event(TIMEOUT).await {
            Event::Packet(packet) => packet,
            other => panic!("{}: expected a packet, got {other:?}", self.client_id),
        }
    }

    /// Reads until a packet satisfies `pred`, stashing the others for later reads.
    pub async fn recv_matching(&mut self, what: &str, pred: impl Fn(&Packet) -> bool) -> Packet {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let mut skipped = VecDeque::new();
        // Look in the stash first.
        if let Some(index) = self.stash.iter().position(|(_, p)| pred(p)) {
            if let Some((first, packet)) = self.stash.remove(index) {
                self.first_byte = first;
                return packet;
            }
        }
        let stash = std::mem::take(&mut self.stash);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Event::Packet(packet) if pred(&packet) => {
                    let mut rest = stash;
                    rest.extend(skipped);
                    self.stash = rest;
                    return packet;
                }
                Event::Packet(packet) => skipped.push_back((self.first_byte, packet)),
                other => panic!(
                    "{}: expected {what}, got {other:?}; packets skipped: {skipped:?}",
                    self.client_id
                ),
            }
        }
    }

    pub async fn recv_publish(&mut self) -> Publish {
        match self
            .recv_matching("PUBLISH", |p| matches!(p, Packet::Publish(_)))
            .await
        {
            Packet::Publish(publish) => publish,
            _ => unreachable!(),
        }
    }

    /// The next packet, which must be a PUBLISH (unlike [`RawClient::recv_publish`], which
    /// skips other packets).
    pub async fn expect_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(publish) => publish,
            other => panic!("{}: expected PUBLISH, got {other:?}", self.client_id),
        }
    }

    /// Asserts no PUBLISH arrives for `limit` (other packets are stashed).
    pub async fn expect_no_publish(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Event::Timeout => return,
                Event::Packet(Packet::Publish(p)) => {
                    panic!("{}: expected no PUBLISH, got {p:?}", self.client_id)
                }
                Event::Packet(other) => self.stash.push_back((self.first_byte, other)),
                Event::Closed => panic!(
                    "{}: expected no PUBLISH, the connection closed",
                    self.client_id
                ),
            }
        }
    }

    /// Asserts the broker closes the connection (within [`TIMEOUT`]) and returns what it sent
    /// before closing.
    pub async fn expect_closed(&mut self) -> Vec<Packet> {
        self.expect_closed_within(TIMEOUT).await
    }

    /// Asserts the broker closes the connection within `limit` and returns what it sent
    /// before closing.
    pub async fn expect_closed_within(&mut self, limit: Duration) -> Vec<Packet> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Event::Closed => return got,
                Event::Packet(packet) => got.push(packet),
                Event::Timeout => panic!(
                    "{}: expected the broker to close the connection within {limit:?}; still \
                     open, got {got:?}",
                    self.client_id
                ),
            }
        }
    }

    /// Reads raw bytes until the broker closes (or `limit`), without decoding.
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

    /// Asserts that the broker sends DISCONNECT with `code` (skipping any PUBLISH still on
    /// the way) and then closes.
    pub async fn expect_disconnect(&mut self, code: u8) -> Disconnect {
        let got = self.expect_closed().await;
        let disconnect = got.iter().find_map(|p| match p {
            Packet::Disconnect(d) => Some(d.clone()),
            _ => None,
        });
        match disconnect {
            Some(d) => {
                assert_eq!(
                    d.reason_code,
                    ReasonCode(code),
                    "DISCONNECT reason code: expected 0x{code:02X}, got {d:?}"
                );
                d
            }
            None => {
                panic!("expected DISCONNECT 0x{code:02X} before close, got only {got:?} then close")
            }
        }
    }

    /// v5: DISCONNECT with `code` then close; 3.1.1: close without DISCONNECT.
    pub async fn expect_error_close(&mut self, v5_code: u8) {
        if self.version.is_v5() {
            self.expect_disconnect(v5_code).await;
        } else {
            let got = self.expect_closed().await;
            assert!(
                !got.iter().any(|p| matches!(p, Packet::Disconnect(_))),
                "a 3.1.1 client must never receive DISCONNECT: {got:?}"
            );
        }
    }

    pub async fn subscribe_with(
        &mut self,
        filters: Vec<(&str, SubscriptionOptions)>,
        identifier: Option<u32>,
    ) -> SubAck {
        let packet_id = self.packet_id();
        let subscribe = Subscribe {
            packet_id,
            filters: filters
                .into_iter()
                .map(|(filter, options)| TopicSubscription {
                    filter: ByteString::from(filter),
                    options,
                })
                .collect(),
            properties: SubscribeProperties {
                subscription_identifier: identifier,
                ..SubscribeProperties::default()
            },
        };
        self.send(&Packet::Subscribe(subscribe)).await;
        match self
            .recv_matching("SUBACK", |p| matches!(p, Packet::SubAck(_)))
            .await
        {
            Packet::SubAck(suback) => {
                assert_eq!(suback.packet_id, packet_id, "SUBACK packet id");
                suback
            }
            _ => unreachable!(),
        }
    }

    /// Subscribes to one filter and asserts the grant.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubAck {
        let suback = self
            .subscribe_with(vec![(filter, sub_options(qos))], None)
            .await;
        assert_eq!(
            suback.reason_codes,
            vec![ReasonCode(qos as u8)],
            "{}: SUBACK for {filter}",
            self.client_id
        );
        suback
    }

    /// Subscribes to every filter at `qos`; returns the SUBACK reason codes.
    pub async fn subscribe_many(&mut self, filters: &[&str], qos: QoS) -> Vec<ReasonCode> {
        let list = filters.iter().map(|f| (*f, sub_options(qos))).collect();
        self.subscribe_with(list, None).await.reason_codes
    }

    pub async fn unsubscribe(&mut self, filters: &[&str]) -> UnsubAck {
        let packet_id = self.packet_id();
        let unsubscribe = Unsubscribe {
            packet_id,
            filters: filters.iter().map(|f| ByteString::from(*f)).collect(),
            properties: UnsubscribeProperties::default(),
        };
        self.send(&Packet::Unsubscribe(unsubscribe)).await;
        match self
            .recv_matching("UNSUBACK", |p| matches!(p, Packet::UnsubAck(_)))
            .await
        {
            Packet::UnsubAck(unsuback) => {
                assert_eq!(unsuback.packet_id, packet_id, "UNSUBACK packet id");
                unsuback
            }
            _ => unreachable!(),
        }
    }

    /// Publishes and completes the QoS flow (PUBACK, or PUBREC/PUBREL/PUBCOMP).
    pub async fn publish_full(&mut self, mut publish: Publish) {
        if publish.qos != QoS::AtMostOnce && publish.packet_id.is_none() {
            publish.packet_id = Some(self.packet_id());
        }
        let packet_id = publish.packet_id;
        let qos = publish.qos;
        self.send(&Packet::Publish(publish)).await;
        match (qos, packet_id) {
            (QoS::AtMostOnce, _) => {}
            (QoS::AtLeastOnce, Some(id)) => {
                let ack = self.recv_ack("PUBACK", id).await;
                assert!(!ack.reason_code.is_error(), "PUBACK: {ack:?}");
            }
            (QoS::ExactlyOnce, Some(id)) => {
                let rec = self.recv_ack("PUBREC", id).await;
                assert!(!rec.reason_code.is_error(), "PUBREC: {rec:?}");
                self.send(&Packet::PubRel(Ack::new(id))).await;
                let comp = self.recv_ack("PUBCOMP", id).await;
                assert_eq!(comp.reason_code, ReasonCode::SUCCESS, "PUBCOMP: {comp:?}");
            }
            _ => unreachable!(),
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        let mut publish = publish_packet(topic, payload, qos, None);
        publish.retain = retain;
        self.publish_full(publish).await;
    }

    /// Sends a PUBLISH and waits for nothing; returns its packet id (QoS > 0).
    pub async fn publish_nowait(
        &mut self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Option<u16> {
        let packet_id = (qos != QoS::AtMostOnce).then(|| self.packet_id());
        self.send_checked(&Packet::Publish(Publish {
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

    /// Publishes `seqs` as sequence-numbered payloads (see [`seq_payload`]), pipelined: all
    /// are sent, then every acknowledgement is awaited (a PINGREQ round trip for QoS 0, so the
    /// broker has routed them when this returns). Ack reason codes are not checked.
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
                    self.recv_ack("PUBACK", id).await;
                }
            }
            QoS::ExactlyOnce => {
                for id in ids {
                    self.recv_ack("PUBREC", id).await;
                    self.send_checked(&Packet::PubRel(Ack::new(id))).await;
                    self.recv_ack("PUBCOMP", id).await;
                }
            }
        }
    }

    /// Waits for the ack of `kind` ("PUBACK", "PUBREC", "PUBREL", "PUBCOMP") for `packet_id`.
    pub async fn recv_ack(&mut self, kind: &'static str, packet_id: u16) -> Ack {
        let packet = self
            .recv_matching(kind, |p| match (kind, p) {
                ("PUBACK", Packet::PubAck(a))
                | ("PUBREC", Packet::PubRec(a))
                | ("PUBREL", Packet::PubRel(a))
                | ("PUBCOMP", Packet::PubComp(a)) => a.packet_id == packet_id,
                _ => false,
            })
            .await;
        match packet {
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => a,
            _ => unreachable!(),
        }
    }

    /// Acknowledges a received PUBLISH completely.
    pub async fn ack(&mut self, publish: &Publish) {
        match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, _) => {}
            (QoS::AtLeastOnce, Some(id)) => self.send(&Packet::PubAck(Ack::new(id))).await,
            (QoS::ExactlyOnce, Some(id)) => {
                self.send(&Packet::PubRec(Ack::new(id))).await;
                self.recv_ack("PUBREL", id).await;
                self.send(&Packet::PubComp(Ack::new(id))).await;
            }
            _ => panic!("QoS > 0 PUBLISH without packet id: {publish:?}"),
        }
    }

    /// Sends the first acknowledgement of a received PUBLISH (PUBACK, or PUBREC for QoS 2) and
    /// waits for nothing: a PUBREL is the caller's to answer.
    pub async fn ack_nowait(&mut self, publish: &Publish) {
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => self.send_checked(&Packet::PubAck(Ack::new(id))).await,
            (QoS::ExactlyOnce, Some(id)) => self.send_checked(&Packet::PubRec(Ack::new(id))).await,
            _ => {}
        }
    }

    pub async fn puback(&mut self, packet_id: u16, reason: ReasonCode) {
        self.send_checked(&Packet::PubAck(Ack::with_reason(packet_id, reason)))
            .await
    }

    pub async fn pubrec(&mut self, packet_id: u16, reason: ReasonCode) {
        self.send_checked(&Packet::PubRec(Ack::with_reason(packet_id, reason)))
            .await
    }

    pub async fn pubcomp(&mut self, packet_id: u16) {
        self.send_checked(&Packet::PubComp(Ack::new(packet_id)))
            .await
    }

    /// Receives one PUBLISH, acknowledges it, returns it.
    pub async fn recv_and_ack(&mut self) -> Publish {
        let publish = self.recv_publish().await;
        self.ack(&publish).await;
        publish
    }

    pub async fn disconnect(mut self) {
        self.disconnect_with(0, DisconnectProperties::default())
            .await;
    }

    pub async fn disconnect_with(&mut self, code: u8, properties: DisconnectProperties) {
        self.send(&Packet::Disconnect(Disconnect {
            reason_code: ReasonCode(code),
            properties,
        }))
        .await;
        let _ = self.stream.shutdown().await;
    }

    /// DISCONNECT with `reason` (v5) or the plain 3.1.1 DISCONNECT, then closes the socket and
    /// waits for the broker to close its side, so the DISCONNECT has been handled.
    pub async fn disconnect_and_wait(mut self, reason: ReasonCode) {
        self.send_checked(&Packet::Disconnect(Disconnect {
            reason_code: reason,
            properties: DisconnectProperties::default(),
        }))
        .await;
        let _ = self.stream.shutdown().await;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Event::Packet(_) => continue,
                Event::Closed => return,
                Event::Timeout => panic!(
                    "{}: server kept the connection open after DISCONNECT",
                    self.client_id
                ),
            }
        }
    }

    /// Closes the socket without any MQTT goodbye.
    pub fn drop_socket(self) {
        drop(self);
    }

    /// Sends PINGREQ and waits for PINGRESP: proves the connection is alive and everything the
    /// broker sent before has been read.
    pub async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        self.recv_matching("PINGRESP", |p| matches!(p, Packet::PingResp))
            .await;
    }
}

/// Asserts the broker still serves: a fresh v5 client can connect and ping.
pub async fn assert_broker_alive(addr: SocketAddr) {
    let mut client = RawClient::v5(addr, "").await;
    client.ping().await;
    client.disconnect().await;
}

/// Unique-enough client ids for tests sharing a broker.
pub fn client_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A WebSocket upgrade to `url` (`ws://HOST:PORT/PATH`) over `stream`, offering `protocols`
/// (none: no Sec-WebSocket-Protocol header).
pub async fn ws_upgrade<S>(
    stream: S,
    url: &str,
    protocols: Option<&str>,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<S>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request()?;
    if let Some(protocols) = protocols {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            protocols.parse().expect("a header value"),
        );
    }
    tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("WebSocket upgrade timed out")
}
