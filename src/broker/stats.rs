//! Broker-wide counters, published under `$SYS/broker/...`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    pub clients_connected: AtomicU64,
    pub connections_total: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Messages not delivered because a queue was full, they expired, or were too large.
    pub messages_dropped: AtomicU64,
}

impl Stats {
    pub fn record_dropped(&self, count: usize) {
        if count > 0 {
            self.messages_dropped
                .fetch_add(count as u64, Ordering::Relaxed);
        }
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
