//! Hand-written wire vectors: the short forms peers really send, and every strictness rule with
//! the reason code the broker answers.

use bytes::{Bytes, BytesMut};
use sharq::codec::{encode, DecodeError, Decoder};
use sharq::packet::*;

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn decode(version: Option<ProtocolVersion>, wire: &[u8]) -> Result<Option<Packet>, DecodeError> {
    let mut d = match version {
        Some(v) => Decoder::with_version(v, 1 << 20),
        None => Decoder::new(1 << 20),
    };
    let mut buf = BytesMut::from(wire);
    let out = d.decode(&mut buf);
    if let Ok(Some(_)) = out {
        assert!(buf.is_empty(), "packet not fully consumed: {wire:02x?}");
    }
    out
}

fn ok(version: ProtocolVersion, wire: &[u8]) -> Packet {
    decode(Some(version), wire).unwrap().unwrap()
}

fn wire(p: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(p, version, &mut buf).unwrap();
    buf.to_vec()
}

/// Asserts `wire` fails with `reason` (an MQTT 5 reason code byte).
#[track_caller]
fn rejects(version: Option<ProtocolVersion>, wire: &[u8], reason: u8) {
    match decode(version, wire) {
        Err(e) => assert_eq!(e.reason_code(), ReasonCode(reason), "{wire:02x?}: {e}"),
        Ok(p) => panic!("{wire:02x?} accepted as {p:?}"),
    }
}

const MALFORMED: u8 = 0x81;
const PROTOCOL: u8 = 0x82;

#[test]
fn short_forms() {
    assert_eq!(
        ok(V5, b"\xe0\x00"),
        Packet::Disconnect(Disconnect::default())
    );
    assert_eq!(
        ok(V5, b"\xe0\x01\x8e"),
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::SESSION_TAKEN_OVER,
            ..Default::default()
        })
    );
    assert_eq!(ok(V5, b"\xf0\x00"), Packet::Auth(Auth::default()));
    assert_eq!(ok(V5, b"\x40\x02\x00\x01"), Packet::PubAck(Ack::new(1)));
    assert_eq!(
        ok(V5, b"\x40\x03\x00\x01\x10"),
        Packet::PubAck(Ack::with_reason(1, ReasonCode(0x10)))
    );
    assert_eq!(
        ok(V5, b"\x40\x04\x00\x01\x10\x00"),
        Packet::PubAck(Ack::with_reason(1, ReasonCode(0x10)))
    );
    assert_eq!(ok(V5, b"\x62\x02\x00\x01"), Packet::PubRel(Ack::new(1)));

    assert_eq!(
        wire(&Packet::Disconnect(Disconnect::default()), V5),
        b"\xe0\x00"
    );
    assert_eq!(wire(&Packet::Auth(Auth::default()), V5), b"\xf0\x00");
    assert_eq!(wire(&Packet::PubAck(Ack::new(1)), V5), b"\x40\x02\x00\x01");
    assert_eq!(
        wire(&Packet::PubRec(Ack::with_reason(1, ReasonCode(0x10))), V5),
        b"\x50\x03\x00\x01\x10"
    );
    assert_eq!(wire(&Packet::PubRel(Ack::new(1)), V5), b"\x62\x02\x00\x01");
    assert_eq!(
        wire(&Packet::PubAck(Ack::with_reason(1, ReasonCode(0x10))), V3),
        b"\x40\x02\x00\x01"
    );
    assert_eq!(
        wire(&Packet::Disconnect(Disconnect::default()), V3),
        b"\xe0\x00"
    );
    assert_eq!(wire(&Packet::PingReq, V3), b"\xc0\x00");
}

#[test]
fn connack_forms() {
    assert_eq!(
        ok(V3, b"\x20\x02\x00\x00"),
        Packet::ConnAck(ConnAck::default())
    );
    assert_eq!(
        ok(V5, b"\x20\x03\x00\x00\x00"),
        Packet::ConnAck(ConnAck::default())
    );
    assert_eq!(
        wire(&Packet::ConnAck(ConnAck::default()), V3),
        b"\x20\x02\x00\x00"
    );
    assert_eq!(
        wire(&Packet::ConnAck(ConnAck::default()), V5),
        b"\x20\x03\x00\x00\x00"
    );
    let refused = |rc: ReasonCode| {
        Packet::ConnAck(ConnAck {
            reason_code: rc,
            ..Default::default()
        })
    };
    for (rc, code) in [
        (0x84, 1),
        (0x85, 2),
        (0x88, 3),
        (0x89, 3),
        (0x86, 4),
        (0x87, 5),
        (0x8a, 5),
        (0x97, 3),
    ] {
        assert_eq!(
            wire(&refused(ReasonCode(rc)), V3),
            [0x20, 0x02, 0x00, code],
            "0x{rc:02x}"
        );
    }
    assert_eq!(
        ok(V3, b"\x20\x02\x00\x01"),
        refused(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION)
    );
    assert_eq!(
        ok(V3, b"\x20\x02\x00\x05"),
        refused(ReasonCode::NOT_AUTHORIZED)
    );
    rejects(Some(V3), b"\x20\x02\x00\x06", MALFORMED);
    rejects(Some(V3), b"\x20\x02\x02\x00", MALFORMED);
}

#[test]
fn suback_and_unsuback_v3() {
    let s = SubAck {
        packet_id: 7,
        reason_codes: vec![ReasonCode(0), ReasonCode(2), ReasonCode::NOT_AUTHORIZED],
        properties: Default::default(),
    };
    assert_eq!(
        wire(&Packet::SubAck(s), V3),
        b"\x90\x05\x00\x07\x00\x02\x80"
    );
    rejects(Some(V3), b"\x90\x03\x00\x07\x87", MALFORMED); // reserved in 3.1.1
    rejects(Some(V3), b"\x90\x03\x00\x07\x03", MALFORMED);
    let Packet::SubAck(s) = ok(V5, b"\x90\x04\x00\x07\x00\x87") else {
        panic!()
    };
    assert_eq!(s.reason_codes, vec![ReasonCode::NOT_AUTHORIZED]);
    let u = UnsubAck {
        packet_id: 7,
        reason_codes: vec![ReasonCode(0)],
        properties: Default::default(),
    };
    assert_eq!(wire(&Packet::UnsubAck(u.clone()), V3), b"\xb0\x02\x00\x07");
    assert_eq!(wire(&Packet::UnsubAck(u), V5), b"\xb0\x04\x00\x07\x00\x00");
}

#[test]
fn mqtt_3_1_connect() {
    let wire = b"\x10\x16\x00\x06MQIsdp\x03\xc2\x00\x3c\x00\x02id\x00\x01u\x00\x01p";
    let mut d = Decoder::new(1024);
    let mut buf = BytesMut::from(&wire[..]);
    let Some(Packet::Connect(c)) = d.decode(&mut buf).unwrap() else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.protocol, ProtocolVersion::V3_1);
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 60);
    assert_eq!(c.username.as_deref(), Some("u"));
    assert_eq!(c.password, Some(Bytes::from_static(b"p")));
    assert_eq!(d.version(), Some(ProtocolVersion::V3_1));
    // Later packets follow 3.1.1: no properties, AUTH reserved.
    buf.extend_from_slice(b"\x40\x02\x00\x01");
    assert_eq!(
        d.decode(&mut buf).unwrap(),
        Some(Packet::PubAck(Ack::new(1)))
    );
    buf.extend_from_slice(b"\xf0\x00");
    assert!(matches!(d.decode(&mut buf), Err(DecodeError::Malformed(_))));
    let mut out = BytesMut::new();
    encode(&Packet::Connect(c), V3, &mut out).unwrap();
    assert_eq!(&out[..], &wire[..]);
}

/// A minimal CONNECT body after the protocol name and level.
fn connect(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = vec![0, name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, flags, 0, 60]);
    body.extend_from_slice(rest);
    let mut out = vec![0x10, body.len() as u8];
    out.extend_from_slice(&body);
    out
}

#[test]
fn connect_rules() {
    // Before CONNECT, nothing else is read.
    assert_eq!(
        decode(None, b"\x30\x03\x00\x01a"),
        Err(DecodeError::NotConnect)
    );
    assert_eq!(decode(None, b"\xc0\x00"), Err(DecodeError::NotConnect));
    assert!(decode(None, &connect(b"MQTT", 4, 0x02, b"\x00\x00"))
        .unwrap()
        .is_some());
    // Unsupported protocol: 0x84 (3.1.1 return code 1).
    rejects(None, &connect(b"MQTT", 3, 0x02, b"\x00\x00"), 0x84);
    rejects(None, &connect(b"MQTT", 6, 0x02, b"\x00\x00"), 0x84);
    rejects(None, &connect(b"MQIsdp", 4, 0x02, b"\x00\x00"), 0x84);
    rejects(None, &connect(b"HTTP", 4, 0x02, b"\x00\x00"), 0x84);
    // Reserved flag.
    rejects(None, &connect(b"MQTT", 4, 0x03, b"\x00\x00"), MALFORMED);
    rejects(None, &connect(b"MQTT", 5, 0x03, b"\x00\x00\x00"), MALFORMED);
    // Will QoS / retain without the Will flag, and Will QoS 3.
    rejects(None, &connect(b"MQTT", 4, 0x0a, b"\x00\x00"), MALFORMED);
    rejects(None, &connect(b"MQTT", 4, 0x22, b"\x00\x00"), MALFORMED);
    rejects(
        None,
        &connect(b"MQTT", 4, 0x1e, b"\x00\x00\x00\x01t\x00\x00"),
        MALFORMED,
    );
    // 3.1.1 password without user name; allowed in v5.
    rejects(
        None,
        &connect(b"MQTT", 4, 0x42, b"\x00\x00\x00\x01p"),
        MALFORMED,
    );
    assert!(decode(None, &connect(b"MQTT", 5, 0x42, b"\x00\x00\x00\x00\x01p")).is_ok());
    // Will topic with a wildcard.
    rejects(
        None,
        &connect(b"MQTT", 4, 0x06, b"\x00\x00\x00\x01#\x00\x00"),
        0x90,
    );
    // Client identifier with U+0000, invalid UTF-8.
    rejects(None, &connect(b"MQTT", 4, 0x02, b"\x00\x01\x00"), MALFORMED);
    rejects(None, &connect(b"MQTT", 4, 0x02, b"\x00\x01\xff"), MALFORMED);
    // Trailing bytes and truncation.
    rejects(None, &connect(b"MQTT", 4, 0x02, b"\x00\x00\x00"), MALFORMED);
    rejects(None, &connect(b"MQTT", 4, 0x02, b"\x00\x02a"), MALFORMED);
    // v5 property rules inside CONNECT.
    rejects(
        None,
        &connect(b"MQTT", 5, 0x02, b"\x03\x21\x00\x00\x00\x00"),
        PROTOCOL,
    ); // Receive Maximum 0
    rejects(
        None,
        &connect(b"MQTT", 5, 0x02, b"\x05\x27\x00\x00\x00\x00\x00\x00"),
        PROTOCOL,
    ); // Max Packet Size 0
    rejects(
        None,
        &connect(b"MQTT", 5, 0x02, b"\x02\x17\x02\x00\x00"),
        PROTOCOL,
    ); // boolean 2
    rejects(
        None,
        &connect(b"MQTT", 5, 0x02, b"\x04\x17\x01\x17\x01\x00\x00"),
        PROTOCOL,
    ); // duplicate
    rejects(
        None,
        &connect(b"MQTT", 5, 0x02, b"\x02\x01\x01\x00\x00"),
        MALFORMED,
    ); // PFI not in CONNECT
    rejects(
        None,
        &connect(b"MQTT", 5, 0x02, b"\x02\x7f\x01\x00\x00"),
        MALFORMED,
    ); // unknown id
}

#[test]
fn fixed_header_rules() {
    for (v, w) in [
        (V5, &b"\x60\x02\x00\x01"[..]), // PUBREL must be 0b0010
        (V5, b"\x82\x00"),
        (V5, b"\x80\x05\x00\x01\x00\x01a"), // SUBSCRIBE flags 0
        (V5, b"\xa0\x04\x00\x01\x00\x00"),  // UNSUBSCRIBE flags 0
        (V5, b"\x41\x02\x00\x01"),
        (V5, b"\xc1\x00"),
        (V5, b"\xe2\x00"),
        (V5, b"\xf1\x00"),
        (V3, b"\x22\x02\x00\x00"),
        (V5, b"\x00\x00"),                 // type 0
        (V3, b"\xf0\x00"),                 // AUTH in 3.1.1
        (V5, b"\x36\x03\x00\x01a"),        // QoS 3
        (V5, b"\x38\x04\x00\x01a\x00"),    // DUP on QoS 0
        (V5, b"\xc0\xff\xff\xff\xff\x01"), // remaining length in 5 bytes
        (V5, b"\xc0\x80\x00"),             // non-minimal remaining length
        (V5, b"\xc0\x01\x00"),             // PINGREQ with a body
        (V3, b"\xe0\x01\x00"),             // 3.1.1 DISCONNECT with a body
    ] {
        rejects(Some(v), w, MALFORMED);
    }
}

#[test]
fn packet_too_large_before_body() {
    let mut d = Decoder::with_version(V5, 64);
    // Only the fixed header has arrived: 2 + 100 bytes claimed.
    let mut buf = BytesMut::from(&b"\x30\x64"[..]);
    let e = d.decode(&mut buf).unwrap_err();
    assert_eq!(e, DecodeError::PacketTooLarge { size: 102, max: 64 });
    assert_eq!(e.reason_code(), ReasonCode::PACKET_TOO_LARGE);
    // Exactly at the limit is fine.
    let mut d = Decoder::with_version(V5, 4);
    assert_eq!(
        d.decode(&mut BytesMut::from(&b"\x40\x02\x00\x01"[..]))
            .unwrap(),
        Some(Packet::PubAck(Ack::new(1)))
    );
}

#[test]
fn publish_rules() {
    rejects(Some(V5), b"\x30\x06\x00\x03a/+\x00", 0x90);
    rejects(Some(V3), b"\x30\x03\x00\x01#", 0x90);
    rejects(Some(V3), b"\x30\x02\x00\x00", 0x90); // empty topic in 3.1.1
    rejects(Some(V5), b"\x30\x03\x00\x00\x00", PROTOCOL); // empty topic, no alias
    rejects(Some(V5), b"\x30\x07\x00\x01a\x03\x23\x00\x00", 0x94); // Topic Alias 0
    rejects(Some(V5), b"\x32\x06\x00\x01a\x00\x00\x00", PROTOCOL); // packet id 0
    rejects(Some(V5), b"\x30\x06\x00\x01a\x02\x0b\x00", PROTOCOL); // Subscription Identifier 0
    rejects(Some(V5), b"\x30\x06\x00\x01a\x02\x01\x02", PROTOCOL); // PFI 2
    rejects(Some(V5), b"\x30\x07\x00\x01a\x03\x21\x00\x01", MALFORMED); // Receive Maximum in PUBLISH
    rejects(
        Some(V5),
        b"\x30\x08\x00\x01a\x04\x02\x00\x00\x00",
        MALFORMED,
    ); // truncated property
    rejects(Some(V5), b"\x30\x05\x00\x01a\x05\x00", MALFORMED); // property length past end
    rejects(
        Some(V5),
        b"\x30\x0a\x00\x01a\x06\x0b\xff\xff\xff\xff\x01",
        MALFORMED,
    ); // 5-byte sub id
    rejects(Some(V5), b"\x30\x05\x00\x02\xc3\x28\x00", MALFORMED); // invalid UTF-8
    rejects(Some(V5), b"\x30\x04\x00\x01\x00\x00", MALFORMED); // U+0000
    rejects(Some(V5), b"\x30\x07\x00\x01a\x04\x08\x00\x00", MALFORMED); // length > remaining
                                                                        // Subscription Identifier may repeat in PUBLISH; the largest value is accepted.
    let Packet::Publish(p) = ok(V5, b"\x30\x0c\x00\x01a\x07\x0b\xff\xff\xff\x7f\x0b\x01x") else {
        panic!()
    };
    assert_eq!(p.properties.subscription_identifiers, vec![268_435_455, 1]);
    assert_eq!(&p.payload[..], b"x");
    // Alias-only topic.
    let Packet::Publish(p) = ok(V5, b"\x30\x06\x00\x00\x03\x23\x00\x02") else {
        panic!()
    };
    assert_eq!(p.properties.topic_alias, Some(2));
    assert!(p.topic.is_empty());
}

#[test]
fn subscribe_rules() {
    rejects(Some(V5), b"\x82\x03\x00\x01\x00", PROTOCOL); // no filters
    rejects(Some(V3), b"\x82\x02\x00\x01", PROTOCOL);
    rejects(Some(V5), b"\x82\x07\x00\x00\x00\x00\x01a\x00", PROTOCOL); // packet id 0
    rejects(Some(V5), b"\x82\x07\x00\x01\x00\x00\x01a\x40", MALFORMED); // reserved bits
    rejects(Some(V3), b"\x82\x06\x00\x01\x00\x01a\x04", MALFORMED); // v5 bits in 3.1.1
    rejects(Some(V5), b"\x82\x07\x00\x01\x00\x00\x01a\x30", PROTOCOL); // Retain Handling 3
    rejects(Some(V5), b"\x82\x07\x00\x01\x00\x00\x01a\x03", PROTOCOL); // QoS 3 (v5)
    rejects(Some(V3), b"\x82\x06\x00\x01\x00\x01a\x03", MALFORMED); // QoS 3 (3.1.1)
    rejects(Some(V5), b"\x82\x06\x00\x01\x00\x00\x01a", MALFORMED); // options byte missing
    rejects(
        Some(V5),
        b"\x82\x0b\x00\x01\x04\x0b\x01\x0b\x02\x00\x01a\x00",
        PROTOCOL,
    ); // sub id twice
    rejects(
        Some(V5),
        b"\x82\x09\x00\x01\x02\x0b\x00\x00\x01a\x00",
        PROTOCOL,
    ); // sub id 0
    rejects(Some(V5), b"\xa2\x03\x00\x01\x00", PROTOCOL); // empty UNSUBSCRIBE
    rejects(Some(V3), b"\xa2\x02\x00\x01", PROTOCOL);
    rejects(Some(V5), b"\xa2\x05\x00\x01\x00\x00\x01", MALFORMED); // truncated filter
    let Packet::Subscribe(s) = ok(V5, b"\x82\x09\x00\x01\x02\x0b\x05\x00\x01a\x2e") else {
        panic!()
    };
    assert_eq!(s.properties.subscription_identifier, Some(5));
    assert_eq!(
        s.filters[0].options.retain_handling,
        RetainHandling::DoNotSend
    );
}

#[test]
fn ack_rules() {
    rejects(Some(V5), b"\x40\x02\x00\x00", PROTOCOL); // packet id 0
    rejects(Some(V5), b"\x40\x01\x00", MALFORMED);
    rejects(Some(V3), b"\x40\x03\x00\x01\x00", MALFORMED); // trailing bytes in 3.1.1
    rejects(Some(V5), b"\x40\x05\x00\x01\x00\x00\x00", MALFORMED); // trailing after properties
    rejects(Some(V5), b"\x40\x07\x00\x01\x00\x03\x23\x00\x01", MALFORMED); // Topic Alias in PUBACK
    rejects(Some(V5), b"\xe0\x03\x00\x01\x00", MALFORMED); // DISCONNECT: property length past end
    rejects(Some(V5), b"\xe0\x06\x00\x05\x11\x00\x00\x00", MALFORMED); // truncated
    rejects(Some(V5), b"\x90\x03\x00\x01\x00", PROTOCOL); // SUBACK without codes
    rejects(Some(V5), b"\xb0\x03\x00\x01\x00", PROTOCOL); // UNSUBACK without codes
                                                          // Reason codes not defined for the packet are kept as sent (see ack.rs).
    let Packet::PubAck(a) = ok(V5, b"\x40\x03\x00\x01\x04") else {
        panic!()
    };
    assert_eq!(a.reason_code, ReasonCode(0x04));
}

#[test]
fn partial_input_and_trailing_bytes() {
    let mut d = Decoder::with_version(V5, 1024);
    let whole = b"\x30\x06\x00\x01a\x00hi\x40\x02\x00\x01";
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for &b in whole.iter() {
        buf.extend_from_slice(&[b]);
        while let Some(p) = d.decode(&mut buf).unwrap() {
            got.push(p);
        }
    }
    assert_eq!(got.len(), 2);
    assert!(buf.is_empty());
}
