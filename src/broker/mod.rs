//! The broker: what connections share (`BrokerState`), and the business run on it.
//!
//! Rooms (see ARCHITECTURE.md): `net/` (listener, admission, the connection task and its
//! goodbye), `handle/` (one file per packet, as the protocol names them), `session/` (what
//! survives a connection: queue, in-flight, will data), `routing/` (topic tree and groups
//! registry, retained store), `shared/` (shared-subscription groups); at the top, on
//! `BrokerState`: `sessions.rs` (the registry's open/end/expiry), `groups.rs` (declare,
//! strategies, redispatch, draining, dead letters), `will.rs` (publishing wills), `auth`,
//! `store`, `stats` and `sys`. Building a `BrokerState` from a `Config` (listeners, store,
//! recovery, HTTP, background tasks) is `crate::server`'s job, and rebuilding parts of it from
//! a new `Config` (users, ACL, certificates, strategies) is `crate::reload`'s: `BrokerState`
//! binds no socket and reads no configuration file, and nothing here imports either module or
//! `crate::http`.
//!
//! Lock order: the whole of it is in ARCHITECTURE.md ("Lock order"), in one place; each lock's
//! own comment names its place in it.

pub mod acl;
pub mod admission;
mod auth;
pub mod delivery;
pub mod events;
mod groups;
mod handle;
pub mod message;
pub mod net;
pub mod owner;
pub mod queue;
mod recover;
pub mod routing;
pub mod session;
mod sessions;
pub mod shared;
mod stats;
pub mod store;
pub(crate) mod sys;
pub mod will;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytestring::ByteString;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{
    password_file, password_file_path, scram, AuthError, Authenticator, ConfigAuthenticator,
    Credentials,
};
pub use stats::{DropReason, Stats};

use crate::config::Config;
use crate::log_limit::LogLimit;
use crate::packet::ReasonCode;
use crate::strategy::StrategyRegistry;
use crate::tls::ReloadableTls;
use crate::topic::ShareSyntax;
use admission::Admission;
use delivery::QueueLimits;
use message::Message;
use owner::Owner;
use routing::retain::{RetainLimits, RetainStore, Retained};
use routing::router::Router;
use session::Session;
use shared::GroupLimits;
use store::Journal;

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
    pub listeners: RwLock<Vec<(Arc<str>, Arc<admission::ListenerStats>)>>,
    /// This state itself, for the timers that `&self` methods arm (a lingering group's end).
    me: Weak<BrokerState>,
}

impl std::fmt::Debug for BrokerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerState").finish_non_exhaustive()
    }
}

/// What start-up (`crate::server`) builds from the configuration, before the broker's shared
/// state can exist: the slow and fallible parts, each loaded off the async workers.
pub(crate) struct BrokerParts {
    pub config: Config,
    pub authenticator: Arc<dyn Authenticator>,
    /// The rules of `[auth] acl_file`; none when it is not set (everything is allowed).
    pub acl: Option<acl::Acl>,
    pub strategies: StrategyRegistry,
    pub journal: Option<Arc<Journal>>,
    /// The TLS settings of the TLS and wss listeners, for reload to read again.
    pub certificates: Vec<Arc<ReloadableTls>>,
}

impl BrokerState {
    /// The shared state of a broker made of `parts`, with no session, group or listener yet.
    pub(crate) fn new(parts: BrokerParts) -> Arc<BrokerState> {
        let BrokerParts {
            config,
            authenticator,
            acl,
            strategies,
            journal,
            certificates,
        } = parts;
        Arc::new_cyclic(|me| BrokerState {
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
        })
    }

    /// The TLS settings of every TLS and wss listener, in config order (TLS, then wss).
    pub(crate) fn certificates(&self) -> &[Arc<ReloadableTls>] {
        &self.certificates
    }

    /// The authenticator in force now.
    pub fn authenticator(&self) -> Arc<dyn Authenticator> {
        self.authenticator.read().clone()
    }

    /// Puts `authenticator` in force for every later CONNECT and AUTH; connections already
    /// accepted stay.
    pub fn set_authenticator(&self, authenticator: Arc<dyn Authenticator>) {
        *self.authenticator.write() = authenticator;
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
