//! PUBLISH (spec §3.3): the hot path. The topic and payload are slices of the frame and the
//! property set of a plain publish allocates nothing.

use bytes::Bytes;

use super::sink::Sink;
use super::string::{read_packet_id, read_topic_name};
use super::{properties, DecodeError, EncodeError};
use crate::packet::{Publish, PublishProperties, QoS};

const DUP: u8 = 0x08;
const RETAIN: u8 = 0x01;

pub(crate) fn decode(mut r: Bytes, flags: u8, v5: bool) -> Result<Publish, DecodeError> {
    let qos = match QoS::from_u8((flags >> 1) & 0b11) {
        Some(q) => q,
        // §3.3.1.2: both QoS bits set is a Malformed Packet.
        None => return Err(DecodeError::Malformed("PUBLISH QoS 3")),
    };
    let dup = flags & DUP != 0;
    if dup && qos == QoS::AtMostOnce {
        // §3.3.1.1 [MQTT-3.3.1-2]; an invalid fixed-header flag combination, so malformed (§2.1.3).
        return Err(DecodeError::Malformed("DUP set on QoS 0 PUBLISH"));
    }
    let topic = read_topic_name(&mut r)?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(read_packet_id(&mut r)?)
    };
    let properties = if v5 {
        properties::read_publish(&mut r)?
    } else {
        PublishProperties::default()
    };
    if topic.is_empty() {
        if !v5 {
            return Err(DecodeError::TopicNameInvalid("empty topic name"));
        }
        if properties.topic_alias.is_none() {
            // §3.3.2.1: an empty topic needs a Topic Alias to stand in for it.
            return Err(DecodeError::Protocol(
                "empty topic name without Topic Alias",
            ));
        }
    }
    Ok(Publish {
        dup,
        qos,
        retain: flags & RETAIN != 0,
        topic,
        packet_id,
        // What is left is the payload: it may legitimately be empty.
        payload: r,
        properties,
    })
}

pub(crate) fn first_byte(p: &Publish) -> u8 {
    let mut b = 0x30 | ((p.qos as u8) << 1);
    if p.dup {
        b |= DUP;
    }
    if p.retain {
        b |= RETAIN;
    }
    b
}

pub(crate) fn emit<S: Sink>(p: &Publish, v5: bool, s: &mut S) {
    if p.topic.is_empty() && (!v5 || p.properties.topic_alias.is_none()) {
        s.fail(EncodeError::Invalid("empty topic name without Topic Alias"));
    }
    if p.dup && p.qos == QoS::AtMostOnce {
        s.fail(EncodeError::Invalid("DUP set on QoS 0 PUBLISH"));
    }
    s.string(p.topic.as_bytes(), "topic name");
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, None) => {}
        (QoS::AtMostOnce, Some(_)) => {
            s.fail(EncodeError::Invalid("packet identifier on QoS 0 PUBLISH"))
        }
        (_, Some(id)) if id != 0 => s.u16(id),
        (_, _) => {
            s.fail(EncodeError::Invalid(
                "QoS 1/2 PUBLISH needs a non-zero packet identifier",
            ));
            s.u16(0);
        }
    }
    if v5 {
        properties::write(s, &p.properties);
    }
    s.raw(&p.payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn payload_is_zero_copy() {
        let body = Bytes::from_static(b"\x00\x03a/b\x00\x07\x00payload");
        let p = decode(body.clone(), 0b0010, true).unwrap();
        assert_eq!(p.packet_id, Some(7));
        assert_eq!(&p.payload[..], b"payload");
        assert_eq!(p.payload.as_ptr(), body[8..].as_ptr());
    }

    #[test]
    fn flag_rules() {
        let body = || Bytes::from_static(b"\x00\x01a\x00\x01");
        assert_eq!(
            decode(body(), 0b0110, false),
            Err(DecodeError::Malformed("PUBLISH QoS 3"))
        );
        assert!(matches!(
            decode(body(), 0b1000, false),
            Err(DecodeError::Malformed(_))
        ));
        assert!(decode(body(), 0b1010, false).is_ok());
    }

    #[test]
    fn empty_topic() {
        assert!(matches!(
            decode(Bytes::from_static(b"\x00\x00"), 0, false),
            Err(DecodeError::TopicNameInvalid(_))
        ));
        assert!(matches!(
            decode(Bytes::from_static(b"\x00\x00\x00"), 0, true),
            Err(DecodeError::Protocol(_))
        ));
        let p = decode(Bytes::from_static(b"\x00\x00\x03\x23\x00\x05"), 0, true).unwrap();
        assert_eq!(p.properties.topic_alias, Some(5));
    }

    #[test]
    fn invalid_publish_is_an_encode_error() {
        let p = Publish {
            qos: QoS::AtLeastOnce,
            topic: "t".into(),
            ..Publish::default()
        };
        let mut c = super::super::sink::Counter::default();
        emit(&p, true, &mut c);
        assert!(c.finish().is_err());
        let mut out = BytesMut::new();
        emit(&p, true, &mut out); // the writer never panics, even on what the counter refuses
    }
}
