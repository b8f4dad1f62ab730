//! Shared subscription groups: `$share/{group}/{filter}` and `$queue/{filter}`.
//!
//! A group is identified by (group name, filter). Each message that reaches the group goes to
//! exactly one member. The member is chosen when the message can be sent, not when it arrives:
//! only online members with room in their in-flight window are candidates, and while there are
//! none the message waits in the group's own bounded queue. Copies a member could not finish
//! (it went offline, was taken over or its session ended) come back here and go to another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytestring::ByteString;
use parking_lot::Mutex;

use crate::packet::SubscriptionOptions;
use crate::strategy::{
    key_hash, Choice, Dispatcher, MemberInfo, MemberLoad, MessageView, StrategyCounters,
};

use crate::broker::acl::ReadGuard;
use crate::broker::events::{EventFeed, EventKind};
use crate::broker::message::delivery::{
    CopyTally, Delivery, Enqueued, GroupId, GroupOrigin, GroupTag, Mailbox, Occasion, QueueLimits,
};
use crate::broker::message::{Message, Quota, SessionId};
use crate::broker::queue::{Bound, DurableQueue, Spill};
use crate::broker::shared::backlog::{DeadLetter, Failure};
use crate::broker::shared::backlog_index::BacklogIndex;
use crate::broker::shared::counters::{GroupCounters, GroupDrop, Redelivery};
use crate::broker::shared::settings::GroupSettings;
use crate::broker::shared::Membership;
use crate::broker::store::journal::RefillResult;
use crate::broker::store::{
    group_owner, Journal, JournalQueue, Persistence, QueueStore, StoredRef,
};
use crate::config::Overflow;

/// Bounds on a group's own queue.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
    /// The per-session queue limits applied when a member is handed a message.
    pub member_queue: QueueLimits,
}

/// What became of a message offered to a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatched {
    /// Handed to a member, or waiting in the group's queue for one.
    Accepted,
    /// The group's queue is full: the message was dropped, because of this bound.
    Refused(Quota),
    /// The group ended (its last member left) while the message was being routed.
    Ended,
}

/// What became of a group when a member left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLeave {
    /// It still has members, or it is declared and stays without them.
    Continues,
    /// It has no member left and keeps collecting for a while: whoever removed the member
    /// arms a timer that ends it with [`SharedGroup::end_if_lingering`] and this epoch, so that
    /// a member joining (and perhaps leaving again) meanwhile voids that timer.
    Lingers { epoch: u64 },
    /// It has no member left and has ended: its queued messages were dropped and counted.
    Ended,
}

#[derive(Debug)]
pub struct SharedGroup {
    /// What deliveries name the group by, so that members never hold it.
    pub id: GroupId,
    pub name: ByteString,
    pub filter: ByteString,
    state: Mutex<GroupState>,
    /// Length of `state.queue`, readable without the lock so that the common "nothing waiting"
    /// check on every acknowledgement stays lock-free.
    queued: AtomicUsize,
    /// The settings have clock-driven work (`ack_timeout_secs` or `max_age_secs`), readable
    /// without the lock: the sweeper, which runs 50 times a second, visits only these groups.
    clock_driven: AtomicBool,
    pub counters: GroupCounters,
    /// How copies end with members; every copy a member holds carries a reference.
    pub tally: Arc<CopyTally>,
    pub strategy_counters: StrategyCounters,
    /// Where membership changes, redispatches and strategy swaps are announced.
    events: EventFeed,
    /// Where the group's queue is kept; none when the broker keeps no store. The queue in
    /// `state` holds the same storage; this copy names rows without the lock.
    store: Option<Arc<dyn QueueStore>>,
    /// Where the group says that its queue stopped or started being empty, so that members
    /// freeing room look only at groups with something waiting.
    backlog_index: Arc<BacklogIndex>,
    /// A full queue refuses every message that follows: one warning a second, not one each.
    refusal_log: crate::broker::log_limit::LogLimit,
}

pub use super::backlog::Queued;

/// What a new group starts with: its strategy and its work-queue settings.
#[derive(Debug)]
pub struct GroupSetup {
    pub dispatcher: Dispatcher,
    pub settings: GroupSettings,
}

#[derive(Debug)]
struct Member {
    /// The member's session, by the one face a group needs of it; the member's id is
    /// `info.id` (its `SessionId`).
    session: Arc<dyn Mailbox>,
    info: MemberInfo,
    options: SubscriptionOptions,
    identifier: Option<u32>,
    /// The member's read check (the ACL); none without an ACL.
    read: Option<Arc<ReadGuard>>,
    /// Messages handed to this member, for the per-member counters.
    dispatched: u64,
}

#[derive(Debug)]
struct GroupState {
    /// Chooses the member; the native round robin below is its fallback.
    dispatcher: Dispatcher,
    /// Ack deadline, delivery limit, per-key order and backlog policy; replaced on reload.
    settings: GroupSettings,
    members: Vec<Member>,
    /// Each member's index in `members`, so that a strategy's answer is found without a scan.
    index_of: HashMap<u64, usize, ahash::RandomState>,
    /// The next member whose state a Wasm strategy hears about: a few members' states are
    /// refreshed per message, in turn, so that a message costs the same in a group of 1,024
    /// as in a group of 4.
    load_cursor: usize,
    /// Round-robin position: the next member to try. Kept per group, so fairness does not
    /// depend on how many publishers there are.
    cursor: usize,
    /// The group's queue: a memory window and, with a store, the rest on disk.
    queue: DurableQueue<Queued>,
    /// Set when the group ended: late messages are dropped instead of stranded.
    ended: bool,
    /// Declared (configuration or admin): the group exists without members and does not end
    /// when its last member leaves.
    declared: bool,
    /// Counts the membership changes that matter to a lingering group's timer: a member
    /// joining, and the group becoming empty. A timer armed at one epoch ends the group only if
    /// it is still empty at that epoch.
    epoch: u64,
    /// A rebuild of the failed strategy instance is under way off the message path; the
    /// native round robin serves until it is installed.
    rebuilding: bool,
}

impl GroupState {
    fn members_with_load(&self) -> Vec<(MemberInfo, MemberLoad)> {
        self.members
            .iter()
            .map(|m| (m.info.clone(), m.session.load()))
            .collect()
    }
}

/// A group as the admin API, `/metrics` and the dashboard show it, read under its lock once.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub declared: bool,
    pub strategy: String,
    pub strategy_version: String,
    pub pinned: bool,
    pub members: Vec<MemberView>,
    /// Messages waiting, in memory and on disk, and their whole-message bytes.
    pub queued: usize,
    pub queued_bytes: usize,
    /// How long the oldest waiting message has waited since the broker received it.
    pub lag: std::time::Duration,
    pub settings: GroupSettings,
}

/// One member of a [`GroupView`].
#[derive(Debug, Clone)]
pub struct MemberView {
    pub session_id: SessionId,
    pub client_id: ByteString,
    pub weight: u32,
    pub online: bool,
    /// Messages handed to it by this group since it joined.
    pub dispatched: u64,
    /// Its session's messages in flight and queued (all subscriptions), against its window.
    pub busy: u32,
    pub window: u32,
    pub subscribed_at_ms: u64,
}

/// A member's share of the group's traffic, for statistics.
#[derive(Debug, Clone)]
pub struct MemberStats {
    pub client_id: ByteString,
    pub dispatched: u64,
    pub online: bool,
}

impl SharedGroup {
    pub fn new(
        id: GroupId,
        name: ByteString,
        filter: ByteString,
        setup: GroupSetup,
        journal: Option<Arc<Journal>>,
        events: EventFeed,
        backlog_index: Arc<BacklogIndex>,
    ) -> SharedGroup {
        let GroupSetup {
            dispatcher,
            settings,
        } = setup;
        let clock_driven = AtomicBool::new(settings_are_clock_driven(&settings));
        events.emit(EventKind::GroupCreated, &name, &filter, dispatcher.label());
        let store = journal.map(|journal| -> Arc<dyn QueueStore> {
            JournalQueue::new(Persistence::new(journal), group_owner(&name, &filter))
        });
        SharedGroup {
            id,
            name,
            filter,
            state: Mutex::new(GroupState {
                dispatcher,
                settings,
                members: Vec::new(),
                index_of: HashMap::default(),
                load_cursor: 0,
                cursor: 0,
                queue: DurableQueue::new(store.clone()),
                ended: false,
                declared: false,
                epoch: 0,
                rebuilding: false,
            }),
            queued: AtomicUsize::new(0),
            store,
            clock_driven,
            counters: GroupCounters::default(),
            tally: Arc::default(),
            strategy_counters: StrategyCounters::default(),
            events,
            backlog_index,
            refusal_log: crate::broker::log_limit::LogLimit::new(std::time::Duration::from_secs(1)),
        }
    }

    /// Adds `session` as a member, or updates its options if it already is one.
    pub fn add_member(&self, session: Arc<dyn Mailbox>, membership: Membership) {
        let Membership {
            options,
            identifier,
            weight,
            user_properties,
            read,
        } = membership;
        let mut state = self.state.lock();
        state.ended = false;
        let id = session.session_id();
        if let Some(&index) = state.index_of.get(&id) {
            let member = &mut state.members[index];
            member.options = options;
            member.identifier = identifier;
            member.read = read;
            return;
        }
        state.epoch += 1;
        let info = MemberInfo {
            id,
            client_id: session.client_id().clone(),
            weight,
            subscribed_at_ms: unix_millis(),
            user_properties,
        };
        let load = session.load();
        state
            .dispatcher
            .member_joined(&info, &self.strategy_counters);
        state
            .dispatcher
            .update_load(info.id, load, &self.strategy_counters);
        self.events.emit(
            EventKind::MemberJoined,
            &self.name,
            &self.filter,
            &*info.client_id,
        );
        let index = state.members.len();
        state.index_of.insert(id, index);
        state.members.push(Member {
            session,
            info,
            options,
            identifier,
            read,
            dispatched: 0,
        });
    }

    /// Replaces member `id`'s read check, if it is a member.
    pub fn renew_read_guard(&self, id: SessionId, read: Option<Arc<ReadGuard>>) {
        let mut state = self.state.lock();
        if let Some(&index) = state.index_of.get(&id) {
            state.members[index].read = read;
        }
    }

    /// Installs a new strategy (hot swap): membership is replayed into it under the group's
    /// lock, so no message is dispatched between the old strategy and the new one.
    pub fn swap_dispatcher(&self, mut dispatcher: Dispatcher) {
        let mut state = self.state.lock();
        let members = state.members_with_load();
        dispatcher.replay(&members, &self.strategy_counters);
        let old = std::mem::replace(&mut state.dispatcher, dispatcher);
        self.strategy_counters
            .reloads
            .fetch_add(1, Ordering::Relaxed);
        let to = state.dispatcher.label();
        drop(state);
        tracing::info!(group = %self.name, filter = %self.filter, from = %old.label(), to = %to, "shared group strategy swapped");
        self.events.emit(
            EventKind::StrategySwapped,
            &self.name,
            &self.filter,
            format!("{} -> {to}", old.label()),
        );
    }

    /// Takes the group's strategy out (the group has ended), so the caller can drop the
    /// instance outside the broker-wide locks.
    pub fn end_strategy(&self) -> Dispatcher {
        let mut state = self.state.lock();
        let native = Dispatcher::native(self.name.clone());
        std::mem::replace(&mut state.dispatcher, native)
    }

    /// Puts new work-queue settings in force (a reload); true if they differ.
    pub fn set_settings(&self, settings: GroupSettings) -> bool {
        let mut state = self.state.lock();
        if state.settings == settings {
            return false;
        }
        self.clock_driven
            .store(settings_are_clock_driven(&settings), Ordering::Relaxed);
        state.settings = settings;
        true
    }

    /// True if [`SharedGroup::sweep`] has anything to do for this group.
    pub fn is_clock_driven(&self) -> bool {
        self.clock_driven.load(Ordering::Relaxed)
    }

    pub fn settings(&self) -> GroupSettings {
        self.state.lock().settings.clone()
    }

    /// The strategy currently choosing for this group.
    pub fn strategy_label(&self) -> String {
        self.state.lock().dispatcher.label()
    }

    /// True while a failed strategy instance is being rebuilt (the native round robin serves).
    pub fn strategy_rebuilding(&self) -> bool {
        self.state.lock().rebuilding
    }

    /// True once the group gave up on its strategy after repeated failures.
    pub fn strategy_is_pinned(&self) -> bool {
        self.state.lock().dispatcher.is_pinned()
    }

    pub fn resolved_strategy(&self) -> Option<Arc<crate::strategy::ResolvedStrategy>> {
        self.state.lock().dispatcher.resolved().cloned()
    }

    /// Removes a member; `None` if `session_id` was not one. A group left empty ends, unless it
    /// is declared or `linger` asks it to keep collecting for a while.
    pub fn remove_member(&self, session_id: SessionId, linger: bool) -> Option<AfterLeave> {
        let mut state = self.state.lock();
        let index = state.index_of.remove(&session_id)?;
        let left = state.members.remove(index);
        let GroupState {
            members, index_of, ..
        } = &mut *state;
        for (moved, member) in members.iter().enumerate().skip(index) {
            index_of.insert(member.info.id, moved);
        }
        self.events.emit(
            EventKind::MemberLeft,
            &self.name,
            &self.filter,
            &*left.info.client_id,
        );
        state
            .dispatcher
            .member_left(session_id, &self.strategy_counters);
        if !state.members.is_empty() {
            if state.cursor >= state.members.len() {
                state.cursor = 0;
            }
            return Some(AfterLeave::Continues);
        }
        state.cursor = 0;
        if state.declared {
            return Some(AfterLeave::Continues);
        }
        if linger {
            state.epoch += 1;
            return Some(AfterLeave::Lingers { epoch: state.epoch });
        }
        self.end_locked(&mut state);
        Some(AfterLeave::Ended)
    }

    /// Ends the group if it has lingered without members since `epoch` (and was not declared
    /// meanwhile); true if it ended.
    pub fn end_if_lingering(&self, epoch: u64) -> bool {
        let mut state = self.state.lock();
        if state.ended || state.declared || !state.members.is_empty() || state.epoch != epoch {
            return false;
        }
        self.end_locked(&mut state);
        true
    }

    /// Makes the group declared: it stays without members.
    pub fn declare(&self) {
        let mut state = self.state.lock();
        // Voids the timer of a lingering group: it no longer ends with its members.
        state.epoch += 1;
        state.declared = true;
    }

    /// Makes the group an ordinary one again; `None` if it was not declared. With no member it
    /// ends at once (`Some(true)`): an undeclared group exists only for its members.
    pub fn undeclare(&self) -> Option<bool> {
        let mut state = self.state.lock();
        if !state.declared {
            return None;
        }
        state.declared = false;
        if !state.members.is_empty() {
            return Some(false);
        }
        self.end_locked(&mut state);
        Some(true)
    }

    /// Starts a memberless, undeclared group's linger (one the store gave back at start); its
    /// epoch for the timer, or none if it has members or is declared.
    pub fn begin_lingering(&self) -> Option<u64> {
        let mut state = self.state.lock();
        if state.ended || state.declared || !state.members.is_empty() {
            return None;
        }
        state.epoch += 1;
        Some(state.epoch)
    }

    pub fn is_declared(&self) -> bool {
        self.state.lock().declared
    }

    /// Marks the group ended and drops (and counts) what its queue holds.
    fn end_locked(&self, state: &mut GroupState) {
        state.ended = true;
        let dropped = state.queue.drop_all() as u64;
        self.publish_queued(state);
        self.counters.record_drop(GroupDrop::GroupEnded, dropped);
        self.events
            .emit(EventKind::GroupEnded, &self.name, &self.filter, "");
    }

    pub fn member_count(&self) -> usize {
        self.state.lock().members.len()
    }

    /// Messages waiting in the group, in memory and on disk.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Messages waiting in the group's memory window (the rest are on disk).
    pub fn queued_in_memory(&self) -> usize {
        self.state.lock().queue.in_memory()
    }

    pub fn view(&self) -> GroupView {
        let state = self.state.lock();
        let (strategy, strategy_version) = state.dispatcher.name_and_version();
        let lag = state
            .queue
            .front()
            .map(|oldest| oldest.message.received_at.elapsed())
            .unwrap_or_default();
        GroupView {
            declared: state.declared,
            strategy,
            strategy_version,
            pinned: state.dispatcher.is_pinned(),
            members: state
                .members
                .iter()
                .map(|m| {
                    let load = m.session.load();
                    MemberView {
                        session_id: m.info.id,
                        client_id: m.info.client_id.clone(),
                        weight: m.info.weight,
                        online: load.online,
                        dispatched: m.dispatched,
                        busy: load.inflight,
                        window: load.capacity,
                        subscribed_at_ms: m.info.subscribed_at_ms,
                    }
                })
                .collect(),
            queued: state.queue.count(),
            queued_bytes: state.queue.bytes(),
            lag,
            settings: state.settings.clone(),
        }
    }

    /// Copies out with members and not finished: queued in their sessions or unacknowledged.
    pub fn in_flight(&self) -> usize {
        // Every such copy holds a reference to the tally; the group holds one more.
        Arc::strong_count(&self.tally).saturating_sub(1)
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

    pub fn member_stats(&self) -> Vec<MemberStats> {
        let state = self.state.lock();
        state
            .members
            .iter()
            .map(|m| MemberStats {
                client_id: m.info.client_id.clone(),
                dispatched: m.dispatched,
                online: m.session.load().online,
            })
            .collect()
    }

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
    fn arrive(&self, state: &GroupState, message: Arc<Message>) -> Queued {
        let stored = if message.qos == crate::packet::QoS::AtMostOnce {
            None
        } else {
            state.queue.append(&message, None)
        };
        let key = state.settings.key_of(&message);
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

    fn offer_locked(
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

    /// Removes a stored copy the group gives up on.
    fn forget_stored(&self, stored: Option<u64>) {
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
    fn give_up(
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

    /// Keeps only the newest message per key (`compact`): drops a waiting message of `key`
    /// before a new one joins the queue. Covers the memory window; rows on disk stay.
    fn compact(&self, state: &mut GroupState, key: Option<u64>) {
        let Some(key) = key else { return };
        let Some(index) = state.queue.iter().position(|q| q.key == Some(key)) else {
            return;
        };
        if let Some(old) = state.queue.remove(index) {
            self.forget_stored(old.stored);
            self.counters.record_drop(GroupDrop::Compacted, 1);
        }
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

    /// Rebuilds the queue read back from the store at start: its memory window in order, and
    /// what waits on disk after it.
    pub fn restore_queue(&self, window: Vec<Queued>, spill: Spill) {
        let mut state = self.state.lock();
        let window: Vec<Queued> = window
            .into_iter()
            .map(|mut item| {
                item.key = state.settings.key_of(&item.message);
                item
            })
            .collect();
        state.queue.restore(window, spill);
        self.publish_queued(&state);
    }

    /// Publishes the queue's length (lock-free readers) and, when it became or stopped being
    /// empty, the group's place in the backlog index. Under the state lock, so that the
    /// index sees one group's changes in order.
    fn publish_queued(&self, state: &GroupState) {
        let now = state.queue.count();
        let before = self.queued.swap(now, Ordering::Relaxed);
        if (before == 0) != (now == 0) {
            self.backlog_index.set(self.id, now > 0);
        }
    }

    /// Asks the store for the next rows of the queue when its memory window has run low.
    fn maybe_refill(self: &Arc<Self>, state: &mut GroupState, limits: GroupLimits) {
        state.queue.maybe_refill(|| {
            let group = self.clone();
            Box::new(move |rows| group.refilled(rows, limits))
        });
    }

    /// Rows of the disk tail read back: they join the memory window in order, and go out to
    /// members with room.
    fn refilled(self: &Arc<Self>, rows: RefillResult, limits: GroupLimits) {
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
            let key = settings.key_of(&entry.message);
            Some(Queued::new(entry.message, Some(id), key))
        });
        self.publish_queued(&state);
        self.drain_locked(&mut state, limits);
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

    fn drain_locked(self: &Arc<Self>, state: &mut GroupState, limits: GroupLimits) {
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
    fn drop_too_old(&self, state: &mut GroupState) {
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
    fn drain_ordered(self: &Arc<Self>, state: &mut GroupState, limits: GroupLimits) {
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

    fn push_back(
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

    /// Starts rebuilding the failed strategy instance on a blocking thread: instantiation and
    /// `init` take milliseconds (seconds for Python and JavaScript guests), which must not be
    /// spent under this group's lock on a publisher's path.
    fn rebuild_in_background(self: &Arc<Self>, state: &mut GroupState) {
        if state.rebuilding {
            return;
        }
        let Some(source) = state.dispatcher.rebuild_source() else {
            return;
        };
        state.rebuilding = true;
        let group = self.clone();
        let rebuild = move || {
            let built = source.instantiate(&group.name);
            let mut state = group.state.lock();
            state.rebuilding = false;
            let members = state.members_with_load();
            state
                .dispatcher
                .install_rebuilt(&source, built, &members, &group.strategy_counters);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(rebuild);
            }
            Err(_) => {
                // Outside a runtime (unit tests); inline would re-enter this group's lock.
                std::thread::spawn(rebuild);
            }
        }
    }

    /// Picks a member and queues the message to it; false if no member can take it now.
    fn try_hand_out(
        self: &Arc<Self>,
        state: &mut GroupState,
        item: &Queued,
        limits: GroupLimits,
    ) -> bool {
        // Counted apart from the failure that pins the group (a fallback already).
        let was_pinned = state.dispatcher.is_pinned();
        // Down after an earlier failure (in a selection, a membership call, or its rebuild).
        let rebuilding = state.dispatcher.needs_rebuild();
        if rebuilding {
            self.rebuild_in_background(state);
        } else if state.dispatcher.is_wasm() {
            let chosen = self.hand_out_by_strategy(state, item, limits);
            if state.dispatcher.is_pinned() {
                // This very call gave up on the strategy.
                self.events.emit(
                    EventKind::Pinned,
                    &self.name,
                    &self.filter,
                    state.dispatcher.label(),
                );
            }
            // A failed call drops the instance: start its rebuild now, so it is likely back
            // for the next message.
            if state.dispatcher.needs_rebuild() {
                self.rebuild_in_background(state);
            }
            if let Some(delivered) = chosen {
                return delivered;
            }
        }
        let delivered = self.hand_out_round_robin(state, item, limits);
        if delivered && was_pinned {
            self.strategy_counters
                .pinned_messages
                .fetch_add(1, Ordering::Relaxed);
        } else if delivered && rebuilding {
            self.strategy_counters
                .fallbacks
                .rebuilding
                .fetch_add(1, Ordering::Relaxed);
        }
        delivered
    }

    /// Lets the group's Wasm strategy choose. `None` asks the round robin to place the message
    /// (the strategy declined, failed, or its member could not take it).
    fn hand_out_by_strategy(
        &self,
        state: &mut GroupState,
        item: &Queued,
        limits: GroupLimits,
    ) -> Option<bool> {
        let message = &item.message;
        if !self.refresh_loads(state) {
            // Nobody can take it now: it waits in the group queue.
            return Some(false);
        }
        let publisher = message.publisher_client_id.as_deref().unwrap_or("");
        let topic_hash = key_hash(message.topic.as_bytes());
        let view = MessageView {
            topic: &message.topic,
            publisher,
            payload: &message.payload,
            topic_hash,
            key_hash: item.key.unwrap_or(topic_hash),
            publisher_hash: if publisher.is_empty() {
                0
            } else {
                key_hash(publisher.as_bytes())
            },
            qos: message.qos as u8,
            retain: message.retain,
            user_properties: &message.properties.user_properties,
            content_type: message.properties.content_type.as_deref(),
        };
        let GroupState {
            members,
            index_of,
            dispatcher,
            ..
        } = &mut *state;
        let choice = dispatcher.choose(&view, &self.strategy_counters, |id| {
            index_of
                .get(&id)
                .map(|&index| (index, members[index].session.load().online))
        });
        let Choice::Member(index) = choice else {
            return None;
        };
        // A chosen member that is online but whose window is full: honouring the choice
        // would let one slow member stall its keys, so the message spills to a member with
        // room (as it does when the member cannot take this message).
        let delivered = state.members[index].session.load().has_room()
            && self.deliver_to(state, index, item, limits);
        // Its window just filled, or it was full or gone already: the strategy hears it now,
        // not when its turn in `refresh_loads` comes.
        let member = &state.members[index];
        state.dispatcher.update_load(
            member.info.id,
            member.session.load(),
            &self.strategy_counters,
        );
        let counter = if delivered {
            &self.strategy_counters.selections
        } else {
            &self.strategy_counters.spills
        };
        counter.fetch_add(1, Ordering::Relaxed);
        delivered.then_some(true)
    }

    /// Tells the strategy the current state of a few members, in turn; false if no member
    /// can take a message now. While the strategy was last told that some member has room,
    /// this costs `LOAD_REFRESH_PER_MESSAGE` members whatever the group's size: members fill
    /// up mostly by the messages this group hands them, which `hand_out_by_strategy` reports
    /// at once, and news of room freed or a member gone reaches the strategy within
    /// `members / LOAD_REFRESH_PER_MESSAGE` messages. Once it was told that none has room,
    /// every member is looked at, so that a freed slot is never missed.
    fn refresh_loads(&self, state: &mut GroupState) -> bool {
        let count = state.members.len();
        if count == 0 {
            return false;
        }
        let everyone = !state.dispatcher.told_someone_has_room();
        let refresh = if everyone {
            count
        } else {
            count.min(LOAD_REFRESH_PER_MESSAGE)
        };
        let mut anyone_has_room = false;
        for step in 0..refresh {
            let member = &state.members[(state.load_cursor + step) % count];
            let load = member.session.load();
            anyone_has_room |= load.has_room();
            state
                .dispatcher
                .update_load(member.info.id, load, &self.strategy_counters);
        }
        state.load_cursor = (state.load_cursor + refresh) % count;
        // After a partial refresh, a member the strategy still believes has room may have
        // it: the strategy is asked, and the round robin (which looks at everyone) places
        // the message if its answer cannot take it.
        anyone_has_room || !everyone
    }

    /// The native fair round robin over members with room.
    fn hand_out_round_robin(
        &self,
        state: &mut GroupState,
        item: &Queued,
        limits: GroupLimits,
    ) -> bool {
        let count = state.members.len();
        for step in 0..count {
            let index = (state.cursor + step) % count;
            if !state.members[index].session.load().has_room() {
                continue;
            }
            if self.deliver_to(state, index, item, limits) {
                state.cursor = (index + 1) % count;
                return true;
            }
        }
        false
    }

    /// Queues the message to member `index`; false if its session refused it (queue full).
    /// A message the member may not read (the ACL) is dropped instead, counted as `acl`, and
    /// goes to no other member: as Mosquitto checks read access for the member it picked. In
    /// a group whose members share their rules (the usual one) that is the only answer; in a
    /// mixed one, skipping the member would leave a message no member present may read
    /// blocking the queue.
    fn deliver_to(
        &self,
        state: &mut GroupState,
        index: usize,
        item: &Queued,
        limits: GroupLimits,
    ) -> bool {
        let member = &mut state.members[index];
        if member
            .read
            .as_ref()
            .is_some_and(|read| !read.admits(&item.message.topic))
        {
            self.counters.record_drop(GroupDrop::Acl, 1);
            self.forget_stored(item.stored);
            return true;
        }
        let mut delivery = Delivery::new(
            item.message.clone(),
            &member.options,
            member.identifier.into_iter().collect(),
            Occasion::Publish,
            Some(GroupTag {
                origin: GroupOrigin::Local(self.id),
                tally: self.tally.clone(),
                handed_at: std::time::Instant::now(),
                failures: item.failures,
                key: item.key,
            }),
        );
        delivery.stored = item.stored.and_then(|id| self.stored_ref(id));
        // Counted out before the member can see it, so that its acknowledgement always
        // counts it back after.
        self.tally.key_sent(item.key);
        match member.session.enqueue(delivery, limits.member_queue) {
            Enqueued::Refused(_) | Enqueued::Ended => {
                self.tally.key_resolved(item.key);
                false
            }
            Enqueued::Queued | Enqueued::QueuedDroppingOldestQos0 => {
                member.dispatched += 1;
                self.counters.dispatched.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }
}

fn settings_are_clock_driven(settings: &GroupSettings) -> bool {
    settings.ack_timeout.is_some() || settings.max_age.is_some()
}

/// Members whose state `refresh_loads` reads per message in a group with a Wasm strategy.
/// Groups this small or smaller are refreshed whole, every message.
const LOAD_REFRESH_PER_MESSAGE: usize = 8;

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, AtomicU64};

    use super::*;
    use crate::config::SharedConfig;
    use crate::packet::QoS;
    use crate::strategy::StrategyRegistry;

    /// A member that takes every message into its window and counts how often the group
    /// reads its state.
    #[derive(Debug)]
    struct FakeMember {
        id: u64,
        client_id: ByteString,
        busy: AtomicU32,
        /// 0 is offline.
        capacity: AtomicU32,
        received: AtomicU64,
        /// Shared by all members of a test: state reads over the whole group.
        loads: Arc<AtomicU64>,
    }

    impl Mailbox for FakeMember {
        fn session_id(&self) -> SessionId {
            self.id
        }
        fn client_id(&self) -> &ByteString {
            &self.client_id
        }
        fn enqueue(&self, _delivery: Delivery, _limits: QueueLimits) -> Enqueued {
            self.busy.fetch_add(1, Ordering::Relaxed);
            self.received.fetch_add(1, Ordering::Relaxed);
            Enqueued::Queued
        }
        fn load(&self) -> MemberLoad {
            self.loads.fetch_add(1, Ordering::Relaxed);
            let capacity = self.capacity.load(Ordering::Relaxed);
            MemberLoad {
                inflight: self.busy.load(Ordering::Relaxed),
                capacity,
                online: capacity > 0,
            }
        }
        fn take_overdue(&self, _group: GroupId, _deadline: std::time::Instant) -> Vec<Delivery> {
            Vec::new()
        }
    }

    const LIMITS: GroupLimits = GroupLimits {
        max_messages: 10_000,
        max_bytes: 1 << 30,
        member_queue: QueueLimits {
            max_messages: 10_000,
            max_bytes: 1 << 30,
        },
    };

    /// A group on the built-in Wasm round robin with `count` members of window `capacity`.
    fn wasm_group(
        count: u64,
        capacity: u32,
    ) -> (
        Arc<SharedGroup>,
        Vec<Arc<FakeMember>>,
        Arc<AtomicU64>,
        Arc<BacklogIndex>,
    ) {
        let config = SharedConfig {
            plugin_cache_dir: Some(std::path::PathBuf::new()),
            ..SharedConfig::default()
        };
        let registry = StrategyRegistry::new(&config, None).unwrap();
        let resolved = registry.resolve("g").unwrap();
        let dispatcher = Dispatcher::build(&ByteString::from("g"), Some(resolved)).unwrap();
        let index = Arc::new(BacklogIndex::default());
        let group = Arc::new(SharedGroup::new(
            1,
            "g".into(),
            "t/#".into(),
            GroupSetup {
                dispatcher,
                settings: GroupSettings::default(),
            },
            None,
            EventFeed::default(),
            index.clone(),
        ));
        let loads = Arc::new(AtomicU64::new(0));
        let members: Vec<Arc<FakeMember>> = (1..=count)
            .map(|id| {
                let member = Arc::new(FakeMember {
                    id,
                    client_id: format!("m{id}").into(),
                    busy: AtomicU32::new(0),
                    capacity: AtomicU32::new(capacity),
                    received: AtomicU64::new(0),
                    loads: loads.clone(),
                });
                group.add_member(
                    member.clone(),
                    Membership {
                        options: SubscriptionOptions {
                            qos: QoS::AtLeastOnce,
                            ..SubscriptionOptions::default()
                        },
                        identifier: None,
                        weight: 1,
                        user_properties: Vec::new(),
                        read: None,
                    },
                );
                member
            })
            .collect();
        (group, members, loads, index)
    }

    fn message() -> Arc<Message> {
        Message::internal(
            "t/x".into(),
            bytes::Bytes::from_static(b"m"),
            QoS::AtLeastOnce,
            false,
        )
    }

    #[test]
    fn a_message_reads_a_few_members_whatever_the_group_size() {
        for count in [4u64, 64, 1024] {
            let (group, members, loads, _) = wasm_group(count, 1000);
            loads.store(0, Ordering::Relaxed);
            let messages = 2 * count;
            for _ in 0..messages {
                assert_eq!(group.dispatch(message(), LIMITS), Dispatched::Accepted);
            }
            let per_message = loads.load(Ordering::Relaxed) / messages;
            assert!(
                per_message <= LOAD_REFRESH_PER_MESSAGE as u64 + 4,
                "{count} members: {per_message} member reads per message"
            );
            // The strategy, not the fallback, placed them: two each, in turn.
            for member in &members {
                assert_eq!(
                    member.received.load(Ordering::Relaxed),
                    2,
                    "{count} members"
                );
            }
            assert_eq!(
                group.strategy_counters.selections.load(Ordering::Relaxed),
                messages
            );
        }
    }

    #[test]
    fn room_freed_while_everyone_was_full_is_found() {
        let (group, members, _, index) = wasm_group(64, 1);
        for _ in 0..64 {
            group.dispatch(message(), LIMITS);
        }
        assert_eq!(index.count(), 0);
        for _ in 0..3 {
            group.dispatch(message(), LIMITS);
        }
        assert_eq!(group.queued(), 3);
        assert_eq!(index.count(), 1, "a group with a backlog is in the index");
        members[40].busy.store(0, Ordering::Relaxed);
        group.drain(LIMITS);
        assert_eq!(members[40].received.load(Ordering::Relaxed), 2);
        assert_eq!(group.queued(), 2);
        for member in &members {
            member.busy.store(0, Ordering::Relaxed);
        }
        group.drain(LIMITS);
        assert_eq!(group.queued(), 0);
        assert_eq!(index.count(), 0, "an emptied group leaves the index");
    }

    #[test]
    fn a_member_gone_before_the_strategy_heard_is_no_strategy_failure() {
        let (group, members, _, _) = wasm_group(64, 1000);
        // Offline between two refreshes: the round robin over 64 members reaches it before
        // its refresh turn does.
        for member in &members {
            member.capacity.store(0, Ordering::Relaxed);
        }
        members[5].capacity.store(1000, Ordering::Relaxed);
        for _ in 0..64 {
            assert_eq!(group.dispatch(message(), LIMITS), Dispatched::Accepted);
        }
        assert_eq!(members[5].received.load(Ordering::Relaxed), 64);
        let fallbacks = &group.strategy_counters.fallbacks;
        assert_eq!(fallbacks.invalid_answer.load(Ordering::Relaxed), 0);
        assert!(!group.strategy_is_pinned());
    }
}
