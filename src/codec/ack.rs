//! PUBACK, PUBREC, PUBREL and PUBCOMP (spec §3.4-§3.7): one shape, with MQTT 5 short forms.

use bytes::{Buf, Bytes};

use super::sink::Sink;
use super::string::{read_packet_id, read_u8};
use super::{properties, DecodeError, EncodeError};
use crate::packet::{Ack, AckProperties, ReasonCode};

/// Reason codes are taken as sent, without checking they are defined for this packet type: the
/// broker only distinguishes success from failure, and a newer peer's code is no reason to drop
/// the connection.
pub(crate) fn decode(mut r: Bytes, v5: bool) -> Result<Ack, DecodeError> {
    let packet_id = read_packet_id(&mut r)?;
    let mut ack = Ack::new(packet_id);
    if v5 {
        // §3.4.2.1: the reason code may be left out (remaining length 2), and the property
        // length too (remaining length 3).
        if r.has_remaining() {
            ack.reason_code = ReasonCode(read_u8(&mut r)?);
        }
        if r.has_remaining() {
            ack.properties = properties::read_ack(&mut r)?;
        }
    }
    if r.has_remaining() {
        return Err(DecodeError::Malformed(
            "trailing bytes after acknowledgement",
        ));
    }
    Ok(ack)
}

pub(crate) fn emit<S: Sink>(a: &Ack, v5: bool, s: &mut S) {
    if a.packet_id == 0 {
        s.fail(EncodeError::Invalid("packet identifier 0"));
    }
    s.u16(a.packet_id);
    if v5 {
        let bare = a.properties.is_empty();
        if a.reason_code != ReasonCode::SUCCESS || !bare {
            s.u8(a.reason_code.0);
        }
        if !bare {
            properties::write(s, &a.properties);
        }
    }
}

/// Shared by SUBACK and UNSUBACK, whose v5 form also carries these properties.
pub(crate) fn read_v5_properties(r: &mut Bytes, v5: bool) -> Result<AckProperties, DecodeError> {
    if v5 {
        properties::read_ack(r)
    } else {
        Ok(AckProperties::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn wire(a: &Ack) -> Vec<u8> {
        let mut out = BytesMut::new();
        emit(a, true, &mut out);
        out.to_vec()
    }

    #[test]
    fn short_forms() {
        assert_eq!(wire(&Ack::new(1)), b"\x00\x01");
        assert_eq!(
            wire(&Ack::with_reason(1, ReasonCode(0x10))),
            b"\x00\x01\x10"
        );
        let a = Ack {
            packet_id: 1,
            reason_code: ReasonCode::SUCCESS,
            properties: AckProperties {
                reason_string: Some("x".into()),
                ..Default::default()
            },
        };
        assert_eq!(wire(&a), b"\x00\x01\x00\x04\x1f\x00\x01x");
        for w in [
            &b"\x00\x01"[..],
            b"\x00\x01\x10",
            b"\x00\x01\x10\x00",
            b"\x00\x01\x00\x04\x1f\x00\x01x",
        ] {
            let a = decode(Bytes::copy_from_slice(w), true).unwrap();
            assert_eq!(a.packet_id, 1);
        }
    }

    #[test]
    fn v3_is_exactly_two_bytes() {
        assert!(decode(Bytes::from_static(b"\x00\x01"), false).is_ok());
        assert!(matches!(
            decode(Bytes::from_static(b"\x00\x01\x00"), false),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(Bytes::from_static(b"\x00"), false),
            Err(DecodeError::Malformed(_))
        ));
    }
}
