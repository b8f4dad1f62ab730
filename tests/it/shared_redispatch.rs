//! Shared subscriptions: what happens to a member's unfinished messages when it goes away
//! (socket loss, DISCONNECT, takeover, keep-alive timeout), QoS 2 staying with its member
//! [MQTT-4.8.2-4, -5], and rejected messages never re-sent [MQTT-4.8.2-6].

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;
use sharq::packet::{Packet, ProtocolVersion, QoS, ReasonCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    SocketDrop,
    Disconnect,
    Takeover,
    KeepAlive,
}

const N: u32 = 30;

async fn member_offline(broker: &TestBroker, filter: &str, client_id: &str) -> bool {
    broker
        .state()
        .router
        .group("g", filter)
        .map(|g| {
            g.member_stats()
                .iter()
                .any(|m| &*m.client_id == client_id && !m.online)
        })
        .unwrap_or(false)
}

async fn check_redispatch(version: ProtocolVersion, failure: Failure) {
    let broker = TestBroker::with(|_| {}).await;
    let addr = broker.addr();
    let keep_alive = if failure == Failure::KeepAlive { 2 } else { 0 };
    let a_opts = ConnectOpts::new(version, "a")
        .persistent()
        .keep_alive(keep_alive);
    let (mut a, _) = RawClient::connect_opts(addr, a_opts.clone()).await;
    a.subscribe("$share/g/r", QoS::AtLeastOnce).await;
    let a = Member::spawn(a, AckMode::Never);
    let mut others = Vec::new();
    for id in ["b", "c"] {
        let (mut c, _) = RawClient::connect_opts(addr, ConnectOpts::new(version, id)).await;
        c.subscribe("$share/g/r", QoS::AtLeastOnce).await;
        others.push(Member::spawn(c, AckMode::Ack));
    }
    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(version, "pub")).await;
    publisher.publish_seqs("r", 0..N, QoS::AtLeastOnce).await;
    wait_until(TIMEOUT, "all messages handed out", || {
        a.count() + others[0].count() + others[1].count() == N as usize
    })
    .await;
    let unacked = a.seqs();
    assert!(!unacked.is_empty(), "member a got nothing to leave unacked");
    let group = broker.state().router.group("g", "r").unwrap();

    let a_client = a.stop().await;
    let mut reconnected = None;
    match failure {
        Failure::SocketDrop => a_client.drop_socket(),
        Failure::Disconnect => {
            a_client
                .disconnect_and_wait(ReasonCode::NORMAL_DISCONNECTION)
                .await
        }
        Failure::Takeover => {
            let mut old = a_client;
            let (new, connack) = RawClient::connect_opts(addr, a_opts.clone()).await;
            assert!(connack.session_present, "takeover resumes the session");
            let seen = old.expect_closed_within(TIMEOUT).await;
            if version == V5 {
                assert!(
                    seen.iter().any(|p| matches!(p, Packet::Disconnect(d) if d.reason_code == ReasonCode::SESSION_TAKEN_OVER)),
                    "old connection gets DISCONNECT 0x8E, got {seen:?}"
                );
            }
            reconnected = Some(new);
        }
        Failure::KeepAlive => {
            // Keep the socket open and silent: the broker must give up after 1.5 × 2 s.
            let mut silent = a_client;
            let limit = Duration::from_secs(8);
            wait_until(limit, "keep-alive timeout takes member a offline", || {
                group
                    .member_stats()
                    .iter()
                    .any(|m| &*m.client_id == "a" && !m.online)
            })
            .await;
            silent.expect_closed_within(TIMEOUT).await;
        }
    }

    // Every message a had not acknowledged reaches b or c, exactly once overall.
    let b_c = [&others[0], &others[1]];
    let complete = poll_until(Duration::from_secs(5), || total(&b_c) >= N as usize).await;
    if !complete {
        // Say where the missing ones went: back to a itself?
        let mut back_to_a = Vec::new();
        if let Some(a) = reconnected.as_mut() {
            while let Event::Packet(Packet::Publish(p)) = a.next_event(QUIET).await {
                back_to_a.push(payload_seq(&p.payload));
            }
        }
        panic!(
            "{version:?} {failure:?}: a left {unacked:?} unacknowledged; b and c got {} of {N} \
             (b {:?}, c {:?}); the reconnected a received {back_to_a:?}",
            total(&b_c),
            others[0].seqs(),
            others[1].seqs()
        );
    }
    tokio::time::sleep(QUIET).await;
    assert_exactly_once(
        &format!("{version:?} {failure:?}: b and c after a's failure"),
        b_c.iter().flat_map(|m| m.seqs()),
        0..N,
    );
    assert_eq!(
        group.counters.redispatched.load(Ordering::Relaxed),
        unacked.len() as u64,
        "redispatched counter"
    );

    // a comes back with its session: it does not get them again.
    let mut a = match reconnected {
        Some(a) => a,
        None => {
            assert!(member_offline(&broker, "r", "a").await || failure == Failure::Takeover);
            let (a, connack) = RawClient::connect_opts(addr, a_opts.clone().keep_alive(0)).await;
            assert!(connack.session_present, "persistent session resumed");
            a
        }
    };
    a.expect_no_publish(QUIET).await;
    // And it is a member again: new messages are shared with it.
    let a = Member::spawn(a, AckMode::Ack);
    publisher
        .publish_seqs("r", 100..130, QoS::AtLeastOnce)
        .await;
    let all = [&a, &others[0], &others[1]];
    wait_until(TIMEOUT, "second round delivered", || {
        all.iter()
            .flat_map(|m| m.seqs())
            .filter(|&s| s >= 100)
            .count()
            >= 30
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_exactly_once(
        "second round",
        all.iter().flat_map(|m| m.seqs()).filter(|&s| s >= 100),
        100..130,
    );
    assert!(
        a.seqs().iter().all(|&s| s >= 100),
        "a got an old message back: {:?}",
        a.seqs()
    );
    assert!(a.count() > 0, "a rejoined the round robin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_redispatch_on_socket_drop_v5() {
    check_redispatch(V5, Failure::SocketDrop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_redispatch_on_socket_drop_v311() {
    check_redispatch(V3_1_1, Failure::SocketDrop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_redispatch_on_disconnect_v5() {
    check_redispatch(V5, Failure::Disconnect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_redispatch_on_disconnect_v311() {
    check_redispatch(V3_1_1, Failure::Disconnect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_redispatch_on_takeover_v5() {
    check_redispatch(V5, Failure::Takeover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_redispatch_on_takeover_v311() {
    check_redispatch(V3_1_1, Failure::Takeover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_redispatch_on_keep_alive_timeout_v5() {
    check_redispatch(V5, Failure::KeepAlive).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_redispatch_on_keep_alive_timeout_v311() {
    check_redispatch(V3_1_1, Failure::KeepAlive).await;
}

/// QoS 2 copies sent to a member stay with it across a disconnect (persistent session): on
/// reconnect it gets the PUBREL (after its PUBREC) or the PUBLISH again (before it), and no
/// other member ever gets them [MQTT-4.8.2-4].
async fn check_qos2_stays_with_member(version: ProtocolVersion) {
    let broker = TestBroker::with(|_| {}).await;
    let addr = broker.addr();
    let a_opts = ConnectOpts::new(version, "a").persistent();
    let (mut a, _) = RawClient::connect_opts(addr, a_opts.clone()).await;
    a.subscribe("$share/g/q2", QoS::ExactlyOnce).await;
    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(version, "pub")).await;
    publisher.publish_seqs("q2", 0..4, QoS::ExactlyOnce).await;

    let mut ids = Vec::new();
    for seq in 0..4 {
        let p = a.expect_publish().await;
        assert_eq!(payload_seq(&p.payload), seq);
        assert_eq!(p.qos, QoS::ExactlyOnce);
        ids.push(p.packet_id.unwrap());
    }
    // PUBREC for the first two only; the broker answers with PUBREL.
    for &id in &ids[..2] {
        a.pubrec(id, ReasonCode::SUCCESS).await;
    }
    for &id in &ids[..2] {
        match a.recv().await {
            Packet::PubRel(rel) => assert_eq!(rel.packet_id, id),
            other => panic!("expected PUBREL {id}, got {other:?}"),
        }
    }

    let (mut b, _) = RawClient::connect_opts(addr, ConnectOpts::new(version, "b")).await;
    b.subscribe("$share/g/q2", QoS::ExactlyOnce).await;
    let b = Member::spawn(b, AckMode::Ack);
    a.drop_socket();
    // Anything a's departure hands to b is on its way once the broker has settled it.
    broker.wait_session_offline("a").await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(b.seqs(), Vec::<u32>::new(), "QoS 2 copies must not go to b");

    let (mut a, connack) = RawClient::connect_opts(addr, a_opts).await;
    assert!(connack.session_present);
    let mut rels = Vec::new();
    let mut republished = Vec::new();
    while rels.len() + republished.len() < 4 {
        match a.recv().await {
            Packet::PubRel(rel) => rels.push(rel.packet_id),
            Packet::Publish(p) => {
                assert!(p.dup, "a resent PUBLISH carries DUP");
                assert_eq!(p.qos, QoS::ExactlyOnce);
                republished.push((p.packet_id.unwrap(), payload_seq(&p.payload)));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    rels.sort_unstable();
    assert_eq!(
        rels,
        ids[..2].to_vec(),
        "PUBREL resent for the PUBREC'd messages"
    );
    assert_eq!(
        republished,
        vec![(ids[2], 2), (ids[3], 3)],
        "unacknowledged QoS 2 PUBLISHes resent to the same member"
    );
    for &id in &rels {
        a.pubcomp(id).await;
    }
    for (id, _) in republished {
        a.pubrec(id, ReasonCode::SUCCESS).await;
        match a.recv().await {
            Packet::PubRel(rel) => assert_eq!(rel.packet_id, id),
            other => panic!("expected PUBREL {id}, got {other:?}"),
        }
        a.pubcomp(id).await;
    }
    a.expect_no_publish(QUIET).await;
    assert_eq!(b.seqs(), Vec::<u32>::new(), "QoS 2 copies must not go to b");

    // The group carries on with both.
    let a = Member::spawn(a, AckMode::Ack);
    publisher.publish_seqs("q2", 10..20, QoS::ExactlyOnce).await;
    wait_total(&[&a, &b], 10).await;
    assert_exactly_once("after", a.seqs().into_iter().chain(b.seqs()), 10..20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_qos2_completes_with_same_member_v5() {
    check_qos2_stays_with_member(V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_qos2_completes_with_same_member_v311() {
    check_qos2_stays_with_member(V3_1_1).await;
}

/// If the member's session ends before a QoS 2 delivery completes, the message is dropped,
/// never sent to another member [MQTT-4.8.2-5].
async fn check_qos2_dropped_on_session_end(version: ProtocolVersion, how: Failure) {
    let broker = TestBroker::with(|_| {}).await;
    let addr = broker.addr();
    // Clean Start/Clean Session with no expiry: the session ends with the connection.
    let (mut a, _) = RawClient::connect_opts(addr, ConnectOpts::new(version, "a")).await;
    a.subscribe("$share/g/q2", QoS::ExactlyOnce).await;
    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(version, "pub")).await;
    publisher.publish_seqs("q2", 0..2, QoS::ExactlyOnce).await;
    let first = a.expect_publish().await;
    let _second = a.expect_publish().await;
    a.pubrec(first.packet_id.unwrap(), ReasonCode::SUCCESS)
        .await;
    match a.recv().await {
        Packet::PubRel(_) => {}
        other => panic!("expected PUBREL, got {other:?}"),
    }
    let (mut b, _) = RawClient::connect_opts(addr, ConnectOpts::new(version, "b")).await;
    b.subscribe("$share/g/q2", QoS::ExactlyOnce).await;
    let b = Member::spawn(b, AckMode::Ack);
    match how {
        Failure::Disconnect => {
            a.disconnect_and_wait(ReasonCode::NORMAL_DISCONNECTION)
                .await
        }
        _ => a.drop_socket(),
    }
    // Until the broker has ended a's session, a is still a member and could be handed the
    // next messages (and drop them with its session, as QoS 2 requires).
    broker.wait_session_ended("a").await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        b.seqs(),
        Vec::<u32>::new(),
        "QoS 2 messages of an ended session must not go to another member"
    );
    // The group still works.
    publisher.publish_seqs("q2", 10..13, QoS::ExactlyOnce).await;
    wait_total(&[&b], 3).await;
    assert_eq!(b.seqs(), vec![10, 11, 12]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_qos2_dropped_when_session_ends_v5() {
    check_qos2_dropped_on_session_end(V5, Failure::Disconnect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_qos2_dropped_when_session_ends_socket_drop_v5() {
    check_qos2_dropped_on_session_end(V5, Failure::SocketDrop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_qos2_dropped_when_session_ends_v311() {
    check_qos2_dropped_on_session_end(V3_1_1, Failure::Disconnect).await;
}

/// PUBACK / PUBREC with a reason code >= 0x80: the message is discarded, never re-sent to
/// another member [MQTT-4.8.2-6], not even when the rejecting member later disconnects.
async fn check_rejected_not_redispatched(qos: QoS) {
    let broker = TestBroker::with(|_| {}).await;
    let addr = broker.addr();
    let mut rejecting = Vec::new();
    for (id, code) in [("r80", 0x80u8), ("r87", 0x87)] {
        let (mut c, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, id)).await;
        c.subscribe("$share/g/rej", qos).await;
        rejecting.push(Member::spawn(c, AckMode::Reject(code)));
    }
    let (mut ok, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "ok")).await;
    ok.subscribe("$share/g/rej", qos).await;
    let ok = Member::spawn(ok, AckMode::Ack);
    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "pub")).await;
    publisher.publish_seqs("rej", 0..N, qos).await;
    let all = [&rejecting[0], &rejecting[1], &ok];
    wait_total(&all, N as usize).await;
    assert_exactly_once(
        &format!("{qos:?}: rejected messages are not re-sent"),
        all.iter().flat_map(|m| m.seqs()),
        0..N,
    );
    assert!(rejecting[0].count() > 0 && rejecting[1].count() > 0);
    let ok_before = ok.seqs();

    // The rejecting members leave: nothing of theirs is left to redispatch.
    for member in rejecting {
        member.stop().await.drop_socket();
    }
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        ok.seqs(),
        ok_before,
        "rejected messages re-sent after their member left"
    );
    let group = broker.state().router.group("g", "rej").unwrap();
    assert_eq!(group.counters.redispatched.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_puback_failure_discards_message() {
    check_rejected_not_redispatched(QoS::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_pubrec_failure_discards_message() {
    check_rejected_not_redispatched(QoS::ExactlyOnce).await;
}
