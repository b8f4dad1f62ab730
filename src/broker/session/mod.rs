//! A session: what the broker keeps for one client id across its connections — subscriptions,
//! the queue of messages not yet sent, QoS 1/2 messages in flight both ways, and the will.
//!
//! The state sits behind a `parking_lot::Mutex` rather than a tokio one because no `.await`
//! ever happens while it is held: every operation is a short, bounded piece of bookkeeping.
//! A session's lock is last in the broker's lock order (see `broker`): a session never calls
//! out while holding it.

mod ack;
pub mod durable;
mod incoming;
mod link;
mod mailbox;
mod outbound;
mod record;
mod restore;
#[cfg(test)]
mod tests;

pub use ack::AckOutcome;
pub use link::{Attached, EndedSession, TakenOver};
pub use outbound::Dropped;
pub use restore::Restored;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use bytestring::ByteString;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{oneshot, Notify};

use crate::packet::{LastWill, ProtocolVersion, ReasonCode, SubscriptionOptions};

use crate::broker::delivery::{CopyTally, Delivery};
use crate::broker::message::SessionId;
use crate::broker::owner::Owner;
use crate::broker::queue::DurableQueue;
use crate::broker::store::Journal;
use durable::SessionDisk;

/// A subscription as the session remembers it, keyed by the filter string the client sent.
#[derive(Debug, Clone)]
pub struct StoredSubscription {
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutboundStage {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREC received and PUBREL sent; waiting for PUBCOMP.
    Released,
}

#[derive(Debug)]
struct Inflight {
    /// Send order, so a resumed session resends in the original order [MQTT-4.6.0-1].
    sequence: u64,
    stage: OutboundStage,
    delivery: Delivery,
    /// Set when the ack deadline passed and the copy went to another member: a late PUBACK is
    /// accepted, counted in this tally and otherwise ignored. Weak: it no longer counts as
    /// the group's copy in flight.
    abandoned: Option<Weak<CopyTally>>,
}

/// The connection currently attached to a session.
#[derive(Debug)]
struct Link {
    generation: u64,
    /// Wakes that connection's writer when something was queued for it.
    notify: Arc<Notify>,
    /// Tells that connection to go away (takeover, administrative action).
    kick: Option<oneshot::Sender<ReasonCode>>,
    version: ProtocolVersion,
    /// QoS 1/2 messages allowed in flight: min(client's Receive Maximum, our cap).
    window: usize,
    /// The client's Maximum Packet Size; larger messages are not sent to it [MQTT-3.1.2-24].
    max_packet_size: u32,
}

/// Ack deadlines missed in a row after which a member takes no new shared messages until it
/// acknowledges one.
const UNHEALTHY_AFTER_TIMEOUTS: u32 = 2;

#[derive(Debug)]
pub struct Session {
    pub id: SessionId,
    pub client_id: ByteString,
    /// Messages in flight plus queued, mirrored from `state` whenever its lock is released, so
    /// shared groups can read every member's load for each message without taking N locks.
    busy: AtomicU32,
    /// The attached connection's in-flight window, mirrored likewise; 0 while offline.
    window: AtomicU32,
    /// Where the session's changes are journalled; none when the broker keeps no store.
    disk: Option<SessionDisk>,
    /// Itself, for the store's refills, which arrive on the committer thread.
    me: Weak<Session>,
    state: Mutex<SessionState>,
}

/// The session's lock. Releasing it refreshes the lock-free load mirrors, so every path that
/// changes the queue, the in-flight set or the connection keeps them right without remembering to.
struct StateGuard<'a> {
    session: &'a Session,
    state: MutexGuard<'a, SessionState>,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = SessionState;

    fn deref(&self) -> &SessionState {
        &self.state
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut SessionState {
        &mut self.state
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        let window = self.state.link.as_ref().map_or(0, |l| l.window);
        let mut busy = self.state.inflight.len() + self.state.queue.in_memory();
        if self.state.ack_timeouts >= UNHEALTHY_AFTER_TIMEOUTS {
            // Unhealthy: full to the groups and their strategies until it acknowledges.
            busy = busy.max(window);
        }
        self.session
            .busy
            .store(u32::try_from(busy).unwrap_or(u32::MAX), Ordering::Relaxed);
        self.session
            .window
            .store(u32::try_from(window).unwrap_or(u32::MAX), Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct SessionState {
    link: Option<Link>,
    /// Shared ack deadlines missed in a row (any acknowledgement resets it); from
    /// [`UNHEALTHY_AFTER_TIMEOUTS`] on, the member reads as full.
    ack_timeouts: u32,
    /// Bumped at every attach, so a stale connection cannot touch a session it lost.
    generation: u64,
    /// True once the session has ended; late deliveries to it are dropped.
    ended: bool,
    subscriptions: HashMap<ByteString, StoredSubscription>,
    /// Copies waiting to be sent: a memory window, and (persistent) the rest in the store.
    queue: DurableQueue<Delivery>,
    inflight: HashMap<u16, Inflight, ahash::RandomState>,
    /// Whole-message bytes of `inflight`: the session's byte bound covers what it holds in
    /// flight as well as what is queued, or a window of large messages would escape it.
    inflight_bytes: usize,
    next_sequence: u64,
    next_packet_id: u16,
    /// QoS 2 PUBLISHes received and acknowledged with PUBREC, waiting for PUBREL.
    incoming_qos2: HashSet<u16, ahash::RandomState>,
    /// Seconds the session outlives its connection; `u32::MAX` never expires.
    expiry_interval: u32,
    will: Option<LastWill>,
    /// The will as the stored record carries it: kept while a delayed will waits, so a restart
    /// still publishes it; cleared once it is published or cancelled.
    stored_will: Option<LastWill>,
    /// When the last connection left (Unix ms); none while one is attached.
    disconnected_at_ms: Option<u64>,
    /// The session has a record in the store (it is, or was, persistent): its end removes it.
    on_disk: bool,
    /// The identity that created it; the only one that may resume or replace it, and the
    /// username its will is published under.
    owner: Owner,
}

impl Session {
    pub fn new(
        id: SessionId,
        client_id: ByteString,
        owner: Owner,
        expiry_interval: u32,
        journal: Option<Arc<Journal>>,
    ) -> Arc<Session> {
        let disk = journal.map(|j| SessionDisk::new(j, &client_id));
        let queue = DurableQueue::new(disk.as_ref().map(|d| d.queue.clone()));
        Arc::new_cyclic(|me| Session {
            id,
            disk,
            me: me.clone(),
            client_id,
            busy: AtomicU32::new(0),
            window: AtomicU32::new(0),
            state: Mutex::new(SessionState {
                expiry_interval,
                next_packet_id: 1,
                owner,
                queue,
                ..SessionState::default()
            }),
        })
    }

    fn lock(&self) -> StateGuard<'_> {
        StateGuard {
            session: self,
            state: self.state.lock(),
        }
    }

    /// Connection state and load for strategies: messages in flight plus queued, against the
    /// in-flight window. Lock-free: read from the mirrors the lock keeps up to date.
    pub fn member_load(&self) -> crate::strategy::MemberLoad {
        let capacity = self.window.load(Ordering::Relaxed);
        crate::strategy::MemberLoad {
            inflight: self.busy.load(Ordering::Relaxed),
            capacity,
            online: capacity > 0,
        }
    }

    /// Queued message count (in memory and on disk), for statistics and tests.
    pub fn queued(&self) -> usize {
        self.lock().queued_count()
    }

    /// Queued messages held in memory, for tests of the memory window.
    pub fn queued_in_memory(&self) -> usize {
        self.lock().queue.in_memory()
    }

    pub fn inflight(&self) -> usize {
        self.lock().inflight.len()
    }
}

impl SessionState {
    /// Whole-message bytes the session holds: queued (in memory and on disk) and in flight.
    pub(super) fn held_bytes(&self) -> usize {
        self.queue.bytes() + self.inflight_bytes
    }

    /// Messages queued, in memory and on disk.
    pub(super) fn queued_count(&self) -> usize {
        self.queue.count()
    }
}
