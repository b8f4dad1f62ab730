//! UNSUBSCRIBE (spec §3.10) and UNSUBACK (§3.11).

use bytes::{Buf, Bytes};

use super::ack::read_v5_properties;
use super::sink::Sink;
use super::string::{read_packet_id, read_string};
use super::{properties, DecodeError, EncodeError};
use crate::packet::{ReasonCode, UnsubAck, Unsubscribe, UnsubscribeProperties};

pub(crate) fn decode(mut r: Bytes, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = read_packet_id(&mut r)?;
    let properties = if v5 {
        properties::read_unsubscribe(&mut r)?
    } else {
        UnsubscribeProperties::default()
    };
    let mut filters = Vec::new();
    while r.has_remaining() {
        filters.push(read_string(&mut r)?);
    }
    if filters.is_empty() {
        // §3.10.3: an UNSUBSCRIBE without payload is a Protocol Error.
        return Err(DecodeError::Protocol("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

pub(crate) fn emit<S: Sink>(p: &Unsubscribe, v5: bool, s: &mut S) {
    if p.packet_id == 0 {
        s.fail(EncodeError::Invalid("packet identifier 0"));
    }
    if p.filters.is_empty() {
        s.fail(EncodeError::Invalid("UNSUBSCRIBE without topic filters"));
    }
    s.u16(p.packet_id);
    if v5 {
        properties::write(s, &p.properties);
    }
    for f in &p.filters {
        s.string(f.as_bytes(), "topic filter");
    }
}

/// 3.1.1 UNSUBACK is the packet identifier alone; v5 adds properties and one code per filter.
pub(crate) fn decode_unsuback(mut r: Bytes, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = read_packet_id(&mut r)?;
    let properties = read_v5_properties(&mut r, v5)?;
    if v5 && !r.has_remaining() {
        return Err(DecodeError::Protocol("UNSUBACK without reason codes"));
    }
    if !v5 && r.has_remaining() {
        return Err(DecodeError::Malformed("trailing bytes after UNSUBACK"));
    }
    let reason_codes = r.iter().map(|&b| ReasonCode(b)).collect();
    Ok(UnsubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

pub(crate) fn emit_unsuback<S: Sink>(p: &UnsubAck, v5: bool, s: &mut S) {
    if p.packet_id == 0 {
        s.fail(EncodeError::Invalid("packet identifier 0"));
    }
    s.u16(p.packet_id);
    if v5 {
        properties::write(s, &p.properties);
        for rc in &p.reason_codes {
            s.u8(rc.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_unsubscribe_is_protocol_error() {
        assert!(matches!(
            decode(Bytes::from_static(b"\x00\x01\x00"), true),
            Err(DecodeError::Protocol(_))
        ));
    }

    #[test]
    fn v3_unsuback_has_no_payload() {
        let u = decode_unsuback(Bytes::from_static(b"\x00\x09"), false).unwrap();
        assert!(u.reason_codes.is_empty());
        assert!(decode_unsuback(Bytes::from_static(b"\x00\x09\x00"), false).is_err());
    }
}
