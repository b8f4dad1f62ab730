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

use super::encoding::{entry_weight, upgrade_v1};
use super::{Op, QueueStats, RecordKind, Recovered, StoreBackend, StoreError};

/// The layout of the tables below. A file with another number is refused, never misread.
///
/// 1: records without checksums (upgraded on open, see [`RedbBackend::open`]).
/// 2: every record ends with its CRC32C ([`super::encoding`]).
pub const STORE_FORMAT: u32 = 2;

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
/// Records that failed their checksum or layout when read, moved here byte for byte (by table,
/// queue or client or topic, and copy id): never read as data, kept for inspection.
const DAMAGED: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("damaged_records");

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
    /// Opens (or creates) the store in `dir`. A file that is not a redb database, one another
    /// program wrote, one of an unknown sharq format, or one whose pages redb cannot read is
    /// refused, naming the file, and left byte for byte as it was: it is checked first through
    /// [`Overlay`], which keeps every write redb makes in memory. A store of format 1 (records
    /// without checksums) is copied to `sharq.redb.format1.bak`, then upgraded in one
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

    /// The sharq format of the file at `path` (`None`: a redb file with no tables), read
    /// through an [`Overlay`] so that nothing reaches the file: the open itself, its repair
    /// after a crash, and reading the table tree and the small tables the way start-up does.
    /// The store's lock is taken (and released) as a real open would.
    fn check_untouched(path: &Path) -> Result<Option<u64>, StoreError> {
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

    fn format_err(&self, found: String) -> StoreError {
        StoreError::Format {
            path: self.path.display().to_string(),
            found,
            expected: STORE_FORMAT,
        }
    }

    /// The format recorded in the file: `None` if it has no tables at all (a new file); an
    /// error if it has tables but no format (another program's file).
    fn read_format(&self) -> Result<Option<u64>, StoreError> {
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
    fn check_format(&self) -> Result<(), StoreError> {
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
    fn upgrade_from_v1(&self) -> Result<(), StoreError> {
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

fn open_file(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The store holds every queued message: an existing file readable by group or others (made by
/// an older sharq, or copied in) is narrowed to 0600.
fn narrow_mode(path: &Path, metadata: &std::fs::Metadata) {
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
fn keep_copy(from: &Path, to: &Path) -> Result<(), StoreError> {
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

thread_local! {
    /// Set while this thread runs [`guarded`]: the panic hook keeps the message here instead
    /// of printing it, and the caller turns it into a [`StoreError::Damaged`].
    static GUARDED_PANIC: std::cell::RefCell<Option<Option<String>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f`, turning a panic inside it (redb panics on pages it cannot parse) into a
/// [`StoreError::Damaged`] naming `path`, without the panic being printed as a crash.
fn guarded<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T, StoreError> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let kept = GUARDED_PANIC.with(|slot| match &mut *slot.borrow_mut() {
                Some(message) => {
                    let payload = info.payload();
                    let what = payload
                        .downcast_ref::<&str>()
                        .copied()
                        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                        .unwrap_or("no message");
                    *message = Some(match info.location() {
                        Some(at) => {
                            // From the crate's name on: the registry's path says nothing.
                            let file = at.file();
                            let file = file.find("/redb-").map_or(file, |i| &file[i + 1..]);
                            format!("{what}; at {file}:{}", at.line())
                        }
                        None => what.to_owned(),
                    });
                    true
                }
                None => false,
            });
            if !kept {
                previous(info);
            }
        }));
    });
    // `Some(None)`: guarded, no panic yet. Whatever was there (a guarded caller further out)
    // is put back afterwards.
    let outer = GUARDED_PANIC.with(|slot| slot.borrow_mut().replace(None));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let message = GUARDED_PANIC.with(|slot| std::mem::replace(&mut *slot.borrow_mut(), outer));
    result.map_err(|payload| {
        let reason = message.flatten().unwrap_or_else(|| {
            payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned())
        });
        StoreError::Damaged {
            path: path.display().to_string(),
            reason: format!("redb could not read its own pages: {reason}"),
        }
    })
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

/// The trait's work, unguarded: [`StoreBackend`] runs each under [`guarded`], so that a page
/// redb cannot parse is an error of the call, not a dead committer thread.
impl RedbBackend {
    fn commit_unguarded(&self, ops: &[Op], now_ms: u64, next_id: u64) -> Result<(), StoreError> {
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
                    Op::Quarantine { kind, name, id } => {
                        let key = (&**name, *id);
                        let value = match kind {
                            RecordKind::Session => sessions
                                .remove(&**name)
                                .map_err(|e| self.io(e))?
                                .map(|v| v.value().to_vec()),
                            RecordKind::Entry => {
                                let old = entries
                                    .remove(key)
                                    .map_err(|e| self.io(e))?
                                    .map(|v| v.value().to_vec());
                                // An exchange whose message cannot be read cannot resume.
                                inflight.remove(key).map_err(|e| self.io(e))?;
                                if let Some(old) = &old {
                                    let s = stats_of!(name);
                                    s.count = s.count.saturating_sub(1);
                                    s.bytes = s
                                        .bytes
                                        .saturating_sub(entry_weight(old).map_or(0, u64::from));
                                }
                                old
                            }
                            RecordKind::Inflight => inflight
                                .remove(key)
                                .map_err(|e| self.io(e))?
                                .map(|v| v.value().to_vec()),
                            RecordKind::Retained => retained
                                .remove(&**name)
                                .map_err(|e| self.io(e))?
                                .map(|v| v.value().to_vec()),
                        };
                        if let Some(value) = value {
                            write
                                .open_table(DAMAGED)
                                .map_err(|e| self.io(e))?
                                .insert((kind.table(), &**name, *id), value.as_slice())
                                .map_err(|e| self.io(e))?;
                        }
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

    fn read_entries_unguarded(
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

    fn read_entry_unguarded(&self, owner: &str, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
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

    fn recover_unguarded(&self) -> Result<Recovered, StoreError> {
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

    use crate::broker::store::encoding::{decode_entry, encode_entry, Clock};

    fn message(payload: &'static [u8]) -> Arc<crate::broker::message::Message> {
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

    #[test]
    fn a_quarantined_entry_leaves_its_queue_and_is_kept_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbBackend::open(dir.path(), true).unwrap();
        let owner: Arc<str> = Arc::from("g:w/jobs");
        let mut ops: Vec<Op> = (1..=3)
            .map(|id| Op::PutEntry {
                owner: owner.clone(),
                id,
                value: entry(10),
            })
            .collect();
        ops.push(Op::PutInflight {
            owner: owner.clone(),
            id: 2,
            value: vec![1],
        });
        store.commit(&ops, 1, 4).unwrap();
        store
            .commit(
                &[Op::Quarantine {
                    kind: RecordKind::Entry,
                    name: owner.clone(),
                    id: 2,
                }],
                2,
                4,
            )
            .unwrap();
        let ids: Vec<u64> = store
            .read_entries(&owner, 0, 10)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![1, 3]);
        let recovered = store.recover().unwrap();
        assert!(recovered.inflight.is_empty());
        assert_eq!(
            recovered.queues,
            vec![(
                owner.to_string(),
                QueueStats {
                    count: 2,
                    bytes: 20
                }
            )]
        );
        let read = store.begin_read().unwrap();
        let damaged = read.open_table(DAMAGED).unwrap();
        let kept = damaged.get(("entries", &*owner, 2)).unwrap().unwrap();
        assert_eq!(kept.value(), entry(10).as_slice());
    }

    #[cfg(unix)]
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
