//! SUBSCRIBE / UNSUBSCRIBE and the topic tree: wildcards, `$` topics, overlapping
//! subscriptions, Subscription Identifiers, No Local, Retain As Published, Retain Handling.

use crate::common::*;
use sharq::packet::{ProtocolVersion, QoS, ReasonCode, RetainHandling, SubscriptionOptions};

async fn expect_topics(client: &mut RawClient, topics: &[&str]) {
    for topic in topics {
        let got = client.recv_and_ack().await;
        assert_eq!(&got.topic[..], *topic);
    }
    client.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_level_wildcard() {
    let broker = TestBroker::start().await;
    let mut sub = RawClient::v5(broker.addr(), "plus").await;
    sub.subscribe("sport/+/player", QoS::AtMostOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), "plus-pub").await;
    for topic in [
        "sport/tennis/player",
        "sport/tennis/player/x",
        "sport/player",
        "sport//player",
        "other/tennis/player",
    ] {
        publisher.publish(topic, b"x", QoS::AtMostOnce, false).await;
    }
    expect_topics(&mut sub, &["sport/tennis/player", "sport//player"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_level_wildcard_includes_parent() {
    let broker = TestBroker::start().await;
    let mut sub = RawClient::v5(broker.addr(), "hash").await;
    sub.subscribe("sport/tennis/#", QoS::AtMostOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), "hash-pub").await;
    for topic in [
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/football",
        "sport",
    ] {
        publisher.publish(topic, b"x", QoS::AtMostOnce, false).await;
    }
    expect_topics(
        &mut sub,
        &[
            "sport/tennis",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_alone_matches_everything_but_dollar_topics() {
    let broker = TestBroker::with(|c| c.server.sys_interval_secs = 1).await;
    let mut all = RawClient::v5(broker.addr(), "all").await;
    all.subscribe("#", QoS::AtMostOnce).await;
    let mut plus = RawClient::v5(broker.addr(), "plus-sys").await;
    plus.subscribe("+/broker/#", QoS::AtMostOnce).await;
    let mut sys = RawClient::v5(broker.addr(), "sys").await;
    sys.subscribe("$SYS/#", QoS::AtMostOnce).await;
    // $SYS is there (retained and published every second)...
    let got = sys.recv_publish().await;
    assert!(got.topic.starts_with("$SYS/broker/"), "{got:?}");
    // ...but `#` and `+/...` never see it [MQTT-4.7.2-1], retained or live.
    all.expect_no_publish(std::time::Duration::from_millis(1300))
        .await;
    plus.expect_no_publish(QUIET).await;
    // `#` still gets ordinary topics.
    let mut publisher = RawClient::v5(broker.addr(), "all-pub").await;
    publisher.publish("a/b", b"x", QoS::AtMostOnce, false).await;
    let got = all.recv_publish().await;
    assert_eq!(&got.topic[..], "a/b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_one_copy_at_highest_qos_with_all_identifiers() {
    let broker = TestBroker::start().await;
    let mut sub = RawClient::v5(broker.addr(), "overlap").await;
    let suback = sub
        .subscribe_with(vec![("ov/+", sub_options(QoS::AtMostOnce))], Some(1))
        .await;
    assert_eq!(suback.reason_codes, vec![ReasonCode::GRANTED_QOS_0]);
    let suback = sub
        .subscribe_with(vec![("ov/#", sub_options(QoS::ExactlyOnce))], Some(2))
        .await;
    assert_eq!(suback.reason_codes, vec![ReasonCode::GRANTED_QOS_2]);
    sub.subscribe_with(vec![("ov/x", sub_options(QoS::AtLeastOnce))], None)
        .await;
    let mut publisher = RawClient::v5(broker.addr(), "overlap-pub").await;
    publisher
        .publish("ov/x", b"x", QoS::ExactlyOnce, false)
        .await;
    let got = sub.recv_and_ack().await;
    assert_eq!(got.qos, QoS::ExactlyOnce, "highest QoS of the matches");
    let mut ids = got.properties.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2], "all Subscription Identifiers");
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_one_copy_v311() {
    let broker = TestBroker::start().await;
    let mut sub = RawClient::v311(broker.addr(), "overlap311").await;
    sub.subscribe("ov3/+", QoS::AtLeastOnce).await;
    sub.subscribe("ov3/#", QoS::AtMostOnce).await;
    let mut publisher = RawClient::v311(broker.addr(), "overlap311-pub").await;
    publisher
        .publish("ov3/x", b"x", QoS::AtLeastOnce, false)
        .await;
    let got = sub.recv_and_ack().await;
    assert_eq!(got.qos, QoS::AtLeastOnce);
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_identifier_delivered_only_when_given() {
    let broker = TestBroker::start().await;
    let mut with_id = RawClient::v5(broker.addr(), "with-id").await;
    with_id
        .subscribe_with(
            vec![("sid/t", sub_options(QoS::AtLeastOnce))],
            Some(268_435_455),
        )
        .await;
    let mut without = RawClient::v5(broker.addr(), "without-id").await;
    without.subscribe("sid/t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), "sid-pub").await;
    publisher
        .publish("sid/t", b"x", QoS::AtLeastOnce, false)
        .await;
    let got = with_id.recv_and_ack().await;
    assert_eq!(got.properties.subscription_identifiers, vec![268_435_455]);
    let got = without.recv_and_ack().await;
    assert!(got.properties.subscription_identifiers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_suppresses_own_messages() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::v5(broker.addr(), "nolocal").await;
    client
        .subscribe_with(
            vec![(
                "nl/t",
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    ..SubscriptionOptions::default()
                },
            )],
            None,
        )
        .await;
    client
        .publish("nl/t", b"mine", QoS::AtLeastOnce, false)
        .await;
    client.expect_no_publish(QUIET).await;
    let mut other = RawClient::v5(broker.addr(), "nolocal-other").await;
    other
        .publish("nl/t", b"theirs", QoS::AtLeastOnce, false)
        .await;
    let got = client.recv_and_ack().await;
    assert_eq!(&got.payload[..], b"theirs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_no_local_own_messages_are_delivered() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::v5(broker.addr(), "local").await;
    client.subscribe("loc/t", QoS::AtLeastOnce).await;
    client
        .publish("loc/t", b"mine", QoS::AtLeastOnce, false)
        .await;
    let got = client.recv_and_ack().await;
    assert_eq!(&got.payload[..], b"mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_as_published() {
    let broker = TestBroker::start().await;
    let mut rap = RawClient::v5(broker.addr(), "rap").await;
    rap.subscribe_with(
        vec![(
            "rap/t",
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                retain_as_published: true,
                ..SubscriptionOptions::default()
            },
        )],
        None,
    )
    .await;
    let mut plain = RawClient::v5(broker.addr(), "no-rap").await;
    plain.subscribe("rap/t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), "rap-pub").await;
    publisher
        .publish("rap/t", b"r", QoS::AtLeastOnce, true)
        .await;
    let got = rap.recv_and_ack().await;
    assert!(
        got.retain,
        "Retain As Published keeps RETAIN=1 on live delivery"
    );
    let got = plain.recv_and_ack().await;
    assert!(
        !got.retain,
        "live delivery clears RETAIN without Retain As Published"
    );
}

async fn subscribe_with_handling(client: &mut RawClient, handling: RetainHandling) {
    client
        .subscribe_with(
            vec![(
                "rh/t",
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    retain_handling: handling,
                    ..SubscriptionOptions::default()
                },
            )],
            None,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_0_1_2() {
    let broker = TestBroker::start().await;
    let mut publisher = RawClient::v5(broker.addr(), "rh-pub").await;
    publisher
        .publish("rh/t", b"kept", QoS::AtLeastOnce, true)
        .await;

    // 0: at every subscribe.
    let mut c0 = RawClient::v5(broker.addr(), "rh0").await;
    subscribe_with_handling(&mut c0, RetainHandling::SendAtSubscribe).await;
    assert!(c0.recv_and_ack().await.retain);
    subscribe_with_handling(&mut c0, RetainHandling::SendAtSubscribe).await;
    assert!(
        c0.recv_and_ack().await.retain,
        "0 sends again on re-subscribe"
    );

    // 1: only if the subscription is new.
    let mut c1 = RawClient::v5(broker.addr(), "rh1").await;
    subscribe_with_handling(&mut c1, RetainHandling::SendIfNew).await;
    assert!(c1.recv_and_ack().await.retain);
    subscribe_with_handling(&mut c1, RetainHandling::SendIfNew).await;
    c1.expect_no_publish(QUIET).await;

    // 2: never.
    let mut c2 = RawClient::v5(broker.addr(), "rh2").await;
    subscribe_with_handling(&mut c2, RetainHandling::DoNotSend).await;
    c2.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_reason_codes() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::v5(broker.addr(), "unsub").await;
    client.subscribe("un/a", QoS::AtLeastOnce).await;
    let unsuback = client.unsubscribe(&["un/a", "un/never"]).await;
    assert_eq!(
        unsuback.reason_codes,
        vec![ReasonCode::SUCCESS, ReasonCode(0x11)]
    );
    let mut publisher = RawClient::v5(broker.addr(), "unsub-pub").await;
    publisher
        .publish("un/a", b"x", QoS::AtLeastOnce, false)
        .await;
    client.expect_no_publish(QUIET).await;
    let unsuback = client.unsubscribe(&["un/a"]).await;
    assert_eq!(unsuback.reason_codes, vec![ReasonCode(0x11)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_unsubscribe_stops_delivery() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::connect(broker.addr(), ProtocolVersion::V3_1_1, "unsub311").await;
    client.subscribe("un3/a", QoS::AtLeastOnce).await;
    let unsuback = client.unsubscribe(&["un3/a"]).await;
    assert!(unsuback.reason_codes.is_empty());
    let mut publisher = RawClient::v311(broker.addr(), "unsub311-pub").await;
    publisher
        .publish("un3/a", b"x", QoS::AtLeastOnce, false)
        .await;
    client.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_filter_refused_in_suback() {
    let broker = TestBroker::start().await;
    let mut v5 = RawClient::v5(broker.addr(), "badfilter").await;
    let suback = v5
        .subscribe_with(
            vec![
                ("ok/+", sub_options(QoS::AtLeastOnce)),
                ("bad/#/x", sub_options(QoS::AtLeastOnce)),
                ("bad+/x", sub_options(QoS::AtLeastOnce)),
            ],
            None,
        )
        .await;
    assert_eq!(
        suback.reason_codes,
        vec![
            ReasonCode::GRANTED_QOS_1,
            ReasonCode(0x8F),
            ReasonCode(0x8F)
        ]
    );
    let mut v3 = RawClient::v311(broker.addr(), "badfilter311").await;
    let suback = v3
        .subscribe_with(vec![("bad/#/x", sub_options(QoS::AtLeastOnce))], None)
        .await;
    // Our decoder reads a 3.1.1 failure (0x80) as a failure code.
    assert!(suback.reason_codes[0].is_error(), "{suback:?}");
    v3.ping().await;
}
