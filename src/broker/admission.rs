//! Which accepted sockets may stay open: `limits.max_connections` over all sockets and
//! `limits.max_connections_per_ip` per source address, counted from `accept()` on, so clients
//! that never finish CONNECT hold a place too. A socket over a limit is closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

#[derive(Debug)]
pub struct Admission {
    inner: Arc<Counts>,
    max_total: usize,
    /// 0: no per-address limit.
    max_per_ip: usize,
}

#[derive(Debug, Default)]
struct Counts {
    /// Open sockets in all, and per source address. One lock, taken once when a socket is
    /// accepted and once when it closes; it is a leaf: nothing else is locked under it.
    open: Mutex<OpenSockets>,
}

#[derive(Debug, Default)]
struct OpenSockets {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a socket was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TotalLimit,
    PerIpLimit,
}

impl Refusal {
    pub fn key(self) -> &'static str {
        match self {
            Refusal::TotalLimit => "limits.max_connections",
            Refusal::PerIpLimit => "limits.max_connections_per_ip",
        }
    }
}

/// A socket's place among the open ones; given back when dropped (with the connection task).
#[derive(Debug)]
pub struct Admitted {
    counts: Arc<Counts>,
    ip: IpAddr,
    /// The listener's own count of open sockets, when the socket came through one.
    listener: Option<Arc<ListenerStats>>,
}

/// Sockets one listener accepted, for `/metrics`.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Open now (handshake or MQTT connection under way).
    pub open: std::sync::atomic::AtomicU64,
    /// Accepted since start (within the connection limits).
    pub accepted: std::sync::atomic::AtomicU64,
}

impl Admission {
    pub fn new(max_total: usize, max_per_ip: usize) -> Admission {
        Admission {
            inner: Arc::new(Counts::default()),
            max_total,
            max_per_ip,
        }
    }

    /// Takes a place for a socket from `ip`, or says which limit it would break.
    pub fn admit(&self, ip: IpAddr) -> Result<Admitted, Refusal> {
        let mut open = self.inner.open.lock();
        if open.total >= self.max_total {
            return Err(Refusal::TotalLimit);
        }
        let from_ip = open.per_ip.get(&ip).copied().unwrap_or(0);
        if self.max_per_ip > 0 && from_ip >= self.max_per_ip {
            return Err(Refusal::PerIpLimit);
        }
        open.total += 1;
        open.per_ip.insert(ip, from_ip + 1);
        Ok(Admitted {
            counts: self.inner.clone(),
            ip,
            listener: None,
        })
    }

    /// Sockets open now.
    pub fn open(&self) -> usize {
        self.inner.open.lock().total
    }
}

impl Admitted {
    /// Counts the socket as open on `listener` until it closes.
    pub fn on_listener(mut self, listener: &Arc<ListenerStats>) -> Admitted {
        use std::sync::atomic::Ordering::Relaxed;
        listener.accepted.fetch_add(1, Relaxed);
        listener.open.fetch_add(1, Relaxed);
        self.listener = Some(listener.clone());
        self
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener
                .open
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut open = self.counts.open.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_and_per_ip_limits_hold_and_free_on_drop() {
        let admission = Admission::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).unwrap_err(), Refusal::PerIpLimit);
        let _third = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).unwrap_err(), Refusal::TotalLimit);
        drop(first);
        assert_eq!(admission.open(), 2);
        assert!(admission.admit(a).is_ok());
    }

    #[test]
    fn zero_per_ip_means_no_per_ip_limit() {
        let admission = Admission::new(10, 0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..10).map(|_| admission.admit(a).unwrap()).collect();
        assert_eq!(admission.admit(a).unwrap_err(), Refusal::TotalLimit);
        drop(held);
        assert_eq!(admission.open(), 0);
    }
}
