//! TLS for `[[server.tls_listeners]]` and `wss` listeners: building a rustls `ServerConfig`
//! from PEM files, swapping it on reload, and reading a client certificate's subject CN for
//! `use_identity_as_username`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{
    self, CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::log_limit::LogLimit;

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
            builder.with_client_cert_verifier(Arc::new(ExplainingVerifier {
                inner: verifier,
                listener: files.key_prefix.clone(),
                log: LogLimit::new(Duration::from_secs(1)),
            }))
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

/// The webpki verifier, saying in the log why it refused a client certificate: rustls tells
/// the client only "certificate unknown" (or "bad certificate"), and without this line the
/// operator would not learn that, say, the certificate is X.509 v1.
#[derive(Debug)]
struct ExplainingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// The listener's config key, e.g. `server.tls_listeners[0]`.
    listener: String,
    /// A client can make this line repeat: at most one a second.
    log: LogLimit,
}

impl ClientCertVerifier for ExplainingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        if let Err(error) = &verified {
            if let Some(suppressed) = self.log.allow() {
                let summary = CertificateSummary::of(end_entity);
                tracing::warn!(
                    listener = %self.listener,
                    reason = %refusal_reason(error, summary.version),
                    subject_cn = ?summary.subject_cn,
                    issuer_cn = ?summary.issuer_cn,
                    version = ?summary.version,
                    not_before = ?summary.not_before,
                    not_after = ?summary.not_after,
                    error = %error,
                    suppressed,
                    "client certificate refused"
                );
            }
        }
        verified
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

/// Why a client certificate was refused, in the terms of how certificates are made: version,
/// chain, usage or validity.
fn refusal_reason(error: &rustls::Error, version: Option<u8>) -> String {
    // webpki parses only v3 certificates; rustls reports that as an opaque "other" error.
    if let Some(version @ (1 | 2)) = version {
        return format!("version: an X.509 v{version} certificate; only v3 is accepted (sign it with `-extfile` giving basicConstraints, keyUsage and extendedKeyUsage = clientAuth, see README \"TLS and WebSocket listeners\")");
    }
    let rustls::Error::InvalidCertificate(error) = error else {
        return error.to_string();
    };
    match error {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "expiry: the certificate has expired".to_owned()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "expiry: the certificate is not valid yet".to_owned()
        }
        CertificateError::UnknownIssuer => {
            "chain: not issued by a CA in client_ca (or an intermediate CA the client did not send)"
                .to_owned()
        }
        CertificateError::BadSignature => {
            "chain: the signature does not verify with the issuer's key".to_owned()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "usage: the certificate's extendedKeyUsage does not include clientAuth".to_owned()
        }
        CertificateError::BadEncoding => "the certificate is not valid DER".to_owned(),
        CertificateError::Revoked => "the certificate is revoked".to_owned(),
        CertificateError::UnhandledCriticalExtension => {
            "the certificate has a critical extension that is not understood".to_owned()
        }
        other => format!("{other:?}"),
    }
}

/// What the refusal log line shows of a certificate, read defensively from its DER: any part
/// that cannot be read is `None`.
#[derive(Debug, Default, PartialEq, Eq)]
struct CertificateSummary {
    version: Option<u8>,
    subject_cn: Option<String>,
    issuer_cn: Option<String>,
    not_before: Option<String>,
    not_after: Option<String>,
}

impl CertificateSummary {
    fn of(der: &[u8]) -> CertificateSummary {
        let mut summary = CertificateSummary::default();
        let Some((certificate, _)) = expect(der, 0x30) else {
            return summary;
        };
        let Some((mut rest, _)) = expect(certificate, 0x30) else {
            return summary;
        };
        // version [0] EXPLICIT INTEGER, absent in v1 (its DEFAULT).
        summary.version = Some(1);
        if rest.first() == Some(&0xa0) {
            let Some((_, explicit, after)) = element(rest) else {
                return CertificateSummary::default();
            };
            summary.version = match expect(explicit, 0x02) {
                Some(([v], _)) if *v < 0x7f => Some(v + 1),
                _ => None,
            };
            rest = after;
        }
        // serialNumber, signature; then issuer, validity, subject.
        let Some(rest) = element(rest).and_then(|e| element(e.2)).map(|e| e.2) else {
            return summary;
        };
        let Some((issuer, rest)) = expect(rest, 0x30) else {
            return summary;
        };
        summary.issuer_cn = first_common_name(issuer);
        let Some((validity, rest)) = expect(rest, 0x30) else {
            return summary;
        };
        if let Some((tag, before, after)) = element(validity) {
            summary.not_before = asn1_time(tag, before);
            if let Some((tag, after, _)) = element(after) {
                summary.not_after = asn1_time(tag, after);
            }
        }
        summary.subject_cn = expect(rest, 0x30).and_then(|(names, _)| first_common_name(names));
        summary
    }
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as `YYYY-MM-DD HH:MM:SS UTC`.
fn asn1_time(tag: u8, content: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(content).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let full = match (tag, digits.len()) {
        // RFC 5280: two-digit years 50-99 are 19YY.
        (0x17, 12) => {
            let century = if &digits[..2] >= "50" { "19" } else { "20" };
            format!("{century}{digits}")
        }
        (0x18, 14) => digits.to_owned(),
        _ => return None,
    };
    Some(format!(
        "{}-{}-{} {}:{}:{} UTC",
        &full[..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    ))
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
    let (names, _) = expect(rest, 0x30)?;
    first_common_name(names)
}

/// The first common name in the content of a DER `Name` (a SEQUENCE of SETs of attributes).
fn first_common_name(mut names: &[u8]) -> Option<String> {
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
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

    #[test]
    fn a_certificate_is_summarised_for_the_refusal_log() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "device-7");
        params.not_before = rcgen::date_time_ymd(2024, 1, 2);
        params.not_after = rcgen::date_time_ymd(2051, 3, 4);
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let summary = CertificateSummary::of(&der);
        assert_eq!(summary.version, Some(3));
        assert_eq!(summary.subject_cn.as_deref(), Some("device-7"));
        assert_eq!(summary.issuer_cn.as_deref(), Some("device-7"));
        assert_eq!(
            summary.not_before.as_deref(),
            Some("2024-01-02 00:00:00 UTC")
        );
        assert_eq!(
            summary.not_after.as_deref(),
            Some("2051-03-04 00:00:00 UTC")
        );
        for cut in 0..der.len() {
            let _ = CertificateSummary::of(&der[..cut]);
        }
        assert_eq!(
            asn1_time(0x17, b"991231235959Z").as_deref(),
            Some("1999-12-31 23:59:59 UTC")
        );
        assert_eq!(asn1_time(0x17, b"99123123595Z"), None);
        assert!(refusal_reason(&rustls::Error::General("x".into()), Some(1)).contains("v1"));
        assert!(refusal_reason(
            &rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            Some(3)
        )
        .starts_with("chain"));
    }
}
