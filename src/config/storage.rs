//! `[storage]`: where sessions, queues and retained messages are kept across restarts.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Invalid;

/// `[storage]`: where sessions, queues and retained messages are kept across restarts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The store's directory, relative to the config file (to the working directory for the
    /// embedded default); `""` keeps everything in memory only.
    pub dir: PathBuf,
    /// How long writes from all connections gather into one transaction. Acknowledgements to
    /// publishers wait for the commit that holds their message.
    pub commit_interval_ms: u64,
    /// `true`: every commit is flushed to the disk (fsync) before anything in it is
    /// acknowledged. `false`: commits are left in the OS's buffers; they survive the broker
    /// being killed, but not a power loss or a kernel crash.
    pub sync: bool,
    /// Messages one queue (a group's, or an offline session's) keeps in memory; the rest waits
    /// on disk and is read back as the queue drains.
    pub memory_window_messages: usize,
    /// Whole-message bytes one queue keeps in memory, likewise.
    pub memory_window_bytes: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: PathBuf::new(),
            commit_interval_ms: 2,
            sync: true,
            memory_window_messages: 1000,
            memory_window_bytes: 4 * 1024 * 1024,
        }
    }
}

impl StorageConfig {
    /// The store's directory, resolved against the config file's; none for memory only.
    pub fn resolved_dir(&self, base_dir: Option<&Path>) -> Option<PathBuf> {
        if self.dir.as_os_str().is_empty() {
            return None;
        }
        Some(match base_dir {
            Some(base) if self.dir.is_relative() => base.join(&self.dir),
            _ => self.dir.clone(),
        })
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.commit_interval_ms > 1000 {
            return Err(Invalid::new(
                "storage.commit_interval_ms",
                "must be at most 1000 (acknowledgements wait for the commit)",
            ));
        }
        if self.memory_window_messages < 2 {
            return Err(Invalid::new(
                "storage.memory_window_messages",
                "must be at least 2",
            ));
        }
        if self.memory_window_bytes == 0 {
            return Err(Invalid::new(
                "storage.memory_window_bytes",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
