//! AUTH (spec §3.15), MQTT 5 only.

use bytes::{Buf, Bytes};

use super::sink::Sink;
use super::string::read_u8;
use super::{properties, DecodeError};
use crate::packet::{Auth, ReasonCode};

/// Same short forms as DISCONNECT (§3.15.2.1): `f0 00` is Success.
pub(crate) fn decode(mut r: Bytes) -> Result<Auth, DecodeError> {
    let mut a = Auth::default();
    if r.has_remaining() {
        a.reason_code = ReasonCode(read_u8(&mut r)?);
    }
    if r.has_remaining() {
        a.properties = properties::read_auth(&mut r)?;
    }
    if r.has_remaining() {
        return Err(DecodeError::Malformed("trailing bytes after AUTH"));
    }
    Ok(a)
}

pub(crate) fn emit<S: Sink>(a: &Auth, s: &mut S) {
    let p = &a.properties;
    let bare = p.authentication_method.is_none()
        && p.authentication_data.is_none()
        && p.reason_string.is_none()
        && p.user_properties.is_empty();
    if bare && a.reason_code == ReasonCode::SUCCESS {
        return;
    }
    s.u8(a.reason_code.0);
    if !bare {
        properties::write(s, p);
    }
}
