//! The store on redb: one file, `sharq.redb`, in the configured directory. redb commits are
//! atomic and crash-safe (copy-on-write B-trees, a checksummed header), so after `kill -9` the
//! file holds exactly the last committed batch.
//!
//! `storage.sync = false` swaps the file for one whose `sync_data` does nothing: commits still
//! reach the OS page cache in order, which a killed process cannot take back, but a power loss
//! can.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use redb::backends::FileBackend;
use redb::{
    BackendError, Database, Durability, ReadableDatabase, ReadableTable, StorageBackend,
    TableDefinition, TableHandle,
};

use super::encoding::entry_weight;
use super::{Op, QueueStats, Recovered, StoreBackend, StoreError};

/// The layout of the tables below. A file with another number is refused, never misread.
pub const STORE_FORMAT: u32 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("sharq_meta");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entries");
const INFLIGHT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("inflight");
const INCOMING: TableDefinition<(&str, u16), u8> = TableDefinition::new("incoming_qos2");
/// Row count and whole-message bytes per queue, kept with every commit.
const QUEUES: TableDefinition<&str, (u64, u64)> = TableDefinition::new("queues");
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
/// Groups declared at run time (the admin API's), by owner; config-declared ones are not here.
const DECLARED: TableDefinition<&str, u8> = TableDefinition::new("declared_groups");

const FORMAT_KEY: &str = "format";
const LAST_COMMIT_KEY: &str = "last_commit_ms";
const NEXT_ID_KEY: &str = "next_id";

/// The file name inside `storage.dir`.
pub const FILE_NAME: &str = "sharq.redb";

pub struct RedbBackend {
    /// Taken out at close, which releases the file for the next broker (of this process, too).
    db: parking_lot::RwLock<Option<Database>>,
    path: PathBuf,
}

/// A file whose flushes are left to the OS (`storage.sync = false`).
#[derive(Debug)]
struct UnsyncedFile(FileBackend);

impl StorageBackend for UnsyncedFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.0.close()
    }
    // The file's locks, so a second broker on the same directory is refused here too.
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.0.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.query_lock_range(start, end)
    }
}

impl std::fmt::Debug for RedbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbBackend")
            .field("path", &self.path)
            .finish()
    }
}

impl RedbBackend {
    /// Opens (or creates) the store in `dir`. A file that is not a redb database, or one
    /// another program wrote, or one of another sharq format is refused, naming the file.
    pub fn open(dir: &Path, sync: bool) -> Result<RedbBackend, StoreError> {
        let path = dir.join(FILE_NAME);
        let shown = path.display().to_string();
        let open_err = |reason: String| StoreError::Open {
            path: shown.clone(),
            reason,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| open_err(format!("cannot create directory: {e}")))?;
        let mut builder = Database::builder();
        // Pages of the queues' heads and the indexes; payloads beyond the windows stay on disk.
        builder.set_cache_size(32 * 1024 * 1024);
        let db = if sync {
            builder.create(&path)
        } else {
            let file = open_file(&path).map_err(|e| open_err(e.to_string()))?;
            let backend = FileBackend::new(file).map_err(|e| open_err(e.to_string()))?;
            builder.create_with_backend(UnsyncedFile(backend))
        }
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                open_err("another process (a running sharq?) has it open".to_owned())
            }
            other => open_err(format!("not a sharq store, or damaged: {other}")),
        })?;
        let backend = RedbBackend {
            db: parking_lot::RwLock::new(Some(db)),
            path,
        };
        backend.check_format()?;
        Ok(backend)
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        match &*self.db.read() {
            Some(db) => db.begin_read().map_err(|e| self.io(e)),
            None => Err(self.io("the store is closed")),
        }
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        match &*self.db.read() {
            Some(db) => db.begin_write().map_err(|e| self.io(e)),
            None => Err(self.io("the store is closed")),
        }
    }

    fn io(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        }
    }

    fn corrupt(&self, table: &'static str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.path.display().to_string(),
            table,
            reason: e.to_string(),
        }
    }

    /// A new file gets our format; an existing one must already have it.
    fn check_format(&self) -> Result<(), StoreError> {
        let format_err = |found: String| StoreError::Format {
            path: self.path.display().to_string(),
            found,
            expected: STORE_FORMAT,
        };
        let read = self.begin_read()?;
        let tables: Vec<String> = read
            .list_tables()
            .map_err(|e| self.io(e))?
            .map(|t| t.name().to_owned())
            .collect();
        let found = match read.open_table(META) {
            Ok(meta) => meta
                .get(FORMAT_KEY)
                .map_err(|e| self.io(e))?
                .map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(format_err(format!("unreadable ({e})"))),
        };
        drop(read);
        match found {
            Some(v) if v == u64::from(STORE_FORMAT) => Ok(()),
            Some(v) => Err(format_err(v.to_string())),
            None if tables.is_empty() => {
                let write = self.begin_write()?;
                {
                    let mut meta = write.open_table(META).map_err(|e| self.io(e))?;
                    meta.insert(FORMAT_KEY, u64::from(STORE_FORMAT))
                        .map_err(|e| self.io(e))?;
                }
                write.commit().map_err(|e| self.io(e))
            }
            None => Err(format_err(format!(
                "none (a redb file of another program, with tables {tables:?})"
            ))),
        }
    }
}

fn open_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

impl StoreBackend for RedbBackend {
    fn commit(&self, ops: &[Op], now_ms: u64, next_id: u64) -> Result<(), StoreError> {
        let mut write = self.begin_write()?;
        write
            .set_durability(Durability::Immediate)
            .map_err(|e| self.io(e))?;
        {
            let mut sessions = write.open_table(SESSIONS).map_err(|e| self.io(e))?;
            let mut entries = write.open_table(ENTRIES).map_err(|e| self.io(e))?;
            let mut inflight = write.open_table(INFLIGHT).map_err(|e| self.io(e))?;
            let mut incoming = write.open_table(INCOMING).map_err(|e| self.io(e))?;
            let mut queues = write.open_table(QUEUES).map_err(|e| self.io(e))?;
            let mut retained = write.open_table(RETAINED).map_err(|e| self.io(e))?;
            let mut meta = write.open_table(META).map_err(|e| self.io(e))?;
            let mut declared = write.open_table(DECLARED).map_err(|e| self.io(e))?;
            // Absolute counts of the queues this batch touches, written back once at the end.
            let mut stats: HashMap<&str, QueueStats> = HashMap::new();
            macro_rules! stats_of {
                ($owner:expr) => {{
                    let owner: &str = $owner;
                    if !stats.contains_key(owner) {
                        let current = queues
                            .get(owner)
                            .map_err(|e| self.io(e))?
                            .map(|v| {
                                let (count, bytes) = v.value();
                                QueueStats { count, bytes }
                            })
                            .unwrap_or_default();
                        stats.insert(owner, current);
                    }
                    stats.get_mut(owner).expect("inserted above")
                }};
            }
            for op in ops {
                match op {
                    Op::PutSession { client_id, value } => {
                        sessions
                            .insert(&**client_id, value.as_slice())
                            .map_err(|e| self.io(e))?;
                    }
                    Op::DeleteSession { client_id } => {
                        sessions.remove(&**client_id).map_err(|e| self.io(e))?;
                        let owner = super::session_owner(client_id);
                        let owner: &str = &owner;
                        entries
                            .retain_in((owner, 0)..=(owner, u64::MAX), |_, _| false)
                            .map_err(|e| self.io(e))?;
                        inflight
                            .retain_in((owner, 0)..=(owner, u64::MAX), |_, _| false)
                            .map_err(|e| self.io(e))?;
                        let client: &str = client_id;
                        incoming
                            .retain_in((client, 0)..=(client, u16::MAX), |_, _| false)
                            .map_err(|e| self.io(e))?;
                        queues.remove(owner).map_err(|e| self.io(e))?;
                        // Later ops of this batch on this owner count from empty.
                        if let Some(s) = stats.iter_mut().find(|(k, _)| **k == owner) {
                            *s.1 = QueueStats::default();
                        }
                    }
                    Op::PutEntry { owner, id, value } => {
                        let weight =
                            u64::from(entry_weight(value).map_err(|e| self.corrupt("entries", e))?);
                        let old = entries
                            .insert((&**owner, *id), value.as_slice())
                            .map_err(|e| self.io(e))?
                            .map(|old| entry_weight(old.value()).map(u64::from));
                        let s = stats_of!(owner);
                        match old {
                            Some(Ok(old_weight)) => {
                                s.bytes = s.bytes.saturating_sub(old_weight) + weight
                            }
                            _ => {
                                s.count += 1;
                                s.bytes += weight;
                            }
                        }
                    }
                    Op::DeleteEntry { owner, id } => {
                        let old = entries
                            .remove((&**owner, *id))
                            .map_err(|e| self.io(e))?
                            .map(|old| entry_weight(old.value()).map(u64::from));
                        inflight.remove((&**owner, *id)).map_err(|e| self.io(e))?;
                        if let Some(old) = old {
                            let s = stats_of!(owner);
                            s.count = s.count.saturating_sub(1);
                            s.bytes = s.bytes.saturating_sub(old.unwrap_or(0));
                        }
                    }
                    Op::PutInflight { owner, id, value } => {
                        inflight
                            .insert((&**owner, *id), value.as_slice())
                            .map_err(|e| self.io(e))?;
                    }
                    Op::DeleteOwner { owner } => {
                        let o: &str = owner;
                        entries
                            .retain_in((o, 0)..=(o, u64::MAX), |_, _| false)
                            .map_err(|e| self.io(e))?;
                        inflight
                            .retain_in((o, 0)..=(o, u64::MAX), |_, _| false)
                            .map_err(|e| self.io(e))?;
                        *stats_of!(owner) = QueueStats::default();
                    }
                    Op::DeleteFrom { owner, from } => {
                        let o: &str = owner;
                        let mut removed = QueueStats::default();
                        entries
                            .retain_in((o, *from)..=(o, u64::MAX), |_, value| {
                                removed.count += 1;
                                // A row too damaged to weigh still goes; it weighs nothing.
                                removed.bytes += entry_weight(value).map_or(0, u64::from);
                                false
                            })
                            .map_err(|e| self.io(e))?;
                        inflight
                            .retain_in((o, *from)..=(o, u64::MAX), |_, _| false)
                            .map_err(|e| self.io(e))?;
                        let s = stats_of!(owner);
                        s.count = s.count.saturating_sub(removed.count);
                        s.bytes = s.bytes.saturating_sub(removed.bytes);
                    }
                    Op::PutIncoming {
                        client_id,
                        packet_id,
                    } => {
                        incoming
                            .insert((&**client_id, *packet_id), 0)
                            .map_err(|e| self.io(e))?;
                    }
                    Op::DeleteIncoming {
                        client_id,
                        packet_id,
                    } => {
                        incoming
                            .remove((&**client_id, *packet_id))
                            .map_err(|e| self.io(e))?;
                    }
                    Op::PutRetained { topic, value } => {
                        retained
                            .insert(&**topic, value.as_slice())
                            .map_err(|e| self.io(e))?;
                    }
                    Op::DeleteRetained { topic } => {
                        retained.remove(&**topic).map_err(|e| self.io(e))?;
                    }
                    Op::PutDeclared { owner } => {
                        declared.insert(&**owner, 1).map_err(|e| self.io(e))?;
                    }
                    Op::DeleteDeclared { owner } => {
                        declared.remove(&**owner).map_err(|e| self.io(e))?;
                    }
                }
            }
            for (owner, s) in stats {
                if s.count == 0 {
                    queues.remove(owner).map_err(|e| self.io(e))?;
                } else {
                    queues
                        .insert(owner, (s.count, s.bytes))
                        .map_err(|e| self.io(e))?;
                }
            }
            meta.insert(LAST_COMMIT_KEY, now_ms)
                .map_err(|e| self.io(e))?;
            meta.insert(NEXT_ID_KEY, next_id).map_err(|e| self.io(e))?;
        }
        write.commit().map_err(|e| self.io(e))
    }

    fn read_entries(
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

    fn read_entry(&self, owner: &str, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
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

    fn recover(&self) -> Result<Recovered, StoreError> {
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

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn close(&self) {
        self.db.write().take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn entry(weight: u32) -> Vec<u8> {
        // A value as `encoding` lays it out: format byte, then the weight.
        let mut v = vec![super::super::encoding::FORMAT];
        v.extend_from_slice(&weight.to_be_bytes());
        v
    }

    #[test]
    fn commits_survive_reopen_and_queue_counts_follow_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let owner: Arc<str> = Arc::from("g:w/jobs/#");
        {
            let store = RedbBackend::open(dir.path(), true).unwrap();
            let ops: Vec<Op> = (1..=5)
                .map(|id| Op::PutEntry {
                    owner: owner.clone(),
                    id,
                    value: entry(10),
                })
                .chain([Op::DeleteEntry {
                    owner: owner.clone(),
                    id: 2,
                }])
                .collect();
            store.commit(&ops, 1234, 6).unwrap();
        }
        let store = RedbBackend::open(dir.path(), true).unwrap();
        let recovered = store.recover().unwrap();
        assert_eq!(recovered.last_commit_ms, 1234);
        assert_eq!(recovered.next_id, 6);
        assert_eq!(
            recovered.queues,
            vec![(
                owner.to_string(),
                QueueStats {
                    count: 4,
                    bytes: 40
                }
            )]
        );
        let ids: Vec<u64> = store
            .read_entries(&owner, 3, 10)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![3, 4, 5]);
        store
            .commit(
                &[Op::DeleteOwner {
                    owner: owner.clone(),
                }],
                1,
                6,
            )
            .unwrap();
        assert!(store.recover().unwrap().queues.is_empty());
        assert!(store.read_entries(&owner, 0, 10).unwrap().is_empty());
    }

    #[test]
    fn deleting_a_queue_tail_keeps_the_head_and_its_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbBackend::open(dir.path(), true).unwrap();
        let owner: crate::broker::store::Owner = Arc::from("g:jobs/t");
        let ops: Vec<Op> = (1..=5)
            .map(|id| Op::PutEntry {
                owner: owner.clone(),
                id,
                value: entry(7),
            })
            .chain([Op::DeleteFrom {
                owner: owner.clone(),
                from: 3,
            }])
            .collect();
        store.commit(&ops, 1, 6).unwrap();
        let ids: Vec<u64> = store
            .read_entries(&owner, 0, 10)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![1, 2]);
        let recovered = store.recover().unwrap();
        assert_eq!(
            recovered.queues,
            vec![(
                "g:jobs/t".to_owned(),
                QueueStats {
                    count: 2,
                    bytes: 14
                }
            )]
        );
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"this is not a database").unwrap();
        let err = RedbBackend::open(dir.path(), true).unwrap_err().to_string();
        assert!(err.contains(FILE_NAME), "{err}");
    }

    #[test]
    fn a_foreign_redb_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let w = db.begin_write().unwrap();
            {
                let def: TableDefinition<&str, &str> = TableDefinition::new("other_app");
                w.open_table(def).unwrap().insert("k", "v").unwrap();
            }
            w.commit().unwrap();
        }
        let err = RedbBackend::open(dir.path(), true).unwrap_err().to_string();
        assert!(err.contains(FILE_NAME) && err.contains("format"), "{err}");
    }

    #[test]
    fn another_format_is_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let w = db.begin_write().unwrap();
            w.open_table(META).unwrap().insert(FORMAT_KEY, 99).unwrap();
            w.commit().unwrap();
        }
        let err = RedbBackend::open(dir.path(), true).unwrap_err().to_string();
        assert!(err.contains("format 99"), "{err}");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    #[derive(Debug, Clone)]
    enum Step {
        Put(u8, u64, u32),
        Delete(u8, u64),
        Inflight(u8, u64),
        DeleteOwner(u8),
        Commit,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..3, 0u64..16, 1u32..100).prop_map(|(o, i, w)| Step::Put(o, i, w)),
            3 => (0u8..3, 0u64..16).prop_map(|(o, i)| Step::Delete(o, i)),
            1 => (0u8..3, 0u64..16).prop_map(|(o, i)| Step::Inflight(o, i)),
            1 => (0u8..3).prop_map(Step::DeleteOwner),
            2 => Just(Step::Commit),
        ]
    }

    fn owner(o: u8) -> Arc<str> {
        Arc::from(format!("g:n{o}/t/#"))
    }

    fn value(weight: u32) -> Vec<u8> {
        let mut v = vec![super::super::encoding::FORMAT];
        v.extend_from_slice(&weight.to_be_bytes());
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever the ops and however they are batched, the store holds what a plain map
        /// would, and its per-queue counts match its rows.
        #[test]
        fn the_store_matches_a_model(steps in proptest::collection::vec(step(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let store = RedbBackend::open(dir.path(), false).unwrap();
            let mut entries: BTreeMap<(String, u64), u32> = BTreeMap::new();
            let mut inflight: BTreeMap<(String, u64), ()> = BTreeMap::new();
            let mut batch = Vec::new();
            for step in steps.into_iter().chain([Step::Commit]) {
                match step {
                    Step::Put(o, id, w) => {
                        entries.insert((owner(o).to_string(), id), w);
                        batch.push(Op::PutEntry { owner: owner(o), id, value: value(w) });
                    }
                    Step::Delete(o, id) => {
                        entries.remove(&(owner(o).to_string(), id));
                        inflight.remove(&(owner(o).to_string(), id));
                        batch.push(Op::DeleteEntry { owner: owner(o), id });
                    }
                    Step::Inflight(o, id) => {
                        inflight.insert((owner(o).to_string(), id), ());
                        batch.push(Op::PutInflight { owner: owner(o), id, value: vec![1] });
                    }
                    Step::DeleteOwner(o) => {
                        let name = owner(o).to_string();
                        entries.retain(|(k, _), _| *k != name);
                        inflight.retain(|(k, _), _| *k != name);
                        batch.push(Op::DeleteOwner { owner: owner(o) });
                    }
                    Step::Commit => {
                        store.commit(&std::mem::take(&mut batch), 1, 1).unwrap();
                    }
                }
            }
            let recovered = store.recover().unwrap();
            let mut expected: BTreeMap<String, QueueStats> = BTreeMap::new();
            for ((o, _), w) in &entries {
                let s = expected.entry(o.clone()).or_default();
                s.count += 1;
                s.bytes += u64::from(*w);
            }
            let got: BTreeMap<String, QueueStats> = recovered.queues.into_iter().collect();
            prop_assert_eq!(got, expected);
            let got_inflight: BTreeMap<(String, u64), ()> =
                recovered.inflight.into_iter().map(|(o, id, _)| ((o, id), ())).collect();
            prop_assert_eq!(got_inflight, inflight);
            for o in 0..3 {
                let rows: Vec<u64> = store
                    .read_entries(&owner(o), 0, 100)
                    .unwrap()
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
                let want: Vec<u64> = entries
                    .keys()
                    .filter(|(k, _)| *k == *owner(o))
                    .map(|(_, id)| *id)
                    .collect();
                prop_assert_eq!(rows, want);
            }
        }
    }
}
