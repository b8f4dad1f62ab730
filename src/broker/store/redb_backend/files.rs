//! The store file on disk: a private directory and file (0700, 0600), a file readable by
//! others narrowed, the copy kept before an upgrade, and the file without flushes of
//! `storage.sync = false`.

use std::fs::{File, OpenOptions};
use std::ops::Bound;
use std::path::Path;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

use crate::broker::store::StoreError;

/// A file whose flushes are left to the OS (`storage.sync = false`).
#[derive(Debug)]
pub(super) struct UnsyncedFile(pub(super) FileBackend);

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

pub(super) fn open_file(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

pub(super) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The store holds every queued message: an existing file readable by group or others (made by
/// an older sharq, or copied in) is narrowed to 0600.
pub(super) fn narrow_mode(path: &Path, metadata: &std::fs::Metadata) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
                Ok(()) => {
                    tracing::warn!(store = %path.display(), was = %format!("{mode:o}"), "store file was open to group or others; now 0600")
                }
                Err(e) => {
                    tracing::warn!(store = %path.display(), mode = %format!("{mode:o}"), error = %e, "store file is open to group or others and cannot be narrowed")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, metadata);
}

/// Copies the store before an upgrade rewrites it; the copy is private (0600) and on disk
/// before the upgrade begins.
pub(super) fn keep_copy(from: &Path, to: &Path) -> Result<(), StoreError> {
    let err = |e: std::io::Error| StoreError::Io {
        path: to.display().to_string(),
        reason: format!("cannot keep a copy of the store before upgrading it: {e}"),
    };
    let mut source = File::open(from).map_err(err)?;
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut copy = options.open(to).map_err(err)?;
    std::io::copy(&mut source, &mut copy).map_err(err)?;
    copy.sync_all().map_err(err)
}

#[cfg(all(test, unix))]
mod tests {
    use super::super::{RedbBackend, FILE_NAME};
    use std::path::Path;

    #[test]
    fn the_store_directory_and_file_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("data").join("store");
        drop(RedbBackend::open(&dir, true).unwrap());
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&top.path().join("data")), 0o700);
        let file = dir.join(FILE_NAME);
        assert_eq!(mode(&file), 0o600);
        // A file an older sharq (or a copy) left readable by others is narrowed.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(RedbBackend::open(&dir, false).unwrap());
        assert_eq!(mode(&file), 0o600);
    }
}
