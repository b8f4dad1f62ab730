//! The main loop of an accepted connection: read and handle whole packets, move what the
//! session queued into the write buffer, write it, and end on DISCONNECT, a closed socket, a
//! takeover, shutdown or a quiet client (keep-alive, or a packet started and never finished).

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::sync::oneshot;

use crate::packet::ReasonCode;

use crate::broker::handle::error::ConnectionError;
use crate::broker::net::stream::Input;

use super::{Connection, End};

/// How long a client with keep-alive off may take to finish a packet it has started.
const PARTIAL_PACKET_TIMEOUT: Duration = Duration::from_secs(60);
/// Bounds of the adaptive read size (see `main_loop`).
pub(super) const MIN_READ_SIZE: usize = 4096;
const MAX_READ_SIZE: usize = 64 * 1024;

impl Connection {
    pub(super) async fn main_loop(&mut self) -> Result<End, ConnectionError> {
        let (notify, mut kicked) = match self.ctx.client.as_mut() {
            Some(client) => {
                let (_, replacement) = oneshot::channel();
                (
                    client.notify.clone(),
                    std::mem::replace(&mut client.kicked, replacement),
                )
            }
            None => return Ok(End::Refused),
        };
        let mut committed = self.ctx.broker.journal.as_ref().map(|j| j.watch());
        // Both clocks count whole packets, never bytes [MQTT-3.1.2-24]: a client trickling a
        // packet a byte at a time must not hold its connection (and a growing buffer) forever.
        let mut quiet = QuietDeadline::new(self.ctx.keep_alive);
        let keep_alive_timer = tokio::time::sleep_until(quiet.deadline());
        tokio::pin!(keep_alive_timer);
        // Packets that came in the same reads as CONNECT: handle them now, not when more
        // bytes happen to arrive (a client may send nothing more until it gets its SUBACK).
        let handled = self.process_input()?;
        quiet.after_input(handled, !self.read_buf.is_empty());
        keep_alive_timer.as_mut().reset(quiet.deadline());
        if let Some(reason) = self.ctx.disconnect_received {
            return Ok(End::Disconnected(reason));
        }
        if self.read_buf.is_empty() {
            // The CONNECT phase's read block: an idle client may never send another byte, and
            // the loop reserves one when there is input.
            self.read_buf = BytesMut::new();
        }
        loop {
            self.ctx.out.release_held();
            self.pump_outgoing();
            if !self.ctx.out.is_empty() {
                let len = self.ctx.out.len();
                tokio::select! {
                    biased;
                    _ = self.ctx.broker.shutdown.cancelled() => return Ok(End::Shutdown),
                    reason = &mut kicked => return Ok(End::Kicked(reason.unwrap_or(ReasonCode::SESSION_TAKEN_OVER))),
                    written = self.stream.write_all_flush(self.ctx.out.buffer()) => written?,
                }
                self.ctx
                    .broker
                    .stats
                    .bytes_sent
                    .fetch_add(len as u64, Ordering::Relaxed);
                self.ctx.out.shrink_if_large();
                continue;
            }
            // While more waits for the disk than the store's bound, input waits for a commit.
            let hold_input = self
                .ctx
                .broker
                .journal
                .as_ref()
                .is_some_and(|j| j.congested());
            tokio::select! {
                biased;
                _ = self.ctx.broker.shutdown.cancelled() => return Ok(End::Shutdown),
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
                    self.ctx.broker.stats.bytes_received.fetch_add(read as u64, Ordering::Relaxed);
                    let handled = self.process_input()?;
                    if quiet.after_input(handled, !self.read_buf.is_empty()) {
                        keep_alive_timer.as_mut().reset(quiet.deadline());
                    }
                    if let Some(reason) = self.ctx.disconnect_received {
                        return Ok(End::Disconnected(reason));
                    }
                    if self.read_buf.is_empty() {
                        // Every byte became a packet; the block's remaining capacity is shared
                        // with their payloads and a new one is reserved on the next read anyway.
                        self.read_buf = BytesMut::new();
                    }
                }
                _ = notify.notified() => {}
                _ = next_commit(&mut committed), if hold_input || self.ctx.out.is_holding() => {}
                _ = &mut keep_alive_timer => return Ok(End::KeepAliveTimeout),
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
