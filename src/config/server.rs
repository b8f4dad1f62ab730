//! `[server]`: the MQTT listeners (TCP, TLS, WebSocket), logging, `$SYS` and the pid file.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::Invalid;

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

impl ServerConfig {
    /// Every address MQTT is served on: TCP, TLS and WebSocket listeners.
    pub fn mqtt_listen_addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.listeners
            .iter()
            .copied()
            .chain(self.tls_listeners.iter().map(|l| l.address))
            .chain(self.ws_listeners.iter().map(|l| l.address))
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.listeners.is_empty()
            && self.tls_listeners.is_empty()
            && self.ws_listeners.is_empty()
        {
            return Err(Invalid::new(
                "server.listeners",
                "at least one address is needed (or a TLS or WebSocket listener)",
            ));
        }
        for (index, tls) in self.tls_listeners.iter().enumerate() {
            let key = |field: &str| format!("server.tls_listeners[{index}].{field}");
            if tls.client_ca.is_none() {
                if tls.require_client_cert {
                    return Err(Invalid::new(
                        key("require_client_cert"),
                        "needs `client_ca` to verify client certificates against",
                    ));
                }
                if tls.use_identity_as_username {
                    return Err(Invalid::new(
                        key("use_identity_as_username"),
                        "needs `client_ca` to verify client certificates against",
                    ));
                }
            }
        }
        for (index, ws) in self.ws_listeners.iter().enumerate() {
            let key = |field: &str| format!("server.ws_listeners[{index}].{field}");
            if !ws.path.starts_with('/') {
                return Err(Invalid::new(
                    key("path"),
                    format!("must start with `/`, got {:?}", ws.path),
                ));
            }
            match (&ws.cert, &ws.key) {
                (Some(_), None) => {
                    return Err(Invalid::new(
                        key("key"),
                        "`cert` is set: wss needs `key` too",
                    ))
                }
                (None, Some(_)) => {
                    return Err(Invalid::new(
                        key("cert"),
                        "`key` is set: wss needs `cert` too",
                    ))
                }
                _ => {}
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return Err(Invalid::new("server.log", e.to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::LogFormat;
    use crate::config::Config;

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
}
