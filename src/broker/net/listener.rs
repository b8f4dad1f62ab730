//! Accepting TCP connections, within `limits.max_connections` and
//! `limits.max_connections_per_ip`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::broker::net::connection;
use crate::broker::BrokerState;

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
        let admitted = match broker.admission.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                broker
                    .stats
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                // Closed at once: a flood of refused sockets must cost as little as possible,
                // and must not flood the log either.
                drop(stream);
                if let Some(suppressed) = broker.refusal_log.allow() {
                    tracing::warn!(%peer, limit = refusal.key(), suppressed, "connection refused: limit reached");
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        broker
            .tasks
            .spawn(connection::run(broker.clone(), stream, peer, admitted));
    }
    tracing::debug!("listener stopped");
}
