//! The connect phase: CONNECT (only a CONNECT may come first), an enhanced authentication
//! exchange (AUTH packets read within the same deadline), CONNACK. The decisions are the
//! handlers' (`handle/auth.rs`, `handle/connect.rs`); the reading, the deadline and the
//! answer to a CONNECT that cannot be decoded are here.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;

use crate::codec::{self, DecodeError};
use crate::packet::{ConnAck, Packet, ProtocolVersion, ReasonCode};

use crate::broker::handle;
use crate::broker::handle::auth::ConnectAuth;
use crate::broker::handle::error::ConnectionError;

use super::{CertificateUsername, Connection};

/// The packet type of CONNECT, the high nibble of its first byte.
const CONNECT_PACKET_TYPE: u8 = 1;

impl Connection {
    /// Reads CONNECT, authenticates it (an enhanced authentication exchange reads AUTH packets
    /// too, within the same deadline) and answers it. `Ok(false)` when the client was refused
    /// or went away. Whatever the client sent after CONNECT stays in `read_buf` for the main
    /// loop.
    pub(super) async fn connect_phase(&mut self) -> Result<bool, ConnectionError> {
        let timeout = Duration::from_secs(self.ctx.broker.config.limits.connect_timeout_secs);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Only a CONNECT may come first: anything else is refused at its first byte,
            // before the broker buffers a packet it will never accept.
            if self
                .read_buf
                .first()
                .is_some_and(|&b| b >> 4 != CONNECT_PACKET_TYPE)
            {
                return Err(DecodeError::NotConnect.into());
            }
            match self.decoder.frame_len(&self.read_buf) {
                Ok(Some(size)) => {
                    // The session keeps the CONNECT's strings (client id, will, username) for
                    // its whole life, and they are slices of the buffer they are decoded from:
                    // decode CONNECT from a copy of its own size, so they pin tens of bytes
                    // rather than a read block. One copy, however the bytes arrived.
                    let mut frame = BytesMut::from(&self.read_buf[..size]);
                    self.read_buf.advance(size);
                    // Read before decoding, which consumes the frame even when it fails: a
                    // refusal needs to know which protocol to answer in.
                    let level = peek_connect_level(&frame);
                    return match self.decoder.decode(&mut frame) {
                        Ok(Some(Packet::Connect(mut connect))) => {
                            self.ctx.out.set_version(connect.protocol);
                            self.decoder.set_version(connect.protocol);
                            // A TLS listener with `use_identity_as_username`: the certificate's
                            // CN is the username, whatever CONNECT says; no certificate, no
                            // connection.
                            match &self.certificate_username {
                                CertificateUsername::NotUsed => {}
                                CertificateUsername::Missing => {
                                    tracing::info!(listener = %self.ctx.listener(), peer = %self.ctx.peer(), "connection refused: no client certificate with a common name");
                                    handle::connect::refuse(
                                        &mut self.ctx,
                                        ReasonCode::NOT_AUTHORIZED,
                                    );
                                    self.flush().await?;
                                    return Ok(false);
                                }
                                CertificateUsername::Verified(name) => {
                                    connect.username = Some(name.clone());
                                }
                            }
                            let from_certificate = matches!(
                                self.certificate_username,
                                CertificateUsername::Verified(_)
                            );
                            let mut step = handle::auth::authenticate_connect(
                                &mut self.ctx,
                                &connect,
                                from_certificate,
                            )
                            .await;
                            let accepted = loop {
                                step = match step {
                                    ConnectAuth::Accepted { method, data } => {
                                        break handle::connect::handle(
                                            &mut self.ctx,
                                            *connect,
                                            method,
                                            data,
                                        )?
                                    }
                                    ConnectAuth::Refused => break false,
                                    ConnectAuth::Challenge(challenge) => {
                                        self.flush().await?;
                                        let reply =
                                            self.read_connect_phase_packet(deadline).await?;
                                        handle::auth::continue_connect(
                                            &mut self.ctx,
                                            challenge,
                                            reply,
                                        )
                                    }
                                };
                            };
                            self.flush().await?;
                            Ok(accepted)
                        }
                        Ok(_) => Err(DecodeError::NotConnect.into()),
                        Err(e) => {
                            self.refuse_bad_connect(&e, level);
                            Err(e.into())
                        }
                    };
                }
                Ok(None) => {}
                Err(e) => {
                    let level = peek_connect_level(&self.read_buf);
                    self.read_buf = BytesMut::new();
                    self.refuse_bad_connect(&e, level);
                    return Err(e.into());
                }
            }
            self.read_buf.reserve(4096);
            let read = tokio::select! {
                read = self.stream.read_buf(&mut self.read_buf) => read?,
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(listener = %self.ctx.listener(), peer = %self.ctx.peer(), "no CONNECT in time");
                    return Ok(false);
                }
                _ = self.ctx.broker.shutdown.cancelled() => return Ok(false),
            };
            if read == 0 {
                return Ok(false);
            }
        }
    }

    /// The next packet of an authentication exchange before CONNACK; none if the client closed,
    /// `deadline` passed or the broker is shutting down.
    async fn read_connect_phase_packet(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Packet>, ConnectionError> {
        loop {
            if let Some(packet) = self.decoder.decode(&mut self.read_buf)? {
                return Ok(Some(packet));
            }
            self.read_buf.reserve(4096);
            let read = tokio::select! {
                read = self.stream.read_buf(&mut self.read_buf) => read?,
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(peer = %self.ctx.peer(), "authentication not finished in time");
                    return Ok(None);
                }
                _ = self.ctx.broker.shutdown.cancelled() => return Ok(None),
            };
            if read == 0 {
                return Ok(None);
            }
        }
    }

    /// Answers an unreadable CONNECT with a CONNACK where the spec allows one: 0x84 for an
    /// unknown protocol (in the 3.1.1 format every client reads), the decode error's code for a
    /// v5 CONNECT whose level byte we could read (`level`, read before decoding).
    fn refuse_bad_connect(&mut self, error: &DecodeError, level: Option<u8>) {
        let (version, code) = match error {
            DecodeError::UnsupportedProtocol(_) => (
                ProtocolVersion::V3_1_1,
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            ),
            DecodeError::NotConnect => return,
            other if level == Some(5) => (ProtocolVersion::V5, other.reason_code()),
            _ => return,
        };
        let connack = Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: code,
            ..ConnAck::default()
        });
        let buf = self.ctx.out.buffer();
        if codec::encode(&connack, version, buf).is_err() {
            buf.clear();
        }
        // Written by `finish`, with the goodbye every refused connection gets.
    }
}

/// The protocol level byte of a CONNECT at the start of `buf`, if it can be read: fixed header,
/// then the protocol name as a length-prefixed string, then the level.
fn peek_connect_level(buf: &[u8]) -> Option<u8> {
    let mut index = 1;
    // Remaining length: up to four bytes with continuation bits.
    for _ in 0..4 {
        let byte = *buf.get(index)?;
        index += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let name_len = u16::from_be_bytes([*buf.get(index)?, *buf.get(index + 1)?]) as usize;
    buf.get(index + 2 + name_len).copied()
}
