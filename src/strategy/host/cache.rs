//! The compiled-plugin cache on disk: compiled components kept across restarts, keyed by the
//! component's content hash and the engine's compatibility hash, in a directory only the
//! broker's user can write (its files are loaded as native code).

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use wasmtime::component::Component;

use super::WasmHost;
use crate::strategy::StrategyError;

/// Refuses an existing compiled-plugin cache directory that someone other than this process's
/// user could have put files into: its files are loaded as native code, unchecked beyond
/// wasmtime's version stamp. A missing directory is fine: it is made 0700 when first written.
pub fn check_cache_dir(dir: &std::path::Path) -> Result<(), StrategyError> {
    let refuse = |reason: String| StrategyError::UnsafeCacheDir {
        path: dir.display().to_string(),
        reason,
    };
    let metadata = match std::fs::metadata(dir) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(refuse(format!("cannot inspect it: {e}"))),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if let Some(reason) =
            cache_dir_problem(metadata.is_dir(), metadata.mode(), metadata.uid(), me)
        {
            return Err(refuse(reason));
        }
    }
    #[cfg(not(unix))]
    if !metadata.is_dir() {
        return Err(refuse("it is not a directory".to_owned()));
    }
    Ok(())
}

/// Why a cache directory of `mode` owned by `owner` is unsafe for user `me`, if it is.
fn cache_dir_problem(is_dir: bool, mode: u32, owner: u32, me: u32) -> Option<String> {
    if !is_dir {
        Some("it is not a directory".to_owned())
    } else if owner != me {
        Some(format!(
            "it is owned by uid {owner}, not by the user sharq runs as (uid {me})"
        ))
    } else if mode & 0o022 != 0 {
        Some(format!(
            "it is writable by group or others (mode {:o})",
            mode & 0o7777
        ))
    } else {
        None
    }
}

/// Creates `dir` (and its parents) readable only by the broker's user: a compiled component is
/// native code the broker will run, so no one else may put files there.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

impl WasmHost {
    /// The cache file for a component: its content hash, and the engine's compatibility hash so
    /// that another wasmtime version or configuration never reads it.
    fn cache_path(&self, digest: &[u8; 32]) -> Option<PathBuf> {
        let dir = self.inner.disk_cache.as_ref()?;
        let mut engine_hasher = std::collections::hash_map::DefaultHasher::new();
        self.inner
            .engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hasher);
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Some(dir.join(format!("{name}-{:016x}.cwasm", engine_hasher.finish())))
    }

    pub(super) fn load_cached(&self, digest: &[u8; 32]) -> Option<Component> {
        let path = self.cache_path(digest)?;
        if !path.exists() {
            return None;
        }
        // SAFETY: the file is one this host serialised into the broker's private cache
        // directory under the component's content hash; wasmtime also checks that it was made
        // by a compatible engine and refuses it otherwise.
        match unsafe { Component::deserialize_file(&self.inner.engine, &path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %format!("{e:#}"), "ignoring unusable compiled-plugin cache file");
                None
            }
        }
    }

    pub(super) fn store_cached(&self, digest: &[u8; 32], component: &Component) {
        let Some(path) = self.cache_path(digest) else {
            return;
        };
        let written = component
            .serialize()
            .map_err(|e| format!("{e:#}"))
            .and_then(|bytes| {
                if let Some(dir) = path.parent() {
                    create_private_dir(dir).map_err(|e| e.to_string())?;
                }
                // Write then rename, so a concurrent reader never sees half a file. The partial
                // file's name is unique to this writer: brokers (or hosts in one process) that
                // compile the same component at once must not write into one file together.
                static WRITER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let partial = path.with_extension(format!(
                    "{}-{}.partial",
                    std::process::id(),
                    WRITER.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&partial, bytes).map_err(|e| e.to_string())?;
                std::fs::rename(&partial, &path).map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "cannot write compiled-plugin cache file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::SandboxLimits;

    const LIMITS: SandboxLimits = SandboxLimits {
        memory_bytes: 16 << 20,
        deadline_ticks: 1000,
        init_deadline_ticks: 1000,
    };

    #[test]
    fn disk_cache_survives_a_new_host() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = crate::strategy::builtin::component("round_robin").unwrap();
        let first = WasmHost::with_disk_cache(LIMITS, Some(dir.path().to_path_buf())).unwrap();
        first.load("round_robin", bytes).unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "one compiled component cached");

        // A fresh host (a restart) loads the cached file and it works.
        let second = WasmHost::with_disk_cache(LIMITS, Some(dir.path().to_path_buf())).unwrap();
        let plugin = second.load("round_robin", bytes).unwrap();
        let mut instance = second.instantiate(&plugin, "g", &[]).unwrap();
        instance
            .member_joined(&crate::strategy::MemberInfo {
                id: 7,
                client_id: "m".into(),
                weight: 1,
                subscribed_at_ms: 0,
                user_properties: Vec::new(),
            })
            .unwrap();
        instance
            .member_load(
                7,
                crate::strategy::MemberLoad {
                    inflight: 0,
                    capacity: 10,
                    online: true,
                },
            )
            .unwrap();
        let view = crate::strategy::MessageView {
            topic: "t",
            publisher: "p",
            payload: b"",
            topic_hash: 1,
            key_hash: 1,
            publisher_hash: 2,
            qos: 1,
            retain: false,
            user_properties: &[],
            content_type: None,
        };
        assert_eq!(instance.select(&view).unwrap(), Some(7));
    }

    #[test]
    fn a_cache_dir_others_can_write_or_another_user_owns_is_refused() {
        assert_eq!(cache_dir_problem(true, 0o40700, 1000, 1000), None);
        assert_eq!(cache_dir_problem(true, 0o40755, 1000, 1000), None);
        let group = cache_dir_problem(true, 0o40775, 1000, 1000).unwrap();
        assert!(
            group.contains("writable by group or others (mode 775)"),
            "{group}"
        );
        assert!(cache_dir_problem(true, 0o41777, 1000, 1000).is_some());
        let owner = cache_dir_problem(true, 0o40700, 0, 1000).unwrap();
        assert!(owner.contains("owned by uid 0"), "{owner}");
        assert!(cache_dir_problem(false, 0o100600, 1000, 1000).is_some());

        let dir = tempfile::tempdir().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
            let err = WasmHost::with_disk_cache(LIMITS, Some(dir.path().to_path_buf()))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("shared.plugin_cache_dir") && err.contains("mode 777"),
                "{err}"
            );
        }
        // Not there yet: made private when first written.
        assert!(WasmHost::with_disk_cache(LIMITS, Some(dir.path().join("new"))).is_ok());
    }

    #[test]
    fn corrupt_cache_file_is_ignored_and_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = crate::strategy::builtin::component("round_robin").unwrap();
        let host = WasmHost::with_disk_cache(LIMITS, Some(dir.path().to_path_buf())).unwrap();
        host.load("round_robin", bytes).unwrap();
        let cached = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::write(&cached, b"not a compiled component").unwrap();
        let fresh = WasmHost::with_disk_cache(LIMITS, Some(dir.path().to_path_buf())).unwrap();
        assert!(fresh.load("round_robin", bytes).is_ok());
    }
}
