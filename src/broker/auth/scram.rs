//! SCRAM-SHA-256 (RFC 5802, RFC 7677), the server side, as MQTT 5 enhanced authentication
//! carries it: CONNECT (or AUTH 0x19) holds client-first, AUTH 0x18 server-first, AUTH 0x18
//! client-final, and CONNACK (or AUTH 0x00) server-final, each in Authentication Data.
//!
//! The broker keeps no password for a SCRAM user, only what RFC 5802 §3 calls StoredKey and
//! ServerKey, with the salt and iteration count they were derived with. Written in a password
//! file as `$scram-sha-256$<iterations>$<salt>$<StoredKey>$<ServerKey>` (standard base64 with
//! padding), see `password_file`.
//!
//! Not offered: channel binding (`p=` is refused; `y`/`n` are accepted), an authorization
//! identity (`a=`), and SASLprep of user names (they are compared byte for byte, as MQTT user
//! names are).

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::packet::ReasonCode;

/// The Authentication Method a client names in CONNECT to use this exchange.
pub const METHOD: &str = "SCRAM-SHA-256";
/// PBKDF2 iterations for newly made credentials: RFC 7677's minimum.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Salt bytes for newly made credentials.
pub const SALT_LEN: usize = 16;
/// The prefix of the stored form.
pub const PREFIX: &str = "$scram-sha-256$";
/// Random bytes in the server's part of the nonce.
const SERVER_NONCE_LEN: usize = 18;
/// Iterations far above any real use would let a password file make every login a denial of
/// service; RFC 7677 suggests 4096 and some deployments use a few hundred thousand.
const MAX_ITERATIONS: u32 = 10_000_000;

type HmacSha256 = Hmac<Sha256>;

/// Why an exchange failed; each maps to the reason code the client hears.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("SCRAM channel binding is not supported")]
    ChannelBinding,
    #[error("SCRAM authorization identity is not supported")]
    AuthorizationIdentity,
    #[error("SCRAM mandatory extension is not supported")]
    Extension,
    #[error("SCRAM nonce does not match")]
    Nonce,
    /// A wrong password, or a user without SCRAM credentials (not told apart to the client).
    #[error("SCRAM proof is invalid")]
    InvalidProof,
}

impl ScramError {
    /// 0x86 for credentials that do not match, 0x87 for an exchange we cannot take part in.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            ScramError::InvalidProof | ScramError::Nonce => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            _ => ReasonCode::NOT_AUTHORIZED,
        }
    }
}

/// What the server keeps of a SCRAM user (RFC 5802 §3).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramCredentials {
    // Keys stay out of logs and panics: with them an attacker can impersonate the server.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredentials {
    /// Derives the stored keys from a password.
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> ScramCredentials {
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        ScramCredentials {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Fresh credentials with a random salt and [`DEFAULT_ITERATIONS`].
    pub fn generate(password: &[u8]) -> ScramCredentials {
        let salt: [u8; SALT_LEN] = rand::random();
        ScramCredentials::derive(password, &salt, DEFAULT_ITERATIONS)
    }

    /// Whether `password` is the one these keys were derived from (for a plain CONNECT of a
    /// user who has SCRAM keys only). Compared in constant time.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let derived = ScramCredentials::derive(password, &self.salt, self.iterations);
        derived.stored_key.ct_eq(&self.stored_key).into()
    }

    /// The stored form: `$scram-sha-256$<iterations>$<salt>$<StoredKey>$<ServerKey>`.
    pub fn encode(&self) -> String {
        format!(
            "{PREFIX}{}${}${}${}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }

    /// Reads the stored form; the error says what is wrong (never echoing the text).
    pub fn parse(text: &str) -> Result<ScramCredentials, &'static str> {
        let rest = text
            .strip_prefix(PREFIX)
            .ok_or("SCRAM credentials must start with $scram-sha-256$")?;
        let mut fields = rest.split('$');
        let (Some(iterations), Some(salt), Some(stored), Some(server), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err("SCRAM credentials need $<iterations>$<salt>$<StoredKey>$<ServerKey>");
        };
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| "SCRAM iteration count is not a number")?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err("SCRAM iteration count out of range (1..=10000000)");
        }
        let salt = BASE64
            .decode(salt)
            .map_err(|_| "SCRAM salt is not base64")?;
        if salt.is_empty() {
            return Err("SCRAM salt is empty");
        }
        let key = |text: &str| -> Result<[u8; 32], &'static str> {
            BASE64
                .decode(text)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or("SCRAM key is not 32 bytes of base64")
        };
        Ok(ScramCredentials {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

/// One exchange after server-first was sent, waiting for client-final.
pub struct ScramExchange {
    username: String,
    /// `gs2-header` as the client sent it; client-final must repeat it in `c=`.
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    /// None for a user we do not know (or who has no SCRAM keys): the exchange goes on with a
    /// made-up salt and fails at the proof, so that a client cannot tell which users exist.
    credentials: Option<ScramCredentials>,
}

impl std::fmt::Debug for ScramExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramExchange")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Reads client-first and answers server-first. `lookup` finds the user's credentials.
pub fn start(
    client_first: &[u8],
    lookup: impl FnOnce(&str) -> Option<ScramCredentials>,
) -> Result<(ScramExchange, String), ScramError> {
    let text = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    let mut parts = text.splitn(3, ',');
    let (Some(cbind), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ScramError::Malformed("client-first needs a GS2 header"));
    };
    match cbind {
        "n" | "y" => {}
        flag if flag.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("bad channel binding flag")),
    }
    if !authzid.is_empty() {
        return Err(ScramError::AuthorizationIdentity);
    }
    let gs2_header = text[..text.len() - bare.len()].to_owned();
    let mut attributes = bare.split(',');
    let username = match attributes.next() {
        Some(first) if first.starts_with("m=") => return Err(ScramError::Extension),
        Some(first) => decode_saslname(
            first
                .strip_prefix("n=")
                .ok_or(ScramError::Malformed("client-first needs n="))?,
        )?,
        None => return Err(ScramError::Malformed("client-first is empty")),
    };
    let client_nonce = attributes
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(ScramError::Malformed("client-first needs r="))?;
    if client_nonce.is_empty() || !client_nonce.bytes().all(is_printable) {
        return Err(ScramError::Malformed("bad client nonce"));
    }
    let credentials = lookup(&username);
    let (salt, iterations) = match &credentials {
        Some(c) => (c.salt.clone(), c.iterations),
        None => (made_up_salt(&username), DEFAULT_ITERATIONS),
    };
    let server_nonce: [u8; SERVER_NONCE_LEN] = rand::random();
    let nonce = format!("{client_nonce}{}", BASE64.encode(server_nonce));
    let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(salt));
    Ok((
        ScramExchange {
            username,
            gs2_header,
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
            credentials,
        },
        server_first,
    ))
}

impl ScramExchange {
    /// The user name client-first named.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Checks client-final; on success returns server-final (`v=<ServerSignature>`).
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // client-final = client-final-without-proof ",p=" proof; the proof comes last.
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("client-final needs p="))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("client-final needs c="))?;
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("client-final needs r="))?;
        let binding = BASE64
            .decode(binding)
            .map_err(|_| ScramError::Malformed("c= is not base64"))?;
        if binding != self.gs2_header.as_bytes() {
            return Err(ScramError::Malformed("c= does not repeat the GS2 header"));
        }
        if nonce.as_bytes().ct_eq(self.nonce.as_bytes()).unwrap_u8() == 0 {
            return Err(ScramError::Nonce);
        }
        let proof: [u8; 32] = BASE64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("p= is not 32 bytes of base64"))?;
        let Some(credentials) = self.credentials else {
            return Err(ScramError::InvalidProof);
        };
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&credentials.stored_key, auth_message.as_bytes());
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(client_signature) {
            *k ^= s;
        }
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        if stored_key.ct_eq(&credentials.stored_key).unwrap_u8() == 0 {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac(&credentials.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(server_signature)))
    }
}

fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: new_from_slice cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A salt for a user without credentials: stable per user name (a client asking twice sees the
/// same one, as for a real user) and unguessable (keyed by a secret of this process).
fn made_up_salt(username: &str) -> Vec<u8> {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    let secret = SECRET.get_or_init(rand::random);
    hmac(secret, username.as_bytes())[..SALT_LEN].to_vec()
}

/// `saslname`: `=2C` is a comma and `=3D` an equals sign; any other `=` is an error.
fn decode_saslname(name: &str) -> Result<String, ScramError> {
    if name.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// RFC 5802's `printable`: %x21-2B / %x2D-7E (no comma).
fn is_printable(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3's example: user "user", password "pencil", 4096 iterations.
    #[test]
    fn rfc7677_example_exchange() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credentials = ScramCredentials::derive(b"pencil", &salt, 4096);
        let (mut exchange, _) = start(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", |user| {
            assert_eq!(user, "user");
            Some(credentials.clone())
        })
        .unwrap();
        // The RFC's server nonce, in place of our random one, so its proof applies.
        exchange.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_owned();
        exchange.server_first =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                .to_owned();
        let server_final = exchange
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(
            server_final,
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn wrong_proof_and_unknown_user_fail_alike() {
        let credentials = ScramCredentials::derive(b"pencil", b"salt-salt", 4096);
        let (exchange, server_first) =
            start(b"n,,n=user,r=abc", |_| Some(credentials.clone())).unwrap();
        assert!(server_first.starts_with("r=abc"));
        let nonce = exchange.nonce.clone();
        let bad = format!("c=biws,r={nonce},p={}", BASE64.encode([7u8; 32]));
        assert_eq!(
            exchange.finish(bad.as_bytes()),
            Err(ScramError::InvalidProof)
        );
        let (exchange, first) = start(b"n,,n=ghost,r=abc", |_| None).unwrap();
        let (_, again) = start(b"n,,n=ghost,r=abc", |_| None).unwrap();
        // Same salt each time, as for a real user.
        assert_eq!(first.split(',').nth(1), again.split(',').nth(1));
        let nonce = exchange.nonce.clone();
        let bad = format!("c=biws,r={nonce},p={}", BASE64.encode([7u8; 32]));
        assert_eq!(
            exchange.finish(bad.as_bytes()),
            Err(ScramError::InvalidProof)
        );
    }

    #[test]
    fn malformed_messages_are_refused() {
        let none = |_: &str| None;
        assert_eq!(
            start(b"p=tls-unique,,n=u,r=x", none).unwrap_err(),
            ScramError::ChannelBinding
        );
        assert_eq!(
            start(b"n,a=admin,n=u,r=x", none).unwrap_err(),
            ScramError::AuthorizationIdentity
        );
        assert_eq!(
            start(b"n,,m=ext,n=u,r=x", none).unwrap_err(),
            ScramError::Extension
        );
        for bad in [
            &b"n=u,r=x"[..],
            b"n,,r=x",
            b"n,,n=u",
            b"n,,n=a=3,r=x",
            b"\xff",
        ] {
            assert!(
                matches!(start(bad, none), Err(ScramError::Malformed(_))),
                "{bad:?}"
            );
        }
        let (exchange, _) = start(b"n,,n=a=2Cb=3Dc,r=x", none).unwrap();
        assert_eq!(exchange.username(), "a,b=c");
        let nonce = exchange.nonce.clone();
        // c= must repeat the GS2 header ("n,," is "biws").
        let wrong_binding = format!("c=eSws,r={nonce},p={}", BASE64.encode([0u8; 32]));
        assert!(matches!(
            exchange.finish(wrong_binding.as_bytes()),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn stored_form_round_trips_and_checks_passwords() {
        let credentials = ScramCredentials::generate(b"s3cret");
        let text = credentials.encode();
        assert!(text.starts_with("$scram-sha-256$4096$"), "{text}");
        let parsed = ScramCredentials::parse(&text).unwrap();
        assert_eq!(parsed, credentials);
        assert!(parsed.verify_password(b"s3cret"));
        assert!(!parsed.verify_password(b"s3creT"));
        for bad in [
            "$scram-sha-256$0$c2FsdA==$AAAA$AAAA",
            "$scram-sha-256$x$c2FsdA==$AAAA$AAAA",
            "$scram-sha-256$4096$c2FsdA==$AAAA",
            "$scram-sha-1$4096$c2FsdA==$AAAA$AAAA",
            "$scram-sha-256$4096$c2FsdA==$AAAA$AAAA",
        ] {
            assert!(ScramCredentials::parse(bad).is_err(), "{bad}");
        }
    }
}
