//! One task per connection, whatever the listener (TCP, TLS, WebSocket): reads and decodes packets, hands them to the `handle_*`
//! modules, and writes what the session has queued for the client.
//!
//! A single task owns both directions of the socket. Output is batched: everything the
//! handlers and the session produce in one round is encoded into one buffer and written with
//! one call. Input is handled as soon as it is whole: packets a client pipelines behind CONNECT
//! are processed right after the CONNACK, whatever TCP did to the stream.
//!
//! A connection we end says goodbye so the client can read why: our last packets (a refusing
//! CONNACK, a DISCONNECT with its reason code) are written, the write side is half-closed, and
//! input is drained and discarded for a bounded time before the socket closes. Closing with
//! unread input would make the kernel send a reset, and the client would lose the reason code.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BufMut;
use bytes::{Buf, BytesMut};
use bytestring::ByteString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, Notify};

use crate::codec::{self, DecodeError, Decoder};
use crate::packet::{
    ConnAck, Disconnect, DisconnectProperties, Packet, ProtocolVersion, ReasonCode,
};

use crate::broker::handle::auth::{AuthState, ConnectAuth};
use crate::broker::net::admission::Admitted;
use crate::broker::net::error::ConnectionError;
use crate::broker::net::stream::{Input, Stream};
use crate::broker::net::topic_alias::{Aliased, OutgoingAliases};
use crate::broker::session::{Dropped, Session};
use crate::broker::shared::Redelivery;
use crate::broker::will;
use crate::broker::BrokerState;

/// How long a goodbye (DISCONNECT, refusing CONNACK) may take to write before we just close.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long input is drained after our goodbye, so the client reads it instead of a reset.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Most PUBLISH packets moved from the session queue into the write buffer per round, so one
/// backlog cannot balloon the write buffer.
const MAX_PUBLISHES_PER_ROUND: usize = 256;
/// Write buffer capacity a connection may keep after a flush; a larger one (grown by a burst)
/// is released so that a quiet connection does not pin it.
const MAX_IDLE_WRITE_BUF: usize = 64 * 1024;
/// The packet type of CONNECT, the high nibble of its first byte.
const CONNECT_PACKET_TYPE: u8 = 1;
/// How long a client with keep-alive off may take to finish a packet it has started.
const PARTIAL_PACKET_TIMEOUT: Duration = Duration::from_secs(60);
/// Bounds of the adaptive read size (see `main_loop`).
const MIN_READ_SIZE: usize = 4096;
const MAX_READ_SIZE: usize = 64 * 1024;

/// The client behind a connection, once CONNECT was accepted.
pub(crate) struct Client {
    pub session: Arc<Session>,
    pub generation: u64,
    pub notify: Arc<Notify>,
    pub kicked: oneshot::Receiver<ReasonCode>,
}

/// Why the connection ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The client sent DISCONNECT with this reason code.
    Disconnected(ReasonCode),
    /// The socket closed or failed without DISCONNECT.
    Lost,
    KeepAliveTimeout,
    /// Another connection took the session over (or an operator kicked it).
    Kicked(ReasonCode),
    Shutdown,
    /// We closed it for breaking the protocol.
    Error(ConnectionError),
    /// CONNECT was refused (CONNACK with a failure code already written) or never arrived.
    Refused,
}

/// What a TLS listener with `use_identity_as_username` learnt from the client's certificate.
#[derive(Debug, Clone)]
pub enum CertificateUsername {
    /// The listener does not take usernames from certificates.
    NotUsed,
    /// It does, and the client presented no certificate (or one without a common name).
    Missing,
    /// The verified certificate's subject CN.
    Verified(ByteString),
}

pub(crate) struct Connection {
    pub broker: Arc<BrokerState>,
    stream: Stream,
    pub peer: SocketAddr,
    /// The listener it came from, as logs name it (`tls 127.0.0.1:8883`).
    pub listener: Arc<str>,
    /// The username the client certificate gives, on a listener that uses it.
    pub certificate_username: CertificateUsername,
    read_buf: BytesMut,
    pub write_buf: BytesMut,
    decoder: Decoder,
    pub version: ProtocolVersion,
    pub client: Option<Client>,
    /// Topic aliases the client set on this connection (they do not outlive it).
    pub topic_aliases: HashMap<u16, ByteString>,
    pub keep_alive: Option<Duration>,
    /// The client's Request Problem Information: false forbids reason strings on most packets.
    pub request_problem_information: bool,
    /// Set by the DISCONNECT handler; the loop ends after the current read.
    pub disconnect_received: Option<ReasonCode>,
    /// Topic aliases we use towards a v5 client that allows them; none otherwise.
    pub outgoing_aliases: Option<OutgoingAliases>,
    /// The username the client authenticated with, for the ACL.
    pub username: Option<ByteString>,
    /// This connection's publish decisions by topic under the ACL in force.
    pub acl_cache: crate::broker::acl::PublishCache,
    /// The authentication method and user of enhanced authentication, for re-authentication.
    pub(crate) auth: AuthState,
    /// Scratch space for packets moved out of the session, reused across rounds.
    outgoing: Vec<Packet>,
    /// PUBACKs and PUBRECs waiting for the store to commit their message, with the batch
    /// each waits for, in the order their PUBLISHes came [MQTT-4.6.0-2]. Bounded by our
    /// Receive Maximum (QoS 2) and by the client's pipelining (QoS 1).
    held_acks: VecDeque<(u64, Packet)>,
    /// Outbound packets (PUBLISH, PUBREL) waiting for the commit of their in-flight record, in
    /// send order. Bounded: nothing more is moved out of the session while it is long.
    held_out: VecDeque<(u64, Packet)>,
    /// Bytes to reserve for the next read, between MIN_READ_SIZE and MAX_READ_SIZE.
    read_size: usize,
    /// This socket's place under the connection limits, given back when the task ends.
    _admitted: Admitted,
}

pub async fn run(
    broker: Arc<BrokerState>,
    stream: Stream,
    peer: SocketAddr,
    listener: Arc<str>,
    certificate_username: CertificateUsername,
    admitted: Admitted,
) {
    let max_packet_size = broker.config.limits.max_packet_size;
    let mut connection = Connection {
        broker,
        stream,
        peer,
        listener,
        certificate_username,
        // Both buffers start empty and get memory when there is something to hold: at 10k idle
        // connections, two eager 4 KiB buffers each were most of the broker's memory.
        read_buf: BytesMut::new(),
        write_buf: BytesMut::new(),
        decoder: Decoder::new(max_packet_size),
        version: ProtocolVersion::V3_1_1,
        client: None,
        topic_aliases: HashMap::new(),
        keep_alive: None,
        request_problem_information: true,
        disconnect_received: None,
        outgoing_aliases: None,
        username: None,
        acl_cache: Default::default(),
        auth: AuthState::default(),
        outgoing: Vec::new(),
        held_acks: VecDeque::new(),
        held_out: VecDeque::new(),
        read_size: MIN_READ_SIZE,
        _admitted: admitted,
    };
    let end = connection.serve().await;
    connection.finish(end).await;
}

impl Connection {
    async fn serve(&mut self) -> End {
        // Boxed: its state (authentication exchanges included) is needed once, and inline it
        // would size the future of every connection for its whole life.
        match Box::pin(self.connect_phase()).await {
            Ok(true) => {}
            Ok(false) => return End::Refused,
            Err(e) => return End::Error(e),
        }
        match self.main_loop().await {
            Ok(end) => end,
            Err(ConnectionError::Io(e)) => {
                tracing::debug!(listener = %self.listener, peer = %self.peer, error = %e, "socket error");
                End::Lost
            }
            Err(e) => End::Error(e),
        }
    }

    /// Reads CONNECT, authenticates it (an enhanced authentication exchange reads AUTH packets
    /// too, within the same deadline) and answers it. `Ok(false)` when the client was refused
    /// or went away. Whatever the client sent after CONNECT stays in `read_buf` for the main
    /// loop.
    async fn connect_phase(&mut self) -> Result<bool, ConnectionError> {
        let timeout = Duration::from_secs(self.broker.config.limits.connect_timeout_secs);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Only a CONNECT may come first: anything else is refused at its first byte,
            // before the broker buffers a packet it will never accept.
            if self
                .read_buf
                .first()
                .is_some_and(|&b| b >> 4 != CONNECT_PACKET_TYPE)
            {
                return Err(DecodeError::NotConnect.into());
            }
            match self.decoder.frame_len(&self.read_buf) {
                Ok(Some(size)) => {
                    // The session keeps the CONNECT's strings (client id, will, username) for
                    // its whole life, and they are slices of the buffer they are decoded from:
                    // decode CONNECT from a copy of its own size, so they pin tens of bytes
                    // rather than a read block. One copy, however the bytes arrived.
                    let mut frame = BytesMut::from(&self.read_buf[..size]);
                    self.read_buf.advance(size);
                    // Read before decoding, which consumes the frame even when it fails: a
                    // refusal needs to know which protocol to answer in.
                    let level = peek_connect_level(&frame);
                    return match self.decoder.decode(&mut frame) {
                        Ok(Some(Packet::Connect(mut connect))) => {
                            self.version = connect.protocol;
                            self.decoder.set_version(connect.protocol);
                            // A TLS listener with `use_identity_as_username`: the certificate's
                            // CN is the username, whatever CONNECT says; no certificate, no
                            // connection.
                            match &self.certificate_username {
                                CertificateUsername::NotUsed => {}
                                CertificateUsername::Missing => {
                                    tracing::info!(listener = %self.listener, peer = %self.peer, "connection refused: no client certificate with a common name");
                                    self.refuse(ReasonCode::NOT_AUTHORIZED);
                                    self.flush().await?;
                                    return Ok(false);
                                }
                                CertificateUsername::Verified(name) => {
                                    connect.username = Some(name.clone());
                                }
                            }
                            let accepted =
                                match self.authenticate_connect(&connect, deadline).await? {
                                    ConnectAuth::Accepted { method, data } => {
                                        self.handle_connect(*connect, method, data)?
                                    }
                                    ConnectAuth::Refused => false,
                                };
                            self.flush().await?;
                            Ok(accepted)
                        }
                        Ok(_) => Err(DecodeError::NotConnect.into()),
                        Err(e) => {
                            self.refuse_bad_connect(&e, level);
                            Err(e.into())
                        }
                    };
                }
                Ok(None) => {}
                Err(e) => {
                    let level = peek_connect_level(&self.read_buf);
                    self.read_buf = BytesMut::new();
                    self.refuse_bad_connect(&e, level);
                    return Err(e.into());
                }
            }
            self.read_buf.reserve(4096);
            let read = tokio::select! {
                read = self.stream.read_buf(&mut self.read_buf) => read?,
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(listener = %self.listener, peer = %self.peer, "no CONNECT in time");
                    return Ok(false);
                }
                _ = self.broker.shutdown.cancelled() => return Ok(false),
            };
            if read == 0 {
                return Ok(false);
            }
        }
    }

    /// The next packet of an authentication exchange before CONNACK; none if the client closed,
    /// `deadline` passed or the broker is shutting down.
    pub(crate) async fn read_connect_phase_packet(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Packet>, ConnectionError> {
        loop {
            if let Some(packet) = self.decoder.decode(&mut self.read_buf)? {
                return Ok(Some(packet));
            }
            self.read_buf.reserve(4096);
            let read = tokio::select! {
                read = self.stream.read_buf(&mut self.read_buf) => read?,
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(peer = %self.peer, "authentication not finished in time");
                    return Ok(None);
                }
                _ = self.broker.shutdown.cancelled() => return Ok(None),
            };
            if read == 0 {
                return Ok(None);
            }
        }
    }

    /// Answers an unreadable CONNECT with a CONNACK where the spec allows one: 0x84 for an
    /// unknown protocol (in the 3.1.1 format every client reads), the decode error's code for a
    /// v5 CONNECT whose level byte we could read (`level`, read before decoding).
    fn refuse_bad_connect(&mut self, error: &DecodeError, level: Option<u8>) {
        let (version, code) = match error {
            DecodeError::UnsupportedProtocol(_) => (
                ProtocolVersion::V3_1_1,
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            ),
            DecodeError::NotConnect => return,
            other if level == Some(5) => (ProtocolVersion::V5, other.reason_code()),
            _ => return,
        };
        let connack = Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: code,
            ..ConnAck::default()
        });
        if codec::encode(&connack, version, &mut self.write_buf).is_err() {
            self.write_buf.clear();
        }
        // Written by `finish`, with the goodbye every refused connection gets.
    }

    async fn main_loop(&mut self) -> Result<End, ConnectionError> {
        let (notify, mut kicked) = match self.client.as_mut() {
            Some(client) => {
                let (_, replacement) = oneshot::channel();
                (
                    client.notify.clone(),
                    std::mem::replace(&mut client.kicked, replacement),
                )
            }
            None => return Ok(End::Refused),
        };
        let mut committed = self.broker.journal.as_ref().map(|j| j.watch());
        // Both clocks count whole packets, never bytes [MQTT-3.1.2-24]: a client trickling a
        // packet a byte at a time must not hold its connection (and a growing buffer) forever.
        let mut quiet = QuietDeadline::new(self.keep_alive);
        let keep_alive_timer = tokio::time::sleep_until(quiet.deadline());
        tokio::pin!(keep_alive_timer);
        // Packets that came in the same reads as CONNECT: handle them now, not when more
        // bytes happen to arrive (a client may send nothing more until it gets its SUBACK).
        let handled = self.process_input()?;
        quiet.after_input(handled, !self.read_buf.is_empty());
        keep_alive_timer.as_mut().reset(quiet.deadline());
        if let Some(reason) = self.disconnect_received {
            return Ok(End::Disconnected(reason));
        }
        if self.read_buf.is_empty() {
            // The CONNECT phase's read block: an idle client may never send another byte, and
            // the loop reserves one when there is input.
            self.read_buf = BytesMut::new();
        }
        loop {
            self.release_held();
            self.pump_outgoing();
            if !self.write_buf.is_empty() {
                let len = self.write_buf.len();
                tokio::select! {
                    biased;
                    _ = self.broker.shutdown.cancelled() => return Ok(End::Shutdown),
                    reason = &mut kicked => return Ok(End::Kicked(reason.unwrap_or(ReasonCode::SESSION_TAKEN_OVER))),
                    written = self.stream.write_all_flush(&mut self.write_buf) => written?,
                }
                self.broker
                    .stats
                    .bytes_sent
                    .fetch_add(len as u64, Ordering::Relaxed);
                if self.write_buf.capacity() > MAX_IDLE_WRITE_BUF {
                    // A burst grew it; don't keep that much per connection once it is sent.
                    self.write_buf = BytesMut::new();
                }
                continue;
            }
            // While more waits for the disk than the store's bound, input waits for a commit.
            let hold_input = self.broker.journal.as_ref().is_some_and(|j| j.congested());
            tokio::select! {
                biased;
                _ = self.broker.shutdown.cancelled() => return Ok(End::Shutdown),
                reason = &mut kicked => return Ok(End::Kicked(reason.unwrap_or(ReasonCode::SESSION_TAKEN_OVER))),
                // Wait for readiness without a buffer, and only then reserve one: an idle
                // connection holds no read buffer at all.
                input = self.stream.wait_input(), if !hold_input => {
                    let first = match input? {
                        Input::Ready => None,
                        Input::Byte(byte) => Some(byte),
                        Input::Closed => return Ok(End::Lost),
                    };
                    self.read_buf.reserve(self.read_size);
                    if let Some(byte) = first {
                        self.read_buf.put_u8(byte);
                    }
                    let spare = self.read_buf.capacity() - self.read_buf.len();
                    let read = match self.stream.try_read_buf(&mut self.read_buf) {
                        Ok(0) if first.is_none() => return Ok(End::Lost),
                        Ok(n) => {
                            // A read that filled the space means more was waiting: read bigger
                            // next time (large payloads, busy publishers); shrink back when
                            // reads get small.
                            if n == spare {
                                self.read_size = (self.read_size * 2).min(MAX_READ_SIZE);
                            } else if n < self.read_size / 4 {
                                self.read_size = (self.read_size / 2).max(MIN_READ_SIZE);
                            }
                            n + usize::from(first.is_some())
                        }
                        // Readiness can be spurious on TCP; a stream that gave one byte may
                        // have no more yet.
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => match first {
                            None => continue,
                            Some(_) => 1,
                        },
                        Err(e) => return Err(e.into()),
                    };
                    self.broker.stats.bytes_received.fetch_add(read as u64, Ordering::Relaxed);
                    let handled = self.process_input()?;
                    if quiet.after_input(handled, !self.read_buf.is_empty()) {
                        keep_alive_timer.as_mut().reset(quiet.deadline());
                    }
                    if let Some(reason) = self.disconnect_received {
                        return Ok(End::Disconnected(reason));
                    }
                    if self.read_buf.is_empty() {
                        // Every byte became a packet; the block's remaining capacity is shared
                        // with their payloads and a new one is reserved on the next read anyway.
                        self.read_buf = BytesMut::new();
                    }
                }
                _ = notify.notified() => {}
                _ = next_commit(&mut committed), if hold_input || self.is_holding() => {}
                _ = &mut keep_alive_timer => return Ok(End::KeepAliveTimeout),
            }
        }
    }

    fn is_holding(&self) -> bool {
        !self.held_acks.is_empty() || !self.held_out.is_empty()
    }

    /// Sends a PUBACK or PUBREC once everything the message was stored as is committed, and
    /// never ahead of an earlier one still waiting.
    pub fn send_when_durable(&mut self, packet: Packet) {
        match self.durable_point(self.held_acks.is_empty()) {
            Some(point) => self.held_acks.push_back((point, packet)),
            None => self.send(&packet),
        }
    }

    /// Sends an outbound PUBLISH or PUBREL once its in-flight record is committed, and never
    /// ahead of an earlier one still waiting.
    pub fn send_outbound_when_durable(&mut self, packet: Packet) {
        match self.durable_point(self.held_out.is_empty()) {
            Some(point) => self.held_out.push_back((point, packet)),
            None => self.send_delivery(packet),
        }
    }

    /// The batch to wait for before something just journalled may be sent; none if it may go
    /// now (no store, already committed, and nothing of its kind waiting ahead of it).
    fn durable_point(&self, nothing_ahead: bool) -> Option<u64> {
        let journal = self.broker.journal.as_ref()?;
        let point = journal.durable_point();
        (!nothing_ahead || journal.committed() < point).then_some(point)
    }

    /// Sends what waited for a batch that has committed.
    fn release_held(&mut self) {
        let Some(journal) = &self.broker.journal else {
            return;
        };
        let committed = journal.committed();
        while let Some((_, packet)) = pop_committed(&mut self.held_acks, committed) {
            self.send(&packet);
        }
        while let Some((_, packet)) = pop_committed(&mut self.held_out, committed) {
            self.send_delivery(packet);
        }
    }

    /// Decodes and handles every whole packet in the read buffer; returns how many.
    fn process_input(&mut self) -> Result<usize, ConnectionError> {
        let mut handled = 0;
        while let Some(packet) = self.decoder.decode(&mut self.read_buf)? {
            tracing::trace!(listener = %self.listener, peer = %self.peer, packet = packet.name(), "received");
            handled += 1;
            self.handle_packet(packet)?;
            if self.disconnect_received.is_some() {
                break;
            }
        }
        Ok(handled)
    }

    fn handle_packet(&mut self, packet: Packet) -> Result<(), ConnectionError> {
        match packet {
            Packet::Publish(publish) => self.handle_publish(publish),
            Packet::PubAck(ack) => self.handle_puback(ack),
            Packet::PubRec(ack) => self.handle_pubrec(ack),
            Packet::PubRel(ack) => self.handle_pubrel(ack),
            Packet::PubComp(ack) => self.handle_pubcomp(ack),
            Packet::Subscribe(subscribe) => self.handle_subscribe(subscribe),
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(unsubscribe),
            Packet::PingReq => self.handle_pingreq(),
            Packet::Disconnect(disconnect) => self.handle_disconnect(disconnect),
            Packet::Connect(_) => Err(ConnectionError::Protocol("second CONNECT on a connection")),
            Packet::Auth(auth) => self.handle_auth(auth),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(ConnectionError::Protocol("packet only a server may send"))
            }
        }
    }

    /// Encodes one packet into the write buffer.
    pub fn send(&mut self, packet: &Packet) {
        self.encode_out(packet);
    }

    /// Encodes one packet into the write buffer; false if it could not be encoded (logged).
    fn encode_out(&mut self, packet: &Packet) -> bool {
        tracing::trace!(listener = %self.listener, peer = %self.peer, packet = packet.name(), "sending");
        match codec::encode(packet, self.version, &mut self.write_buf) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(listener = %self.listener, peer = %self.peer, packet = packet.name(), error = %e, "cannot encode packet");
                false
            }
        }
    }

    /// Encodes a packet from the session's queue or in-flight set: a PUBLISH goes with a topic
    /// alias where the client allows them.
    pub fn send_delivery(&mut self, packet: Packet) {
        let (packet, assigned) = match (packet, self.outgoing_aliases.as_mut()) {
            (Packet::Publish(mut publish), Some(aliases)) => {
                let topic = publish.topic.clone();
                let assigned = aliases.apply(&mut publish) == Aliased::Assigned;
                (Packet::Publish(publish), assigned.then_some(topic))
            }
            (packet, _) => (packet, None),
        };
        if !self.encode_out(&packet) {
            // The client never saw this PUBLISH, so it must not be sent the alias alone later.
            if let (Some(topic), Some(aliases)) = (assigned, self.outgoing_aliases.as_mut()) {
                aliases.forget(&topic);
            }
        }
    }

    /// Moves what the session has queued into the write buffer, as far as flow control allows.
    fn pump_outgoing(&mut self) {
        let Some(client) = &self.client else { return };
        if self.held_out.len() >= MAX_PUBLISHES_PER_ROUND {
            // Enough waits for the disk already; the session keeps the rest.
            return;
        }
        let mut dropped = Dropped::default();
        let mut outgoing = std::mem::take(&mut self.outgoing);
        let hold = client.session.take_sendable(
            client.generation,
            Instant::now(),
            &mut outgoing,
            &mut dropped,
            MAX_PUBLISHES_PER_ROUND,
        );
        let session = client.session.clone();
        let sent = outgoing.len();
        for packet in outgoing.drain(..) {
            if hold || !self.held_out.is_empty() {
                self.send_outbound_when_durable(packet);
            } else {
                self.send_delivery(packet);
            }
        }
        self.outgoing = outgoing;
        if sent > 0 {
            self.broker
                .stats
                .messages_sent
                .fetch_add(sent as u64, Ordering::Relaxed);
            // The session's queue shrank: a shared group waiting for room may hand it more.
            self.broker.drain_groups_of(&session);
        }
        self.broker.stats.record_sending_drops(dropped);
    }

    pub(crate) async fn flush(&mut self) -> Result<(), ConnectionError> {
        if !self.write_buf.is_empty() {
            let len = self.write_buf.len();
            self.stream.write_all_flush(&mut self.write_buf).await?;
            self.broker
                .stats
                .bytes_sent
                .fetch_add(len as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Says goodbye where the protocol has a way to, and settles the session: will message,
    /// redispatch of shared copies, expiry.
    async fn finish(&mut self, end: End) {
        // A broken socket has nobody to say anything to; every other end is told, in order,
        // what was already answered (acks in the write buffer) and then why it ends.
        let socket_usable = !matches!(end, End::Lost | End::Error(ConnectionError::Io(_)));
        let disconnect = match &end {
            End::Shutdown => Some((ReasonCode::SERVER_SHUTTING_DOWN, None)),
            End::Kicked(code) => Some((*code, None)),
            End::KeepAliveTimeout => Some((ReasonCode::KEEP_ALIVE_TIMEOUT, None)),
            End::Error(ConnectionError::Io(_)) => None,
            End::Error(ConnectionError::Decode(DecodeError::NotConnect)) => None,
            End::Error(e) if self.client.is_some() => Some((e.reason_code(), Some(e.to_string()))),
            _ => None,
        };
        if let (Some((code, reason)), true) =
            (disconnect, self.version.is_v5() && self.client.is_some())
        {
            let reason_string = reason
                .filter(|_| self.request_problem_information)
                .map(ByteString::from);
            self.send(&Packet::Disconnect(Disconnect {
                reason_code: code,
                properties: DisconnectProperties {
                    reason_string,
                    ..DisconnectProperties::default()
                },
            }));
        }
        if socket_usable {
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, self.flush()).await;
        }
        // Half-close: the client sees end of stream after our last packet.
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, self.stream.shutdown()).await;
        self.settle(&end);
        if socket_usable {
            self.drain_input().await;
        }
    }

    /// Reads and discards what the client still sends, until it closes or DRAIN_TIMEOUT passes,
    /// so that closing does not turn unread input into a reset that hides our goodbye.
    async fn drain_input(&mut self) {
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        // On the heap, and only now: an array here would live in the connection task's future
        // for the connection's whole life (4 KiB of its ~5.6 KiB), idle or not.
        let mut scratch = vec![0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut scratch)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Hands the session back: redispatch of unfinished shared copies, will, expiry.
    fn settle(&mut self, end: &End) {
        let Some(client) = self.client.take() else {
            if let End::Error(e) = end {
                tracing::info!(listener = %self.listener, peer = %self.peer, error = %e, "connection closed before CONNECT completed");
            }
            return;
        };
        let session = client.session;
        self.broker
            .stats
            .clients_connected
            .fetch_sub(1, Ordering::Relaxed);
        match end {
            End::Error(e) => {
                tracing::info!(client_id = %session.client_id, listener = %self.listener, peer = %self.peer, error = %e, code = %e.reason_code(), "client disconnected: protocol violation")
            }
            other => {
                tracing::info!(client_id = %session.client_id, listener = %self.listener, peer = %self.peer, reason = ?other, "client disconnected")
            }
        }
        let Some(redispatch) = session.detach(client.generation) else {
            // A newer connection owns the session now; it has done the settling.
            return;
        };
        self.broker.redispatch(
            redispatch,
            Redelivery::MemberDisconnected,
            &session.client_id,
        );
        match end {
            End::Shutdown => {
                let _ = session.take_will();
                session.forget_will();
                return;
            }
            End::Disconnected(ReasonCode::NORMAL_DISCONNECTION) => {
                let _ = session.take_will();
                session.forget_will();
            }
            _ => {
                if let Some(last_will) = session.take_will() {
                    will::schedule(&self.broker, &session, last_will, client.generation);
                }
            }
        }
        BrokerState::schedule_expiry(&self.broker, session, client.generation);
    }
}

/// When a connection that sent no whole packet for too long is closed: 1.5 × its keep-alive
/// after its last whole packet [MQTT-3.1.2-24], and, with keep-alive off, [`PARTIAL_PACKET_TIMEOUT`]
/// after a packet started arriving without being finished.
#[derive(Debug)]
struct QuietDeadline {
    keep_alive: Option<Duration>,
    last_packet: tokio::time::Instant,
    partial_since: Option<tokio::time::Instant>,
    /// The deadline when nothing is due: fixed, so that an unchanged deadline compares equal.
    never: tokio::time::Instant,
}

impl QuietDeadline {
    fn new(keep_alive: Option<Duration>) -> QuietDeadline {
        let now = tokio::time::Instant::now();
        QuietDeadline {
            keep_alive: keep_alive.map(|k| k.mul_f32(1.5)),
            last_packet: now,
            partial_since: None,
            never: now + Duration::from_secs(100 * 365 * 24 * 3600),
        }
    }

    /// Notes a read that completed `packets` whole packets and left a packet unfinished or
    /// not; true if the deadline moved.
    fn after_input(&mut self, packets: usize, unfinished: bool) -> bool {
        let now = tokio::time::Instant::now();
        let before = self.deadline();
        if packets > 0 {
            self.last_packet = now;
            self.partial_since = None;
        }
        if !unfinished {
            self.partial_since = None;
        } else if self.partial_since.is_none() {
            self.partial_since = Some(now);
        }
        self.deadline() != before
    }

    fn deadline(&self) -> tokio::time::Instant {
        match self.keep_alive {
            Some(timeout) => self.last_packet + timeout,
            None => self
                .partial_since
                .map_or(self.never, |since| since + PARTIAL_PACKET_TIMEOUT),
        }
    }
}

fn pop_committed(held: &mut VecDeque<(u64, Packet)>, committed: u64) -> Option<(u64, Packet)> {
    if held.front().is_some_and(|(point, _)| *point <= committed) {
        held.pop_front()
    } else {
        None
    }
}

/// Waits for the store's next commit; forever when there is no store.
async fn next_commit(committed: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match committed {
        Some(receiver) => {
            if receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// The protocol level byte of a CONNECT at the start of `buf`, if it can be read: fixed header,
/// then the protocol name as a length-prefixed string, then the level.
fn peek_connect_level(buf: &[u8]) -> Option<u8> {
    let mut index = 1;
    // Remaining length: up to four bytes with continuation bits.
    for _ in 0..4 {
        let byte = *buf.get(index)?;
        index += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let name_len = u16::from_be_bytes([*buf.get(index)?, *buf.get(index + 1)?]) as usize;
    buf.get(index + 2 + name_len).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output_size<A, B, C, D, E, G, R>(_: impl FnOnce(A, B, C, D, E, G) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// The connection task's future is allocated per connection and lives as long as it: at
    /// 10k idle connections every KiB here is 10 MiB. It was 5.6 KiB with a 4 KiB drain buffer
    /// inline (issue #15).
    #[test]
    fn only_whole_packets_put_the_deadline_off() {
        let mut quiet = QuietDeadline::new(Some(Duration::from_secs(2)));
        let first = quiet.deadline();
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            !quiet.after_input(0, true),
            "a byte of a packet is no packet"
        );
        assert_eq!(quiet.deadline(), first);
        assert!(quiet.after_input(1, false));
        assert!(quiet.deadline() > first);
    }

    #[test]
    fn without_keep_alive_a_started_packet_has_a_deadline() {
        let mut quiet = QuietDeadline::new(None);
        let idle = quiet.deadline();
        assert!(idle > tokio::time::Instant::now() + Duration::from_secs(3600));
        assert!(!quiet.after_input(2, false), "idle between whole packets");
        assert!(quiet.after_input(0, true));
        let started = quiet.deadline();
        assert!(started <= tokio::time::Instant::now() + PARTIAL_PACKET_TIMEOUT);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!quiet.after_input(0, true), "more bytes of the same packet");
        assert_eq!(quiet.deadline(), started);
        assert!(quiet.after_input(1, false));
        assert_eq!(quiet.deadline(), idle);
    }

    #[test]
    fn connection_future_stays_small() {
        let size = output_size(run);
        assert!(size <= 2048, "the connection future is {size} bytes");
    }
}
