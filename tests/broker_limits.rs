//! Broker limits and housekeeping: the offline queue bound, the packet size limit, and `$SYS`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use sharq::packet::{Packet, ProtocolVersion, QoS};

fn persistent_v5(id: &str, clean: bool) -> sharq::packet::Connect {
    let mut connect = connect_packet(ProtocolVersion::V5, id);
    connect.clean_start = clean;
    connect.properties.session_expiry_interval = Some(60);
    connect
}

/// Documented overflow policy: when the session queue is full, the oldest queued QoS 0 message
/// is dropped to make room; with no QoS 0 message queued, the newest message is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queue_bound_refuses_newest_qos1() {
    let broker = TestBroker::with(|c| c.limits.max_queued_messages = 5).await;
    let (mut sub, _) = RawClient::connect_with(broker.addr(), persistent_v5("bound1", true)).await;
    sub.subscribe("bound/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    // Messages published while the broker still has the connection would be in flight to it,
    // not queued.
    broker.wait_session_offline("bound1").await;
    let mut publisher = RawClient::v5(broker.addr(), "bound1-pub").await;
    for i in 0..8 {
        publisher
            .publish(
                "bound/t",
                format!("m{i}").as_bytes(),
                QoS::AtLeastOnce,
                false,
            )
            .await;
    }
    let (mut sub, _) = RawClient::connect_with(broker.addr(), persistent_v5("bound1", false)).await;
    for i in 0..5 {
        let got = sub.recv_and_ack().await;
        assert_eq!(
            got.payload,
            format!("m{i}").into_bytes(),
            "oldest five are kept"
        );
    }
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queue_bound_drops_oldest_qos0_first() {
    let broker = TestBroker::with(|c| c.limits.max_queued_messages = 5).await;
    let (mut sub, _) = RawClient::connect_with(broker.addr(), persistent_v5("bound0", true)).await;
    sub.subscribe("bound0/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    broker.wait_session_offline("bound0").await;
    let mut publisher = RawClient::v5(broker.addr(), "bound0-pub").await;
    for (payload, qos) in [
        ("a0", QoS::AtMostOnce),
        ("a1", QoS::AtMostOnce),
        ("b0", QoS::AtLeastOnce),
        ("b1", QoS::AtLeastOnce),
        ("b2", QoS::AtLeastOnce),
        ("b3", QoS::AtLeastOnce),
    ] {
        publisher
            .publish("bound0/t", payload.as_bytes(), qos, false)
            .await;
    }
    let (mut sub, _) = RawClient::connect_with(broker.addr(), persistent_v5("bound0", false)).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(String::from_utf8(sub.recv_and_ack().await.payload.to_vec()).unwrap());
    }
    assert_eq!(got, vec!["a1", "b0", "b1", "b2", "b3"]);
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_messages_delivered_after_reconnect_v311() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V3_1_1, "offline311");
    connect.clean_start = false;
    let (mut sub, _) = RawClient::connect_with(broker.addr(), connect.clone()).await;
    sub.subscribe("off/t", QoS::ExactlyOnce).await;
    sub.disconnect().await;
    broker.wait_session_offline("offline311").await;
    let mut publisher = RawClient::v311(broker.addr(), "offline311-pub").await;
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publisher.publish("off/t", b"queued", qos, false).await;
    }
    let (mut sub, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert!(connack.session_present);
    assert_eq!(sub.recv_and_ack().await.qos, QoS::AtLeastOnce);
    assert_eq!(sub.recv_and_ack().await.qos, QoS::ExactlyOnce);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_packet_gets_disconnect_0x95() {
    let broker = TestBroker::with(|c| c.limits.max_packet_size = 1024).await;
    let mut client = RawClient::v5(broker.addr(), "oversize").await;
    client
        .send(&Packet::Publish(publish_packet(
            "big/t",
            &[7u8; 2000],
            QoS::AtMostOnce,
            None,
        )))
        .await;
    client.expect_disconnect(0x95).await;
    assert_broker_alive(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_packet_closes_v311() {
    let broker = TestBroker::with(|c| c.limits.max_packet_size = 1024).await;
    let mut client = RawClient::v311(broker.addr(), "oversize311").await;
    client
        .send(&Packet::Publish(publish_packet(
            "big/t",
            &[7u8; 2000],
            QoS::AtMostOnce,
            None,
        )))
        .await;
    client.expect_error_close(0x95).await;
    assert_broker_alive(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics_published() {
    let broker = TestBroker::with(|c| c.server.sys_interval_secs = 1).await;
    let mut sub = RawClient::v5(broker.addr(), "sys-watch").await;
    sub.subscribe("$SYS/#", QoS::AtMostOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), "sys-pub").await;
    publisher
        .publish("any/t", b"x", QoS::AtLeastOnce, false)
        .await;
    let wanted = [
        "$SYS/broker/uptime",
        "$SYS/broker/clients/connected",
        "$SYS/broker/messages/received",
        "$SYS/broker/messages/sent",
        "$SYS/broker/version",
    ];
    let mut seen: HashMap<String, String> = HashMap::new();
    // A bound on waiting for the periodic publisher, not a claim about its punctuality.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !wanted.iter().all(|t| seen.contains_key(*t))
        || seen
            .get("$SYS/broker/messages/received")
            .is_none_or(|v| v == "0")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing $SYS topics; seen {seen:?}"
        );
        let got = sub.recv_publish().await;
        seen.insert(
            got.topic.to_string(),
            String::from_utf8_lossy(&got.payload).into_owned(),
        );
    }
    let connected: u64 = seen["$SYS/broker/clients/connected"]
        .trim()
        .parse()
        .unwrap();
    assert!(connected >= 2, "{seen:?}");
}
