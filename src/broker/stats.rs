//! Broker-wide counters, published under `$SYS/broker/...` and on `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::broker::message::Quota;
use crate::broker::routing::router::Routed;
use crate::broker::session::Dropped;

/// Why a copy of a message was not delivered. A refusal by a bound is named by its
/// [`Quota`] instead (`refused_by_quota`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its Message Expiry Interval ran out before it could be sent.
    Expired,
    /// Larger than the receiving client's Maximum Packet Size.
    TooLarge,
    /// The oldest QoS 0 message of a full session queue, given up for a newer one.
    Qos0Overflow,
    /// Reached a shared group that had ended (its last member left), or came back to one.
    GroupEnded,
    /// Matched a subscription whose filter reaches topics the subscriber may not read, on one
    /// of those (a live message or a retained one at subscribe time).
    Acl,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::Expired,
        DropReason::TooLarge,
        DropReason::Qos0Overflow,
        DropReason::GroupEnded,
        DropReason::Acl,
    ];

    /// The `reason` label on `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Expired => "expired",
            DropReason::TooLarge => "too_large",
            DropReason::Qos0Overflow => "qos0_overflow",
            DropReason::GroupEnded => "group_ended",
            DropReason::Acl => "acl",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    pub clients_connected: AtomicU64,
    pub connections_total: AtomicU64,
    /// Sockets closed at accept: over `limits.max_connections` or
    /// `limits.max_connections_per_ip`.
    pub connections_refused: AtomicU64,
    /// Logins refused by authentication: wrong or unknown credentials, anonymous where it is
    /// not allowed, failed SCRAM exchanges and re-authentications.
    pub auth_failed: AtomicU64,
    /// CONNECTs refused because the client id's session belongs to another identity.
    pub session_owner_refused: AtomicU64,
    /// CONNECTs refused because a new persistent session would pass `limits.max_sessions`.
    pub session_quota_refused: AtomicU64,
    /// CONNECTs refused because `auth.client_id_pattern` does not allow the client id.
    pub client_id_refused: AtomicU64,
    /// Subscriptions refused because the session holds `limits.max_subscriptions_per_client`.
    pub subscription_quota_refused: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Copies not delivered, whatever the reason: the sum of `dropped_by` and of the session
    /// and group refusals in `refused_by_quota`.
    pub messages_dropped: AtomicU64,
    /// Copies not delivered for a reason other than a bound, per [`DropReason`].
    dropped_by: [AtomicU64; DropReason::ALL.len()],
    /// PUBLISHes, subscriptions and group joins the ACL refused.
    pub acl_denied: AtomicU64,
    /// Copies refused by a bound, per [`Quota::index`]: what a v5 publisher hears as 0x97.
    pub refused_by_quota: [AtomicU64; Quota::ALL.len()],
}

impl Stats {
    pub fn record_drop(&self, reason: DropReason, count: usize) {
        if count > 0 {
            self.dropped_by[reason.index()].fetch_add(count as u64, Ordering::Relaxed);
            self.messages_dropped
                .fetch_add(count as u64, Ordering::Relaxed);
        }
    }

    /// Counts what one round of sending to a client gave up on.
    pub fn record_sending_drops(&self, dropped: Dropped) {
        self.record_drop(DropReason::Expired, dropped.expired);
        self.record_drop(DropReason::TooLarge, dropped.too_large);
    }

    /// Counts what routing one message dropped, and why.
    pub fn record_routed(&self, routed: &Routed) {
        self.record_drop(DropReason::Qos0Overflow, routed.overflowed);
        self.record_drop(DropReason::GroupEnded, routed.group_ended);
        self.record_drop(DropReason::Acl, routed.acl_filtered);
        let refused = routed.dropped - routed.overflowed;
        if refused > 0 {
            self.messages_dropped
                .fetch_add(refused as u64, Ordering::Relaxed);
        }
        for quota in Quota::ALL {
            self.record_refused(quota, routed.refused[quota.index()]);
        }
    }

    pub fn record_refused(&self, quota: Quota, count: u32) {
        if count > 0 {
            self.refused_by_quota[quota.index()].fetch_add(u64::from(count), Ordering::Relaxed);
        }
    }

    pub fn dropped_by(&self, reason: DropReason) -> u64 {
        Stats::get(&self.dropped_by[reason.index()])
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
