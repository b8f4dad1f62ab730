//! A session: what the broker keeps for one client id across its connections — subscriptions,
//! the queue of messages not yet sent, QoS 1/2 messages in flight both ways, and the will.
//!
//! The state sits behind a `parking_lot::Mutex` rather than a tokio one because no `.await`
//! ever happens while it is held: every operation is a short, bounded piece of bookkeeping.
//! A session's lock is last in the broker's lock order (see `broker`): a session never calls
//! out while holding it.

pub mod durable;
pub mod will;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytestring::ByteString;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{oneshot, Notify};

use crate::codec;
use crate::packet::{
    Ack, LastWill, Packet, ProtocolVersion, Publish, QoS, ReasonCode, SubscriptionOptions,
};

use crate::broker::message::delivery::{
    CopyTally, Delivery, Enqueued, GroupId, Mailbox, QueueLimits,
};
use crate::broker::message::{Quota, SessionId};
use crate::broker::owner::Owner;
use crate::broker::queue::{Bound, DurableQueue, Spill};
use crate::broker::store::encoding::{unix_now_ms, StoredSession};
use crate::broker::store::journal::RefillResult;
use crate::broker::store::{Journal, QueueStore, StoredRef};
use durable::{copy_fields, SessionDisk};

/// Copies [`Session::take_sendable`] gave up on, by why.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Their Message Expiry Interval ran out while they waited.
    pub expired: usize,
    /// Larger than the client's Maximum Packet Size.
    pub too_large: usize,
}

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

/// What a connection needs to know about the link it just made.
#[derive(Debug)]
pub struct Attached {
    pub generation: u64,
    pub notify: Arc<Notify>,
    pub kicked: oneshot::Receiver<ReasonCode>,
    /// Unfinished outbound QoS 1/2 exchanges to resend on this connection, in order.
    pub resend: Vec<Packet>,
    /// Shared-subscription copies the previous connection left unfinished, to hand back to
    /// their groups.
    pub redispatch: Vec<Delivery>,
}

/// What a takeover leaves behind of the connection it replaced.
#[derive(Debug, Default)]
pub struct TakenOver {
    pub redispatch: Vec<Delivery>,
    pub previous_will: Option<LastWill>,
}

/// Outcome of an acknowledgement from the client.
#[derive(Debug)]
pub enum AckOutcome {
    /// The packet id was in flight; the slot is free (or, for PUBREC, PUBREL must be sent).
    Done,
    /// PUBREL is to be sent; `stored` once the store has committed the new stage.
    SendPubRel {
        stored: bool,
    },
    /// A shared copy the member refused (PUBACK or PUBREC >= 0x80): done with here; its group
    /// decides whether it is dead-lettered [MQTT-4.8.2-6: never sent to another member].
    Rejected(Box<Delivery>),
    UnknownPacketId,
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

    /// The journal, while the session is persistent (expiry above zero).
    fn persistent<'a>(&'a self, state: &SessionState) -> Option<&'a SessionDisk> {
        self.disk.as_ref().filter(|_| state.expiry_interval > 0)
    }

    /// Journals the session's record, if it is persistent.
    fn save_record(&self, state: &mut SessionState) {
        if let Some(disk) = self.persistent(state) {
            state.on_disk = true;
            disk.save(&StoredSession {
                expiry_interval: state.expiry_interval,
                disconnected_at_ms: state.disconnected_at_ms,
                subscriptions: state
                    .subscriptions
                    .iter()
                    .map(|(filter, sub)| (filter.to_string(), sub.options, sub.identifier))
                    .collect(),
                will: state.stored_will.clone(),
                owner: state.owner.clone(),
            });
        }
    }

    /// Applies a new expiry interval: a session that stops being persistent leaves the store.
    fn change_expiry(&self, state: &mut SessionState, expiry_interval: u32) {
        let was_persistent = state.expiry_interval > 0;
        state.expiry_interval = expiry_interval;
        match (&self.disk, was_persistent, expiry_interval > 0) {
            (Some(disk), true, false) if state.on_disk => {
                disk.delete();
                state.on_disk = false;
            }
            (Some(_), _, true) => self.save_record(state),
            _ => {}
        }
    }

    /// Asks the store for the next rows of the queue when its memory window has run low.
    fn maybe_refill(&self, state: &mut SessionState) {
        let me = self.me.clone();
        state.queue.maybe_refill(|| {
            Box::new(move |rows| {
                if let Some(session) = me.upgrade() {
                    session.refilled(rows);
                }
            })
        });
    }

    /// Rows of the disk tail read back: they join the memory window in order.
    fn refilled(&self, rows: RefillResult) {
        let mut state = self.lock();
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(client_id = %self.client_id, error = %e, "store: cannot read the session's queue back");
                state.queue.refill_failed();
                return;
            }
        };
        if state.ended {
            return;
        }
        state
            .queue
            .refilled(rows, &mut |id, entry, store: &Arc<dyn QueueStore>| {
                let copy = entry.copy?;
                Some(Delivery {
                    message: entry.message,
                    qos: copy.qos,
                    retain: copy.retain,
                    subscription_ids: copy.subscription_ids,
                    group: None,
                    stored: Some(StoredRef::new(store.clone(), id)),
                })
            });
        if let Some(link) = &state.link {
            link.notify.notify_one();
        }
        self.maybe_refill(&mut state);
    }

    fn lock(&self) -> StateGuard<'_> {
        StateGuard {
            session: self,
            state: self.state.lock(),
        }
    }

    /// Detaches the connection currently attached, if any, telling it to go away with
    /// `kick_reason`. Returns its unfinished shared copies and its will. Called before a new
    /// connection attaches, so the copies go to other members while this one is offline.
    pub fn take_over(&self, kick_reason: ReasonCode) -> TakenOver {
        let mut state = self.lock();
        let mut taken = TakenOver::default();
        if let Some(mut old) = state.link.take() {
            if let Some(kick) = old.kick.take() {
                let _ = kick.send(kick_reason);
            }
            state.take_shared_unfinished(&mut taken.redispatch);
            taken.previous_will = state.will.take();
        }
        taken
    }

    /// Attaches a new connection. Any connection still attached is taken over first (see
    /// [`Session::take_over`]); its shared leftovers are returned in `Attached` (its will is
    /// dropped: callers that care take over explicitly first).
    pub fn attach(
        &self,
        version: ProtocolVersion,
        window: usize,
        max_packet_size: u32,
        will: Option<LastWill>,
        expiry_interval: u32,
    ) -> Attached {
        let taken = self.take_over(ReasonCode::SESSION_TAKEN_OVER);
        let mut state = self.lock();
        state.generation += 1;
        let generation = state.generation;
        let notify = Arc::new(Notify::new());
        let (kick, kicked) = oneshot::channel();
        state.link = Some(Link {
            generation,
            notify: notify.clone(),
            kick: Some(kick),
            version,
            window: window.max(1),
            max_packet_size,
        });
        state.stored_will = will.clone();
        state.will = will;
        state.disconnected_at_ms = None;
        self.change_expiry(&mut state, expiry_interval);
        let resend = state.resend_packets();
        Attached {
            generation,
            notify,
            kicked,
            resend,
            redispatch: taken.redispatch,
        }
    }

    /// Detaches connection `generation` if it is still the attached one. Returns the
    /// shared-subscription copies to hand back to their groups, or `None` if a newer connection
    /// already took over (that connection owns the session now).
    pub fn detach(&self, generation: u64) -> Option<Vec<Delivery>> {
        let mut state = self.lock();
        match &state.link {
            Some(link) if link.generation == generation => {}
            _ => return None,
        }
        state.link = None;
        state.disconnected_at_ms = Some(unix_now_ms());
        self.save_record(&mut state);
        let mut redispatch = Vec::new();
        state.take_shared_unfinished(&mut redispatch);
        Some(redispatch)
    }

    pub fn is_online(&self) -> bool {
        self.lock().link.is_some()
    }

    pub fn generation(&self) -> u64 {
        self.lock().generation
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

    /// Queues a delivery and wakes the attached connection, if any.
    pub fn enqueue(&self, mut delivery: Delivery, limits: QueueLimits) -> Enqueued {
        let mut state = self.lock();
        if state.ended {
            return Enqueued::Ended;
        }
        let weight = delivery.message.weight();
        let mut outcome = Enqueued::Queued;
        let in_flight = state.inflight_bytes;
        if let Some(bound) =
            state
                .queue
                .full(weight, in_flight, limits.max_messages, limits.max_bytes)
        {
            // Overflow policy: QoS 0 is the cheapest to lose, so the oldest QoS 0 message makes
            // room; if there is none, the newest message is refused.
            let oldest_qos0 = state.queue.iter().position(|d| d.qos == QoS::AtMostOnce);
            match oldest_qos0 {
                Some(index) if bound == Bound::Messages || weight <= limits.max_bytes => {
                    if let Some(dropped) = state.queue.remove(index) {
                        self.finished(&dropped);
                    }
                    outcome = Enqueued::QueuedDroppingOldestQos0;
                }
                _ if bound == Bound::Messages => return Enqueued::Refused(Quota::SessionMessages),
                _ => return Enqueued::Refused(Quota::SessionBytes),
            }
            if state.held_bytes() + weight > limits.max_bytes {
                return Enqueued::Refused(Quota::SessionBytes);
            }
        }
        // A QoS 1/2 copy of the session's own is stored; a shared copy already is, in its
        // group's queue.
        let mut stored_here = None;
        let own_durable_copy = delivery.qos != QoS::AtMostOnce
            && delivery.group.is_none()
            && delivery.stored.is_none()
            && self.persistent(&state).is_some();
        if own_durable_copy {
            let store = state.queue.store().cloned();
            let id = state
                .queue
                .append(&delivery.message, Some(&copy_fields(&delivery)));
            if let (Some(store), Some(id)) = (store, id) {
                delivery.stored = Some(StoredRef::new(store, id));
                stored_here = Some(id);
            }
        }
        if !state.queue.push_back(delivery, stored_here) {
            // Past the memory window: the copy waits on disk only.
            return outcome;
        }
        if let Some(link) = &state.link {
            link.notify.notify_one();
        }
        outcome
    }

    /// Moves queued messages into flight for connection `generation`, as far as its window
    /// allows, appending the PUBLISH packets to send. Expired messages and messages larger than
    /// the client accepts are dropped here and counted in `dropped`. Returns true when the
    /// packets must wait for the store's commit before they are written (see
    /// [`durable::sent`]).
    pub fn take_sendable(
        &self,
        generation: u64,
        now: Instant,
        out: &mut Vec<Packet>,
        dropped: &mut Dropped,
        max_packets: usize,
    ) -> bool {
        let mut hold = false;
        let mut state = self.lock();
        let (window, max_packet_size, version) = match &state.link {
            Some(link) if link.generation == generation => {
                (link.window, link.max_packet_size, link.version)
            }
            _ => return false,
        };
        while let Some(front) = state.queue.front() {
            if out.len() >= max_packets {
                break;
            }
            if front.qos != QoS::AtMostOnce && state.inflight.len() >= window {
                break;
            }
            let Some(delivery) = state.queue.pop_front() else {
                break;
            };
            let packet_id = if delivery.qos == QoS::AtMostOnce {
                None
            } else {
                match state.allocate_packet_id() {
                    Some(id) => Some(id),
                    None => {
                        state.queue.push_front(delivery);
                        break;
                    }
                }
            };
            let Ok(publish) = build_publish(&delivery, packet_id, false, now) else {
                dropped.expired += 1;
                if let Some(tag) = &delivery.group {
                    CopyTally::count(&tag.tally.expired);
                }
                self.finished(&delivery);
                continue;
            };
            let packet = Packet::Publish(publish);
            if !fits(&packet, version, max_packet_size) {
                dropped.too_large += 1;
                if let Some(tag) = &delivery.group {
                    CopyTally::count(&tag.tally.too_large);
                }
                self.finished(&delivery);
                continue;
            }
            if let Some(id) = packet_id {
                hold |= durable::sent(&self.client_id, &delivery, id, false);
                let sequence = state.next_sequence;
                state.next_sequence += 1;
                state.inflight_bytes += delivery.message.weight();
                state.inflight.insert(
                    id,
                    Inflight {
                        sequence,
                        stage: OutboundStage::Published,
                        delivery,
                        abandoned: None,
                    },
                );
            } else {
                // Sent at QoS 0 (a stored shared copy to a member granted QoS 0): done with.
                if let Some(tag) = &delivery.group {
                    CopyTally::count(&tag.tally.acked);
                }
                self.finished(&delivery);
            }
            out.push(packet);
        }
        self.maybe_refill(&mut state);
        hold
    }

    /// A copy is done with: it leaves the store, if it is there, and its group's key is free.
    fn finished(&self, delivery: &Delivery) {
        if let Some(tag) = &delivery.group {
            tag.resolved();
        }
        if let Some(stored) = &delivery.stored {
            stored.finished();
        }
    }

    /// The client acknowledged a copy: it is done with, and its group (if any) counts it.
    fn finished_by_member(&self, delivery: &Delivery) {
        if let Some(tag) = &delivery.group {
            CopyTally::count(&tag.tally.acked);
        }
        self.finished(delivery);
    }

    /// Handles PUBACK (`qos2 == false`) or PUBREC (`qos2 == true`) for `packet_id`, received on
    /// connection `generation`.
    pub fn acknowledge_publish(
        &self,
        generation: u64,
        packet_id: u16,
        reason: ReasonCode,
        pubrec: bool,
    ) -> AckOutcome {
        let mut state = self.lock();
        if !state.is_attached(generation) {
            return AckOutcome::UnknownPacketId;
        }
        let Some(entry) = state.inflight.get_mut(&packet_id) else {
            return AckOutcome::UnknownPacketId;
        };
        if let Some(abandoned) = entry.abandoned.take() {
            // Past its deadline and sent elsewhere: a duplicate, counted, nothing more.
            if let Some(tally) = abandoned.upgrade() {
                CopyTally::count(&tally.late_acks);
            }
            state.ack_timeouts = 0;
            state.remove_inflight(packet_id);
            return AckOutcome::Done;
        }
        let expected_qos = if pubrec {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        };
        if entry.delivery.qos != expected_qos || entry.stage != OutboundStage::Published {
            return AckOutcome::UnknownPacketId;
        }
        if pubrec && !reason.is_error() {
            entry.stage = OutboundStage::Released;
            let stored = durable::sent(&self.client_id, &entry.delivery, packet_id, true);
            return AckOutcome::SendPubRel { stored };
        }
        // PUBACK, or PUBREC with a failure code: the exchange is over; a failed message is
        // discarded, never sent elsewhere [MQTT-4.8.2-6].
        state.ack_timeouts = 0;
        let Some(entry) = state.remove_inflight(packet_id) else {
            return AckOutcome::Done;
        };
        if reason.is_error() && entry.delivery.group.is_some() {
            self.finished(&entry.delivery);
            return AckOutcome::Rejected(Box::new(entry.delivery));
        }
        self.finished_by_member(&entry.delivery);
        AckOutcome::Done
    }

    /// Handles PUBCOMP for `packet_id`, received on connection `generation`.
    pub fn complete_publish(&self, generation: u64, packet_id: u16) -> AckOutcome {
        let mut state = self.lock();
        if !state.is_attached(generation) {
            return AckOutcome::UnknownPacketId;
        }
        match state.inflight.get(&packet_id) {
            Some(entry) if entry.stage == OutboundStage::Released => {
                state.ack_timeouts = 0;
                if let Some(entry) = state.remove_inflight(packet_id) {
                    self.finished_by_member(&entry.delivery);
                }
                AckOutcome::Done
            }
            _ => AckOutcome::UnknownPacketId,
        }
    }

    /// Records an inbound QoS 2 PUBLISH; false if `packet_id` was already pending (a resend
    /// the broker must acknowledge again without routing it twice).
    pub fn begin_incoming_qos2(&self, packet_id: u16) -> bool {
        let mut state = self.lock();
        let new = state.incoming_qos2.insert(packet_id);
        if let (true, Some(disk)) = (new, self.persistent(&state)) {
            disk.incoming(packet_id, true);
        }
        new
    }

    pub fn incoming_qos2_pending(&self) -> usize {
        self.lock().incoming_qos2.len()
    }

    pub fn is_incoming_qos2_pending(&self, packet_id: u16) -> bool {
        self.lock().incoming_qos2.contains(&packet_id)
    }

    /// Handles PUBREL: true if `packet_id` was pending.
    pub fn release_incoming_qos2(&self, packet_id: u16) -> bool {
        let mut state = self.lock();
        let was = state.incoming_qos2.remove(&packet_id);
        if let (true, Some(disk)) = (was, self.persistent(&state)) {
            disk.incoming(packet_id, false);
        }
        was
    }

    /// Stores a subscription; returns the previous one for the same filter, if any.
    pub fn add_subscription(
        &self,
        filter: ByteString,
        sub: StoredSubscription,
    ) -> Option<StoredSubscription> {
        let mut state = self.lock();
        let previous = state.subscriptions.insert(filter, sub);
        self.save_record(&mut state);
        previous
    }

    pub fn remove_subscription(&self, filter: &str) -> Option<StoredSubscription> {
        let mut state = self.lock();
        let removed = state.subscriptions.remove(filter);
        if removed.is_some() {
            self.save_record(&mut state);
        }
        removed
    }

    /// The filters the session is subscribed with, as it names them (sorted).
    pub fn subscription_filters(&self) -> Vec<String> {
        let mut filters: Vec<String> = self
            .lock()
            .subscriptions
            .keys()
            .map(|f| f.to_string())
            .collect();
        filters.sort();
        filters
    }

    pub fn subscription_count(&self) -> usize {
        self.lock().subscriptions.len()
    }

    /// Whether one more subscription under `filter` stays within `max` (0: no bound); a
    /// filter the session holds already only replaces its subscription.
    pub fn has_room_for_subscription(&self, filter: &str, max: usize) -> bool {
        let state = self.lock();
        max == 0 || state.subscriptions.len() < max || state.subscriptions.contains_key(filter)
    }

    pub fn expiry_interval(&self) -> u32 {
        self.lock().expiry_interval
    }

    pub fn set_expiry_interval(&self, secs: u32) {
        let mut state = self.lock();
        self.change_expiry(&mut state, secs);
    }

    /// The username its will is published under: its owner's.
    pub fn username(&self) -> Option<ByteString> {
        self.lock().owner.username().cloned()
    }

    pub fn owner(&self) -> Owner {
        self.lock().owner.clone()
    }

    /// Takes the will, e.g. because the connection ended abnormally, or drops it on a normal
    /// DISCONNECT.
    pub fn take_will(&self) -> Option<LastWill> {
        self.lock().will.take()
    }

    /// The will was published or cancelled: a restart must not publish it.
    pub fn forget_will(&self) {
        let mut state = self.lock();
        if state.stored_will.take().is_some() {
            self.save_record(&mut state);
        }
    }

    /// Marks the session ended and returns everything it held: its subscriptions (to remove
    /// from the router) and the shared copies still queued or in flight at QoS 1 (QoS 2 copies
    /// are dropped: they must never go to another member [MQTT-4.8.2-5]).
    pub fn end(&self) -> EndedSession {
        let mut state = self.lock();
        self.end_locked(&mut state)
    }

    fn end_locked(&self, state: &mut SessionState) -> EndedSession {
        for entry in state.inflight.values() {
            if let (Some(tag), QoS::ExactlyOnce) = (&entry.delivery.group, entry.delivery.qos) {
                CopyTally::count(&tag.tally.ended_with_member);
                tag.resolved();
            }
        }
        // Shared QoS 2 copies in flight end with the session [MQTT-4.8.2-5].
        for entry in state.inflight.values() {
            if entry.delivery.group.is_some() && entry.delivery.qos == QoS::ExactlyOnce {
                if let Some(stored) = &entry.delivery.stored {
                    stored.finished();
                }
            }
        }
        if let (Some(disk), true) = (&self.disk, state.on_disk) {
            disk.delete();
        }
        state.end_now()
    }

    /// Ends the session only if connection `generation` was the last to hold it and nobody has
    /// attached or claimed it since (an expiry running out). The check and the end are one
    /// step under the session's lock, so a reconnect cannot slip between them and attach to a
    /// session that is being ended.
    pub fn end_if_idle_since(&self, generation: u64) -> Option<EndedSession> {
        let mut state = self.lock();
        if state.ended || state.link.is_some() || state.generation != generation {
            return None;
        }
        Some(self.end_locked(&mut state))
    }

    /// Marks a resumption by `claimant` under way, before its connection attaches: an expiry
    /// or a delayed will armed for an earlier connection sees a newer generation and stands
    /// down. False, and nothing changes, if `claimant` is not the session's owner; a session
    /// whose owner was not recorded becomes `claimant`'s (its record says so from the attach).
    pub fn claim(&self, claimant: &Owner) -> bool {
        let mut state = self.lock();
        if !state.owner.admits(claimant) {
            return false;
        }
        state.owner = claimant.clone();
        state.generation += 1;
        true
    }

    /// Whether `claimant` may resume or replace this session.
    pub fn admits(&self, claimant: &Owner) -> bool {
        self.lock().owner.admits(claimant)
    }

    /// Tells the attached connection, if any, to close with `reason`.
    pub fn kick(&self, reason: ReasonCode) {
        let mut state = self.lock();
        if let Some(kick) = state.link.as_mut().and_then(|l| l.kick.take()) {
            let _ = kick.send(reason);
        }
    }

    pub fn is_ended(&self) -> bool {
        self.lock().ended
    }

    /// Queued message count (in memory and on disk), for statistics and tests.
    pub fn queued(&self) -> usize {
        self.lock().queued_count()
    }

    /// Queued messages held in memory, for tests of the memory window.
    pub fn queued_in_memory(&self) -> usize {
        self.lock().queue.in_memory()
    }

    /// Rebuilds the session's state read back from the store, before any connection attaches:
    /// its queue's window (in order), the rest of the queue on disk, exchanges in flight,
    /// inbound QoS 2 packet ids awaiting PUBREL, its will and when it went offline.
    pub fn restore(&self, restored: Restored) {
        let mut state = self.lock();
        state.on_disk = true;
        state.queue.restore(restored.queued, restored.spill);
        for (packet_id, released, delivery) in restored.inflight {
            let sequence = state.next_sequence;
            state.next_sequence += 1;
            state.inflight_bytes += delivery.message.weight();
            let stage = if released {
                OutboundStage::Released
            } else {
                OutboundStage::Published
            };
            state.inflight.insert(
                packet_id,
                Inflight {
                    sequence,
                    stage,
                    delivery,
                    abandoned: None,
                },
            );
        }
        state.incoming_qos2.extend(restored.incoming_qos2);
    }

    /// The stored record's will and offline time, put back first: every record the session
    /// saves from then on (its subscriptions are re-added next) carries them on.
    pub fn restore_record(&self, will: Option<LastWill>, disconnected_at_ms: u64) {
        let mut state = self.lock();
        state.on_disk = true;
        // Only the record keeps it: its timer (set by recovery) publishes it.
        state.stored_will = will;
        state.disconnected_at_ms = Some(disconnected_at_ms);
        // The offline time is fixed now: a second crash must not move it to that crash.
        self.save_record(&mut state);
    }

    pub fn inflight(&self) -> usize {
        self.lock().inflight.len()
    }
}

impl Mailbox for Session {
    fn session_id(&self) -> SessionId {
        self.id
    }

    fn client_id(&self) -> &ByteString {
        &self.client_id
    }

    fn enqueue(&self, delivery: Delivery, limits: QueueLimits) -> Enqueued {
        Session::enqueue(self, delivery, limits)
    }

    fn load(&self) -> crate::strategy::MemberLoad {
        self.member_load()
    }

    fn take_overdue(&self, group: GroupId, deadline: Instant) -> Vec<Delivery> {
        let mut state = self.lock();
        if state.link.is_none() {
            // Offline: its copies went back to the group when it left.
            return Vec::new();
        }
        let overdue = |d: &Delivery| {
            d.qos != QoS::ExactlyOnce
                && d.group
                    .as_ref()
                    .is_some_and(|tag| tag.is_from(group) && tag.handed_at < deadline)
        };
        let mut taken = Vec::new();
        // Sent and unacknowledged: another member gets a copy; this one stays in flight so
        // that the packet id is not reused under a late PUBACK.
        let mut sent: Vec<(u64, u16)> = state
            .inflight
            .iter()
            .filter(|(_, f)| f.abandoned.is_none() && overdue(&f.delivery))
            .map(|(id, f)| (f.sequence, *id))
            .collect();
        sent.sort_unstable();
        for (_, id) in sent {
            if let Some(entry) = state.inflight.get_mut(&id) {
                let copy = entry.delivery.clone();
                entry.abandoned = entry
                    .delivery
                    .group
                    .take()
                    .map(|tag| Arc::downgrade(&tag.tally));
                // The group's copy (and its stored row) goes on with the next member.
                entry.delivery.stored = None;
                taken.push(copy);
            }
        }
        // Still queued here, never sent: simply taken back.
        taken.extend(state.queue.take_if(overdue));
        if !taken.is_empty() {
            state.ack_timeouts += 1;
            if state.ack_timeouts == UNHEALTHY_AFTER_TIMEOUTS {
                tracing::info!(client_id = %self.client_id, "member missed its ack deadline repeatedly: it gets no new shared messages until it acknowledges one");
            }
        }
        taken
    }
}

/// What the store gives back of a session at start (see [`Session::restore`]).
#[derive(Debug, Default)]
pub struct Restored {
    pub queued: Vec<Delivery>,
    pub spill: Spill,
    /// Packet id, PUBREL sent, and the copy; in send order.
    pub inflight: Vec<(u16, bool, Delivery)>,
    pub incoming_qos2: Vec<u16>,
}

/// What an ended session leaves behind for the router to clean up.
#[derive(Debug)]
pub struct EndedSession {
    pub subscriptions: HashMap<ByteString, StoredSubscription>,
    pub redispatch: Vec<Delivery>,
}

impl SessionState {
    fn end_now(&mut self) -> EndedSession {
        self.ended = true;
        self.link = None;
        let mut redispatch = Vec::new();
        self.take_shared_unfinished(&mut redispatch);
        // Its rows go with the session's record (or it had none).
        self.queue.clear();
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.incoming_qos2.clear();
        EndedSession {
            subscriptions: std::mem::take(&mut self.subscriptions),
            redispatch,
        }
    }

    /// Whole-message bytes the session holds: queued (in memory and on disk) and in flight.
    fn held_bytes(&self) -> usize {
        self.queue.bytes() + self.inflight_bytes
    }

    /// Messages queued, in memory and on disk.
    fn queued_count(&self) -> usize {
        self.queue.count()
    }

    fn remove_inflight(&mut self, packet_id: u16) -> Option<Inflight> {
        let entry = self.inflight.remove(&packet_id)?;
        self.inflight_bytes -= entry.delivery.message.weight();
        Some(entry)
    }

    /// True while connection `generation` is the attached one. Only it may acknowledge: a
    /// connection that was taken over can still be reading its socket, and its PUBACK names a
    /// packet id of its own exchange, which the new connection may have reused for another
    /// message (its shared copies went back to the group at the takeover). Completing that
    /// other message would take it out of flight unacknowledged, so a later failure of the new
    /// connection would not hand it back to the group: lost.
    fn is_attached(&self, generation: u64) -> bool {
        self.link
            .as_ref()
            .is_some_and(|link| link.generation == generation)
    }

    fn allocate_packet_id(&mut self) -> Option<u16> {
        for _ in 0..=u16::MAX as usize {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    /// Shared copies this session has not finished and that may go to another member: every
    /// queued one, and those in flight at QoS 1. QoS 2 in flight stays, to be completed with
    /// this same client [MQTT-4.8.2-4].
    fn take_shared_unfinished(&mut self, out: &mut Vec<Delivery>) {
        // In-flight copies were sent before anything still queued, so they go back first.
        // Copies past their ack deadline are with another member already: forgotten here, so
        // that a resumed session does not send them again.
        let abandoned: Vec<u16> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.abandoned.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in abandoned {
            self.remove_inflight(id);
        }
        let mut in_flight: Vec<(u64, u16)> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.delivery.group.is_some() && f.delivery.qos == QoS::AtLeastOnce)
            .map(|(id, f)| (f.sequence, *id))
            .collect();
        in_flight.sort_unstable();
        for (_, id) in in_flight {
            if let Some(entry) = self.remove_inflight(id) {
                out.push(entry.delivery);
            }
        }
        out.extend(self.queue.take_if(|delivery| delivery.group.is_some()));
    }

    fn resend_packets(&mut self) -> Vec<Packet> {
        let mut entries: Vec<(&u16, &Inflight)> = self.inflight.iter().collect();
        entries.sort_unstable_by_key(|(_, f)| f.sequence);
        let now = Instant::now();
        let mut packets = Vec::with_capacity(entries.len());
        for (id, entry) in entries {
            match entry.stage {
                OutboundStage::Published => {
                    // A message already in flight is finished even if it expired meanwhile (the
                    // client may hold the first copy); it then goes without an expiry property.
                    let mut publish = build_publish_unchecked(&entry.delivery, Some(*id), true);
                    publish.properties.message_expiry_interval =
                        entry.delivery.message.remaining_expiry(now).unwrap_or(None);
                    packets.push(Packet::Publish(publish));
                }
                OutboundStage::Released => packets.push(Packet::PubRel(Ack::new(*id))),
            }
        }
        packets
    }
}

fn build_publish_unchecked(delivery: &Delivery, packet_id: Option<u16>, dup: bool) -> Publish {
    let message = &delivery.message;
    let mut properties = message.properties.clone();
    properties.subscription_identifiers = delivery.subscription_ids.clone();
    Publish {
        dup,
        qos: delivery.qos,
        retain: delivery.retain,
        topic: message.topic.clone(),
        packet_id,
        payload: message.payload.clone(),
        properties,
    }
}

/// The PUBLISH for one delivery, with the Message Expiry Interval counted down.
fn build_publish(
    delivery: &Delivery,
    packet_id: Option<u16>,
    dup: bool,
    now: Instant,
) -> Result<Publish, crate::broker::message::Expired> {
    let remaining = delivery.message.remaining_expiry(now)?;
    let mut publish = build_publish_unchecked(delivery, packet_id, dup);
    publish.properties.message_expiry_interval = remaining;
    Ok(publish)
}

fn fits(packet: &Packet, version: ProtocolVersion, max_packet_size: u32) -> bool {
    match codec::encoded_len(packet, version) {
        Ok(len) => len <= max_packet_size as usize,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::delivery::{GroupId, GroupOrigin, GroupTag};
    use crate::broker::message::Message;
    use bytes::Bytes;

    fn message(topic: &str, payload: &'static [u8], qos: QoS) -> Arc<Message> {
        Message::internal(
            ByteString::from(topic),
            Bytes::from_static(payload),
            qos,
            false,
        )
    }

    fn delivery(payload: &'static [u8], qos: QoS, group: Option<GroupId>) -> Delivery {
        Delivery {
            message: message("t", payload, qos),
            qos,
            retain: false,
            subscription_ids: Vec::new(),
            group: group.map(|id| GroupTag {
                origin: GroupOrigin::Local(id),
                tally: Default::default(),
                handed_at: Instant::now(),
                failures: 0,
                key: None,
            }),
            stored: None,
        }
    }

    const LIMITS: QueueLimits = QueueLimits {
        max_messages: 3,
        max_bytes: 1 << 20,
    };

    fn online(session: &Session, window: usize) -> Attached {
        session.attach(ProtocolVersion::V5, window, u32::MAX, None, 0)
    }

    fn payloads(packets: &[Packet]) -> Vec<Bytes> {
        packets
            .iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p.payload.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn full_queue_drops_oldest_qos0_first_then_refuses() {
        let session = Session::new(1, ByteString::from("c"), Owner::Anonymous, 0, None);
        assert_eq!(
            session.enqueue(delivery(b"a", QoS::AtMostOnce, None), LIMITS),
            Enqueued::Queued
        );
        assert_eq!(
            session.enqueue(delivery(b"b", QoS::AtLeastOnce, None), LIMITS),
            Enqueued::Queued
        );
        assert_eq!(
            session.enqueue(delivery(b"c", QoS::AtLeastOnce, None), LIMITS),
            Enqueued::Queued
        );
        assert_eq!(
            session.enqueue(delivery(b"d", QoS::AtLeastOnce, None), LIMITS),
            Enqueued::QueuedDroppingOldestQos0
        );
        assert_eq!(
            session.enqueue(delivery(b"e", QoS::AtLeastOnce, None), LIMITS),
            Enqueued::Refused(Quota::SessionMessages)
        );
        let attached = online(&session, 10);
        let mut out = Vec::new();
        let mut dropped = Dropped::default();
        session.take_sendable(
            attached.generation,
            Instant::now(),
            &mut out,
            &mut dropped,
            100,
        );
        assert_eq!(
            payloads(&out),
            vec![
                Bytes::from_static(b"b"),
                Bytes::from_static(b"c"),
                Bytes::from_static(b"d")
            ]
        );
    }

    #[test]
    fn inflight_window_limits_qos1_and_ack_frees_a_slot() {
        let session = Session::new(1, ByteString::from("c"), Owner::Anonymous, 0, None);
        let attached = online(&session, 2);
        for p in [&b"1"[..], &b"2"[..], &b"3"[..]] {
            session.enqueue(delivery(p, QoS::AtLeastOnce, None), LIMITS);
        }
        let mut out = Vec::new();
        let mut dropped = Dropped::default();
        session.take_sendable(
            attached.generation,
            Instant::now(),
            &mut out,
            &mut dropped,
            100,
        );
        assert_eq!(out.len(), 2);
        assert!(!session.member_load().has_room());
        let Packet::Publish(first) = &out[0] else {
            panic!("not a publish")
        };
        let id = first.packet_id.unwrap();
        assert!(matches!(
            session.acknowledge_publish(attached.generation, id, ReasonCode::SUCCESS, false),
            AckOutcome::Done
        ));
        assert!(matches!(
            session.acknowledge_publish(attached.generation, id, ReasonCode::SUCCESS, false),
            AckOutcome::UnknownPacketId
        ));
        out.clear();
        session.take_sendable(
            attached.generation,
            Instant::now(),
            &mut out,
            &mut dropped,
            100,
        );
        assert_eq!(payloads(&out), vec![Bytes::from_static(b"3")]);
    }

    #[test]
    fn resume_resends_inflight_in_order_with_dup() {
        let session = Session::new(1, ByteString::from("c"), Owner::Anonymous, 60, None);
        let attached = online(&session, 10);
        session.enqueue(delivery(b"1", QoS::AtLeastOnce, None), LIMITS);
        session.enqueue(delivery(b"2", QoS::ExactlyOnce, None), LIMITS);
        let mut out = Vec::new();
        let mut dropped = Dropped::default();
        session.take_sendable(
            attached.generation,
            Instant::now(),
            &mut out,
            &mut dropped,
            100,
        );
        let Packet::Publish(second) = &out[1] else {
            panic!("not a publish")
        };
        assert!(matches!(
            session.acknowledge_publish(
                attached.generation,
                second.packet_id.unwrap(),
                ReasonCode::SUCCESS,
                true
            ),
            AckOutcome::SendPubRel { stored: false }
        ));
        assert_eq!(
            session.detach(attached.generation).map(|r| r.len()),
            Some(0)
        );
        let resumed = online(&session, 10);
        assert_eq!(resumed.resend.len(), 2);
        assert!(matches!(&resumed.resend[0], Packet::Publish(p) if p.dup && p.payload == "1"));
        assert!(matches!(&resumed.resend[1], Packet::PubRel(_)));
    }

    #[test]
    fn detach_returns_shared_qos1_inflight_then_queued_and_keeps_qos2() {
        let group: GroupId = 7;
        let session = Session::new(1, ByteString::from("c"), Owner::Anonymous, 60, None);
        let attached = online(&session, 2);
        session.enqueue(
            delivery(b"q1-inflight", QoS::AtLeastOnce, Some(group)),
            LIMITS,
        );
        session.enqueue(
            delivery(b"q2-inflight", QoS::ExactlyOnce, Some(group)),
            LIMITS,
        );
        session.enqueue(
            delivery(b"q1-queued", QoS::AtLeastOnce, Some(group)),
            LIMITS,
        );
        let mut out = Vec::new();
        let mut dropped = Dropped::default();
        session.take_sendable(
            attached.generation,
            Instant::now(),
            &mut out,
            &mut dropped,
            100,
        );
        assert_eq!(out.len(), 2);
        let back: Vec<Bytes> = session
            .detach(attached.generation)
            .unwrap()
            .into_iter()
            .map(|d| d.message.payload.clone())
            .collect();
        assert_eq!(
            back,
            vec![
                Bytes::from_static(b"q1-inflight"),
                Bytes::from_static(b"q1-queued")
            ]
        );
        assert_eq!(
            session.inflight(),
            1,
            "the QoS 2 copy stays with its member"
        );
    }

    /// A connection that was taken over may still be reading its socket. The PUBACK its
    /// client sent for a shared copy names a packet id the new connection can have reused
    /// (ids wrap; the copy itself went back to the group at the takeover). It must not complete
    /// the new connection's message: that one would leave flight unacknowledged, and when the
    /// new connection failed too it would not go back to the group — lost.
    #[test]
    fn stale_connection_ack_cannot_complete_the_new_connections_message() {
        let group: GroupId = 7;
        let session = Session::new(1, ByteString::from("c"), Owner::Anonymous, 60, None);
        let old = online(&session, 10);
        session.enqueue(delivery(b"first", QoS::AtLeastOnce, Some(group)), LIMITS);
        let mut out = Vec::new();
        let mut dropped = Dropped::default();
        session.take_sendable(old.generation, Instant::now(), &mut out, &mut dropped, 100);
        let Some(Packet::Publish(first)) = out.first() else {
            panic!("nothing sent")
        };
        let reused = first.packet_id.unwrap();

        // Takeover: the old connection's copy goes back to the group.
        let new = online(&session, 10);
        assert_eq!(new.redispatch.len(), 1);
        // The packet id counter comes round to the freed id for the new connection's message.
        session.state.lock().next_packet_id = reused;
        session.enqueue(delivery(b"second", QoS::AtLeastOnce, Some(group)), LIMITS);
        out.clear();
        session.take_sendable(new.generation, Instant::now(), &mut out, &mut dropped, 100);
        assert!(matches!(out.first(), Some(Packet::Publish(p)) if p.packet_id == Some(reused)));

        // The old connection reads its client's PUBACK for "first".
        assert!(matches!(
            session.acknowledge_publish(old.generation, reused, ReasonCode::SUCCESS, false),
            AckOutcome::UnknownPacketId
        ));
        assert_eq!(session.inflight(), 1, "\"second\" is still in flight");
        // The new connection fails before its client acknowledged: "second" goes back.
        let back: Vec<Bytes> = session
            .detach(new.generation)
            .unwrap()
            .into_iter()
            .map(|d| d.message.payload.clone())
            .collect();
        assert_eq!(back, vec![Bytes::from_static(b"second")]);
    }

    #[test]
    fn only_the_owner_claims_and_an_unrecorded_owner_is_adopted() {
        let alice = Owner::User(ByteString::from("alice"));
        let bob = Owner::User(ByteString::from("bob"));
        let session = Session::new(1, ByteString::from("c"), alice.clone(), 60, None);
        let generation = session.generation();
        assert!(!session.claim(&bob));
        assert!(!session.claim(&Owner::Anonymous));
        assert_eq!(
            session.generation(),
            generation,
            "a refused claim changes nothing"
        );
        assert!(session.claim(&alice));
        let legacy = Session::new(2, ByteString::from("d"), Owner::Unrecorded, 60, None);
        assert!(legacy.claim(&bob));
        assert_eq!(legacy.owner(), bob);
        assert_eq!(legacy.username().as_deref(), Some("bob"));
        assert!(!legacy.claim(&alice), "adopted: now only bob's");
    }

    #[test]
    fn expiry_stands_down_for_a_claimed_or_attached_session() {
        let session = Session::new(1, ByteString::from("c"), Owner::Anonymous, 60, None);
        let first = online(&session, 10);
        assert!(session.detach(first.generation).is_some());
        // A reconnect claimed it (under the registry's lock) but has not attached yet.
        assert!(session.claim(&Owner::Anonymous));
        assert!(session.end_if_idle_since(first.generation).is_none());
        assert!(!session.is_ended());
        let second = online(&session, 10);
        assert!(
            session.end_if_idle_since(second.generation).is_none(),
            "attached"
        );
        assert!(session.detach(second.generation).is_some());
        assert!(session.end_if_idle_since(second.generation).is_some());
        assert!(session.is_ended());
    }

    #[test]
    fn stale_connection_cannot_take_messages_after_takeover() {
        let session = Session::new(1, ByteString::from("c"), Owner::Anonymous, 60, None);
        let old = online(&session, 10);
        let new = online(&session, 10);
        session.enqueue(delivery(b"x", QoS::AtMostOnce, None), LIMITS);
        let mut out = Vec::new();
        let mut dropped = Dropped::default();
        session.take_sendable(old.generation, Instant::now(), &mut out, &mut dropped, 100);
        assert!(out.is_empty());
        assert!(session.detach(old.generation).is_none());
        session.take_sendable(new.generation, Instant::now(), &mut out, &mut dropped, 100);
        assert_eq!(out.len(), 1);
    }
}
