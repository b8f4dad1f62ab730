//! Malformed packets and protocol errors, sent as raw bytes. A v5 client is told why with
//! DISCONNECT (0x81 Malformed Packet, 0x82 Protocol Error, ...) before the close; a 3.1.1 client
//! is simply closed. After each, the broker keeps serving new clients.

mod common;

use common::*;
use sharq::packet::{Packet, ProtocolVersion, ReasonCode};
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
