//! PINGREQ from a client.

use crate::packet::Packet;

use crate::broker::net::connection::Connection;
use crate::broker::net::error::ConnectionError;

impl Connection {
    pub(crate) fn handle_pingreq(&mut self) -> Result<(), ConnectionError> {
        self.send(&Packet::PingResp);
        Ok(())
    }
}
