//! DISCONNECT from a client.

use crate::packet::Disconnect;

use crate::broker::handle::context::ConnectionCtx;
use crate::broker::handle::error::ConnectionError;

pub(crate) fn handle(
    ctx: &mut ConnectionCtx,
    disconnect: Disconnect,
) -> Result<(), ConnectionError> {
    if let (Some(client), Some(requested)) =
        (&ctx.client, disconnect.properties.session_expiry_interval)
    {
        // A session that was to end with its connection cannot be made to outlive it now
        // [MQTT-3.14.2-2].
        if client.session.expiry_interval() == 0 && requested != 0 {
            return Err(ConnectionError::Protocol(
                "DISCONNECT sets a Session Expiry Interval after CONNECT set 0",
            ));
        }
        let capped = requested.min(ctx.broker.config.session.max_expiry_secs);
        client.session.set_expiry_interval(capped);
    }
    ctx.disconnect_received = Some(disconnect.reason_code);
    Ok(())
}
