//! What one connection has to write to its client, before it reaches the socket.
//!
//! Output is batched: everything the handlers and the session produce in one round is encoded
//! here, in the client's protocol version, into one buffer that the connection task
//! (`net/connection/`) writes with one call. A PUBLISH towards a v5 client goes with a topic
//! alias where the client allows them. Packets that announce something the store has not
//! committed yet (an acknowledgement, an in-flight PUBLISH or PUBREL) wait here for the batch
//! holding it, in order.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use crate::codec;
use crate::packet::{Packet, ProtocolVersion};

use crate::broker::handle::topic_alias::{Aliased, OutgoingAliases};
use crate::broker::session::{Dropped, Session};
use crate::broker::store::Journal;

/// Most PUBLISH packets moved from the session queue into the write buffer per round, so one
/// backlog cannot balloon the write buffer.
const MAX_PUBLISHES_PER_ROUND: usize = 256;
/// Write buffer capacity a connection may keep after a flush; a larger one (grown by a burst)
/// is released so that a quiet connection does not pin it.
const MAX_IDLE_WRITE_BUF: usize = 64 * 1024;

pub(crate) struct Outbound {
    /// The listener the connection came from and the peer at its other end, which the log
    /// lines of the whole connection name.
    listener: Arc<str>,
    peer: SocketAddr,
    /// What packets are encoded in: 3.1.1 until CONNECT says otherwise.
    version: ProtocolVersion,
    /// Encoded packets not yet written. Starts empty and gets memory when there is something to
    /// hold: at 10k idle connections, an eager 4 KiB buffer each was much of the broker's memory.
    buf: BytesMut,
    /// Topic aliases we use towards a v5 client that allows them; none otherwise.
    aliases: Option<OutgoingAliases>,
    /// The store whose commits held packets wait for; none when memory only.
    journal: Option<Arc<Journal>>,
    /// PUBACKs and PUBRECs waiting for the store to commit their message, with the batch
    /// each waits for, in the order their PUBLISHes came [MQTT-4.6.0-2]. Bounded by our
    /// Receive Maximum (QoS 2) and by the client's pipelining (QoS 1).
    held_acks: VecDeque<(u64, Packet)>,
    /// Outbound packets (PUBLISH, PUBREL) waiting for the commit of their in-flight record, in
    /// send order. Bounded: nothing more is moved out of the session while it is long.
    held_out: VecDeque<(u64, Packet)>,
    /// Scratch space for packets moved out of the session, reused across rounds.
    scratch: Vec<Packet>,
}

impl Outbound {
    pub fn new(listener: Arc<str>, peer: SocketAddr, journal: Option<Arc<Journal>>) -> Outbound {
        Outbound {
            listener,
            peer,
            version: ProtocolVersion::V3_1_1,
            buf: BytesMut::new(),
            aliases: None,
            journal,
            held_acks: VecDeque::new(),
            held_out: VecDeque::new(),
            scratch: Vec::new(),
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn listener(&self) -> &str {
        &self.listener
    }

    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The version CONNECT asked for: every packet from now on is encoded in it.
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = version;
    }

    /// The aliases this connection may use towards its client (set once CONNECT is accepted).
    pub fn set_aliases(&mut self, aliases: Option<OutgoingAliases>) {
        self.aliases = aliases;
    }

    /// Encodes one packet into the write buffer.
    pub fn send(&mut self, packet: &Packet) {
        self.encode(packet);
    }

    /// Encodes one packet into the write buffer; false if it could not be encoded (logged).
    fn encode(&mut self, packet: &Packet) -> bool {
        tracing::trace!(listener = %self.listener, peer = %self.peer, packet = packet.name(), "sending");
        match codec::encode(packet, self.version, &mut self.buf) {
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
        let (packet, assigned) = match (packet, self.aliases.as_mut()) {
            (Packet::Publish(mut publish), Some(aliases)) => {
                let topic = publish.topic.clone();
                let assigned = aliases.apply(&mut publish) == Aliased::Assigned;
                (Packet::Publish(publish), assigned.then_some(topic))
            }
            (packet, _) => (packet, None),
        };
        if !self.encode(&packet) {
            // The client never saw this PUBLISH, so it must not be sent the alias alone later.
            if let (Some(topic), Some(aliases)) = (assigned, self.aliases.as_mut()) {
                aliases.forget(&topic);
            }
        }
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
        let journal = self.journal.as_ref()?;
        let point = journal.durable_point();
        (!nothing_ahead || journal.committed() < point).then_some(point)
    }

    /// Sends what waited for a batch that has committed.
    pub fn release_held(&mut self) {
        let Some(journal) = &self.journal else {
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

    /// Whether something waits for the store to commit.
    pub fn is_holding(&self) -> bool {
        !self.held_acks.is_empty() || !self.held_out.is_empty()
    }

    /// Moves what `session` has queued for this connection (`generation`) into the write
    /// buffer, as far as flow control allows; returns how many packets it took, none if it
    /// did not ask the session.
    pub fn take_from_session(
        &mut self,
        session: &Session,
        generation: u64,
        dropped: &mut Dropped,
    ) -> Option<usize> {
        if self.held_out.len() >= MAX_PUBLISHES_PER_ROUND {
            // Enough waits for the disk already; the session keeps the rest.
            return None;
        }
        let mut taken = std::mem::take(&mut self.scratch);
        let hold = session.take_sendable(
            generation,
            Instant::now(),
            &mut taken,
            dropped,
            MAX_PUBLISHES_PER_ROUND,
        );
        let count = taken.len();
        for packet in taken.drain(..) {
            if hold || !self.held_out.is_empty() {
                self.send_outbound_when_durable(packet);
            } else {
                self.send_delivery(packet);
            }
        }
        self.scratch = taken;
        Some(count)
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// The encoded bytes, for the socket to write (and consume).
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// After a write: a burst grew the buffer, so don't keep that much per connection.
    pub fn shrink_if_large(&mut self) {
        if self.buf.capacity() > MAX_IDLE_WRITE_BUF {
            self.buf = BytesMut::new();
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
