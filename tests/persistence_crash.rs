//! `kill -9` against the real binary with the durable store: every message a publisher got
//! PUBACK or PUBREC for is delivered after the restarts — to a shared group whose persistent
//! members are offline and to a plain persistent subscriber — and QoS 2 exactly once.
//!
//! The publisher pipelines QoS 1 and QoS 2 messages and the broker is killed mid-stream, several
//! times; then the consumers drain, with one more kill half-way through their draining, so that
//! exchanges in flight to them (QoS 2 in both stages) must survive too. Consumers are honest
//! MQTT receivers: a QoS 2 PUBLISH whose packet id they already answered with PUBREC (and saw no
//! PUBREL for) is the same message again, as the spec's receiver "Method B" says.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use common::*;
use parking_lot::Mutex;
use sharq::packet::{Ack, Packet, ProtocolVersion, Publish, PublishProperties, QoS, ReasonCode};

const ROUNDS: usize = 4;
const MEMBERS: [&str; 3] = ["member-1", "member-2", "member-3"];
const PLAIN: &str = "plain";
const PUBLISHER: &str = "publisher";
const EXPIRY: u32 = 3600;

async fn connect(addr: std::net::SocketAddr, client_id: &str, clean: bool) -> RawClient {
    let mut opts = ConnectOpts::new(ProtocolVersion::V5, client_id);
    opts.clean_start = clean;
    opts.session_expiry = Some(EXPIRY);
    opts.receive_maximum = Some(64);
    let (client, connack) = RawClient::connect_opts(addr, opts).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        connack.session_present, !clean,
        "{client_id}: the session must survive the restart"
    );
    client
}

/// The publisher's side of the exchanges, kept across its connections.
#[derive(Default)]
struct PublisherState {
    next_seq: u32,
    /// Packet ids are never reused, so a QoS 2 exchange the broker still holds open can never
    /// swallow a new message.
    next_packet_id: u16,
    in_flight: HashMap<u16, (u32, QoS)>,
    /// PUBREC received, PUBREL sent, PUBCOMP not yet seen.
    awaiting_comp: HashSet<u16>,
    /// Every sequence number the broker acknowledged (PUBACK / PUBREC), with its QoS.
    acked: HashMap<u32, QoS>,
}

/// Publishes pipelined QoS 1 / QoS 2 messages until the broker is killed after `kill_after`
/// acknowledgements in this round.
async fn publish_until_killed(
    broker: &mut SpawnedBroker,
    state: &mut PublisherState,
    clean: bool,
    kill_after: usize,
) {
    let mut client = connect(broker.addr, PUBLISHER, clean).await;
    // Exchanges a kill interrupted after PUBREC: the broker must still know them.
    for packet_id in state.awaiting_comp.clone() {
        client.send(&Packet::PubRel(Ack::new(packet_id))).await;
        match client
            .recv_matching("PUBCOMP", |p| matches!(p, Packet::PubComp(_)))
            .await
        {
            Packet::PubComp(comp) => {
                assert_eq!(comp.packet_id, packet_id);
                assert_eq!(
                    comp.reason_code,
                    ReasonCode::SUCCESS,
                    "an inbound QoS 2 exchange acknowledged with PUBREC was lost by the restart"
                );
                state.awaiting_comp.remove(&packet_id);
            }
            _ => unreachable!(),
        }
    }
    state.in_flight.clear();
    let mut acked_this_round = 0;
    let mut killed = false;
    loop {
        while !killed && state.in_flight.len() < 32 {
            state.next_seq += 1;
            state.next_packet_id += 1;
            let seq = state.next_seq;
            let packet_id = state.next_packet_id;
            let qos = if seq % 2 == 0 {
                QoS::ExactlyOnce
            } else {
                QoS::AtLeastOnce
            };
            state.in_flight.insert(packet_id, (seq, qos));
            client
                .send(&Packet::Publish(Publish {
                    dup: false,
                    qos,
                    retain: false,
                    topic: ByteString::from(format!("jobs/{}", seq % 7)),
                    packet_id: Some(packet_id),
                    payload: seq_payload(seq),
                    properties: PublishProperties::default(),
                }))
                .await;
        }
        match client.next_event(Duration::from_secs(10)).await {
            Event::Packet(Packet::PubAck(ack)) => {
                if let Some((seq, qos)) = state.in_flight.remove(&ack.packet_id) {
                    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
                    state.acked.insert(seq, qos);
                    acked_this_round += 1;
                }
            }
            Event::Packet(Packet::PubRec(rec)) => {
                if let Some((seq, qos)) = state.in_flight.remove(&rec.packet_id) {
                    assert_eq!(rec.reason_code, ReasonCode::SUCCESS);
                    state.acked.insert(seq, qos);
                    acked_this_round += 1;
                    state.awaiting_comp.insert(rec.packet_id);
                    client.send(&Packet::PubRel(Ack::new(rec.packet_id))).await;
                }
            }
            Event::Packet(Packet::PubComp(comp)) => {
                state.awaiting_comp.remove(&comp.packet_id);
            }
            Event::Packet(other) => panic!("publisher got {other:?}"),
            Event::Closed => break,
            Event::Timeout => panic!("publisher: no acknowledgement within 10 s"),
        }
        if !killed && acked_this_round >= kill_after {
            // Mid-stream: 32 publishes are on their way, some routed, some committed.
            broker.kill9();
            killed = true;
        }
    }
    assert!(killed, "the connection closed before the kill");
}

/// A receiver's state, kept across its connections.
#[derive(Default)]
struct ConsumerState {
    /// Sequence numbers received, each counted once per distinct delivery.
    got: Vec<(u32, QoS)>,
    /// QoS 2 packet ids answered with PUBREC and not yet released (Method B).
    awaiting_rel: HashSet<u16>,
    last_activity: Option<Instant>,
}

/// Reads and acknowledges until the connection closes or `stop` is set (checked when idle).
async fn consume(
    addr: std::net::SocketAddr,
    client_id: &'static str,
    state: Arc<Mutex<ConsumerState>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut client = connect(addr, client_id, false).await;
    loop {
        match client.next_event(Duration::from_millis(100)).await {
            Event::Packet(Packet::Publish(publish)) => {
                let seq = payload_seq(&publish.payload);
                let answer = {
                    let mut s = state.lock();
                    s.last_activity = Some(Instant::now());
                    match (publish.qos, publish.packet_id) {
                        (QoS::ExactlyOnce, Some(id)) => {
                            if s.awaiting_rel.insert(id) {
                                s.got.push((seq, QoS::ExactlyOnce));
                            }
                            Packet::PubRec(Ack::new(id))
                        }
                        (QoS::AtLeastOnce, Some(id)) => {
                            s.got.push((seq, QoS::AtLeastOnce));
                            Packet::PubAck(Ack::new(id))
                        }
                        _ => panic!("{client_id}: unexpected {publish:?}"),
                    }
                };
                client.send(&answer).await;
            }
            Event::Packet(Packet::PubRel(rel)) => {
                state.lock().awaiting_rel.remove(&rel.packet_id);
                client.send(&Packet::PubComp(Ack::new(rel.packet_id))).await;
            }
            Event::Packet(other) => panic!("{client_id} got {other:?}"),
            Event::Closed => return,
            Event::Timeout => {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    client.disconnect().await;
                    return;
                }
            }
        }
    }
}

type Consumers = Vec<(&'static str, Arc<Mutex<ConsumerState>>)>;

fn spawn_consumers(
    addr: std::net::SocketAddr,
    consumers: &Consumers,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    consumers
        .iter()
        .map(|(id, state)| tokio::spawn(consume(addr, id, state.clone(), stop.clone())))
        .collect()
}

fn received(consumers: &Consumers) -> usize {
    consumers.iter().map(|(_, s)| s.lock().got.len()).sum()
}

/// Checks one destination: every acknowledged message arrived; QoS 2 ones exactly once.
fn check(what: &str, got: &[(u32, QoS)], acked: &HashMap<u32, QoS>) {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for (seq, _) in got {
        *counts.entry(*seq).or_default() += 1;
    }
    let mut missing: Vec<u32> = acked
        .keys()
        .filter(|seq| !counts.contains_key(seq))
        .copied()
        .collect();
    missing.sort_unstable();
    assert!(
        missing.is_empty(),
        "{what}: {} of {} acknowledged messages lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(20)]
    );
    let twice: Vec<u32> = got
        .iter()
        .filter(|(seq, qos)| *qos == QoS::ExactlyOnce && counts[seq] > 1)
        .map(|(seq, _)| *seq)
        .collect();
    assert!(
        twice.is_empty(),
        "{what}: QoS 2 messages delivered twice: {twice:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_repeated_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = durable_config(dir.path());
    let mut broker = SpawnedBroker::with_config(&config);

    // Persistent consumers: three group members and a plain subscriber, then offline.
    for id in MEMBERS {
        let mut member = connect(broker.addr, id, true).await;
        member
            .subscribe("$share/work/jobs/#", QoS::ExactlyOnce)
            .await;
        member.disconnect().await;
    }
    let mut plain = connect(broker.addr, PLAIN, true).await;
    plain.subscribe("jobs/#", QoS::ExactlyOnce).await;
    plain.disconnect().await;

    let mut publisher = PublisherState::default();
    for round in 0..ROUNDS {
        if round > 0 {
            broker = SpawnedBroker::with_config(&config);
        }
        publish_until_killed(&mut broker, &mut publisher, round == 0, 150 + 70 * round).await;
    }
    assert!(publisher.acked.len() >= 600, "{}", publisher.acked.len());

    // Drain, killed half-way.
    let consumers: Consumers = MEMBERS
        .iter()
        .chain([&PLAIN])
        .map(|id| (*id, Arc::new(Mutex::new(ConsumerState::default()))))
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    broker = SpawnedBroker::with_config(&config);
    // The publisher's last PUBRELs: its exchanges complete with the broker that has them.
    publish_until_killed(&mut broker, &mut publisher, false, 1).await;
    broker = SpawnedBroker::with_config(&config);
    let tasks = spawn_consumers(broker.addr, &consumers, &stop);
    let expected = publisher.acked.len() * 2;
    wait_until(
        Duration::from_secs(30),
        "half of the messages drained",
        || received(&consumers) >= expected / 2,
    )
    .await;
    broker.kill9();
    for task in tasks {
        task.await.unwrap();
    }

    broker = SpawnedBroker::with_config(&config);
    let tasks = spawn_consumers(broker.addr, &consumers, &stop);
    // Done when every consumer has been quiet for a while.
    let quiet = Duration::from_millis(1500);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let settled = consumers
            .iter()
            .all(|(_, s)| s.lock().last_activity.is_none_or(|at| at.elapsed() > quiet));
        if settled || Instant::now() > deadline {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }

    let group: Vec<(u32, QoS)> = consumers[..MEMBERS.len()]
        .iter()
        .flat_map(|(_, s)| s.lock().got.clone())
        .collect();
    eprintln!(
        "acknowledged {} (QoS 2: {}); group received {}, plain received {}",
        publisher.acked.len(),
        publisher
            .acked
            .values()
            .filter(|q| **q == QoS::ExactlyOnce)
            .count(),
        group.len(),
        consumers[3].1.lock().got.len()
    );
    check("shared group", &group, &publisher.acked);
    check(
        "plain subscriber",
        &consumers[3].1.lock().got,
        &publisher.acked,
    );
    // Work was shared: more than one member took part.
    let active = consumers[..MEMBERS.len()]
        .iter()
        .filter(|(_, s)| !s.lock().got.is_empty())
        .count();
    assert!(active > 1, "only {active} member got messages");
}

/// A will whose connection a crash cut is published after the restart, once its delay has run
/// (counted from the crash): the crash is a connection lost without DISCONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_survives_kill_9() {
    use sharq::packet::{LastWill, WillProperties};
    let dir = tempfile::tempdir().unwrap();
    let config = durable_config(dir.path());
    let mut broker = SpawnedBroker::with_config(&config);
    let mut watcher = connect(broker.addr, "watcher", true).await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    watcher.disconnect().await;

    let mut opts = ConnectOpts::new(ProtocolVersion::V5, "dying");
    opts.session_expiry = Some(60);
    let mut packet = opts.packet();
    packet.will = Some(LastWill {
        topic: ByteString::from("wills/dying"),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: Some(3),
            ..WillProperties::default()
        },
    });
    let (mut dying, _) = RawClient::connect_with(broker.addr, packet).await;
    dying.ping().await;
    // Let the session's record (with its will) reach the disk: the store commits every few ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.kill9();

    // Killed again before the will's delay has run: its record, and the time it counts from,
    // must survive that too.
    let mut broker = SpawnedBroker::with_config(&config);
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.kill9();
    let broker = SpawnedBroker::with_config(&config);
    let mut watcher = connect(broker.addr, "watcher", false).await;
    let will = watcher.recv_and_ack().await;

    assert_eq!(will.topic, "wills/dying");
    assert_eq!(will.payload, "gone");
    watcher.expect_no_publish(Duration::from_millis(500)).await;
}

/// A store file that is not ours stops the broker at start with an error naming the file;
/// nothing is overwritten.
#[test]
fn a_corrupt_store_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sharq.redb");
    std::fs::write(&file, b"definitely not a database, but somebody's data").unwrap();
    let (mut child, output, _lines, _config_dir) = spawn_sharq_raw(&durable_config(dir.path()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "sharq kept running on a corrupt store"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The reader threads may still be flushing the last lines.
    std::thread::sleep(Duration::from_millis(200));
    let output = output.lock().unwrap().clone();
    assert!(!status.success());
    assert!(
        output.contains(&file.display().to_string()) && output.contains("cannot open store"),
        "{output}"
    );
    assert!(!output.contains("listening for MQTT"), "{output}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"definitely not a database, but somebody's data"
    );
}
