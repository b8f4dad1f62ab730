//! Hot reload of shared-subscription strategies: on SIGHUP, on `sharq reload`, and when the
//! config file or a plugin file it names changes on disk. Each reload also rebuilds the
//! authenticator from `[auth]`, re-reading the password file (which is not watched: it is
//! reloaded on SIGHUP and `sharq reload`, as mosquitto does). TLS certificates and keys are read
//! again at each reload too.
//!
//! The reload paths themselves are `BrokerState` methods defined here (`reload_auth`,
//! `reload_certificates`, `reload_acl`, `reload_strategies`): whoever holds the state (this
//! module's loop, the admin API, tests) reloads through it, and rebuilding from files and a new
//! `Config` stays out of `broker/`.
//!
//! Directories are watched rather than files, because editors and deploy tools replace a file
//! by writing a new one and renaming it over the old, which a watch on the old inode would miss.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::broker::acl::{Acl, AclError};
use crate::broker::{AuthError, BrokerState, ConfigAuthenticator};
use crate::config::Config;
use crate::strategy::registry::resolve_path;
use crate::strategy::StrategyError;
use crate::tls::TlsError;

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

impl BrokerState {
    /// Rebuilds the built-in authenticator from `config`'s `[auth]` (re-reading its password
    /// file) and puts it in force. On error the current one stays. Slow: call it off the async
    /// workers.
    pub fn reload_auth(&self, config: &Config) -> Result<usize, AuthError> {
        let authenticator =
            ConfigAuthenticator::load(&config.resolved_auth(), config.base_dir.as_deref())?;
        let users = authenticator.user_count();
        self.set_authenticator(Arc::new(authenticator));
        Ok(users)
    }

    /// Reads every TLS listener's certificate, key and client CA files again (the paths of
    /// the config the broker started with). New handshakes use what was read; established
    /// connections keep theirs. A listener whose files fail keeps its current settings, and
    /// the error (naming the key and file) is logged. Returns how many were reloaded and the
    /// errors. Blocking: reads files.
    pub fn reload_certificates(&self) -> (usize, Vec<TlsError>) {
        let mut reloaded = 0;
        let mut errors = Vec::new();
        for tls in self.certificates() {
            match tls.reload() {
                Ok(()) => {
                    reloaded += 1;
                    tracing::info!(listener = %tls.files.key_prefix, cert = %tls.files.cert.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    tracing::error!(listener = %tls.files.key_prefix, error = %e, "TLS certificate reload failed; the current certificate stays");
                    errors.push(e);
                }
            }
        }
        (reloaded, errors)
    }

    /// Reads the ACL file again (SIGHUP, `sharq reload`); a file that does not parse leaves
    /// the rules in force unchanged.
    pub fn reload_acl(&self) -> Result<(), AclError> {
        let Some(path) = self.config.acl_path() else {
            return Ok(());
        };
        let acl = Acl::load(&path)?;
        self.acl.replace(Some(acl));
        tracing::info!(file = %path.display(), "ACL reloaded");
        Ok(())
    }

    /// Applies a new `[shared]` strategy configuration while messages flow: every plugin is
    /// compiled and initialised first; if any fails, nothing changes and the error names it.
    /// Then each live group whose strategy changed gets a new instance, membership replayed,
    /// swapped in atomically under the group's lock. Blocking: call it off the async workers.
    pub fn reload_strategies(&self, config: &Config) -> Result<usize, StrategyError> {
        self.strategies
            .reload(&config.shared, config.base_dir.as_deref())?;
        let groups = self.router.groups();
        for group in &groups {
            if group.set_settings(self.group_settings(&group.name, &group.filter)) {
                tracing::info!(group = %group.name, filter = %group.filter, settings = %group.settings().to_json(), "reload: work-queue settings changed");
            }
        }
        Ok(groups.iter().filter(|g| self.refresh_strategy(g)).count())
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
