//! PINGREQ from a client.

use crate::packet::Packet;

use super::connection::Connection;
use super::error::ConnectionError;

impl Connection {
    pub(super) fn handle_pingreq(&mut self) -> Result<(), ConnectionError> {
        self.send(&Packet::PingResp);
        Ok(())
    }
}
