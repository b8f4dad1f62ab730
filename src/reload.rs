//! Hot reload of shared-subscription strategies: on SIGHUP, on `sharq reload`, and when the
//! config file or a plugin file it names changes on disk. Each reload also rebuilds the
//! authenticator from `[auth]`, re-reading the password file (which is not watched: it is
//! reloaded on SIGHUP and `sharq reload`, as mosquitto does). TLS certificates and keys are read
//! again at each reload too.
//!
//! Directories are watched rather than files, because editors and deploy tools replace a file
//! by writing a new one and renaming it over the old, which a watch on the old inode would miss.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::broker::BrokerState;
use crate::config::Config;
use crate::strategy::registry::resolve_path;

/// Events arriving within this window after the first one cause a single reload.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Why a reload happened, for the log line.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    Signal,
    FileChanged,
    /// `POST /api/v1/reload`.
    Api,
}

/// Why a reload changed nothing (the broker goes on with what it had).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the config is invalid: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("the strategies were refused: {0}")]
    Strategies(#[from] crate::strategy::StrategyError),
    #[error("the reload task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Reloads strategies whenever asked through `triggers`, and whenever a watched file changes.
/// Runs until the broker shuts down.
pub async fn run(
    broker: Arc<BrokerState>,
    config_path: PathBuf,
    mut triggers: mpsc::Receiver<Trigger>,
) {
    let (file_events, mut file_changes) = mpsc::channel::<()>(16);
    let mut watcher = watch(&broker.config, &config_path, file_events.clone());
    loop {
        let trigger = tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            trigger = triggers.recv() => match trigger {
                Some(trigger) => trigger,
                None => return,
            },
            Some(()) = file_changes.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while file_changes.try_recv().is_ok() {}
                Trigger::FileChanged
            }
        };
        if matches!(trigger, Trigger::Signal) {
            // The ACL file is read again on request only (SIGHUP, `sharq reload`).
            if let Err(e) = broker.reload_acl() {
                tracing::error!(error = %e, "ACL reload refused: the current rules stay");
            }
        }
        if let Ok(config) = reload_once(&broker, &config_path, trigger).await {
            // The set of plugin files may have changed: watch the new set.
            watcher = watch(&config, &config_path, file_events.clone());
        }
        let _ = &watcher;
    }
}

/// Reads the config again and applies its strategies. Returns the config if it was applied;
/// the error (also logged) if it was not.
pub async fn reload_once(
    broker: &Arc<BrokerState>,
    config_path: &Path,
    trigger: Trigger,
) -> Result<Config, ReloadError> {
    // Certificates first, and whatever becomes of the strategies: a renewed certificate must
    // not wait for a config edit to be valid.
    let certified = broker.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || certified.reload_certificates()).await {
        tracing::error!(error = %e, "certificate reload task failed");
    }
    tracing::info!(?trigger, config = %config_path.display(), "reloading shared-subscription strategies");
    let path = config_path.to_path_buf();
    let config = match tokio::task::spawn_blocking(move || Config::from_file(&path)).await {
        Ok(Ok(config)) => config,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reload refused: the config is invalid; the current strategies stay");
            return Err(e.into());
        }
        Err(e) => {
            tracing::error!(error = %e, "reload task failed");
            return Err(e.into());
        }
    };
    reload_auth(broker, &config).await;
    let state = broker.clone();
    let applied = config.clone();
    // Compiling components can take a while: keep it off the async workers.
    match tokio::task::spawn_blocking(move || state.reload_strategies(&applied)).await {
        Ok(Ok(swapped)) => {
            tracing::info!(groups_swapped = swapped, "strategies reloaded");
            Ok(config)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reload refused: the current strategies stay");
            Err(e.into())
        }
        Err(e) => {
            tracing::error!(error = %e, "reload task failed");
            Err(e.into())
        }
    }
}

/// Puts a new authenticator in force from `config`'s `[auth]`; one that fails to load (a
/// password file that cannot be read or parsed) leaves the current one, and the error names the
/// file and line. Independent of the strategies: either may fail without the other.
async fn reload_auth(broker: &Arc<BrokerState>, config: &Config) {
    let state = broker.clone();
    let config = config.clone();
    // Reading the file and deriving SCRAM keys for clear-text users: off the async workers.
    match tokio::task::spawn_blocking(move || state.reload_auth(&config)).await {
        Ok(Ok(users)) => tracing::info!(users, "authentication reloaded"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "authentication reload refused: the current users stay")
        }
        Err(e) => tracing::error!(error = %e, "authentication reload task failed"),
    }
}

/// Watches the directories holding the config file and every plugin file it names.
fn watch(
    config: &Config,
    config_path: &Path,
    events: mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    files.insert(absolute(config_path));
    for group in &config.shared.groups {
        if let Some(plugin) = &group.plugin {
            files.insert(absolute(&resolve_path(plugin, config.base_dir.as_deref())));
        }
    }
    let directories: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    let watched = files.clone();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|p| watched.contains(&absolute(p))) {
            let _ = events.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch files; reload with SIGHUP or `sharq reload` instead");
            return None;
        }
    };
    for directory in &directories {
        if let Err(e) = watcher.watch(directory, RecursiveMode::NonRecursive) {
            tracing::warn!(directory = %directory.display(), error = %e, "cannot watch directory");
        }
    }
    Some(watcher)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
