//! SUBSCRIBE (spec §3.8) and SUBACK (§3.9).
//!
//! Topic filter syntax is not checked here: an invalid filter fails only that subscription
//! (SUBACK 0x8F), which the broker decides with `topic::validate_filter`.

use bytes::{Buf, Bytes};

use super::ack::read_v5_properties;
use super::sink::Sink;
use super::string::{read_packet_id, read_string, read_u8};
use super::{properties, DecodeError, EncodeError};
use crate::packet::{
    QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscribeProperties, SubscriptionOptions,
    TopicSubscription,
};

const NO_LOCAL: u8 = 0x04;
const RETAIN_AS_PUBLISHED: u8 = 0x08;
const RETAIN_HANDLING_SHIFT: u8 = 4;

fn read_options(byte: u8, v5: bool) -> Result<SubscriptionOptions, DecodeError> {
    let reserved = if v5 { 0xc0 } else { 0xfc };
    if byte & reserved != 0 {
        // §3.8.3.1 (and 3.1.1 §3.8.3-4): non-zero reserved bits make the packet malformed.
        return Err(DecodeError::Malformed("reserved subscription option bits"));
    }
    let qos = match QoS::from_u8(byte & 0b11) {
        Some(q) => q,
        // 3.1.1 calls QoS 3 malformed; MQTT 5 calls it a Protocol Error.
        None if v5 => return Err(DecodeError::Protocol("subscription QoS 3")),
        None => return Err(DecodeError::Malformed("subscription QoS 3")),
    };
    let retain_handling = match (byte >> RETAIN_HANDLING_SHIFT) & 0b11 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::Protocol("Retain Handling 3")),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & NO_LOCAL != 0,
        retain_as_published: byte & RETAIN_AS_PUBLISHED != 0,
        retain_handling,
    })
}

pub(crate) fn decode(mut r: Bytes, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = read_packet_id(&mut r)?;
    let properties = if v5 {
        properties::read_subscribe(&mut r)?
    } else {
        SubscribeProperties::default()
    };
    // Grown by push, never sized from the peer's claims: each entry costs at least 3 input bytes.
    let mut filters = Vec::new();
    while r.has_remaining() {
        let filter = read_string(&mut r)?;
        let options = read_options(read_u8(&mut r)?, v5)?;
        filters.push(TopicSubscription { filter, options });
    }
    if filters.is_empty() {
        // §3.8.3: a SUBSCRIBE without payload is a Protocol Error.
        return Err(DecodeError::Protocol("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

pub(crate) fn emit<S: Sink>(p: &Subscribe, v5: bool, s: &mut S) {
    if p.packet_id == 0 {
        s.fail(EncodeError::Invalid("packet identifier 0"));
    }
    if p.filters.is_empty() {
        s.fail(EncodeError::Invalid("SUBSCRIBE without topic filters"));
    }
    s.u16(p.packet_id);
    if v5 {
        properties::write(s, &p.properties);
    }
    for f in &p.filters {
        s.string(f.filter.as_bytes(), "topic filter");
        let o = &f.options;
        let mut byte = o.qos as u8;
        if v5 {
            if o.no_local {
                byte |= NO_LOCAL;
            }
            if o.retain_as_published {
                byte |= RETAIN_AS_PUBLISHED;
            }
            byte |= (o.retain_handling as u8) << RETAIN_HANDLING_SHIFT;
        }
        s.u8(byte);
    }
}

/// MQTT 5 reason codes are kept as sent (see `ack::decode`). 3.1.1 has a closed set (0, 1, 2,
/// 0x80; §3.9.3 of 3.1.1 calls the rest reserved), so anything else is malformed there; its 0x80
/// reads as MQTT 5's Unspecified error, which is the same byte.
pub(crate) fn decode_suback(mut r: Bytes, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = read_packet_id(&mut r)?;
    let properties = read_v5_properties(&mut r, v5)?;
    if !r.has_remaining() {
        return Err(DecodeError::Protocol("SUBACK without reason codes"));
    }
    if !v5 && r.iter().any(|&b| !matches!(b, 0 | 1 | 2 | 0x80)) {
        return Err(DecodeError::Malformed("reserved 3.1.1 SUBACK return code"));
    }
    let reason_codes = r.iter().map(|&b| ReasonCode(b)).collect();
    Ok(SubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

pub(crate) fn emit_suback<S: Sink>(p: &SubAck, v5: bool, s: &mut S) {
    if p.packet_id == 0 {
        s.fail(EncodeError::Invalid("packet identifier 0"));
    }
    s.u16(p.packet_id);
    if v5 {
        properties::write(s, &p.properties);
    }
    for &rc in &p.reason_codes {
        let byte = match rc.0 {
            b if v5 => b,
            b @ 0..=2 => b,
            // 3.1.1 knows a single failure code (§3.9.3 of 3.1.1).
            0x80.. => 0x80,
            b => {
                s.fail(EncodeError::Invalid("SUBACK code with no 3.1.1 equivalent"));
                b
            }
        };
        s.u8(byte);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn options_rules() {
        assert_eq!(
            read_options(0x03, true),
            Err(DecodeError::Protocol("subscription QoS 3"))
        );
        assert_eq!(
            read_options(0x03, false),
            Err(DecodeError::Malformed("subscription QoS 3"))
        );
        assert_eq!(
            read_options(0x30, true),
            Err(DecodeError::Protocol("Retain Handling 3"))
        );
        assert!(matches!(
            read_options(0x40, true),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            read_options(0x04, false),
            Err(DecodeError::Malformed(_))
        ));
        let o = read_options(0x2d, true).unwrap();
        assert!(o.no_local && o.retain_as_published);
        assert_eq!(o.retain_handling, RetainHandling::DoNotSend);
        assert_eq!(o.qos, QoS::AtLeastOnce);
    }

    #[test]
    fn empty_subscribe_is_protocol_error() {
        assert!(matches!(
            decode(Bytes::from_static(b"\x00\x01\x00"), true),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            decode(Bytes::from_static(b"\x00\x01"), false),
            Err(DecodeError::Protocol(_))
        ));
    }

    #[test]
    fn v3_suback_failure_is_0x80() {
        let p = SubAck {
            packet_id: 1,
            reason_codes: vec![ReasonCode(1), ReasonCode::NOT_AUTHORIZED],
            properties: Default::default(),
        };
        let mut out = BytesMut::new();
        emit_suback(&p, false, &mut out);
        assert_eq!(&out[..], b"\x00\x01\x01\x80");
    }
}
