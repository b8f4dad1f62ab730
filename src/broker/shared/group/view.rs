//! What the admin API, `/metrics`, `$SYS` and the dashboard read of a group.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytestring::ByteString;

use crate::broker::message::SessionId;

use super::SharedGroup;
use crate::config::GroupSettings;

impl SharedGroup {
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
