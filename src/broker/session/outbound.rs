//! Messages towards the client: queueing a copy (the session's overflow policy, its own copies
//! stored through its durable queue), moving queued copies into flight as PUBLISH packets, and
//! the refill of the queue's disk tail.

use std::sync::Arc;
use std::time::Instant;

use crate::codec;
use crate::packet::{Packet, ProtocolVersion, Publish, QoS};

use crate::broker::delivery::{CopyTally, Delivery, Enqueued, QueueLimits};
use crate::broker::message::Quota;
use crate::broker::queue::Bound;
use crate::broker::store::journal::RefillResult;
use crate::broker::store::{QueueStore, StoredRef};

use super::durable::{self, copy_fields};
use super::{Inflight, OutboundStage, Session, SessionState};

/// Copies [`Session::take_sendable`] gave up on, by why.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Their Message Expiry Interval ran out while they waited.
    pub expired: usize,
    /// Larger than the client's Maximum Packet Size.
    pub too_large: usize,
}

impl Session {
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
    pub(super) fn finished(&self, delivery: &Delivery) {
        if let Some(tag) = &delivery.group {
            tag.resolved();
        }
        if let Some(stored) = &delivery.stored {
            stored.finished();
        }
    }

    /// Asks the store for the next rows of the queue when its memory window has run low.
    pub(super) fn maybe_refill(&self, state: &mut SessionState) {
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
    pub(super) fn refilled(&self, rows: RefillResult) {
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
}

impl SessionState {
    pub(super) fn allocate_packet_id(&mut self) -> Option<u16> {
        for _ in 0..=u16::MAX as usize {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }
}

pub(super) fn build_publish_unchecked(
    delivery: &Delivery,
    packet_id: Option<u16>,
    dup: bool,
) -> Publish {
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
