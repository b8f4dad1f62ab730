//! What a shared group counts: messages handed out, sent back, dropped, and why. Read by
//! `$SYS/broker/shared/...`, `/metrics` and the admin API.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::broker::message::Quota;

/// Why copies came back to a group from a member, to go to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    /// The member's connection closed (or broke) with the copies queued or unacknowledged.
    MemberDisconnected,
    /// Another connection took the member's session over.
    SessionTakenOver,
    /// The member's session ended (expired, or discarded by a clean start).
    SessionEnded,
    /// The member, still connected, did not acknowledge within `ack_timeout_ms`.
    AckTimeout,
}

impl Redelivery {
    pub const ALL: [Redelivery; 4] = [
        Redelivery::MemberDisconnected,
        Redelivery::SessionTakenOver,
        Redelivery::SessionEnded,
        Redelivery::AckTimeout,
    ];

    /// The `reason` label on `/metrics` and in the API.
    pub fn label(self) -> &'static str {
        match self {
            Redelivery::MemberDisconnected => "member_disconnected",
            Redelivery::SessionTakenOver => "session_taken_over",
            Redelivery::SessionEnded => "session_ended",
            Redelivery::AckTimeout => "ack_timeout",
        }
    }

    /// The failure a dead-lettered copy names.
    pub fn failure(self) -> &'static str {
        match self {
            Redelivery::AckTimeout => "ack_timeout",
            _ => "disconnect",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a group dropped a message it held or was offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupDrop {
    /// `shared.group_queue_max_messages` was reached.
    QueueFullMessages,
    /// `shared.group_queue_max_bytes` was reached.
    QueueFullBytes,
    /// The group ended (its last member left) with messages queued, or got one after.
    GroupEnded,
    /// An operator purged the queue.
    Purged,
    /// Waited longer than the group's `max_age_secs`.
    MaxAge,
    /// The oldest waiting message, given up for a new one (`overflow = "drop_oldest"`).
    Overflow,
    /// Replaced by a newer message of its key (`compact = true`).
    Compacted,
    /// Failed `max_deliveries` times, and the group has no dead-letter topic.
    MaxDeliveries,
    /// Refused by a member (PUBACK/PUBREC >= 0x80), and the group has no dead-letter topic.
    Rejected,
    /// The member it fell to may not read its topic (the ACL): dropped, not offered to
    /// another member, as Mosquitto does.
    Acl,
}

impl GroupDrop {
    pub const ALL: [GroupDrop; 10] = [
        GroupDrop::QueueFullMessages,
        GroupDrop::QueueFullBytes,
        GroupDrop::GroupEnded,
        GroupDrop::Purged,
        GroupDrop::MaxAge,
        GroupDrop::Overflow,
        GroupDrop::Compacted,
        GroupDrop::MaxDeliveries,
        GroupDrop::Rejected,
        GroupDrop::Acl,
    ];

    pub fn label(self) -> &'static str {
        match self {
            GroupDrop::QueueFullMessages => "queue_full_messages",
            GroupDrop::QueueFullBytes => "queue_full_bytes",
            GroupDrop::GroupEnded => "group_ended",
            GroupDrop::Purged => "purged",
            GroupDrop::MaxAge => "max_age",
            GroupDrop::Overflow => "overflow",
            GroupDrop::Compacted => "compacted",
            GroupDrop::MaxDeliveries => "max_deliveries",
            GroupDrop::Rejected => "rejected",
            GroupDrop::Acl => "acl",
        }
    }

    /// The drop a refusal by this bound is.
    pub fn of_quota(quota: Quota) -> GroupDrop {
        match quota {
            Quota::GroupBytes => GroupDrop::QueueFullBytes,
            _ => GroupDrop::QueueFullMessages,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Per-group counters; members' sessions count how copies end in the group's
/// [`CopyTally`](crate::broker::delivery::CopyTally).
#[derive(Debug, Default)]
pub struct GroupCounters {
    pub dispatched: AtomicU64,
    /// Copies that came back from members, whatever the reason.
    pub redispatched: AtomicU64,
    redelivered: [AtomicU64; Redelivery::ALL.len()],
    /// Messages the group dropped, whatever the reason.
    pub dropped: AtomicU64,
    dropped_by: [AtomicU64; GroupDrop::ALL.len()],
    /// Messages published to the group's dead-letter topic.
    pub dead_lettered: AtomicU64,
}

impl GroupCounters {
    pub fn record_drop(&self, reason: GroupDrop, count: u64) {
        if count > 0 {
            self.dropped.fetch_add(count, Ordering::Relaxed);
            self.dropped_by[reason.index()].fetch_add(count, Ordering::Relaxed);
        }
    }

    pub fn record_redelivery(&self, reason: Redelivery, count: u64) {
        self.redispatched.fetch_add(count, Ordering::Relaxed);
        self.redelivered[reason.index()].fetch_add(count, Ordering::Relaxed);
    }

    pub fn dropped_by(&self, reason: GroupDrop) -> u64 {
        self.dropped_by[reason.index()].load(Ordering::Relaxed)
    }

    pub fn redelivered(&self, reason: Redelivery) -> u64 {
        self.redelivered[reason.index()].load(Ordering::Relaxed)
    }
}
