//! AUTH from a client.

use crate::packet::Auth;

use crate::broker::net::connection::Connection;
use crate::broker::net::error::ConnectionError;

impl Connection {
    /// The broker offers no enhanced authentication (CONNECT with an Authentication Method
    /// is refused), so no AUTH exchange can have begun and any AUTH breaks the protocol.
    pub(crate) fn handle_auth(&mut self, _auth: Auth) -> Result<(), ConnectionError> {
        Err(ConnectionError::Protocol(
            "AUTH without an authentication method",
        ))
    }
}
