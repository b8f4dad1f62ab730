//! Broker-wide counters, published under `$SYS/broker/...`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::broker::routing::message::Quota;
use crate::broker::routing::router::Routed;

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
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Messages not delivered because a queue was full, they expired, or were too large.
    pub messages_dropped: AtomicU64,
    /// PUBLISHes, subscriptions and group joins the ACL refused.
    pub acl_denied: AtomicU64,
    /// Copies refused by a bound, per [`Quota::index`]: what a v5 publisher hears as 0x97.
    pub refused_by_quota: [AtomicU64; Quota::ALL.len()],
}

impl Stats {
    pub fn record_dropped(&self, count: usize) {
        if count > 0 {
            self.messages_dropped
                .fetch_add(count as u64, Ordering::Relaxed);
        }
    }

    /// Counts what routing one message dropped, and why.
    pub fn record_routed(&self, routed: &Routed) {
        self.record_dropped(routed.dropped);
        for quota in Quota::ALL {
            self.record_refused(quota, routed.refused[quota.index()]);
        }
    }

    pub fn record_refused(&self, quota: Quota, count: u32) {
        if count > 0 {
            self.refused_by_quota[quota.index()].fetch_add(u64::from(count), Ordering::Relaxed);
        }
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
