//! The authentication hook: CONNECT's username and password go through an [`Authenticator`].

use std::collections::BTreeMap;

use bytes::Bytes;
use bytestring::ByteString;

use crate::config::AuthConfig;
use crate::packet::ReasonCode;

/// What a client presented in CONNECT.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub client_id: &'a ByteString,
    pub username: Option<&'a ByteString>,
    pub password: Option<&'a Bytes>,
    /// `username` is the subject CN of a client certificate that the TLS handshake verified
    /// (a listener with `use_identity_as_username`): the certificate authenticated it, so no
    /// password is checked, as Mosquitto does.
    pub username_from_certificate: bool,
}

/// Decides whether a client may connect. A real backend (files, HTTP, JWT) implements this.
pub trait Authenticator: Send + Sync {
    /// `Err` carries the CONNACK reason code to refuse with (0x86 or 0x87 usually).
    fn authenticate(&self, credentials: Credentials<'_>) -> Result<(), ReasonCode>;
}

/// The built-in authenticator: anonymous access as configured, and an optional static table of
/// users.
#[derive(Debug, Clone)]
pub struct ConfigAuthenticator {
    allow_anonymous: bool,
    users: BTreeMap<String, String>,
}

impl ConfigAuthenticator {
    pub fn new(config: &AuthConfig) -> ConfigAuthenticator {
        ConfigAuthenticator {
            allow_anonymous: config.allow_anonymous,
            users: config.users.clone(),
        }
    }
}

impl Authenticator for ConfigAuthenticator {
    fn authenticate(&self, credentials: Credentials<'_>) -> Result<(), ReasonCode> {
        if credentials.username_from_certificate && credentials.username.is_some() {
            return Ok(());
        }
        let Some(username) = credentials.username else {
            return if self.allow_anonymous {
                Ok(())
            } else {
                Err(ReasonCode::NOT_AUTHORIZED)
            };
        };
        if self.users.is_empty() {
            return Ok(());
        }
        match self.users.get(&**username) {
            Some(expected)
                if credentials
                    .password
                    .is_some_and(|p| p.as_ref() == expected.as_bytes()) =>
            {
                Ok(())
            }
            _ => Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(allow_anonymous: bool, users: &[(&str, &str)]) -> ConfigAuthenticator {
        ConfigAuthenticator::new(&AuthConfig {
            allow_anonymous,
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
        })
    }

    #[test]
    fn anonymous_follows_config() {
        let id = ByteString::from("c");
        let creds = Credentials {
            client_id: &id,
            username: None,
            password: None,
            username_from_certificate: false,
        };
        assert!(config(true, &[]).authenticate(creds).is_ok());
        assert_eq!(
            config(false, &[]).authenticate(creds),
            Err(ReasonCode::NOT_AUTHORIZED)
        );
    }

    #[test]
    fn user_table_checks_password() {
        let id = ByteString::from("c");
        let user = ByteString::from("alice");
        let good = Bytes::from_static(b"secret");
        let bad = Bytes::from_static(b"nope");
        let auth = config(false, &[("alice", "secret")]);
        let with = |p| Credentials {
            client_id: &id,
            username: Some(&user),
            password: p,
            username_from_certificate: false,
        };
        assert!(auth.authenticate(with(Some(&good))).is_ok());
        assert_eq!(
            auth.authenticate(with(Some(&bad))),
            Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        );
        assert_eq!(
            auth.authenticate(with(None)),
            Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        );
        // A username a verified client certificate gave needs no password.
        let certified = Credentials {
            username_from_certificate: true,
            ..with(None)
        };
        assert!(auth.authenticate(certified).is_ok());
    }
}
