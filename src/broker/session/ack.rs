//! Acknowledgements from the client for messages the broker sent: PUBACK, PUBREC, PUBCOMP.

use crate::packet::{QoS, ReasonCode};

use crate::broker::delivery::{CopyTally, Delivery};

use super::durable::{self};
use super::{Inflight, OutboundStage, Session, SessionState};

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

impl Session {
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

    /// The client acknowledged a copy: it is done with, and its group (if any) counts it.
    pub(super) fn finished_by_member(&self, delivery: &Delivery) {
        if let Some(tag) = &delivery.group {
            CopyTally::count(&tag.tally.acked);
        }
        self.finished(delivery);
    }
}

impl SessionState {
    pub(super) fn remove_inflight(&mut self, packet_id: u16) -> Option<Inflight> {
        let entry = self.inflight.remove(&packet_id)?;
        self.inflight_bytes -= entry.delivery.message.weight();
        Some(entry)
    }
}
