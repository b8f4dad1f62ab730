//! How a connection ends: the goodbye, and the session handed back.
//!
//! A connection we end says goodbye so the client can read why: our last packets (a refusing
//! CONNACK, a DISCONNECT with its reason code) are written, the write side is half-closed, and
//! input is drained and discarded for a bounded time before the socket closes. Closing with
//! unread input would make the kernel send a reset, and the client would lose the reason code.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytestring::ByteString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::codec::DecodeError;
use crate::packet::{Disconnect, DisconnectProperties, Packet, ReasonCode};

use crate::broker::handle::error::ConnectionError;
use crate::broker::shared::Redelivery;
use crate::broker::will;
use crate::broker::BrokerState;

use super::{Connection, End};

/// How long a goodbye (DISCONNECT, refusing CONNACK) may take to write before we just close.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long input is drained after our goodbye, so the client reads it instead of a reset.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

impl Connection {
    /// Says goodbye where the protocol has a way to, and settles the session: will message,
    /// redispatch of shared copies, expiry.
    pub(super) async fn finish(&mut self, end: End) {
        // A broken socket has nobody to say anything to; every other end is told, in order,
        // what was already answered (acks in the write buffer) and then why it ends.
        let socket_usable = !matches!(end, End::Lost | End::Error(ConnectionError::Io(_)));
        let accepted = self.ctx.client.is_some();
        let disconnect = match &end {
            End::Shutdown => Some((ReasonCode::SERVER_SHUTTING_DOWN, None)),
            End::Kicked(code) => Some((*code, None)),
            End::KeepAliveTimeout => Some((ReasonCode::KEEP_ALIVE_TIMEOUT, None)),
            End::Error(ConnectionError::Io(_)) => None,
            End::Error(ConnectionError::Decode(DecodeError::NotConnect)) => None,
            End::Error(e) if accepted => Some((e.reason_code(), Some(e.to_string()))),
            _ => None,
        };
        if let (Some((code, reason)), true) = (disconnect, self.ctx.version().is_v5() && accepted) {
            let reason_string = reason
                .filter(|_| self.ctx.request_problem_information)
                .map(ByteString::from);
            self.ctx.out.send(&Packet::Disconnect(Disconnect {
                reason_code: code,
                properties: DisconnectProperties {
                    reason_string,
                    ..DisconnectProperties::default()
                },
            }));
        }
        if socket_usable {
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, self.flush()).await;
        }
        // Half-close: the client sees end of stream after our last packet.
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, self.stream.shutdown()).await;
        self.settle(&end);
        if socket_usable {
            self.drain_input().await;
        }
    }

    /// Reads and discards what the client still sends, until it closes or DRAIN_TIMEOUT passes,
    /// so that closing does not turn unread input into a reset that hides our goodbye.
    async fn drain_input(&mut self) {
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        // On the heap, and only now: an array here would live in the connection task's future
        // for the connection's whole life (4 KiB of its ~5.6 KiB), idle or not.
        let mut scratch = vec![0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut scratch)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Hands the session back: redispatch of unfinished shared copies, will, expiry.
    fn settle(&mut self, end: &End) {
        let ctx = &mut self.ctx;
        let Some(client) = ctx.client.take() else {
            if let End::Error(e) = end {
                tracing::info!(listener = %ctx.listener(), peer = %ctx.peer(), error = %e, "connection closed before CONNECT completed");
            }
            return;
        };
        let session = client.session;
        ctx.broker
            .stats
            .clients_connected
            .fetch_sub(1, Ordering::Relaxed);
        match end {
            End::Error(e) => {
                tracing::info!(client_id = %session.client_id, listener = %ctx.listener(), peer = %ctx.peer(), error = %e, code = %e.reason_code(), "client disconnected: protocol violation")
            }
            other => {
                tracing::info!(client_id = %session.client_id, listener = %ctx.listener(), peer = %ctx.peer(), reason = ?other, "client disconnected")
            }
        }
        let Some(redispatch) = session.detach(client.generation) else {
            // A newer connection owns the session now; it has done the settling.
            return;
        };
        ctx.broker.redispatch(
            redispatch,
            Redelivery::MemberDisconnected,
            &session.client_id,
        );
        match end {
            End::Shutdown => {
                let _ = session.take_will();
                session.forget_will();
                return;
            }
            End::Disconnected(ReasonCode::NORMAL_DISCONNECTION) => {
                let _ = session.take_will();
                session.forget_will();
            }
            _ => {
                if let Some(last_will) = session.take_will() {
                    will::schedule(&ctx.broker, &session, last_will, client.generation);
                }
            }
        }
        BrokerState::schedule_expiry(&ctx.broker, session, client.generation);
    }
}
