//! Declared shared groups (`[[shared.declared]]`, `BrokerState::declare_group`): they exist and
//! collect messages without members. Lingering groups (`shared.group_linger_secs`): a group
//! whose last member left keeps its queue, and the copies its last member had not finished,
//! for the next member, then ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use sharq::config::DeclaredGroupConfig;
use sharq::packet::{QoS, ReasonCode};
use sharq::Config;

fn declare(config: &mut Config, name: &str, filter: &str) {
    config.shared.declared.push(DeclaredGroupConfig {
        name: name.to_owned(),
        filter: filter.to_owned(),
        ..Default::default()
    });
}

/// Publishes `seqs` at QoS 1 on `topic` and returns each PUBACK's reason code.
async fn publish_acked(
    publisher: &mut RawClient,
    topic: &str,
    seqs: std::ops::Range<u32>,
) -> Vec<ReasonCode> {
    let mut codes = Vec::new();
    for seq in seqs {
        let id = publisher
            .publish_nowait(topic, seq_payload(seq), QoS::AtLeastOnce, false)
            .await
            .expect("QoS 1 has a packet id");
        codes.push(publisher.recv_ack("PUBACK", id).await.reason_code);
    }
    codes
}

/// Receives `n` PUBLISHes, acknowledging each, and returns their sequence numbers in order.
async fn receive_seqs(member: &mut RawClient, n: usize) -> Vec<u32> {
    let mut seqs = Vec::new();
    for _ in 0..n {
        seqs.push(payload_seq(&member.recv_and_ack().await.payload));
    }
    seqs
}

/// A declared group queues what is published before anyone ever joined (the publisher hears
/// success, not "no matching subscribers"), and the first member gets all of it, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_group_collects_before_its_first_member() {
    let broker = TestBroker::with(|c| declare(c, "jobs", "jobs/#")).await;
    let group = broker
        .state()
        .router
        .group("jobs", "jobs/#")
        .expect("the declared group exists from start-up");
    assert!(group.is_declared());
    assert_eq!(group.member_count(), 0);

    // A real client library publishes, and reads every PUBACK's reason code.
    let (publisher, mut events) = rumqttc_v5(broker.addr(), "rumqttc-pub").await;
    for seq in 0..10u32 {
        publisher
            .publish(
                format!("jobs/{seq}"),
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                seq_payload(seq),
            )
            .await
            .unwrap();
    }
    for _ in 0..10 {
        let event = wait_event(&mut events, "PUBACK", |e| {
            matches!(
                e,
                rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(_))
            )
        })
        .await;
        if let rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(ack)) = event
        {
            assert_eq!(
                ack.reason,
                rumqttc::v5::mqttbytes::v5::PubAckReason::Success,
                "{ack:?}"
            );
        }
    }
    assert_eq!(group.queued(), 10);

    let mut member = RawClient::v5(broker.addr(), "first").await;
    member
        .subscribe("$share/jobs/jobs/#", QoS::AtLeastOnce)
        .await;
    assert_eq!(
        receive_seqs(&mut member, 10).await,
        (0..10).collect::<Vec<_>>()
    );
    member.expect_no_publish(QUIET).await;
    let same = broker.state().router.group("jobs", "jobs/#").unwrap();
    assert!(
        Arc::ptr_eq(&same, &group),
        "the member joined the declared group"
    );
    assert_eq!(group.queued(), 0);
}

/// `$queue/{filter}` subscribers reach the group declared with the name `$queue`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_queue_group_is_reached_by_queue_syntax() {
    let broker = TestBroker::with(|c| declare(c, "$queue", "tasks/+")).await;
    let mut publisher = RawClient::v5(broker.addr(), "pub").await;
    let codes = publish_acked(&mut publisher, "tasks/a", 0..3).await;
    assert_eq!(codes, vec![ReasonCode::SUCCESS; 3]);
    let mut member = RawClient::v311(broker.addr(), "q-worker").await;
    member.subscribe("$queue/tasks/+", QoS::AtLeastOnce).await;
    assert_eq!(receive_seqs(&mut member, 3).await, vec![0, 1, 2]);
}

/// A declared group stays when its last member leaves, by UNSUBSCRIBE or by the end of its
/// clean session, and keeps collecting for the next member (linger off: this is declaration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_group_keeps_collecting_after_its_last_member_leaves() {
    let broker = TestBroker::with(|c| {
        declare(c, "jobs", "jobs/#");
        c.shared.group_linger_secs = 0;
    })
    .await;
    let addr = broker.addr();
    let group = broker.state().router.group("jobs", "jobs/#").unwrap();
    let mut publisher = RawClient::v5(addr, "pub").await;

    let mut a = RawClient::v5(addr, "a").await;
    a.subscribe("$share/jobs/jobs/#", QoS::AtLeastOnce).await;
    publish_acked(&mut publisher, "jobs/x", 0..1).await;
    assert_eq!(receive_seqs(&mut a, 1).await, vec![0]);
    a.unsubscribe(&["$share/jobs/jobs/#"]).await;
    assert_eq!(group.member_count(), 0);

    let codes = publish_acked(&mut publisher, "jobs/x", 1..3).await;
    assert_eq!(codes, vec![ReasonCode::SUCCESS; 2]);
    assert_eq!(group.queued(), 2);

    let mut b = RawClient::v311(addr, "b").await;
    b.subscribe("$share/jobs/jobs/#", QoS::AtLeastOnce).await;
    assert_eq!(receive_seqs(&mut b, 2).await, vec![1, 2]);
    b.disconnect_and_wait(ReasonCode::NORMAL_DISCONNECTION)
        .await;
    broker.wait_session_ended("b").await;
    assert_eq!(group.member_count(), 0);

    let codes = publish_acked(&mut publisher, "jobs/y", 3..5).await;
    assert_eq!(codes, vec![ReasonCode::SUCCESS; 2]);
    let mut c = RawClient::v5(addr, "c").await;
    c.subscribe("$share/jobs/jobs/#", QoS::AtLeastOnce).await;
    assert_eq!(receive_seqs(&mut c, 2).await, vec![3, 4]);
    let same = broker.state().router.group("jobs", "jobs/#").unwrap();
    assert!(Arc::ptr_eq(&same, &group), "one group throughout");
}

/// The rolling restart of a clean-session worker: the only member disconnects with a QoS 1
/// message unacknowledged; that copy goes back to the lingering group, which also keeps what is
/// published before the next worker subscribes, and that worker gets it all, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lingering_group_keeps_the_unacked_copy_for_the_next_member() {
    let broker = TestBroker::with(|c| c.shared.group_linger_secs = 30).await;
    let addr = broker.addr();
    let mut publisher = RawClient::v5(addr, "pub").await;
    let mut old = RawClient::v5(addr, "worker-old").await;
    old.subscribe("$share/w/work/#", QoS::AtLeastOnce).await;
    publish_acked(&mut publisher, "work/1", 0..1).await;
    let unacked = old.expect_publish().await;
    assert_eq!(payload_seq(&unacked.payload), 0);
    // Disconnects without acknowledging: its clean session ends.
    old.disconnect_and_wait(ReasonCode::NORMAL_DISCONNECTION)
        .await;
    broker.wait_session_ended("worker-old").await;

    let group = broker
        .state()
        .router
        .group("w", "work/#")
        .expect("the group lingers");
    assert_eq!(group.member_count(), 0);
    let codes = publish_acked(&mut publisher, "work/2", 1..3).await;
    assert_eq!(codes, vec![ReasonCode::SUCCESS; 2]);
    assert_eq!(group.queued(), 3);

    let mut new = RawClient::v5(addr, "worker-new").await;
    new.subscribe("$share/w/work/#", QoS::AtLeastOnce).await;
    assert_eq!(receive_seqs(&mut new, 3).await, vec![0, 1, 2]);
    new.expect_no_publish(QUIET).await;
}

/// `group_linger_secs = 0` is the old behaviour: the group ends with its last member, the
/// unacknowledged copy is dropped, and the next member starts from nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_linger_ends_the_group_with_its_last_member() {
    let broker = TestBroker::with(|c| c.shared.group_linger_secs = 0).await;
    let addr = broker.addr();
    let mut publisher = RawClient::v5(addr, "pub").await;
    let mut old = RawClient::v5(addr, "worker-old").await;
    old.subscribe("$share/w/work/#", QoS::AtLeastOnce).await;
    publish_acked(&mut publisher, "work/1", 0..1).await;
    old.expect_publish().await;
    old.disconnect_and_wait(ReasonCode::NORMAL_DISCONNECTION)
        .await;
    broker.wait_session_ended("worker-old").await;
    assert!(broker.state().router.group("w", "work/#").is_none());
    let codes = publish_acked(&mut publisher, "work/2", 1..2).await;
    assert_eq!(codes, vec![ReasonCode::NO_MATCHING_SUBSCRIBERS]);

    let mut new = RawClient::v5(addr, "worker-new").await;
    new.subscribe("$share/w/work/#", QoS::AtLeastOnce).await;
    new.expect_no_publish(QUIET).await;
}

/// A lingering group ends once the linger has passed with no member: what is published after
/// that is not kept, and the next member starts a fresh group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lingering_group_ends_after_the_linger() {
    let broker = TestBroker::with(|c| c.shared.group_linger_secs = 1).await;
    let addr = broker.addr();
    let router = &broker.state().router;
    let mut publisher = RawClient::v5(addr, "pub").await;
    let mut a = RawClient::v5(addr, "a").await;
    a.subscribe("$share/g/t", QoS::AtLeastOnce).await;
    a.unsubscribe(&["$share/g/t"]).await;
    let left = Instant::now();
    let group = router.group("g", "t").expect("lingers at first");
    // Kept while it lingers.
    assert_eq!(
        publish_acked(&mut publisher, "t", 0..1).await,
        vec![ReasonCode::SUCCESS]
    );
    wait_until(TIMEOUT, "the lingering group ends", || {
        router.group("g", "t").is_none()
    })
    .await;
    assert!(
        left.elapsed() >= Duration::from_millis(900),
        "ended after {:?}, before its linger of 1 s",
        left.elapsed()
    );
    assert_eq!(
        group
            .counters
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "its queue went with it"
    );
    assert_eq!(
        publish_acked(&mut publisher, "t", 1..2).await,
        vec![ReasonCode::NO_MATCHING_SUBSCRIBERS]
    );
    let mut b = RawClient::v5(addr, "b").await;
    b.subscribe("$share/g/t", QoS::AtLeastOnce).await;
    b.expect_no_publish(QUIET).await;
    let fresh = router.group("g", "t").unwrap();
    assert!(!Arc::ptr_eq(&fresh, &group));
}

/// A member joining and leaving again while the group lingers re-arms the linger: the first
/// timer does not end the group early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoining_member_rearms_the_linger() {
    let broker = TestBroker::with(|c| c.shared.group_linger_secs = 2).await;
    let addr = broker.addr();
    let router = &broker.state().router;
    let mut a = RawClient::v5(addr, "a").await;
    a.subscribe("$share/g/t", QoS::AtLeastOnce).await;
    a.unsubscribe(&["$share/g/t"]).await;
    let first_left = Instant::now();
    let group = router.group("g", "t").unwrap();

    tokio::time::sleep(Duration::from_millis(1200)).await;
    a.subscribe("$share/g/t", QoS::AtLeastOnce).await;
    a.unsubscribe(&["$share/g/t"]).await;
    let second_left = Instant::now();

    // Past the first timer: had it ended the group, it would be gone now.
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(first_left.elapsed())).await;
    let still = router
        .group("g", "t")
        .expect("the first linger timer must not end a group that was rejoined");
    assert!(Arc::ptr_eq(&still, &group));
    wait_until(TIMEOUT, "the group ends after the second linger", || {
        router.group("g", "t").is_none()
    })
    .await;
    assert!(second_left.elapsed() >= Duration::from_millis(1900));
}

/// The admin face: declaring at run time validates, collects before members; undeclaring a
/// group without members ends it; with members it becomes an ordinary group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_and_undeclare_at_run_time() {
    let broker = TestBroker::with(|c| c.shared.group_linger_secs = 0).await;
    let addr = broker.addr();
    let state = broker.state().clone();
    assert!(state.declare_group("a/b", "x").is_err());
    assert!(state.declare_group("g", "x/#/y").is_err());
    assert!(state.router.groups().is_empty());

    let declaring = state.clone();
    let group = tokio::task::spawn_blocking(move || declaring.declare_group("g", "rt/#"))
        .await
        .unwrap()
        .unwrap();
    assert!(group.is_declared());
    let mut publisher = RawClient::v5(addr, "pub").await;
    assert_eq!(
        publish_acked(&mut publisher, "rt/1", 0..2).await,
        vec![ReasonCode::SUCCESS; 2]
    );
    assert_eq!(group.queued(), 2);
    assert!(state.undeclare_group("g", "rt/#"));
    assert!(state.router.group("g", "rt/#").is_none());
    assert!(
        !state.undeclare_group("g", "rt/#"),
        "nothing left to undeclare"
    );
    assert_eq!(
        publish_acked(&mut publisher, "rt/1", 2..3).await,
        vec![ReasonCode::NO_MATCHING_SUBSCRIBERS]
    );

    // With a member: undeclared, it lives as long as its members.
    let mut m = RawClient::v5(addr, "m").await;
    m.subscribe("$share/g/rt/#", QoS::AtLeastOnce).await;
    let ordinary = state.router.group("g", "rt/#").unwrap();
    assert!(!ordinary.is_declared());
    assert!(!state.undeclare_group("g", "rt/#"), "not declared");
    let declared = state.declare_group("g", "rt/#").unwrap();
    assert!(
        Arc::ptr_eq(&declared, &ordinary),
        "declaring keeps the group"
    );
    assert!(state.undeclare_group("g", "rt/#"));
    assert!(state.router.group("g", "rt/#").is_some());
    m.unsubscribe(&["$share/g/rt/#"]).await;
    assert!(state.router.group("g", "rt/#").is_none());
}
