//! Packets a client pipelines behind CONNECT, and streams cut any way TCP may cut them.
//!
//! MQTT lets a client send further packets before CONNACK arrives. These tests send whole
//! scenarios in single writes, and replay them through [`ChunkingProxy`], which cuts the
//! client's bytes into 1-byte writes, random pieces, or one coalesced write: the broker must
//! answer the same way whatever the cuts.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use bytestring::ByteString;
use proptest::prelude::*;
use sharq::packet::{
    Ack, Disconnect, DisconnectProperties, LastWill, Packet, ProtocolVersion, QoS, ReasonCode,
    Subscribe, SubscribeProperties, TopicSubscription, WillProperties,
};

fn subscribe(packet_id: u16, filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id,
        filters: vec![TopicSubscription {
            filter: ByteString::from(filter),
            options: sub_options(qos),
        }],
        properties: SubscribeProperties::default(),
    })
}

fn disconnect(code: u8) -> Packet {
    Packet::Disconnect(Disconnect {
        reason_code: ReasonCode(code),
        properties: DisconnectProperties::default(),
    })
}

/// The bytes of `packets`, back to back, as one client would write them.
fn script(version: ProtocolVersion, packets: &[Packet]) -> Vec<u8> {
    packets.iter().flat_map(|p| encode(p, version)).collect()
}

fn versions() -> [ProtocolVersion; 2] {
    [ProtocolVersion::V3_1_1, ProtocolVersion::V5]
}

/// Reads packets until `done` says the collection is complete; fails after [`TIMEOUT`].
async fn collect_until(
    client: &mut RawClient,
    what: &str,
    mut done: impl FnMut(&[Packet]) -> bool,
) -> Vec<Packet> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !done(&got) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.next_event(left).await {
            Event::Packet(packet) => got.push(packet),
            other => panic!("waiting for {what}: got {other:?} after {got:?}"),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_subscribe_in_one_write_get_their_suback() {
    let broker = TestBroker::start().await;
    for version in versions() {
        let id = client_id("pipe-sub");
        let mut client = RawClient::open(broker.addr(), version).await;
        let bytes = script(
            version,
            &[
                Packet::Connect(Box::new(connect_packet(version, &id))),
                subscribe(7, "pipe/t", QoS::AtLeastOnce),
            ],
        );
        client.send_bytes(&bytes).await;
        // Nothing more is sent: the SUBACK must come from the bytes already there.
        assert!(
            matches!(client.recv().await, Packet::ConnAck(c) if c.reason_code == ReasonCode::SUCCESS)
        );
        match client.recv().await {
            Packet::SubAck(suback) => {
                assert_eq!(suback.packet_id, 7);
                assert_eq!(suback.reason_codes, vec![ReasonCode::GRANTED_QOS_1]);
            }
            other => panic!("{version:?}: expected SUBACK, got {other:?}"),
        }
        let mut publisher = RawClient::v5(broker.addr(), &client_id("pipe-sub-pub")).await;
        publisher
            .publish("pipe/t", b"hello", QoS::AtLeastOnce, false)
            .await;
        assert_eq!(
            client.recv_publish().await.payload,
            Bytes::from_static(b"hello")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_publish_disconnect_in_one_write_reaches_the_subscriber() {
    let broker = TestBroker::start().await;
    let mut subscriber = RawClient::v5(broker.addr(), &client_id("pipe-pub-sub")).await;
    subscriber.subscribe("pipe/pub", QoS::AtLeastOnce).await;
    for version in versions() {
        let mut client = RawClient::open(broker.addr(), version).await;
        let bytes = script(
            version,
            &[
                Packet::Connect(Box::new(connect_packet(version, &client_id("pipe-pub")))),
                Packet::Publish(publish_packet(
                    "pipe/pub",
                    format!("{version:?}").as_bytes(),
                    QoS::AtLeastOnce,
                    Some(3),
                )),
                disconnect(0),
            ],
        );
        client.send_bytes(&bytes).await;
        // The publisher is answered before the connection ends: CONNACK, then PUBACK.
        let got = client.expect_closed().await;
        assert!(matches!(got.first(), Some(Packet::ConnAck(_))), "{got:?}");
        assert!(
            got.iter()
                .any(|p| matches!(p, Packet::PubAck(a) if a.packet_id == 3)),
            "{version:?}: no PUBACK before close: {got:?}"
        );
        let delivered = subscriber.recv_and_ack().await;
        assert_eq!(delivered.payload, format!("{version:?}").into_bytes());
    }
}

/// A message a watcher saw, by topic.
fn payloads_by_topic(packets: &[Packet]) -> HashMap<String, Bytes> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.topic.to_string(), p.payload.clone())),
            _ => None,
        })
        .collect()
}

/// CONNECT with a will, SUBSCRIBE, QoS 1 and QoS 2 PUBLISHes and a PINGREQ in one script, then
/// PUBREL, then an abnormal end that sends the will: every answer arrives whatever the cuts.
async fn raw_scenario(broker: &TestBroker, chunking: Chunking, version: ProtocolVersion) {
    let proxy = ChunkingProxy::start(broker.addr(), chunking).await;
    let tag = client_id("chunk");
    let mut watcher = RawClient::v5(broker.addr(), &format!("{tag}-watch")).await;
    watcher
        .subscribe(&format!("{tag}/will"), QoS::AtLeastOnce)
        .await;

    let mut connect = connect_packet(version, &tag);
    connect.will = Some(LastWill {
        topic: ByteString::from(format!("{tag}/will")),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    let mut client = RawClient::open(proxy.addr(), version).await;
    let bytes = script(
        version,
        &[
            Packet::Connect(Box::new(connect)),
            subscribe(1, &format!("{tag}/data/#"), QoS::ExactlyOnce),
            Packet::Publish(publish_packet(
                &format!("{tag}/data/1"),
                b"one",
                QoS::AtLeastOnce,
                Some(2),
            )),
            Packet::Publish(publish_packet(
                &format!("{tag}/data/2"),
                b"two",
                QoS::ExactlyOnce,
                Some(3),
            )),
            Packet::PingReq,
        ],
    );
    client.send_bytes(&bytes).await;
    let got = collect_until(&mut client, "the answers to the script", |got| {
        let has = |f: &dyn Fn(&Packet) -> bool| got.iter().any(f);
        has(&|p| matches!(p, Packet::ConnAck(_)))
            && has(&|p| matches!(p, Packet::SubAck(s) if s.packet_id == 1))
            && has(&|p| matches!(p, Packet::PubAck(a) if a.packet_id == 2))
            && has(&|p| matches!(p, Packet::PubRec(a) if a.packet_id == 3))
            && has(&|p| matches!(p, Packet::PingResp))
            && payloads_by_topic(got).len() == 2
    })
    .await;
    assert!(
        matches!(got.first(), Some(Packet::ConnAck(c)) if c.reason_code == ReasonCode::SUCCESS),
        "{got:?}"
    );
    let delivered = payloads_by_topic(&got);
    assert_eq!(
        delivered[&format!("{tag}/data/1")],
        Bytes::from_static(b"one")
    );
    assert_eq!(
        delivered[&format!("{tag}/data/2")],
        Bytes::from_static(b"two")
    );

    // Finish both directions' QoS flows, in one write again.
    let mut finish = vec![Packet::PubRel(Ack::new(3))];
    for packet in &got {
        if let Packet::Publish(p) = packet {
            match p.qos {
                QoS::AtLeastOnce => finish.push(Packet::PubAck(Ack::new(p.packet_id.unwrap()))),
                QoS::ExactlyOnce => finish.push(Packet::PubRec(Ack::new(p.packet_id.unwrap()))),
                QoS::AtMostOnce => {}
            }
        }
    }
    client.send_bytes(&script(version, &finish)).await;
    let got = collect_until(&mut client, "PUBCOMP and PUBREL", |got| {
        got.iter()
            .any(|p| matches!(p, Packet::PubComp(a) if a.packet_id == 3))
            && got.iter().any(|p| matches!(p, Packet::PubRel(_)))
    })
    .await;
    for packet in &got {
        if let Packet::PubRel(rel) = packet {
            client.send(&Packet::PubComp(Ack::new(rel.packet_id))).await;
        }
    }

    // End without a normal DISCONNECT: v5 asks for the will explicitly (0x04), 3.1.1 drops.
    if version.is_v5() {
        client.send(&disconnect(0x04)).await;
    }
    drop(client);
    let will = watcher.recv_and_ack().await;
    assert_eq!(will.payload, Bytes::from_static(b"gone"));
}

/// Two shared-group members and a publisher, each pipelining its whole session: every message
/// reaches exactly one member.
async fn shared_scenario(broker: &TestBroker, chunking: Chunking, version: ProtocolVersion) {
    let proxy = ChunkingProxy::start(broker.addr(), chunking).await;
    let tag = client_id("chunk-share");
    let filter = format!("$share/{tag}/{tag}/jobs");
    let mut members = Vec::new();
    for m in 0..2 {
        let mut member = RawClient::open(proxy.addr(), version).await;
        member
            .send_bytes(&script(
                version,
                &[
                    Packet::Connect(Box::new(connect_packet(version, &format!("{tag}-m{m}")))),
                    subscribe(1, &filter, QoS::AtLeastOnce),
                ],
            ))
            .await;
        collect_until(&mut member, "CONNACK and SUBACK", |got| {
            got.iter().any(|p| matches!(p, Packet::SubAck(_)))
        })
        .await;
        members.push(member);
    }
    const COUNT: u16 = 20;
    let mut packets = vec![Packet::Connect(Box::new(connect_packet(
        version,
        &format!("{tag}-pub"),
    )))];
    for i in 1..=COUNT {
        packets.push(Packet::Publish(publish_packet(
            &format!("{tag}/jobs"),
            format!("{i}").as_bytes(),
            QoS::AtLeastOnce,
            Some(i),
        )));
    }
    packets.push(disconnect(0));
    let mut publisher = RawClient::open(proxy.addr(), version).await;
    publisher.send_bytes(&script(version, &packets)).await;
    let acks = publisher.expect_closed().await;
    let acked = acks
        .iter()
        .filter(|p| matches!(p, Packet::PubAck(_)))
        .count();
    assert_eq!(
        acked,
        usize::from(COUNT),
        "every PUBLISH acknowledged: {acks:?}"
    );

    let mut seen: Vec<u16> = Vec::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while seen.len() < usize::from(COUNT) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {seen:?} of {COUNT} delivered"
        );
        for member in &mut members {
            if let Event::Packet(Packet::Publish(p)) =
                member.next_event(Duration::from_millis(50)).await
            {
                member.ack(&p).await;
                seen.push(std::str::from_utf8(&p.payload).unwrap().parse().unwrap());
            }
        }
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=COUNT).collect::<Vec<_>>(),
        "each message exactly once"
    );
    for member in &mut members {
        member.expect_no_publish(QUIET).await;
    }
}

/// rumqttc (a real client library) through the proxy: subscribe, QoS 1 and 2 to itself.
async fn rumqttc_scenario(broker: &TestBroker, chunking: Chunking) {
    let proxy = ChunkingProxy::start(broker.addr(), chunking).await;
    let tag = client_id("chunk-rumqttc");
    let (client, mut events) = rumqttc_v5(proxy.addr(), &tag).await;
    let topic = format!("{tag}/t");
    client
        .subscribe(&topic, rumqttc::v5::mqttbytes::QoS::ExactlyOnce)
        .await
        .unwrap();
    wait_event(&mut events, "SUBACK", |e| {
        matches!(
            e,
            rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::SubAck(_))
        )
    })
    .await;
    for (qos, payload) in [
        (rumqttc::v5::mqttbytes::QoS::AtLeastOnce, "q1"),
        (rumqttc::v5::mqttbytes::QoS::ExactlyOnce, "q2"),
    ] {
        client.publish(&topic, qos, false, payload).await.unwrap();
        let event = wait_event(&mut events, "the message back", |e| {
            matches!(e, rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(p)) if p.payload == payload.as_bytes())
        })
        .await;
        drop(event);
    }
    client.disconnect().await.unwrap();
}

fn chunkings() -> impl Strategy<Value = Chunking> {
    prop_oneof![
        Just(Chunking::OneByte),
        (any::<u64>(), 1usize..64).prop_map(|(seed, max)| Chunking::Random { seed, max }),
        (5u64..40).prop_map(|ms| Chunking::Coalesce {
            window: Duration::from_millis(ms)
        }),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn raw_flows_survive_any_chunking(chunking in chunkings(), v5 in any::<bool>()) {
        let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V3_1_1 };
        runtime().block_on(async {
            let broker = TestBroker::start().await;
            raw_scenario(&broker, chunking, version).await;
        });
    }

    #[test]
    fn shared_groups_survive_any_chunking(chunking in chunkings(), v5 in any::<bool>()) {
        let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V3_1_1 };
        runtime().block_on(async {
            let broker = TestBroker::start().await;
            shared_scenario(&broker, chunking, version).await;
        });
    }

    #[test]
    fn rumqttc_survives_any_chunking(chunking in chunkings()) {
        runtime().block_on(async {
            let broker = TestBroker::start().await;
            rumqttc_scenario(&broker, chunking).await;
        });
    }
}

/// A CONNECT that arrives one byte at a time is read once: a large one (a big will payload)
/// still connects promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_connect_in_one_byte_pieces() {
    let broker = TestBroker::start().await;
    let proxy = ChunkingProxy::start(broker.addr(), Chunking::OneByte).await;
    let mut connect = connect_packet(ProtocolVersion::V5, &client_id("big-connect"));
    connect.will = Some(LastWill {
        topic: ByteString::from("big/will"),
        payload: Bytes::from(vec![b'w'; 32 * 1024]),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    let (mut client, connack) = RawClient::connect_with(proxy.addr(), connect).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    client.ping().await;
}
