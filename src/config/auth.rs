//! `[auth]`: who may connect (anonymous clients, users, a password file, client id patterns)
//! and the ACL file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::Invalid;
use crate::client_id_pattern::ClientIdPattern;

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

impl AuthConfig {
    /// `listeners` are every MQTT listen address: off loopback, `allow_anonymous` must be said.
    pub(super) fn validate(
        &self,
        mut listeners: impl Iterator<Item = SocketAddr>,
    ) -> Result<(), Invalid> {
        if self.allow_anonymous.is_none() {
            if let Some(address) = listeners.find(|a| !a.ip().is_loopback()) {
                return Err(Invalid::new(
                    "auth.allow_anonymous",
                    format!("the listener on {address} is not on a loopback address: say whether clients without a username may connect (`allow_anonymous = false`, with `users` or `password_file`, or `true` to allow them)"),
                ));
            }
        }
        if let Some(pattern) = &self.client_id_pattern {
            if let Err(e) = ClientIdPattern::parse(pattern) {
                return Err(Invalid::new("auth.client_id_pattern", e.to_string()));
            }
        }
        if !self.password_file.as_os_str().is_empty() && self.password_file.file_name().is_none() {
            return Err(Invalid::new(
                "auth.password_file",
                "must name a file (\"\" for none)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

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
}
