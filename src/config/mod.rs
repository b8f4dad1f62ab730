//! The broker's configuration: a TOML file, every key optional, unknown keys refused. One file
//! per section; each checks the values serde cannot (ranges, relations between keys) and names
//! the key it refuses. The lowest layer that knows what a key means: it imports nothing from
//! the broker or HTTP.

mod auth;
mod http;
mod limits;
mod ordering;
mod queue;
mod server;
mod shared;
mod storage;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use auth::AuthConfig;
pub use http::{Authority, HostName, HttpConfig};
pub use limits::{KeepAliveConfig, LimitsConfig, SessionConfig};
pub use ordering::KeySpec;
pub use queue::{GroupSettings, Overflow, QueueConfig};
pub use server::{LogFormat, ServerConfig, TlsListenerConfig, WsListenerConfig};
pub use shared::{
    DeclaredGroupConfig, GroupStrategyConfig, SharedConfig, DEFAULT_PLUGIN_DEADLINE_MS,
    DEFAULT_PLUGIN_INIT_DEADLINE_MS, DEFAULT_PLUGIN_MEMORY_MIB,
};
pub use storage::StorageConfig;

/// The configuration the binary starts with when no `--config` is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../default.toml");

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

/// A value a section refuses: the key, and why. [`Config::from_toml`] adds where the config
/// came from to make a [`ConfigError::Invalid`].
#[derive(Debug)]
struct Invalid {
    key: String,
    reason: String,
}

impl Invalid {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Invalid {
        Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
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
        config
            .validate()
            .map_err(|Invalid { key, reason }| ConfigError::Invalid {
                origin: origin.to_owned(),
                key,
                reason,
            })?;
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

    pub fn embedded_default() -> Result<Config, ConfigError> {
        Config::from_toml(EMBEDDED_DEFAULT, "embedded default")
    }

    /// A path from the config, resolved against the config file's directory.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        match &self.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// `[auth] acl_file`, resolved against the config file's directory.
    pub fn acl_path(&self) -> Option<PathBuf> {
        let path = self.auth.acl_file.as_ref()?;
        Some(self.resolve_path(path))
    }

    /// Every address MQTT is served on: TCP, TLS and WebSocket listeners.
    pub fn mqtt_listen_addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.server.mqtt_listen_addresses()
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

    /// Each section's checks; the first value refused is reported.
    fn validate(&self) -> Result<(), Invalid> {
        self.server.validate()?;
        self.http.validate()?;
        self.auth.validate(self.mqtt_listen_addresses())?;
        self.limits.validate()?;
        self.keep_alive.validate()?;
        self.storage.validate()?;
        self.shared.validate(self.limits.max_topic_levels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(include_str!("../../.gitignore").contains("sharq-data/"));
    }

    /// README's configuration reference lists every key with its default: keep it true.
    #[test]
    fn readme_reference_is_the_default() {
        let readme = include_str!("../../README.md");
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
}
