//! Reading the store back: a queue's next rows, one row, and everything at start.

use redb::ReadableTable;

use super::tables::{
    DECLARED, ENTRIES, INCOMING, INFLIGHT, LAST_COMMIT_KEY, META, NEXT_ID_KEY, QUEUES, RETAINED,
    SESSIONS,
};
use super::RedbBackend;
use crate::broker::store::{QueueStats, Recovered, StoreError};

/// The trait's work, unguarded: [`StoreBackend`](crate::broker::store::StoreBackend) runs each
/// under [`guarded`](super::guarded::guarded), so that a page redb cannot parse is an error of
/// the call, not a dead committer thread.
impl RedbBackend {
    pub(super) fn read_entries_unguarded(
        &self,
        owner: &str,
        from_id: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let read = self.begin_read()?;
        let entries = match read.open_table(ENTRIES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.io(e)),
        };
        let mut out = Vec::new();
        for row in entries
            .range((owner, from_id)..=(owner, u64::MAX))
            .map_err(|e| self.io(e))?
            .take(limit)
        {
            let (key, value) = row.map_err(|e| self.io(e))?;
            out.push((key.value().1, value.value().to_vec()));
        }
        Ok(out)
    }

    pub(super) fn read_entry_unguarded(
        &self,
        owner: &str,
        id: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let read = self.begin_read()?;
        let entries = match read.open_table(ENTRIES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        Ok(entries
            .get((owner, id))
            .map_err(|e| self.io(e))?
            .map(|v| v.value().to_vec()))
    }

    pub(super) fn recover_unguarded(&self) -> Result<Recovered, StoreError> {
        let read = self.begin_read()?;
        let mut recovered = Recovered::default();
        macro_rules! table {
            ($def:expr) => {
                match read.open_table($def) {
                    Ok(t) => Some(t),
                    Err(redb::TableError::TableDoesNotExist(_)) => None,
                    Err(e) => return Err(self.io(e)),
                }
            };
        }
        if let Some(meta) = table!(META) {
            let get = |key: &str| -> Result<u64, StoreError> {
                Ok(meta
                    .get(key)
                    .map_err(|e| self.io(e))?
                    .map_or(0, |v| v.value()))
            };
            recovered.last_commit_ms = get(LAST_COMMIT_KEY)?;
            recovered.next_id = get(NEXT_ID_KEY)?;
        }
        if let Some(sessions) = table!(SESSIONS) {
            for row in sessions.iter().map_err(|e| self.io(e))? {
                let (k, v) = row.map_err(|e| self.io(e))?;
                recovered
                    .sessions
                    .push((k.value().to_owned(), v.value().to_vec()));
            }
        }
        if let Some(queues) = table!(QUEUES) {
            for row in queues.iter().map_err(|e| self.io(e))? {
                let (k, v) = row.map_err(|e| self.io(e))?;
                let (count, bytes) = v.value();
                recovered
                    .queues
                    .push((k.value().to_owned(), QueueStats { count, bytes }));
            }
        }
        if let Some(inflight) = table!(INFLIGHT) {
            for row in inflight.iter().map_err(|e| self.io(e))? {
                let (k, v) = row.map_err(|e| self.io(e))?;
                let (owner, id) = k.value();
                recovered
                    .inflight
                    .push((owner.to_owned(), id, v.value().to_vec()));
            }
        }
        if let Some(incoming) = table!(INCOMING) {
            for row in incoming.iter().map_err(|e| self.io(e))? {
                let (k, _) = row.map_err(|e| self.io(e))?;
                let (client, packet_id) = k.value();
                recovered.incoming.push((client.to_owned(), packet_id));
            }
        }
        if let Some(retained) = table!(RETAINED) {
            for row in retained.iter().map_err(|e| self.io(e))? {
                let (k, v) = row.map_err(|e| self.io(e))?;
                recovered
                    .retained
                    .push((k.value().to_owned(), v.value().to_vec()));
            }
        }
        if let Some(declared) = table!(DECLARED) {
            for row in declared.iter().map_err(|e| self.io(e))? {
                let (k, _) = row.map_err(|e| self.io(e))?;
                recovered.declared.push(k.value().to_owned());
            }
        }
        Ok(recovered)
    }
}
