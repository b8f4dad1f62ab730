//! The authentication hook: CONNECT's username and password go through an [`Authenticator`],
//! and so does a SCRAM-SHA-256 exchange (`scram`), which asks it for a user's stored keys.
//!
//! The built-in [`ConfigAuthenticator`] serves `[auth] users` (clear text, in the config) and
//! `[auth] password_file` (`password_file`: mosquitto's format, plus what `sharq passwd`
//! writes). The broker holds the authenticator in force behind a lock and swaps it whole on
//! reload (`BrokerState::reload_auth`).

pub mod password_file;
pub mod scram;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use bytestring::ByteString;

use crate::config::AuthConfig;
use crate::packet::ReasonCode;

use password_file::{PasswordFileError, PasswordHash, UserEntry};
use scram::ScramCredentials;

/// What a client presented in CONNECT.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// As the client sent it (empty when it asks the server to assign one).
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
    /// `Err` carries the CONNACK reason code to refuse with (0x86 or 0x87 usually). May be slow
    /// (a password hash): the broker calls it off the async workers.
    fn authenticate(&self, credentials: Credentials<'_>) -> Result<(), ReasonCode>;

    /// The SCRAM-SHA-256 keys of `username`, if that user may log in with SCRAM. Must be quick:
    /// it is called on the connection's task.
    fn scram_credentials(&self, _username: &str) -> Option<ScramCredentials> {
        None
    }
}

/// Why the authenticator could not be built from `[auth]`.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth.password_file: {0}")]
    PasswordFile(#[from] PasswordFileError),
}

/// The built-in authenticator: anonymous access as configured, and a table of users from
/// `[auth] users` and `[auth] password_file`.
#[derive(Debug, Clone)]
pub struct ConfigAuthenticator {
    allow_anonymous: bool,
    /// False when neither `users` nor `password_file` is configured: then any user name and
    /// password are accepted, as before users existed.
    check_users: bool,
    users: HashMap<String, UserEntry>,
}

impl ConfigAuthenticator {
    /// From `[auth]` without reading `password_file` (the config's clear-text users only).
    /// `allow_anonymous` must be resolved (`Config::resolved_auth`).
    pub fn new(config: &AuthConfig) -> ConfigAuthenticator {
        let users = config
            .users
            .iter()
            .map(|(user, password)| {
                let entry = UserEntry {
                    hash: PasswordHash::Plain(password.as_bytes().to_vec()),
                    // Derived once here, so that a SCRAM exchange costs no PBKDF2 per login.
                    scram: Some(ScramCredentials::generate(password.as_bytes())),
                };
                (user.clone(), entry)
            })
            .collect();
        ConfigAuthenticator {
            // Unset only in a config not resolved by `Config::resolved_auth`: the safe answer.
            allow_anonymous: config.allow_anonymous.unwrap_or(false),
            check_users: !config.users.is_empty(),
            users,
        }
    }

    /// From `[auth]`, reading `password_file` (relative to `base_dir`, the config file's
    /// directory). A user in both keeps the file's entry. Slow (hashing, file I/O): call it
    /// off the async workers.
    pub fn load(
        config: &AuthConfig,
        base_dir: Option<&Path>,
    ) -> Result<ConfigAuthenticator, AuthError> {
        let mut authenticator = ConfigAuthenticator::new(config);
        if let Some(path) = password_file_path(config, base_dir) {
            let from_file = password_file::load(&path)?;
            for user in from_file.keys() {
                if authenticator.users.contains_key(user) {
                    tracing::warn!(user, file = %path.display(), "user is in both [auth] users and the password file: the file's entry is used");
                }
            }
            authenticator.users.extend(from_file);
            authenticator.check_users = true;
        }
        Ok(authenticator)
    }

    /// How many users the table holds.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }
}

/// `[auth] password_file` resolved against the config file's directory; none when unset.
pub fn password_file_path(config: &AuthConfig, base_dir: Option<&Path>) -> Option<PathBuf> {
    if config.password_file.as_os_str().is_empty() {
        return None;
    }
    Some(match base_dir {
        Some(base) if config.password_file.is_relative() => base.join(&config.password_file),
        _ => config.password_file.clone(),
    })
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
        if !self.check_users {
            return Ok(());
        }
        match self.users.get(&**username) {
            Some(entry) if credentials.password.is_some_and(|p| entry.hash.verify(p)) => Ok(()),
            _ => Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        }
    }

    fn scram_credentials(&self, username: &str) -> Option<ScramCredentials> {
        self.users.get(username)?.scram_credentials().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(allow_anonymous: bool, users: &[(&str, &str)]) -> ConfigAuthenticator {
        ConfigAuthenticator::new(&AuthConfig {
            allow_anonymous: Some(allow_anonymous),
            password_file: Default::default(),
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            ..AuthConfig::default()
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

    #[test]
    fn password_file_joins_config_users_and_closes_the_door() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pw"),
            format!(
                "{}\n",
                password_file::make_line("carol", b"from-file").unwrap()
            ),
        )
        .unwrap();
        let mut config = AuthConfig {
            allow_anonymous: Some(true),
            password_file: PathBuf::from("pw"),
            users: [
                ("carol".to_owned(), "from-config".to_owned()),
                ("dan".to_owned(), "d".to_owned()),
            ]
            .into_iter()
            .collect(),
            ..AuthConfig::default()
        };
        let auth = ConfigAuthenticator::load(&config, Some(dir.path())).unwrap();
        let id = ByteString::from("c");
        let check = |user: &str, password: &'static [u8]| {
            let user = ByteString::from(user);
            let password = Bytes::from_static(password);
            auth.authenticate(Credentials {
                client_id: &id,
                username: Some(&user),
                password: Some(&password),
                username_from_certificate: false,
            })
        };
        // The file's entry wins over the config's.
        assert!(check("carol", b"from-file").is_ok());
        assert!(check("carol", b"from-config").is_err());
        assert!(check("dan", b"d").is_ok());
        assert_eq!(
            check("eve", b"x"),
            Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        );
        // Both kinds of user have SCRAM keys.
        assert!(auth
            .scram_credentials("carol")
            .unwrap()
            .verify_password(b"from-file"));
        assert!(auth.scram_credentials("dan").unwrap().verify_password(b"d"));
        assert!(auth.scram_credentials("eve").is_none());
        // A file alone, even an empty one, means only its users get in.
        std::fs::write(dir.path().join("pw"), "# nobody yet\n").unwrap();
        config.users.clear();
        let auth = ConfigAuthenticator::load(&config, Some(dir.path())).unwrap();
        let user = ByteString::from("anyone");
        assert!(auth
            .authenticate(Credentials {
                client_id: &id,
                username: Some(&user),
                password: None,
                username_from_certificate: false,
            })
            .is_err());
        // A missing file is an error naming the key and the file.
        config.password_file = PathBuf::from("missing");
        let err = ConfigAuthenticator::load(&config, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("auth.password_file: cannot read password file"),
            "{err}"
        );
        assert!(err.contains("missing"), "{err}");
    }
}
