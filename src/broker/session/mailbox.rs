//! The face a shared group sees of a session: somewhere to put a copy, its load, and the
//! copies past their ack deadline taken back.

use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;

use crate::packet::QoS;

use crate::broker::delivery::{Delivery, Enqueued, GroupId, Mailbox, QueueLimits};
use crate::broker::message::SessionId;

use super::{Session, UNHEALTHY_AFTER_TIMEOUTS};

impl Mailbox for Session {
    fn session_id(&self) -> SessionId {
        self.id
    }

    fn client_id(&self) -> &ByteString {
        &self.client_id
    }

    fn enqueue(&self, delivery: Delivery, limits: QueueLimits) -> Enqueued {
        Session::enqueue(self, delivery, limits)
    }

    fn load(&self) -> crate::strategy::MemberLoad {
        self.member_load()
    }

    fn take_overdue(&self, group: GroupId, deadline: Instant) -> Vec<Delivery> {
        let mut state = self.lock();
        if state.link.is_none() {
            // Offline: its copies went back to the group when it left.
            return Vec::new();
        }
        let overdue = |d: &Delivery| {
            d.qos != QoS::ExactlyOnce
                && d.group
                    .as_ref()
                    .is_some_and(|tag| tag.is_from(group) && tag.handed_at < deadline)
        };
        let mut taken = Vec::new();
        // Sent and unacknowledged: another member gets a copy; this one stays in flight so
        // that the packet id is not reused under a late PUBACK.
        let mut sent: Vec<(u64, u16)> = state
            .inflight
            .iter()
            .filter(|(_, f)| f.abandoned.is_none() && overdue(&f.delivery))
            .map(|(id, f)| (f.sequence, *id))
            .collect();
        sent.sort_unstable();
        for (_, id) in sent {
            if let Some(entry) = state.inflight.get_mut(&id) {
                let copy = entry.delivery.clone();
                entry.abandoned = entry
                    .delivery
                    .group
                    .take()
                    .map(|tag| Arc::downgrade(&tag.tally));
                // The group's copy (and its stored row) goes on with the next member.
                entry.delivery.stored = None;
                taken.push(copy);
            }
        }
        // Still queued here, never sent: simply taken back.
        taken.extend(state.queue.take_if(overdue));
        if !taken.is_empty() {
            state.ack_timeouts += 1;
            if state.ack_timeouts == UNHEALTHY_AFTER_TIMEOUTS {
                tracing::info!(client_id = %self.client_id, "member missed its ack deadline repeatedly: it gets no new shared messages until it acknowledges one");
            }
        }
        taken
    }
}
