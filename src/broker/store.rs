//! Where session state is kept between restarts. In memory for now; a durable store (redb) implements
//! the same trait later.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::packet::SubscriptionOptions;

#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub struct StoreError(pub String);

/// The durable part of a session: enough to rebuild it and its subscriptions after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub client_id: String,
    pub expiry_interval: u32,
    pub subscriptions: Vec<(String, SubscriptionOptions, Option<u32>)>,
}

pub trait SessionStore: Send + Sync {
    fn save(&self, record: &SessionRecord) -> Result<(), StoreError>;
    fn remove(&self, client_id: &str) -> Result<(), StoreError>;
    fn load_all(&self) -> Result<Vec<SessionRecord>, StoreError>;
}

/// Keeps records in memory: sessions survive their connections but not the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<String, SessionRecord>>,
}

impl SessionStore for MemoryStore {
    fn save(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.records
            .lock()
            .insert(record.client_id.clone(), record.clone());
        Ok(())
    }

    fn remove(&self, client_id: &str) -> Result<(), StoreError> {
        self.records.lock().remove(client_id);
        Ok(())
    }

    fn load_all(&self) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self.records.lock().values().cloned().collect())
    }
}
