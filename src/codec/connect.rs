//! CONNECT (spec §3.1; 3.1.1 §3.1; MQTT 3.1 uses protocol name `MQIsdp`, level 3).

use bytes::{Buf, Bytes};

use super::sink::Sink;
use super::string::{read_binary, read_string, read_topic_name, read_u16, read_u8};
use super::{properties, DecodeError, EncodeError};
use crate::packet::{Connect, ConnectProperties, LastWill, ProtocolVersion, QoS, WillProperties};

const USERNAME: u8 = 0x80;
const PASSWORD: u8 = 0x40;
const WILL_RETAIN: u8 = 0x20;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_QOS: u8 = 0x18;
const WILL: u8 = 0x04;
const CLEAN_START: u8 = 0x02;
const RESERVED: u8 = 0x01;

/// Reads a CONNECT body; the protocol it announces decides how the rest is read.
pub(crate) fn decode(mut r: Bytes) -> Result<Connect, DecodeError> {
    // Read the name as bytes: a peer speaking another protocol earns "unsupported", not
    // "malformed UTF-8".
    let name = read_binary(&mut r)?;
    let level = read_u8(&mut r)?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => ProtocolVersion::V3_1_1,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V3_1,
        (b"MQTT", _) | (b"MQIsdp", _) => {
            return Err(DecodeError::UnsupportedProtocol(
                "unsupported protocol level",
            ))
        }
        _ => return Err(DecodeError::UnsupportedProtocol("unknown protocol name")),
    };
    let v5 = protocol.is_v5();
    let flags = read_u8(&mut r)?;
    if flags & RESERVED != 0 {
        return Err(DecodeError::Malformed("CONNECT reserved flag set"));
    }
    let will_qos = (flags & WILL_QOS) >> WILL_QOS_SHIFT;
    if will_qos == 3 {
        return Err(DecodeError::Malformed("Will QoS 3"));
    }
    if flags & WILL == 0 && (will_qos != 0 || flags & WILL_RETAIN != 0) {
        return Err(DecodeError::Malformed(
            "Will QoS or Will Retain without Will Flag",
        ));
    }
    if !v5 && flags & PASSWORD != 0 && flags & USERNAME == 0 {
        return Err(DecodeError::Malformed(
            "password flag without user name flag",
        ));
    }
    let keep_alive = read_u16(&mut r)?;
    let properties = if v5 {
        properties::read_connect(&mut r)?
    } else {
        ConnectProperties::default()
    };
    let client_id = read_string(&mut r)?;
    let will = if flags & WILL != 0 {
        let properties = if v5 {
            properties::read_will(&mut r)?
        } else {
            WillProperties::default()
        };
        let topic = read_topic_name(&mut r)?;
        if topic.is_empty() {
            return Err(DecodeError::TopicNameInvalid("empty Will Topic"));
        }
        let payload = read_binary(&mut r)?;
        Some(LastWill {
            topic,
            payload,
            qos: QoS::from_u8(will_qos).unwrap_or_default(),
            retain: flags & WILL_RETAIN != 0,
            properties,
        })
    } else {
        None
    };
    let username = if flags & USERNAME != 0 {
        Some(read_string(&mut r)?)
    } else {
        None
    };
    let password = if flags & PASSWORD != 0 {
        Some(read_binary(&mut r)?)
    } else {
        None
    };
    if r.has_remaining() {
        return Err(DecodeError::Malformed(
            "trailing bytes after CONNECT payload",
        ));
    }
    Ok(Connect {
        protocol,
        clean_start: flags & CLEAN_START != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// CONNECT is written in the protocol it names, whatever the connection's version argument.
pub(crate) fn emit<S: Sink>(c: &Connect, s: &mut S) {
    let v5 = c.protocol.is_v5();
    match c.protocol {
        ProtocolVersion::V3_1 => s.string(b"MQIsdp", "protocol name"),
        _ => s.string(b"MQTT", "protocol name"),
    }
    s.u8(c.protocol.level());
    let mut flags = 0;
    if c.clean_start {
        flags |= CLEAN_START;
    }
    if let Some(w) = &c.will {
        flags |= WILL | ((w.qos as u8) << WILL_QOS_SHIFT);
        if w.retain {
            flags |= WILL_RETAIN;
        }
    }
    if c.username.is_some() {
        flags |= USERNAME;
    } else if c.password.is_some() && !v5 {
        s.fail(EncodeError::Invalid("3.1.1 password without user name"));
    }
    if c.password.is_some() {
        flags |= PASSWORD;
    }
    s.u8(flags);
    s.u16(c.keep_alive);
    if v5 {
        properties::write(s, &c.properties);
    }
    s.string(c.client_id.as_bytes(), "client identifier");
    if let Some(w) = &c.will {
        if v5 {
            properties::write(s, &w.properties);
        }
        s.string(w.topic.as_bytes(), "will topic");
        s.string(&w.payload, "will payload");
    }
    if let Some(u) = &c.username {
        s.string(u.as_bytes(), "user name");
    }
    if let Some(p) = &c.password {
        s.string(p, "password");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn connect(protocol: ProtocolVersion) -> Connect {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 30,
            client_id: "c1".into(),
            will: Some(LastWill {
                topic: "w".into(),
                payload: Bytes::from_static(b"\xffbye"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: WillProperties::default(),
            }),
            username: Some("u".into()),
            password: Some(Bytes::from_static(b"\x00\x01")),
            properties: ConnectProperties::default(),
        }
    }

    #[test]
    fn round_trip_every_level() {
        for v in [
            ProtocolVersion::V3_1,
            ProtocolVersion::V3_1_1,
            ProtocolVersion::V5,
        ] {
            let c = connect(v);
            let mut out = BytesMut::new();
            emit(&c, &mut out);
            assert_eq!(decode(out.freeze()).unwrap(), c);
        }
    }

    #[test]
    fn mqisdp_wire() {
        let wire = b"\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x02id";
        let c = decode(Bytes::from_static(wire)).unwrap();
        assert_eq!(c.protocol, ProtocolVersion::V3_1);
        assert_eq!(&*c.client_id, "id");
    }

    #[test]
    fn unsupported() {
        for wire in [
            &b"\x00\x04MQTT\x06\x02\x00\x00\x00\x00"[..],
            b"\x00\x04MQTX\x04\x02\x00\x00\x00\x00",
        ] {
            assert!(matches!(
                decode(Bytes::copy_from_slice(wire)),
                Err(DecodeError::UnsupportedProtocol(_))
            ));
        }
    }

    #[test]
    fn flag_rules() {
        let base = |flags: u8| {
            let mut v = b"\x00\x04MQTT\x04".to_vec();
            v.push(flags);
            v.extend_from_slice(b"\x00\x00\x00\x00");
            decode(Bytes::from(v))
        };
        assert!(
            matches!(base(0x03), Err(DecodeError::Malformed(_))),
            "reserved"
        );
        assert!(
            matches!(base(0x08), Err(DecodeError::Malformed(_))),
            "will qos without will"
        );
        assert!(
            matches!(base(0x20), Err(DecodeError::Malformed(_))),
            "will retain without will"
        );
        assert!(
            matches!(base(0x1c), Err(DecodeError::Malformed(_))),
            "will qos 3"
        );
        assert!(
            matches!(base(0x40), Err(DecodeError::Malformed(_))),
            "password without user"
        );
        assert!(base(0x02).is_ok());
    }
}
