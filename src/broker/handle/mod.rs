//! One file per control packet a client sends, as the protocol names them, each a function
//! over the connection's explicit context (`context.rs`): `handle(ctx, packet)`. The context's
//! write side (`outbound.rs`), the aliases it uses towards the client (`topic_alias.rs`) and the
//! errors that end a connection (`error.rs`) live here too, below the connection task
//! (`net/connection/`) that owns the socket and calls in.

mod ack;
pub(crate) mod auth;
pub(crate) mod connect;
pub(crate) mod context;
mod disconnect;
pub(crate) mod error;
pub(crate) mod outbound;
mod ping;
mod publish;
mod subscribe;
pub(crate) mod topic_alias;

use crate::packet::Packet;

use context::ConnectionCtx;
use error::ConnectionError;

/// Handles one packet of an accepted connection (CONNECT and the exchange before CONNACK are
/// the connect phase's: `auth::authenticate_connect`, `connect::handle`).
pub(crate) fn handle_packet(
    ctx: &mut ConnectionCtx,
    packet: Packet,
) -> Result<(), ConnectionError> {
    match packet {
        Packet::Publish(publish) => publish::handle(ctx, publish),
        Packet::PubAck(ack) => ack::puback(ctx, ack),
        Packet::PubRec(ack) => ack::pubrec(ctx, ack),
        Packet::PubRel(ack) => ack::pubrel(ctx, ack),
        Packet::PubComp(ack) => ack::pubcomp(ctx, ack),
        Packet::Subscribe(subscribe) => subscribe::subscribe(ctx, subscribe),
        Packet::Unsubscribe(unsubscribe) => subscribe::unsubscribe(ctx, unsubscribe),
        Packet::PingReq => ping::pingreq(ctx),
        Packet::Disconnect(disconnect) => disconnect::handle(ctx, disconnect),
        Packet::Connect(_) => Err(ConnectionError::Protocol("second CONNECT on a connection")),
        Packet::Auth(auth) => auth::reauthenticate(ctx, auth),
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
            Err(ConnectionError::Protocol("packet only a server may send"))
        }
    }
}
