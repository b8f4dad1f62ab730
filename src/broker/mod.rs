//! The broker: what connections share, and the lifecycle of sessions.
//!
//! Rooms (see ARCHITECTURE.md): `net/` (listener, admission, the connection task and its
//! goodbye), `handle/` (one file per packet, as the protocol names them), `session/` (what
//! survives a connection: queue, in-flight, will), `routing/` (message, topic tree and groups
//! registry, delivery, retained store), `shared/` (shared-subscription groups); `auth`,
//! `store`, `stats` and `sys` at the top.
//!
//! Lock order, broker-wide (a lock may only be taken while holding locks listed before it):
//! 1. `BrokerState::sessions`, the registry of sessions by client id;
//! 2. `Router::tree`, the topic tree (read by every publish while matching);
//! 3. `Router::groups`, the groups registry (a leaf under the tree: nothing is called under it);
//! 4. a `SharedGroup`'s state (its members, queue and strategy instance);
//! 5. a `Session`'s state (queue, in flight, connection link).
//!
//! The retained store, admission counts, log limits (refused sockets, failed handshakes, failed
//! logins), a strategy's spare instances, the strategy registry's rules and admin-API
//! overrides, the authenticator slot, the ACL slot, the listeners' counts list, the group event
//! feed and the store journal's pending batch each have a leaf lock, taken under none of the
//! above except the journal's (taken under a queue's lock) and the event feed's (taken under a
//! group's or the tree's, to announce a change in order; nothing is called under either). A TLS listener's settings
//! are in an `ArcSwap` (`net/tls.rs`): swapped on reload, read per handshake, no lock. All are
//! `parking_lot` locks, never held across an `.await`; no Wasm instance is created under 1–3, and a group's failed instance is rebuilt
//! under none of them.

pub mod acl;
mod auth;
pub mod events;
mod handle;
pub(crate) mod log_limit;
pub mod message;
pub mod net;
pub mod owner;
pub mod queue;
mod recover;
pub mod routing;
pub mod session;
pub mod shared;
mod stats;
pub mod store;
mod sys;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytestring::ByteString;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{password_file, scram, AuthError, Authenticator, ConfigAuthenticator, Credentials};
pub use net::error::ConnectionError;
pub use stats::{DropReason, Stats};

use crate::config::Config;
use crate::packet::ReasonCode;
use crate::strategy::{Dispatcher, StrategyRegistry};
use crate::topic::{
    parse_subscription, validate_filter, validate_share_name, ShareSyntax, SubscriptionFilter,
    TopicError,
};
use log_limit::LogLimit;
use message::delivery::{self, Delivery, QueueLimits};
use message::Message;
use net::admission::Admission;
use net::listener::{Kind, Listener};
use net::tls::{ReloadableTls, TlsError, TlsFiles};
use owner::Owner;
use routing::retain::{RetainLimits, RetainStore, Retained};
use routing::router::{Lingering, Router};
use session::Session;
use shared::backlog::{DeadLetter, Failure};
use shared::group::GroupSetup;
use shared::group::Queued;
use shared::settings::GroupSettings;
use shared::{GroupLimits, Redelivery, SharedGroup};
use store::redb_backend::RedbBackend;
use store::{Journal, StoreBackend, StoreSettings};

/// How often groups' ack deadlines and message ages are checked: a deadline is met to within
/// this.
const SWEEP_INTERVAL: Duration = Duration::from_millis(20);

/// Everything the connections of one broker share.
pub struct BrokerState {
    pub config: Config,
    pub router: Router,
    pub retained: RetainStore,
    pub stats: Stats,
    /// Live sessions by client id. Held only for lookups and inserts, never across routing.
    sessions: Mutex<HashMap<ByteString, Arc<Session>>>,
    next_session_id: AtomicU64,
    /// The authenticator in force. A leaf lock, held only to clone the `Arc` (each CONNECT and
    /// AUTH) or to replace it (reload); a check runs on its clone, with no lock held, so a reload
    /// never waits for a password hash and a connection keeps the table it started with.
    authenticator: RwLock<Arc<dyn Authenticator>>,
    /// Who may publish, subscribe and join what (`[auth] acl_file`); replaced on reload.
    pub acl: Arc<acl::AclHandle>,
    /// Which dispatch strategy each shared group uses; replaced on reload.
    pub strategies: StrategyRegistry,
    /// The durable store's journal; none when `[storage] dir` is empty (memory only).
    pub journal: Option<Arc<Journal>>,
    /// Cancelled once to stop the listeners and disconnect every client.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them to say goodbye.
    pub tasks: TaskTracker,
    pub started_at: Instant,
    /// Places for open sockets under the connection limits.
    admission: Admission,
    /// Keeps a flood of refused sockets from flooding the log as well.
    refusal_log: LogLimit,
    /// Likewise for failed logins, which a client can repeat as fast as it can connect.
    pub(crate) auth_failure_log: LogLimit,
    /// Likewise for failed TLS handshakes and WebSocket upgrades.
    handshake_log: LogLimit,
    /// Likewise for CONNECTs refused a session: another identity's client id, or over
    /// `limits.max_sessions`.
    pub(crate) session_refusal_log: LogLimit,
    /// The TLS settings of every TLS and wss listener, in config order (TLS, then wss): what
    /// a reload reads again. Each holds its `ServerConfig` in an `ArcSwap`, without a lock.
    certificates: Vec<Arc<ReloadableTls>>,
    /// Every bound listener's label and socket counts, for `/metrics`; written once at start.
    pub listeners: RwLock<Vec<(Arc<str>, Arc<net::admission::ListenerStats>)>>,
    /// This state itself, for the timers that `&self` methods arm (a lingering group's end).
    me: Weak<BrokerState>,
}

impl std::fmt::Debug for BrokerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerState").finish_non_exhaustive()
    }
}

/// A broker that is serving: its bound addresses and the means to stop it.
#[derive(Debug)]
pub struct Broker {
    state: Arc<BrokerState>,
    local_addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    ws_addrs: Vec<SocketAddr>,
    /// The HTTP server of `[http] listen`, if one is configured.
    http: Option<crate::http::HttpServer>,
}

impl Broker {
    /// Opens the store (if `[storage] dir` is set) and puts back what it holds, then binds every
    /// configured listener and starts serving in the background of the current tokio runtime.
    pub async fn start(config: Config) -> io::Result<Broker> {
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
        if let Some(path) = auth::password_file_path(&config.auth, config.base_dir.as_deref()) {
            tracing::info!(file = %path.display(), users = authenticator.user_count(), "password file loaded");
        }
        let authenticator: Arc<dyn Authenticator> = Arc::new(authenticator);
        let acl = match config.acl_path() {
            Some(path) => {
                let acl = acl::Acl::load(&path).map_err(|e| io::Error::other(e.to_string()))?;
                tracing::info!(file = %path.display(), "ACL loaded: what it does not grant is refused");
                Some(acl)
            }
            None => None,
        };
        // Certificates first: a missing or bad file fails the start before anything is opened.
        let config_for_tls = config.clone();
        let (secured, certificates) =
            tokio::task::spawn_blocking(move || secured_listeners(&config_for_tls))
                .await
                .map_err(|e| io::Error::other(format!("TLS loading task failed: {e}")))?
                .map_err(|e| io::Error::other(e.to_string()))?;
        // Compiling plugins takes seconds for Python and JavaScript components (milliseconds
        // from the disk cache): keep it off the async workers, so a broker started inside a
        // runtime that already serves other tasks does not stall them. Listeners open only
        // once every configured strategy is ready, so the first message already meets it.
        let shared = config.shared.clone();
        let base_dir = config.base_dir.clone();
        let strategies = tokio::task::spawn_blocking(move || {
            StrategyRegistry::new(&shared, base_dir.as_deref())
        })
        .await
        .map_err(|e| io::Error::other(format!("strategy loading task failed: {e}")))?
        .map_err(|e| io::Error::other(format!("shared-subscription strategies: {e}")))?;
        let storage = config.storage.clone();
        let storage_dir = storage.resolved_dir(config.base_dir.as_deref());
        let opened = match storage_dir {
            Some(dir) => tokio::task::spawn_blocking(move || open_store(&dir, &storage))
                .await
                .map_err(|e| io::Error::other(format!("store opening task failed: {e}")))?
                .map(Some)
                .map_err(|e| io::Error::other(e.to_string()))?,
            None => {
                tracing::info!("storage: memory only ([storage] dir is empty); sessions, queues and retained messages do not survive a restart");
                None
            }
        };
        let (journal, recovered) = match opened {
            Some((journal, recovered)) => (Some(journal), Some(recovered)),
            None => (None, None),
        };
        let state = Arc::new_cyclic(|me| BrokerState {
            strategies,
            router: Router::with_group_linger(
                Duration::from_secs(config.shared.group_linger_secs),
                journal.clone(),
            ),
            retained: RetainStore::new(journal.clone()),
            stats: Stats::default(),
            sessions: Mutex::new(HashMap::new()),
            next_session_id: AtomicU64::new(1),
            authenticator: RwLock::new(authenticator),
            acl: Arc::new(acl::AclHandle::new(acl)),
            journal,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started_at: Instant::now(),
            admission: Admission::new(
                config.limits.max_connections,
                config.limits.max_connections_per_ip,
            ),
            refusal_log: LogLimit::new(Duration::from_secs(1)),
            auth_failure_log: LogLimit::new(Duration::from_secs(1)),
            handshake_log: LogLimit::new(Duration::from_secs(1)),
            session_refusal_log: LogLimit::new(Duration::from_secs(1)),
            certificates,
            listeners: RwLock::default(),
            me: me.clone(),
            config,
        });
        // Before the listeners open, so the first message published already finds them; off
        // the async workers, as making a group's strategy instance can take seconds.
        let declaring = state.clone();
        tokio::task::spawn_blocking(move || declaring.declare_configured_groups())
            .await
            .map_err(|e| io::Error::other(format!("declaring shared groups failed: {e}")))??;
        if let Some(recovered) = recovered {
            state
                .recover(recovered)
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
        let mut local_addrs = Vec::new();
        let mut tls_addrs = Vec::new();
        let mut ws_addrs = Vec::new();
        let plain = state
            .config
            .server
            .listeners
            .iter()
            .map(|address| (*address, Kind::Tcp));
        // Every socket is bound before any accepts: a failure leaves nothing half-started.
        let mut bound_listeners = Vec::new();
        for (address, kind) in plain.chain(secured) {
            let socket = tokio::net::TcpListener::bind(address).await.map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {address}: {e}"))
            })?;
            let bound = socket.local_addr()?;
            match &kind {
                Kind::Tcp => local_addrs.push(bound),
                Kind::Tls { .. } => tls_addrs.push(bound),
                Kind::Ws { .. } => ws_addrs.push(bound),
            }
            let listener = Listener::new(kind, bound);
            state
                .listeners
                .write()
                .push((listener.label.clone(), listener.stats.clone()));
            bound_listeners.push((socket, listener));
        }
        for (socket, listener) in bound_listeners {
            let bound = socket.local_addr()?;
            match &listener.kind {
                Kind::Ws { path, .. } => {
                    tracing::info!(address = %bound, kind = %listener.kind.name(), path = %path, "listening for MQTT connections")
                }
                kind => {
                    tracing::info!(address = %bound, kind = %kind.name(), "listening for MQTT connections")
                }
            }
            tokio::spawn(net::listener::accept_loop(state.clone(), socket, listener));
        }
        if state.config.server.sys_interval_secs > 0 {
            tokio::spawn(sys::publish_loop(state.clone()));
        }
        tokio::spawn(BrokerState::sweep_groups(state.clone()));
        let http = crate::http::start(state.clone()).await?;
        Ok(Broker {
            state,
            local_addrs,
            tls_addrs,
            ws_addrs,
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
    pub fn http(&self) -> Option<&crate::http::HttpServer> {
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

/// The TLS and WebSocket listeners of `config` with their certificates loaded, and the
/// certificates alone (for reload). Errors name the config key and the file.
#[allow(clippy::type_complexity)]
fn secured_listeners(
    config: &Config,
) -> Result<(Vec<(SocketAddr, Kind)>, Vec<Arc<ReloadableTls>>), TlsError> {
    let mut listeners = Vec::new();
    let mut certificates = Vec::new();
    for (index, tls) in config.server.tls_listeners.iter().enumerate() {
        let loaded = Arc::new(ReloadableTls::load(TlsFiles {
            key_prefix: format!("server.tls_listeners[{index}]"),
            cert: config.resolve_path(&tls.cert),
            key: config.resolve_path(&tls.key),
            client_ca: tls.client_ca.as_deref().map(|p| config.resolve_path(p)),
            require_client_cert: tls.require_client_cert,
        })?);
        certificates.push(loaded.clone());
        listeners.push((
            tls.address,
            Kind::Tls {
                tls: loaded,
                use_identity_as_username: tls.use_identity_as_username,
            },
        ));
    }
    for (index, ws) in config.server.ws_listeners.iter().enumerate() {
        let tls = match (&ws.cert, &ws.key) {
            (Some(cert), Some(key)) => {
                let loaded = Arc::new(ReloadableTls::load(TlsFiles {
                    key_prefix: format!("server.ws_listeners[{index}]"),
                    cert: config.resolve_path(cert),
                    key: config.resolve_path(key),
                    client_ca: None,
                    require_client_cert: false,
                })?);
                certificates.push(loaded.clone());
                Some(loaded)
            }
            _ => None,
        };
        listeners.push((
            ws.address,
            Kind::Ws {
                path: Arc::from(ws.path.as_str()),
                tls,
            },
        ));
    }
    Ok((listeners, certificates))
}

impl BrokerState {
    /// The authenticator in force now.
    pub fn authenticator(&self) -> Arc<dyn Authenticator> {
        self.authenticator.read().clone()
    }

    /// Puts `authenticator` in force for every later CONNECT and AUTH; connections already
    /// accepted stay.
    pub fn set_authenticator(&self, authenticator: Arc<dyn Authenticator>) {
        *self.authenticator.write() = authenticator;
    }

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
        for tls in &self.certificates {
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

    pub fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            max_messages: self.config.limits.max_queued_messages,
            max_bytes: self.config.limits.max_queued_bytes,
        }
    }

    pub fn retain_limits(&self) -> RetainLimits {
        RetainLimits {
            max_messages: self.config.limits.max_retained_messages,
            max_bytes: self.config.limits.max_retained_bytes,
        }
    }

    /// Reads the ACL file again (SIGHUP, `sharq reload`); a file that does not parse leaves
    /// the rules in force unchanged.
    pub fn reload_acl(&self) -> Result<(), acl::AclError> {
        let Some(path) = self.config.acl_path() else {
            return Ok(());
        };
        let acl = acl::Acl::load(&path)?;
        self.acl.replace(Some(acl));
        tracing::info!(file = %path.display(), "ACL reloaded");
        Ok(())
    }

    /// Whether `who` may publish a will on `topic` now (checked when it is sent).
    pub fn may_publish(&self, who: acl::Identity<'_>, topic: &str) -> bool {
        self.acl
            .current()
            .is_none_or(|acl| acl.may_publish(who, topic))
    }

    /// The shared-subscription spellings SUBSCRIBE and UNSUBSCRIBE accept.
    pub fn share_syntax(&self) -> ShareSyntax {
        ShareSyntax {
            legacy_colon: self.config.shared.legacy_colon_syntax,
        }
    }

    pub fn group_limits(&self) -> GroupLimits {
        GroupLimits {
            max_messages: self.config.shared.group_queue_max_messages,
            max_bytes: self.config.shared.group_queue_max_bytes,
            member_queue: self.queue_limits(),
        }
    }

    /// What a new group (`name`, `filter`) starts with: its strategy and work-queue settings.
    pub fn make_group(&self, name: &str, filter: &str) -> GroupSetup {
        GroupSetup {
            dispatcher: self.make_dispatcher(name),
            settings: self.group_settings(name, filter),
        }
    }

    /// The work-queue settings of group (`name`, `filter`): those of its `[[shared.declared]]`
    /// entry if that sets any, else those of the `[[shared.groups]]` rule its name matches.
    pub fn group_settings(&self, name: &str, filter: &str) -> GroupSettings {
        let declared = self
            .config
            .shared
            .declared
            .iter()
            .map(|d| (d, d.queue_config()))
            .find(|(d, queue)| d.name == name && d.filter == filter && !queue.is_default());
        match declared {
            Some((_, queue)) => GroupSettings::from_config(&queue),
            None => self.strategies.settings(name),
        }
    }

    /// The dispatcher a new group named `group` starts with. A strategy that cannot be
    /// instantiated for it leaves the group on the native round robin, loudly.
    pub fn make_dispatcher(&self, group: &str) -> Dispatcher {
        let name = ByteString::from(group);
        let resolved = self.strategies.resolve(group);
        match Dispatcher::build(&name, resolved) {
            Ok(dispatcher) => dispatcher,
            Err(e) => {
                tracing::error!(group, error = %e, "strategy failed for a new group; it uses the native round robin");
                Dispatcher::native(name)
            }
        }
    }

    /// Declares group (`name`, `filter`): `$share/{name}/{filter}`, or `$queue/{filter}` for the
    /// name `$queue`. It exists from now on with or without members, collects matching messages
    /// while no member can take them, and does not end when its last member leaves. Declaring
    /// an existing group keeps its members and queue. Blocking when the group is new (its
    /// strategy instance is made here): call it off the async workers.
    /// With a store, the declaration itself is kept: the group is declared again after a
    /// restart (a `[[shared.declared]]` group is not stored: the config file declares it).
    pub fn declare_group(&self, name: &str, filter: &str) -> Result<Arc<SharedGroup>, TopicError> {
        let group = self.declare_group_unstored(name, filter)?;
        if let Some(journal) = &self.journal {
            store::Persistence::new(journal.clone())
                .group_declared(store::group_owner(name, filter));
        }
        self.router
            .events
            .emit(events::EventKind::Declared, name, filter, "");
        Ok(group)
    }

    fn declare_group_unstored(
        &self,
        name: &str,
        filter: &str,
    ) -> Result<Arc<SharedGroup>, TopicError> {
        validate_share_name(name)?;
        validate_filter(filter, self.config.limits.max_topic_levels)?;
        Ok(self
            .router
            .declare_group(name, filter, |group, filter| self.make_group(group, filter)))
    }

    /// Makes declared group (`name`, `filter`) an ordinary group: with members it goes on
    /// until its last one leaves (then lingers as any group); without, it ends now and its
    /// queue is dropped. False if no such group is declared.
    pub fn undeclare_group(&self, name: &str, filter: &str) -> bool {
        if let Some(journal) = &self.journal {
            store::Persistence::new(journal.clone())
                .group_undeclared(store::group_owner(name, filter));
        }
        let undeclared = self.router.undeclare_group(name, filter);
        if undeclared {
            self.router
                .events
                .emit(events::EventKind::Undeclared, name, filter, "");
        }
        undeclared
    }

    /// Declares the `[[shared.declared]]` groups of the configuration.
    fn declare_configured_groups(&self) -> io::Result<()> {
        for (index, declared) in self.config.shared.declared.iter().enumerate() {
            // Config::validate checked these; a Config built in code may not have been.
            let group = self
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

    /// Applies a new `[shared]` strategy configuration while messages flow: every plugin is
    /// compiled and initialised first; if any fails, nothing changes and the error names it.
    /// Then each live group whose strategy changed gets a new instance, membership replayed,
    /// swapped in atomically under the group's lock. Blocking: call it off the async workers.
    pub fn reload_strategies(
        &self,
        config: &Config,
    ) -> Result<usize, crate::strategy::StrategyError> {
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

    /// Gives `group` the strategy the registry now resolves for it, if that differs from its
    /// current one (or it is pinned to the fallback); true if a new one was swapped in.
    fn refresh_strategy(&self, group: &SharedGroup) -> bool {
        let wanted = self.strategies.resolve(&group.name);
        let current = group.resolved_strategy();
        let unchanged = match (&wanted, &current) {
            (None, None) => true,
            // A pinned group gets a fresh instance on reload, even of the same plugin.
            (Some(w), Some(c)) => w.same_as(c) && !group.strategy_is_pinned(),
            _ => false,
        };
        if unchanged {
            return false;
        }
        match Dispatcher::build(&group.name, wanted) {
            Ok(dispatcher) => {
                group.swap_dispatcher(dispatcher);
                true
            }
            Err(e) => {
                tracing::error!(group = %group.name, error = %e, "strategy failed for this group; it keeps its current one");
                false
            }
        }
    }

    /// Sets the strategy of every group named `name` (all its filters, and any created later)
    /// while messages flow, as a reload would: compiled and initialised first, so a plugin
    /// that fails leaves every group as it was. `None` gives the name back to the config's
    /// `[shared]` rules. Returns how many live groups got a new strategy. Blocking.
    pub fn set_group_strategy(
        &self,
        name: &str,
        rule: Option<&crate::config::GroupStrategyConfig>,
    ) -> Result<usize, crate::strategy::StrategyError> {
        match rule {
            Some(rule) => self.strategies.set_override(
                rule,
                &self.config.shared,
                self.config.base_dir.as_deref(),
            )?,
            None => {
                self.strategies.clear_override(name);
            }
        }
        let groups = self.router.groups();
        Ok(groups
            .iter()
            .filter(|g| g.name == name && self.refresh_strategy(g))
            .count())
    }

    /// Drops the messages waiting in the groups named `name` (only the one with `filter`,
    /// if given); `None` if there is no such group. Copies members hold are left to them.
    pub fn purge_group(&self, name: &str, filter: Option<&str>) -> Option<u64> {
        let groups: Vec<Arc<SharedGroup>> = self
            .router
            .groups()
            .into_iter()
            .filter(|g| g.name == name && filter.is_none_or(|f| g.filter == f))
            .collect();
        if groups.is_empty() {
            return None;
        }
        Some(groups.iter().map(|g| g.purge()).sum())
    }

    /// Closes `client_id`'s connection with DISCONNECT 0x98 (Administrative action) where v5
    /// has it; its session stays, as after any disconnection. False if it is not connected.
    pub fn disconnect_client(&self, client_id: &str) -> bool {
        match self.session(client_id) {
            Some(session) if session.is_online() => {
                session.kick(crate::packet::ReasonCode::ADMINISTRATIVE_ACTION);
                true
            }
            _ => false,
        }
    }

    /// Every session the broker holds, online or not.
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.lock().values().cloned().collect()
    }

    pub fn session(&self, client_id: &str) -> Option<Arc<Session>> {
        self.sessions.lock().get(client_id).cloned()
    }

    /// Sockets open now, CONNECT finished or not.
    pub fn open_sockets(&self) -> usize {
        self.admission.open()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Finds the session `claimant` resumes under `client_id`, or makes a new one it owns.
    /// With `clean_start` any existing session is ended first. Refused, with nothing touched,
    /// when the existing session belongs to another identity, or when a new persistent session
    /// would go past `limits.max_sessions`.
    pub fn open_session(
        &self,
        client_id: &ByteString,
        claimant: &Owner,
        clean_start: bool,
        expiry: u32,
    ) -> Result<OpenedSession, SessionRefused> {
        let mut sessions = self.sessions.lock();
        let existing = sessions.get(client_id).filter(|s| !s.is_ended());
        if let Some(existing) = existing {
            if !clean_start {
                // Under the registry's lock, like the expiry's check-and-end: either the
                // expiry ended it first (and it reads as ended here) or it sees this claim.
                if !existing.claim(claimant) {
                    return Err(SessionRefused::NotOwner(existing.owner()));
                }
                return Ok(OpenedSession {
                    session: existing.clone(),
                    present: true,
                    discarded: None,
                });
            }
            if !existing.admits(claimant) {
                return Err(SessionRefused::NotOwner(existing.owner()));
            }
        }
        let max_sessions = self.config.limits.max_sessions;
        if expiry > 0 && max_sessions > 0 && sessions.len() >= max_sessions {
            // Counted only near the bound: below it the registry's size is proof enough.
            let replaced = existing.map(Arc::as_ptr);
            let persistent = sessions
                .values()
                .filter(|s| Some(Arc::as_ptr(s)) != replaced && s.expiry_interval() > 0)
                .count();
            if persistent >= max_sessions {
                return Err(SessionRefused::Quota);
            }
        }
        Ok(self.insert_new_session(&mut sessions, client_id, claimant.clone(), expiry))
    }

    /// Registers a new session under `client_id`, in place of any registered one (returned as
    /// discarded).
    fn insert_new_session(
        &self,
        sessions: &mut HashMap<ByteString, Arc<Session>>,
        client_id: &ByteString,
        owner: Owner,
        expiry: u32,
    ) -> OpenedSession {
        let id = self.next_session_id.fetch_add(1, Ordering::Relaxed);
        let session = Session::new(id, client_id.clone(), owner, expiry, self.journal.clone());
        let discarded = sessions.insert(client_id.clone(), session.clone());
        OpenedSession {
            session,
            present: false,
            discarded,
        }
    }

    /// Registers a session read back from the store: outside every bound, as it was accepted
    /// before the restart.
    fn restore_session(&self, client_id: &ByteString, owner: Owner, expiry: u32) -> Arc<Session> {
        let mut sessions = self.sessions.lock();
        self.insert_new_session(&mut sessions, client_id, owner, expiry)
            .session
    }

    /// Ends a session: removes it from the registry (if it is still the registered one), its
    /// subscriptions from the router, and hands its unfinished shared copies to other members.
    pub fn end_session(&self, session: &Arc<Session>) {
        Self::unregister(&mut self.sessions.lock(), session);
        // Its stored rows go too: a session of the same client id that replaces it (Clean
        // Start) stores its own only after this, when its connection attaches.
        let ended = session.end();
        self.clean_up_ended(session, ended);
    }

    /// Ends `session` because its expiry ran out after connection `generation` left, unless a
    /// connection resumed or claimed it meanwhile.
    fn expire_session(&self, session: &Arc<Session>, generation: u64) {
        let ended = {
            let mut sessions = self.sessions.lock();
            let ended = session.end_if_idle_since(generation);
            if ended.is_some() {
                Self::unregister(&mut sessions, session);
            }
            ended
        };
        let Some(ended) = ended else { return };
        tracing::debug!(client_id = %session.client_id, "session expired");
        self.clean_up_ended(session, ended);
    }

    /// Removes `session` from the registry if it is the registered one.
    fn unregister(sessions: &mut HashMap<ByteString, Arc<Session>>, session: &Arc<Session>) {
        if sessions
            .get(&session.client_id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(&session.client_id);
        }
    }

    /// What ending a session leaves to the broker: its subscriptions leave the router and its
    /// unfinished shared copies go to other members (its stored rows went when it ended).
    fn clean_up_ended(&self, session: &Arc<Session>, ended: session::EndedSession) {
        for filter in ended.subscriptions.keys() {
            self.remove_from_router(filter, session);
        }
        // Leave any group the subscription map did not mention (defensive: both are kept
        // together, but a group must never keep a dead member).
        for lingering in self.router.leave_all_groups(session.id) {
            self.arm_linger(lingering);
        }
        // A group this session was the last member of still exists here if it lingers or is
        // declared, and keeps these copies for the next member; otherwise they are dropped.
        self.redispatch(
            ended.redispatch,
            Redelivery::SessionEnded,
            &session.client_id,
        );
        tracing::debug!(client_id = %session.client_id, "session ended");
    }

    /// Ends the session now (expiry 0), never (`u32::MAX`), or after its expiry interval unless
    /// a connection resumes it first (`generation` is the detached connection's).
    pub fn schedule_expiry(broker: &Arc<BrokerState>, session: Arc<Session>, generation: u64) {
        let expiry = session.expiry_interval();
        BrokerState::schedule_expiry_in(broker, session, generation, expiry);
    }

    /// Like [`BrokerState::schedule_expiry`], after `expiry` seconds rather than the session's
    /// interval (a restored session has spent part of it while the broker was down).
    pub fn schedule_expiry_in(
        broker: &Arc<BrokerState>,
        session: Arc<Session>,
        generation: u64,
        expiry: u32,
    ) {
        if expiry == 0 {
            broker.end_session(&session);
            return;
        }
        if expiry == u32::MAX {
            return;
        }
        let broker = broker.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(u64::from(expiry))) => {}
                _ = broker.shutdown.cancelled() => return,
            }
            broker.expire_session(&session, generation);
        });
    }

    /// Removes one subscription (plain or shared) of `session` from the router.
    pub fn remove_from_router(&self, filter: &str, session: &Arc<Session>) -> bool {
        match parse_subscription(filter, usize::MAX) {
            Ok(SubscriptionFilter::Shared { group, filter }) => {
                let left = self.router.leave_group(group, filter, session.id);
                if let Some(lingering) = left.lingering {
                    self.arm_linger(lingering);
                }
                left.was_member
            }
            Ok(SubscriptionFilter::Plain(filter)) => self.router.unsubscribe(filter, session.id),
            Err(_) => false,
        }
    }

    /// Checks the subscriptions of `session` against the ACL as `who` from now on: called when a
    /// connection takes the session up, so that subscriptions restored from the store (which
    /// does not keep the username; until then they are checked as an anonymous client's) or
    /// made under another login are read-checked for the client now behind them.
    pub(crate) fn renew_read_guards(&self, session: &Arc<Session>, who: acl::Identity<'_>) {
        if self.acl.current().is_none() {
            return;
        }
        for name in session.subscription_filters() {
            match parse_subscription(&name, usize::MAX) {
                Ok(SubscriptionFilter::Shared { group, filter }) => {
                    if let Some(shared) = self.router.group(group, filter) {
                        let read = acl::ReadGuard::new(&self.acl, who, filter);
                        shared.renew_read_guard(session.id, read);
                    }
                }
                Ok(SubscriptionFilter::Plain(filter)) => {
                    let read = acl::ReadGuard::new(&self.acl, who, filter);
                    self.router.renew_read_guard(filter, session.id, read);
                }
                Err(_) => {}
            }
        }
    }

    /// Ends a group that lost its last member once `shared.group_linger_secs` has passed,
    /// unless a member joins meanwhile (the router checks the group's epoch).
    pub(crate) fn arm_linger(&self, lingering: Lingering) {
        let (Some(broker), Ok(runtime)) =
            (self.me.upgrade(), tokio::runtime::Handle::try_current())
        else {
            // No runtime (or the broker is being dropped): no timer can run, and a group that
            // never ends is worse than one that ends early.
            self.router.end_lingering(&lingering);
            return;
        };
        tracing::debug!(group = %lingering.group.name, filter = %lingering.group.filter, linger = ?broker.router.group_linger(), "shared group lost its last member and lingers");
        runtime.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(broker.router.group_linger()) => {}
                _ = broker.shutdown.cancelled() => return,
            }
            broker.router.end_lingering(&lingering);
        });
    }

    /// Hands shared copies member `member` could not finish back to their groups, each with
    /// this failure counted; those past their group's `max_deliveries` are dead-lettered.
    pub fn redispatch(&self, deliveries: Vec<Delivery>, reason: Redelivery, member: &ByteString) {
        if deliveries.is_empty() {
            return;
        }
        let limits = self.group_limits();
        // Keep each group's copies together and in order.
        let mut per_group: Vec<(delivery::GroupId, Vec<Queued>)> = Vec::new();
        for delivery in deliveries {
            let Some(tag) = delivery.group else {
                continue;
            };
            // Back with the group: its key is no longer out.
            tag.resolved();
            let delivery::GroupOrigin::Local(group) = tag.origin;
            let copy = Queued {
                message: delivery.message,
                stored: delivery.stored.map(|s| s.id),
                failures: tag.failures + 1,
                last_failure: Some(Failure {
                    reason: reason.failure().into(),
                    member: member.clone(),
                }),
                key: tag.key,
            };
            match per_group.iter_mut().find(|(g, _)| *g == group) {
                Some((_, copies)) => copies.push(copy),
                None => per_group.push((group, vec![copy])),
            }
        }
        for (id, copies) in per_group {
            let Some(group) = self.router.group_by_id(id) else {
                // The group ended (its last member left, and it neither lingers nor is
                // declared) while these were out: nobody to take them, as for any message
                // reaching an ended group.
                tracing::debug!(
                    count = copies.len(),
                    "shared copies returned to a group that has ended"
                );
                self.stats.record_drop(DropReason::GroupEnded, copies.len());
                continue;
            };
            tracing::debug!(group = %group.name, filter = %group.filter, count = copies.len(), "redispatching shared messages");
            let dead = group.redispatch(copies, limits, reason);
            self.publish_dead_letters(dead);
        }
    }

    /// Member `member` refused a shared copy with `code` (>= 0x80): its group dead-letters it,
    /// or drops it when it has no dead-letter topic.
    pub fn member_rejected(&self, delivery: Delivery, code: ReasonCode, member: &ByteString) {
        let Some(tag) = delivery.group else { return };
        let delivery::GroupOrigin::Local(id) = tag.origin;
        let Some(group) = self.router.group_by_id(id) else {
            self.stats.record_drop(DropReason::GroupEnded, 1);
            return;
        };
        let copy = Queued {
            message: delivery.message,
            // The member's session already let go of the stored row.
            stored: None,
            failures: tag.failures + 1,
            last_failure: Some(Failure {
                reason: format!("rejected 0x{:02x}", code.0),
                member: member.clone(),
            }),
            key: tag.key,
        };
        let dead = group.rejected(copy);
        self.publish_dead_letters(dead.into_iter().collect());
    }

    /// Publishes messages groups gave up on to their dead-letter topics, through normal
    /// routing: subscribers there (ACL-checked when they subscribed) get them as any message.
    fn publish_dead_letters(&self, letters: Vec<DeadLetter>) {
        for letter in letters {
            let about = vec![
                (
                    ByteString::from_static("sharq-original-topic"),
                    letter.message.topic.clone(),
                ),
                (ByteString::from_static("sharq-group"), letter.group.clone()),
                (
                    ByteString::from_static("sharq-deliveries"),
                    ByteString::from(letter.deliveries.to_string()),
                ),
                (
                    ByteString::from_static("sharq-last-failure"),
                    ByteString::from(letter.failure.reason.clone()),
                ),
                (
                    ByteString::from_static("sharq-last-member"),
                    letter.failure.member.clone(),
                ),
            ];
            let message =
                Message::dead_letter(&letter.message, ByteString::from(letter.topic), about);
            tracing::debug!(group = %letter.group, topic = %message.topic, deliveries = letter.deliveries, failure = %letter.failure.reason, "message dead-lettered");
            self.publish_internal(message);
        }
    }

    /// Runs the groups' clock-driven work (ack deadlines, `max_age_secs`) until shutdown.
    async fn sweep_groups(broker: Arc<BrokerState>) {
        let mut ticker = tokio::time::interval(SWEEP_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = broker.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = Instant::now();
            let limits = broker.group_limits();
            for group in broker.router.clock_driven_groups() {
                let dead = group.sweep(now, limits);
                broker.publish_dead_letters(dead);
            }
        }
    }

    /// Lets every group `session` belongs to hand it waiting messages.
    pub fn drain_groups_of(&self, session: &Session) {
        // The session's freed room was stored (lock-free load mirror) before this; a publisher
        // stores a group's queue length and then reads the members' room. A full fence on both
        // sides means at least one of the two sees the other: never a message left queued
        // while its member has room and nobody looks.
        std::sync::atomic::fence(Ordering::SeqCst);
        // A group it drains hands it a message while it has room (unless another member
        // with room gets it), so more groups than its free slots would mostly be visited to
        // find it full: it looks at that many first, and at all of them only if it still has
        // room after those.
        let load = session.member_load();
        let mut limit = load.capacity.saturating_sub(load.inflight).max(1) as usize;
        let group_limits = self.group_limits();
        loop {
            let groups = self.router.groups_with_backlog(session.id, limit);
            let visited = groups.len();
            for group in groups {
                group.drain(group_limits);
                // Full again: the next acknowledgement drains the rest.
                if !session.member_load().has_room() {
                    return;
                }
            }
            if visited < limit || limit == usize::MAX {
                return;
            }
            limit = usize::MAX;
        }
    }

    /// Publishes a message from inside the broker (wills, `$SYS`): retains it if asked, then
    /// routes it.
    pub fn publish_internal(&self, message: Arc<Message>) {
        self.retain(&message);
        let routed = self
            .router
            .route(&message, self.queue_limits(), self.group_limits());
        self.stats.record_routed(&routed);
    }

    /// Stores a message that has the RETAIN flag in the retained store. Returns the bound that
    /// kept it out, counted; the message is routed either way.
    pub fn retain(&self, message: &Arc<Message>) -> Option<message::Quota> {
        if !message.retain {
            return None;
        }
        match self.retained.set(message, self.retain_limits()) {
            Retained::Full(quota) => {
                self.stats.record_refused(quota, 1);
                tracing::debug!(topic = %message.topic, quota = quota.key(), "retained store full: message not retained");
                Some(quota)
            }
            Retained::Stored | Retained::Cleared => None,
        }
    }
}

/// Opens the store in `dir` and reads back what start-up needs. Logs, in one line, where the
/// data goes.
fn open_store(
    dir: &std::path::Path,
    storage: &crate::config::StorageConfig,
) -> Result<(Arc<Journal>, store::Recovered), store::StoreError> {
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

/// The result of [`BrokerState::open_session`].
#[derive(Debug)]
pub struct OpenedSession {
    pub session: Arc<Session>,
    pub present: bool,
    pub discarded: Option<Arc<Session>>,
}

/// Why [`BrokerState::open_session`] refused a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionRefused {
    /// The session under that client id belongs to another identity (this one).
    #[error("the client id's session belongs to another identity ({})", .0.describe())]
    NotOwner(Owner),
    /// A new persistent session would go past `limits.max_sessions`.
    #[error("limits.max_sessions persistent sessions are kept already")]
    Quota,
}

impl SessionRefused {
    /// The CONNACK reason code (3.1.1 clients read its nearest return code).
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            SessionRefused::NotOwner(_) => ReasonCode::NOT_AUTHORIZED,
            SessionRefused::Quota => ReasonCode::QUOTA_EXCEEDED,
        }
    }
}
