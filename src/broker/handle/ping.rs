//! PINGREQ from a client.

use crate::packet::Packet;

use crate::broker::handle::context::ConnectionCtx;
use crate::broker::handle::error::ConnectionError;

pub(crate) fn pingreq(ctx: &mut ConnectionCtx) -> Result<(), ConnectionError> {
    ctx.out.send(&Packet::PingResp);
    Ok(())
}
