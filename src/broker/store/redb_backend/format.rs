//! Which sharq format a store file holds: a new file gets this one, a format-1 file (records
//! without checksums) is upgraded in one transaction, any other is refused.

use std::ops::Bound;

use redb::{Durability, ReadableTable, TableHandle};

use super::tables::{ENTRIES, FORMAT_KEY, INFLIGHT, META, RETAINED, SESSIONS, STORE_FORMAT};
use super::{RedbBackend, FILE_NAME};
use crate::broker::store::encoding::upgrade_v1;
use crate::broker::store::StoreError;

impl RedbBackend {
    pub(super) fn format_err(&self, found: String) -> StoreError {
        StoreError::Format {
            path: self.path.display().to_string(),
            found,
            expected: STORE_FORMAT,
        }
    }

    /// The format recorded in the file: `None` if it has no tables at all (a new file); an
    /// error if it has tables but no format (another program's file).
    pub(super) fn read_format(&self) -> Result<Option<u64>, StoreError> {
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
            Err(e) => return Err(self.format_err(format!("unreadable ({e})"))),
        };
        match found {
            Some(v) => Ok(Some(v)),
            None if tables.is_empty() => Ok(None),
            None => Err(self.format_err(format!(
                "none (a redb file of another program, with tables {tables:?})"
            ))),
        }
    }

    /// A new file gets our format; one of format 1 is upgraded; any other is refused.
    pub(super) fn check_format(&self) -> Result<(), StoreError> {
        match self.read_format()? {
            Some(v) if v == u64::from(STORE_FORMAT) => Ok(()),
            Some(1) => self.upgrade_from_v1(),
            Some(v) => Err(self.format_err(v.to_string())),
            None => {
                let write = self.begin_write()?;
                {
                    let mut meta = write.open_table(META).map_err(|e| self.io(e))?;
                    meta.insert(FORMAT_KEY, u64::from(STORE_FORMAT))
                        .map_err(|e| self.io(e))?;
                }
                write.commit().map_err(|e| self.io(e))
            }
        }
    }

    /// Format 1 → 2: every record gets its checksum, in one transaction (a crash leaves the
    /// file of format 1, upgraded again at the next start). A value that is not a format-1
    /// record is left as it is: it fails its check when read, like any damaged record.
    pub(super) fn upgrade_from_v1(&self) -> Result<(), StoreError> {
        let mut write = self.begin_write()?;
        write
            .set_durability(Durability::Immediate)
            .map_err(|e| self.io(e))?;
        let mut upgraded = 0u64;
        let mut left = 0u64;
        {
            let mut count = |value: &Option<Vec<u8>>| match value {
                Some(_) => upgraded += 1,
                None => left += 1,
            };
            for def in [SESSIONS, RETAINED] {
                let mut table = write.open_table(def).map_err(|e| self.io(e))?;
                let rows: Vec<(String, Option<Vec<u8>>)> = table
                    .iter()
                    .map_err(|e| self.io(e))?
                    .map(|row| row.map(|(k, v)| (k.value().to_owned(), upgrade_v1(v.value()))))
                    .collect::<Result<_, _>>()
                    .map_err(|e| self.io(e))?;
                for (key, value) in rows {
                    count(&value);
                    if let Some(value) = value {
                        table
                            .insert(key.as_str(), value.as_slice())
                            .map_err(|e| self.io(e))?;
                    }
                }
            }
            for def in [ENTRIES, INFLIGHT] {
                let mut table = write.open_table(def).map_err(|e| self.io(e))?;
                // In slices, so a large store is not held in memory twice over.
                let mut from: Option<(String, u64)> = None;
                loop {
                    let range = match &from {
                        Some((owner, id)) => table.range::<(&str, u64)>((
                            Bound::Excluded((owner.as_str(), *id)),
                            Bound::Unbounded,
                        )),
                        None => table.range::<(&str, u64)>(..),
                    };
                    let rows: Vec<UpgradedRow> = range
                        .map_err(|e| self.io(e))?
                        .take(1024)
                        .map(|row| {
                            row.map(|(k, v)| {
                                let (owner, id) = k.value();
                                ((owner.to_owned(), id), upgrade_v1(v.value()))
                            })
                        })
                        .collect::<Result<_, _>>()
                        .map_err(|e| self.io(e))?;
                    let Some((last, _)) = rows.last() else { break };
                    let last = last.clone();
                    for ((owner, id), value) in rows {
                        count(&value);
                        if let Some(value) = value {
                            table
                                .insert((owner.as_str(), id), value.as_slice())
                                .map_err(|e| self.io(e))?;
                        }
                    }
                    from = Some(last);
                }
            }
            let mut meta = write.open_table(META).map_err(|e| self.io(e))?;
            meta.insert(FORMAT_KEY, u64::from(STORE_FORMAT))
                .map_err(|e| self.io(e))?;
        }
        write.commit().map_err(|e| self.io(e))?;
        tracing::info!(
            store = %self.path.display(),
            records = upgraded,
            left_unreadable = left,
            backup = %self.path.with_file_name(format!("{FILE_NAME}.format1.bak")).display(),
            "store upgraded from format 1 to {STORE_FORMAT}: every record now carries a checksum"
        );
        Ok(())
    }
}

/// A row of a table keyed by queue and copy id, read for the upgrade: its key, and its value
/// rewritten (`None`: left as it is).
type UpgradedRow = ((String, u64), Option<Vec<u8>>);

#[cfg(test)]
mod tests {
    use super::super::tables::{ENTRIES, FORMAT_KEY, META, NEXT_ID_KEY, QUEUES, RETAINED};
    use super::super::{message, RedbBackend, FILE_NAME};
    use crate::broker::store::encoding::{decode_entry, encode_entry, Clock};
    use crate::broker::store::StoreBackend;
    use redb::{Database, TableDefinition};

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

    #[test]
    fn a_format_1_store_is_kept_aside_then_upgraded_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FILE_NAME);
        let clock = Clock::now();
        let owner = "c:sub";
        let v2 = encode_entry(&message(b"kept across the upgrade"), None, clock);
        // What format 1 wrote: the same layout with format byte 1 and no checksum.
        let mut v1 = v2[..v2.len() - 4].to_vec();
        v1[0] = 1;
        {
            let db = Database::create(&file).unwrap();
            let w = db.begin_write().unwrap();
            {
                w.open_table(META).unwrap().insert(FORMAT_KEY, 1).unwrap();
                w.open_table(META).unwrap().insert(NEXT_ID_KEY, 9).unwrap();
                let mut entries = w.open_table(ENTRIES).unwrap();
                for id in 1..=3 {
                    entries.insert((owner, id), v1.as_slice()).unwrap();
                }
                // Not a format-1 record: left as it is, refused when read.
                entries.insert((owner, 4), [7u8, 7, 7].as_slice()).unwrap();
                w.open_table(QUEUES).unwrap().insert(owner, (4, 4)).unwrap();
                w.open_table(RETAINED)
                    .unwrap()
                    .insert("jobs/1", v1.as_slice())
                    .unwrap();
            }
            w.commit().unwrap();
        }
        let original = std::fs::read(&file).unwrap();
        let store = RedbBackend::open(dir.path(), true).unwrap();
        let backup = dir.path().join(format!("{FILE_NAME}.format1.bak"));
        assert_eq!(std::fs::read(&backup).unwrap(), original);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let rows = store.read_entries(owner, 0, 10).unwrap();
        assert_eq!(rows.len(), 4);
        for (_, value) in &rows[..3] {
            assert_eq!(value, &v2);
            let entry = decode_entry(value, clock).unwrap();
            assert_eq!(&entry.message.payload[..], b"kept across the upgrade");
        }
        assert!(decode_entry(&rows[3].1, clock).is_err());
        let recovered = store.recover().unwrap();
        assert_eq!(recovered.retained[0].1, v2);
        assert_eq!(recovered.next_id, 9);
        store.close();
        drop(store);
        // Upgraded once: the next open reads format 2 and keeps the copy as it was.
        let store = RedbBackend::open(dir.path(), true).unwrap();
        assert_eq!(store.read_entries(owner, 0, 10).unwrap(), rows);
        assert_eq!(std::fs::read(&backup).unwrap(), original);
    }
}
