//! Accepting TCP connections.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::connection;
use super::BrokerState;

pub async fn accept_loop(broker: Arc<BrokerState>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = broker.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let connected = broker.stats.clients_connected.load(Ordering::Relaxed);
        if connected as usize >= broker.config.limits.max_connections {
            tracing::warn!(%peer, limit = broker.config.limits.max_connections, "connection refused: limits.max_connections reached");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        broker
            .tasks
            .spawn(connection::run(broker.clone(), stream, peer));
    }
    tracing::debug!("listener stopped");
}
