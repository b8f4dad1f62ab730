//! The router: every subscription in one topic tree, and the fan-out of a published message.
//!
//! Overlapping subscriptions of one session are delivered as ONE copy, at the highest QoS among
//! the matching subscriptions, carrying all their Subscription Identifiers [MQTT-3.3.4-2..5];
//! the same rule applies to 3.1.1 clients. Shared groups are separate: each matching group gets
//! its own copy, whoever else got one.
//!
//! The tree is behind a read-write lock that publishes take for reading only while matching;
//! deliveries happen after it is released, so one slow session never holds up the tree.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use parking_lot::RwLock;

use crate::packet::SubscriptionOptions;
use crate::topic::TopicTree;

use crate::broker::acl::ReadGuard;
use crate::broker::delivery::{Delivery, Enqueued, GroupId, Mailbox, Occasion, QueueLimits};
use crate::broker::events::EventFeed;
use crate::broker::message::{Message, Quota, SessionId};
use crate::broker::session::Session;
use crate::broker::shared::group::GroupSetup;
use crate::broker::shared::{
    AfterLeave, BacklogIndex, Dispatched, GroupLimits, Membership, SharedGroup,
};
use crate::broker::store::Journal;

#[derive(Debug, Default)]
pub struct FilterEntry {
    subscribers: HashMap<SessionId, Subscriber, ahash::RandomState>,
    groups: HashMap<ByteString, Arc<SharedGroup>, ahash::RandomState>,
}

impl FilterEntry {
    fn is_empty(&self) -> bool {
        self.subscribers.is_empty() && self.groups.is_empty()
    }
}

#[derive(Debug)]
struct Subscriber {
    session: Arc<Session>,
    options: SubscriptionOptions,
    identifier: Option<u32>,
    /// The read check at delivery; none without an ACL.
    read: Option<Arc<ReadGuard>>,
}

/// What routing one message did: for the publisher's acknowledgement and for statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    /// Copies accepted: queued to a session, or handed to (or queued in) a shared group, which
    /// counts once.
    pub delivered: usize,
    /// Copies lost to a full queue: refused ones, and the oldest QoS 0 message a full session
    /// queue gave up to take this one.
    pub dropped: usize,
    /// Of `dropped`: the oldest QoS 0 messages given up for this one.
    pub overflowed: usize,
    /// Copies offered to a group that ended while the message was routed.
    pub group_ended: usize,
    /// Sessions whose matching subscriptions all reach the topic without leave to read it
    /// (the ACL): no copy, and not counted in `dropped`.
    pub acl_filtered: usize,
    /// Refusals by the bound behind them, indexed by [`Quota::index`].
    pub refused: [u32; Quota::ALL.len()],
}

impl Routed {
    pub fn matched(&self) -> bool {
        self.delivered + self.dropped > 0
    }

    /// The bound to name when the message reached no queue at all because of quotas.
    pub fn refused_entirely(&self) -> Option<Quota> {
        if self.delivered > 0 {
            return None;
        }
        Quota::ALL.into_iter().find(|q| self.refused[q.index()] > 0)
    }

    pub fn record_refusal(&mut self, quota: Quota) {
        self.dropped += 1;
        self.refused[quota.index()] += 1;
    }
}

/// A group whose last member left and that keeps collecting for [`Router::group_linger`]:
/// whoever made it so arms a timer that then calls [`Router::end_lingering`] with it.
#[derive(Debug)]
#[must_use = "a lingering group that no timer ends lives forever"]
pub struct Lingering {
    pub group: Arc<SharedGroup>,
    /// The group's membership epoch when it became empty; a member joining changes it.
    pub epoch: u64,
}

/// What [`Router::leave_group`] did.
#[derive(Debug, Default)]
#[must_use = "a lingering group that no timer ends lives forever"]
pub struct Left {
    /// The session was a member.
    pub was_member: bool,
    /// The group lost its last member and lingers.
    pub lingering: Option<Lingering>,
}

/// The topic tree and the groups registry.
///
/// Lock order: `tree` before `groups`; a group's own lock and a session's lock are taken only
/// after both are released, except that joining, leaving, declaring and ending touch the
/// group's state under the tree's write lock, so that a group cannot end while a member joins
/// it. No guest is called under either lock: no strategy is instantiated or initialised there,
/// and a strategy hears a join or leave only once the tree's lock is released.
#[derive(Debug, Default)]
pub struct Router {
    /// Plain subscriptions and the groups by filter: what a PUBLISH is matched against.
    tree: RwLock<TopicTree<FilterEntry>>,
    /// The groups registry: the one owner of "which groups exist" and "which session is in
    /// which group". Nothing else is locked or called while it is held, except the backlog
    /// index's mutex (the last lock of all).
    groups: RwLock<Groups>,
    /// Which groups have messages waiting; every group reports to it.
    backlog_index: Arc<BacklogIndex>,
    subscriptions: AtomicUsize,
    next_group_id: AtomicU64,
    /// Where new groups keep their queues; none when the broker keeps no store.
    journal: Option<Arc<Journal>>,
    /// How long an undeclared group outlives its last member (`shared.group_linger_secs`).
    group_linger: Duration,
    /// Where groups announce what happens to them (the dashboard's event feed).
    pub events: EventFeed,
}

#[derive(Debug, Default)]
struct Groups {
    by_key: HashMap<(ByteString, ByteString), Arc<SharedGroup>>,
    by_id: HashMap<GroupId, Arc<SharedGroup>, ahash::RandomState>,
    /// Which groups each session is a member of, so its freed room can pull from their queues
    /// and its end can leave them; sessions themselves hold no group.
    of_session: HashMap<SessionId, HashSet<GroupId, ahash::RandomState>, ahash::RandomState>,
}

/// One session's merged share of a message.
struct Target {
    session: Arc<Session>,
    /// The matching subscriptions folded into one: highest QoS, Retain As Published if any.
    options: SubscriptionOptions,
    identifiers: Vec<u32>,
}

impl Router {
    /// A router whose groups end the moment their last member leaves (no linger) and keep no
    /// store.
    pub fn new() -> Router {
        Router::default()
    }

    /// A router whose undeclared groups linger for `linger` after their last member leaves.
    /// With a store, groups keep their queues in `journal`.
    pub fn with_group_linger(linger: Duration, journal: Option<Arc<Journal>>) -> Router {
        Router {
            group_linger: linger,
            journal,
            ..Router::default()
        }
    }

    pub fn group_linger(&self) -> Duration {
        self.group_linger
    }

    /// Subscriptions in the tree (plain and shared memberships).
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// Adds or replaces a plain subscription; true if it replaced one. Messages `read` does not
    /// admit are not delivered to it.
    pub fn subscribe(
        &self,
        filter: &str,
        session: &Arc<Session>,
        options: SubscriptionOptions,
        identifier: Option<u32>,
        read: Option<Arc<ReadGuard>>,
    ) -> bool {
        let mut tree = self.tree.write();
        let entry = tree.get_or_insert_with(filter, FilterEntry::default);
        let replaced = entry
            .subscribers
            .insert(
                session.id,
                Subscriber {
                    session: session.clone(),
                    options,
                    identifier,
                    read,
                },
            )
            .is_some();
        if !replaced {
            self.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        replaced
    }

    /// Replaces the read check of `session_id`'s plain subscription `filter`, if it has one.
    pub fn renew_read_guard(
        &self,
        filter: &str,
        session_id: SessionId,
        read: Option<Arc<ReadGuard>>,
    ) {
        let mut tree = self.tree.write();
        if let Some(subscriber) = tree
            .get_mut(filter)
            .and_then(|entry| entry.subscribers.get_mut(&session_id))
        {
            subscriber.read = read;
        }
    }

    /// Removes a plain subscription; true if it existed.
    pub fn unsubscribe(&self, filter: &str, session_id: SessionId) -> bool {
        let mut tree = self.tree.write();
        let Some(entry) = tree.get_mut(filter) else {
            return false;
        };
        let existed = entry.subscribers.remove(&session_id).is_some();
        if entry.is_empty() {
            tree.remove(filter);
        }
        if existed {
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
        existed
    }

    /// Makes `session` a member of group (`group`, `filter`), creating the group if needed.
    /// A new group's strategy is made by `make_group` (a Wasm instance and its `init`)
    /// with no lock held; if another member created the group meanwhile, the spare is dropped.
    /// The strategy hears of the new member after the tree's lock is released.
    pub fn join_group(
        &self,
        group: &str,
        filter: &str,
        session: &Arc<Session>,
        membership: Membership,
        make_group: impl FnMut(&str, &str) -> GroupSetup,
    ) -> Arc<SharedGroup> {
        let (shared, ()) = self.with_group(group, filter, make_group, |shared| {
            let before = shared.member_count();
            let mailbox: Arc<dyn Mailbox> = session.clone();
            shared.add_member(mailbox, membership);
            if shared.member_count() > before {
                self.subscriptions.fetch_add(1, Ordering::Relaxed);
                self.groups
                    .write()
                    .of_session
                    .entry(session.id)
                    .or_default()
                    .insert(shared.id);
            }
        });
        // Under the group's lock only: a slow `member-joined` holds up no publisher.
        shared.announce_membership();
        shared
    }

    /// Declares group (`group`, `filter`), creating it if needed (its strategy made by
    /// `make_group` as for [`Router::join_group`]): it exists with or without members and
    /// collects matching messages in its queue while nobody can take them. Declaring an
    /// existing group keeps its members and queue. The caller validates the name and filter.
    pub fn declare_group(
        &self,
        group: &str,
        filter: &str,
        make_group: impl FnMut(&str, &str) -> GroupSetup,
    ) -> Arc<SharedGroup> {
        let (shared, ()) = self.with_group(group, filter, make_group, |shared| shared.declare());
        shared
    }

    /// Makes declared group (`group`, `filter`) an ordinary one: it then lives only as long
    /// as its members, and with none it ends now, its queue with it. False if there is no such
    /// declared group.
    pub fn undeclare_group(&self, group: &str, filter: &str) -> bool {
        let mut tree = self.tree.write();
        let Some(shared) = tree
            .get(filter)
            .and_then(|entry| entry.groups.get(group))
            .cloned()
        else {
            return false;
        };
        match shared.undeclare() {
            None => false,
            Some(false) => true,
            Some(true) => {
                self.unlink(&mut tree, &shared);
                drop(tree);
                drop(shared.end_strategy());
                tracing::debug!(
                    group,
                    filter,
                    "undeclared shared group without members ended"
                );
                true
            }
        }
    }

    /// Finds group (`group`, `filter`) in the tree or creates it, and runs `then` on it under
    /// the tree's write lock, so that the group cannot end in between.
    fn with_group<R>(
        &self,
        group: &str,
        filter: &str,
        mut make_group: impl FnMut(&str, &str) -> GroupSetup,
        then: impl FnOnce(&Arc<SharedGroup>) -> R,
    ) -> (Arc<SharedGroup>, R) {
        let key = (ByteString::from(group), ByteString::from(filter));
        let mut prepared: Option<GroupSetup> = None;
        let done = loop {
            let mut tree = self.tree.write();
            let entry = tree.get_or_insert_with(filter, FilterEntry::default);
            let shared = match (entry.groups.get(group), prepared.take()) {
                (Some(shared), spare) => {
                    // Another caller created it first; ours is dropped below, under no lock.
                    prepared = spare;
                    shared.clone()
                }
                (None, Some(setup)) => {
                    let id = self.next_group_id.fetch_add(1, Ordering::Relaxed) + 1;
                    let created = Arc::new(SharedGroup::new(
                        id,
                        key.0.clone(),
                        key.1.clone(),
                        setup,
                        self.journal.clone(),
                        self.events.clone(),
                        self.backlog_index.clone(),
                    ));
                    entry.groups.insert(key.0.clone(), created.clone());
                    let mut groups = self.groups.write();
                    groups.by_key.insert(key.clone(), created.clone());
                    groups.by_id.insert(id, created.clone());
                    created
                }
                (None, None) => {
                    if entry.is_empty() {
                        tree.remove(filter);
                    }
                    drop(tree);
                    prepared = Some(make_group(group, filter));
                    continue;
                }
            };
            let result = then(&shared);
            break (shared, result);
        };
        drop(prepared);
        done
    }

    /// Removes an ended group from the tree and the registry. Its members are already gone, so
    /// `of_session` does not name it.
    fn unlink(&self, tree: &mut TopicTree<FilterEntry>, shared: &SharedGroup) {
        if let Some(entry) = tree.get_mut(&shared.filter) {
            entry.groups.remove(&shared.name);
            if entry.is_empty() {
                tree.remove(&shared.filter);
            }
        }
        let mut groups = self.groups.write();
        groups
            .by_key
            .remove(&(shared.name.clone(), shared.filter.clone()));
        groups.by_id.remove(&shared.id);
    }

    /// Removes session `session_id` from group (`group`, `filter`). The group ends with its
    /// last member, unless it is declared, or it lingers (`group_linger` above 0): then the
    /// caller must arm a timer for [`Left::lingering`]. The strategy hears of the leave after
    /// the tree's lock is released.
    pub fn leave_group(&self, group: &str, filter: &str, session_id: SessionId) -> Left {
        let mut tree = self.tree.write();
        let Some(shared) = tree
            .get(filter)
            .and_then(|entry| entry.groups.get(group))
            .cloned()
        else {
            return Left::default();
        };
        let linger = !self.group_linger.is_zero();
        let Some(after) = shared.remove_member(session_id, linger) else {
            return Left::default();
        };
        {
            let mut groups = self.groups.write();
            if let Some(ids) = groups.of_session.get_mut(&session_id) {
                ids.remove(&shared.id);
                if ids.is_empty() {
                    groups.of_session.remove(&session_id);
                }
            }
        }
        let ended = after == AfterLeave::Ended;
        if ended {
            self.unlink(&mut tree, &shared);
        }
        drop(tree);
        self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        let lingering = match after {
            AfterLeave::Continues => {
                shared.announce_membership();
                None
            }
            AfterLeave::Lingers { epoch } => {
                shared.announce_membership();
                Some(Lingering {
                    group: shared,
                    epoch,
                })
            }
            AfterLeave::Ended => {
                // The strategy instance goes with the group, unannounced news with it: dropped
                // here, under no lock.
                drop(shared.end_strategy());
                tracing::debug!(group, filter, "shared group ended with its last member");
                None
            }
        };
        Left {
            was_member: true,
            lingering,
        }
    }

    /// Ends a group that has lingered without members since it was armed, unless a member
    /// joined or it was declared meanwhile; true if it ended.
    pub fn end_lingering(&self, lingering: &Lingering) -> bool {
        let shared = &lingering.group;
        let mut tree = self.tree.write();
        let current = tree
            .get(&shared.filter)
            .and_then(|entry| entry.groups.get(&shared.name))
            .is_some_and(|g| Arc::ptr_eq(g, shared));
        // Under the tree's write lock, like joining: a member cannot join between this check
        // and the unlinking.
        if !current || !shared.end_if_lingering(lingering.epoch) {
            return false;
        }
        self.unlink(&mut tree, shared);
        drop(tree);
        drop(shared.end_strategy());
        tracing::debug!(group = %shared.name, filter = %shared.filter, dropped_total = shared.counters.dropped.load(Ordering::Relaxed), "lingering shared group ended: no member joined in time");
        true
    }

    /// Leaves every group session `session_id` is still a member of (its session ended);
    /// returns the groups that linger, for the caller to arm.
    pub fn leave_all_groups(&self, session_id: SessionId) -> Vec<Lingering> {
        let memberships: Vec<(ByteString, ByteString)> = {
            let groups = self.groups.read();
            groups
                .of_session
                .get(&session_id)
                .map(|ids| {
                    ids.iter()
                        .filter_map(|id| groups.by_id.get(id))
                        .map(|g| (g.name.clone(), g.filter.clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        memberships
            .into_iter()
            .filter_map(|(name, filter)| self.leave_group(&name, &filter, session_id).lingering)
            .collect()
    }

    pub fn group(&self, group: &str, filter: &str) -> Option<Arc<SharedGroup>> {
        self.groups
            .read()
            .by_key
            .get(&(ByteString::from(group), ByteString::from(filter)))
            .cloned()
    }

    /// The group (`group`, `filter`), created without members if it does not exist (a group
    /// whose queue the store gave back at start).
    pub fn ensure_group(
        &self,
        group: &str,
        filter: &str,
        make_group: impl FnMut(&str, &str) -> GroupSetup,
    ) -> Arc<SharedGroup> {
        self.with_group(group, filter, make_group, |_| ()).0
    }

    pub fn group_by_id(&self, id: GroupId) -> Option<Arc<SharedGroup>> {
        self.groups.read().by_id.get(&id).cloned()
    }

    pub fn groups(&self) -> Vec<Arc<SharedGroup>> {
        self.groups.read().by_key.values().cloned().collect()
    }

    /// The groups whose settings have clock-driven work (ack deadlines, `max_age_secs`): what
    /// the sweeper visits, without holding every group 50 times a second.
    pub fn clock_driven_groups(&self) -> Vec<Arc<SharedGroup>> {
        self.groups
            .read()
            .by_key
            .values()
            .filter(|g| g.is_clock_driven())
            .cloned()
            .collect()
    }

    /// Up to `limit` of the groups session `session_id` is in that have messages waiting,
    /// from a random place, so that repeated calls visit them in turn; empty (and allocation
    /// free) in the common case. A member of 10,000 groups pays
    /// nothing for them while their queues are empty, and about `limit` visits while they
    /// are not.
    pub fn groups_with_backlog(
        &self,
        session_id: SessionId,
        limit: usize,
    ) -> Vec<Arc<SharedGroup>> {
        let waiting = self.backlog_index.count();
        if waiting == 0 || limit == 0 {
            return Vec::new();
        }
        // Drawn only past the common "nothing waits" return: this runs on every send round.
        let start = rand::random::<u32>() as usize;
        let groups = self.groups.read();
        let Some(mine) = groups.of_session.get(&session_id) else {
            return Vec::new();
        };
        // Walking the index stops after `limit` of the member's groups; scanning its own
        // groups cannot stop early (it must not always favour the same ones), so it is for
        // when the member is in far fewer groups than wait.
        let ids = if mine.len().saturating_mul(4) < waiting {
            let mut ids: Vec<GroupId> = mine
                .iter()
                .filter(|id| groups.by_id.get(id).is_some_and(|g| g.queued() > 0))
                .copied()
                .collect();
            if !ids.is_empty() {
                let turn = start % ids.len();
                ids.rotate_left(turn);
                ids.truncate(limit);
            }
            ids
        } else {
            self.backlog_index
                .find(start, limit, |id| mine.contains(&id))
        };
        ids.iter()
            .filter_map(|id| groups.by_id.get(id))
            .cloned()
            .collect()
    }

    /// Delivers `message` to every matching subscription.
    pub fn route(
        &self,
        message: &Arc<Message>,
        queue_limits: QueueLimits,
        group_limits: GroupLimits,
    ) -> Routed {
        let mut targets: Vec<Target> = Vec::new();
        let mut groups: Vec<Arc<SharedGroup>> = Vec::new();
        // Sessions with a matching subscription that may not read the topic, as Mosquitto
        // checks read access per message and subscriber. Empty (and allocation free) unless
        // a filter reaches unreadable topics.
        let mut unreadable: Vec<SessionId> = Vec::new();
        {
            let tree = self.tree.read();
            tree.for_each_match(&message.topic, |entry| {
                for subscriber in entry.subscribers.values() {
                    if subscriber.options.no_local
                        && message.publisher == Some(subscriber.session.id)
                    {
                        continue;
                    }
                    if subscriber
                        .read
                        .as_ref()
                        .is_some_and(|read| !read.admits(&message.topic))
                    {
                        unreadable.push(subscriber.session.id);
                        continue;
                    }
                    targets.push(Target {
                        session: subscriber.session.clone(),
                        options: subscriber.options,
                        identifiers: subscriber.identifier.into_iter().collect(),
                    });
                }
                groups.extend(entry.groups.values().cloned());
            });
        }
        merge_per_session(&mut targets);
        let mut routed = Routed::default();
        if !unreadable.is_empty() {
            unreadable.sort_unstable();
            unreadable.dedup();
            // `targets` is sorted by session now; a session another of its subscriptions
            // admitted got its copy.
            routed.acl_filtered = unreadable
                .iter()
                .filter(|id| targets.binary_search_by_key(*id, |t| t.session.id).is_err())
                .count();
        }
        for target in targets {
            let delivery = Delivery::new(
                message.clone(),
                &target.options,
                target.identifiers,
                Occasion::Publish,
                None,
            );
            match target.session.enqueue(delivery, queue_limits) {
                Enqueued::Refused(quota) => routed.record_refusal(quota),
                Enqueued::QueuedDroppingOldestQos0 => {
                    routed.delivered += 1;
                    routed.dropped += 1;
                    routed.overflowed += 1;
                }
                Enqueued::Queued => routed.delivered += 1,
                // Ended between matching and delivery: as if it had unsubscribed first.
                Enqueued::Ended => {}
            }
        }
        for group in groups {
            match group.dispatch(message.clone(), group_limits) {
                Dispatched::Accepted => routed.delivered += 1,
                Dispatched::Refused(quota) => routed.record_refusal(quota),
                Dispatched::Ended => routed.group_ended += 1,
            }
        }
        routed
    }
}

/// Folds several matching subscriptions of one session into one copy.
fn merge_per_session(targets: &mut Vec<Target>) {
    if targets.len() < 2 {
        return;
    }
    targets.sort_unstable_by_key(|t| t.session.id);
    let mut merged: Vec<Target> = Vec::with_capacity(targets.len());
    for target in targets.drain(..) {
        match merged.last_mut() {
            Some(last) if last.session.id == target.session.id => {
                last.options.qos = last.options.qos.max(target.options.qos);
                last.options.retain_as_published |= target.options.retain_as_published;
                last.identifiers.extend(target.identifiers);
            }
            _ => merged.push(target),
        }
    }
    *targets = merged;
}
