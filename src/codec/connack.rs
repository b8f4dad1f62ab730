//! CONNACK (spec §3.2). Inside the broker the result is always an MQTT 5 reason code; 3.1.1
//! return codes are translated at the wire.

use bytes::{Buf, Bytes};

use super::properties;
use super::sink::Sink;
use super::string::read_u8;
use super::DecodeError;
use crate::packet::{ConnAck, ConnAckProperties, ReasonCode};

/// The 3.1.1 return code (§3.2.2.3 of 3.1.1) nearest to an MQTT 5 reason code. Failures with no
/// 3.1.1 counterpart become 5 (not authorized) when they are about who the client is, and 3
/// (server unavailable) otherwise, so a 3.1.1 client never retries a refusal aimed at it.
pub(crate) fn v3_return_code(rc: ReasonCode) -> u8 {
    match rc.0 {
        0x00..=0x7f => 0,
        0x84 => 1,
        0x85 => 2,
        0x88 | 0x89 => 3,
        0x86 => 4,
        0x87 | 0x8A | 0x8C => 5,
        _ => 3,
    }
}

fn from_v3_return_code(code: u8) -> Result<ReasonCode, DecodeError> {
    Ok(match code {
        0 => ReasonCode::SUCCESS,
        1 => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        2 => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        3 => ReasonCode::SERVER_UNAVAILABLE,
        4 => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        5 => ReasonCode::NOT_AUTHORIZED,
        // Reserved in 3.1.1 and untranslatable.
        _ => return Err(DecodeError::Malformed("reserved CONNACK return code")),
    })
}

pub(crate) fn decode(mut r: Bytes, v5: bool) -> Result<ConnAck, DecodeError> {
    let flags = read_u8(&mut r)?;
    if flags & 0xfe != 0 {
        return Err(DecodeError::Malformed("CONNACK reserved flags"));
    }
    let code = read_u8(&mut r)?;
    // A v5 client talking to a 3.1.1-only server gets a 3.1.1 CONNACK (return code 1) back
    // (§3.1.2.2): reading two bytes the 3.1.1 way lets the client see why.
    let (reason_code, properties) = if v5 && r.has_remaining() {
        (ReasonCode(code), properties::read_connack(&mut r)?)
    } else {
        (from_v3_return_code(code)?, ConnAckProperties::default())
    };
    if r.has_remaining() {
        return Err(DecodeError::Malformed("trailing bytes after CONNACK"));
    }
    Ok(ConnAck {
        session_present: flags & 1 != 0,
        reason_code,
        properties,
    })
}

pub(crate) fn emit<S: Sink>(c: &ConnAck, v5: bool, s: &mut S) {
    s.u8(u8::from(c.session_present));
    if v5 {
        s.u8(c.reason_code.0);
        // Written even when empty: v5 readers require the property length (§3.2.2.3).
        properties::write(s, &c.properties);
    } else {
        s.u8(v3_return_code(c.reason_code));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn v3_codes_map_both_ways() {
        for (rc, code) in [
            (0x00, 0),
            (0x84, 1),
            (0x85, 2),
            (0x88, 3),
            (0x89, 3),
            (0x86, 4),
            (0x87, 5),
            (0x80, 3),
        ] {
            assert_eq!(v3_return_code(ReasonCode(rc)), code);
        }
        let c = decode(Bytes::from_static(b"\x00\x01"), false).unwrap();
        assert_eq!(c.reason_code, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
        assert!(decode(Bytes::from_static(b"\x00\x06"), false).is_err());
    }

    #[test]
    fn v5_always_writes_property_length() {
        let mut out = BytesMut::new();
        emit(&ConnAck::default(), true, &mut out);
        assert_eq!(&out[..], b"\x00\x00\x00");
    }

    #[test]
    fn v5_reader_accepts_v3_refusal() {
        let c = decode(Bytes::from_static(b"\x00\x01"), true).unwrap();
        assert_eq!(c.reason_code, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
    }

    #[test]
    fn reserved_ack_flags() {
        assert!(matches!(
            decode(Bytes::from_static(b"\x02\x00"), false),
            Err(DecodeError::Malformed(_))
        ));
    }
}
