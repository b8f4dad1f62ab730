//! Where a durable queue keeps its rows: the [`QueueStore`] trait, its one implementation
//! today ([`JournalQueue`], the local journal), and [`StoredRef`], the handle a delivery
//! carries on the row it came from.
//!
//! The trait is the seam for a queue whose rows live outside this process: the cluster
//! (CLUSTER.md §3.7) adds a JetStream-backed implementation whose copy ids are stream
//! sequences, with no change to group or session logic.

use std::sync::Arc;

use super::encoding::{CopyFields, Corrupt, StoredInflight};
use super::journal::RefillResult;
use super::persist::Persistence;
use super::Owner;
use crate::broker::message::Message;

/// How much of a queue is kept in memory; the rest waits in its storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueWindow {
    pub messages: usize,
    pub bytes: usize,
}

/// The storage of one durable queue (a session's own, or a shared group's). Ids are the
/// queue's copy ids: they grow in the order rows are appended, so a queue's stored order is its
/// delivery order and its disk tail is every row from some id on.
///
/// Lock order: called under its queue owner's lock (a group's or a session's), and through a
/// [`StoredRef`] under a member session's lock, which comes after its group's. So an
/// implementation takes no broker lock (the journal's pending batch is a leaf) and never calls
/// back into a group or a session, except from `refill`'s `done`, which runs with no lock held.
pub trait QueueStore: Send + Sync + std::fmt::Debug {
    /// The queue's name in its storage (`c:<client id>`, `g:<share name>/<filter>`).
    fn name(&self) -> &str;
    /// Stores a message arriving at the queue (`copy`: how a session's own copy is sent) and
    /// returns its copy id.
    fn append(&self, message: &Message, copy: Option<&CopyFields>) -> u64;
    /// Row `id` went out to a client (or its PUBREC came back).
    fn sent(&self, id: u64, inflight: &StoredInflight);
    /// Row `id` is done with: acknowledged, expired or given up on.
    fn finished(&self, id: u64);
    /// Reads up to `limit` rows from id `from` on, once every row appended before this call
    /// is readable; `done` gets them (on another thread).
    fn refill(&self, from: u64, limit: usize, done: Box<dyn FnOnce(RefillResult) + Send>);
    /// Drops the rows from id `from` on: the disk tail of a purged queue.
    fn purge_from(&self, from: u64);
    /// Drops every row of the queue: it ended.
    fn drop_all(&self);
    /// Row `id` failed its checks when read back: set aside, never delivered.
    fn damaged(&self, id: u64, error: &Corrupt);
    /// The part of the queue to keep in memory.
    fn window(&self) -> QueueWindow;
}

/// Where a copy of a message is kept, so that whoever finishes with it removes it from the
/// queue that wrote it, wherever that queue's rows live: a row of this process's journal, or
/// (with the cluster) a message of a JetStream stream named by its sequence. A member's session
/// finishing a group's copy therefore calls the group's storage, never builds its rows.
#[derive(Clone)]
pub struct StoredRef {
    pub queue: Arc<dyn QueueStore>,
    pub id: u64,
}

impl StoredRef {
    pub fn new(queue: Arc<dyn QueueStore>, id: u64) -> StoredRef {
        StoredRef { queue, id }
    }

    /// The copy went out to a client (or its PUBREC came back).
    pub fn sent(&self, inflight: &StoredInflight) {
        self.queue.sent(self.id, inflight);
    }

    /// The copy is done with: it leaves its queue's storage.
    pub fn finished(&self) {
        self.queue.finished(self.id);
    }
}

impl PartialEq for StoredRef {
    fn eq(&self, other: &StoredRef) -> bool {
        self.id == other.id && self.queue.name() == other.queue.name()
    }
}

impl Eq for StoredRef {}

impl std::fmt::Debug for StoredRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredRef")
            .field("queue", &self.queue.name())
            .field("id", &self.id)
            .finish()
    }
}

/// A queue kept in the local journal, under its owner name.
#[derive(Debug)]
pub struct JournalQueue {
    persistence: Persistence,
    owner: Owner,
}

impl JournalQueue {
    pub fn new(persistence: Persistence, owner: Owner) -> Arc<JournalQueue> {
        Arc::new(JournalQueue { persistence, owner })
    }
}

impl QueueStore for JournalQueue {
    fn name(&self) -> &str {
        &self.owner
    }

    fn append(&self, message: &Message, copy: Option<&CopyFields>) -> u64 {
        self.persistence.message_queued(&self.owner, message, copy)
    }

    fn sent(&self, id: u64, inflight: &StoredInflight) {
        self.persistence.message_sent(&self.owner, id, inflight);
    }

    fn finished(&self, id: u64) {
        self.persistence.message_finished(&self.owner, id);
    }

    fn refill(&self, from: u64, limit: usize, done: Box<dyn FnOnce(RefillResult) + Send>) {
        self.persistence.refill(&self.owner, from, limit, done);
    }

    fn purge_from(&self, from: u64) {
        self.persistence.queue_purged(&self.owner, from);
    }

    fn drop_all(&self) {
        self.persistence.queue_dropped(&self.owner);
    }

    fn damaged(&self, id: u64, error: &Corrupt) {
        self.persistence
            .record_damaged(super::RecordKind::Entry, &self.owner, id, error);
    }

    fn window(&self) -> QueueWindow {
        let settings = self.persistence.settings();
        QueueWindow {
            messages: settings.window_messages,
            bytes: settings.window_bytes,
        }
    }
}

/// A queue row as the journal stores it, for tests of queues that read rows back.
#[cfg(test)]
pub(crate) fn row_of(message: &Message, copy: Option<&CopyFields>) -> Vec<u8> {
    super::encoding::encode_entry(message, copy, super::encoding::Clock::now())
}
