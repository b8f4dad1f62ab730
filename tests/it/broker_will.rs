//! Will messages: suppressed by a normal DISCONNECT, sent on DISCONNECT 0x04 and on a dropped
//! socket, delayed by Will Delay Interval (and cancelled by a timely reconnect), with its
//! properties carried to subscribers.

use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use bytestring::ByteString;
use sharq::packet::{
    Connect, DisconnectProperties, LastWill, ProtocolVersion, QoS, WillProperties,
};

fn with_will(version: ProtocolVersion, id: &str, topic: &str, delay: Option<u32>) -> Connect {
    let mut connect = connect_packet(version, id);
    connect.will = Some(LastWill {
        topic: ByteString::from(topic),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: delay,
            ..WillProperties::default()
        },
    });
    if delay.is_some() {
        connect.properties.session_expiry_interval = Some(60);
    }
    connect
}

async fn watcher(broker: &TestBroker, topic: &str) -> RawClient {
    let mut w = RawClient::v5(broker.addr(), &client_id("watcher")).await;
    w.subscribe(topic, QoS::AtLeastOnce).await;
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_not_sent_on_normal_disconnect() {
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, "will/normal").await;
    for version in [ProtocolVersion::V5, ProtocolVersion::V3_1_1] {
        let (client, _) = RawClient::connect_with(
            broker.addr(),
            with_will(version, &client_id("w"), "will/normal", None),
        )
        .await;
        client.disconnect().await;
    }
    w.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_sent_on_disconnect_with_will_message_0x04() {
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, "will/04").await;
    let (mut client, _) = RawClient::connect_with(
        broker.addr(),
        with_will(ProtocolVersion::V5, "w04", "will/04", None),
    )
    .await;
    client
        .disconnect_with(0x04, DisconnectProperties::default())
        .await;
    let got = w.recv_and_ack().await;
    assert_eq!(&got.topic[..], "will/04");
    assert_eq!(&got.payload[..], b"gone");
    assert_eq!(got.qos, QoS::AtLeastOnce);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_sent_on_socket_drop() {
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, "will/drop/+").await;
    for (version, topic) in [
        (ProtocolVersion::V5, "will/drop/v5"),
        (ProtocolVersion::V3_1_1, "will/drop/v311"),
    ] {
        let (client, _) = RawClient::connect_with(
            broker.addr(),
            with_will(version, &client_id("wd"), topic, None),
        )
        .await;
        drop(client);
        let got = w.recv_and_ack().await;
        assert_eq!(&got.topic[..], topic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_retained_when_will_retain_set() {
    let broker = TestBroker::start().await;
    // The broker retains a will before routing it: once a watcher has it, it is retained.
    let mut w = watcher(&broker, "will/retained").await;
    let mut connect = with_will(ProtocolVersion::V3_1_1, "wret", "will/retained", None);
    connect.will.as_mut().unwrap().retain = true;
    let (client, _) = RawClient::connect_with(broker.addr(), connect).await;
    drop(client);
    let live = w.recv_and_ack().await;
    assert_eq!(&live.payload[..], b"gone");
    let mut late = RawClient::v5(broker.addr(), "wret-late").await;
    late.subscribe("will/retained", QoS::AtLeastOnce).await;
    let got = late.recv_and_ack().await;
    assert!(got.retain);
    assert_eq!(&got.payload[..], b"gone");
}

/// A reconnect within the Will Delay Interval cancels the will. The reconnect must be handled
/// before the delay has run out, which the test checks rather than assumes: when a stalled
/// machine makes it late, the will may rightly go out, and the attempt is repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_delay_cancelled_by_reconnect() {
    const DELAY: Duration = Duration::from_secs(2);
    let broker = TestBroker::start().await;
    for attempt in 0..5 {
        let id = format!("wdc-{attempt}");
        let topic = format!("will/delay-cancel/{attempt}");
        let mut w = watcher(&broker, &topic).await;
        let connect = with_will(ProtocolVersion::V5, &id, &topic, Some(2));
        let (client, _) = RawClient::connect_with(broker.addr(), connect.clone()).await;
        // The broker starts the delay when it handles the drop: after this instant.
        let dropped_at = Instant::now();
        drop(client);
        // The drop is handled (the will is pending); reconnect at once.
        broker.wait_session_offline(&id).await;
        let mut again = connect;
        again.clean_start = false;
        again.will = None;
        let (mut client, connack) = RawClient::connect_with(broker.addr(), again).await;
        assert!(connack.session_present);
        let reconnected_after = dropped_at.elapsed();
        if reconnected_after >= DELAY {
            continue;
        }
        // Watch past the moment the will would have gone out.
        w.expect_no_publish(DELAY - reconnected_after + Duration::from_secs(1))
            .await;
        client.ping().await;
        return;
    }
    panic!("could not reconnect within the 2 s will delay in five attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_delay_respected_without_reconnect() {
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, "will/delayed").await;
    let (client, _) = RawClient::connect_with(
        broker.addr(),
        with_will(ProtocolVersion::V5, "wdl", "will/delayed", Some(2)),
    )
    .await;
    // The broker starts the delay when it handles the drop: after this instant. How late the
    // will arrives depends on the machine's load; the wait for it is bounded by `TIMEOUT`.
    let dropped_at = Instant::now();
    drop(client);
    w.expect_no_publish(Duration::from_millis(1500)).await;
    let got = w.recv_and_ack().await;
    let elapsed = dropped_at.elapsed();
    assert_eq!(&got.topic[..], "will/delayed");
    assert!(
        elapsed >= Duration::from_secs(2),
        "will delay 2 s: arrived after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_properties_carried() {
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, "will/props").await;
    let mut connect = with_will(ProtocolVersion::V5, "wprops", "will/props", None);
    let will = connect.will.as_mut().unwrap();
    will.properties = WillProperties {
        will_delay_interval: None,
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(100),
        content_type: Some(ByteString::from("text/plain")),
        response_topic: Some(ByteString::from("will/reply")),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
        user_properties: vec![
            (ByteString::from("k"), ByteString::from("v1")),
            (ByteString::from("k"), ByteString::from("v2")),
        ],
    };
    let (client, _) = RawClient::connect_with(broker.addr(), connect).await;
    let dropped_at = Instant::now();
    drop(client);
    let got = w.recv_and_ack().await;
    // Counted down by whole seconds: at most as many as have passed since the drop.
    let passed = dropped_at.elapsed().as_secs() as u32 + 1;
    let p = &got.properties;
    assert_eq!(p.payload_format_indicator, Some(1));
    assert!(
        p.message_expiry_interval
            .is_some_and(|left| left <= 100 && left >= 100 - passed),
        "{p:?} after {passed} s at most"
    );
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.response_topic.as_deref(), Some("will/reply"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"\x00\x01corr"[..]));
    assert_eq!(
        p.user_properties,
        vec![
            (ByteString::from("k"), ByteString::from("v1")),
            (ByteString::from("k"), ByteString::from("v2")),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_sent_on_protocol_error() {
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, "will/violation").await;
    let (mut client, _) = RawClient::connect_with(
        broker.addr(),
        with_will(ProtocolVersion::V5, "wviol", "will/violation", None),
    )
    .await;
    // A second CONNECT is a protocol error: the connection ends abnormally.
    client
        .send(&sharq::packet::Packet::Connect(Box::new(connect_packet(
            ProtocolVersion::V5,
            "wviol",
        ))))
        .await;
    client.expect_disconnect(0x82).await;
    let got = w.recv_and_ack().await;
    assert_eq!(&got.topic[..], "will/violation");
}
