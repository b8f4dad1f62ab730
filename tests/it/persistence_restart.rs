//! What the durable store gives back after a restart of the broker (in process, on the same
//! directory): sessions with Session Present and their subscriptions, queued and in-flight
//! messages, inbound QoS 2 state, retained messages with their expiry counted across the
//! downtime, session expiry across the downtime, declared groups' queues, and backlogs larger
//! than the memory window, drained in order. `kill -9` is in `persistence_crash.rs`.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use bytestring::ByteString;
use sharq::packet::{Ack, Packet, ProtocolVersion, Publish, PublishProperties, QoS, ReasonCode};
use sharq::Config;

async fn start(dir: &Path, configure: impl FnOnce(&mut Config)) -> TestBroker {
    let path = dir.to_owned();
    TestBroker::with(|c| {
        c.storage.dir = path;
        configure(c);
    })
    .await
}

async fn persistent(
    broker: &TestBroker,
    client_id: &str,
    clean: bool,
    expiry: u32,
) -> (RawClient, bool) {
    let mut opts = ConnectOpts::new(ProtocolVersion::V5, client_id);
    opts.clean_start = clean;
    opts.session_expiry = Some(expiry);
    let (client, connack) = RawClient::connect_opts(broker.addr(), opts).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    (client, connack.session_present)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_subscriptions_and_queues_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let (mut worker, _) = persistent(&broker, "worker", true, 3600).await;
    worker
        .subscribe_with(vec![("a/#", sub_options(QoS::ExactlyOnce))], Some(5))
        .await;
    worker.subscribe("$share/g/j/#", QoS::AtLeastOnce).await;
    worker.disconnect().await;
    broker.wait_session_offline("worker").await;

    let mut publisher = RawClient::v5(broker.addr(), "publisher").await;
    for seq in 1..=20u32 {
        let qos = if seq % 2 == 0 {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        };
        publisher
            .publish("a/x", &seq_payload(seq), qos, false)
            .await;
    }
    publisher
        .publish_seqs("j/1", 101..=105, QoS::AtLeastOnce)
        .await;
    publisher.disconnect().await;
    broker.shutdown().await;
    drop(broker);

    let broker = start(dir.path(), |_| {}).await;
    assert!(broker.state().router.group("g", "j/#").is_some());
    let (mut worker, present) = persistent(&broker, "worker", false, 3600).await;
    assert!(present, "Session Present after the restart");
    let mut plain = Vec::new();
    let mut shared = Vec::new();
    for _ in 0..25 {
        let publish = worker.recv_and_ack().await;
        let seq = payload_seq(&publish.payload);
        if publish.topic == "a/x" {
            assert_eq!(publish.properties.subscription_identifiers, vec![5]);
            let expected = if seq % 2 == 0 {
                QoS::ExactlyOnce
            } else {
                QoS::AtLeastOnce
            };
            assert_eq!(publish.qos, expected);
            plain.push(seq);
        } else {
            shared.push(seq);
        }
    }
    assert_eq!(plain, (1..=20).collect::<Vec<_>>(), "in publish order");
    assert_eq!(shared, (101..=105).collect::<Vec<_>>());
    worker.expect_no_publish(QUIET).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_in_flight_both_ways_resume_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let (mut receiver, _) = persistent(&broker, "receiver", true, 3600).await;
    receiver.subscribe("t", QoS::ExactlyOnce).await;
    let (mut sender, _) = persistent(&broker, "sender", true, 3600).await;

    // Outbound: a QoS 1 message left unacknowledged, a QoS 2 one stopped after PUBREC.
    sender.publish("t", b"one", QoS::AtLeastOnce, false).await;
    let first = receiver.recv_publish().await;
    sender
        .publish_full(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: ByteString::from("t"),
            packet_id: None,
            payload: Bytes::from_static(b"two"),
            properties: PublishProperties::default(),
        })
        .await;
    let second = receiver.recv_publish().await;
    let second_id = second.packet_id.unwrap();
    receiver.send(&Packet::PubRec(Ack::new(second_id))).await;
    receiver.recv_ack("PUBREL", second_id).await;

    // Inbound: a QoS 2 PUBLISH acknowledged with PUBREC, not yet released.
    sender
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: ByteString::from("t"),
            packet_id: Some(900),
            payload: Bytes::from_static(b"three"),
            properties: PublishProperties::default(),
        }))
        .await;
    assert_eq!(
        sender.recv_ack("PUBREC", 900).await.reason_code,
        ReasonCode::SUCCESS
    );
    let third = receiver.recv_publish().await;
    assert_eq!(third.payload, "three");
    receiver.ack(&third).await;
    receiver.drop_socket();
    sender.drop_socket();
    broker.wait_session_offline("receiver").await;
    broker.wait_session_offline("sender").await;
    broker.shutdown().await;
    drop(broker);

    let broker = start(dir.path(), |_| {}).await;
    let (mut receiver, present) = persistent(&broker, "receiver", false, 3600).await;
    assert!(present);
    // Resent in order: the QoS 1 PUBLISH again (DUP, same packet id), then the PUBREL.
    let again = receiver.recv_publish().await;
    assert!(again.dup, "a resent PUBLISH carries DUP");
    assert_eq!(again.packet_id, first.packet_id);
    assert_eq!(again.payload, "one");
    receiver
        .send(&Packet::PubAck(Ack::new(again.packet_id.unwrap())))
        .await;
    receiver.recv_ack("PUBREL", second_id).await;
    receiver.send(&Packet::PubComp(Ack::new(second_id))).await;

    let (mut sender, present) = persistent(&broker, "sender", false, 3600).await;
    assert!(present);
    // The sender resends its PUBLISH (it saw the PUBREC, but may resend): acknowledged again,
    // not routed again; then released.
    sender
        .send(&Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: ByteString::from("t"),
            packet_id: Some(900),
            payload: Bytes::from_static(b"three"),
            properties: PublishProperties::default(),
        }))
        .await;
    sender.recv_ack("PUBREC", 900).await;
    sender.send(&Packet::PubRel(Ack::new(900))).await;
    assert_eq!(
        sender.recv_ack("PUBCOMP", 900).await.reason_code,
        ReasonCode::SUCCESS
    );
    receiver.expect_no_publish(QUIET).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_and_session_expiry_count_the_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut publisher = RawClient::v5(broker.addr(), "publisher").await;
    for (topic, expiry) in [("r/1", None), ("r/2", Some(1)), ("r/3", Some(100))] {
        publisher
            .publish_full(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: ByteString::from(topic),
                packet_id: None,
                payload: Bytes::from(topic),
                properties: PublishProperties {
                    message_expiry_interval: expiry,
                    ..PublishProperties::default()
                },
            })
            .await;
    }
    publisher.disconnect().await;
    let (short, _) = persistent(&broker, "short", true, 1).await;
    short.disconnect().await;
    let (long, _) = persistent(&broker, "long", true, 600).await;
    long.disconnect().await;
    broker.wait_session_offline("long").await;
    broker.shutdown().await;
    drop(broker);
    // Down for longer than r/2's expiry and "short"'s session expiry.
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let broker = start(dir.path(), |_| {}).await;
    assert_eq!(broker.state().retained.len(), 2);
    let mut subscriber = RawClient::v5(broker.addr(), "subscriber").await;
    subscriber.subscribe("r/#", QoS::AtLeastOnce).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let publish = subscriber.recv_and_ack().await;
        assert!(publish.retain);
        if publish.topic == "r/3" {
            let left = publish.properties.message_expiry_interval.unwrap();
            assert!(
                (90..=98).contains(&left),
                "expiry counted across the downtime: {left}"
            );
        }
        got.push(publish.topic.to_string());
    }
    got.sort();
    assert_eq!(got, vec!["r/1", "r/3"]);
    subscriber.expect_no_publish(QUIET).await;
    let (_, present) = persistent(&broker, "short", false, 1).await;
    assert!(
        !present,
        "a session whose expiry ran out while the broker was down is gone"
    );
    let (_, present) = persistent(&broker, "long", false, 600).await;
    assert!(present);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_group_keeps_what_it_collected_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let declare = |c: &mut Config| {
        c.shared.declared = vec![sharq::config::DeclaredGroupConfig {
            name: "jobs".to_owned(),
            filter: "jobs/#".to_owned(),
            ..Default::default()
        }];
    };
    let broker = start(dir.path(), declare).await;
    let mut publisher = RawClient::v5(broker.addr(), "publisher").await;
    publisher
        .publish_seqs("jobs/a", 1..=10, QoS::AtLeastOnce)
        .await;
    publisher.disconnect().await;
    broker.shutdown().await;
    drop(broker);

    let broker = start(dir.path(), declare).await;
    assert_eq!(
        broker
            .state()
            .router
            .group("jobs", "jobs/#")
            .unwrap()
            .queued(),
        10
    );
    let mut member = RawClient::v5(broker.addr(), "member").await;
    member
        .subscribe("$share/jobs/jobs/#", QoS::AtLeastOnce)
        .await;
    let mut seqs = Vec::new();
    for _ in 0..10 {
        seqs.push(payload_seq(&member.recv_and_ack().await.payload));
    }
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    broker.shutdown().await;
}

/// Two publishers fill an offline group and an offline session far past the memory window:
/// memory holds the window, the rest waits on disk, and both drain completely and in each
/// publisher's order, before and after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_the_memory_window_drains_in_order() {
    const WINDOW: usize = 20;
    const EACH: u32 = 300;
    let dir = tempfile::tempdir().unwrap();
    let window = |c: &mut Config| c.storage.memory_window_messages = WINDOW;
    let broker = start(dir.path(), window).await;
    let (mut member, _) = persistent(&broker, "member", true, 3600).await;
    member.subscribe("$share/b/bk/#", QoS::AtLeastOnce).await;
    member.disconnect().await;
    let (mut reader, _) = persistent(&broker, "reader", true, 3600).await;
    reader.subscribe("bk/#", QoS::AtLeastOnce).await;
    reader.disconnect().await;
    broker.wait_session_offline("reader").await;

    let mut p1 = RawClient::v5(broker.addr(), "p1").await;
    let mut p2 = RawClient::v5(broker.addr(), "p2").await;
    for chunk in 0..EACH / 50 {
        let seqs = chunk * 50 + 1..=chunk * 50 + 50;
        p1.publish_seqs("bk/p1", seqs.clone(), QoS::AtLeastOnce)
            .await;
        p2.publish_seqs("bk/p2", seqs, QoS::AtLeastOnce).await;
    }
    let total = 2 * EACH as usize;
    let check_window = |broker: &TestBroker| {
        let group = broker.state().router.group("b", "bk/#").unwrap();
        assert_eq!(group.queued(), total);
        assert!(
            group.queued_in_memory() <= WINDOW,
            "{}",
            group.queued_in_memory()
        );
        let session = broker.state().session("reader").unwrap();
        assert_eq!(session.queued(), total);
        assert!(
            session.queued_in_memory() <= WINDOW,
            "{}",
            session.queued_in_memory()
        );
    };
    check_window(&broker);
    broker.shutdown().await;
    drop(broker);

    let broker = start(dir.path(), window).await;
    check_window(&broker);
    for client_id in ["member", "reader"] {
        let (mut client, present) = persistent(&broker, client_id, false, 3600).await;
        assert!(present);
        let mut last = [0u32; 2];
        for _ in 0..total {
            let publish = client.recv_and_ack().await;
            let which = usize::from(publish.topic == "bk/p2");
            let seq = payload_seq(&publish.payload);
            assert_eq!(
                seq,
                last[which] + 1,
                "{client_id}: {} out of order",
                publish.topic
            );
            last[which] = seq;
        }
        assert_eq!(last, [EACH, EACH]);
        client.expect_no_publish(QUIET).await;
    }
    broker.shutdown().await;
}

/// A group declared at run time (what the admin API will do) stays declared across a restart,
/// with what it collected; one undeclared at run time does not come back declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_declared_at_run_time_is_declared_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let state = broker.state().clone();
    tokio::task::spawn_blocking(move || {
        state.declare_group("runtime", "rt/#").unwrap();
        state.declare_group("gone", "gone/#").unwrap();
        assert!(state.undeclare_group("gone", "gone/#"));
    })
    .await
    .unwrap();
    let mut publisher = RawClient::v5(broker.addr(), "publisher").await;
    publisher
        .publish_seqs("rt/a", 1..=5, QoS::AtLeastOnce)
        .await;
    publisher.disconnect().await;
    broker.shutdown().await;
    drop(broker);

    let broker = start(dir.path(), |_| {}).await;
    let group = broker.state().router.group("runtime", "rt/#").unwrap();
    assert!(group.is_declared());
    assert_eq!(group.queued(), 5);
    assert!(broker.state().router.group("gone", "gone/#").is_none());
    broker.shutdown().await;
}
