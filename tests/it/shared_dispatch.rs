//! Shared subscriptions: each group gets every message exactly once, spread round robin;
//! groups are independent of each other and of plain subscribers; a slow member does not stall
//! its group; per-group counters under `$SYS/broker/shared/<group>`.

use std::time::Duration;

use crate::common::*;
use sharq::packet::{Packet, ProtocolVersion, QoS};

const N: u32 = 300;

/// Publishes `range` in pipelined batches of 10, each batch fully acknowledged (or followed
/// by a PINGREQ round trip at QoS 0) before the next.
async fn publish_batched(
    publisher: &mut RawClient,
    topic: &str,
    range: std::ops::Range<u32>,
    qos: QoS,
) {
    let mut start = range.start;
    while start < range.end {
        let end = (start + 10).min(range.end);
        publisher.publish_seqs(topic, start..end, qos).await;
        start = end;
    }
}

async fn check_exactly_once_per_group(version: ProtocolVersion, qos: QoS) {
    // Windows larger than the stream: however far a member's acks lag behind, it never fills
    // its window and gets skipped, so the rotation is exact.
    let broker = TestBroker::with(|c| c.limits.max_inflight = 1000).await;
    let addr = broker.addr();
    let mut groups: Vec<Vec<Member>> = Vec::new();
    for group in ["ga", "gb"] {
        let mut members = Vec::new();
        for i in 0..3 {
            let (mut c, _) =
                RawClient::connect_opts(addr, ConnectOpts::new(version, &format!("{group}-{i}")))
                    .await;
            c.subscribe(&format!("$share/{group}/jobs/#"), QoS::AtLeastOnce)
                .await;
            members.push(Member::spawn(c, AckMode::Ack));
        }
        groups.push(members);
    }
    let (mut plain, _) = RawClient::connect_opts(addr, ConnectOpts::new(version, "plain")).await;
    plain.subscribe("jobs/#", QoS::AtLeastOnce).await;
    let plain = Member::spawn(plain, AckMode::Ack);

    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(version, "pub")).await;
    publish_batched(&mut publisher, "jobs/resize", 0..N, qos).await;

    let mut all: Vec<&Member> = groups.iter().flatten().collect();
    all.push(&plain);
    wait_total(&all, 3 * N as usize).await;

    for (name, members) in ["ga", "gb"].iter().zip(&groups) {
        assert_exactly_once(
            &format!("{version:?} {qos:?} group {name}"),
            members.iter().flat_map(|m| m.seqs()),
            0..N,
        );
        let counts: Vec<usize> = members.iter().map(|m| m.count()).collect();
        assert_eq!(
            counts,
            vec![100, 100, 100],
            "{version:?} {qos:?} group {name}: round robin with idle members"
        );
        let group = broker.state().router.group(name, "jobs/#").unwrap();
        let mut dispatched: Vec<u64> = group.member_stats().iter().map(|m| m.dispatched).collect();
        dispatched.sort_unstable();
        assert_eq!(dispatched, vec![100, 100, 100], "group {name} member_stats");
    }
    assert_eq!(plain.seqs(), (0..N).collect::<Vec<_>>(), "plain subscriber");
    for member in groups.iter().flatten() {
        for got in member.got() {
            assert_eq!(got.publish.qos, qos, "delivered at min(published, granted)");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_exactly_once_per_group_v5_qos0() {
    check_exactly_once_per_group(V5, QoS::AtMostOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_exactly_once_per_group_v5_qos1() {
    check_exactly_once_per_group(V5, QoS::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_exactly_once_per_group_v311_qos0() {
    check_exactly_once_per_group(V3_1_1, QoS::AtMostOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_exactly_once_per_group_v311_qos1() {
    check_exactly_once_per_group(V3_1_1, QoS::AtLeastOnce).await;
}

/// A session that is a member of two groups (and has a plain subscription) gets one copy per
/// group plus its plain copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_session_in_two_groups_gets_one_copy_per_group() {
    let broker = TestBroker::with(|_| {}).await;
    let addr = broker.addr();
    let (mut x, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "x")).await;
    x.subscribe("$share/g1/two", QoS::AtLeastOnce).await;
    x.subscribe("$share/g2/two", QoS::AtLeastOnce).await;
    let x = Member::spawn(x, AckMode::Ack);
    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "pub")).await;
    publisher.publish_seqs("two", 0..20, QoS::AtLeastOnce).await;
    wait_total(&[&x], 40).await;
    let counts = histogram(x.seqs());
    assert_eq!(counts.len(), 20);
    assert!(
        counts.values().all(|&c| c == 2),
        "one copy per group: {counts:?}"
    );
    let x = x.stop().await;

    // The same session with a plain subscription as well: plain copy + one per group.
    let mut x = x;
    x.subscribe("two", QoS::AtLeastOnce).await;
    let x = Member::spawn(x, AckMode::Ack);
    publisher
        .publish_seqs("two", 100..110, QoS::AtLeastOnce)
        .await;
    wait_total(&[&x], 30).await;
    let counts = histogram(x.seqs());
    assert_eq!(counts.len(), 10);
    assert!(
        counts.values().all(|&c| c == 3),
        "plain copy + one per group: {counts:?}"
    );
}

/// `$share/g/a/#` and `$share/g/b/#` are two groups; overlapping groups each deliver a copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_group_is_name_and_filter_and_overlaps_are_independent() {
    let broker = TestBroker::with(|_| {}).await;
    let addr = broker.addr();
    let (mut ma, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "ma")).await;
    ma.subscribe("$share/g/a/#", QoS::AtLeastOnce).await;
    let (mut mb, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "mb")).await;
    mb.subscribe("$share/g/b/#", QoS::AtLeastOnce).await;
    // Overlapping with $share/g/a/#: same name, another filter matching a/x.
    let (mut mo, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "mo")).await;
    mo.subscribe("$share/g/+/x", QoS::AtLeastOnce).await;
    // Another name, same filter as ma.
    let (mut mh, _) = RawClient::connect_opts(addr, ConnectOpts::new(V3_1_1, "mh")).await;
    mh.subscribe("$share/h/a/#", QoS::AtLeastOnce).await;

    let router = &broker.state().router;
    let ga = router.group("g", "a/#").unwrap();
    let gb = router.group("g", "b/#").unwrap();
    assert!(!std::sync::Arc::ptr_eq(&ga, &gb));
    assert_eq!(ga.member_count(), 1);
    assert_eq!(gb.member_count(), 1);

    let ma = Member::spawn(ma, AckMode::Ack);
    let mb = Member::spawn(mb, AckMode::Ack);
    let mo = Member::spawn(mo, AckMode::Ack);
    let mh = Member::spawn(mh, AckMode::Ack);
    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "pub")).await;
    publisher.publish_seqs("a/x", 0..10, QoS::AtLeastOnce).await;
    publisher
        .publish_seqs("b/y", 10..20, QoS::AtLeastOnce)
        .await;
    publisher
        .publish_seqs("b/x", 20..30, QoS::AtLeastOnce)
        .await;
    wait_total(&[&ma, &mb, &mo, &mh], 10 * 3 + 10 + 10 * 2).await;
    assert_exactly_once("$share/g/a/#", ma.seqs(), 0..10);
    assert_exactly_once("$share/h/a/#", mh.seqs(), 0..10);
    assert_exactly_once("$share/g/b/#", mb.seqs(), 10..30);
    let mut overlap = mo.seqs();
    overlap.sort_unstable();
    assert_eq!(
        overlap,
        (0..10).chain(20..30).collect::<Vec<_>>(),
        "$share/g/+/x"
    );
    assert_eq!(
        ga.counters
            .dispatched
            .load(std::sync::atomic::Ordering::Relaxed),
        10
    );
    assert_eq!(
        gb.counters
            .dispatched
            .load(std::sync::atomic::Ordering::Relaxed),
        20
    );
}

/// With max_inflight = 2, a member that never acknowledges holds at most 2 messages; the
/// others get everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_slow_member_does_not_stall_group() {
    let broker = TestBroker::with(|c| c.limits.max_inflight = 2).await;
    let addr = broker.addr();
    let (mut slow, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "slow")).await;
    slow.subscribe("$share/g/work", QoS::AtLeastOnce).await;
    let slow = Member::spawn(slow, AckMode::Never);
    let mut fast = Vec::new();
    for i in 0..2 {
        let (mut c, _) =
            RawClient::connect_opts(addr, ConnectOpts::new(V5, &format!("fast{i}"))).await;
        c.subscribe("$share/g/work", QoS::AtLeastOnce).await;
        fast.push(Member::spawn(c, AckMode::Ack));
    }
    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "pub")).await;
    publisher
        .publish_seqs("work", 0..60, QoS::AtLeastOnce)
        .await;
    let all = [&slow, &fast[0], &fast[1]];
    wait_total(&all, 60).await;
    assert_exactly_once("group", all.iter().flat_map(|m| m.seqs()), 0..60);
    assert!(
        slow.count() <= 2,
        "a member that never acks must hold at most max_inflight = 2, got {:?}",
        slow.seqs()
    );
    assert!(fast[0].count() > 0 && fast[1].count() > 0);
}

/// `$SYS/broker/shared/<group>` carries the per-member dispatch counts as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_sys_counters_per_group() {
    let broker = TestBroker::with(|c| c.server.sys_interval_secs = 1).await;
    let addr = broker.addr();
    let mut members = Vec::new();
    for i in 0..3 {
        let (mut c, _) =
            RawClient::connect_opts(addr, ConnectOpts::new(V5, &format!("w{i}"))).await;
        c.subscribe("$share/stats/s/#", QoS::AtLeastOnce).await;
        members.push(Member::spawn(c, AckMode::Ack));
    }
    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "pub")).await;
    publisher.publish_seqs("s/1", 0..30, QoS::AtLeastOnce).await;
    let refs: Vec<&Member> = members.iter().collect();
    wait_total(&refs, 30).await;

    let (mut sys, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "sys")).await;
    sys.subscribe("$SYS/broker/shared/#", QoS::AtMostOnce).await;
    // Retained documents may predate the publishes: read until one shows all 30 (bounded; a
    // bound on waiting for the 1 s publisher, not a claim about its punctuality).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let document = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match sys.next_event(left).await {
            Event::Packet(Packet::Publish(p)) => {
                assert_eq!(&*p.topic, "$SYS/broker/shared/stats");
                let json: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                let filter = &json["filters"][0];
                if filter["dispatched"] == 30 {
                    break json;
                }
            }
            Event::Packet(_) => {}
            other => panic!("no $SYS/broker/shared/stats document with 30 dispatched: {other:?}"),
        }
    };
    let filters = document["filters"].as_array().unwrap();
    assert_eq!(filters.len(), 1, "{document}");
    let filter = &filters[0];
    assert_eq!(filter["filter"], "s/#", "{document}");
    assert_eq!(filter["redispatched"], 0, "{document}");
    assert_eq!(filter["dropped"], 0, "{document}");
    // The default strategy is the Wasm round_robin, and it made every choice itself.
    assert_eq!(filter["strategy"]["name"], "round_robin", "{document}");
    assert_eq!(
        filter["strategy"]["pinned_to_fallback"], false,
        "{document}"
    );
    assert_eq!(filter["strategy"]["selections"], 30, "{document}");
    assert_eq!(filter["strategy"]["traps"], 0, "{document}");
    for (i, member) in members.iter().enumerate() {
        let id = format!("w{i}");
        let entry = filter["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["client_id"] == id.as_str())
            .unwrap_or_else(|| panic!("member {id} missing from {document}"));
        assert_eq!(
            entry["dispatched"],
            member.count() as u64,
            "member {id}: {document}"
        );
        assert_eq!(entry["dispatched"], 10, "round robin: {document}");
        assert_eq!(entry["online"], true);
    }
}
