//! PUBACK, PUBREC, PUBREL, PUBCOMP from a client.

use crate::packet::{Ack, Packet, ReasonCode};

use crate::broker::net::connection::Connection;
use crate::broker::net::error::ConnectionError;
use crate::broker::session::AckOutcome;

impl Connection {
    pub(crate) fn handle_puback(&mut self, ack: Ack) -> Result<(), ConnectionError> {
        let (session, generation) = self.session_generation()?;
        match session.acknowledge_publish(generation, ack.packet_id, ack.reason_code, false) {
            AckOutcome::Done => self.broker.drain_groups_of(&session),
            AckOutcome::Rejected(copy) => {
                self.broker
                    .member_rejected(*copy, ack.reason_code, &session.client_id);
                self.broker.drain_groups_of(&session);
            }
            AckOutcome::SendPubRel { .. } | AckOutcome::UnknownPacketId => {
                tracing::debug!(client_id = %session.client_id, packet_id = ack.packet_id, "PUBACK for a packet id not in flight");
            }
        }
        Ok(())
    }

    pub(crate) fn handle_pubrec(&mut self, ack: Ack) -> Result<(), ConnectionError> {
        let (session, generation) = self.session_generation()?;
        match session.acknowledge_publish(generation, ack.packet_id, ack.reason_code, true) {
            AckOutcome::SendPubRel { stored: false } => {
                self.send(&Packet::PubRel(Ack::new(ack.packet_id)))
            }
            AckOutcome::SendPubRel { stored: true } => {
                self.send_outbound_when_durable(Packet::PubRel(Ack::new(ack.packet_id)))
            }
            AckOutcome::Done => self.broker.drain_groups_of(&session),
            AckOutcome::Rejected(copy) => {
                self.broker
                    .member_rejected(*copy, ack.reason_code, &session.client_id);
                self.broker.drain_groups_of(&session);
            }
            AckOutcome::UnknownPacketId => {
                self.send(&Packet::PubRel(Ack::with_reason(
                    ack.packet_id,
                    ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn handle_pubrel(&mut self, ack: Ack) -> Result<(), ConnectionError> {
        let session = self.session()?;
        let reason = if session.release_incoming_qos2(ack.packet_id) {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        self.send(&Packet::PubComp(Ack::with_reason(ack.packet_id, reason)));
        Ok(())
    }

    pub(crate) fn handle_pubcomp(&mut self, ack: Ack) -> Result<(), ConnectionError> {
        let (session, generation) = self.session_generation()?;
        if matches!(
            session.complete_publish(generation, ack.packet_id),
            AckOutcome::Done
        ) {
            self.broker.drain_groups_of(&session);
        }
        Ok(())
    }

    /// The session and this connection's generation on it: acknowledgements only count from
    /// the connection attached to the session now.
    fn session_generation(
        &self,
    ) -> Result<(std::sync::Arc<crate::broker::session::Session>, u64), ConnectionError> {
        self.client
            .as_ref()
            .map(|c| (c.session.clone(), c.generation))
            .ok_or(ConnectionError::Protocol("packet before CONNECT"))
    }

    pub(crate) fn session(
        &self,
    ) -> Result<std::sync::Arc<crate::broker::session::Session>, ConnectionError> {
        self.client
            .as_ref()
            .map(|c| c.session.clone())
            .ok_or(ConnectionError::Protocol("packet before CONNECT"))
    }
}
