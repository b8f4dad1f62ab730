//! How a session's changes reach the store. Every method appends to the journal and is called
//! under the session's lock, so one copy's ops (stored, sent, released, finished) are journalled
//! in the order they happened.
//!
//! A session is persistent while its expiry interval is above zero: only then are its record,
//! its own queued copies and its inbound QoS 2 state stored. Shared copies belong to their
//! group's queue whatever the member: the member only records that it holds one at QoS 2 (so a
//! restart completes it with the same client [MQTT-4.8.2-4]) and removes it when finished.

use std::sync::Arc;

use crate::packet::QoS;

use crate::broker::message::delivery::Delivery;
use crate::broker::store::encoding::{
    encode_entry, encode_inflight, encode_session, Clock, CopyFields, StoredInflight, StoredSession,
};
use crate::broker::store::{session_owner, Journal, Op, Owner, StoredRef};

#[derive(Debug)]
pub struct SessionDisk {
    pub journal: Arc<Journal>,
    /// This session's queue in the store.
    pub owner: Owner,
    client_id: Arc<str>,
}

pub fn copy_fields(delivery: &Delivery) -> CopyFields {
    CopyFields {
        qos: delivery.qos,
        retain: delivery.retain,
        subscription_ids: delivery.subscription_ids.clone(),
    }
}

impl SessionDisk {
    pub fn new(journal: Arc<Journal>, client_id: &str) -> SessionDisk {
        SessionDisk {
            journal,
            owner: session_owner(client_id),
            client_id: Arc::from(client_id),
        }
    }

    /// Stores a copy for this session's own queue and returns where it is.
    pub fn store_copy(&self, delivery: &Delivery) -> StoredRef {
        let id = self.journal.next_id();
        let value = encode_entry(
            &delivery.message,
            Some(&copy_fields(delivery)),
            Clock::now(),
        );
        self.journal.append(Op::PutEntry {
            owner: self.owner.clone(),
            id,
            value,
        });
        StoredRef {
            owner: self.owner.clone(),
            id,
        }
    }

    /// Records that a stored copy went out under `packet_id` (or that its PUBREC came back).
    /// A shared copy at QoS 1 records nothing: it goes back to its group on a restart anyway.
    /// True for a QoS 2 copy: its PUBLISH (or PUBREL) must not leave before this record is
    /// committed, or a restart could send it again under a new identity, or as a PUBLISH the
    /// client already completed — a duplicate that exactly-once forbids.
    pub fn sent(&self, delivery: &Delivery, packet_id: u16, released: bool) -> bool {
        let Some(stored) = &delivery.stored else {
            return false;
        };
        if stored.owner != self.owner && delivery.qos != QoS::ExactlyOnce {
            return false;
        }
        let value = encode_inflight(&StoredInflight {
            client_id: self.client_id.to_string(),
            packet_id,
            released,
            copy: copy_fields(delivery),
        });
        self.journal.append(Op::PutInflight {
            owner: stored.owner.clone(),
            id: stored.id,
            value,
        });
        delivery.qos == QoS::ExactlyOnce
    }

    /// The copy is done with (acknowledged, expired, dropped): it leaves the store.
    pub fn finished(&self, delivery: &Delivery) {
        if let Some(stored) = &delivery.stored {
            self.journal.append(Op::DeleteEntry {
                owner: stored.owner.clone(),
                id: stored.id,
            });
        }
    }

    pub fn save(&self, record: &StoredSession) {
        self.journal.append(Op::PutSession {
            client_id: self.client_id.clone(),
            value: encode_session(record),
        });
    }

    /// The session and every row it owns leave the store.
    pub fn delete(&self) {
        self.journal.append(Op::DeleteSession {
            client_id: self.client_id.clone(),
        });
    }

    pub fn incoming(&self, packet_id: u16, pending: bool) {
        let client_id = self.client_id.clone();
        self.journal.append(if pending {
            Op::PutIncoming {
                client_id,
                packet_id,
            }
        } else {
            Op::DeleteIncoming {
                client_id,
                packet_id,
            }
        });
    }
}
