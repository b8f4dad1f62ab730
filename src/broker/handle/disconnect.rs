//! DISCONNECT from a client.

use crate::packet::Disconnect;

use crate::broker::net::connection::Connection;
use crate::broker::net::error::ConnectionError;

impl Connection {
    pub(crate) fn handle_disconnect(
        &mut self,
        disconnect: Disconnect,
    ) -> Result<(), ConnectionError> {
        if let (Some(client), Some(requested)) =
            (&self.client, disconnect.properties.session_expiry_interval)
        {
            // A session that was to end with its connection cannot be made to outlive it now
            // [MQTT-3.14.2-2].
            if client.session.expiry_interval() == 0 && requested != 0 {
                return Err(ConnectionError::Protocol(
                    "DISCONNECT sets a Session Expiry Interval after CONNECT set 0",
                ));
            }
            let capped = requested.min(self.broker.config.session.max_expiry_secs);
            client.session.set_expiry_interval(capped);
        }
        self.disconnect_received = Some(disconnect.reason_code);
        Ok(())
    }
}
