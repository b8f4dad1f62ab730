//! DISCONNECT (spec §3.14).

use bytes::{Buf, Bytes};

use super::sink::Sink;
use super::string::read_u8;
use super::{properties, DecodeError};
use crate::packet::{Disconnect, ReasonCode};

/// Short forms (§3.14.2.1): `e0 00` is Normal disconnection, `e0 01 rc` omits the properties.
/// Reason codes are kept as sent (see `ack::decode`).
pub(crate) fn decode(mut r: Bytes, v5: bool) -> Result<Disconnect, DecodeError> {
    let mut d = Disconnect::default();
    if v5 {
        if r.has_remaining() {
            d.reason_code = ReasonCode(read_u8(&mut r)?);
        }
        if r.has_remaining() {
            d.properties = properties::read_disconnect(&mut r)?;
        }
    }
    if r.has_remaining() {
        return Err(DecodeError::Malformed("trailing bytes after DISCONNECT"));
    }
    Ok(d)
}

pub(crate) fn emit<S: Sink>(d: &Disconnect, v5: bool, s: &mut S) {
    if !v5 {
        return;
    }
    let p = &d.properties;
    let bare = p.session_expiry_interval.is_none()
        && p.reason_string.is_none()
        && p.user_properties.is_empty()
        && p.server_reference.is_none();
    if bare && d.reason_code == ReasonCode::NORMAL_DISCONNECTION {
        return;
    }
    s.u8(d.reason_code.0);
    if !bare {
        properties::write(s, p);
    }
}
