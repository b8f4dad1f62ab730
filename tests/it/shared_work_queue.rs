//! Work-queue settings of shared groups (`[[shared.groups]]` rules): ack deadlines, delivery
//! limits and dead letters, per-key order, and backlog policies, through the real broker with
//! real clients.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use sharq::config::{GroupStrategyConfig, Overflow};
use sharq::packet::{Packet, Publish, QoS, ReasonCode};

fn rule(name: &str, set: impl FnOnce(&mut GroupStrategyConfig)) -> GroupStrategyConfig {
    let mut rule = GroupStrategyConfig {
        name: name.into(),
        ..GroupStrategyConfig::default()
    };
    set(&mut rule);
    rule
}

async fn broker_with(
    rules: Vec<GroupStrategyConfig>,
    configure: impl FnOnce(&mut sharq::Config),
) -> TestBroker {
    TestBroker::with(|c| {
        c.shared.groups = rules;
        configure(c);
    })
    .await
}

fn user_property<'a>(publish: &'a Publish, name: &str) -> Option<&'a str> {
    publish
        .properties
        .user_properties
        .iter()
        .find(|(k, _)| &**k == name)
        .map(|(_, v)| &**v)
}

async fn ack_timeout_moves_copies_of_a_hung_member(version: sharq::packet::ProtocolVersion) {
    let broker = broker_with(vec![rule("jobs", |r| r.ack_timeout_ms = Some(300))], |_| {}).await;
    let group_filter = "$share/jobs/j/#";
    // The hung member: receives, never acknowledges, stays connected.
    let (mut hung, _) =
        RawClient::connect_opts(broker.addr(), ConnectOpts::new(version, "hung")).await;
    hung.subscribe(group_filter, QoS::AtLeastOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), "producer").await;
    publisher.publish_seqs("j/1", 0..3, QoS::AtLeastOnce).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(hung.recv_publish().await);
    }
    // A healthy member arrives; after the deadline the three go to it.
    let (mut healthy, _) =
        RawClient::connect_opts(broker.addr(), ConnectOpts::new(version, "healthy")).await;
    healthy.subscribe(group_filter, QoS::AtLeastOnce).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(payload_seq(&healthy.recv_and_ack().await.payload));
    }
    got.sort_unstable();
    assert_eq!(got, vec![0, 1, 2]);
    // A late ack is accepted and ignored (what else the hung member got meanwhile, it acks
    // late too).
    for publish in &held {
        hung.ack(publish).await;
    }
    while let Event::Packet(Packet::Publish(extra)) =
        hung.next_event(Duration::from_millis(500)).await
    {
        hung.ack(&extra).await;
    }
    hung.ping().await;
    healthy.expect_no_publish(QUIET).await;
    let group = broker.state().router.group("jobs", "j/#").unwrap();
    assert!(
        group
            .tally
            .late_acks
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
    // At least the three; one may have gone back to the hung member and timed out again.
    assert!(
        group
            .counters
            .redelivered(sharq::broker::shared::Redelivery::AckTimeout)
            >= 3
    );
    wait_until(TIMEOUT, "no copy in flight", || group.in_flight() == 0).await;
    // Both take new work again.
    publisher
        .publish_seqs("j/1", 10..14, QoS::AtLeastOnce)
        .await;
    let mut total = 0;
    while total < 4 {
        tokio::select! {
            p = hung.recv_publish() => { hung.ack(&p).await; total += 1; }
            p = healthy.recv_publish() => { healthy.ack(&p).await; total += 1; }
        }
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_timeout_v5() {
    ack_timeout_moves_copies_of_a_hung_member(V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_timeout_v311() {
    ack_timeout_moves_copies_of_a_hung_member(V3_1_1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_keeps_timing_out_gets_nothing_new_until_it_acks() {
    let broker = broker_with(vec![rule("jobs", |r| r.ack_timeout_ms = Some(200))], |_| {}).await;
    let mut hung = RawClient::v5(broker.addr(), "hung").await;
    hung.subscribe("$share/jobs/j", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), "producer").await;
    // Two deadlines missed in a row (the second on the copy that came back to it).
    publisher.publish_seqs("j", 0..1, QoS::AtLeastOnce).await;
    let first = hung.recv_publish().await;
    let again = hung.recv_publish().await;
    assert_eq!(
        payload_seq(&again.payload),
        0,
        "the only member gets it back"
    );
    // The second deadline passes 200 ms after `again` arrived: the sweep counts the member's
    // miss before it counts the redelivery, so two redeliveries mean it is now unhealthy.
    let group = broker.state().router.group("jobs", "j").unwrap();
    wait_until(TIMEOUT, "the second ack deadline missed", || {
        group
            .counters
            .redelivered(sharq::broker::shared::Redelivery::AckTimeout)
            >= 2
    })
    .await;
    // Now unhealthy: a new message waits in the group, not with it.
    publisher.publish_seqs("j", 1..2, QoS::AtLeastOnce).await;
    hung.expect_no_publish(QUIET).await;
    assert!(group.queued() >= 1, "queued {}", group.queued());
    // One acknowledgement (even a late one) makes it healthy again.
    hung.ack(&first).await;
    let mut seen = Vec::new();
    while !seen.contains(&1) {
        let p = hung.recv_publish().await;
        seen.push(payload_seq(&p.payload));
        hung.ack(&p).await;
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_deliveries_sends_the_message_to_the_dead_letter_topic_with_its_story() {
    let broker = broker_with(
        vec![rule("jobs", |r| {
            r.ack_timeout_ms = Some(200);
            r.max_deliveries = Some(2);
            r.dead_letter_topic = Some("dlq/{group}/{topic}".into());
        })],
        |_| {},
    )
    .await;
    let mut dlq = RawClient::v5(broker.addr(), "dlq-reader").await;
    dlq.subscribe("dlq/#", QoS::AtLeastOnce).await;
    let mut hung = RawClient::v5(broker.addr(), "hung").await;
    hung.subscribe("$share/jobs/jobs/#", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), "producer").await;
    publisher
        .publish_seqs("jobs/resize", 7..8, QoS::AtLeastOnce)
        .await;
    hung.recv_publish().await;
    hung.recv_publish().await; // delivery 2, after the first deadline
    let dead = dlq.recv_and_ack().await;
    assert_eq!(&*dead.topic, "dlq/jobs/jobs/resize");
    assert_eq!(payload_seq(&dead.payload), 7);
    assert_eq!(
        user_property(&dead, "sharq-original-topic"),
        Some("jobs/resize")
    );
    assert_eq!(user_property(&dead, "sharq-group"), Some("jobs"));
    assert_eq!(user_property(&dead, "sharq-deliveries"), Some("2"));
    assert_eq!(
        user_property(&dead, "sharq-last-failure"),
        Some("ack_timeout")
    );
    assert_eq!(user_property(&dead, "sharq-last-member"), Some("hung"));
    hung.expect_no_publish(QUIET).await;
    let group = broker.state().router.group("jobs", "jobs/#").unwrap();
    assert_eq!(
        group
            .counters
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnects_count_as_failed_deliveries_and_without_a_topic_the_message_is_dropped() {
    let broker = broker_with(vec![rule("jobs", |r| r.max_deliveries = Some(2))], |_| {}).await;
    let mut publisher = RawClient::v5(broker.addr(), "producer").await;
    let mut standby = RawClient::v5(broker.addr(), "standby").await;
    standby.subscribe("$share/jobs/q", QoS::AtLeastOnce).await;
    publisher.publish_seqs("q", 0..1, QoS::AtLeastOnce).await;
    // Each member that gets it drops its connection without acknowledging.
    let mut first = standby;
    first.recv_publish().await;
    let mut second = RawClient::v5(broker.addr(), "second").await;
    second.subscribe("$share/jobs/q", QoS::AtLeastOnce).await;
    first.drop_socket();
    second.recv_publish().await;
    let mut third = RawClient::v5(broker.addr(), "third").await;
    third.subscribe("$share/jobs/q", QoS::AtLeastOnce).await;
    second.drop_socket();
    third.expect_no_publish(QUIET).await;
    let group = broker.state().router.group("jobs", "q").unwrap();
    assert_eq!(
        group
            .counters
            .dropped_by(sharq::broker::shared::GroupDrop::MaxDeliveries),
        1
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_puback_failure_code_sends_the_message_straight_to_the_dead_letter_topic() {
    let broker = broker_with(
        vec![rule("jobs", |r| {
            r.max_deliveries = Some(5);
            r.dead_letter_topic = Some("dead/{group}".into());
        })],
        |_| {},
    )
    .await;
    let mut dlq = RawClient::v5(broker.addr(), "dlq-reader").await;
    dlq.subscribe("dead/#", QoS::AtLeastOnce).await;
    let mut picky = RawClient::v5(broker.addr(), "picky").await;
    picky.subscribe("$share/jobs/t", QoS::AtLeastOnce).await;
    let mut other = RawClient::v5(broker.addr(), "other").await;
    other.subscribe("$share/jobs/t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), "producer").await;
    publisher.publish_seqs("t", 0..1, QoS::AtLeastOnce).await;
    let (got, by) = tokio::select! {
        p = picky.recv_publish() => (p, &mut picky),
        p = other.recv_publish() => (p, &mut other),
    };
    by.puback(got.packet_id.unwrap(), ReasonCode(0x80)).await;
    let dead = dlq.recv_and_ack().await;
    assert_eq!(&*dead.topic, "dead/jobs");
    assert_eq!(
        user_property(&dead, "sharq-last-failure"),
        Some("rejected 0x80")
    );
    assert_eq!(user_property(&dead, "sharq-deliveries"), Some("1"));
    // Never retried [MQTT-4.8.2-6].
    picky.expect_no_publish(QUIET).await;
    other.expect_no_publish(QUIET).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_policies_compact_age_and_overflow() {
    let broker = broker_with(
        vec![
            rule("latest", |r| {
                r.ordered_by = Some("topic".into());
                r.compact = true;
            }),
            rule("fresh", |r| r.max_age_secs = Some(1)),
            rule("ring", |r| r.overflow = Overflow::DropOldest),
        ],
        |c| {
            c.shared.group_queue_max_messages = 3;
            for (name, filter) in [
                ("latest", "dev/#"),
                ("fresh", "f"),
                ("ring", "r"),
                ("strict", "s"),
            ] {
                c.shared.declared.push(sharq::config::DeclaredGroupConfig {
                    name: name.into(),
                    filter: filter.into(),
                    ..Default::default()
                });
            }
        },
    )
    .await;
    let mut publisher = RawClient::v5(broker.addr(), "producer").await;
    // compact: only the newest per topic waits.
    for (topic, seq) in [
        ("dev/a", 1),
        ("dev/b", 2),
        ("dev/a", 3),
        ("dev/a", 4),
        ("dev/b", 5),
    ] {
        publisher
            .publish_seqs(topic, seq..seq + 1, QoS::AtLeastOnce)
            .await;
    }
    let mut reader = RawClient::v5(broker.addr(), "latest-reader").await;
    reader
        .subscribe("$share/latest/dev/#", QoS::AtLeastOnce)
        .await;
    let mut seen = vec![
        payload_seq(&reader.recv_and_ack().await.payload),
        payload_seq(&reader.recv_and_ack().await.payload),
    ];
    seen.sort_unstable();
    assert_eq!(seen, vec![4, 5]);
    reader.expect_no_publish(QUIET).await;
    // max_age_secs: a message that waited too long is dropped, a fresh one is delivered.
    publisher.publish_seqs("f", 0..1, QoS::AtLeastOnce).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    publisher.publish_seqs("f", 1..2, QoS::AtLeastOnce).await;
    let mut fresh = RawClient::v5(broker.addr(), "fresh-reader").await;
    fresh.subscribe("$share/fresh/f", QoS::AtLeastOnce).await;
    assert_eq!(payload_seq(&fresh.recv_and_ack().await.payload), 1);
    fresh.expect_no_publish(QUIET).await;
    let group = broker.state().router.group("fresh", "f").unwrap();
    assert_eq!(
        group
            .counters
            .dropped_by(sharq::broker::shared::GroupDrop::MaxAge),
        1
    );
    // overflow = drop_oldest: the newest 3 of 5 wait, and every publish is accepted.
    for seq in 0..5u32 {
        let id = publisher.packet_id();
        publisher
            .send(&Packet::Publish(publish_packet(
                "r",
                &seq_payload(seq),
                QoS::AtLeastOnce,
                Some(id),
            )))
            .await;
        assert_eq!(
            publisher.recv_ack("PUBACK", id).await.reason_code,
            ReasonCode::SUCCESS
        );
    }
    // reject_new (the default): the 4th and 5th are refused with 0x97.
    let mut refused = 0;
    for seq in 0..5u32 {
        let id = publisher.packet_id();
        publisher
            .send(&Packet::Publish(publish_packet(
                "s",
                &seq_payload(seq),
                QoS::AtLeastOnce,
                Some(id),
            )))
            .await;
        if publisher.recv_ack("PUBACK", id).await.reason_code == ReasonCode(0x97) {
            refused += 1;
        }
    }
    assert_eq!(refused, 2);
    let mut ring = RawClient::v5(broker.addr(), "ring-reader").await;
    ring.subscribe("$share/ring/r", QoS::AtLeastOnce).await;
    let got: Vec<u32> = [
        ring.recv_and_ack().await,
        ring.recv_and_ack().await,
        ring.recv_and_ack().await,
    ]
    .iter()
    .map(|p| payload_seq(&p.payload))
    .collect();
    assert_eq!(got, vec![2, 3, 4]);
    broker.shutdown().await;
}

/// One receipt by a member of the ordered group: (key, seq, member).
type Log = Arc<parking_lot::Mutex<Vec<(String, u32, String)>>>;

/// A member that logs each message as it reads it, then acknowledges it after `delay` (or never,
/// when `hang`), until told to stop (or its connection is cut).
fn spawn_logger(
    mut client: RawClient,
    name: &str,
    log: Log,
    delay: Duration,
    hang: bool,
) -> tokio::task::JoinHandle<()> {
    let name = name.to_owned();
    tokio::spawn(async move {
        loop {
            match client.next_event(Duration::from_secs(30)).await {
                Event::Packet(Packet::Publish(p)) => {
                    log.lock()
                        .push((p.topic.to_string(), payload_seq(&p.payload), name.clone()));
                    if !hang {
                        tokio::time::sleep(delay).await;
                        client.ack(&p).await;
                    }
                }
                Event::Packet(_) => {}
                Event::Timeout | Event::Closed => return,
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_keys_keep_their_order_under_churn_and_ack_timeouts() {
    let broker = broker_with(
        vec![rule("ordered", |r| {
            r.ordered_by = Some("topic".into());
            r.ack_timeout_ms = Some(300);
        })],
        |_| {},
    )
    .await;
    let log: Log = Arc::default();
    let filter = "$share/ordered/k/#";
    let mut tasks = Vec::new();
    for (name, delay) in [("m1", 1), ("m2", 3)] {
        let mut client = RawClient::v5(broker.addr(), name).await;
        client.subscribe(filter, QoS::AtLeastOnce).await;
        tasks.push(spawn_logger(
            client,
            name,
            log.clone(),
            Duration::from_millis(delay),
            false,
        ));
    }
    // A member that hangs: whatever it takes goes elsewhere after the deadline.
    let mut hung = RawClient::v5(broker.addr(), "hung").await;
    hung.subscribe(filter, QoS::AtLeastOnce).await;
    let hung_task = spawn_logger(hung, "hung", log.clone(), Duration::ZERO, true);
    const KEYS: u32 = 8;
    const PER_KEY: u32 = 40;
    let publishing = {
        let addr = broker.addr();
        tokio::spawn(async move {
            let mut publisher = RawClient::v5(addr, "producer").await;
            for seq in 0..PER_KEY {
                for key in 0..KEYS {
                    publisher
                        .publish_seqs(&format!("k/{key}"), seq..seq + 1, QoS::AtLeastOnce)
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Churn: one member leaves abruptly and a new one joins while messages flow.
    wait_until(TIMEOUT, "messages flowing to m1", || {
        log.lock().iter().any(|(_, _, name)| name == "m1")
    })
    .await;
    tasks.remove(0).abort();
    let mut late = RawClient::v5(broker.addr(), "m3").await;
    late.subscribe(filter, QoS::AtLeastOnce).await;
    tasks.push(spawn_logger(
        late,
        "m3",
        log.clone(),
        Duration::from_millis(2),
        false,
    ));
    publishing.await.unwrap();
    wait_until(Duration::from_secs(20), "every key's last message", || {
        let log = log.lock();
        (0..KEYS).all(|k| {
            log.iter()
                .any(|(t, s, _)| *t == format!("k/{k}") && *s == PER_KEY - 1)
        })
    })
    .await;
    hung_task.abort();
    let log = log.lock().clone();
    let mut firsts: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut seen: HashMap<(String, u32), usize> = HashMap::new();
    for (topic, seq, _) in &log {
        let n = seen.entry((topic.clone(), *seq)).or_default();
        *n += 1;
        if *n == 1 {
            firsts.entry(topic.clone()).or_default().push(*seq);
        }
    }
    for (topic, seqs) in &firsts {
        let expected: Vec<u32> = (0..PER_KEY).collect();
        assert_eq!(
            seqs, &expected,
            "{topic}: first receipts out of order or missing"
        );
    }
    // Redeliveries happened (hung member, the member that left), so the check had teeth.
    let group = broker.state().router.group("ordered", "k/#").unwrap();
    let redelivered = group
        .counters
        .redispatched
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(redelivered > 0, "no redelivery happened");
    for task in tasks {
        task.abort();
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_0_2_strategy_sees_the_ordering_key() {
    let plugin = fixture_plugin("fixture_key_affinity");
    let broker = broker_with(
        vec![rule("dev", |r| {
            r.plugin = Some(plugin.clone());
            r.ordered_by = Some("topic_levels:dev/{id}/#".into());
        })],
        |_| {},
    )
    .await;
    let mut members = Vec::new();
    for i in 0..3 {
        let mut client = RawClient::v5(broker.addr(), &format!("w{i}")).await;
        client.subscribe("$share/dev/dev/#", QoS::AtLeastOnce).await;
        members.push(Member::spawn(client, AckMode::Ack));
    }
    let mut publisher = RawClient::v5(broker.addr(), "producer").await;
    // Device d's messages on several topics: a topic-hash strategy would scatter them.
    let mut seq = 0;
    for device in 0..6 {
        for metric in ["temp", "rpm", "volt", "amps"] {
            publisher
                .publish_seqs(
                    &format!("dev/{device}/{metric}"),
                    seq..seq + 1,
                    QoS::AtLeastOnce,
                )
                .await;
            seq += 1;
        }
    }
    let refs: Vec<&Member> = members.iter().collect();
    wait_total(&refs, 24).await;
    let group = broker.state().router.group("dev", "dev/#").unwrap();
    assert_eq!(
        group
            .strategy_counters
            .selections
            .load(std::sync::atomic::Ordering::Relaxed),
        24,
        "the strategy chose every one"
    );
    let mut holder: HashMap<String, usize> = HashMap::new();
    for (i, member) in members.iter().enumerate() {
        for got in member.got() {
            let device = got.publish.topic.split('/').nth(1).unwrap().to_owned();
            let previous = holder.insert(device.clone(), i);
            assert!(
                previous.is_none_or(|p| p == i),
                "device {device} went to members {previous:?} and {i}"
            );
        }
    }
    assert_eq!(holder.len(), 6);
    broker.shutdown().await;
}
