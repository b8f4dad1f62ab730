//! What survives a restart: persistent sessions, their queues and in-flight exchanges, group
//! queues, retained messages and wills.
//!
//! The broker never writes to disk on a message path. It appends [`Op`]s to the [`Journal`]
//! under the lock of the queue they change (so every key's ops are journalled in the order they
//! happened), and one committer thread writes everything appended meanwhile as one transaction
//! (group commit). A publisher's PUBACK/PUBREC waits for the commit that holds its message.
//!
//! Everything above the store persists through [`Persistence`] (`persist.rs`), one function per
//! domain event; only this module builds [`Op`]s. A durable queue reaches its rows through a
//! [`QueueStore`] (`queue_store.rs`), whose local implementation is the journal.
//!
//! The journal is written against [`StoreBackend`], the one interface a durable engine must
//! offer: apply a batch atomically, read a queue's next window, and hand back everything at
//! start. redb is the engine today (`redb_backend`); a distributed one (DESIGN.md §7) would
//! implement the same trait.
//!
//! Keys: a queue is named by its owner — `c:<client id>` for a session, `g:<share name>/<filter>`
//! for a shared group — and each copy in it by a copy id, allocated in arrival order from one
//! counter, so a queue's stored order is its delivery order.

pub mod encoding;
pub mod journal;
pub mod persist;
pub mod queue_store;
pub mod redb_backend;

use std::sync::Arc;

pub use journal::{Journal, StoreSettings};
pub use persist::Persistence;
pub use queue_store::{JournalQueue, QueueStore, QueueWindow, StoredRef};

/// The store cannot do what was asked; the message names the file where there is one.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("store {path} was written in format {found}; this sharq reads format {expected} only (move the directory aside to start afresh)")]
    Format {
        path: String,
        found: String,
        expected: u32,
    },
    #[error("store {path}: {reason}")]
    Io { path: String, reason: String },
    /// redb could not read its own pages (it panicked, or reported them corrupt) while the
    /// file was checked: nothing was written to it.
    #[error("store {path} is damaged and was left untouched: {reason} (restore it from a backup, or move the directory aside to start afresh)")]
    Damaged { path: String, reason: String },
    #[error("store {path}: corrupt record in {table}: {reason}")]
    Corrupt {
        path: String,
        table: &'static str,
        reason: String,
    },
}

/// The name of a queue in the store.
pub type Owner = Arc<str>;

pub fn session_owner(client_id: &str) -> Owner {
    Arc::from(format!("c:{client_id}"))
}

pub fn group_owner(name: &str, filter: &str) -> Owner {
    Arc::from(format!("g:{name}/{filter}"))
}

/// The share name and filter of a group owner, if `owner` names one.
pub fn parse_group_owner(owner: &str) -> Option<(&str, &str)> {
    owner.strip_prefix("g:")?.split_once('/')
}

/// One change to the store. Encoded values come from [`encoding`].
#[derive(Debug, Clone)]
pub enum Op {
    PutSession {
        client_id: Arc<str>,
        value: Vec<u8>,
    },
    /// The session and every row it owns: its queue, in-flight and inbound QoS 2 records.
    DeleteSession {
        client_id: Arc<str>,
    },
    PutEntry {
        owner: Owner,
        id: u64,
        value: Vec<u8>,
    },
    /// Removes a queued copy and its in-flight record.
    DeleteEntry {
        owner: Owner,
        id: u64,
    },
    PutInflight {
        owner: Owner,
        id: u64,
        value: Vec<u8>,
    },
    /// Every entry and in-flight record of a queue (a group that ended).
    DeleteOwner {
        owner: Owner,
    },
    /// The entries of a queue from copy id `from` on: its disk tail (a purged group queue).
    DeleteFrom {
        owner: Owner,
        from: u64,
    },
    PutIncoming {
        client_id: Arc<str>,
        packet_id: u16,
    },
    DeleteIncoming {
        client_id: Arc<str>,
        packet_id: u16,
    },
    PutRetained {
        topic: Arc<str>,
        value: Vec<u8>,
    },
    DeleteRetained {
        topic: Arc<str>,
    },
    /// A group declared at run time (not from the config file), by its owner name.
    PutDeclared {
        owner: Owner,
    },
    DeleteDeclared {
        owner: Owner,
    },
    /// Moves a record whose checksum or layout failed out of its table into the table of
    /// damaged records, byte for byte, so it is never read as data again but is kept for
    /// inspection. `id` is 0 for kinds keyed by name only.
    Quarantine {
        kind: RecordKind,
        name: Arc<str>,
        id: u64,
    },
}

/// The kinds of record that carry a checksum: what a damaged one was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Session,
    /// A queued copy of a message; `name` is its queue.
    Entry,
    /// An exchange in flight; `name` is its queue.
    Inflight,
    Retained,
}

impl RecordKind {
    /// The table the record lives in.
    pub fn table(self) -> &'static str {
        match self {
            RecordKind::Session => "sessions",
            RecordKind::Entry => "entries",
            RecordKind::Inflight => "inflight",
            RecordKind::Retained => "retained",
        }
    }
}

impl Op {
    /// Bytes this op holds while it waits for its commit, for the journal's bound.
    pub fn size(&self) -> usize {
        let value = match self {
            Op::PutSession { value, .. }
            | Op::PutEntry { value, .. }
            | Op::PutInflight { value, .. }
            | Op::PutRetained { value, .. } => value.len(),
            _ => 0,
        };
        64 + value
    }
}

/// A queue's row counts as the backend keeps them, so start-up need not scan the rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub count: u64,
    pub bytes: u64,
}

/// Everything read back at start, except queue contents beyond each queue's first window.
#[derive(Debug, Default)]
pub struct Recovered {
    /// When the store last committed: the moment a broker that died stopped changing it.
    pub last_commit_ms: u64,
    /// One more than the largest copy id ever stored.
    pub next_id: u64,
    pub sessions: Vec<(String, Vec<u8>)>,
    pub queues: Vec<(String, QueueStats)>,
    /// In-flight records by owner and copy id.
    pub inflight: Vec<(String, u64, Vec<u8>)>,
    pub incoming: Vec<(String, u16)>,
    pub retained: Vec<(String, Vec<u8>)>,
    /// Owners of the groups declared at run time.
    pub declared: Vec<String>,
}

/// A durable engine for the journal.
pub trait StoreBackend: Send + Sync {
    /// Applies `ops` in order as one atomic transaction, with the commit time and the next copy
    /// id recorded alongside.
    fn commit(&self, ops: &[Op], now_ms: u64, next_id: u64) -> Result<(), StoreError>;
    /// Up to `limit` entries of `owner` with id ≥ `from_id`, in id order.
    fn read_entries(
        &self,
        owner: &str,
        from_id: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// One entry, if it is stored.
    fn read_entry(&self, owner: &str, id: u64) -> Result<Option<Vec<u8>>, StoreError>;
    fn recover(&self) -> Result<Recovered, StoreError>;
    /// Where the data lives, for logs.
    fn describe(&self) -> String;
    /// Releases the store (its file, its lock); later calls fail.
    fn close(&self);
}
