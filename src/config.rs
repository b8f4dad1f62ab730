//! The broker's configuration: a TOML file, every key optional, unknown keys refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::client_id_pattern::ClientIdPattern;

/// The configuration the binary starts with when no `--config` is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// toml's message already names the key and shows the offending line.
    #[error("invalid config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid config {origin}: key `{key}`: {reason}")]
    Invalid {
        origin: String,
        /// Owned, as an entry of an array of tables is named by its index
        /// (`shared.declared[2].filter`).
        key: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The directory of the config file: relative plugin paths are resolved against it.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
    /// The config file itself, which a reload reads again; none for the embedded default or
    /// a config built in code.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub session: SessionConfig,
    pub keep_alive: KeepAliveConfig,
    pub shared: SharedConfig,
    pub auth: AuthConfig,
    pub storage: StorageConfig,
    pub http: HttpConfig,
}

/// `[http]`: Prometheus metrics, the admin API and the live dashboard.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `ADDR:PORT` to serve HTTP on; `""` serves none. Port 0 picks a free port.
    pub listen: String,
    /// The bearer token that mutating API calls need (and every call, off loopback). `""` on a
    /// loopback address: a random one is made at start and printed with the dashboard's URL.
    pub token: String,
    /// Users of `[auth]` (the password file or `[auth] users`) who may use the API with HTTP
    /// Basic authentication, as the token allows.
    pub users: Vec<String>,
    /// Groups labelled one by one in `/metrics`; the rest are summed under `group="_other"`,
    /// so that thousands of groups cannot flood a Prometheus server.
    pub max_labelled_groups: usize,
    /// Host names (`name` or `name:port`) requests may carry in their `Host` header besides
    /// `localhost` and the listen address: a name a DNS-rebinding page could use is refused.
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: String::new(),
            token: String::new(),
            users: Vec::new(),
            max_labelled_groups: 200,
            allowed_hosts: Vec::new(),
        }
    }
}

impl HttpConfig {
    /// The address to serve on, if any (validated with the config).
    pub fn address(&self) -> Option<SocketAddr> {
        if self.listen.is_empty() {
            return None;
        }
        self.listen.parse().ok()
    }
}

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

impl Config {
    /// `[auth] acl_file`, resolved against the config file's directory.
    pub fn acl_path(&self) -> Option<PathBuf> {
        let path = self.auth.acl_file.as_ref()?;
        Some(match &self.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.clone(),
        })
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
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// TCP addresses to accept MQTT connections on; port 0 picks a free port.
    pub listeners: Vec<SocketAddr>,
    /// `[[server.tls_listeners]]`: MQTT over TLS (1.2 and 1.3).
    pub tls_listeners: Vec<TlsListenerConfig>,
    /// `[[server.ws_listeners]]`: MQTT over WebSocket, or over secure WebSocket with a
    /// certificate.
    pub ws_listeners: Vec<WsListenerConfig>,
    /// A `tracing` filter such as `info` or `sharq=debug`; `RUST_LOG` overrides it.
    pub log: String,
    /// How often `$SYS/broker/...` is published; 0 turns it off.
    pub sys_interval_secs: u64,
    /// Where the running broker writes its process id, for `sharq reload`.
    pub pid_file: Option<PathBuf>,
    /// How log lines are written to stderr.
    pub log_format: LogFormat,
}

/// One `[[server.tls_listeners]]` entry. Paths are relative to the config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    pub address: SocketAddr,
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates are verified against. Without it no
    /// client certificate is asked for; with it, one that is presented must verify.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Refuse the handshake of a client that presents no certificate (needs `client_ca`).
    #[serde(default)]
    pub require_client_cert: bool,
    /// The verified client certificate's subject CN is the client's username, whatever
    /// CONNECT says, and no password is checked (as Mosquitto does). A client without a
    /// certificate is refused with CONNACK 0x87 (0x05 in 3.1.1). Needs `client_ca`.
    #[serde(default)]
    pub use_identity_as_username: bool,
}

/// One `[[server.ws_listeners]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WsListenerConfig {
    pub address: SocketAddr,
    /// The HTTP path of the upgrade request; any other path gets 404.
    #[serde(default = "default_ws_path")]
    pub path: String,
    /// With `key`: serve secure WebSocket (`wss`) with this certificate chain (PEM).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

fn default_ws_path() -> String {
    "/mqtt".to_owned()
}

/// `server.log_format`: human-readable lines, or one JSON object per line for log collectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(value: String) -> Result<LogFormat, String> {
        match value.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            // toml shows the offending line; the message names the key as `validate` does.
            other => Err(format!(
                "key `server.log_format`: must be \"text\" or \"json\", got {other:?}"
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest packet accepted from a client (advertised in CONNACK), in bytes.
    pub max_packet_size: u32,
    /// How many QoS 1/2 PUBLISHes a client may have unacknowledged towards us.
    pub receive_maximum: u16,
    /// Cap on QoS 1/2 messages in flight towards one client (the client's Receive Maximum may
    /// lower it further).
    pub max_inflight: u16,
    /// Messages queued for one session (offline, or online but behind) before the overflow
    /// policy applies.
    pub max_queued_messages: usize,
    /// Bytes one session may hold, queued or in flight, before the overflow policy applies.
    /// Counted over whole messages: topic, payload and every property.
    pub max_queued_bytes: usize,
    pub max_topic_levels: usize,
    /// Open sockets, counted from accept() on (a client that never finishes CONNECT holds a
    /// place too); above it a new socket is closed at once.
    pub max_connections: usize,
    /// Open sockets from one source address; 0 means no per-address limit.
    pub max_connections_per_ip: usize,
    /// How long a new connection may take to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Topic aliases a client may use towards us (Topic Alias Maximum in CONNACK).
    pub topic_alias_maximum: u16,
    /// Topic aliases we use towards a v5 client, within the Topic Alias Maximum it states;
    /// 0 sends every topic in full.
    pub outgoing_topic_alias_maximum: u16,
    /// Pending will messages and similar timers are per session; this bounds retained messages.
    pub max_retained_messages: usize,
    /// Whole-message bytes (topic, payload, properties) over all retained messages.
    pub max_retained_bytes: usize,
    /// Subscriptions one session may hold; a SUBSCRIBE past it is refused per filter with
    /// 0x97 (Quota exceeded). 0: no bound.
    pub max_subscriptions_per_client: usize,
    /// Persistent sessions (Session Expiry above zero, connected or not) the broker keeps; a
    /// CONNECT that would make one more is refused with 0x97. 0: no bound.
    pub max_sessions: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Upper bound for the Session Expiry Interval a client may ask for; also the expiry of a
    /// 3.1.1 session with Clean Session = 0.
    pub max_expiry_secs: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KeepAliveConfig {
    /// A v5 client asking for more (or for 0) is told this value as Server Keep Alive.
    pub max_secs: u16,
    /// When set, every v5 client is told to use this keep-alive (Server Keep Alive).
    pub server_secs: Option<u16>,
}

/// The broker's default sandbox for strategy plugins (`shared.plugin_memory_mib`,
/// `shared.plugin_deadline_ms`, `shared.plugin_init_deadline_ms`). `sharq plugin check` and
/// `sharq plugin test` default to them too, so a component is tried under the limits it will
/// run with.
pub const DEFAULT_PLUGIN_MEMORY_MIB: u32 = 16;
pub const DEFAULT_PLUGIN_DEADLINE_MS: u64 = 20;
pub const DEFAULT_PLUGIN_INIT_DEADLINE_MS: u64 = 1000;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SharedConfig {
    /// Messages a shared group keeps while none of its members can take them.
    pub group_queue_max_messages: usize,
    /// Bytes a shared group keeps while none of its members can take them, counted over whole
    /// messages: topic, payload and every property.
    pub group_queue_max_bytes: usize,
    /// The strategy of groups no `[[shared.groups]]` rule matches: a built-in name, or
    /// `native_round_robin` for the non-Wasm round robin.
    pub default_strategy: String,
    /// Linear memory one strategy instance may use.
    pub plugin_memory_mib: u32,
    /// How long one call into a strategy may run before it is interrupted.
    pub plugin_deadline_ms: u64,
    /// How long instantiating a strategy and its `init` (and replaying membership into a new
    /// instance) may run: off the message path, and slower than a call on a loaded host.
    pub plugin_init_deadline_ms: u64,
    /// Failures in a row after which a group stays on the native round robin until a reload.
    pub plugin_max_failures: u32,
    /// A directory (private to the broker) where compiled plugins are cached across restarts.
    /// Unset: the user's cache directory (`$XDG_CACHE_HOME/sharq/plugins`, else
    /// `~/.cache/sharq/plugins`); `""` keeps the cache in memory only.
    pub plugin_cache_dir: Option<PathBuf>,
    /// The directory a plugin path given through the admin API must lie in (relative paths
    /// there are relative to it). Unset: the API refuses plugin paths, built-ins only.
    pub plugin_dir: Option<PathBuf>,
    /// Per-group strategies; the first rule whose `name` (exact, or a glob such as `orders-*`)
    /// matches the share name wins.
    pub groups: Vec<GroupStrategyConfig>,
    /// Also read HiveMQ 3's `$share:{group}:{filter}` as `$share/{group}/{filter}`. Off, it is
    /// an ordinary filter, as standard MQTT says.
    pub legacy_colon_syntax: bool,
    /// How long a group whose last member left keeps its queue and goes on collecting matching
    /// messages before it ends, so that a member joining meanwhile (the next worker of a
    /// rolling restart) finds them; 0 ends it at once. Declared groups never end this way.
    pub group_linger_secs: u64,
    /// Groups that exist from start-up, whether or not anyone is a member: they collect
    /// matching messages before their first member joins and after their last one leaves.
    pub declared: Vec<DeclaredGroupConfig>,
}

/// One `[[shared.declared]]` entry: the group `$share/{name}/{filter}` (`$queue/{filter}` is
/// the name `$queue`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeclaredGroupConfig {
    /// The share name: non-empty, without `/`, `+` or `#`.
    pub name: String,
    /// The topic filter the group's members subscribe with after the share name.
    pub filter: String,
    /// Work-queue setting (off when unset): a QoS 1 copy a connected member has not
    /// acknowledged within this many milliseconds goes to another member.
    pub ack_timeout_ms: Option<u64>,
    /// Work-queue setting: failed deliveries (disconnect, ack timeout, PUBACK/PUBREC >= 0x80)
    /// after which a message is dead-lettered instead of retried.
    pub max_deliveries: Option<u32>,
    /// Work-queue setting: where dead-lettered messages are published; `{group}` and
    /// `{topic}` are replaced. Unset: they are dropped and counted.
    pub dead_letter_topic: Option<String>,
    /// Work-queue setting: per-key order, `"topic"`, `"publisher"` or
    /// `"topic_levels:PATTERN"`.
    pub ordered_by: Option<String>,
    /// Work-queue setting: queued messages older than this many seconds are dropped.
    pub max_age_secs: Option<u64>,
    /// Work-queue setting: the group queue keeps only the newest message per `ordered_by` key.
    #[serde(default)]
    pub compact: bool,
    /// Work-queue setting: what a full group queue does with a new message.
    #[serde(default)]
    pub overflow: Overflow,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupStrategyConfig {
    /// The share name, or a glob over share names.
    pub name: String,
    /// A built-in strategy name.
    pub strategy: Option<String>,
    /// A strategy component file (relative paths are relative to the config file).
    pub plugin: Option<PathBuf>,
    /// Handed to the strategy's `init`; values may be strings, numbers or booleans.
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    /// Serve the plugin's WASI imports from a context that grants nothing (no files, env,
    /// network or stdio; clocks and random only). Python and JavaScript components need it;
    /// without it, a component importing WASI clocks, random, files or sockets is refused.
    #[serde(default)]
    pub wasi: bool,
    /// This plugin's memory limit, overriding `shared.plugin_memory_mib` (Python and
    /// JavaScript runtimes need tens of MiB).
    pub memory_mib: Option<u32>,
    /// This plugin's per-call deadline, overriding `shared.plugin_deadline_ms`.
    pub deadline_ms: Option<u64>,
    /// This plugin's instantiate + `init` deadline, overriding `shared.plugin_init_deadline_ms`.
    pub init_deadline_ms: Option<u64>,
    /// Work-queue setting (off when unset): a QoS 1 copy a connected member has not
    /// acknowledged within this many milliseconds goes to another member.
    pub ack_timeout_ms: Option<u64>,
    /// Work-queue setting: failed deliveries (disconnect, ack timeout, PUBACK/PUBREC >= 0x80)
    /// after which a message is dead-lettered instead of retried.
    pub max_deliveries: Option<u32>,
    /// Work-queue setting: where dead-lettered messages are published; `{group}` and
    /// `{topic}` are replaced. Unset: they are dropped and counted.
    pub dead_letter_topic: Option<String>,
    /// Work-queue setting: per-key order, `"topic"`, `"publisher"` or
    /// `"topic_levels:PATTERN"`.
    pub ordered_by: Option<String>,
    /// Work-queue setting: queued messages older than this many seconds are dropped.
    pub max_age_secs: Option<u64>,
    /// Work-queue setting: the group queue keeps only the newest message per `ordered_by` key.
    #[serde(default)]
    pub compact: bool,
    /// Work-queue setting: what a full group queue does with a new message.
    #[serde(default)]
    pub overflow: Overflow,
}

/// What a full group queue does with a new message.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Refuse it (v5 publishers hear PUBACK/PUBREC 0x97).
    #[default]
    RejectNew,
    /// Drop the oldest waiting message to make room.
    DropOldest,
}

/// A group's work-queue settings, as a `[[shared.groups]]` rule or a `[[shared.declared]]`
/// entry writes them (the same keys in both).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueConfig {
    pub ack_timeout_ms: Option<u64>,
    pub max_deliveries: Option<u32>,
    pub dead_letter_topic: Option<String>,
    pub ordered_by: Option<String>,
    pub max_age_secs: Option<u64>,
    pub compact: bool,
    pub overflow: Overflow,
}

impl QueueConfig {
    /// True when no setting is made: the group behaves as a plain shared group.
    pub fn is_default(&self) -> bool {
        *self == QueueConfig::default()
    }

    /// Checks the values; `key` names the entry (`shared.groups[2]`).
    pub fn validate(&self, key: &str) -> Result<(), (String, String)> {
        let bad = |field: &str, reason: String| Err((format!("{key}.{field}"), reason));
        if self.ack_timeout_ms == Some(0) {
            return bad(
                "ack_timeout_ms",
                "must be at least 1 (leave it out for none)".into(),
            );
        }
        if self.max_deliveries == Some(0) {
            return bad(
                "max_deliveries",
                "must be at least 1 (leave it out for no limit)".into(),
            );
        }
        if self.max_age_secs == Some(0) {
            return bad(
                "max_age_secs",
                "must be at least 1 (leave it out for no limit)".into(),
            );
        }
        if let Some(topic) = &self.dead_letter_topic {
            let sample = topic.replace("{group}", "g").replace("{topic}", "t");
            if let Err(e) = crate::topic::validate_topic_name(&sample, usize::MAX) {
                return bad(
                    "dead_letter_topic",
                    format!("{topic:?} is not a topic name: {e}"),
                );
            }
        }
        if let Some(spec) = &self.ordered_by {
            if let Err(reason) = crate::broker::shared::settings::KeySpec::parse(spec) {
                return bad("ordered_by", reason);
            }
        }
        if self.compact && self.ordered_by.is_none() {
            return bad(
                "compact",
                "needs `ordered_by`: it keeps the newest message per key".into(),
            );
        }
        Ok(())
    }
}

macro_rules! queue_config_of {
    ($entry:expr) => {
        QueueConfig {
            ack_timeout_ms: $entry.ack_timeout_ms,
            max_deliveries: $entry.max_deliveries,
            dead_letter_topic: $entry.dead_letter_topic.clone(),
            ordered_by: $entry.ordered_by.clone(),
            max_age_secs: $entry.max_age_secs,
            compact: $entry.compact,
            overflow: $entry.overflow,
        }
    };
}

impl DeclaredGroupConfig {
    pub fn queue_config(&self) -> QueueConfig {
        queue_config_of!(self)
    }
}

impl GroupStrategyConfig {
    pub fn queue_config(&self) -> QueueConfig {
        queue_config_of!(self)
    }

    /// Params as the WIT contract passes them: strings.
    pub fn params_as_strings(&self) -> Vec<(String, String)> {
        self.params
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (key.clone(), text)
            })
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accept clients that send no username. Unset: yes while every MQTT listener (TCP, TLS,
    /// WebSocket) is on a loopback address; a config with any other listener must say.
    pub allow_anonymous: Option<bool>,
    /// The client ids a user may connect with, e.g. `"%u-*"`: `%u` is the username, `*` any
    /// run of characters (`broker::auth::client_id_pattern`). Unset: any client id.
    pub client_id_pattern: Option<String>,
    /// username = password pairs, in clear text (a warning at start says so); when empty and
    /// no `password_file` is set, any credentials are accepted.
    pub users: BTreeMap<String, String>,
    /// A Mosquitto-format ACL file (relative to the config file); unset, everything is allowed.
    pub acl_file: Option<PathBuf>,
    /// A password file (relative to the config file) in mosquitto's `mosquitto_passwd` format
    /// or written by `sharq passwd`; `""` for none. Re-read on SIGHUP and `sharq reload`.
    pub password_file: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listeners: vec![SocketAddr::from(([127, 0, 0, 1], 1883))],
            tls_listeners: Vec::new(),
            ws_listeners: Vec::new(),
            log: "info".to_owned(),
            sys_interval_secs: 10,
            pid_file: None,
            log_format: LogFormat::Text,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_packet_size: 1024 * 1024,
            receive_maximum: 1024,
            max_inflight: 64,
            max_queued_messages: 10_000,
            max_queued_bytes: 64 * 1024 * 1024,
            max_topic_levels: 64,
            max_connections: 100_000,
            max_connections_per_ip: 0,
            connect_timeout_secs: 10,
            topic_alias_maximum: 64,
            outgoing_topic_alias_maximum: 64,
            max_retained_messages: 1_000_000,
            max_retained_bytes: 256 * 1024 * 1024,
            max_subscriptions_per_client: 10_000,
            max_sessions: 100_000,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_expiry_secs: 7 * 24 * 3600,
        }
    }
}

impl Default for KeepAliveConfig {
    fn default() -> Self {
        KeepAliveConfig {
            max_secs: u16::MAX,
            server_secs: None,
        }
    }
}

impl Default for SharedConfig {
    fn default() -> Self {
        SharedConfig {
            group_queue_max_messages: 100_000,
            group_queue_max_bytes: 256 * 1024 * 1024,
            default_strategy: "round_robin".to_owned(),
            plugin_memory_mib: DEFAULT_PLUGIN_MEMORY_MIB,
            plugin_deadline_ms: DEFAULT_PLUGIN_DEADLINE_MS,
            plugin_init_deadline_ms: DEFAULT_PLUGIN_INIT_DEADLINE_MS,
            plugin_max_failures: 5,
            plugin_cache_dir: None,
            plugin_dir: None,
            groups: Vec::new(),
            legacy_colon_syntax: false,
            group_linger_secs: 60,
            declared: Vec::new(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous: None,
            client_id_pattern: None,
            users: BTreeMap::new(),
            acl_file: None,
            password_file: PathBuf::new(),
        }
    }
}

#[allow(clippy::derivable_impls)]
impl Default for Config {
    fn default() -> Self {
        Config {
            base_dir: None,
            source: None,
            server: ServerConfig::default(),
            limits: LimitsConfig::default(),
            session: SessionConfig::default(),
            keep_alive: KeepAliveConfig::default(),
            shared: SharedConfig::default(),
            auth: AuthConfig::default(),
            storage: StorageConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

impl Config {
    /// Parses TOML text; `origin` names the source (a path, or "embedded default") in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Config::from_toml(&text, &path.display().to_string())?;
        config.base_dir = path.parent().map(Path::to_path_buf);
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// A path from the config, resolved against the config file's directory.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        match &self.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.to_path_buf(),
        }
    }

    pub fn embedded_default() -> Result<Config, ConfigError> {
        Config::from_toml(EMBEDDED_DEFAULT, "embedded default")
    }

    /// Every address MQTT is served on: TCP, TLS and WebSocket listeners.
    pub fn mqtt_listen_addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let server = &self.server;
        server
            .listeners
            .iter()
            .copied()
            .chain(server.tls_listeners.iter().map(|l| l.address))
            .chain(server.ws_listeners.iter().map(|l| l.address))
    }

    /// Whether clients without a username may connect: `auth.allow_anonymous`, or when unset,
    /// whether every MQTT listener is on loopback (a file with another one must set the key;
    /// a config built in code gets the safe answer).
    pub fn allows_anonymous(&self) -> bool {
        self.auth.allow_anonymous.unwrap_or_else(|| {
            self.mqtt_listen_addresses()
                .all(|address| address.ip().is_loopback())
        })
    }

    /// `[auth]` with `allow_anonymous` decided (see [`Config::allows_anonymous`]).
    pub fn resolved_auth(&self) -> AuthConfig {
        AuthConfig {
            allow_anonymous: Some(self.allows_anonymous()),
            ..self.auth.clone()
        }
    }

    /// Checks the values serde cannot: ranges and relations between keys.
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            origin: origin.to_owned(),
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        if self.server.listeners.is_empty()
            && self.server.tls_listeners.is_empty()
            && self.server.ws_listeners.is_empty()
        {
            return Err(invalid(
                "server.listeners",
                "at least one address is needed (or a TLS or WebSocket listener)",
            ));
        }
        for (index, tls) in self.server.tls_listeners.iter().enumerate() {
            let key = |field: &str| format!("server.tls_listeners[{index}].{field}");
            if tls.client_ca.is_none() {
                if tls.require_client_cert {
                    return Err(invalid(
                        &key("require_client_cert"),
                        "needs `client_ca` to verify client certificates against",
                    ));
                }
                if tls.use_identity_as_username {
                    return Err(invalid(
                        &key("use_identity_as_username"),
                        "needs `client_ca` to verify client certificates against",
                    ));
                }
            }
        }
        for (index, ws) in self.server.ws_listeners.iter().enumerate() {
            let key = |field: &str| format!("server.ws_listeners[{index}].{field}");
            if !ws.path.starts_with('/') {
                return Err(invalid(
                    &key("path"),
                    &format!("must start with `/`, got {:?}", ws.path),
                ));
            }
            match (&ws.cert, &ws.key) {
                (Some(_), None) => {
                    return Err(invalid(&key("key"), "`cert` is set: wss needs `key` too"))
                }
                (None, Some(_)) => {
                    return Err(invalid(&key("cert"), "`key` is set: wss needs `cert` too"))
                }
                _ => {}
            }
        }
        if !self.http.listen.is_empty() {
            let Ok(address) = self.http.listen.parse::<SocketAddr>() else {
                return Err(invalid(
                    "http.listen",
                    &format!(
                        "must be ADDR:PORT such as \"127.0.0.1:8088\", got {:?}",
                        self.http.listen
                    ),
                ));
            };
            if !address.ip().is_loopback()
                && self.http.token.is_empty()
                && self.http.users.is_empty()
            {
                return Err(invalid(
                    "http.listen",
                    &format!("{address} is not a loopback address: set `http.token` (or `http.users`) so that only you can use the API"),
                ));
            }
        }
        if self.auth.allow_anonymous.is_none() {
            if let Some(address) = self.mqtt_listen_addresses().find(|a| !a.ip().is_loopback()) {
                return Err(invalid(
                    "auth.allow_anonymous",
                    &format!("the listener on {address} is not on a loopback address: say whether clients without a username may connect (`allow_anonymous = false`, with `users` or `password_file`, or `true` to allow them)"),
                ));
            }
        }
        if let Some(pattern) = &self.auth.client_id_pattern {
            if let Err(e) = ClientIdPattern::parse(pattern) {
                return Err(invalid("auth.client_id_pattern", &e.to_string()));
            }
        }
        if self.http.users.iter().any(|u| u.is_empty()) {
            return Err(invalid("http.users", "a user name cannot be empty"));
        }
        for (index, host) in self.http.allowed_hosts.iter().enumerate() {
            if crate::http::host::Authority::parse(host).is_none() {
                return Err(invalid(
                    &format!("http.allowed_hosts[{index}]"),
                    &format!("must be a host name or address with an optional :PORT, such as \"sharq.example.com\" or \"10.0.0.5:8088\", got {host:?}"),
                ));
            }
        }
        if self
            .shared
            .plugin_dir
            .as_ref()
            .is_some_and(|dir| dir.as_os_str().is_empty())
        {
            return Err(invalid(
                "shared.plugin_dir",
                "must name a directory (leave the key out to refuse plugin paths through the API)",
            ));
        }
        if self.limits.max_packet_size < 64 || self.limits.max_packet_size > 268_435_460 {
            return Err(invalid(
                "limits.max_packet_size",
                "must be between 64 and 268435460 bytes",
            ));
        }
        if self.storage.commit_interval_ms > 1000 {
            return Err(invalid(
                "storage.commit_interval_ms",
                "must be at most 1000 (acknowledgements wait for the commit)",
            ));
        }
        if self.storage.memory_window_messages < 2 {
            return Err(invalid(
                "storage.memory_window_messages",
                "must be at least 2",
            ));
        }
        if self.storage.memory_window_bytes == 0 {
            return Err(invalid("storage.memory_window_bytes", "must be at least 1"));
        }
        if self.limits.receive_maximum == 0 {
            return Err(invalid("limits.receive_maximum", "must be at least 1"));
        }
        if self.limits.max_inflight == 0 {
            return Err(invalid("limits.max_inflight", "must be at least 1"));
        }
        if self.limits.max_queued_messages == 0 {
            return Err(invalid("limits.max_queued_messages", "must be at least 1"));
        }
        if self.limits.max_topic_levels == 0 {
            return Err(invalid("limits.max_topic_levels", "must be at least 1"));
        }
        if self.limits.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be at least 1"));
        }
        if self.limits.connect_timeout_secs == 0 {
            return Err(invalid("limits.connect_timeout_secs", "must be at least 1"));
        }
        if self.shared.group_queue_max_messages == 0 {
            return Err(invalid(
                "shared.group_queue_max_messages",
                "must be at least 1",
            ));
        }
        if self.keep_alive.server_secs == Some(0) {
            return Err(invalid(
                "keep_alive.server_secs",
                "0 would turn keep-alive off for every client; leave the key out instead",
            ));
        }
        if self.shared.plugin_memory_mib == 0 {
            return Err(invalid("shared.plugin_memory_mib", "must be at least 1"));
        }
        if self.shared.plugin_deadline_ms == 0 {
            return Err(invalid("shared.plugin_deadline_ms", "must be at least 1"));
        }
        if self.shared.plugin_init_deadline_ms == 0 {
            return Err(invalid(
                "shared.plugin_init_deadline_ms",
                "must be at least 1",
            ));
        }
        for group in &self.shared.groups {
            match (&group.strategy, &group.plugin) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "shared.groups",
                        &format!(
                            "group `{}` sets both `strategy` and `plugin`; choose one",
                            group.name
                        ),
                    ))
                }
                // Only work-queue settings: the group keeps the default strategy.
                (None, None) if !group.queue_config().is_default() => {}
                (None, None) => {
                    return Err(invalid(
                        "shared.groups",
                        &format!(
                            "group `{}` needs `strategy` or `plugin` (or work-queue settings only)",
                            group.name
                        ),
                    ))
                }
                _ => {}
            }
            if group.memory_mib == Some(0) {
                return Err(invalid(
                    "shared.groups.memory_mib",
                    &format!("group `{}`: must be at least 1", group.name),
                ));
            }
            if group.deadline_ms == Some(0) {
                return Err(invalid(
                    "shared.groups.deadline_ms",
                    &format!("group `{}`: must be at least 1", group.name),
                ));
            }
            if group.init_deadline_ms == Some(0) {
                return Err(invalid(
                    "shared.groups.init_deadline_ms",
                    &format!("group `{}`: must be at least 1", group.name),
                ));
            }
            for (key, value) in &group.params {
                if matches!(value, toml::Value::Array(_) | toml::Value::Table(_)) {
                    return Err(invalid(
                        "shared.groups.params",
                        &format!(
                            "group `{}` param `{key}` must be a string, number or boolean",
                            group.name
                        ),
                    ));
                }
            }
        }
        for (index, rule) in self.shared.groups.iter().enumerate() {
            if let Err((key, reason)) = rule
                .queue_config()
                .validate(&format!("shared.groups[{index}]"))
            {
                return Err(invalid(&key, &reason));
            }
        }
        for (index, declared) in self.shared.declared.iter().enumerate() {
            if let Err((key, reason)) = declared
                .queue_config()
                .validate(&format!("shared.declared[{index}]"))
            {
                return Err(invalid(&key, &reason));
            }
            if let Err(e) = crate::topic::validate_share_name(&declared.name) {
                return Err(invalid(
                    &format!("shared.declared[{index}].name"),
                    &format!("{:?}: {e}", declared.name),
                ));
            }
            if let Err(e) =
                crate::topic::validate_filter(&declared.filter, self.limits.max_topic_levels)
            {
                return Err(invalid(
                    &format!("shared.declared[{index}].filter"),
                    &format!("{:?}: {e}", declared.filter),
                ));
            }
        }
        if !self.auth.password_file.as_os_str().is_empty()
            && self.auth.password_file.file_name().is_none()
        {
            return Err(invalid(
                "auth.password_file",
                "must name a file (\"\" for none)",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.server.log) {
            return Err(invalid("server.log", &e.to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_may_set_only_work_queue_settings_and_bad_ones_are_named() {
        let config = Config::from_toml(
            "[[shared.groups]]\nname = \"jobs\"\nack_timeout_ms = 500\nordered_by = \"topic_levels:d/{id}/#\"\noverflow = \"drop_oldest\"\n",
            "test",
        )
        .unwrap();
        let queue = config.shared.groups[0].queue_config();
        assert_eq!(queue.ack_timeout_ms, Some(500));
        assert_eq!(queue.overflow, Overflow::DropOldest);
        let err = Config::from_toml("[[shared.groups]]\nname = \"jobs\"\n", "test").unwrap_err();
        assert!(err.to_string().contains("needs `strategy`"), "{err}");
        for (toml, key) in [
            ("ordered_by = \"device\"", "shared.groups[0].ordered_by"),
            ("compact = true", "shared.groups[0].compact"),
            ("ack_timeout_ms = 0", "shared.groups[0].ack_timeout_ms"),
            (
                "dead_letter_topic = \"dlq/#\"",
                "shared.groups[0].dead_letter_topic",
            ),
        ] {
            let text = format!("[[shared.groups]]\nname = \"jobs\"\n{toml}\n");
            let err = Config::from_toml(&text, "test").unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let err = Config::from_toml(
            "[[shared.declared]]\nname = \"j\"\nfilter = \"j\"\nmax_age_secs = 0\n",
            "test",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("shared.declared[0].max_age_secs"), "{err}");
    }

    #[test]
    fn embedded_default_parses_and_listens_on_1883() {
        let config = Config::embedded_default().unwrap();
        assert_eq!(
            config.server.listeners,
            vec!["127.0.0.1:1883".parse::<SocketAddr>().unwrap()]
        );
        // Durable out of the box, in a directory the repository ignores.
        assert_eq!(
            config.storage.resolved_dir(None),
            Some(PathBuf::from("sharq-data"))
        );
        assert!(include_str!("../.gitignore").contains("sharq-data/"));
    }

    /// README's configuration reference lists every key with its default: keep it true.
    #[test]
    fn readme_reference_is_the_default() {
        let readme = include_str!("../README.md");
        let section = &readme[readme.find("## Configuration").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let block = &section[start..start + section[start..].find("```").unwrap()];
        assert_eq!(
            Config::from_toml(block, "README").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::from_toml("", "t").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[limits]\nmax_pakcet_size = 10\n", "t").unwrap_err();
        assert!(err.to_string().contains("max_pakcet_size"), "{err}");
    }

    #[test]
    fn anonymous_access_is_the_default_on_loopback_only() {
        let loopback = Config::from_toml(
            "[server]\nlisteners = [\"127.0.0.1:1883\", \"[::1]:1883\"]\n",
            "t",
        )
        .unwrap();
        assert!(loopback.allows_anonymous());
        for off_loopback in [
            "[server]\nlisteners = [\"0.0.0.0:1883\"]\n",
            "[server]\nlisteners = [\"127.0.0.1:1883\", \"192.0.2.1:1883\"]\n",
            "[[server.ws_listeners]]\naddress = \"[::]:8080\"\npath = \"/mqtt\"\n",
            "[[server.tls_listeners]]\naddress = \"0.0.0.0:8883\"\ncert = \"c\"\nkey = \"k\"\n",
        ] {
            let err = Config::from_toml(off_loopback, "t").unwrap_err();
            assert!(err.to_string().contains("auth.allow_anonymous"), "{err}");
            for (allow, allowed) in [("true", true), ("false", false)] {
                let text = format!("{off_loopback}[auth]\nallow_anonymous = {allow}\n");
                assert_eq!(
                    Config::from_toml(&text, "t").unwrap().allows_anonymous(),
                    allowed
                );
            }
        }
        // A config built in code gets the safe answer instead of an error.
        let mut in_code = Config::default();
        in_code.server.listeners = vec!["0.0.0.0:1883".parse().unwrap()];
        assert!(!in_code.allows_anonymous());
        assert_eq!(in_code.resolved_auth().allow_anonymous, Some(false));
    }

    #[test]
    fn a_bad_client_id_pattern_names_the_key() {
        let err = Config::from_toml("[auth]\nclient_id_pattern = \"%c-*\"\n", "t").unwrap_err();
        assert!(err.to_string().contains("auth.client_id_pattern"), "{err}");
        Config::from_toml("[auth]\nclient_id_pattern = \"%u-*\"\n", "t").unwrap();
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = Config::from_toml("[limits]\nreceive_maximum = \"x\"\n", "t").unwrap_err();
        assert!(err.to_string().contains("receive_maximum"), "{err}");
    }

    #[test]
    fn out_of_range_value_names_the_key() {
        let err = Config::from_toml("[limits]\nreceive_maximum = 0\n", "t").unwrap_err();
        assert!(err.to_string().contains("limits.receive_maximum"), "{err}");
        let err = Config::from_toml("[server]\nlisteners = []\n", "t").unwrap_err();
        assert!(err.to_string().contains("server.listeners"), "{err}");
        let err = Config::from_toml("[shared]\nplugin_init_deadline_ms = 0\n", "t").unwrap_err();
        assert!(
            err.to_string().contains("shared.plugin_init_deadline_ms"),
            "{err}"
        );
    }

    #[test]
    fn declared_groups_and_linger_parse() {
        let config = Config::from_toml(
            "[shared]\ngroup_linger_secs = 5\n\n[[shared.declared]]\nname = \"jobs\"\nfilter = \"jobs/#\"\n\n[[shared.declared]]\nname = \"$queue\"\nfilter = \"tasks/+\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(config.shared.group_linger_secs, 5);
        assert_eq!(
            config.shared.declared,
            vec![
                DeclaredGroupConfig {
                    name: "jobs".to_owned(),
                    filter: "jobs/#".to_owned(),
                    ..Default::default()
                },
                DeclaredGroupConfig {
                    name: "$queue".to_owned(),
                    filter: "tasks/+".to_owned(),
                    ..Default::default()
                },
            ]
        );
        assert_eq!(Config::default().shared.group_linger_secs, 60);
    }

    #[test]
    fn bad_declared_group_names_the_key() {
        let entry = |name: &str, filter: &str| {
            format!(
                "[[shared.declared]]\nname = \"ok\"\nfilter = \"a/b\"\n\n[[shared.declared]]\nname = {name:?}\nfilter = {filter:?}\n"
            )
        };
        for bad_name in ["", "a/b", "a+", "#"] {
            let err = Config::from_toml(&entry(bad_name, "jobs/#"), "t")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("shared.declared[1].name"),
                "{bad_name:?}: {err}"
            );
        }
        for bad_filter in ["", "a/#/b", "a+", "x#"] {
            let err = Config::from_toml(&entry("jobs", bad_filter), "t")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("shared.declared[1].filter"),
                "{bad_filter:?}: {err}"
            );
        }
        let err = Config::from_toml(
            "[limits]\nmax_topic_levels = 2\n[[shared.declared]]\nname = \"g\"\nfilter = \"a/b/c\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("shared.declared[0].filter"), "{err}");
        let err = Config::from_toml(
            "[[shared.declared]]\nname = \"g\"\nfilter = \"a\"\nstrategy = \"x\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("strategy"), "{err}");
    }

    #[test]
    fn tls_and_ws_listeners_parse_with_defaults() {
        let config = Config::from_toml(
            "[[server.tls_listeners]]\naddress = \"127.0.0.1:8883\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n\n[[server.ws_listeners]]\naddress = \"127.0.0.1:8080\"\n",
            "t",
        )
        .unwrap();
        let tls = &config.server.tls_listeners[0];
        assert_eq!(tls.cert, PathBuf::from("c.pem"));
        assert!(tls.client_ca.is_none() && !tls.require_client_cert);
        assert!(!tls.use_identity_as_username);
        assert_eq!(config.server.ws_listeners[0].path, "/mqtt");
        assert!(config.server.ws_listeners[0].cert.is_none());
    }

    #[test]
    fn bad_tls_and_ws_listeners_name_the_key() {
        let tls = |extra: &str| {
            format!("[[server.tls_listeners]]\naddress = \"127.0.0.1:8883\"\ncert = \"c\"\nkey = \"k\"\n{extra}")
        };
        let err = Config::from_toml(&tls("require_client_cert = true\n"), "t").unwrap_err();
        assert!(
            err.to_string()
                .contains("server.tls_listeners[0].require_client_cert"),
            "{err}"
        );
        let err = Config::from_toml(&tls("use_identity_as_username = true\n"), "t").unwrap_err();
        assert!(
            err.to_string()
                .contains("server.tls_listeners[0].use_identity_as_username"),
            "{err}"
        );
        let err = Config::from_toml(&tls("colour = 1\n"), "t").unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let ws =
            |extra: &str| format!("[[server.ws_listeners]]\naddress = \"127.0.0.1:80\"\n{extra}");
        let err = Config::from_toml(&ws("path = \"mqtt\"\n"), "t").unwrap_err();
        assert!(
            err.to_string().contains("server.ws_listeners[0].path"),
            "{err}"
        );
        let err = Config::from_toml(&ws("cert = \"c\"\n"), "t").unwrap_err();
        assert!(
            err.to_string().contains("server.ws_listeners[0].key"),
            "{err}"
        );
        // A TLS-only broker needs no TCP listener.
        let config = Config::from_toml(&format!("[server]\nlisteners = []\n{}", tls("")), "t");
        assert!(config.is_ok(), "{config:?}");
    }

    #[test]
    fn log_format_is_text_or_json_and_a_bad_one_names_the_key() {
        let parse = |value: &str| {
            Config::from_toml(&format!("[server]\nlog_format = {value}\n"), "t")
                .map(|c| c.server.log_format)
        };
        assert_eq!(parse("\"text\"").unwrap(), LogFormat::Text);
        assert_eq!(parse("\"json\"").unwrap(), LogFormat::Json);
        for bad in ["\"xml\"", "\"JSON\"", "1"] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("log_format"), "{bad}: {err}");
        }
        let err = parse("\"xml\"").unwrap_err().to_string();
        assert!(
            err.contains("server.log_format") && err.contains("\"json\""),
            "{err}"
        );
    }

    #[test]
    fn allowed_hosts_and_plugin_dir_parse_and_bad_ones_name_the_key() {
        let config = Config::from_toml(
            "[http]\nallowed_hosts = [\"sharq.example\", \"10.0.0.5:8088\", \"[::1]:80\"]\n[shared]\nplugin_dir = \"plugins\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(config.http.allowed_hosts.len(), 3);
        assert_eq!(config.shared.plugin_dir, Some(PathBuf::from("plugins")));
        for bad in ["http://x", "a b", "", "host:port", "x/y"] {
            let err =
                Config::from_toml(&format!("[http]\nallowed_hosts = [\"ok\", {bad:?}]\n"), "t")
                    .unwrap_err()
                    .to_string();
            assert!(err.contains("http.allowed_hosts[1]"), "{bad}: {err}");
        }
        let err = Config::from_toml("[shared]\nplugin_dir = \"\"\n", "t").unwrap_err();
        assert!(err.to_string().contains("shared.plugin_dir"), "{err}");
    }
}
