//! The MQTT listeners of a `Config`: TLS settings loaded from their files, every socket bound,
//! then an accept loop (`broker/net/listener.rs`) per socket.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::broker::net::listener::{accept_loop, Kind, Listener};
use crate::broker::BrokerState;
use crate::config::Config;
use crate::tls::{ReloadableTls, TlsError, TlsFiles};

/// A TLS or WebSocket listener's address and kind, its certificates loaded.
pub(super) type Secured = Vec<(SocketAddr, Kind)>;

/// The bound addresses, by kind, each in config order.
pub(super) struct Addresses {
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub ws: Vec<SocketAddr>,
}

/// The TLS and WebSocket listeners of `config` with their certificates loaded, and the
/// certificates alone (for reload). Errors name the config key and the file. Blocking: reads
/// files.
pub(super) fn secured(config: &Config) -> Result<(Secured, Vec<Arc<ReloadableTls>>), TlsError> {
    let mut listeners = Vec::new();
    let mut certificates = Vec::new();
    for (index, tls) in config.server.tls_listeners.iter().enumerate() {
        let loaded = Arc::new(ReloadableTls::load(TlsFiles {
            key_prefix: format!("server.tls_listeners[{index}]"),
            cert: config.resolve_path(&tls.cert),
            key: config.resolve_path(&tls.key),
            client_ca: tls.client_ca.as_deref().map(|p| config.resolve_path(p)),
            require_client_cert: tls.require_client_cert,
        })?);
        certificates.push(loaded.clone());
        listeners.push((
            tls.address,
            Kind::Tls {
                tls: loaded,
                use_identity_as_username: tls.use_identity_as_username,
            },
        ));
    }
    for (index, ws) in config.server.ws_listeners.iter().enumerate() {
        let tls = match (&ws.cert, &ws.key) {
            (Some(cert), Some(key)) => {
                let loaded = Arc::new(ReloadableTls::load(TlsFiles {
                    key_prefix: format!("server.ws_listeners[{index}]"),
                    cert: config.resolve_path(cert),
                    key: config.resolve_path(key),
                    client_ca: None,
                    require_client_cert: false,
                })?);
                certificates.push(loaded.clone());
                Some(loaded)
            }
            _ => None,
        };
        listeners.push((
            ws.address,
            Kind::Ws {
                path: Arc::from(ws.path.as_str()),
                tls,
            },
        ));
    }
    Ok((listeners, certificates))
}

/// Binds the plain listeners of `server.listeners`, then `secured`, and registers each with
/// the broker's listener counts. Every socket is bound before any accepts: a failure leaves
/// nothing half-started.
pub(super) async fn bind(
    state: &BrokerState,
    secured: Secured,
) -> io::Result<Vec<(TcpListener, Listener)>> {
    let plain = state
        .config
        .server
        .listeners
        .iter()
        .map(|address| (*address, Kind::Tcp));
    let mut bound_listeners = Vec::new();
    for (address, kind) in plain.chain(secured) {
        let socket = TcpListener::bind(address)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {address}: {e}")))?;
        let bound = socket.local_addr()?;
        let listener = Listener::new(kind, bound);
        state
            .listeners
            .write()
            .push((listener.label.clone(), listener.stats.clone()));
        bound_listeners.push((socket, listener));
    }
    Ok(bound_listeners)
}

/// Starts accepting on every bound socket; returns their addresses by kind.
pub(super) fn serve(
    state: &Arc<BrokerState>,
    bound_listeners: Vec<(TcpListener, Listener)>,
) -> io::Result<Addresses> {
    let mut addresses = Addresses {
        tcp: Vec::new(),
        tls: Vec::new(),
        ws: Vec::new(),
    };
    for (socket, listener) in bound_listeners {
        let bound = socket.local_addr()?;
        match &listener.kind {
            Kind::Tcp => addresses.tcp.push(bound),
            Kind::Tls { .. } => addresses.tls.push(bound),
            Kind::Ws { .. } => addresses.ws.push(bound),
        }
        match &listener.kind {
            Kind::Ws { path, .. } => {
                tracing::info!(address = %bound, kind = %listener.kind.name(), path = %path, "listening for MQTT connections")
            }
            kind => {
                tracing::info!(address = %bound, kind = %kind.name(), "listening for MQTT connections")
            }
        }
        tokio::spawn(accept_loop(state.clone(), socket, listener));
    }
    Ok(addresses)
}
