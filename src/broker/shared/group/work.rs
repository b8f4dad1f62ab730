//! The work queue: copies that come back from members (disconnects, missed ack deadlines,
//! refusals), the delivery limit and the dead-letter topic, and the clock-driven sweep.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytestring::ByteString;

use crate::broker::delivery::Mailbox;
use crate::broker::events::EventKind;
use crate::broker::shared::backlog::{DeadLetter, Failure};
use crate::broker::shared::counters::{GroupDrop, Redelivery};

use super::{GroupLimits, GroupState, Queued, SharedGroup};

impl SharedGroup {
    /// Takes back copies a member could not finish (each with this failure counted) and hands
    /// them to other members, oldest first. Those that reached `max_deliveries` are returned
    /// for the dead-letter topic, or dropped when the group has none.
    pub fn redispatch(
        self: &Arc<Self>,
        copies: Vec<Queued>,
        limits: GroupLimits,
        reason: Redelivery,
    ) -> Vec<DeadLetter> {
        let mut state = self.state.lock();
        if state.ended {
            self.counters
                .record_drop(GroupDrop::GroupEnded, copies.len() as u64);
            for copy in copies {
                self.forget_stored(copy.stored);
            }
            return Vec::new();
        }
        let mut dead = Vec::new();
        let mut retried = Vec::with_capacity(copies.len());
        for copy in copies {
            match state.settings.max_deliveries {
                Some(max) if copy.failures >= max => {
                    if let Some(letter) = self.give_up(&state, copy, GroupDrop::MaxDeliveries) {
                        dead.push(letter);
                    }
                }
                _ => retried.push(copy),
            }
        }
        let copies = retried;
        let count = copies.len() as u64;
        if count == 0 {
            self.drain_locked(&mut state, limits);
            return dead;
        }
        self.counters.record_redelivery(reason, count);
        self.events.emit(
            EventKind::Redispatched,
            &self.name,
            &self.filter,
            format!("{count} ({})", reason.label()),
        );
        // Ahead of the queue: they were published before anything still waiting.
        for copy in copies.into_iter().rev() {
            state.queue.push_front(copy);
        }
        self.publish_queued(&state);
        self.drain_locked(&mut state, limits);
        dead
    }

    /// A member refused a copy (PUBACK/PUBREC >= 0x80): it is never sent to another member
    /// [MQTT-4.8.2-6]; it goes to the dead-letter topic if the group has one, else it is
    /// dropped and counted. The member's session has already let go of its stored row.
    pub fn rejected(&self, copy: Queued) -> Option<DeadLetter> {
        let state = self.state.lock();
        self.give_up(&state, copy, GroupDrop::Rejected)
    }

    /// A message the group stops trying to deliver: bound for the dead-letter topic, or
    /// dropped (counted as `otherwise`) when there is none.
    pub(super) fn give_up(
        &self,
        state: &GroupState,
        copy: Queued,
        otherwise: GroupDrop,
    ) -> Option<DeadLetter> {
        self.forget_stored(copy.stored);
        let topic = state
            .settings
            .dead_letter_topic_for(&self.name, &copy.message.topic);
        let Some(topic) = topic else {
            self.counters.record_drop(otherwise, 1);
            return None;
        };
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        Some(DeadLetter {
            message: copy.message,
            topic,
            group: self.name.clone(),
            deliveries: copy.failures,
            failure: copy.last_failure.unwrap_or_else(|| Failure {
                reason: "unknown".into(),
                member: ByteString::new(),
            }),
        })
    }

    /// Work done on a clock rather than on an event: copies whose ack deadline passed go to
    /// other members, and waiting messages older than `max_age_secs` are dropped. Returns the
    /// copies given up on for the dead-letter topic.
    pub fn sweep(
        self: &Arc<Self>,
        now: std::time::Instant,
        limits: GroupLimits,
    ) -> Vec<DeadLetter> {
        let (timeout, members) = {
            let mut state = self.state.lock();
            if state.ended {
                return Vec::new();
            }
            if state.settings.max_age.is_some() {
                self.drain_locked(&mut state, limits);
            }
            let Some(timeout) = state.settings.ack_timeout else {
                return Vec::new();
            };
            let members: Vec<Arc<dyn Mailbox>> =
                state.members.iter().map(|m| m.session.clone()).collect();
            (timeout, members)
        };
        let Some(deadline) = now.checked_sub(timeout) else {
            return Vec::new();
        };
        let mut dead = Vec::new();
        // Each member's session is locked on its own, not under the group's lock (the order is
        // group, then session; taking the copies back needs the group again after).
        for member in members {
            let overdue = member.take_overdue(self.id, deadline);
            if overdue.is_empty() {
                continue;
            }
            tracing::debug!(group = %self.name, filter = %self.filter, client_id = %member.client_id(), count = overdue.len(), "ack deadline passed: copies go to other members");
            let copies = overdue
                .into_iter()
                .filter_map(|d| {
                    let tag = d.group?;
                    tag.resolved();
                    Some(Queued {
                        message: d.message,
                        stored: d.stored.map(|s| s.id),
                        failures: tag.failures + 1,
                        last_failure: Some(Failure {
                            reason: Redelivery::AckTimeout.failure().into(),
                            member: member.client_id().clone(),
                        }),
                        key: tag.key,
                    })
                })
                .collect();
            dead.extend(self.redispatch(copies, limits, Redelivery::AckTimeout));
        }
        dead
    }
}
