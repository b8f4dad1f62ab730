//! One copy of a message on its way to one session, and the queue vocabulary that sessions,
//! shared groups and the router share without knowing each other.
//!
//! A delivery is built in one place, [`Delivery::new`], for plain subscribers, shared-group
//! members and retained messages sent at subscribe time alike (as Mosquitto sends every
//! subscriber kind through one `subs__send`). A session receives deliveries through the
//! [`Mailbox`] trait, so a shared group can hand messages to its members without holding, or
//! even naming, the session type.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use bytestring::ByteString;

use crate::packet::{QoS, SubscriptionOptions};
use crate::strategy::MemberLoad;

use crate::broker::message::{Message, Quota, SessionId};
use crate::broker::store::StoredRef;

/// Identifies a shared group for the lifetime of the broker process; never reused. A delivery
/// names its group by id, so a session never holds a group.
pub type GroupId = u64;

/// How a group's copies end once members hold them, counted by the members' sessions without
/// reaching the group (they never hold it). Every copy out with a member holds one reference,
/// so the references beyond the group's own are its copies in flight.
#[derive(Debug, Default)]
pub struct CopyTally {
    /// Finished by the member: PUBACK, PUBCOMP (or a failure code, which also ends the
    /// exchange), or written at QoS 0.
    pub acked: AtomicU64,
    /// Expired in the member's queue before it could be sent.
    pub expired: AtomicU64,
    /// Larger than the member accepts (its Maximum Packet Size).
    pub too_large: AtomicU64,
    /// In flight at QoS 2 when the member's session ended: such a copy never goes to another
    /// member [MQTT-4.8.2-5].
    pub ended_with_member: AtomicU64,
    /// PUBACKs of copies that had already gone to another member after the ack deadline:
    /// accepted and ignored, each one a message delivered twice.
    pub late_acks: AtomicU64,
    /// With `ordered_by`: how many copies of each key members hold. A key's next message
    /// waits while its count is above 0. A leaf lock: taken to count a copy out (under the
    /// group's lock) or back (under a session's), nothing called under it.
    keys_out: Mutex<HashMap<u64, u32, ahash::RandomState>>,
}

impl CopyTally {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a copy of `key` is out with a member.
    pub fn key_is_out(&self, key: u64) -> bool {
        self.keys_out.lock().contains_key(&key)
    }

    /// The keys out now (for a scan that checks many).
    pub fn keys_out(&self) -> Vec<u64> {
        self.keys_out.lock().keys().copied().collect()
    }

    pub fn key_sent(&self, key: Option<u64>) {
        if let Some(key) = key {
            *self.keys_out.lock().entry(key).or_insert(0) += 1;
        }
    }

    /// A copy of `key` is resolved: finished, dropped, or back with the group.
    pub fn key_resolved(&self, key: Option<u64>) {
        let Some(key) = key else { return };
        let mut keys = self.keys_out.lock();
        if let Some(count) = keys.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                keys.remove(&key);
            }
        }
    }
}

/// Where the group a shared copy came through lives, so that a copy the member cannot finish
/// goes back to it. Today every group is this process's; the cluster (#27) adds
/// `Remote { shard, gid, seq, term }` for a group owned by another node, and every user matches
/// on this enum, so each place that must handle a remote copy is one the compiler names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupOrigin {
    /// A group of this process, by its id.
    Local(GroupId),
}

/// The group a shared copy came through: where it goes back if the member cannot finish it,
/// and the tally its ending is counted in.
#[derive(Debug, Clone)]
pub struct GroupTag {
    pub origin: GroupOrigin,
    pub tally: Arc<CopyTally>,
    /// When the group handed it to this member: the ack deadline counts from here.
    pub handed_at: Instant,
    /// Deliveries of this message that failed before this one.
    pub failures: u32,
    /// Its `ordered_by` key, if the group has one.
    pub key: Option<u64>,
}

impl GroupTag {
    /// Whether the copy came through local group `group`.
    pub fn is_from(&self, group: GroupId) -> bool {
        match self.origin {
            GroupOrigin::Local(id) => id == group,
        }
    }

    /// This copy is resolved (see [`CopyTally::key_resolved`]).
    pub fn resolved(&self) {
        self.tally.key_resolved(self.key);
    }
}

/// One copy of a message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// The QoS it is sent with: the lower of the published QoS and the subscription's.
    pub qos: QoS,
    /// The RETAIN flag as it is sent (Retain As Published, or set for retained-on-subscribe).
    pub retain: bool,
    /// Identifiers of the receiver's own matching subscriptions only.
    pub subscription_ids: Vec<u32>,
    /// Set when the copy came through a shared subscription: the group it goes back to if
    /// this member cannot finish it.
    pub group: Option<GroupTag>,
    /// Where this copy is kept, if it is: by the queue that stored it (the member's own, or its
    /// group's), which removes it when the copy is finished.
    pub stored: Option<StoredRef>,
}

/// Why a copy is being made: a live publish, or a retained message answering a SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occasion {
    Publish,
    RetainedOnSubscribe,
}

impl Delivery {
    /// The copy of `message` for a subscription with `options` and `identifiers`: QoS
    /// downgraded to the granted one [MQTT-3.8.4-8], RETAIN as published only where Retain As
    /// Published asks for it [MQTT-3.3.1-12], and always set for a retained message sent at
    /// subscribe time [MQTT-3.3.1-8].
    pub fn new(
        message: Arc<Message>,
        options: &SubscriptionOptions,
        identifiers: Vec<u32>,
        occasion: Occasion,
        group: Option<GroupTag>,
    ) -> Delivery {
        let retain = match occasion {
            Occasion::Publish => options.retain_as_published && message.retain,
            Occasion::RetainedOnSubscribe => true,
        };
        Delivery {
            qos: message.qos.min(options.qos),
            retain,
            subscription_ids: identifiers,
            group,
            message,
            stored: None,
        }
    }
}

/// Limits applied to one session's queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Queued,
    /// The queue was full: the new message was refused, because of this bound.
    Refused(Quota),
    /// The session has ended; nobody will read its queue.
    Ended,
    /// The queue was full of QoS 0 messages; the oldest was dropped to make room.
    QueuedDroppingOldestQos0,
}

/// What a shared group needs of a member: somewhere to put a message, and how busy it is.
/// Implemented by the session; the group keeps members by [`SessionId`] with this handle.
pub trait Mailbox: Send + Sync + std::fmt::Debug {
    fn session_id(&self) -> SessionId;
    fn client_id(&self) -> &ByteString;
    /// Queues a delivery and wakes the attached connection, if any.
    fn enqueue(&self, delivery: Delivery, limits: QueueLimits) -> Enqueued;
    /// Connection state and load, lock-free.
    fn load(&self) -> MemberLoad;
    /// Takes back the copies of group `group` that were handed to this member before
    /// `deadline` and are still queued or unacknowledged at QoS 1 (QoS 2 copies stay
    /// [MQTT-4.8.2-4]). Copies already sent stay in flight, so that a late PUBACK is accepted
    /// and ignored. Counts the member's timeouts: one that keeps timing out takes no new
    /// messages until it acknowledges one.
    fn take_overdue(&self, group: GroupId, deadline: Instant) -> Vec<Delivery>;
}
