//! TLS for `[[server.tls_listeners]]` and `wss` listeners: building a rustls `ServerConfig`
//! from PEM files, swapping it on reload, and reading a client certificate's subject CN for
//! `use_identity_as_username`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

/// Why TLS settings could not be loaded. Every variant names the config key and the file, so
/// an operator knows which listener and which file to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("key `{key}`: cannot read {}: {reason}", path.display())]
    File {
        key: String,
        path: PathBuf,
        reason: String,
    },
    #[error("key `{key}`: {} holds no {what}", path.display())]
    Empty {
        key: String,
        path: PathBuf,
        what: &'static str,
    },
    #[error("key `{key}`: {} cannot be used: {reason}", path.display())]
    Rejected {
        key: String,
        path: PathBuf,
        reason: String,
    },
}

/// The files one TLS-serving listener is built from, resolved against the config file's
/// directory, and the config key naming the listener (`server.tls_listeners[0]`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub key_prefix: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub require_client_cert: bool,
}

/// A listener's TLS settings, replaceable while it serves: each handshake takes the current
/// `ServerConfig`, so a reload affects new handshakes only and established sessions go on.
#[derive(Debug)]
pub struct ReloadableTls {
    pub files: TlsFiles,
    /// Lock-free, so no lock is added to the broker's lock order: readers take a snapshot
    /// (`load_full`) per handshake, a reload stores a whole new config.
    current: ArcSwap<ServerConfig>,
}

impl ReloadableTls {
    pub fn load(files: TlsFiles) -> Result<ReloadableTls, TlsError> {
        let config = build_server_config(&files)?;
        Ok(ReloadableTls {
            files,
            current: ArcSwap::from_pointee(config),
        })
    }

    /// The settings for a handshake starting now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Reads the files again; on any error the current settings stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build_server_config(&self.files)?;
        self.current.store(Arc::new(config));
        Ok(())
    }
}

fn build_server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let cert_key = format!("{}.cert", files.key_prefix);
    let key_key = format!("{}.key", files.key_prefix);
    let chain = read_certificates(&cert_key, &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            key: key_key.clone(),
            path: files.key.clone(),
            what: "PEM private key",
        },
        other => file_error(&key_key, &files.key, other),
    })?;
    // ring explicitly, rather than a process-wide default provider that another crate in the
    // same process could set differently.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rejected {
            key: cert_key.clone(),
            path: files.cert.clone(),
            reason: e.to_string(),
        })?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let ca_key = format!("{}.client_ca", files.key_prefix);
            let mut roots = RootCertStore::empty();
            for ca in read_certificates(&ca_key, ca_path)? {
                roots.add(ca).map_err(|e| TlsError::Rejected {
                    key: ca_key.clone(),
                    path: ca_path.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            // Without `require_client_cert`, a client may present no certificate; one it does
            // present must still verify.
            let verifier = if files.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| TlsError::Rejected {
                key: ca_key.clone(),
                path: ca_path.clone(),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // Checks that the key matches the leaf certificate.
    builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rejected {
            key: key_key,
            path: files.key.clone(),
            reason: e.to_string(),
        })
}

fn read_certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error(key, path, e))?;
    if certificates.is_empty() {
        return Err(TlsError::Empty {
            key: key.to_owned(),
            path: path.to_path_buf(),
            what: "PEM certificate",
        });
    }
    Ok(certificates)
}

fn file_error(key: &str, path: &Path, error: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::File {
        key: key.to_owned(),
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

/// The first common name (OID 2.5.4.3) in a DER certificate's subject, if it has one that is
/// text. The certificate was verified by the handshake, but this reads it defensively anyway:
/// any malformation gives `None`, which refuses the client.
pub fn subject_common_name(der: &[u8]) -> Option<String> {
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    let (certificate, _) = expect(der, 0x30)?;
    let (tbs, _) = expect(certificate, 0x30)?;
    let mut rest = tbs;
    // version [0] EXPLICIT, optional (absent in v1 certificates).
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2;
    }
    // serialNumber, signature, issuer, validity; then subject.
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (mut names, _) = expect(rest, 0x30)?;
    while !names.is_empty() {
        let (set, after) = expect(names, 0x31)?;
        names = after;
        let mut attributes = set;
        while !attributes.is_empty() {
            let (attribute, after) = expect(attributes, 0x30)?;
            attributes = after;
            let (oid, value) = expect(attribute, 0x06)?;
            if oid != COMMON_NAME {
                continue;
            }
            let (tag, text, _) = element(value)?;
            return match tag {
                // UTF8String, PrintableString, IA5String, TeletexString (read as UTF-8).
                0x0c | 0x13 | 0x16 | 0x14 => String::from_utf8(text.to_vec()).ok(),
                // BMPString: UTF-16 big-endian.
                0x1e if text.len() % 2 == 0 => {
                    let units: Vec<u16> = text
                        .chunks_exact(2)
                        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                        .collect();
                    String::from_utf16(&units).ok()
                }
                _ => None,
            };
        }
    }
    None
}

/// A DER element with the tag `tag`: its content and what follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, content, rest) = element(input)?;
    (found == tag).then_some((content, rest))
}

/// A DER element: tag, content, and what follows it (definite lengths only, as DER has).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (length, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let bytes = input.get(2..2 + count)?;
        let length = bytes
            .iter()
            .fold(0usize, |acc, byte| (acc << 8) | usize::from(*byte));
        (length, 2 + count)
    };
    let end = header.checked_add(length)?;
    let content = input.get(header..end)?;
    Some((tag, content, &input[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate_with(names: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in names {
            params.distinguished_name.push(kind.clone(), *value);
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn common_name_is_read_from_the_subject() {
        let der = certificate_with(&[
            (rcgen::DnType::OrganizationName, "Acme"),
            (rcgen::DnType::CommonName, "device-42"),
        ]);
        assert_eq!(subject_common_name(&der).as_deref(), Some("device-42"));
    }

    #[test]
    fn no_common_name_or_garbage_gives_none() {
        let der = certificate_with(&[(rcgen::DnType::OrganizationName, "Acme")]);
        assert_eq!(subject_common_name(&der), None);
        assert_eq!(subject_common_name(&[]), None);
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        // Every truncation of a real certificate is refused, never a panic.
        let der = certificate_with(&[(rcgen::DnType::CommonName, "x")]);
        for cut in 0..der.len() {
            let _ = subject_common_name(&der[..cut]);
        }
    }

    #[test]
    fn a_missing_file_names_the_key_and_the_path() {
        let files = TlsFiles {
            key_prefix: "server.tls_listeners[0]".to_owned(),
            cert: PathBuf::from("/nonexistent/cert.pem"),
            key: PathBuf::from("/nonexistent/key.pem"),
            client_ca: None,
            require_client_cert: false,
        };
        let err = ReloadableTls::load(files).unwrap_err().to_string();
        assert!(
            err.contains("server.tls_listeners[0].cert") && err.contains("/nonexistent/cert.pem"),
            "{err}"
        );
    }
}
