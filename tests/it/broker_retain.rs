//! Retained messages: stored, replaced, cleared by an empty payload, delivered on subscribe
//! with RETAIN=1, and dropped once their Message Expiry Interval has passed.

use std::time::Duration;

use crate::common::*;
use sharq::packet::{ProtocolVersion, QoS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_delivered_on_subscribe_with_retain_flag() {
    let broker = TestBroker::start().await;
    let mut publisher = RawClient::v5(broker.addr(), "ret-pub").await;
    publisher
        .publish("ret/a", b"stored", QoS::AtLeastOnce, true)
        .await;
    for version in [ProtocolVersion::V5, ProtocolVersion::V3_1_1] {
        let mut sub = RawClient::connect(broker.addr(), version, &client_id("ret-sub")).await;
        sub.subscribe("ret/+", QoS::AtLeastOnce).await;
        let got = sub.recv_and_ack().await;
        assert!(
            got.retain,
            "{version:?}: retained delivery must have RETAIN=1"
        );
        assert_eq!(&got.topic[..], "ret/a");
        assert_eq!(&got.payload[..], b"stored");
        assert_eq!(got.qos, QoS::AtLeastOnce);
        sub.expect_no_publish(QUIET).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_qos_is_minimum_of_message_and_subscription() {
    let broker = TestBroker::start().await;
    let mut publisher = RawClient::v5(broker.addr(), "retq-pub").await;
    publisher
        .publish("retq/a", b"q2", QoS::ExactlyOnce, true)
        .await;
    let mut sub = RawClient::v5(broker.addr(), "retq-sub").await;
    sub.subscribe("retq/a", QoS::AtLeastOnce).await;
    let got = sub.recv_and_ack().await;
    assert_eq!(got.qos, QoS::AtLeastOnce);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_replaced_by_newer() {
    let broker = TestBroker::start().await;
    let mut publisher = RawClient::v5(broker.addr(), "rep-pub").await;
    publisher
        .publish("rep/a", b"old", QoS::AtLeastOnce, true)
        .await;
    publisher
        .publish("rep/a", b"new", QoS::AtLeastOnce, true)
        .await;
    let mut sub = RawClient::v5(broker.addr(), "rep-sub").await;
    sub.subscribe("rep/a", QoS::AtLeastOnce).await;
    let got = sub.recv_and_ack().await;
    assert_eq!(&got.payload[..], b"new");
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_cleared_by_empty_payload() {
    let broker = TestBroker::start().await;
    let mut publisher = RawClient::v5(broker.addr(), "clr-pub").await;
    publisher
        .publish("clr/a", b"old", QoS::AtLeastOnce, true)
        .await;
    publisher
        .publish("clr/a", b"", QoS::AtLeastOnce, true)
        .await;
    let mut sub = RawClient::v5(broker.addr(), "clr-sub").await;
    sub.subscribe("clr/#", QoS::AtLeastOnce).await;
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retained_publish_does_not_replace_retained() {
    let broker = TestBroker::start().await;
    let mut publisher = RawClient::v5(broker.addr(), "nr-pub").await;
    publisher
        .publish("nr/a", b"kept", QoS::AtLeastOnce, true)
        .await;
    publisher
        .publish("nr/a", b"live", QoS::AtLeastOnce, false)
        .await;
    let mut sub = RawClient::v5(broker.addr(), "nr-sub").await;
    sub.subscribe("nr/a", QoS::AtLeastOnce).await;
    let got = sub.recv_and_ack().await;
    assert_eq!(&got.payload[..], b"kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_expiry_honoured() {
    let broker = TestBroker::start().await;
    let mut publisher = RawClient::v5(broker.addr(), "rexp-pub").await;
    let mut publish = publish_packet("rexp/a", b"short-lived", QoS::AtLeastOnce, None);
    publish.retain = true;
    publish.properties.message_expiry_interval = Some(1);
    publisher.publish_full(publish).await;
    let mut long = publish_packet("rexp/b", b"long-lived", QoS::AtLeastOnce, None);
    long.retain = true;
    long.properties.message_expiry_interval = Some(100);
    publisher.publish_full(long).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut sub = RawClient::v5(broker.addr(), "rexp-sub").await;
    sub.subscribe("rexp/+", QoS::AtLeastOnce).await;
    let got = sub.recv_and_ack().await;
    assert_eq!(
        &got.topic[..],
        "rexp/b",
        "the expired retained message must be gone"
    );
    let remaining = got.properties.message_expiry_interval.unwrap();
    assert!(remaining <= 98, "expiry must count down: {remaining}");
    sub.expect_no_publish(QUIET).await;
}
