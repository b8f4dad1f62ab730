//! Shared groups as the broker runs them: what a new group starts with (strategy, work-queue
//! settings), declaring and undeclaring, strategy overrides and purges from the admin API, the
//! linger timer of a group that lost its last member, copies handed back by members
//! (redispatch, rejections) and the dead letters they lead to, the clock-driven sweep, and
//! draining groups towards a member with room.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;

use crate::packet::ReasonCode;
use crate::strategy::Dispatcher;
use crate::topic::{validate_filter, validate_share_name, TopicError};

use super::delivery::{self, Delivery};
use super::events;
use super::message::Message;
use super::routing::router::Lingering;
use super::session::Session;
use super::shared::backlog::{DeadLetter, Failure};
use super::shared::group::{GroupSetup, Queued};
use super::shared::{Redelivery, SharedGroup};
use super::store;
use super::BrokerState;
use super::DropReason;
use crate::config::GroupSettings;

impl BrokerState {
    /// What a new group (`name`, `filter`) starts with: its strategy and work-queue settings.
    pub fn make_group(&self, name: &str, filter: &str) -> GroupSetup {
        GroupSetup {
            dispatcher: self.make_dispatcher(name),
            settings: self.group_settings(name, filter),
        }
    }

    /// The work-queue settings of group (`name`, `filter`): those of its `[[shared.declared]]`
    /// entry if that sets any, else those of the `[[shared.groups]]` rule its name matches.
    pub fn group_settings(&self, name: &str, filter: &str) -> GroupSettings {
        let declared = self
            .config
            .shared
            .declared
            .iter()
            .map(|d| (d, d.queue_config()))
            .find(|(d, queue)| d.name == name && d.filter == filter && !queue.is_default());
        match declared {
            Some((_, queue)) => GroupSettings::from_config(&queue),
            None => GroupSettings::from_config(&self.strategies.queue_config(name)),
        }
    }

    /// The dispatcher a new group named `group` starts with. A strategy that cannot be
    /// instantiated for it leaves the group on the native round robin, loudly.
    pub fn make_dispatcher(&self, group: &str) -> Dispatcher {
        let name = ByteString::from(group);
        let resolved = self.strategies.resolve(group);
        match Dispatcher::build(&name, resolved) {
            Ok(dispatcher) => dispatcher,
            Err(e) => {
                tracing::error!(group, error = %e, "strategy failed for a new group; it uses the native round robin");
                Dispatcher::native(name)
            }
        }
    }

    /// Declares group (`name`, `filter`): `$share/{name}/{filter}`, or `$queue/{filter}` for the
    /// name `$queue`. It exists from now on with or without members, collects matching messages
    /// while no member can take them, and does not end when its last member leaves. Declaring
    /// an existing group keeps its members and queue. Blocking when the group is new (its
    /// strategy instance is made here): call it off the async workers.
    /// With a store, the declaration itself is kept: the group is declared again after a
    /// restart (a `[[shared.declared]]` group is not stored: the config file declares it).
    pub fn declare_group(&self, name: &str, filter: &str) -> Result<Arc<SharedGroup>, TopicError> {
        let group = self.declare_group_unstored(name, filter)?;
        if let Some(journal) = &self.journal {
            store::Persistence::new(journal.clone())
                .group_declared(store::group_owner(name, filter));
        }
        self.router
            .events
            .emit(events::EventKind::Declared, name, filter, "");
        Ok(group)
    }

    pub(crate) fn declare_group_unstored(
        &self,
        name: &str,
        filter: &str,
    ) -> Result<Arc<SharedGroup>, TopicError> {
        validate_share_name(name)?;
        validate_filter(filter, self.config.limits.max_topic_levels)?;
        Ok(self
            .router
            .declare_group(name, filter, |group, filter| self.make_group(group, filter)))
    }

    /// Makes declared group (`name`, `filter`) an ordinary group: with members it goes on
    /// until its last one leaves (then lingers as any group); without, it ends now and its
    /// queue is dropped. False if no such group is declared.
    pub fn undeclare_group(&self, name: &str, filter: &str) -> bool {
        if let Some(journal) = &self.journal {
            store::Persistence::new(journal.clone())
                .group_undeclared(store::group_owner(name, filter));
        }
        let undeclared = self.router.undeclare_group(name, filter);
        if undeclared {
            self.router
                .events
                .emit(events::EventKind::Undeclared, name, filter, "");
        }
        undeclared
    }

    /// Sets the strategy of every group named `name` (all its filters, and any created later)
    /// while messages flow, as a reload would: compiled and initialised first, so a plugin
    /// that fails leaves every group as it was. `None` gives the name back to the config's
    /// `[shared]` rules. Returns how many live groups got a new strategy. Blocking.
    pub fn set_group_strategy(
        &self,
        name: &str,
        rule: Option<&crate::config::GroupStrategyConfig>,
    ) -> Result<usize, crate::strategy::StrategyError> {
        match rule {
            Some(rule) => self.strategies.set_override(
                rule,
                &self.config.shared,
                self.config.base_dir.as_deref(),
            )?,
            None => {
                self.strategies.clear_override(name);
            }
        }
        let groups = self.router.groups();
        Ok(groups
            .iter()
            .filter(|g| g.name == name && self.refresh_strategy(g))
            .count())
    }

    /// Gives `group` the strategy the registry now resolves for it, if that differs from its
    /// current one (or it is pinned to the fallback); true if a new one was swapped in.
    pub(crate) fn refresh_strategy(&self, group: &SharedGroup) -> bool {
        let wanted = self.strategies.resolve(&group.name);
        let current = group.resolved_strategy();
        let unchanged = match (&wanted, &current) {
            (None, None) => true,
            // A pinned group gets a fresh instance on reload, even of the same plugin.
            (Some(w), Some(c)) => w.same_as(c) && !group.strategy_is_pinned(),
            _ => false,
        };
        if unchanged {
            return false;
        }
        match Dispatcher::build(&group.name, wanted) {
            Ok(dispatcher) => {
                group.swap_dispatcher(dispatcher);
                true
            }
            Err(e) => {
                tracing::error!(group = %group.name, error = %e, "strategy failed for this group; it keeps its current one");
                false
            }
        }
    }

    /// Drops the messages waiting in the groups named `name` (only the one with `filter`,
    /// if given); `None` if there is no such group. Copies members hold are left to them.
    pub fn purge_group(&self, name: &str, filter: Option<&str>) -> Option<u64> {
        let groups: Vec<Arc<SharedGroup>> = self
            .router
            .groups()
            .into_iter()
            .filter(|g| g.name == name && filter.is_none_or(|f| g.filter == f))
            .collect();
        if groups.is_empty() {
            return None;
        }
        Some(groups.iter().map(|g| g.purge()).sum())
    }

    /// Ends a group that lost its last member once `shared.group_linger_secs` has passed,
    /// unless a member joins meanwhile (the router checks the group's epoch).
    pub(crate) fn arm_linger(&self, lingering: Lingering) {
        let (Some(broker), Ok(runtime)) =
            (self.me.upgrade(), tokio::runtime::Handle::try_current())
        else {
            // No runtime (or the broker is being dropped): no timer can run, and a group that
            // never ends is worse than one that ends early.
            self.router.end_lingering(&lingering);
            return;
        };
        tracing::debug!(group = %lingering.group.name, filter = %lingering.group.filter, linger = ?broker.router.group_linger(), "shared group lost its last member and lingers");
        runtime.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(broker.router.group_linger()) => {}
                _ = broker.shutdown.cancelled() => return,
            }
            broker.router.end_lingering(&lingering);
        });
    }

    /// Hands shared copies member `member` could not finish back to their groups, each with
    /// this failure counted; those past their group's `max_deliveries` are dead-lettered.
    pub fn redispatch(&self, deliveries: Vec<Delivery>, reason: Redelivery, member: &ByteString) {
        if deliveries.is_empty() {
            return;
        }
        let limits = self.group_limits();
        // Keep each group's copies together and in order.
        let mut per_group: Vec<(delivery::GroupId, Vec<Queued>)> = Vec::new();
        for delivery in deliveries {
            let Some(tag) = delivery.group else {
                continue;
            };
            // Back with the group: its key is no longer out.
            tag.resolved();
            let delivery::GroupOrigin::Local(group) = tag.origin;
            let copy = Queued {
                message: delivery.message,
                stored: delivery.stored.map(|s| s.id),
                failures: tag.failures + 1,
                last_failure: Some(Failure {
                    reason: reason.failure().into(),
                    member: member.clone(),
                }),
                key: tag.key,
            };
            match per_group.iter_mut().find(|(g, _)| *g == group) {
                Some((_, copies)) => copies.push(copy),
                None => per_group.push((group, vec![copy])),
            }
        }
        for (id, copies) in per_group {
            let Some(group) = self.router.group_by_id(id) else {
                // The group ended (its last member left, and it neither lingers nor is
                // declared) while these were out: nobody to take them, as for any message
                // reaching an ended group.
                tracing::debug!(
                    count = copies.len(),
                    "shared copies returned to a group that has ended"
                );
                self.stats.record_drop(DropReason::GroupEnded, copies.len());
                continue;
            };
            tracing::debug!(group = %group.name, filter = %group.filter, count = copies.len(), "redispatching shared messages");
            let dead = group.redispatch(copies, limits, reason);
            self.publish_dead_letters(dead);
        }
    }

    /// Member `member` refused a shared copy with `code` (>= 0x80): its group dead-letters it,
    /// or drops it when it has no dead-letter topic.
    pub fn member_rejected(&self, delivery: Delivery, code: ReasonCode, member: &ByteString) {
        let Some(tag) = delivery.group else { return };
        let delivery::GroupOrigin::Local(id) = tag.origin;
        let Some(group) = self.router.group_by_id(id) else {
            self.stats.record_drop(DropReason::GroupEnded, 1);
            return;
        };
        let copy = Queued {
            message: delivery.message,
            // The member's session already let go of the stored row.
            stored: None,
            failures: tag.failures + 1,
            last_failure: Some(Failure {
                reason: format!("rejected 0x{:02x}", code.0),
                member: member.clone(),
            }),
            key: tag.key,
        };
        let dead = group.rejected(copy);
        self.publish_dead_letters(dead.into_iter().collect());
    }

    /// Publishes messages groups gave up on to their dead-letter topics, through normal
    /// routing: subscribers there (ACL-checked when they subscribed) get them as any message.
    fn publish_dead_letters(&self, letters: Vec<DeadLetter>) {
        for letter in letters {
            let about = vec![
                (
                    ByteString::from_static("sharq-original-topic"),
                    letter.message.topic.clone(),
                ),
                (ByteString::from_static("sharq-group"), letter.group.clone()),
                (
                    ByteString::from_static("sharq-deliveries"),
                    ByteString::from(letter.deliveries.to_string()),
                ),
                (
                    ByteString::from_static("sharq-last-failure"),
                    ByteString::from(letter.failure.reason.clone()),
                ),
                (
                    ByteString::from_static("sharq-last-member"),
                    letter.failure.member.clone(),
                ),
            ];
            let message =
                Message::dead_letter(&letter.message, ByteString::from(letter.topic), about);
            tracing::debug!(group = %letter.group, topic = %message.topic, deliveries = letter.deliveries, failure = %letter.failure.reason, "message dead-lettered");
            self.publish_internal(message);
        }
    }

    /// Lets every group `session` belongs to hand it waiting messages.
    pub fn drain_groups_of(&self, session: &Session) {
        // The session's freed room was stored (lock-free load mirror) before this; a publisher
        // stores a group's queue length and then reads the members' room. A full fence on both
        // sides means at least one of the two sees the other: never a message left queued
        // while its member has room and nobody looks.
        std::sync::atomic::fence(Ordering::SeqCst);
        // A group it drains hands it a message while it has room (unless another member
        // with room gets it), so more groups than its free slots would mostly be visited to
        // find it full: it looks at that many first, and at all of them only if it still has
        // room after those.
        let load = session.member_load();
        let mut limit = load.capacity.saturating_sub(load.inflight).max(1) as usize;
        let group_limits = self.group_limits();
        loop {
            let groups = self.router.groups_with_backlog(session.id, limit);
            let visited = groups.len();
            for group in groups {
                group.drain(group_limits);
                // Full again: the next acknowledgement drains the rest.
                if !session.member_load().has_room() {
                    return;
                }
            }
            if visited < limit || limit == usize::MAX {
                return;
            }
            limit = usize::MAX;
        }
    }

    /// One round of the groups' clock-driven work at `now`: ack deadlines past and messages
    /// older than `max_age_secs` go back or to their dead-letter topic. `crate::server` runs it
    /// every few milliseconds.
    pub(crate) fn sweep_groups(&self, now: Instant) {
        let limits = self.group_limits();
        for group in self.router.clock_driven_groups() {
            let dead = group.sweep(now, limits);
            self.publish_dead_letters(dead);
        }
    }
}
