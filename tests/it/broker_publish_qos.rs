//! QoS 0/1/2 in both directions with real clients (rumqttc 3.1.1 and v5), and the QoS state
//! machines checked byte by byte with the raw client: resend with DUP on resume, PUBREL resend,
//! exactly-once inbound, unknown PUBREL, flow control.

use std::time::Duration;

use crate::common::*;
use sharq::packet::{Ack, Packet, ProtocolVersion, QoS, ReasonCode};

async fn rumqttc_v311_roundtrip(qos: rumqttc::QoS) {
    let broker = TestBroker::start().await;
    let (sub, mut sub_events) = rumqttc_v311(broker.addr(), &client_id("r4-sub")).await;
    sub.subscribe("r4/qos", qos).await.unwrap();
    wait_event(&mut sub_events, "SUBACK", |e| {
        matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))
    })
    .await;
    let (publisher, mut pub_events) = rumqttc_v311(broker.addr(), &client_id("r4-pub")).await;
    publisher
        .publish("r4/qos", qos, false, b"hello 3.1.1".to_vec())
        .await
        .unwrap();
    match qos {
        rumqttc::QoS::AtMostOnce => {}
        rumqttc::QoS::AtLeastOnce => {
            wait_event(&mut pub_events, "PUBACK", |e| {
                matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))
            })
            .await;
        }
        rumqttc::QoS::ExactlyOnce => {
            wait_event(&mut pub_events, "PUBCOMP", |e| {
                matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::PubComp(_)))
            })
            .await;
        }
    }
    let event = wait_event(&mut sub_events, "PUBLISH", |e| {
        matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)))
    })
    .await;
    let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = event else {
        unreachable!()
    };
    assert_eq!(p.topic, "r4/qos");
    assert_eq!(&p.payload[..], b"hello 3.1.1");
    assert_eq!(p.qos, qos);
    if qos == rumqttc::QoS::ExactlyOnce {
        // rumqttc acknowledges automatically; the broker must finish the flow with PUBREL.
        wait_event(&mut sub_events, "PUBREL", |e| {
            matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::PubRel(_)))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_qos0() {
    rumqttc_v311_roundtrip(rumqttc::QoS::AtMostOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_qos1() {
    rumqttc_v311_roundtrip(rumqttc::QoS::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_qos2() {
    rumqttc_v311_roundtrip(rumqttc::QoS::ExactlyOnce).await;
}

async fn rumqttc_v5_roundtrip(qos: rumqttc::v5::mqttbytes::QoS) {
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    use rumqttc::v5::mqttbytes::QoS as Q;
    use rumqttc::v5::Event as E5;
    let broker = TestBroker::start().await;
    let (sub, mut sub_events) = rumqttc_v5(broker.addr(), &client_id("r5-sub")).await;
    sub.subscribe("r5/qos", qos).await.unwrap();
    wait_event(&mut sub_events, "SUBACK", |e| {
        matches!(e, E5::Incoming(P5::SubAck(_)))
    })
    .await;
    let (publisher, mut pub_events) = rumqttc_v5(broker.addr(), &client_id("r5-pub")).await;
    publisher
        .publish("r5/qos", qos, false, b"hello v5".to_vec())
        .await
        .unwrap();
    match qos {
        Q::AtMostOnce => {}
        Q::AtLeastOnce => {
            wait_event(&mut pub_events, "PUBACK", |e| {
                matches!(e, E5::Incoming(P5::PubAck(_)))
            })
            .await;
        }
        Q::ExactlyOnce => {
            wait_event(&mut pub_events, "PUBCOMP", |e| {
                matches!(e, E5::Incoming(P5::PubComp(_)))
            })
            .await;
        }
    }
    let event = wait_event(&mut sub_events, "PUBLISH", |e| {
        matches!(e, E5::Incoming(P5::Publish(_)))
    })
    .await;
    let E5::Incoming(P5::Publish(p)) = event else {
        unreachable!()
    };
    assert_eq!(&p.topic[..], b"r5/qos");
    assert_eq!(&p.payload[..], b"hello v5");
    assert_eq!(p.qos, qos);
    if qos == Q::ExactlyOnce {
        wait_event(&mut sub_events, "PUBREL", |e| {
            matches!(e, E5::Incoming(P5::PubRel(_)))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_qos0() {
    rumqttc_v5_roundtrip(rumqttc::v5::mqttbytes::QoS::AtMostOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_qos1() {
    rumqttc_v5_roundtrip(rumqttc::v5::mqttbytes::QoS::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_qos2() {
    rumqttc_v5_roundtrip(rumqttc::v5::mqttbytes::QoS::ExactlyOnce).await;
}

/// Raw clients: every (publish QoS, subscription QoS) pair, delivered at the minimum of both,
/// across protocol versions (a v5 publisher to a 3.1.1 subscriber and back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_qos_matrix_across_versions() {
    let broker = TestBroker::start().await;
    let qoses = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    for (pub_version, sub_version) in [
        (ProtocolVersion::V5, ProtocolVersion::V3_1_1),
        (ProtocolVersion::V3_1_1, ProtocolVersion::V5),
    ] {
        for sub_qos in qoses {
            let mut sub = RawClient::connect(broker.addr(), sub_version, &client_id("m-sub")).await;
            sub.subscribe("matrix/t", sub_qos).await;
            let mut publisher =
                RawClient::connect(broker.addr(), pub_version, &client_id("m-pub")).await;
            for pub_qos in qoses {
                let payload = format!("{pub_qos:?}->{sub_qos:?}");
                publisher
                    .publish("matrix/t", payload.as_bytes(), pub_qos, false)
                    .await;
                let got = sub.recv_and_ack().await;
                assert_eq!(&got.payload[..], payload.as_bytes());
                assert_eq!(
                    got.qos,
                    pub_qos.min(sub_qos),
                    "{pub_version:?}->{sub_version:?}: {payload}"
                );
                assert!(!got.dup);
                assert!(!got.retain);
            }
            sub.disconnect().await;
            publisher.disconnect().await;
        }
    }
}

/// Connects `id` with a persistent session (v5 expiry 60 s / 3.1.1 clean session 0).
fn persistent(version: ProtocolVersion, id: &str, clean: bool) -> sharq::packet::Connect {
    let mut connect = connect_packet(version, id);
    connect.clean_start = clean;
    if version.is_v5() {
        connect.properties.session_expiry_interval = Some(60);
    } else {
        connect.clean_start = false;
    }
    connect
}

async fn unacked_qos1_resent_with_dup_on_resume(version: ProtocolVersion) {
    let broker = TestBroker::start().await;
    let id = client_id("dup1");
    let (mut sub, _) = RawClient::connect_with(broker.addr(), persistent(version, &id, true)).await;
    sub.subscribe("dup/q1", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), &client_id("dup1-pub")).await;
    publisher
        .publish("dup/q1", b"unacked", QoS::AtLeastOnce, false)
        .await;
    let first = sub.recv_publish().await;
    assert!(!first.dup);
    drop(sub); // no PUBACK, no DISCONNECT

    let (mut sub, connack) =
        RawClient::connect_with(broker.addr(), persistent(version, &id, false)).await;
    assert!(connack.session_present);
    let again = sub.recv_publish().await;
    assert!(again.dup, "resent PUBLISH must have DUP=1: {again:?}");
    assert_eq!(again.packet_id, first.packet_id, "same packet id");
    assert_eq!(again.payload, first.payload);
    assert_eq!(again.qos, QoS::AtLeastOnce);
    sub.ack(&again).await;
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_unacked_qos1_resent_with_dup_on_resume() {
    unacked_qos1_resent_with_dup_on_resume(ProtocolVersion::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_unacked_qos1_resent_with_dup_on_resume() {
    unacked_qos1_resent_with_dup_on_resume(ProtocolVersion::V3_1_1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreceived_qos2_publish_resent_with_dup_on_resume() {
    let broker = TestBroker::start().await;
    let id = client_id("dup2");
    let version = ProtocolVersion::V5;
    let (mut sub, _) = RawClient::connect_with(broker.addr(), persistent(version, &id, true)).await;
    sub.subscribe("dup/q2", QoS::ExactlyOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), &client_id("dup2-pub")).await;
    publisher
        .publish("dup/q2", b"no pubrec", QoS::ExactlyOnce, false)
        .await;
    let first = sub.recv_publish().await;
    drop(sub);
    let (mut sub, connack) =
        RawClient::connect_with(broker.addr(), persistent(version, &id, false)).await;
    assert!(connack.session_present);
    let again = sub.recv_publish().await;
    assert!(again.dup, "resent QoS 2 PUBLISH must have DUP=1");
    assert_eq!(again.packet_id, first.packet_id);
    assert_eq!(again.qos, QoS::ExactlyOnce);
    sub.ack(&again).await;
    sub.expect_no_publish(QUIET).await;
}

async fn pubrel_resent_on_resume(version: ProtocolVersion) {
    let broker = TestBroker::start().await;
    let id = client_id("rel");
    let (mut sub, _) = RawClient::connect_with(broker.addr(), persistent(version, &id, true)).await;
    sub.subscribe("dup/rel", QoS::ExactlyOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), &client_id("rel-pub")).await;
    publisher
        .publish("dup/rel", b"half done", QoS::ExactlyOnce, false)
        .await;
    let first = sub.recv_publish().await;
    let packet_id = first.packet_id.unwrap();
    sub.send(&Packet::PubRec(Ack::new(packet_id))).await;
    sub.recv_ack("PUBREL", packet_id).await;
    drop(sub); // no PUBCOMP

    let (mut sub, connack) =
        RawClient::connect_with(broker.addr(), persistent(version, &id, false)).await;
    assert!(connack.session_present);
    // After PUBREC the message must not be sent again, only the PUBREL [MQTT-4.4.0-1].
    let packet = sub.recv().await;
    match packet {
        Packet::PubRel(ack) => assert_eq!(ack.packet_id, packet_id),
        other => panic!("expected the PUBREL to be resent, got {other:?}"),
    }
    sub.send(&Packet::PubComp(Ack::new(packet_id))).await;
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_pubrel_resent_on_resume() {
    pubrel_resent_on_resume(ProtocolVersion::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_pubrel_resent_on_resume() {
    pubrel_resent_on_resume(ProtocolVersion::V3_1_1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_inbound_resend_before_pubrel_delivered_once() {
    let broker = TestBroker::start().await;
    let mut sub = RawClient::v5(broker.addr(), &client_id("once-sub")).await;
    sub.subscribe("once/t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), &client_id("once-pub")).await;
    let mut publish = publish_packet("once/t", b"exactly once", QoS::ExactlyOnce, Some(7));
    publisher.send(&Packet::Publish(publish.clone())).await;
    publisher.recv_ack("PUBREC", 7).await;
    publish.dup = true;
    publisher.send(&Packet::Publish(publish)).await;
    let rec = publisher.recv_ack("PUBREC", 7).await;
    assert!(!rec.reason_code.is_error(), "{rec:?}");
    publisher.send(&Packet::PubRel(Ack::new(7))).await;
    let comp = publisher.recv_ack("PUBCOMP", 7).await;
    assert_eq!(comp.reason_code, ReasonCode::SUCCESS);

    let got = sub.recv_and_ack().await;
    assert_eq!(&got.payload[..], b"exactly once");
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_same_packet_id_after_pubcomp_is_a_new_message() {
    let broker = TestBroker::start().await;
    let mut sub = RawClient::v5(broker.addr(), &client_id("reuse-sub")).await;
    sub.subscribe("reuse/t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), &client_id("reuse-pub")).await;
    for payload in [&b"one"[..], b"two"] {
        publisher
            .publish_full(publish_packet(
                "reuse/t",
                payload,
                QoS::ExactlyOnce,
                Some(9),
            ))
            .await;
        let got = sub.recv_and_ack().await;
        assert_eq!(&got.payload[..], payload);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_pubrel_for_unknown_packet_id_gets_pubcomp_0x92() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::v5(broker.addr(), &client_id("unknown-rel")).await;
    client.send(&Packet::PubRel(Ack::new(4242))).await;
    let comp = client.recv_ack("PUBCOMP", 4242).await;
    assert_eq!(comp.reason_code, ReasonCode(0x92));
    client.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_client_publish_without_subscribers_acked_0x10() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::v5(broker.addr(), &client_id("nomatch")).await;
    client
        .send(&Packet::Publish(publish_packet(
            "nobody/here",
            b"x",
            QoS::AtLeastOnce,
            Some(3),
        )))
        .await;
    let ack = client.recv_ack("PUBACK", 3).await;
    assert!(
        ack.reason_code == ReasonCode(0x10) || ack.reason_code == ReasonCode::SUCCESS,
        "{ack:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_exceeded_by_client_gets_disconnect_0x93() {
    let broker = TestBroker::with(|c| c.limits.receive_maximum = 2).await;
    let (mut client, connack) =
        RawClient::connect_with(broker.addr(), connect_packet(ProtocolVersion::V5, "greedy")).await;
    assert_eq!(connack.properties.receive_maximum, Some(2));
    for id in 1..=2u16 {
        client
            .send(&Packet::Publish(publish_packet(
                "rm/t",
                b"x",
                QoS::ExactlyOnce,
                Some(id),
            )))
            .await;
        client.recv_ack("PUBREC", id).await;
    }
    client
        .send(&Packet::Publish(publish_packet(
            "rm/t",
            b"x",
            QoS::ExactlyOnce,
            Some(3),
        )))
        .await;
    client.expect_disconnect(0x93).await;
    assert_broker_alive(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_inflight_limited_by_client_receive_maximum() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "slow-reader");
    connect.properties.receive_maximum = Some(2);
    let (mut sub, _) = RawClient::connect_with(broker.addr(), connect).await;
    sub.subscribe("window/t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), &client_id("window-pub")).await;
    for i in 0..3 {
        publisher
            .publish(
                "window/t",
                format!("m{i}").as_bytes(),
                QoS::AtLeastOnce,
                false,
            )
            .await;
    }
    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    assert_eq!(&first.payload[..], b"m0");
    assert_eq!(&second.payload[..], b"m1");
    sub.expect_no_publish(Duration::from_millis(500)).await;
    sub.ack(&first).await;
    let third = sub.recv_publish().await;
    assert_eq!(&third.payload[..], b"m2");
    assert!(!third.dup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_not_limited_by_receive_maximum() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "q0-window");
    connect.properties.receive_maximum = Some(1);
    let (mut sub, _) = RawClient::connect_with(broker.addr(), connect).await;
    sub.subscribe("q0w/t", QoS::AtMostOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), &client_id("q0w-pub")).await;
    for i in 0..5 {
        publisher
            .publish("q0w/t", format!("m{i}").as_bytes(), QoS::AtMostOnce, false)
            .await;
    }
    for i in 0..5 {
        let got = sub.recv_publish().await;
        assert_eq!(got.payload, format!("m{i}").into_bytes());
    }
}
