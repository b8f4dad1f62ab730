//! Certificates made at test time and TLS connections to the broker.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::TIMEOUT;

/// A CA made at test time, writing PEM files into its own temp dir: the CA certificate, and
/// server and client certificates it signs.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM.
    pub ca_pem: std::path::PathBuf,
    next_serial: u64,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sharq test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        TestPki {
            dir,
            ca,
            ca_pem,
            next_serial: 1,
        }
    }

    /// Writes `NAME.pem` and `NAME.key` in the PKI's dir: a certificate with subject CN `cn`
    /// for `localhost` and 127.0.0.1, usable by a server or (`client`) a client.
    pub fn issue(
        &mut self,
        name: &str,
        cn: &str,
        client: bool,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.serial_number = Some(rcgen::SerialNumber::from(self.next_serial));
        self.next_serial += 1;
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let cert_path = self.dir.path().join(format!("{name}.pem"));
        let key_path = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    pub fn server(&mut self, name: &str, cn: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        self.issue(name, cn, false)
    }

    pub fn client(&mut self, name: &str, cn: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        self.issue(name, cn, true)
    }

    /// A rustls client trusting this CA, presenting `identity` (cert, key files) if given.
    pub fn client_config(
        &self,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Arc<tokio_rustls::rustls::ClientConfig> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&self.ca_pem).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(cert)
                        .unwrap()
                        .map(Result::unwrap)
                        .collect(),
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }
}

pub type TlsClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS handshake with the broker at `addr` as `localhost`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<tokio_rustls::rustls::ClientConfig>,
) -> std::io::Result<TlsClientStream> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost")
        .map_err(std::io::Error::other)?;
    tokio::time::timeout(
        TIMEOUT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// The subject CN of the certificate the server presented.
pub fn server_cn(stream: &TlsClientStream) -> String {
    let leaf = &stream.get_ref().1.peer_certificates().unwrap()[0];
    sharq::tls::subject_common_name(leaf).unwrap()
}
