//! `[http]`: Prometheus metrics, the admin API and the live dashboard; and the syntax of a host
//! name with an optional port, which `http.allowed_hosts` entries and `Host` headers share.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Deserialize;

use super::Invalid;

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

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if !self.listen.is_empty() {
            let Ok(address) = self.listen.parse::<SocketAddr>() else {
                return Err(Invalid::new(
                    "http.listen",
                    format!(
                        "must be ADDR:PORT such as \"127.0.0.1:8088\", got {:?}",
                        self.listen
                    ),
                ));
            };
            if !address.ip().is_loopback() && self.token.is_empty() && self.users.is_empty() {
                return Err(Invalid::new(
                    "http.listen",
                    format!("{address} is not a loopback address: set `http.token` (or `http.users`) so that only you can use the API"),
                ));
            }
        }
        if self.users.iter().any(|u| u.is_empty()) {
            return Err(Invalid::new("http.users", "a user name cannot be empty"));
        }
        for (index, host) in self.allowed_hosts.iter().enumerate() {
            if Authority::parse(host).is_none() {
                return Err(Invalid::new(
                    format!("http.allowed_hosts[{index}]"),
                    format!("must be a host name or address with an optional :PORT, such as \"sharq.example.com\" or \"10.0.0.5:8088\", got {host:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// The host of a `Host` header or an `http.allowed_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    Ip(IpAddr),
    /// Lower case, without a trailing dot.
    Name(String),
}

/// A host and an optional port, as `Host` and `http.allowed_hosts` have them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub host: HostName,
    pub port: Option<u16>,
}

impl Authority {
    /// `name`, `name:port`, `a.b.c.d[:port]` or `[v6][:port]`; `None` for anything else
    /// (userinfo, paths, empty names, characters no DNS name has).
    pub fn parse(text: &str) -> Option<Authority> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']')?;
            let ip: Ipv6Addr = inside.parse().ok()?;
            let port = match after {
                "" => None,
                _ => Some(parse_port(after.strip_prefix(':')?)?),
            };
            (HostName::Ip(IpAddr::V6(ip)), port)
        } else {
            let (name, port) = match text.rsplit_once(':') {
                Some((name, port)) => (name, Some(parse_port(port)?)),
                None => (text, None),
            };
            let name = name.strip_suffix('.').unwrap_or(name);
            if let Ok(ip) = name.parse::<Ipv4Addr>() {
                (HostName::Ip(IpAddr::V4(ip)), port)
            } else {
                let valid = !name.is_empty()
                    && name.len() <= 253
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
                    && !name.split('.').any(str::is_empty);
                if !valid {
                    return None;
                }
                (HostName::Name(name.to_ascii_lowercase()), port)
            }
        };
        Some(Authority { host, port })
    }
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::Config;

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

    #[test]
    fn authorities_parse_and_garbage_does_not() {
        let parsed = Authority::parse("Broker.Example.:8088").unwrap();
        assert_eq!(parsed.host, HostName::Name("broker.example".into()));
        assert_eq!(parsed.port, Some(8088));
        let parsed = Authority::parse("[::1]:80").unwrap();
        assert_eq!(parsed.host, HostName::Ip("::1".parse().unwrap()));
        assert_eq!(Authority::parse("[::1]").unwrap().port, None);
        for bad in [
            "",
            ":80",
            "a:",
            "a:x",
            "a:99999",
            "user@host",
            "host/path",
            "a..b",
            "[::1",
            "[::1]x",
            "::1",
            "http://a",
            "a b",
        ] {
            assert_eq!(Authority::parse(bad), None, "{bad:?}");
        }
    }
}
