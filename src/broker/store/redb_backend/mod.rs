//! The store on redb: one file, `sharq.redb`, in the configured directory. redb commits are
//! atomic and crash-safe (copy-on-write B-trees, a checksummed header), so after `kill -9` the
//! file holds exactly the last committed batch.
//!
//! `storage.sync = false` swaps the file for one whose `sync_data` does nothing: commits still
//! reach the OS page cache in order, which a killed process cannot take back, but a power loss
//! can.
//!
//! One file per job: [`tables`] (the layout), [`files`] (the file on disk and its modes),
//! [`overlay`] (the check of an existing file before it is opened for writing), [`guarded`]
//! (redb panics as [`StoreError::Damaged`]), [`format`] (the format check and the format-1
//! upgrade), [`commit`] (applying a batch of ops) and [`recover`] (reading back).

mod commit;
mod files;
mod format;
mod guarded;
mod overlay;
mod recover;
mod tables;

use std::path::{Path, PathBuf};

use redb::backends::FileBackend;
use redb::{Database, ReadableDatabase};

use super::{Op, Recovered, StoreBackend, StoreError};
use files::{create_private_dir, keep_copy, narrow_mode, open_file, UnsyncedFile};
use guarded::guarded;

pub use tables::STORE_FORMAT;

/// The file name inside `storage.dir`.
pub const FILE_NAME: &str = "sharq.redb";

pub struct RedbBackend {
    /// Taken out at close, which releases the file for the next broker (of this process, too).
    db: parking_lot::RwLock<Option<Database>>,
    path: PathBuf,
}

impl std::fmt::Debug for RedbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbBackend")
            .field("path", &self.path)
            .finish()
    }
}

impl RedbBackend {
    /// Opens (or creates) the store in `dir`. A file that is not a redb database, one another
    /// program wrote, one of an unknown sharq format, or one whose pages redb cannot read is
    /// refused, naming the file, and left byte for byte as it was: it is checked first through
    /// [`overlay::Overlay`], which keeps every write redb makes in memory. A store of format 1
    /// (records without checksums) is copied to `sharq.redb.format1.bak`, then upgraded in one
    /// transaction.
    ///
    /// A new directory is made 0700 and a new file 0600 (Unix); an existing file open to group
    /// or others is narrowed to 0600, once it has passed the check.
    pub fn open(dir: &Path, sync: bool) -> Result<RedbBackend, StoreError> {
        let path = dir.join(FILE_NAME);
        let shown = path.display().to_string();
        let open_err = |reason: String| StoreError::Open {
            path: shown.clone(),
            reason,
        };
        create_private_dir(dir).map_err(|e| open_err(format!("cannot create directory: {e}")))?;
        let existing = std::fs::metadata(&path).ok().filter(|m| m.len() > 0);
        let found = match &existing {
            Some(_) => guarded(&path, || RedbBackend::check_untouched(&path))??,
            None => None,
        };
        if let Some(metadata) = &existing {
            narrow_mode(&path, metadata);
        }
        if found == Some(1) {
            keep_copy(
                &path,
                &path.with_file_name(format!("{FILE_NAME}.format1.bak")),
            )?;
        }
        guarded(&path, || {
            let file = open_file(&path).map_err(|e| open_err(e.to_string()))?;
            let file = FileBackend::new(file).map_err(|e| open_err(e.to_string()))?;
            let db = if sync {
                builder().create_with_backend(file)
            } else {
                builder().create_with_backend(UnsyncedFile(file))
            }
            .map_err(|e| redb_open_err(&shown, e))?;
            let backend = RedbBackend {
                db: parking_lot::RwLock::new(Some(db)),
                path: path.clone(),
            };
            backend.check_format()?;
            Ok(backend)
        })?
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
}

fn builder() -> redb::Builder {
    let mut builder = Database::builder();
    // Pages of the queues' heads and the indexes; payloads beyond the windows stay on disk.
    builder.set_cache_size(32 * 1024 * 1024);
    builder
}

fn redb_open_err(path: &str, e: redb::DatabaseError) -> StoreError {
    let reason = match e {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            "another process (a running sharq?) has it open".to_owned()
        }
        other => format!("not a sharq store, or damaged: {other}"),
    };
    StoreError::Open {
        path: path.to_owned(),
        reason,
    }
}

impl StoreBackend for RedbBackend {
    fn commit(&self, ops: &[Op], now_ms: u64, next_id: u64) -> Result<(), StoreError> {
        guarded(&self.path, || self.commit_unguarded(ops, now_ms, next_id))?
    }

    fn read_entries(
        &self,
        owner: &str,
        from_id: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        guarded(&self.path, || {
            self.read_entries_unguarded(owner, from_id, limit)
        })?
    }

    fn read_entry(&self, owner: &str, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        guarded(&self.path, || self.read_entry_unguarded(owner, id))?
    }

    fn recover(&self) -> Result<Recovered, StoreError> {
        guarded(&self.path, || self.recover_unguarded())?
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn close(&self) {
        self.db.write().take();
    }
}

/// A QoS 1 message on `jobs/1`, for the tests of the files below.
#[cfg(test)]
fn message(payload: &'static [u8]) -> std::sync::Arc<crate::broker::message::Message> {
    crate::broker::message::Message::from_publish(
        crate::packet::Publish {
            dup: false,
            qos: crate::packet::QoS::AtLeastOnce,
            retain: false,
            topic: bytestring::ByteString::from("jobs/1"),
            packet_id: Some(1),
            payload: bytes::Bytes::from_static(payload),
            properties: Default::default(),
        },
        bytestring::ByteString::from("jobs/1"),
        None,
        None,
    )
}
