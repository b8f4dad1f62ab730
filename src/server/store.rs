//! The durable store at start-up: opened where `[storage] dir` says (or none: memory only),
//! then what it holds put back into the broker (`broker/recover.rs`).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::store::redb_backend::RedbBackend;
use crate::broker::store::{Journal, Recovered, StoreBackend, StoreError, StoreSettings};
use crate::broker::BrokerState;
use crate::config::{Config, StorageConfig};

/// Opens the store of `config` off the async workers: its journal and what it holds, or none
/// when `[storage] dir` is empty.
pub(super) async fn open(config: &Config) -> io::Result<(Option<Arc<Journal>>, Option<Recovered>)> {
    let storage = config.storage.clone();
    let Some(dir) = storage.resolved_dir(config.base_dir.as_deref()) else {
        tracing::info!("storage: memory only ([storage] dir is empty); sessions, queues and retained messages do not survive a restart");
        return Ok((None, None));
    };
    let (journal, recovered) = tokio::task::spawn_blocking(move || open_dir(&dir, &storage))
        .await
        .map_err(|e| io::Error::other(format!("store opening task failed: {e}")))?
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok((Some(journal), Some(recovered)))
}

/// Puts back sessions, queues, groups and retained messages read from the store.
pub(super) fn recover(state: &Arc<BrokerState>, recovered: Recovered) -> io::Result<()> {
    state
        .recover(recovered)
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Opens the store in `dir` and reads back what start-up needs. Logs, in one line, where the
/// data goes.
fn open_dir(dir: &Path, storage: &StorageConfig) -> Result<(Arc<Journal>, Recovered), StoreError> {
    let opening = Instant::now();
    let backend = RedbBackend::open(dir, storage.sync)?;
    tracing::info!(
        store = %backend.describe(),
        // After a crash, redb checks and repairs the file before it opens: this grows with
        // the file's size, and is most of the time from start to listening.
        opened_ms = opening.elapsed().as_millis() as u64,
        sync = if storage.sync { "fsync per commit" } else { "OS-buffered (not safe against power loss)" },
        commit_interval_ms = storage.commit_interval_ms,
        "storage: durable; sessions, queues and retained messages are kept here"
    );
    let recovered = backend.recover()?;
    let settings = StoreSettings {
        commit_interval: Duration::from_millis(storage.commit_interval_ms),
        window_messages: storage.memory_window_messages,
        window_bytes: storage.memory_window_bytes,
    };
    let backend: Arc<dyn StoreBackend> = Arc::new(backend);
    let journal = Journal::start(backend, settings, recovered.next_id);
    Ok((journal, recovered))
}
