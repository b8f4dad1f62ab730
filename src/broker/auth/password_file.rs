//! Password files: Mosquitto's `mosquitto_passwd` format, read unchanged, plus the entries
//! `sharq passwd` writes.
//!
//! One user per line, `user:HASH[:SCRAM]`; blank lines and lines starting with `#` are skipped.
//! HASH is one of
//! - `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512, 64-byte hash (mosquitto 2.x);
//! - `$6$<salt>$<hash>`: SHA-512 of the password followed by the salt (mosquitto ≤ 1.6);
//! - an argon2 PHC string, `$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>` (what `sharq passwd`
//!   writes);
//! - `$scram-sha-256$<iterations>$<salt>$<StoredKey>$<ServerKey>`: SCRAM keys only.
//!
//! (`$6$`/`$7$` salts and hashes are standard base64 with padding, as mosquitto writes them.)
//! The optional third field holds SCRAM-SHA-256 keys, so that a user whose password is kept as
//! a one-way hash can also log in with SCRAM: no SCRAM key can be derived from an argon2 or
//! PBKDF2-SHA512 hash. None of these encodings contains a `:`, so the fields split on it; a user
//! name cannot contain one (as in mosquitto).
//!
//! A line that is none of these makes the whole file invalid, with an error naming the file and
//! the line number: skipping it would lock its user out without a word, or, after a typo in an
//! edit, silently keep serving with one user fewer.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::scram::ScramCredentials;

/// The most PBKDF2 iterations we run for one login: the file is the operator's, but a slip of
/// the keyboard should not turn every CONNECT into seconds of CPU.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("cannot read password file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The line's text is not shown: it holds a password hash.
    #[error("password file {path}, line {line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("cannot write password file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid user name: {0}")]
    UserName(&'static str),
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// How one user's password is checked.
#[derive(Clone)]
pub enum PasswordHash {
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    /// `$6$`: SHA-512(password ‖ salt).
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
    /// An argon2 PHC string, checked for form when read.
    Argon2(String),
    /// SCRAM keys only: a plain password is checked by deriving its StoredKey.
    Scram(ScramCredentials),
    /// A clear-text password from `[auth] users`.
    Plain(Vec<u8>),
}

impl std::fmt::Debug for PasswordHash {
    // Hashes stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PasswordHash::Pbkdf2Sha512 { .. } => "Pbkdf2Sha512",
            PasswordHash::Sha512 { .. } => "Sha512",
            PasswordHash::Argon2(_) => "Argon2",
            PasswordHash::Scram(_) => "Scram",
            PasswordHash::Plain(_) => "Plain",
        })
    }
}

impl PasswordHash {
    /// Whether `password` matches; every comparison of secret bytes is in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = [0u8; 64];
                let out = &mut out[..hash.len().min(64)];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, out);
                out.ct_eq(hash).into()
            }
            PasswordHash::Sha512 { salt, hash } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                digest.finalize().as_slice().ct_eq(hash).into()
            }
            PasswordHash::Argon2(phc) => match argon2::PasswordHash::new(phc) {
                // The argon2 crate compares the outputs in constant time.
                Ok(parsed) => argon2::Argon2::default()
                    .verify_password(password, &parsed)
                    .is_ok(),
                Err(_) => false,
            },
            PasswordHash::Scram(credentials) => credentials.verify_password(password),
            PasswordHash::Plain(expected) => {
                // Lengths may differ in time; contents do not.
                expected.len() == password.len() && bool::from(expected.ct_eq(password))
            }
        }
    }

    /// Reads one HASH field.
    pub fn parse(field: &str) -> Result<PasswordHash, String> {
        if let Some(rest) = field.strip_prefix("$7$") {
            let mut parts = rest.split('$');
            let (Some(iterations), Some(salt), Some(hash), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err("a $7$ hash needs $7$<iterations>$<salt>$<hash>".into());
            };
            let iterations: u32 = iterations
                .parse()
                .map_err(|_| "$7$ iteration count is not a number".to_owned())?;
            if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS {
                return Err("$7$ iteration count out of range (1..=10000000)".into());
            }
            let salt = decode_b64(salt, "$7$ salt")?;
            let hash = decode_b64(hash, "$7$ hash")?;
            if hash.len() != 64 {
                return Err("$7$ hash must be 64 bytes (PBKDF2-SHA512)".into());
            }
            return Ok(PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            });
        }
        if let Some(rest) = field.strip_prefix("$6$") {
            let Some((salt, hash)) = rest.split_once('$') else {
                return Err("a $6$ hash needs $6$<salt>$<hash>".into());
            };
            let salt = decode_b64(salt, "$6$ salt")?;
            let hash = decode_b64(hash, "$6$ hash")?;
            if hash.len() != 64 {
                return Err("$6$ hash must be 64 bytes (SHA-512)".into());
            }
            return Ok(PasswordHash::Sha512 { salt, hash });
        }
        if field.starts_with("$argon2") {
            let parsed = argon2::PasswordHash::new(field)
                .map_err(|e| format!("not a valid argon2 PHC string: {e}"))?;
            if parsed.hash.is_none() {
                return Err("argon2 PHC string has no hash".into());
            }
            return Ok(PasswordHash::Argon2(field.to_owned()));
        }
        if field.starts_with(super::scram::PREFIX) {
            return ScramCredentials::parse(field)
                .map(PasswordHash::Scram)
                .map_err(str::to_owned);
        }
        Err("unknown hash: expected $7$, $6$, $argon2id$ or $scram-sha-256$ (a clear-text password belongs in [auth] users)".into())
    }
}

/// One user of a password file.
#[derive(Debug, Clone)]
pub struct UserEntry {
    pub hash: PasswordHash,
    /// SCRAM-SHA-256 keys, if the user can do SCRAM.
    pub scram: Option<ScramCredentials>,
}

impl UserEntry {
    /// The user's SCRAM keys: the third field, or the HASH field itself if it holds them.
    pub fn scram_credentials(&self) -> Option<&ScramCredentials> {
        match (&self.scram, &self.hash) {
            (Some(credentials), _) | (None, PasswordHash::Scram(credentials)) => Some(credentials),
            _ => None,
        }
    }
}

/// Parses a whole file. `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<HashMap<String, UserEntry>, PasswordFileError> {
    let mut users = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let line_error = |reason: String| PasswordFileError::Line {
            path: origin.to_owned(),
            line: index + 1,
            reason,
        };
        let line = line.trim_end_matches(['\r', ' ', '\t']);
        if line.trim_start().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split(':');
        let (Some(user), Some(hash), scram, None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(line_error("expected user:hash or user:hash:scram".into()));
        };
        if user.is_empty() {
            return Err(line_error("empty user name".into()));
        }
        let hash = PasswordHash::parse(hash).map_err(&line_error)?;
        let scram = match scram {
            None => None,
            Some(field) => Some(ScramCredentials::parse(field).map_err(|e| line_error(e.into()))?),
        };
        if users
            .insert(user.to_owned(), UserEntry { hash, scram })
            .is_some()
        {
            return Err(line_error(format!("user {user:?} appears twice")));
        }
    }
    Ok(users)
}

/// Reads and parses the file at `path`.
pub fn load(path: &Path) -> Result<HashMap<String, UserEntry>, PasswordFileError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError::Read {
        path: origin.clone(),
        source,
    })?;
    parse(&text, &origin)
}

/// Checks a user name for a password file: non-empty, no `:` (the field separator), no control
/// characters (a newline would start a new entry).
pub fn validate_user_name(user: &str) -> Result<(), PasswordFileError> {
    if user.is_empty() {
        return Err(PasswordFileError::UserName("empty"));
    }
    if user.contains(':') {
        return Err(PasswordFileError::UserName("contains ':'"));
    }
    if user.chars().any(char::is_control) {
        return Err(PasswordFileError::UserName("contains a control character"));
    }
    if user.starts_with('#') {
        return Err(PasswordFileError::UserName("starts with '#' (a comment)"));
    }
    if user.len() > 65_535 {
        return Err(PasswordFileError::UserName("longer than MQTT allows"));
    }
    Ok(())
}

/// The line `sharq passwd` writes: `user:<argon2id PHC>:<SCRAM-SHA-256 keys>`.
pub fn make_line(user: &str, password: &[u8]) -> Result<String, PasswordFileError> {
    validate_user_name(user)?;
    let salt_bytes: [u8; 16] = rand::random();
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| PasswordFileError::Hash(e.to_string()))?;
    // Argon2::default() is argon2id v19 with OWASP's parameters (19 MiB, 2 passes).
    let phc = argon2::Argon2::default()
        .hash_password(password, &salt)
        .map_err(|e| PasswordFileError::Hash(e.to_string()))?
        .to_string();
    let scram = ScramCredentials::generate(password);
    Ok(format!("{user}:{phc}:{}", scram.encode()))
}

/// Adds `user` to the file at `path`, or replaces its line, keeping every other line. The new
/// file is written beside the old one and renamed over it, so a reader (the broker reloading)
/// sees either the old file or the new one. A new file gets mode 0600; an existing one keeps
/// its mode.
pub fn upsert(path: &Path, user: &str, password: &[u8]) -> Result<(), PasswordFileError> {
    let line = make_line(user, password)?;
    let origin = path.display().to_string();
    let write_error = |source| PasswordFileError::Write {
        path: origin.clone(),
        source,
    };
    let (old, mode) = match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path).map_err(write_error)?.permissions();
            (text, Some(mode))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), None),
        Err(source) => {
            return Err(PasswordFileError::Read {
                path: origin.clone(),
                source,
            })
        }
    };
    let mut out = String::with_capacity(old.len() + line.len() + 1);
    let mut replaced = false;
    for existing in old.lines() {
        let is_user = existing
            .split_once(':')
            .is_some_and(|(name, _)| name == user);
        if is_user {
            if !replaced {
                out.push_str(&line);
                out.push('\n');
                replaced = true;
            }
            // A duplicate line of the same user would make the file invalid: dropped.
            continue;
        }
        out.push_str(existing);
        out.push('\n');
    }
    if !replaced {
        out.push_str(&line);
        out.push('\n');
    }
    let temp = temp_path(path);
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&temp)?;
        file.write_all(out.as_bytes())?;
        if let Some(mode) = mode {
            file.set_permissions(mode)?;
        }
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(write_error)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

fn decode_b64(text: &str, what: &str) -> Result<Vec<u8>, String> {
    let bytes = BASE64
        .decode(text)
        .map_err(|_| format!("{what} is not base64"))?;
    if bytes.is_empty() {
        return Err(format!("{what} is empty"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by mosquitto 2.0's `mosquitto_passwd -b -c FILE alice 'correct horse'`.
    const MOSQUITTO_7: &str = "alice:$7$101$xY6dX/g/gX5DBYrx$afYvs6+Gxubqj4wvbpSQgimt1tf2yaQoBKg4GSBh/5Eyd5FPWlBEmMVxAjl1ANz/YWTofLotxkbW2UyrqZwaRA==";
    /// Made by `mosquitto_passwd -H sha512 -b -c FILE bob hunter2`.
    const MOSQUITTO_6: &str = "bob:$6$VoLRiOb1I1sBbbFU$J8Hg+39K08FdjVkVbUHyza3pXgvcqKgi0BpS9ZuLvdGxexuopskmMmCPHB9Wdk5K+yq1QJgzo3dsDWdn/jJgEw==";

    #[test]
    fn mosquitto_pbkdf2_vector() {
        let users = parse(MOSQUITTO_7, "t").unwrap();
        let alice = &users["alice"];
        assert!(matches!(
            alice.hash,
            PasswordHash::Pbkdf2Sha512 {
                iterations: 101,
                ..
            }
        ));
        assert!(alice.hash.verify(b"correct horse"));
        assert!(!alice.hash.verify(b"correct hors"));
        assert!(!alice.hash.verify(b""));
        assert!(alice.scram_credentials().is_none());
    }

    #[test]
    fn mosquitto_sha512_vector() {
        let users = parse(MOSQUITTO_6, "t").unwrap();
        assert!(users["bob"].hash.verify(b"hunter2"));
        assert!(!users["bob"].hash.verify(b"hunter3"));
    }

    #[test]
    fn sharq_lines_verify_by_argon2_and_scram() {
        let line = make_line("carol", b"pa:ss word").unwrap();
        assert!(line.starts_with("carol:$argon2id$v=19$"), "{line}");
        let users = parse(&format!("# comment\n\n{line}\r\n{MOSQUITTO_7}\n"), "t").unwrap();
        let carol = &users["carol"];
        assert!(matches!(carol.hash, PasswordHash::Argon2(_)));
        assert!(carol.hash.verify(b"pa:ss word"));
        assert!(!carol.hash.verify(b"pa:ss wordx"));
        let scram = carol.scram_credentials().unwrap();
        assert!(scram.verify_password(b"pa:ss word"));
        assert!(!scram.verify_password(b"nope"));
        // A SCRAM-only entry checks plain passwords through its keys.
        let only = format!("dave:{}", ScramCredentials::generate(b"x").encode());
        let users = parse(&only, "t").unwrap();
        assert!(users["dave"].hash.verify(b"x"));
        assert!(!users["dave"].hash.verify(b"y"));
        assert!(users["dave"].scram_credentials().is_some());
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (text, line) in [
            ("alice:secret\n", 1),
            ("# ok\nalice\n", 2),
            (&format!("{MOSQUITTO_7}\n{MOSQUITTO_7}\n"), 2),
            ("x:$7$abc$AAAA$AAAA\n", 1),
            ("x:$7$101$AAAA$AAAA\n", 1),
            ("x:$6$!!$AAAA\n", 1),
            ("x:$argon2id$v=19$garbage\n", 1),
            (":$6$AAAA$AAAA\n", 1),
            ("x:$6$AAAA$AAAA:$scram-sha-256$1$AA==\n", 1),
            ("a:b:c:d\n", 1),
        ] {
            let err = parse(text, "/etc/pw").unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("password file /etc/pw, line {line}:")),
                "{text:?}: {err}"
            );
            assert!(!err.contains("AAAA"), "the error shows the line: {err}");
        }
    }

    #[test]
    fn upsert_replaces_one_user_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        upsert(&path, "carol", b"one").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("# keep me\n{MOSQUITTO_7}\n{text}")).unwrap();
        upsert(&path, "carol", b"two").unwrap();
        upsert(&path, "erin", b"three").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&format!("# keep me\n{MOSQUITTO_7}\ncarol:")));
        let users = load(&path).unwrap();
        assert_eq!(users.len(), 3);
        assert!(users["carol"].hash.verify(b"two"));
        assert!(!users["carol"].hash.verify(b"one"));
        assert!(users["erin"].hash.verify(b"three"));
        assert!(users["alice"].hash.verify(b"correct horse"));
        for bad in ["", "a:b", "a\nb", "#x"] {
            assert!(upsert(&path, bad, b"p").is_err(), "{bad:?}");
        }
    }
}
