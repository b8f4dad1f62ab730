//! Shared subscriptions: the group queue while every member is offline (backlog to the first
//! member back, bounded with a `dropped` counter), one member draining many groups' backlogs
//! through a small window, and the end of a group with its last member.

use std::sync::atomic::Ordering;

use crate::common::*;
use sharq::packet::{ProtocolVersion, QoS, ReasonCode};

async fn check_backlog(version: ProtocolVersion) {
    let broker = TestBroker::with(|_| {}).await;
    let addr = broker.addr();
    let a_opts = ConnectOpts::new(version, "a").persistent();
    let b_opts = ConnectOpts::new(version, "b").persistent();
    for opts in [&a_opts, &b_opts] {
        let (mut c, _) = RawClient::connect_opts(addr, opts.clone()).await;
        c.subscribe("$share/g/backlog", QoS::AtLeastOnce).await;
        c.disconnect_and_wait(ReasonCode::NORMAL_DISCONNECTION)
            .await;
        // A member the broker has not yet let go of would still be handed messages.
        broker.wait_session_offline(&opts.client_id).await;
    }
    let group = broker.state().router.group("g", "backlog").unwrap();
    assert_eq!(group.member_count(), 2);

    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(version, "pub")).await;
    publisher
        .publish_seqs("backlog", 0..20, QoS::AtLeastOnce)
        .await;
    assert_eq!(
        group.queued(),
        20,
        "all members offline: messages wait in the group"
    );

    // The first member back gets the whole backlog, in order.
    let (a, connack) = RawClient::connect_opts(addr, a_opts).await;
    assert!(connack.session_present);
    let a = Member::spawn(a, AckMode::Ack);
    wait_total(&[&a], 20).await;
    assert_eq!(a.seqs(), (0..20).collect::<Vec<_>>(), "backlog in order");
    assert_eq!(group.queued(), 0);

    // A second member returns: new messages are shared between both.
    let (b, connack) = RawClient::connect_opts(addr, b_opts).await;
    assert!(connack.session_present);
    let b = Member::spawn(b, AckMode::Ack);
    b_seen_nothing_old(&b).await;
    for seq in 100..120 {
        publisher
            .publish("backlog", &seq_payload(seq), QoS::AtLeastOnce, false)
            .await;
    }
    wait_total(&[&a, &b], 40).await;
    let new: Vec<u32> = a
        .seqs()
        .into_iter()
        .chain(b.seqs())
        .filter(|&s| s >= 100)
        .collect();
    assert_exactly_once("after the second member returned", new, 100..120);
    assert_eq!(
        b.count(),
        10,
        "round robin between the two: b got {:?}",
        b.seqs()
    );
}

async fn b_seen_nothing_old(b: &Member) {
    tokio::time::sleep(QUIET).await;
    assert_eq!(b.seqs(), Vec::<u32>::new(), "backlog already went to a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_group_queue_backlog_to_first_member_back_v5() {
    check_backlog(V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_group_queue_backlog_to_first_member_back_v311() {
    check_backlog(V3_1_1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_group_queue_is_bounded() {
    let broker = TestBroker::with(|c| c.shared.group_queue_max_messages = 10).await;
    let addr = broker.addr();
    let opts = ConnectOpts::new(V5, "a").persistent();
    let (mut a, _) = RawClient::connect_opts(addr, opts.clone()).await;
    a.subscribe("$share/g/bounded", QoS::AtLeastOnce).await;
    a.disconnect_and_wait(ReasonCode::NORMAL_DISCONNECTION)
        .await;
    broker.wait_session_offline("a").await;
    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "pub")).await;
    publisher
        .publish_seqs("bounded", 0..15, QoS::AtLeastOnce)
        .await;
    let group = broker.state().router.group("g", "bounded").unwrap();
    assert_eq!(group.queued(), 10);
    assert_eq!(group.counters.dropped.load(Ordering::Relaxed), 5);

    let (a, _) = RawClient::connect_opts(addr, opts).await;
    let a = Member::spawn(a, AckMode::Ack);
    wait_total(&[&a], 10).await;
    assert_eq!(
        a.seqs(),
        (0..10).collect::<Vec<_>>(),
        "the first 10 wait, the last 5 are dropped"
    );
    assert_eq!(group.counters.dropped.load(Ordering::Relaxed), 5);
}

/// The group ends when its last member leaves, by UNSUBSCRIBE or by the end of its session,
/// at once when it does not linger (`tests/shared_declared.rs` covers lingering).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_group_ends_with_last_member() {
    let broker = TestBroker::with(|c| c.shared.group_linger_secs = 0).await;
    let addr = broker.addr();
    let router = &broker.state().router;
    let (mut a, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "a")).await;
    a.subscribe("$share/g/end", QoS::AtLeastOnce).await;
    let (mut b, _) = RawClient::connect_opts(addr, ConnectOpts::new(V3_1_1, "b")).await;
    b.subscribe("$share/g/end", QoS::AtLeastOnce).await;
    let (mut p, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "p").persistent()).await;
    p.subscribe("$share/g/end", QoS::AtLeastOnce).await;
    assert_eq!(router.group("g", "end").unwrap().member_count(), 3);
    let before = router.subscription_count();

    a.unsubscribe(&["$share/g/end"]).await;
    assert_eq!(router.group("g", "end").unwrap().member_count(), 2);
    assert_eq!(router.subscription_count(), before - 1);

    // b's clean session ends with its connection.
    b.disconnect_and_wait(ReasonCode::NORMAL_DISCONNECTION)
        .await;
    wait_until(TIMEOUT, "b leaves the group", || {
        router.group("g", "end").map(|g| g.member_count()) == Some(1)
    })
    .await;

    // p is offline with its session: still a member, messages wait for it.
    p.disconnect_and_wait(ReasonCode::NORMAL_DISCONNECTION)
        .await;
    broker.wait_session_offline("p").await;
    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "pub")).await;
    publisher.publish_seqs("end", 0..3, QoS::AtLeastOnce).await;
    let group = router
        .group("g", "end")
        .expect("group lives while p's session does");
    assert_eq!(group.queued(), 3);

    // p comes back with a clean start: its old session ends, and with it the group and its
    // queue.
    let (mut p, connack) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "p")).await;
    assert!(!connack.session_present);
    wait_until(TIMEOUT, "group ends with its last member", || {
        router.group("g", "end").is_none()
    })
    .await;
    p.expect_no_publish(QUIET).await;
    assert_eq!(router.subscription_count(), 0);

    // Subscribing again makes a fresh group with nothing from the old queue.
    p.subscribe("$share/g/end", QoS::AtLeastOnce).await;
    p.expect_no_publish(QUIET).await;
    let fresh = router.group("g", "end").unwrap();
    assert!(!std::sync::Arc::ptr_eq(&fresh, &group));
    assert_eq!(fresh.queued(), 0);

    // Last member unsubscribes: the group ends too.
    p.unsubscribe(&["$share/g/end"]).await;
    assert!(router.group("g", "end").is_none());
}

/// A member of 60 groups, 40 of them with a backlog, comes back with a window of 2: each
/// acknowledgement pulls from a few of its waiting groups (found by walking the backlog index),
/// and in the end it has had every message once. A member of one group finds its backlog by
/// its own groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_drains_many_backlogged_groups_through_a_small_window() {
    const GROUPS: u32 = 60;
    const BACKLOGGED: u32 = 40;
    const EACH: u32 = 3;
    let broker = TestBroker::with(|_| {}).await;
    let addr = broker.addr();
    let mut opts = ConnectOpts::new(V5, "m").persistent();
    opts.receive_maximum = Some(2);
    let (mut m, _) = RawClient::connect_opts(addr, opts.clone()).await;
    let filters: Vec<String> = (0..GROUPS)
        .map(|i| format!("$share/g{i}/many/{i}"))
        .collect();
    let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
    m.subscribe_many(&refs, QoS::AtLeastOnce).await;
    m.disconnect_and_wait(ReasonCode::NORMAL_DISCONNECTION)
        .await;
    broker.wait_session_offline("m").await;

    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "pub")).await;
    for i in 0..BACKLOGGED {
        publisher
            .publish_seqs(
                &format!("many/{i}"),
                i * EACH..(i + 1) * EACH,
                QoS::AtLeastOnce,
            )
            .await;
    }
    let waiting: usize = (0..BACKLOGGED)
        .map(|i| {
            broker
                .state()
                .router
                .group(&format!("g{i}"), &format!("many/{i}"))
                .unwrap()
                .queued()
        })
        .sum();
    assert_eq!(waiting, (BACKLOGGED * EACH) as usize);

    // A member of one group among 41 waiting ones finds its own by its own groups.
    let solo_opts = ConnectOpts::new(V5, "solo").persistent();
    let (mut solo, _) = RawClient::connect_opts(addr, solo_opts.clone()).await;
    solo.subscribe("$share/solo/many/solo", QoS::AtLeastOnce)
        .await;
    solo.disconnect_and_wait(ReasonCode::NORMAL_DISCONNECTION)
        .await;
    broker.wait_session_offline("solo").await;
    publisher
        .publish_seqs("many/solo", 1000..1003, QoS::AtLeastOnce)
        .await;
    let (solo, _) = RawClient::connect_opts(addr, solo_opts).await;
    let solo = Member::spawn(solo, AckMode::Ack);
    wait_total(&[&solo], 3).await;
    assert_exactly_once("solo's backlog", solo.seqs(), 1000..1003);

    let (m, connack) = RawClient::connect_opts(addr, opts).await;
    assert!(connack.session_present);
    let m = Member::spawn(m, AckMode::Ack);
    wait_total(&[&m], (BACKLOGGED * EACH) as usize).await;
    assert_exactly_once("every backlog", m.seqs(), 0..BACKLOGGED * EACH);
}
