//! Accepting connections on every listener kind (TCP, TLS, WebSocket, secure WebSocket),
//! within `limits.max_connections` and `limits.max_connections_per_ip`; then the TLS handshake
//! and the WebSocket upgrade, within `limits.connect_timeout_secs`; then the same connection
//! task for all.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

use crate::broker::admission::{Admitted, ListenerStats};
use crate::broker::net::connection::{self, CertificateUsername};
use crate::broker::net::stream::Stream;
use crate::broker::net::ws::{self, WsStream};
use crate::broker::BrokerState;
use crate::tls::{subject_common_name, ReloadableTls};

/// What a listener speaks above TCP.
#[derive(Debug, Clone)]
pub enum Kind {
    Tcp,
    Tls {
        tls: Arc<ReloadableTls>,
        use_identity_as_username: bool,
    },
    Ws {
        path: Arc<str>,
        /// Set for `wss`.
        tls: Option<Arc<ReloadableTls>>,
    },
}

impl Kind {
    /// The word logs use for it (`kind=...`, and the start of a connection's `listener`).
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Tls { .. } => "tls",
            Kind::Ws { tls: None, .. } => "ws",
            Kind::Ws { tls: Some(_), .. } => "wss",
        }
    }
}

/// A bound listener: its kind and the label its connections' logs carry
/// (`tls 127.0.0.1:8883`).
#[derive(Debug, Clone)]
pub struct Listener {
    pub kind: Kind,
    pub label: Arc<str>,
    pub stats: Arc<ListenerStats>,
}

impl Listener {
    pub fn new(kind: Kind, bound: SocketAddr) -> Listener {
        let label = Arc::from(format!("{} {bound}", kind.name()));
        Listener {
            kind,
            label,
            stats: Arc::default(),
        }
    }
}

pub async fn accept_loop(broker: Arc<BrokerState>, socket: TcpListener, listener: Listener) {
    loop {
        let accepted = tokio::select! {
            _ = broker.shutdown.cancelled() => break,
            accepted = socket.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(listener = %listener.label, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = match broker.admission.admit(peer.ip()) {
            Ok(admitted) => admitted.on_listener(&listener.stats),
            Err(refusal) => {
                broker
                    .stats
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                // Closed at once: a flood of refused sockets must cost as little as possible,
                // and must not flood the log either.
                drop(stream);
                if let Some(suppressed) = broker.refusal_log.allow() {
                    tracing::warn!(listener = %listener.label, %peer, limit = refusal.key(), suppressed, "connection refused: limit reached");
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match &listener.kind {
            Kind::Tcp => broker.tasks.spawn(connection::run(
                broker.clone(),
                Stream::Tcp(stream),
                peer,
                listener.label.clone(),
                CertificateUsername::NotUsed,
                admitted,
            )),
            _ => broker.tasks.spawn(handshake_then_serve(
                broker.clone(),
                stream,
                peer,
                listener.clone(),
                admitted,
            )),
        };
    }
    tracing::debug!(listener = %listener.label, "listener stopped");
}

/// Runs the TLS handshake and the WebSocket upgrade within `limits.connect_timeout_secs`, then
/// serves the connection. The socket holds its admission place throughout.
async fn handshake_then_serve(
    broker: Arc<BrokerState>,
    socket: TcpStream,
    peer: SocketAddr,
    listener: Listener,
    admitted: Admitted,
) {
    let timeout = Duration::from_secs(broker.config.limits.connect_timeout_secs);
    let handshake = tokio::select! {
        _ = broker.shutdown.cancelled() => return,
        result = tokio::time::timeout(timeout, handshake(&broker, socket, &listener.kind)) => result,
    };
    let (stream, username) = match handshake {
        Ok(Ok(done)) => done,
        Ok(Err(error)) => {
            // Anyone can make these (port scanners, wrong clients): info at most, and
            // rate-limited.
            if let Some(suppressed) = broker.handshake_log.allow() {
                tracing::info!(listener = %listener.label, %peer, %error, suppressed, "handshake failed");
            }
            return;
        }
        Err(_) => {
            if let Some(suppressed) = broker.handshake_log.allow() {
                tracing::info!(listener = %listener.label, %peer, suppressed, "handshake not completed within limits.connect_timeout_secs");
            }
            return;
        }
    };
    connection::run(broker, stream, peer, listener.label, username, admitted).await;
}

// The WebSocket upgrade callback returns the signature tungstenite requires, whose error is
// the whole HTTP response to send.
#[allow(clippy::result_large_err)]
async fn handshake(
    broker: &BrokerState,
    socket: TcpStream,
    kind: &Kind,
) -> Result<(Stream, CertificateUsername), HandshakeError> {
    match kind {
        Kind::Tcp => Ok((Stream::Tcp(socket), CertificateUsername::NotUsed)),
        Kind::Tls {
            tls,
            use_identity_as_username,
        } => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            let stream = acceptor.accept(socket).await.map_err(HandshakeError::Tls)?;
            let username = if *use_identity_as_username {
                // Only a certificate that verified against `client_ca` gets here.
                match stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| subject_common_name(leaf))
                {
                    Some(name) => CertificateUsername::Verified(ByteString::from(name)),
                    None => CertificateUsername::Missing,
                }
            } else {
                CertificateUsername::NotUsed
            };
            Ok((Stream::Other(Box::new(stream)), username))
        }
        Kind::Ws { path, tls } => {
            let config = ws::server_config(broker.config.limits.max_packet_size);
            let check =
                |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
                    ws::check_upgrade(path, request, response)
                };
            let stream = match tls {
                None => {
                    let upgraded = tokio_tungstenite::accept_hdr_async_with_config(
                        socket,
                        check,
                        Some(config),
                    )
                    .await
                    .map_err(HandshakeError::WebSocket)?;
                    Stream::Other(Box::new(WsStream::new(upgraded)))
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                    let secured = acceptor.accept(socket).await.map_err(HandshakeError::Tls)?;
                    let upgraded = tokio_tungstenite::accept_hdr_async_with_config(
                        secured,
                        check,
                        Some(config),
                    )
                    .await
                    .map_err(HandshakeError::WebSocket)?;
                    Stream::Other(Box::new(WsStream::new(upgraded)))
                }
            };
            Ok((stream, CertificateUsername::NotUsed))
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("WebSocket upgrade: {0}")]
    WebSocket(tokio_tungstenite::tungstenite::Error),
}
