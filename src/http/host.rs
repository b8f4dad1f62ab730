//! Which `Host` a request may name. A page on `attacker.example` whose name the attacker makes
//! resolve to 127.0.0.1 (DNS rebinding) is, to the browser, same-origin with its own site, so it
//! may read what the broker answers; but its requests say `Host: attacker.example`. Refusing
//! names the broker was not told to answer to closes that door for every route, `/metrics`
//! included. An address literal cannot be rebound, so the listen address (every address, when
//! listening on 0.0.0.0 or `[::]`) and loopback addresses are always accepted, as is
//! `localhost`; anything else must be in `http.allowed_hosts`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// The names this server answers to.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    listen: IpAddr,
    allowed: Vec<Authority>,
}

impl HostPolicy {
    /// `allowed` is `http.allowed_hosts`; entries that do not parse (the config refuses them)
    /// are skipped.
    pub fn new(listen: IpAddr, allowed: &[String]) -> HostPolicy {
        HostPolicy {
            listen,
            allowed: allowed.iter().filter_map(|a| Authority::parse(a)).collect(),
        }
    }

    /// Whether a request naming `authority` (a `Host` header's value) is served. The port of
    /// `localhost` and of an address is not checked: it plays no part in rebinding, and a
    /// port forward or proxy may change it. An `http.allowed_hosts` entry with a port matches
    /// that port only.
    pub fn allows(&self, authority: &str) -> bool {
        let Some(authority) = Authority::parse(authority) else {
            return false;
        };
        match &authority.host {
            HostName::Name(name) if name == "localhost" => return true,
            HostName::Ip(ip)
                if ip.is_loopback() || *ip == self.listen || self.listen.is_unspecified() =>
            {
                return true
            }
            _ => {}
        }
        self.allowed.iter().any(|entry| {
            entry.host == authority.host && entry.port.is_none_or(|p| Some(p) == authority.port)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn loopback_listen_address_and_allowed_hosts_only() {
        let policy = HostPolicy::new(
            "127.0.0.1".parse().unwrap(),
            &["sharq.example".into(), "proxy.example:8443".into()],
        );
        for ok in [
            "localhost",
            "LOCALHOST:1",
            "127.0.0.1:8088",
            "127.0.0.1",
            "[::1]:8088",
            "sharq.example",
            "SHARQ.example:9",
            "proxy.example:8443",
        ] {
            assert!(policy.allows(ok), "{ok}");
        }
        for refused in [
            "attacker.example",
            "attacker.example:8088",
            "proxy.example",
            "proxy.example:8080",
            "localhost.attacker.example",
            "10.0.0.5:8088",
            "",
        ] {
            assert!(!policy.allows(refused), "{refused}");
        }
        let any = HostPolicy::new("0.0.0.0".parse().unwrap(), &[]);
        assert!(any.allows("10.0.0.5:8088") && any.allows("[2001:db8::1]"));
        assert!(!any.allows("attacker.example"));
        let one = HostPolicy::new("10.0.0.5".parse().unwrap(), &[]);
        assert!(one.allows("10.0.0.5") && !one.allows("10.0.0.6"));
    }
}
