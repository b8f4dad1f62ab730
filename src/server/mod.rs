//! Start-up and shutdown: a `Config` becomes a serving broker. In order: the authenticator and
//! the ACL, the TLS certificates, the strategies, the store; then the broker state, the
//! `[[shared.declared]]` groups and recovery (`store.rs`); then every listener bound before any
//! accepts (`listeners.rs`); then the background tasks (`tasks.rs`) and the HTTP server. A
//! failure at any step leaves nothing half-started. Reloading parts of a running broker from a
//! new `Config` is `crate::reload`'s job.
//!
//! This is the layer that knows every other: it depends on `broker` and `http`, and neither
//! depends on it.

mod listeners;
mod store;
mod tasks;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::acl::Acl;
use crate::broker::{
    password_file_path, Authenticator, BrokerParts, BrokerState, ConfigAuthenticator,
};
use crate::config::Config;
use crate::http::HttpServer;
use crate::strategy::StrategyRegistry;

/// A broker that is serving: its bound addresses and the means to stop it.
#[derive(Debug)]
pub struct Broker {
    state: Arc<BrokerState>,
    local_addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    ws_addrs: Vec<SocketAddr>,
    /// The HTTP server of `[http] listen`, if one is configured.
    http: Option<HttpServer>,
}

impl Broker {
    /// Opens the store (if `[storage] dir` is set) and puts back what it holds, then binds every
    /// configured listener and starts serving in the background of the current tokio runtime.
    pub async fn start(config: Config) -> io::Result<Broker> {
        let authenticator = load_authenticator(&config).await?;
        let acl = load_acl(&config)?;
        // Certificates first: a missing or bad file fails the start before anything is opened.
        let config_for_tls = config.clone();
        let (secured, certificates) =
            tokio::task::spawn_blocking(move || listeners::secured(&config_for_tls))
                .await
                .map_err(|e| io::Error::other(format!("TLS loading task failed: {e}")))?
                .map_err(|e| io::Error::other(e.to_string()))?;
        let strategies = load_strategies(&config).await?;
        let (journal, recovered) = store::open(&config).await?;
        let state = BrokerState::new(BrokerParts {
            config,
            authenticator,
            acl,
            strategies,
            journal,
            certificates,
        });
        // Before the listeners open, so the first message published already finds them; off
        // the async workers, as making a group's strategy instance can take seconds.
        let declaring = state.clone();
        tokio::task::spawn_blocking(move || declare_configured_groups(&declaring))
            .await
            .map_err(|e| io::Error::other(format!("declaring shared groups failed: {e}")))??;
        if let Some(recovered) = recovered {
            store::recover(&state, recovered)?;
        }
        let bound = listeners::bind(&state, secured).await?;
        let addresses = listeners::serve(&state, bound)?;
        tasks::spawn(&state);
        let http = crate::http::start(state.clone()).await?;
        Ok(Broker {
            state,
            local_addrs: addresses.tcp,
            tls_addrs: addresses.tls,
            ws_addrs: addresses.ws,
            http,
        })
    }

    /// The bound addresses of `server.listeners` (plain TCP), in config order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The bound addresses of `server.tls_listeners`, in config order.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// The bound addresses of `server.ws_listeners` (ws and wss), in config order.
    pub fn ws_addrs(&self) -> &[SocketAddr] {
        &self.ws_addrs
    }

    /// The HTTP server (`[http] listen`), with its bound address and token.
    pub fn http(&self) -> Option<&HttpServer> {
        self.http.as_ref()
    }

    pub fn state(&self) -> &Arc<BrokerState> {
        &self.state
    }

    /// Stops accepting, sends DISCONNECT 0x8B (Server shutting down) to v5 clients, and waits
    /// (up to `grace`) for every connection to close.
    pub async fn shutdown(&self, grace: Duration) {
        self.state.shutdown.cancel();
        self.state.tasks.close();
        if tokio::time::timeout(grace, self.state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within the shutdown grace period");
        }
        if let Some(journal) = self.state.journal.clone() {
            // The last batch (sessions going offline, their wills) is written before exit.
            let _ = tokio::task::spawn_blocking(move || journal.close()).await;
        }
    }
}

/// The built-in authenticator of `[auth]` (users and password file).
async fn load_authenticator(config: &Config) -> io::Result<Arc<dyn Authenticator>> {
    if !config.auth.users.is_empty() {
        tracing::warn!(
            users = config.auth.users.len(),
            "[auth] users holds clear-text passwords; prefer a password_file made with `sharq passwd`"
        );
    }
    // Hashing (SCRAM keys of clear-text users) and file I/O: off the async workers.
    let auth_config = config.resolved_auth();
    let auth_base = config.base_dir.clone();
    let authenticator = tokio::task::spawn_blocking(move || {
        ConfigAuthenticator::load(&auth_config, auth_base.as_deref())
    })
    .await
    .map_err(|e| io::Error::other(format!("authenticator loading task failed: {e}")))?
    .map_err(|e| io::Error::other(e.to_string()))?;
    if let Some(path) = password_file_path(&config.auth, config.base_dir.as_deref()) {
        tracing::info!(file = %path.display(), users = authenticator.user_count(), "password file loaded");
    }
    Ok(Arc::new(authenticator))
}

/// The rules of `[auth] acl_file`, if it is set.
fn load_acl(config: &Config) -> io::Result<Option<Acl>> {
    match config.acl_path() {
        Some(path) => {
            let acl = Acl::load(&path).map_err(|e| io::Error::other(e.to_string()))?;
            tracing::info!(file = %path.display(), "ACL loaded: what it does not grant is refused");
            Ok(Some(acl))
        }
        None => Ok(None),
    }
}

/// Every strategy `[shared]` names, compiled and ready.
async fn load_strategies(config: &Config) -> io::Result<StrategyRegistry> {
    // Compiling plugins takes seconds for Python and JavaScript components (milliseconds
    // from the disk cache): keep it off the async workers, so a broker started inside a
    // runtime that already serves other tasks does not stall them. Listeners open only
    // once every configured strategy is ready, so the first message already meets it.
    let shared = config.shared.clone();
    let base_dir = config.base_dir.clone();
    tokio::task::spawn_blocking(move || StrategyRegistry::new(&shared, base_dir.as_deref()))
        .await
        .map_err(|e| io::Error::other(format!("strategy loading task failed: {e}")))?
        .map_err(|e| io::Error::other(format!("shared-subscription strategies: {e}")))
}

/// Declares the `[[shared.declared]]` groups of the configuration. Blocking.
fn declare_configured_groups(state: &BrokerState) -> io::Result<()> {
    for (index, declared) in state.config.shared.declared.iter().enumerate() {
        // Config::validate checked these; a Config built in code may not have been.
        let group = state
            .declare_group_unstored(&declared.name, &declared.filter)
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("shared.declared[{index}]: {e}"),
                )
            })?;
        tracing::info!(group = %group.name, filter = %group.filter, strategy = %group.strategy_label(), "declared shared group ready");
    }
    Ok(())
}
