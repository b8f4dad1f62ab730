//! Choosing a member for a message: the group's strategy (a Wasm guest through its
//! `Dispatcher`), the native round robin it falls back on, the member loads the strategy hears,
//! hot swaps and rebuilds of a failed instance, and the hand-over to the chosen member's mailbox.
//! Apart from storage: nothing here reads or writes the group's queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::strategy::{key_hash, Choice, Dispatcher, MessageView};

use crate::broker::delivery::{Delivery, Enqueued, GroupOrigin, GroupTag, Occasion};
use crate::broker::events::EventKind;
use crate::broker::shared::counters::GroupDrop;

use super::{GroupLimits, GroupState, Queued, SharedGroup};

impl SharedGroup {
    /// Installs a new strategy (hot swap): membership is replayed into it under the group's
    /// lock, so no message is dispatched between the old strategy and the new one.
    pub fn swap_dispatcher(&self, mut dispatcher: Dispatcher) {
        let mut state = self.state.lock();
        let members = state.members_with_load();
        dispatcher.replay(&members, &self.strategy_counters);
        // The replay told the new instance of today's members, so news not yet heard is
        // already in it; the old instance, which has not heard it, goes.
        state.membership_news.clear();
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
        state.membership_news.clear();
        let native = Dispatcher::native(self.name.clone());
        std::mem::replace(&mut state.dispatcher, native)
    }

    /// Starts rebuilding the failed strategy instance on a blocking thread: instantiation and
    /// `init` take milliseconds (seconds for Python and JavaScript guests), which must not be
    /// spent under this group's lock on a publisher's path.
    pub(super) fn rebuild_in_background(self: &Arc<Self>, state: &mut GroupState) {
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
            // News first, to the dispatcher as it is: without an instance it is dropped (the
            // replay below tells the rebuilt one of today's members, and nothing of members
            // it never knew); if a swap installed another instance meanwhile, which then
            // ignores this rebuild, that instance hears it.
            group.hear_membership_locked(&mut state);
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
    pub(super) fn try_hand_out(
        self: &Arc<Self>,
        state: &mut GroupState,
        item: &Queued,
        limits: GroupLimits,
    ) -> bool {
        // Every choice (a message offered, a drain, a redispatch) comes here: the strategy
        // hears joins and leaves before it chooses.
        self.hear_membership_locked(state);
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
    pub(super) fn hand_out_by_strategy(
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
    pub(super) fn refresh_loads(&self, state: &mut GroupState) -> bool {
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
    pub(super) fn hand_out_round_robin(
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
    pub(super) fn deliver_to(
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

/// Members whose state `refresh_loads` reads per message in a group with a Wasm strategy.
/// Groups this small or smaller are refreshed whole, every message.
const LOAD_REFRESH_PER_MESSAGE: usize = 8;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, AtomicU64};

    use super::*;
    use crate::broker::delivery::{GroupId, Mailbox, QueueLimits};
    use crate::broker::events::EventFeed;
    use crate::broker::message::{Message, SessionId};
    use crate::broker::shared::backlog_index::BacklogIndex;
    use crate::broker::shared::group::Dispatched;
    use crate::broker::shared::group::GroupSetup;
    use crate::broker::shared::Membership;
    use crate::config::GroupSettings;
    use crate::config::SharedConfig;
    use crate::packet::QoS;
    use crate::packet::SubscriptionOptions;
    use crate::strategy::MemberLoad;
    use crate::strategy::StrategyRegistry;
    use bytestring::ByteString;

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
