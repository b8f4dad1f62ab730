//! Malformed packets and protocol errors, sent as raw bytes. A v5 client is told why with
//! DISCONNECT (0x81 Malformed Packet, 0x82 Protocol Error, ...) before the close; a 3.1.1 client
//! is simply closed. After each, the broker keeps serving new clients.

use crate::common::*;
use sharq::packet::{Packet, ProtocolVersion, QoS, ReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V5, ProtocolVersion::V3_1_1];

/// A PUBLISH QoS 0 with a raw topic (v5 adds an empty property block) and payload "x".
fn raw_publish(version: ProtocolVersion, topic: &[u8]) -> Vec<u8> {
    let mut body = vec![0, topic.len() as u8];
    body.extend_from_slice(topic);
    if version.is_v5() {
        body.push(0);
    }
    body.push(b'x');
    let mut packet = vec![0x30, body.len() as u8];
    packet.extend(body);
    packet
}

/// A SUBSCRIBE with the given first byte, packet id 1 and one filter `a/b` at QoS 0.
fn raw_subscribe(version: ProtocolVersion, first_byte: u8) -> Vec<u8> {
    let mut body = vec![0, 1];
    if version.is_v5() {
        body.push(0);
    }
    body.extend_from_slice(&[0, 3, b'a', b'/', b'b', 0]);
    let mut packet = vec![first_byte, body.len() as u8];
    packet.extend(body);
    packet
}

/// Connects a client of each version, sends `bytes(version)`, expects the error close with
/// `v5_code` (for v5), then checks the broker still serves.
async fn check_error(v5_code: u8, bytes: impl Fn(ProtocolVersion) -> Vec<u8>) {
    let broker = TestBroker::start().await;
    for version in VERSIONS {
        let mut client = RawClient::connect(broker.addr(), version, &client_id("neg")).await;
        client.send_bytes(&bytes(version)).await;
        client.expect_error_close(v5_code).await;
        assert_broker_alive(broker.addr()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remaining_length_of_five_bytes_is_malformed() {
    check_error(0x81, |_| vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_with_wrong_reserved_flags_is_malformed() {
    check_error(0x81, |v| raw_subscribe(v, 0x80)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_topic_is_malformed() {
    check_error(0x81, |v| raw_publish(v, &[0xC3, 0x28])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_character_in_topic_is_malformed() {
    check_error(0x81, |v| raw_publish(v, b"a\0b")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connect_is_protocol_error() {
    check_error(0x82, |v| {
        encode(&Packet::Connect(Box::new(connect_packet(v, "again"))), v)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_subscribe_is_an_error() {
    let broker = TestBroker::start().await;
    // v5: 0x82 Protocol Error [MQTT-3.8.3-2] (0x81 also accepted).
    let mut client = RawClient::v5(broker.addr(), "empty-sub").await;
    client.send_bytes(&[0x82, 0x03, 0x00, 0x01, 0x00]).await;
    let got = client.expect_closed().await;
    let code = got.iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason_code),
        _ => None,
    });
    assert!(
        code == Some(ReasonCode(0x82)) || code == Some(ReasonCode(0x81)),
        "expected DISCONNECT 0x82 or 0x81, got {got:?}"
    );
    let mut client = RawClient::v311(broker.addr(), "empty-sub311").await;
    client.send_bytes(&[0x82, 0x02, 0x00, 0x01]).await;
    client.expect_error_close(0x82).await;
    assert_broker_alive(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_in_publish_topic_is_refused() {
    let broker = TestBroker::start().await;
    for version in VERSIONS {
        for topic in [&b"a/+"[..], b"a/#"] {
            let mut client = RawClient::connect(broker.addr(), version, &client_id("wild")).await;
            client.send_bytes(&raw_publish(version, topic)).await;
            let got = client.expect_closed().await;
            for packet in &got {
                match packet {
                    Packet::Disconnect(d) if version.is_v5() => assert_eq!(
                        d.reason_code,
                        ReasonCode(0x90),
                        "wildcard topic: expected DISCONNECT 0x90 (or a plain close)"
                    ),
                    other => panic!("unexpected {other:?} for {version:?}"),
                }
            }
        }
    }
    assert_broker_alive(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_packet_not_connect_closed_without_connack() {
    let broker = TestBroker::start().await;
    for first in [
        vec![0xC0, 0x00],                             // PINGREQ
        raw_publish(ProtocolVersion::V3_1_1, b"a/b"), // PUBLISH
        vec![0xE0, 0x00],                             // DISCONNECT
    ] {
        let mut stream = tokio::net::TcpStream::connect(broker.addr()).await.unwrap();
        stream.write_all(&first).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "not closed after {first:02x?}");
        assert!(
            got.is_empty(),
            "nothing may be sent before CONNECT: {got:02x?}"
        );
    }
    assert_broker_alive(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_level_gets_connack_0x01_in_311_format() {
    let broker = TestBroker::start().await;
    let connect = [
        0x10, 13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3C, 0x00, 0x01, b'x',
    ];
    let mut stream = tokio::net::TcpStream::connect(broker.addr()).await.unwrap();
    stream.write_all(&connect).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "not closed; got {got:02x?}");
    assert_eq!(
        got,
        vec![0x20, 0x02, 0x00, 0x01],
        "expected CONNACK return code 0x01 (unacceptable protocol version) then close"
    );
    assert_broker_alive(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_authentication_method_refused_0x8c() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "enhanced-auth");
    connect.properties.authentication_method = Some("SCRAM-SHA-1".into());
    let (mut client, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert_eq!(connack.reason_code, ReasonCode(0x8C));
    client.expect_closed().await;
    assert_broker_alive(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_packet_from_client_is_protocol_error() {
    // CONNACK sent by a client.
    check_error(0x82, |v| {
        if v.is_v5() {
            vec![0x20, 0x03, 0x00, 0x00, 0x00]
        } else {
            vec![0x20, 0x02, 0x00, 0x00]
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_publish_with_subscription_identifier_is_protocol_error() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::v5(broker.addr(), "pub-subid").await;
    // PUBLISH QoS 0, topic "a", properties: Subscription Identifier 1, payload "x".
    client
        .send_bytes(&[0x30, 0x07, 0x00, 0x01, b'a', 0x02, 0x0B, 0x01, b'x'])
        .await;
    client.expect_disconnect(0x82).await;
    assert_broker_alive(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos3_publish_is_malformed() {
    check_error(0x81, |v| {
        let mut bytes = raw_publish(v, b"a/b");
        bytes[0] = 0x36;
        bytes
    })
    .await;
}

/// A v5 CONNECT with `flags`, keep-alive 60, the property block `properties`, client id
/// `client_id` (raw bytes) and `rest` (will fields, username, password) after it.
fn raw_v5_connect(flags: u8, properties: &[u8], client_id: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, flags, 0x00, 0x3C];
    body.push(properties.len() as u8);
    body.extend_from_slice(properties);
    body.extend_from_slice(&[0x00, client_id.len() as u8]);
    body.extend_from_slice(client_id);
    body.extend_from_slice(rest);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// Each malformed or protocol-breaking v5 CONNECT gets a CONNACK with the reason code saying
/// which (0x81 Malformed Packet, 0x82 Protocol Error), then the close, from the real binary.
/// These were read, refused and closed without a word: the refusal looked for the protocol
/// level in a frame the decoder had already consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_v5_connects_get_a_connack_with_the_reason() {
    let broker = SpawnedBroker::start();
    let session_expiry_twice = [0x11, 0, 0, 0, 10, 0x11, 0, 0, 0, 10];
    let will_fields = [0x00, 0x00, 0x01, b't', 0x00, 0x00];
    let cases: [(&str, Vec<u8>, u8); 5] = [
        (
            "Session Expiry Interval twice",
            raw_v5_connect(0x02, &session_expiry_twice, b"c1", &[]),
            0x82,
        ),
        (
            "client id not UTF-8",
            raw_v5_connect(0x02, &[], &[0xC3, 0x28], &[]),
            0x81,
        ),
        (
            "reserved connect flag set",
            raw_v5_connect(0x03, &[], b"c1", &[]),
            0x81,
        ),
        (
            "Will QoS 3",
            raw_v5_connect(0x02 | 0x04 | 0x18, &[], b"c1", &will_fields),
            0x81,
        ),
        (
            "Receive Maximum 0",
            raw_v5_connect(0x02, &[0x21, 0x00, 0x00], b"c1", &[]),
            0x82,
        ),
    ];
    for (what, connect, code) in cases {
        let mut stream = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
        stream.write_all(&connect).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "{what}: not closed; got {got:02x?}");
        assert_eq!(
            got,
            vec![0x20, 0x03, 0x00, code, 0x00],
            "{what}: expected a v5 CONNACK with reason code {code:#04x}, then the close"
        );
    }
    assert_broker_alive(broker.addr).await;
}

/// The CI counterpart of the `connect` fuzz target (fuzz/README.md): valid CONNECTs of both
/// versions (with will, username, password and properties), each with a few bytes flipped,
/// cut or appended, sent as a client's first bytes through the whole connection layer. Every
/// connection ends by itself, nothing but a CONNACK comes first, and the broker keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_first_bytes_get_a_connack_or_nothing() {
    let broker = TestBroker::with(|c| {
        c.limits.connect_timeout_secs = 1;
        c.auth.users.insert("fuzz".into(), "fuzz".into());
    })
    .await;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..300 {
        let version = if round % 2 == 0 { V5 } else { V3_1_1 };
        let mut connect = connect_packet(version, &format!("fz{round}"));
        connect.username = Some("fuzz".into());
        connect.password = Some(bytes::Bytes::from_static(b"fuzz"));
        connect.will = Some(sharq::packet::LastWill {
            topic: "will/t".into(),
            payload: bytes::Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
        });
        if version == V5 {
            connect.properties.session_expiry_interval = Some(5);
            connect.properties.receive_maximum = Some(10);
        }
        let mut bytes = encode(&Packet::Connect(Box::new(connect)), version);
        for _ in 0..=(next() % 3) {
            let at = (next() as usize) % bytes.len();
            match next() % 4 {
                0 => bytes[at] ^= 1 << (next() % 8),
                1 => bytes[at] = next() as u8,
                2 => bytes.truncate(at.max(1)),
                _ => bytes.push(next() as u8),
            }
        }
        let mut stream = tokio::net::TcpStream::connect(broker.addr()).await.unwrap();
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "round {round}: not closed after {bytes:02x?}");
        if let Some(&first) = answer.first() {
            assert_eq!(
                first, 0x20,
                "round {round}: {bytes:02x?} answered {answer:02x?}"
            );
        }
    }
    assert_broker_alive(broker.addr()).await;
}
