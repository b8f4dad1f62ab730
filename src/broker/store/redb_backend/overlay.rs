//! The check of an existing store file before it is opened for writing: redb opens it over an
//! [`Overlay`] that keeps every write in memory, so a file refused is left byte for byte.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::ops::Bound;
use std::path::Path;

use redb::backends::FileBackend;
use redb::{BackendError, ReadableTable, StorageBackend};

use super::tables::{ENTRIES, STORE_FORMAT};
use super::{builder, redb_open_err, RedbBackend};
use crate::broker::store::StoreError;

impl RedbBackend {
    /// The sharq format of the file at `path` (`None`: a redb file with no tables), read
    /// through an [`Overlay`] so that nothing reaches the file: the open itself, its repair
    /// after a crash, and reading the table tree and the small tables the way start-up does.
    /// The store's lock is taken (and released) as a real open would.
    pub(super) fn check_untouched(path: &Path) -> Result<Option<u64>, StoreError> {
        let shown = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StoreError::Open {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        let overlay = Overlay::new(file).map_err(|e| StoreError::Open {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let db = builder()
            .create_with_backend(overlay)
            .map_err(|e| redb_open_err(&shown, e))?;
        let probe = RedbBackend {
            db: parking_lot::RwLock::new(Some(db)),
            path: path.to_owned(),
        };
        // redb reporting its pages corrupt is the same finding as redb panicking on them.
        let damaged = |e: StoreError| match e {
            StoreError::Io { path, reason } => StoreError::Damaged { path, reason },
            other => other,
        };
        let found = probe.read_format().map_err(damaged)?;
        if found == Some(u64::from(STORE_FORMAT)) || found == Some(1) {
            probe.recover_unguarded().map_err(damaged)?;
            let read = probe.begin_read().map_err(damaged)?;
            match read.open_table(ENTRIES) {
                Ok(entries) => {
                    entries.first().map_err(|e| damaged(probe.io(e)))?;
                    entries.last().map_err(|e| damaged(probe.io(e)))?;
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(damaged(probe.io(e))),
            }
        }
        Ok(found)
    }
}

/// The file as redb sees it while writing to it, without a byte reaching the file: writes land
/// in memory, in blocks, and reads see them over the file. The check before an open runs on
/// this, so that a file it refuses is left exactly as it was (a plain open already rewrites a
/// header byte, and repairs a file a crash left).
#[derive(Debug)]
struct Overlay {
    file: FileBackend,
    state: parking_lot::Mutex<OverlayState>,
}

#[derive(Debug)]
struct OverlayState {
    /// The length redb set.
    len: u64,
    /// Bytes of the file beyond this were cut off by a `set_len` and read as zeros.
    file_len: u64,
    blocks: HashMap<u64, Box<[u8]>>,
}

const OVERLAY_BLOCK: u64 = 4096;

impl Overlay {
    fn new(file: File) -> std::io::Result<Overlay> {
        let len = file.metadata()?.len();
        let file = FileBackend::new(file).map_err(std::io::Error::other)?;
        Ok(Overlay {
            file,
            state: parking_lot::Mutex::new(OverlayState {
                len,
                file_len: len,
                blocks: HashMap::new(),
            }),
        })
    }

    /// `out.len()` bytes of the file at `offset`, zeros past its (visible) end.
    fn read_file(&self, file_len: u64, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        out.fill(0);
        if offset < file_len {
            let n = usize::try_from(file_len - offset).map_or(out.len(), |n| n.min(out.len()));
            self.file.read(offset, &mut out[..n])?;
        }
        Ok(())
    }
}

impl StorageBackend for Overlay {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.state.lock().len)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let state = self.state.lock();
        let mut done = 0;
        while done < out.len() {
            let at = offset + done as u64;
            let within = (at % OVERLAY_BLOCK) as usize;
            let n = (OVERLAY_BLOCK as usize - within).min(out.len() - done);
            let part = &mut out[done..done + n];
            match state.blocks.get(&(at / OVERLAY_BLOCK)) {
                Some(block) => part.copy_from_slice(&block[within..within + n]),
                None => self.read_file(state.file_len, at, part)?,
            }
            done += n;
        }
        Ok(())
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut state = self.state.lock();
        state.len = len;
        state.file_len = state.file_len.min(len);
        let cut = len.div_ceil(OVERLAY_BLOCK);
        state.blocks.retain(|&index, _| index < cut);
        if let Some(block) = state.blocks.get_mut(&(len / OVERLAY_BLOCK)) {
            block[(len % OVERLAY_BLOCK) as usize..].fill(0);
        }
        Ok(())
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut state = self.state.lock();
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let index = at / OVERLAY_BLOCK;
            let within = (at % OVERLAY_BLOCK) as usize;
            let n = (OVERLAY_BLOCK as usize - within).min(data.len() - done);
            if !state.blocks.contains_key(&index) {
                let mut block = vec![0u8; OVERLAY_BLOCK as usize].into_boxed_slice();
                self.read_file(state.file_len, index * OVERLAY_BLOCK, &mut block)?;
                state.blocks.insert(index, block);
            }
            if let Some(block) = state.blocks.get_mut(&index) {
                block[within..within + n].copy_from_slice(&data[done..done + n]);
            }
            done += n;
        }
        let end = offset + data.len() as u64;
        state.len = state.len.max(end);
        Ok(())
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.file.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{message, RedbBackend, FILE_NAME};
    use crate::broker::store::encoding::{encode_entry, Clock};
    use crate::broker::store::{Op, StoreBackend};
    use std::path::Path;
    use std::sync::Arc;

    /// Overwrites every page holding the names of the store's tables (the table tree: the
    /// live copy and the older one of the other commit slot).
    fn damage_table_tree(file: &Path) -> usize {
        let mut bytes = std::fs::read(file).unwrap();
        let mut damaged = 0;
        for page in bytes.chunks_mut(4096).skip(1) {
            let holds = |name: &[u8]| page.windows(name.len()).any(|w| w == name);
            if holds(b"declared_groups") && holds(b"sharq_meta") {
                for (i, b) in page.iter_mut().enumerate() {
                    *b = (i as u8).wrapping_mul(31).wrapping_add(7);
                }
                damaged += 1;
            }
        }
        std::fs::write(file, bytes).unwrap();
        damaged
    }

    #[test]
    fn a_damaged_table_tree_is_refused_and_the_file_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let owner: Arc<str> = Arc::from("g:w/jobs");
        {
            let store = RedbBackend::open(dir.path(), true).unwrap();
            let value = encode_entry(&message(b"one"), None, Clock::now());
            let put = Op::PutEntry {
                owner: owner.clone(),
                id: 1,
                value,
            };
            store.commit(std::slice::from_ref(&put), 1, 2).unwrap();
            store.commit(&[put], 2, 2).unwrap();
        }
        let file = dir.path().join(FILE_NAME);
        assert!(damage_table_tree(&file) > 0, "the table tree was found");
        let before = std::fs::read(&file).unwrap();
        let err = RedbBackend::open(dir.path(), true).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&file.display().to_string()), "{text}");
        assert!(text.contains("damaged"), "{text}");
        assert_eq!(
            std::fs::read(&file).unwrap(),
            before,
            "the refused file changed"
        );
    }
}
