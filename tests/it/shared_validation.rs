//! Shared subscriptions: what is accepted or refused at SUBSCRIBE, what CONNACK advertises,
//! no retained messages, per-member QoS and Subscription Identifiers (MQTT 5.0 §4.8.2).

use crate::common::*;
use sharq::packet::{ProtocolVersion, QoS, ReasonCode, SubscriptionOptions};

const INVALID: [&str; 7] = [
    "$share/a+b/x",
    "$share/+/x",
    "$share/#",
    "$share/g",
    "$share/g/",
    "$share//x",
    "$share/",
];
const VALID: [&str; 3] = ["$share/g/#", "$share/g/+/y", "$queue/x"];

async fn check_validation(version: ProtocolVersion, refused: ReasonCode) {
    let broker = TestBroker::with(|_| {}).await;
    let addr = broker.addr();
    let (mut c, _) = RawClient::connect_opts(addr, ConnectOpts::new(version, "validator")).await;
    // One filter per SUBSCRIBE, so a refusal cannot hide behind another filter's code.
    for filter in INVALID {
        let codes = c.subscribe_many(&[filter], QoS::AtLeastOnce).await;
        assert_eq!(codes, vec![refused], "{version:?}: SUBSCRIBE {filter:?}");
    }
    for filter in VALID {
        let codes = c.subscribe_many(&[filter], QoS::AtLeastOnce).await;
        assert_eq!(
            codes,
            vec![ReasonCode::GRANTED_QOS_1],
            "{version:?}: SUBSCRIBE {filter:?}"
        );
    }
    // And all of them in one SUBSCRIBE: one code per filter, in order.
    let all: Vec<&str> = INVALID.iter().chain(VALID.iter()).copied().collect();
    let codes = c.subscribe_many(&all, QoS::AtLeastOnce).await;
    let mut expected = vec![refused; INVALID.len()];
    expected.extend([ReasonCode::GRANTED_QOS_1; 3]);
    assert_eq!(
        codes, expected,
        "{version:?}: one SUBSCRIBE with every filter"
    );

    let router = &broker.state().router;
    assert!(router.group("g", "#").is_some());
    assert!(router.group("g", "+/y").is_some());
    assert!(router.group("$queue", "x").is_some());
    // Still connected and usable after the refusals.
    c.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_filter_validation_v5() {
    check_validation(V5, ReasonCode::TOPIC_FILTER_INVALID).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_filter_validation_v311() {
    check_validation(V3_1_1, ReasonCode(0x80)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_no_local_is_protocol_error_v5() {
    let broker = TestBroker::with(|_| {}).await;
    let addr = broker.addr();
    let (mut c, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "no-local")).await;
    // SUBSCRIBE, packet id 1, properties length 0, "$share/g/t", options: QoS 1 + No Local.
    let filter = b"$share/g/t";
    let mut body = vec![0x00, 0x01, 0x00, 0x00, filter.len() as u8];
    body.extend_from_slice(filter);
    body.push(0x01 | 0x04);
    let mut packet = vec![0x82, body.len() as u8];
    packet.extend(body);
    c.try_send_bytes(&packet).await.expect("write");
    let bytes = c.read_raw_until_closed(TIMEOUT).await;
    assert!(
        bytes.len() >= 3 && bytes[0] == 0xE0 && bytes[2] == 0x82,
        "expected DISCONNECT 0x82 (e0 .. 82), got {bytes:02x?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_connack_advertises_shared_subscription_available() {
    let broker = TestBroker::with(|_| {}).await;
    let addr = broker.addr();
    let (_c, connack) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "connack")).await;
    assert_eq!(
        connack.properties.shared_subscription_available,
        Some(true),
        "CONNACK must carry Shared Subscription Available = 1 explicitly"
    );
}

async fn check_no_retained(version: ProtocolVersion) {
    let broker = TestBroker::with(|_| {}).await;
    let addr = broker.addr();
    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(version, "pub")).await;
    publisher
        .publish("r/t", &seq_payload(7), QoS::AtLeastOnce, true)
        .await;

    let (mut shared, _) = RawClient::connect_opts(addr, ConnectOpts::new(version, "shared")).await;
    shared.subscribe("$share/g/r/t", QoS::AtLeastOnce).await;
    shared.subscribe("$share/h/r/#", QoS::AtLeastOnce).await;
    shared.subscribe("$queue/r/t", QoS::AtLeastOnce).await;
    shared.expect_no_publish(QUIET).await;

    let (mut plain, _) = RawClient::connect_opts(addr, ConnectOpts::new(version, "plain")).await;
    plain.subscribe("r/t", QoS::AtLeastOnce).await;
    let retained = plain.expect_publish().await;
    assert!(
        retained.retain,
        "retained message carries RETAIN to a plain subscriber"
    );
    assert_eq!(payload_seq(&retained.payload), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscribe_gets_no_retained_v5() {
    check_no_retained(V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscribe_gets_no_retained_v311() {
    check_no_retained(V3_1_1).await;
}

/// Members granted QoS 0, 1 and 2 each receive at their own QoS (read from the raw fixed
/// header), for messages published at QoS 2 and at QoS 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_member_granted_qos_respected() {
    let broker = TestBroker::with(|_| {}).await;
    let addr = broker.addr();
    let mut members = Vec::new();
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let (mut c, _) =
            RawClient::connect_opts(addr, ConnectOpts::new(V5, &format!("m{i}"))).await;
        c.subscribe("$share/g/q", qos).await;
        members.push((qos, Member::spawn(c, AckMode::Ack)));
    }
    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "pub")).await;
    publisher.publish_seqs("q", 0..30, QoS::ExactlyOnce).await;
    publisher.publish_seqs("q", 30..60, QoS::AtLeastOnce).await;
    let refs: Vec<&Member> = members.iter().map(|(_, m)| m).collect();
    wait_total(&refs, 60).await;
    assert_exactly_once("group", refs.iter().flat_map(|m| m.seqs()), 0..60);
    for (granted, member) in &members {
        let got = member.got();
        assert!(!got.is_empty(), "member at {granted:?} got nothing");
        for g in got {
            let published = if g.seq < 30 {
                QoS::ExactlyOnce
            } else {
                QoS::AtLeastOnce
            };
            let expected = (*granted).min(published);
            let raw_qos = (g.first_byte >> 1) & 0x03;
            assert_eq!(
                g.first_byte >> 4,
                3,
                "PUBLISH packet type in raw first byte"
            );
            assert_eq!(
                raw_qos, expected as u8,
                "member granted {granted:?} received seq {} (published at {published:?}) with QoS {raw_qos}",
                g.seq
            );
        }
    }
}

/// Each member receives only its own Subscription Identifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_member_gets_only_own_subscription_identifier() {
    let broker = TestBroker::with(|_| {}).await;
    let addr = broker.addr();
    let ids = [11u32, 22, 33];
    let mut members = Vec::new();
    for id in ids {
        let (mut c, _) =
            RawClient::connect_opts(addr, ConnectOpts::new(V5, &format!("m{id}"))).await;
        let suback = c
            .subscribe_with(
                vec![("$share/g/sid", sub_options(QoS::AtLeastOnce))],
                Some(id),
            )
            .await;
        assert_eq!(
            suback.reason_codes,
            vec![ReasonCode(QoS::AtLeastOnce as u8)]
        );
        members.push((id, Member::spawn(c, AckMode::Ack)));
    }
    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "pub")).await;
    publisher.publish_seqs("sid", 0..30, QoS::AtLeastOnce).await;
    let refs: Vec<&Member> = members.iter().map(|(_, m)| m).collect();
    wait_total(&refs, 30).await;
    assert_exactly_once("group", refs.iter().flat_map(|m| m.seqs()), 0..30);
    for (id, member) in &members {
        let got = member.got();
        assert!(!got.is_empty());
        for g in got {
            assert_eq!(
                g.publish.properties.subscription_identifiers,
                vec![*id],
                "member subscribed with identifier {id}, seq {}",
                g.seq
            );
        }
    }
}

/// A v5 member that sets Retain As Published is unaffected by the others; kept small: the
/// retain flag of live messages follows each member's own option.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_member_gets_own_retain_as_published() {
    let broker = TestBroker::with(|_| {}).await;
    let addr = broker.addr();
    let (mut rap, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "rap")).await;
    let options = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        retain_as_published: true,
        ..SubscriptionOptions::default()
    };
    assert_eq!(
        rap.subscribe_with(vec![("$share/g/ra", options)], None)
            .await
            .reason_codes,
        vec![ReasonCode::GRANTED_QOS_1]
    );
    let (mut other, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "other")).await;
    other.subscribe("$share/g/ra", QoS::AtLeastOnce).await;
    let rap = Member::spawn(rap, AckMode::Ack);
    let other = Member::spawn(other, AckMode::Ack);
    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "pub")).await;
    for seq in 0..10 {
        publisher
            .publish("ra", &seq_payload(seq), QoS::AtLeastOnce, true)
            .await;
    }
    wait_total(&[&rap, &other], 10).await;
    assert!(rap.got().iter().all(|g| g.publish.retain));
    assert!(other.got().iter().all(|g| !g.publish.retain));
    assert!(rap.count() > 0 && other.count() > 0);
}
