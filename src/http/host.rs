//! Which `Host` a request may name. A page on `attacker.example` whose name the attacker makes
//! resolve to 127.0.0.1 (DNS rebinding) is, to the browser, same-origin with its own site, so it
//! may read what the broker answers; but its requests say `Host: attacker.example`. Refusing
//! names the broker was not told to answer to closes that door for every route, `/metrics`
//! included. An address literal cannot be rebound, so the listen address (every address, when
//! listening on 0.0.0.0 or `[::]`) and loopback addresses are always accepted, as is
//! `localhost`; anything else must be in `http.allowed_hosts`.

use std::net::IpAddr;

use crate::config::{Authority, HostName};

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
