//! The one face the broker persists through: one function per domain event (a message queued,
//! sent, finished; a session saved; a retained message set ...), as Mosquitto's
//! `plugin_persist.c` has one per event. Only this file turns events into rows ([`Op`]s and
//! their encoded values); group, session and retained code say what happened, not how it is
//! kept.
//!
//! Every function appends to the journal and returns at once; the caller calls it under the
//! lock of whatever it changes, so one key's events reach the journal in the order they
//! happened (see [`Journal`]).

use std::sync::Arc;

use super::encoding::{
    encode_entry, encode_inflight, encode_retained, encode_session, Clock, CopyFields, Corrupt,
    StoredInflight, StoredSession,
};
use super::journal::{RefillResult, StoreSettings};
use super::{Journal, Op, Owner, RecordKind};
use crate::broker::message::Message;

/// The persistence API over the journal. Cheap to clone: every holder shares one journal.
#[derive(Debug, Clone)]
pub struct Persistence {
    journal: Arc<Journal>,
}

impl Persistence {
    pub fn new(journal: Arc<Journal>) -> Persistence {
        Persistence { journal }
    }

    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// The `[storage]` window a queue keeps in memory.
    pub fn settings(&self) -> StoreSettings {
        self.journal.settings
    }

    /// A message (or a session's own copy of one, with `copy`) joins queue `owner`; its copy id,
    /// allocated here so that ids grow in the order messages are stored.
    pub fn message_queued(
        &self,
        owner: &Owner,
        message: &Message,
        copy: Option<&CopyFields>,
    ) -> u64 {
        let id = self.journal.next_id();
        self.journal.append(Op::PutEntry {
            owner: owner.clone(),
            id,
            value: encode_entry(message, copy, Clock::now()),
        });
        id
    }

    /// Copy `id` of queue `owner` went out to a client (or its PUBREC came back): the exchange
    /// in flight, so a restart resumes it with the same client and packet id.
    pub fn message_sent(&self, owner: &Owner, id: u64, inflight: &StoredInflight) {
        self.journal.append(Op::PutInflight {
            owner: owner.clone(),
            id,
            value: encode_inflight(inflight),
        });
    }

    /// Copy `id` of queue `owner` is done with (acknowledged, expired, dropped): it leaves the
    /// store with its in-flight record.
    pub fn message_finished(&self, owner: &Owner, id: u64) {
        self.journal.append(Op::DeleteEntry {
            owner: owner.clone(),
            id,
        });
    }

    /// Queue `owner` was purged: its rows from copy id `from` on (its disk tail) go.
    pub fn queue_purged(&self, owner: &Owner, from: u64) {
        self.journal.append(Op::DeleteFrom {
            owner: owner.clone(),
            from,
        });
    }

    /// Queue `owner` ended: every row and in-flight record it has goes.
    pub fn queue_dropped(&self, owner: &Owner) {
        self.journal.append(Op::DeleteOwner {
            owner: owner.clone(),
        });
    }

    /// A persistent session's record (subscriptions, expiry, will, owner) changed.
    pub fn session_saved(&self, client_id: &Arc<str>, record: &StoredSession) {
        self.journal.append(Op::PutSession {
            client_id: client_id.clone(),
            value: encode_session(record),
        });
    }

    /// A session ended or stopped being persistent: it and every row it owns go.
    pub fn session_deleted(&self, client_id: &Arc<str>) {
        self.journal.append(Op::DeleteSession {
            client_id: client_id.clone(),
        });
    }

    /// An inbound QoS 2 PUBLISH was acknowledged with PUBREC and waits for its PUBREL.
    pub fn qos2_received(&self, client_id: &Arc<str>, packet_id: u16) {
        self.journal.append(Op::PutIncoming {
            client_id: client_id.clone(),
            packet_id,
        });
    }

    /// The PUBREL of an inbound QoS 2 PUBLISH came.
    pub fn qos2_released(&self, client_id: &Arc<str>, packet_id: u16) {
        self.journal.append(Op::DeleteIncoming {
            client_id: client_id.clone(),
            packet_id,
        });
    }

    /// `message` is its topic's retained message now.
    pub fn retained_set(&self, message: &Message) {
        self.journal.append(Op::PutRetained {
            topic: Arc::from(&*message.topic),
            value: encode_retained(message, Clock::now()),
        });
    }

    /// `topic` has no retained message any more.
    pub fn retained_cleared(&self, topic: &str) {
        self.journal.append(Op::DeleteRetained {
            topic: Arc::from(topic),
        });
    }

    /// A group (by its owner name) was declared at run time: declared again after a restart.
    pub fn group_declared(&self, owner: Owner) {
        self.journal.append(Op::PutDeclared { owner });
    }

    pub fn group_undeclared(&self, owner: Owner) {
        self.journal.append(Op::DeleteDeclared { owner });
    }

    /// A record read back failed its checks: counted, logged, and moved aside (see
    /// [`Journal::damaged`]).
    pub fn record_damaged(&self, kind: RecordKind, name: &str, id: u64, error: &Corrupt) {
        self.journal.damaged(kind, name, id, error);
    }

    /// Asks for up to `limit` rows of queue `owner` from `from` on, delivered on the committer
    /// thread once every row appended before this call is on disk.
    pub fn refill(
        &self,
        owner: &Owner,
        from: u64,
        limit: usize,
        done: Box<dyn FnOnce(RefillResult) + Send>,
    ) {
        self.journal
            .request_refill(owner.clone(), from, limit, done);
    }
}
