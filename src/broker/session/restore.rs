//! A session put back from the store at start.

use crate::packet::LastWill;

use crate::broker::delivery::Delivery;
use crate::broker::queue::Spill;

use super::{Inflight, OutboundStage, Session};

/// What the store gives back of a session at start (see [`Session::restore`]).
#[derive(Debug, Default)]
pub struct Restored {
    pub queued: Vec<Delivery>,
    pub spill: Spill,
    /// Packet id, PUBREL sent, and the copy; in send order.
    pub inflight: Vec<(u16, bool, Delivery)>,
    pub incoming_qos2: Vec<u16>,
}

impl Session {
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
}
