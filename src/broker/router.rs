//! The router: every subscription in one topic tree, and the fan-out of a published message.
//!
//! Overlapping subscriptions of one session are delivered as ONE copy, at the highest QoS among
//! the matching subscriptions, carrying all their Subscription Identifiers [MQTT-3.3.4-2..5];
//! the same rule applies to 3.1.1 clients. Shared groups are separate: each matching group gets
//! its own copy, whoever else got one.
//!
//! The tree is behind a read-write lock that publishes take for reading only while matching;
//! deliveries happen after it is released, so one slow session never holds up the tree.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytestring::ByteString;
use parking_lot::{Mutex, RwLock};

use crate::packet::{QoS, SubscriptionOptions};
use crate::strategy::Dispatcher;
use crate::topic::TopicTree;

use super::message::{Message, Quota, SessionId};
use super::session::{Delivery, Enqueued, QueueLimits, Session};
use super::shared::{Dispatched, GroupLimits, SharedGroup};

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
}

/// How a session joins a shared group.
#[derive(Debug, Clone, Copy)]
pub struct Membership {
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
    /// From the SUBSCRIBE user property `weight`; 1 when absent.
    pub weight: u32,
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

#[derive(Debug, Default)]
pub struct Router {
    tree: RwLock<TopicTree<FilterEntry>>,
    /// Every live group by (name, filter), for statistics without walking the tree.
    groups: Mutex<HashMap<(ByteString, ByteString), Arc<SharedGroup>>>,
    subscriptions: AtomicUsize,
}

/// One session's merged share of a message.
struct Target {
    session: Arc<Session>,
    qos: QoS,
    retain: bool,
    identifiers: Vec<u32>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// Subscriptions in the tree (plain and shared memberships).
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// Adds or replaces a plain subscription; true if it replaced one.
    pub fn subscribe(
        &self,
        filter: &str,
        session: &Arc<Session>,
        options: SubscriptionOptions,
        identifier: Option<u32>,
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
                },
            )
            .is_some();
        if !replaced {
            self.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        replaced
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
    /// Returns the group and whether the session was already a member.
    pub fn join_group(
        &self,
        group: &str,
        filter: &str,
        session: &Arc<Session>,
        membership: Membership,
        make_dispatcher: impl FnOnce(&str) -> Dispatcher,
    ) -> Arc<SharedGroup> {
        let mut tree = self.tree.write();
        let entry = tree.get_or_insert_with(filter, FilterEntry::default);
        let shared = entry
            .groups
            .entry(ByteString::from(group))
            .or_insert_with(|| {
                let created = Arc::new(SharedGroup::new(
                    ByteString::from(group),
                    ByteString::from(filter),
                    make_dispatcher(group),
                ));
                self.groups.lock().insert(
                    (ByteString::from(group), ByteString::from(filter)),
                    created.clone(),
                );
                created
            })
            .clone();
        let before = shared.member_count();
        shared.add_member(
            session.clone(),
            membership.options,
            membership.identifier,
            membership.weight,
        );
        if shared.member_count() > before {
            self.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        session.join_group(shared.clone());
        shared
    }

    /// Removes `session` from group (`group`, `filter`); the group ends with its last member.
    /// Returns true if the session was a member.
    pub fn leave_group(&self, group: &str, filter: &str, session: &Session) -> bool {
        let mut tree = self.tree.write();
        let Some(entry) = tree.get_mut(filter) else {
            return false;
        };
        let Some(shared) = entry.groups.get(group).cloned() else {
            return false;
        };
        let before = shared.member_count();
        let ended = shared.remove_member(session.id);
        let was_member = shared.member_count() < before;
        session.leave_group(&shared);
        if ended {
            entry.groups.remove(group);
            self.groups
                .lock()
                .remove(&(ByteString::from(group), ByteString::from(filter)));
            tracing::debug!(group, filter, "shared group ended with its last member");
        }
        if entry.is_empty() {
            tree.remove(filter);
        }
        if was_member {
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
        was_member
    }

    pub fn group(&self, group: &str, filter: &str) -> Option<Arc<SharedGroup>> {
        self.groups
            .lock()
            .get(&(ByteString::from(group), ByteString::from(filter)))
            .cloned()
    }

    pub fn groups(&self) -> Vec<Arc<SharedGroup>> {
        self.groups.lock().values().cloned().collect()
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
        {
            let tree = self.tree.read();
            tree.for_each_match(&message.topic, |entry| {
                for subscriber in entry.subscribers.values() {
                    if subscriber.options.no_local
                        && message.publisher == Some(subscriber.session.id)
                    {
                        continue;
                    }
                    targets.push(Target {
                        session: subscriber.session.clone(),
                        qos: message.qos.min(subscriber.options.qos),
                        retain: subscriber.options.retain_as_published && message.retain,
                        identifiers: subscriber.identifier.into_iter().collect(),
                    });
                }
                groups.extend(entry.groups.values().cloned());
            });
        }
        merge_per_session(&mut targets);
        let mut routed = Routed::default();
        for target in targets {
            let delivery = Delivery {
                message: message.clone(),
                qos: target.qos,
                retain: target.retain,
                subscription_ids: target.identifiers,
                group: None,
            };
            match target.session.enqueue(delivery, queue_limits) {
                Enqueued::Refused(quota) => routed.record_refusal(quota),
                Enqueued::QueuedDroppingOldestQos0 => {
                    routed.delivered += 1;
                    routed.dropped += 1;
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
                Dispatched::Ended => {}
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
                last.qos = last.qos.max(target.qos);
                last.retain |= target.retain;
                last.identifiers.extend(target.identifiers);
            }
            _ => merged.push(target),
        }
    }
    *targets = merged;
}
