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
use crate::strategy::{Dispatcher, MemberInfo, MemberLoad, StrategyCounters};

use crate::broker::acl::ReadGuard;
use crate::broker::delivery::{CopyTally, GroupId, Mailbox, QueueLimits};
use crate::broker::events::{EventFeed, EventKind};
use crate::broker::message::{Quota, SessionId};
use crate::broker::queue::DurableQueue;
use crate::broker::shared::backlog_index::BacklogIndex;
use crate::broker::shared::counters::GroupCounters;
use crate::broker::store::{group_owner, Journal, JournalQueue, Persistence, QueueStore};
use crate::config::GroupSettings;

mod choose;
mod lifecycle;
mod members;
mod queue;
mod view;
mod work;

pub use view::{GroupView, MemberStats, MemberView};

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
    refusal_log: crate::log_limit::LogLimit,
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
    /// Joins and leaves the strategy has not heard yet, oldest first. A member joins or
    /// leaves under the topic tree's write lock, where no guest may be called (a slow
    /// `member-joined` would stall every publisher); the strategy hears them after that lock
    /// is released ([`SharedGroup::announce_membership`]), or before it next chooses.
    membership_news: Vec<MembershipNews>,
}

/// A membership change for the group's strategy.
#[derive(Debug)]
enum MembershipNews {
    Joined(MemberInfo),
    Left(SessionId),
}

impl GroupState {
    fn members_with_load(&self) -> Vec<(MemberInfo, MemberLoad)> {
        self.members
            .iter()
            .map(|m| (m.info.clone(), m.session.load()))
            .collect()
    }
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
                membership_news: Vec::new(),
            }),
            queued: AtomicUsize::new(0),
            store,
            clock_driven,
            counters: GroupCounters::default(),
            tally: Arc::default(),
            strategy_counters: StrategyCounters::default(),
            events,
            backlog_index,
            refusal_log: crate::log_limit::LogLimit::new(std::time::Duration::from_secs(1)),
        }
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
}

fn settings_are_clock_driven(settings: &GroupSettings) -> bool {
    settings.ack_timeout.is_some() || settings.max_age.is_some()
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
