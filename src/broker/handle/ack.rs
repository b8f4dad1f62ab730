//! PUBACK, PUBREC, PUBREL, PUBCOMP from a client.

use crate::packet::{Ack, Packet, ReasonCode};

use crate::broker::handle::context::ConnectionCtx;
use crate::broker::handle::error::ConnectionError;
use crate::broker::session::AckOutcome;

pub(crate) fn puback(ctx: &mut ConnectionCtx, ack: Ack) -> Result<(), ConnectionError> {
    let (session, generation) = ctx.session_generation()?;
    match session.acknowledge_publish(generation, ack.packet_id, ack.reason_code, false) {
        AckOutcome::Done => ctx.broker.drain_groups_of(&session),
        AckOutcome::Rejected(copy) => {
            ctx.broker
                .member_rejected(*copy, ack.reason_code, &session.client_id);
            ctx.broker.drain_groups_of(&session);
        }
        AckOutcome::SendPubRel { .. } | AckOutcome::UnknownPacketId => {
            tracing::debug!(client_id = %session.client_id, packet_id = ack.packet_id, "PUBACK for a packet id not in flight");
        }
    }
    Ok(())
}

pub(crate) fn pubrec(ctx: &mut ConnectionCtx, ack: Ack) -> Result<(), ConnectionError> {
    let (session, generation) = ctx.session_generation()?;
    match session.acknowledge_publish(generation, ack.packet_id, ack.reason_code, true) {
        AckOutcome::SendPubRel { stored: false } => {
            ctx.out.send(&Packet::PubRel(Ack::new(ack.packet_id)))
        }
        AckOutcome::SendPubRel { stored: true } => ctx
            .out
            .send_outbound_when_durable(Packet::PubRel(Ack::new(ack.packet_id))),
        AckOutcome::Done => ctx.broker.drain_groups_of(&session),
        AckOutcome::Rejected(copy) => {
            ctx.broker
                .member_rejected(*copy, ack.reason_code, &session.client_id);
            ctx.broker.drain_groups_of(&session);
        }
        AckOutcome::UnknownPacketId => {
            ctx.out.send(&Packet::PubRel(Ack::with_reason(
                ack.packet_id,
                ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
            )));
        }
    }
    Ok(())
}

pub(crate) fn pubrel(ctx: &mut ConnectionCtx, ack: Ack) -> Result<(), ConnectionError> {
    let session = ctx.session()?;
    let reason = if session.release_incoming_qos2(ack.packet_id) {
        ReasonCode::SUCCESS
    } else {
        ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
    };
    ctx.out
        .send(&Packet::PubComp(Ack::with_reason(ack.packet_id, reason)));
    Ok(())
}

pub(crate) fn pubcomp(ctx: &mut ConnectionCtx, ack: Ack) -> Result<(), ConnectionError> {
    let (session, generation) = ctx.session_generation()?;
    if matches!(
        session.complete_publish(generation, ack.packet_id),
        AckOutcome::Done
    ) {
        ctx.broker.drain_groups_of(&session);
    }
    Ok(())
}
