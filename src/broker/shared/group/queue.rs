//! A group's queue: messages arriving (stored through the group's queue storage) and offered,
//! the bounds and policies of what waits (overflow, compact, max age, per-key order), the
//! drain to members with room, and the refill of the disk tail. Choosing the member is
//! `choose.rs`'s.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::broker::events::EventKind;
use crate::broker::message::{Message, Quota};
use crate::broker::queue::{Bound, Spill};
use crate::broker::shared::counters::GroupDrop;
use crate::broker::store::journal::RefillResult;
use crate::broker::store::StoredRef;
use crate::config::Overflow;

use super::{Dispatched, GroupLimits, GroupState, Queued, SharedGroup};

impl SharedGroup {
    /// Hands a newly published message to one member, or queues it in the group: the
    /// message arrives (is stored), then is offered.
    pub fn dispatch(self: &Arc<Self>, message: Arc<Message>, limits: GroupLimits) -> Dispatched {
        let mut state = self.state.lock();
        if state.ended {
            self.counters.record_drop(GroupDrop::GroupEnded, 1);
            return Dispatched::Ended;
        }
        // Arrival and offer under one hold of the lock: copy ids are allocated in arrival
        // order, and the queue's disk tail takes every stored row from its first id on as its
        // own, so rows must join the queue in id order (two publishers storing 10 and 11 and
        // offering 11 first, with the window full, would leave 10 nowhere).
        let item = self.arrive(&state, message);
        self.offer_locked(&mut state, item, limits)
    }

    /// A message arriving at the group: stored (QoS 1/2 with a store) before any member can
    /// see it, so that its finishing (by the member) always comes after, with its
    /// `ordered_by` key.
    pub(super) fn arrive(&self, state: &GroupState, message: Arc<Message>) -> Queued {
        let stored = if message.qos == crate::packet::QoS::AtMostOnce {
            None
        } else {
            state.queue.append(&message, None)
        };
        let key = state
            .settings
            .key_of(&message.topic, message.publisher_client_id.as_deref());
        Queued::new(message, stored, key)
    }

    /// Offers a message that has arrived (and was stored by whoever stored it) to the group:
    /// handed to a member now, or queued. Items stored in the group's own storage must be
    /// offered in the order of their ids (see [`SharedGroup::dispatch`]).
    pub fn offer(self: &Arc<Self>, item: Queued, limits: GroupLimits) -> Dispatched {
        let mut state = self.state.lock();
        if state.ended {
            self.counters.record_drop(GroupDrop::GroupEnded, 1);
            self.forget_stored(item.stored);
            return Dispatched::Ended;
        }
        self.offer_locked(&mut state, item, limits)
    }

    pub(super) fn offer_locked(
        self: &Arc<Self>,
        state: &mut GroupState,
        item: Queued,
        limits: GroupLimits,
    ) -> Dispatched {
        // Anything already waiting is older and goes first; a key with a copy out waits.
        if state.queue.is_empty()
            && !item.key.is_some_and(|k| self.tally.key_is_out(k))
            && self.try_hand_out(state, &item, limits)
        {
            return Dispatched::Accepted;
        }
        if state.settings.compact {
            self.compact(state, item.key);
        }
        if let Err(quota) = self.push_back(state, item, limits) {
            return Dispatched::Refused(quota);
        }
        self.drain_locked(state, limits);
        Dispatched::Accepted
    }

    pub(super) fn push_back(
        &self,
        state: &mut GroupState,
        item: Queued,
        limits: GroupLimits,
    ) -> Result<(), Quota> {
        let refused = state
            .queue
            .full(
                item.message.weight(),
                0,
                limits.max_messages,
                limits.max_bytes,
            )
            .map(|bound| match bound {
                Bound::Messages => Quota::GroupMessages,
                Bound::Bytes => Quota::GroupBytes,
            });
        if refused.is_some() && state.settings.overflow == Overflow::DropOldest {
            if let Some(oldest) = state.queue.pop_front() {
                // Room for the new one at the cost of the oldest (memory holds the oldest; the
                // disk tail is newer).
                self.forget_stored(oldest.stored);
                self.counters.record_drop(GroupDrop::Overflow, 1);
                return self.push_back(state, item, limits);
            }
        }
        if let Some(quota) = refused {
            self.counters.record_drop(GroupDrop::of_quota(quota), 1);
            if let Some(suppressed) = self.refusal_log.allow() {
                tracing::warn!(group = %self.name, filter = %self.filter, quota = quota.key(), suppressed, "shared group queue full: message refused (v5 publishers hear 0x97)");
            }
            self.forget_stored(item.stored);
            return Err(quota);
        }
        // Past the memory window, a stored message waits on disk only.
        let stored = item.stored;
        state.queue.push_back(item, stored);
        self.publish_queued(state);
        Ok(())
    }

    /// Keeps only the newest message per key (`compact`): drops a waiting message of `key`
    /// before a new one joins the queue. Covers the memory window; rows on disk stay.
    pub(super) fn compact(&self, state: &mut GroupState, key: Option<u64>) {
        let Some(key) = key else { return };
        let Some(index) = state.queue.iter().position(|q| q.key == Some(key)) else {
            return;
        };
        if let Some(old) = state.queue.remove(index) {
            self.forget_stored(old.stored);
            self.counters.record_drop(GroupDrop::Compacted, 1);
        }
    }

    /// Hands waiting messages to members that have room; called when a member comes online,
    /// joins, or acknowledges a message.
    pub fn drain(self: &Arc<Self>, limits: GroupLimits) {
        if self.queued() == 0 {
            return;
        }
        let mut state = self.state.lock();
        self.drain_locked(&mut state, limits);
    }

    pub(super) fn drain_locked(self: &Arc<Self>, state: &mut GroupState, limits: GroupLimits) {
        // Pairs with the fence in `BrokerState::drain_groups_of`: the queue length stored
        // before this is seen by a member freeing room, or this sees the room it freed.
        std::sync::atomic::fence(Ordering::SeqCst);
        self.drop_too_old(state);
        if state.settings.ordered_by.is_some() {
            self.drain_ordered(state, limits);
        } else {
            while let Some(item) = state.queue.front().cloned() {
                if !self.try_hand_out(state, &item, limits) {
                    break;
                }
                state.queue.pop_front();
            }
        }
        self.maybe_refill(state, limits);
        self.publish_queued(state);
    }

    /// Drops waiting messages older than `max_age_secs`. The queue is in arrival order (copies
    /// that came back are older still, at its front), so they are at the front.
    pub(super) fn drop_too_old(&self, state: &mut GroupState) {
        let Some(max_age) = state.settings.max_age else {
            return;
        };
        let mut dropped = 0;
        while let Some(front) = state.queue.front() {
            if front.message.received_at.elapsed() <= max_age {
                break;
            }
            if let Some(old) = state.queue.pop_front() {
                self.forget_stored(old.stored);
                dropped += 1;
            }
        }
        self.counters.record_drop(GroupDrop::MaxAge, dropped);
    }

    /// Hands out waiting messages whose key has no copy out, in queue order: a key's messages
    /// go one at a time and in order, and a key that waits never holds up the others. Items
    /// leave the queue where they are (near its front, where the scan finds free keys), so a
    /// drain costs the blocked items it passes, not the whole queue.
    pub(super) fn drain_ordered(self: &Arc<Self>, state: &mut GroupState, limits: GroupLimits) {
        let mut blocked: std::collections::HashSet<u64, ahash::RandomState> =
            self.tally.keys_out().into_iter().collect();
        let mut index = 0;
        while let Some(waiting) = state.queue.get(index) {
            let key = waiting.key.unwrap_or(0);
            if blocked.contains(&key) {
                index += 1;
                continue;
            }
            let item = waiting.clone();
            if !self.try_hand_out(state, &item, limits) {
                // Nobody has room: the rest waits, in order.
                break;
            }
            state.queue.remove(index);
            blocked.insert(key);
        }
    }

    /// Asks the store for the next rows of the queue when its memory window has run low.
    pub(super) fn maybe_refill(self: &Arc<Self>, state: &mut GroupState, limits: GroupLimits) {
        state.queue.maybe_refill(|| {
            let group = self.clone();
            Box::new(move |rows| group.refilled(rows, limits))
        });
    }

    /// Rows of the disk tail read back: they join the memory window in order, and go out to
    /// members with room.
    pub(super) fn refilled(self: &Arc<Self>, rows: RefillResult, limits: GroupLimits) {
        let mut state = self.state.lock();
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(group = %self.name, filter = %self.filter, error = %e, "store: cannot read the group's queue back");
                state.queue.refill_failed();
                return;
            }
        };
        if state.ended {
            return;
        }
        let GroupState {
            queue, settings, ..
        } = &mut *state;
        queue.refilled(rows, &mut |id, entry, _| {
            let key = settings.key_of(
                &entry.message.topic,
                entry.message.publisher_client_id.as_deref(),
            );
            Some(Queued::new(entry.message, Some(id), key))
        });
        self.publish_queued(&state);
        self.drain_locked(&mut state, limits);
    }

    /// Rebuilds the queue read back from the store at start: its memory window in order, and
    /// what waits on disk after it.
    pub fn restore_queue(&self, window: Vec<Queued>, spill: Spill) {
        let mut state = self.state.lock();
        let window: Vec<Queued> = window
            .into_iter()
            .map(|mut item| {
                item.key = state.settings.key_of(
                    &item.message.topic,
                    item.message.publisher_client_id.as_deref(),
                );
                item
            })
            .collect();
        state.queue.restore(window, spill);
        self.publish_queued(&state);
    }

    /// Publishes the queue's length (lock-free readers) and, when it became or stopped being
    /// empty, the group's place in the backlog index. Under the state lock, so that the
    /// index sees one group's changes in order.
    pub(super) fn publish_queued(&self, state: &GroupState) {
        let now = state.queue.count();
        let before = self.queued.swap(now, Ordering::Relaxed);
        if (before == 0) != (now == 0) {
            self.backlog_index.set(self.id, now > 0);
        }
    }

    /// Removes a stored copy the group gives up on.
    pub(super) fn forget_stored(&self, stored: Option<u64>) {
        if let (Some(store), Some(id)) = (&self.store, stored) {
            store.finished(id);
        }
    }

    /// The handle on row `id` of this group's queue, for the member that holds its copy: it
    /// finishes the row through the group's storage.
    pub fn stored_ref(&self, id: u64) -> Option<StoredRef> {
        self.store
            .as_ref()
            .map(|store| StoredRef::new(store.clone(), id))
    }

    /// Drops every message waiting in the group (memory and disk); copies members hold are
    /// left to them. Returns how many were dropped.
    pub fn purge(&self) -> u64 {
        let mut state = self.state.lock();
        let (window, purged) = state.queue.purge();
        for item in window {
            self.forget_stored(item.stored);
        }
        let purged = purged as u64;
        self.publish_queued(&state);
        drop(state);
        self.counters.record_drop(GroupDrop::Purged, purged);
        self.events.emit(
            EventKind::Purged,
            &self.name,
            &self.filter,
            purged.to_string(),
        );
        purged
    }
}
