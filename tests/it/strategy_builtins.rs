//! Every built-in dispatch strategy through the real broker over TCP, with real MQTT clients,
//! each group configured by `[[shared.groups]]`: round_robin exact, random within statistical
//! bounds, sticky, hash_clientid / hash_topic affinity and bounded movement on join,
//! hash_topic_levels per device, least_inflight avoiding a member that does not ack, weighted
//! by params and by SUBSCRIBE user property, failover active/standby, and
//! round_robin_per_publisher rotating per publisher. Each also checks `strategy_label()`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use crate::common::*;
use bytestring::ByteString;
use sharq::packet::{
    Packet, QoS, ReasonCode, Subscribe, SubscribeProperties, SubscriptionOptions, TopicSubscription,
};
use sharq::Config;

/// Starts a broker whose `[shared]` section is `shared_toml` (a TOML fragment starting with
/// `[shared]`), with `max_inflight` per client.
async fn broker_with(shared_toml: &str, max_inflight: u16) -> TestBroker {
    let parsed = Config::from_toml(shared_toml, "test").expect("test config");
    TestBroker::with(|config| {
        config.shared = parsed.shared;
        config.shared.plugin_deadline_ms = TEST_PLUGIN_DEADLINE_MS;
        config.limits.max_inflight = max_inflight;
    })
    .await
}

/// A v5 member that subscribes to `filter` at QoS 1 and acknowledges by `mode`.
async fn member(addr: SocketAddr, client_id: &str, filter: &str, mode: AckMode) -> Member {
    let (mut client, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, client_id)).await;
    client.subscribe(filter, QoS::AtLeastOnce).await;
    Member::spawn(client, mode)
}

/// Like [`member`], stating its weight with the SUBSCRIBE user property `weight`.
async fn weighted_member(addr: SocketAddr, client_id: &str, filter: &str, weight: u32) -> Member {
    let (mut client, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, client_id)).await;
    let packet_id = client.packet_id();
    client
        .send_checked(&Packet::Subscribe(Subscribe {
            packet_id,
            filters: vec![TopicSubscription {
                filter: ByteString::from(filter),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            }],
            properties: SubscribeProperties {
                subscription_identifier: None,
                user_properties: vec![(
                    ByteString::from("weight"),
                    ByteString::from(weight.to_string()),
                )],
            },
        }))
        .await;
    match client.recv().await {
        Packet::SubAck(ack) => {
            assert_eq!(ack.packet_id, packet_id);
            assert_eq!(ack.reason_codes, vec![ReasonCode(1)]);
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    Member::spawn(client, AckMode::Ack)
}

async fn publisher(addr: SocketAddr, client_id: &str) -> RawClient {
    RawClient::connect_opts(addr, ConnectOpts::new(V5, client_id))
        .await
        .0
}

/// Publishes each (topic, seq) at QoS 1, awaiting its PUBACK before the next.
async fn publish_each(client: &mut RawClient, messages: impl IntoIterator<Item = (String, u32)>) {
    for (topic, seq) in messages {
        client
            .publish(&topic, &seq_payload(seq), QoS::AtLeastOnce, false)
            .await;
    }
}

fn label(broker: &TestBroker, group: &str, filter: &str) -> String {
    broker
        .state()
        .router
        .group(group, filter)
        .expect("group exists")
        .strategy_label()
}

fn spills(broker: &TestBroker, group: &str, filter: &str) -> u64 {
    let group = broker.state().router.group(group, filter).unwrap();
    group.strategy_counters.spills.load(Ordering::Relaxed)
}

/// For each topic, the set of members (by index) that received a message on it.
fn owners_by_topic(members: &[&Member]) -> BTreeMap<String, BTreeSet<usize>> {
    let mut owners: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for (index, member) in members.iter().enumerate() {
        for got in member.got() {
            owners
                .entry(got.publish.topic.to_string())
                .or_default()
                .insert(index);
        }
    }
    owners
}

/// The single owner of each topic; panics if a topic reached more than one member.
fn single_owner(what: &str, owners: &BTreeMap<String, BTreeSet<usize>>) -> BTreeMap<String, usize> {
    owners
        .iter()
        .map(|(topic, set)| {
            assert_eq!(
                set.len(),
                1,
                "{what}: topic {topic} reached members {set:?}"
            );
            (topic.clone(), *set.iter().next().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_exact() {
    let broker = broker_with(
        "[shared]\n[[shared.groups]]\nname = \"rr\"\nstrategy = \"round_robin\"\n",
        // Larger than the stream: a member whose acks lag can never fill its window and be
        // skipped, which would be correct but not an exact rotation.
        1000,
    )
    .await;
    let addr = broker.addr();
    let a = member(addr, "rr-a", "$share/rr/jobs/#", AckMode::Ack).await;
    let b = member(addr, "rr-b", "$share/rr/jobs/#", AckMode::Ack).await;
    let c = member(addr, "rr-c", "$share/rr/jobs/#", AckMode::Ack).await;
    assert_eq!(label(&broker, "rr", "jobs/#"), "round_robin");
    let mut p = publisher(addr, "rr-pub").await;
    publish_each(&mut p, (0..300).map(|s| ("jobs/x".to_owned(), s))).await;
    wait_total(&[&a, &b, &c], 300).await;
    assert_exactly_once(
        "round_robin",
        [&a, &b, &c].iter().flat_map(|m| m.seqs()),
        0..300,
    );
    for m in [&a, &b, &c] {
        assert_eq!(m.count(), 100);
        // An exact rotation: each member gets every third message.
        let seqs = m.seqs();
        let residue = seqs[0] % 3;
        assert!(seqs.iter().all(|s| s % 3 == residue), "{seqs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_is_within_statistical_bounds() {
    let broker = broker_with(
        "[shared]\n[[shared.groups]]\nname = \"rnd\"\nstrategy = \"random\"\nparams = { seed = 42 }\n",
        1000,
    )
    .await;
    let addr = broker.addr();
    let members = [
        member(addr, "rnd-a", "$share/rnd/r", AckMode::Ack).await,
        member(addr, "rnd-b", "$share/rnd/r", AckMode::Ack).await,
        member(addr, "rnd-c", "$share/rnd/r", AckMode::Ack).await,
    ];
    assert_eq!(label(&broker, "rnd", "r"), "random");
    let mut p = publisher(addr, "rnd-pub").await;
    publish_each(&mut p, (0..600).map(|s| ("r".to_owned(), s))).await;
    let refs: Vec<&Member> = members.iter().collect();
    wait_total(&refs, 600).await;
    assert_exactly_once("random", refs.iter().flat_map(|m| m.seqs()), 0..600);
    let counts: Vec<usize> = members.iter().map(Member::count).collect();
    for count in &counts {
        assert!((140..=260).contains(count), "±30% of 200: {counts:?}");
    }
    // Not a disguised round robin: the member of consecutive messages is not a fixed cycle.
    let mut owner = vec![0usize; 600];
    for (index, m) in members.iter().enumerate() {
        for s in m.seqs() {
            owner[s as usize] = index;
        }
    }
    assert!(
        (3..600).any(|s| owner[s] != owner[s - 3]),
        "random looks like an exact rotation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_keeps_one_member_until_it_leaves() {
    let broker = broker_with(
        "[shared]\n[[shared.groups]]\nname = \"st\"\nstrategy = \"sticky\"\nparams = { seed = 7 }\n",
        1000,
    )
    .await;
    let addr = broker.addr();
    let mut members = vec![
        member(addr, "st-a", "$share/st/s", AckMode::Ack).await,
        member(addr, "st-b", "$share/st/s", AckMode::Ack).await,
        member(addr, "st-c", "$share/st/s", AckMode::Ack).await,
    ];
    assert_eq!(label(&broker, "st", "s"), "sticky");
    let mut p = publisher(addr, "st-pub").await;
    publish_each(&mut p, (0..50).map(|s| ("s".to_owned(), s))).await;
    {
        let refs: Vec<&Member> = members.iter().collect();
        wait_total(&refs, 50).await;
    }
    let counts: Vec<usize> = members.iter().map(Member::count).collect();
    let first = counts.iter().position(|c| *c == 50).unwrap_or_else(|| {
        panic!("sticky: one member should have all 50, got {counts:?}");
    });

    // The chosen member leaves: another is chosen and kept. Once its session has ended, it
    // is no longer a member the strategy could choose.
    let leaving = members.remove(first).stop().await;
    let leaving_id = leaving.client_id.clone();
    leaving.disconnect_and_wait(ReasonCode(0)).await;
    broker.wait_session_ended(&leaving_id).await;
    let before: Vec<usize> = members.iter().map(Member::count).collect();
    assert_eq!(before, vec![0, 0]);
    publish_each(&mut p, (50..100).map(|s| ("s".to_owned(), s))).await;
    let refs: Vec<&Member> = members.iter().collect();
    wait_total(&refs, 50).await;
    let counts: Vec<usize> = members.iter().map(Member::count).collect();
    assert!(
        counts.contains(&50) && counts.contains(&0),
        "sticky after the chosen member left: {counts:?}"
    );
    assert_exactly_once("sticky", refs.iter().flat_map(|m| m.seqs()), 50..100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_clientid_keeps_publisher_affinity_and_moves_few_on_join() {
    const PUBLISHERS: usize = 40;
    let broker = broker_with(
        "[shared]\n[[shared.groups]]\nname = \"hc\"\nstrategy = \"hash_clientid\"\n",
        1000,
    )
    .await;
    let addr = broker.addr();
    let mut members = vec![
        member(addr, "hc-a", "$share/hc/h/#", AckMode::Ack).await,
        member(addr, "hc-b", "$share/hc/h/#", AckMode::Ack).await,
        member(addr, "hc-c", "$share/hc/h/#", AckMode::Ack).await,
    ];
    assert_eq!(label(&broker, "hc", "h/#"), "hash_clientid");
    let mut publishers = Vec::new();
    for i in 0..PUBLISHERS {
        publishers.push(publisher(addr, &format!("hc-pub-{i}")).await);
    }
    // Round 1: each publisher sends 3 messages, on its own topic so the owner can be found.
    let mut seq = 0;
    for round in 0..3 {
        for (i, p) in publishers.iter_mut().enumerate() {
            publish_each(p, [(format!("h/{i}/{round}"), seq)]).await;
            seq += 1;
        }
    }
    {
        let refs: Vec<&Member> = members.iter().collect();
        wait_total(&refs, seq as usize).await;
    }
    let by_publisher = |members: &[Member], rounds: std::ops::Range<usize>| {
        let refs: Vec<&Member> = members.iter().collect();
        let owners = owners_by_topic(&refs);
        let mut per_publisher: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        for (topic, set) in owners {
            let mut parts = topic.split('/').skip(1);
            let publisher: usize = parts.next().unwrap().parse().unwrap();
            let round: usize = parts.next().unwrap().parse().unwrap();
            if rounds.contains(&round) {
                per_publisher.entry(publisher).or_default().extend(set);
            }
        }
        per_publisher
            .into_iter()
            .map(|(p, set)| {
                assert_eq!(set.len(), 1, "publisher {p} reached members {set:?}");
                (p, *set.iter().next().unwrap())
            })
            .collect::<BTreeMap<usize, usize>>()
    };
    let before = by_publisher(&members, 0..3);
    assert_eq!(before.len(), PUBLISHERS);
    let used: BTreeSet<usize> = before.values().copied().collect();
    assert!(used.len() >= 2, "hash_clientid used only {used:?}");

    // A fourth member joins: at most 1.5/4 of the publishers move, and only to it.
    members.push(member(addr, "hc-d", "$share/hc/h/#", AckMode::Ack).await);
    let start = seq;
    for round in 3..5 {
        for (i, p) in publishers.iter_mut().enumerate() {
            publish_each(p, [(format!("h/{i}/{round}"), seq)]).await;
            seq += 1;
        }
    }
    {
        let refs: Vec<&Member> = members.iter().collect();
        wait_total(&refs, seq as usize).await;
        assert_exactly_once("hash_clientid", refs.iter().flat_map(|m| m.seqs()), 0..seq);
    }
    assert_eq!(start as usize, PUBLISHERS * 3);
    let after = by_publisher(&members, 3..5);
    let moved: Vec<usize> = (0..PUBLISHERS).filter(|p| before[p] != after[p]).collect();
    assert!(
        moved.len() * 4 <= PUBLISHERS * 3 / 2,
        "{} of {PUBLISHERS} publishers moved",
        moved.len()
    );
    assert!(
        moved.iter().all(|p| after[p] == 3),
        "publishers moved between old members: {moved:?}"
    );
    assert_eq!(spills(&broker, "hc", "h/#"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_topic_keeps_topic_affinity_and_moves_few_on_join() {
    const TOPICS: u32 = 200;
    let broker = broker_with(
        "[shared]\n[[shared.groups]]\nname = \"ht\"\nstrategy = \"hash_topic\"\n",
        1000,
    )
    .await;
    let addr = broker.addr();
    let mut members = vec![
        member(addr, "ht-a", "$share/ht/t/#", AckMode::Ack).await,
        member(addr, "ht-b", "$share/ht/t/#", AckMode::Ack).await,
        member(addr, "ht-c", "$share/ht/t/#", AckMode::Ack).await,
    ];
    assert_eq!(label(&broker, "ht", "t/#"), "hash_topic");
    // Two publishers, so the key is the topic and not who sent it.
    let mut p1 = publisher(addr, "ht-pub-1").await;
    let mut p2 = publisher(addr, "ht-pub-2").await;
    publish_each(&mut p1, (0..TOPICS).map(|i| (format!("t/{i}"), i))).await;
    publish_each(&mut p2, (0..TOPICS).map(|i| (format!("t/{i}"), TOPICS + i))).await;
    let before = {
        let refs: Vec<&Member> = members.iter().collect();
        wait_total(&refs, 2 * TOPICS as usize).await;
        single_owner("hash_topic", &owners_by_topic(&refs))
    };
    assert_eq!(before.len(), TOPICS as usize);
    let used: BTreeSet<usize> = before.values().copied().collect();
    assert_eq!(used.len(), 3, "200 topics should reach all 3 members");

    members.push(member(addr, "ht-d", "$share/ht/t/#", AckMode::Ack).await);
    let already: Vec<usize> = members.iter().map(Member::count).collect();
    publish_each(
        &mut p1,
        (0..TOPICS).map(|i| (format!("t/{i}"), 2 * TOPICS + i)),
    )
    .await;
    let refs: Vec<&Member> = members.iter().collect();
    wait_total(&refs, 3 * TOPICS as usize).await;
    assert_exactly_once(
        "hash_topic",
        refs.iter().flat_map(|m| m.seqs()),
        0..3 * TOPICS,
    );
    let mut after: BTreeMap<String, usize> = BTreeMap::new();
    for (index, m) in members.iter().enumerate() {
        for got in m.got().into_iter().skip(already[index]) {
            after.insert(got.publish.topic.to_string(), index);
        }
    }
    let moved: Vec<&String> = before
        .iter()
        .filter(|(t, owner)| after[*t] != **owner)
        .map(|(t, _)| t)
        .collect();
    assert!(
        moved.len() * 4 <= TOPICS as usize * 3 / 2,
        "{} of {TOPICS} topics moved",
        moved.len()
    );
    assert!(!moved.is_empty(), "the new member got no topic");
    assert!(
        moved.iter().all(|t| after[*t] == 3),
        "topics moved between old members"
    );
    assert_eq!(spills(&broker, "ht", "t/#"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_topic_levels_pins_each_device() {
    let broker = broker_with(
        "[shared]\n\
         [[shared.groups]]\nname = \"byp\"\nstrategy = \"hash_topic_levels\"\nparams = { pattern = \"devices/{id}/#\" }\n\
         [[shared.groups]]\nname = \"byl\"\nstrategy = \"hash_topic_levels\"\nparams = { levels = \"1\" }\n",
        1000,
    )
    .await;
    let addr = broker.addr();
    let mut groups = Vec::new();
    for g in ["byp", "byl"] {
        let mut ms = Vec::new();
        for i in 0..3 {
            ms.push(
                member(
                    addr,
                    &format!("{g}-{i}"),
                    &format!("$share/{g}/devices/#"),
                    AckMode::Ack,
                )
                .await,
            );
        }
        assert_eq!(label(&broker, g, "devices/#"), "hash_topic_levels");
        groups.push((g, ms));
    }
    let mut p = publisher(addr, "htl-pub").await;
    let mut seq = 0;
    let mut messages = Vec::new();
    for sub in ["temp", "humidity", "status/battery", "status/link"] {
        for device in 0..30 {
            messages.push((format!("devices/d{device}/{sub}"), seq));
            seq += 1;
        }
    }
    publish_each(&mut p, messages).await;
    for (g, ms) in &groups {
        let refs: Vec<&Member> = ms.iter().collect();
        wait_total(&refs, seq as usize).await;
        assert_exactly_once(g, refs.iter().flat_map(|m| m.seqs()), 0..seq);
        let mut per_device: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        for (topic, set) in owners_by_topic(&refs) {
            let device = topic.split('/').nth(1).unwrap().to_owned();
            per_device.entry(device).or_default().extend(set);
        }
        assert_eq!(per_device.len(), 30);
        for (device, set) in &per_device {
            assert_eq!(set.len(), 1, "{g}: device {device} reached members {set:?}");
        }
        let used: BTreeSet<usize> = per_device.values().flatten().copied().collect();
        assert_eq!(used.len(), 3, "{g}: 30 devices should reach all 3 members");
        assert_eq!(spills(&broker, g, "devices/#"), 0);
    }
}

/// Two members that acknowledge everything and one that never does. Each message is
/// published only once the previous one is acknowledged and the broker has processed the ack
/// (or it went to the member that never acks): the acking members then have equal, empty
/// windows at every choice, whatever the machine's load, so the strategy's promise can be
/// checked exactly — the non-acking member gets no more than its window, and the other two,
/// always tied on the most free window, alternate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_inflight_avoids_a_member_that_does_not_ack() {
    const WINDOW: u16 = 8;
    const MESSAGES: u32 = 150;
    let broker = broker_with(
        "[shared]\n[[shared.groups]]\nname = \"li\"\nstrategy = \"least_inflight\"\n",
        WINDOW,
    )
    .await;
    let addr = broker.addr();
    let a = member(addr, "li-a", "$share/li/l", AckMode::AckConfirmed).await;
    let slow = member(addr, "li-slow", "$share/li/l", AckMode::Never).await;
    let c = member(addr, "li-c", "$share/li/l", AckMode::AckConfirmed).await;
    assert_eq!(label(&broker, "li", "l"), "least_inflight");
    let mut p = publisher(addr, "li-pub").await;
    for seq in 0..MESSAGES {
        publish_each(&mut p, [("l".to_owned(), seq)]).await;
        let settled = seq as usize + 1;
        wait_until(TIMEOUT, &format!("message {seq} acked or held"), || {
            a.acked() + c.acked() + slow.count() == settled
        })
        .await;
    }
    wait_total(&[&a, &slow, &c], MESSAGES as usize).await;
    assert_exactly_once(
        "least_inflight",
        [&a, &slow, &c].iter().flat_map(|m| m.seqs()),
        0..MESSAGES,
    );
    assert!(
        slow.count() <= WINDOW as usize,
        "the member that never acks got {} (window {WINDOW})",
        slow.count()
    );
    assert!(
        a.count().abs_diff(c.count()) <= 1,
        "equally free members must alternate: {} / {}",
        a.count(),
        c.count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_follows_param_and_subscribe_weights() {
    let broker = broker_with(
        "[shared]\n[[shared.groups]]\nname = \"wt\"\nstrategy = \"weighted\"\n\
         params = { \"weight.wt-a\" = 3, \"weight.wt-b\" = 1 }\n",
        1000,
    )
    .await;
    let addr = broker.addr();
    let a = member(addr, "wt-a", "$share/wt/w", AckMode::Ack).await;
    let b = member(addr, "wt-b", "$share/wt/w", AckMode::Ack).await;
    // No param for wt-c: its SUBSCRIBE user property says 2.
    let c = weighted_member(addr, "wt-c", "$share/wt/w", 2).await;
    assert_eq!(label(&broker, "wt", "w"), "weighted");
    let mut p = publisher(addr, "wt-pub").await;
    publish_each(&mut p, (0..600).map(|s| ("w".to_owned(), s))).await;
    wait_total(&[&a, &b, &c], 600).await;
    assert_exactly_once(
        "weighted",
        [&a, &b, &c].iter().flat_map(|m| m.seqs()),
        0..600,
    );
    assert_eq!(
        (a.count(), b.count(), c.count()),
        (300, 100, 200),
        "weights 3:1:2 over 600 messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_earliest_member_takes_everything_until_it_is_gone() {
    let broker = broker_with(
        "[shared]\n[[shared.groups]]\nname = \"fo\"\nstrategy = \"failover\"\n",
        64,
    )
    .await;
    let addr = broker.addr();
    let active = member(addr, "fo-active", "$share/fo/f", AckMode::Ack).await;
    let standby1 = member(addr, "fo-standby-1", "$share/fo/f", AckMode::Ack).await;
    let standby2 = member(addr, "fo-standby-2", "$share/fo/f", AckMode::Ack).await;
    assert_eq!(label(&broker, "fo", "f"), "failover");
    let mut p = publisher(addr, "fo-pub").await;
    publish_each(&mut p, (0..40).map(|s| ("f".to_owned(), s))).await;
    wait_total(&[&active, &standby1, &standby2], 40).await;
    assert_eq!(
        (active.count(), standby1.count(), standby2.count()),
        (40, 0, 0)
    );

    active.stop().await.disconnect_and_wait(ReasonCode(0)).await;
    broker.wait_session_ended("fo-active").await;
    publish_each(&mut p, (40..80).map(|s| ("f".to_owned(), s))).await;
    wait_total(&[&standby1, &standby2], 40).await;
    assert_eq!((standby1.count(), standby2.count()), (40, 0));
    assert_exactly_once("failover", standby1.seqs(), 40..80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_per_publisher_rotates_each_publisher() {
    let broker = broker_with(
        "[shared]\n\
         [[shared.groups]]\nname = \"pp\"\nstrategy = \"round_robin_per_publisher\"\n\
         [[shared.groups]]\nname = \"gl\"\nstrategy = \"round_robin\"\n",
        1000,
    )
    .await;
    let addr = broker.addr();
    let mut groups = Vec::new();
    for g in ["pp", "gl"] {
        let mut ms = Vec::new();
        for i in 0..3 {
            ms.push(
                member(
                    addr,
                    &format!("{g}-{i}"),
                    &format!("$share/{g}/pp/#"),
                    AckMode::Ack,
                )
                .await,
            );
        }
        groups.push(ms);
    }
    assert_eq!(label(&broker, "pp", "pp/#"), "round_robin_per_publisher");
    // Three publishers interleaved, six messages each: a group-wide rotation gives each
    // publisher's messages all to one member; a per-publisher rotation spreads them 2/2/2.
    let mut publishers = Vec::new();
    for i in 0..3 {
        publishers.push(publisher(addr, &format!("pp-pub-{i}")).await);
    }
    let mut seq = 0;
    for _ in 0..6 {
        for (i, p) in publishers.iter_mut().enumerate() {
            publish_each(p, [(format!("pp/{i}"), seq)]).await;
            seq += 1;
        }
    }
    let per_member_per_publisher = |ms: &[Member]| -> Vec<Vec<usize>> {
        ms.iter()
            .map(|m| {
                let got = m.got();
                (0..3)
                    .map(|i| {
                        got.iter()
                            .filter(|g| *g.publish.topic == format!("pp/{i}"))
                            .count()
                    })
                    .collect()
            })
            .collect()
    };
    for ms in &groups {
        let refs: Vec<&Member> = ms.iter().collect();
        wait_total(&refs, 18).await;
        assert_exactly_once("rotation", refs.iter().flat_map(|m| m.seqs()), 0..18);
    }
    let pp = per_member_per_publisher(&groups[0]);
    assert_eq!(pp, vec![vec![2, 2, 2]; 3], "per publisher: {pp:?}");
    // Control: the group-wide round robin does not spread each publisher.
    let gl = per_member_per_publisher(&groups[1]);
    assert_ne!(gl, vec![vec![2, 2, 2]; 3], "group-wide: {gl:?}");
}
