//! MQTT 5 properties end to end: Message Expiry Interval (counted down, expired messages
//! dropped), the application properties carried to subscribers, Topic Alias from the client,
//! and the subscriber's Maximum Packet Size.

use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use bytestring::ByteString;
use sharq::packet::{Packet, ProtocolVersion, PublishProperties, QoS};

fn persistent_v5(id: &str, clean: bool) -> sharq::packet::Connect {
    let mut connect = connect_packet(ProtocolVersion::V5, id);
    connect.clean_start = clean;
    connect.properties.session_expiry_interval = Some(60);
    connect
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_expiry_decremented_while_queued() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = RawClient::connect_with(broker.addr(), persistent_v5("mexp", true)).await;
    sub.subscribe("mexp/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    broker.wait_session_offline("mexp").await;
    let mut publisher = RawClient::v5(broker.addr(), "mexp-pub").await;
    let mut publish = publish_packet("mexp/t", b"x", QoS::AtLeastOnce, None);
    publish.properties.message_expiry_interval = Some(10);
    let published_at = std::time::Instant::now();
    publisher.publish_full(publish).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (mut sub, connack) =
        RawClient::connect_with(broker.addr(), persistent_v5("mexp", false)).await;
    assert!(connack.session_present);
    let got = sub.recv_and_ack().await;
    // Counted down by whole seconds: at least the two that certainly passed, at most as many
    // as have passed by now (more on a slow machine).
    let passed = published_at.elapsed().as_secs() as u32 + 1;
    let remaining = got
        .properties
        .message_expiry_interval
        .expect("Message Expiry Interval must be forwarded");
    assert!(
        remaining <= 8 && remaining >= 10u32.saturating_sub(passed).max(1),
        "published with 10, waited 2.1 s and at most {passed} s: got {remaining}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_queued_message_dropped() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = RawClient::connect_with(broker.addr(), persistent_v5("mexp2", true)).await;
    sub.subscribe("mexp2/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    // Queued, not in flight to a connection the broker has not yet let go of.
    broker.wait_session_offline("mexp2").await;
    let mut publisher = RawClient::v5(broker.addr(), "mexp2-pub").await;
    let mut short = publish_packet("mexp2/t", b"short", QoS::AtLeastOnce, None);
    short.properties.message_expiry_interval = Some(1);
    publisher.publish_full(short).await;
    publisher
        .publish("mexp2/t", b"forever", QoS::AtLeastOnce, false)
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (mut sub, _) = RawClient::connect_with(broker.addr(), persistent_v5("mexp2", false)).await;
    let got = sub.recv_and_ack().await;
    assert_eq!(
        &got.payload[..],
        b"forever",
        "the expired message must be dropped"
    );
    assert_eq!(got.properties.message_expiry_interval, None);
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_properties_carried_to_subscriber() {
    let broker = TestBroker::start().await;
    let mut sub = RawClient::v5(broker.addr(), "props-sub").await;
    sub.subscribe("props/t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), "props-pub").await;
    let user_properties = vec![
        (ByteString::from("b"), ByteString::from("2")),
        (ByteString::from("a"), ByteString::from("1")),
        (ByteString::from("b"), ByteString::from("3")),
    ];
    let mut publish = publish_packet("props/t", "héllo".as_bytes(), QoS::AtLeastOnce, None);
    publish.properties = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some(ByteString::from("application/json")),
        response_topic: Some(ByteString::from("props/reply")),
        correlation_data: Some(Bytes::from_static(&[0, 1, 2, 255])),
        user_properties: user_properties.clone(),
        ..PublishProperties::default()
    };
    publisher.publish_full(publish).await;
    let got = sub.recv_and_ack().await;
    let p = &got.properties;
    assert_eq!(p.payload_format_indicator, Some(1));
    assert_eq!(p.content_type.as_deref(), Some("application/json"));
    assert_eq!(p.response_topic.as_deref(), Some("props/reply"));
    assert_eq!(p.correlation_data.as_deref(), Some(&[0u8, 1, 2, 255][..]));
    assert_eq!(p.user_properties, user_properties, "order must be kept");
    assert_eq!(p.topic_alias, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_from_client() {
    let broker = TestBroker::start().await;
    let mut sub = RawClient::v5(broker.addr(), "alias-sub").await;
    sub.subscribe("alias/#", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), "alias-pub").await;
    let mut set = publish_packet("alias/long/topic", b"first", QoS::AtLeastOnce, None);
    set.properties.topic_alias = Some(1);
    publisher.publish_full(set).await;
    let mut use_alias = publish_packet("", b"second", QoS::AtLeastOnce, None);
    use_alias.properties.topic_alias = Some(1);
    publisher.publish_full(use_alias).await;
    // Re-map alias 1 to another topic.
    let mut remap = publish_packet("alias/other", b"third", QoS::AtLeastOnce, None);
    remap.properties.topic_alias = Some(1);
    publisher.publish_full(remap).await;
    let mut use_again = publish_packet("", b"fourth", QoS::AtMostOnce, None);
    use_again.properties.topic_alias = Some(1);
    publisher.publish_full(use_again).await;

    for (topic, payload) in [
        ("alias/long/topic", &b"first"[..]),
        ("alias/long/topic", b"second"),
        ("alias/other", b"third"),
        ("alias/other", b"fourth"),
    ] {
        let got = sub.recv_and_ack().await;
        assert_eq!(&got.topic[..], topic);
        assert_eq!(&got.payload[..], payload);
        assert_eq!(
            got.properties.topic_alias, None,
            "subscriber set no alias maximum"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_above_maximum_gets_disconnect_0x94() {
    let broker = TestBroker::with(|c| c.limits.topic_alias_maximum = 4).await;
    let mut publisher = RawClient::v5(broker.addr(), "alias-big").await;
    let mut publish = publish_packet("alias/t", b"x", QoS::AtMostOnce, None);
    publish.properties.topic_alias = Some(5);
    publisher.send(&Packet::Publish(publish)).await;
    publisher.expect_disconnect(0x94).await;
    assert_broker_alive(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_alias_is_protocol_error() {
    let broker = TestBroker::start().await;
    let mut publisher = RawClient::v5(broker.addr(), "alias-unknown").await;
    let mut publish = publish_packet("", b"x", QoS::AtMostOnce, None);
    publish.properties.topic_alias = Some(3);
    publisher.send(&Packet::Publish(publish)).await;
    publisher.expect_disconnect(0x82).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_maximum_packet_size_respected() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "small-max");
    connect.properties.maximum_packet_size = Some(128);
    let (mut sub, _) = RawClient::connect_with(broker.addr(), connect).await;
    sub.subscribe("mps/t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), "mps-pub").await;
    publisher
        .publish("mps/t", &[b'x'; 300], QoS::AtLeastOnce, false)
        .await;
    publisher
        .publish("mps/t", b"small", QoS::AtLeastOnce, false)
        .await;
    let got = sub.recv_and_ack().await;
    assert_eq!(
        &got.payload[..],
        b"small",
        "a PUBLISH larger than the client's Maximum Packet Size must not be sent"
    );
    sub.expect_no_publish(QUIET).await;
}

fn with_alias_maximum(id: &str, maximum: Option<u16>) -> sharq::packet::Connect {
    let mut connect = connect_packet(ProtocolVersion::V5, id);
    connect.properties.topic_alias_maximum = maximum;
    connect
}

/// (topic as sent, alias) of the next PUBLISH.
async fn next_aliased(client: &mut RawClient) -> (String, Option<u16>) {
    let publish = client.recv_and_ack().await;
    (publish.topic.to_string(), publish.properties.topic_alias)
}

/// Within the client's Topic Alias Maximum, repeated topics go by alias alone; a full table
/// gives the least recently used topic's alias to the new one; a reconnect starts afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_topic_aliases_within_the_client_maximum() {
    let broker = TestBroker::start().await;
    let (mut sub, _) =
        RawClient::connect_with(broker.addr(), with_alias_maximum("alias-sub", Some(2))).await;
    sub.subscribe("al/#", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), "alias-pub").await;
    for topic in ["al/a", "al/a", "al/b", "al/a", "al/c", "al/c", "al/a"] {
        publisher
            .publish(topic, b"x", QoS::AtLeastOnce, false)
            .await;
    }
    let expected = [
        ("al/a", Some(1)),
        ("", Some(1)),
        ("al/b", Some(2)),
        ("", Some(1)),
        // The table is full: b was used least recently and gives up alias 2.
        ("al/c", Some(2)),
        ("", Some(2)),
        ("", Some(1)),
    ];
    for (topic, alias) in expected {
        assert_eq!(next_aliased(&mut sub).await, (topic.to_owned(), alias));
    }
    sub.disconnect().await;

    let (mut again, _) =
        RawClient::connect_with(broker.addr(), with_alias_maximum("alias-sub", Some(2))).await;
    again.subscribe("al/#", QoS::AtLeastOnce).await;
    publisher
        .publish("al/a", b"x", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(next_aliased(&mut again).await, ("al/a".to_owned(), Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_topic_aliases_without_a_client_maximum() {
    let broker = TestBroker::start().await;
    let (mut sub, _) =
        RawClient::connect_with(broker.addr(), with_alias_maximum("noalias-sub", None)).await;
    sub.subscribe("na/#", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), "noalias-pub").await;
    for _ in 0..3 {
        publisher
            .publish("na/a", b"x", QoS::AtLeastOnce, false)
            .await;
        assert_eq!(next_aliased(&mut sub).await, ("na/a".to_owned(), None));
    }
}
