//! How a session's own changes reach the store, through [`Persistence`]: its record, its
//! deletion and its inbound QoS 2 state. Its queued copies go through its queue's
//! [`QueueStore`]; a copy it holds of a group's message is finished through the group's, by the
//! delivery's [`StoredRef`].
//!
//! A session is persistent while its expiry interval is above zero: only then are its record,
//! its own queued copies and its inbound QoS 2 state stored. Shared copies belong to their
//! group's queue whatever the member: the member only records that it holds one at QoS 2 (so a
//! restart completes it with the same client [MQTT-4.8.2-4]) and finishes it when done.

use std::sync::Arc;

use crate::packet::QoS;

use crate::broker::delivery::Delivery;
use crate::broker::store::encoding::{CopyFields, StoredInflight, StoredSession};
use crate::broker::store::{session_owner, Journal, JournalQueue, Persistence, QueueStore};

#[derive(Debug)]
pub struct SessionDisk {
    persistence: Persistence,
    /// This session's own queue in the store.
    pub queue: Arc<dyn QueueStore>,
    client_id: Arc<str>,
}

pub fn copy_fields(delivery: &Delivery) -> CopyFields {
    CopyFields {
        qos: delivery.qos,
        retain: delivery.retain,
        subscription_ids: delivery.subscription_ids.clone(),
    }
}

/// Records that a stored copy went out under `packet_id` (or that its PUBREC came back), in
/// the queue that stored it. A shared copy at QoS 1 records nothing: it goes back to its group
/// on a restart anyway. True for a QoS 2 copy: its PUBLISH (or PUBREL) must not leave before
/// this record is committed, or a restart could send it again under a new identity, or as a
/// PUBLISH the client already completed — a duplicate that exactly-once forbids.
pub fn sent(client_id: &str, delivery: &Delivery, packet_id: u16, released: bool) -> bool {
    let Some(stored) = &delivery.stored else {
        return false;
    };
    if delivery.group.is_some() && delivery.qos != QoS::ExactlyOnce {
        return false;
    }
    stored.sent(&StoredInflight {
        client_id: client_id.to_owned(),
        packet_id,
        released,
        copy: copy_fields(delivery),
    });
    delivery.qos == QoS::ExactlyOnce
}

impl SessionDisk {
    pub fn new(journal: Arc<Journal>, client_id: &str) -> SessionDisk {
        let persistence = Persistence::new(journal);
        SessionDisk {
            queue: JournalQueue::new(persistence.clone(), session_owner(client_id)),
            persistence,
            client_id: Arc::from(client_id),
        }
    }

    pub fn save(&self, record: &StoredSession) {
        self.persistence.session_saved(&self.client_id, record);
    }

    /// The session and every row it owns leave the store.
    pub fn delete(&self) {
        self.persistence.session_deleted(&self.client_id);
    }

    pub fn incoming(&self, packet_id: u16, pending: bool) {
        if pending {
            self.persistence.qos2_received(&self.client_id, packet_id);
        } else {
            self.persistence.qos2_released(&self.client_id, packet_id);
        }
    }
}
