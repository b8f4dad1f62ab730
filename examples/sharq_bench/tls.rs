//! `--tls-ca FILE`: clients connect with TLS (rustls, ring) trusting only the CA certificates in
//! FILE (PEM). Session resumption is off, so every connection pays for a full handshake.

use std::path::Path;
use std::sync::Arc;

use rumqttc::{TlsConfiguration, Transport};
use tokio_rustls::rustls::client::Resumption;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// The rumqttc transport for `--tls-ca`: TCP without it.
pub fn transport(ca: Option<&Path>) -> Result<Transport, String> {
    let Some(ca) = ca else {
        return Ok(Transport::Tcp);
    };
    let mut roots = RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(ca).map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("--tls-ca {}: no certificate", ca.display()));
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client config: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))))
}
