//! `kill -9` against the real binary with the durable store: every message a publisher got
//! PUBACK or PUBREC for is delivered after the restarts — to a shared group whose persistent
//! members are offline and to a plain persistent subscriber — and QoS 2 exactly once.
//!
//! The publisher pipelines QoS 1 and QoS 2 messages and the broker is killed mid-stream, several
//! times; then the consumers drain, with one more kill half-way through their draining, so that
//! exchanges in flight to them (QoS 2 in both stages) must survive too. Consumers are honest
//! MQTT receivers: a QoS 2 PUBLISH whose packet id they already answered with PUBREC (and saw no
//! PUBREL for) is the same message again, as the spec's receiver "Method B" says.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use bytestring::ByteString;
use parking_lot::Mutex;
use redb::{ReadableDatabase, ReadableTable};
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

/// True once `destination` (one consumer, or the members of one group) received every
/// acknowledged message.
fn drained(
    destination: &[(&'static str, Arc<Mutex<ConsumerState>>)],
    acked: &HashMap<u32, QoS>,
) -> bool {
    let got: HashSet<u32> = destination
        .iter()
        .flat_map(|(_, s)| s.lock().got.iter().map(|(seq, _)| *seq).collect::<Vec<_>>())
        .collect();
    acked.keys().all(|seq| got.contains(seq))
}

/// Returns once everything the broker at `addr` has journalled so far is on disk: a PUBACK is
/// sent only after the commit that holds every op appended before its PUBLISH was handled. The
/// message goes to a topic no test subscribes to, so it changes nothing else.
async fn journal_committed(client: &mut RawClient) {
    client
        .publish("sync/committed", b"", QoS::AtLeastOnce, false)
        .await;
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
    // Done when every acknowledged message has reached both destinations (bounded: the checks
    // below report what is still missing then), and the consumers have then been quiet for a
    // while, so that a duplicate still on its way shows itself.
    poll_until(Duration::from_secs(60), || {
        drained(&consumers[..MEMBERS.len()], &publisher.acked)
            && drained(&consumers[MEMBERS.len()..], &publisher.acked)
    })
    .await;
    let quiet = Duration::from_millis(1500);
    poll_until(Duration::from_secs(30), || {
        consumers
            .iter()
            .all(|(_, s)| s.lock().last_activity.is_none_or(|at| at.elapsed() > quiet))
    })
    .await;
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
    // The session's record (with its will), journalled at CONNECT, is on disk.
    journal_committed(&mut dying).await;
    broker.kill9();

    // Killed again before the will's delay has run: its record, and the time it counts from
    // (which recovery journals again, fixed), must survive that too.
    let mut broker = SpawnedBroker::with_config(&config);
    let mut syncer = RawClient::v5(broker.addr, "syncer").await;
    journal_committed(&mut syncer).await;
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
    let (mut child, output, lines, _config_dir) = spawn_sharq_raw(&durable_config(dir.path()));
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
    // Both pipes closed: the readers hang up once they have everything.
    while lines.recv_timeout(Duration::from_secs(5)).is_ok() {}
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

// ---------------------------------------------------------------------------------------------
// A damaged store: damaged records are never delivered; a file redb cannot read is refused and
// left byte for byte as it was.
// ---------------------------------------------------------------------------------------------

const STORE_FILE: &str = "sharq.redb";

/// Flips the lowest bit of the last byte of every copy of `marker` in `file` (redb leaves older
/// copies of a page in the file until it reuses them; the live one is among them). Returns how
/// many it flipped.
fn flip_in_file(file: &std::path::Path, marker: &[u8]) -> usize {
    let mut bytes = std::fs::read(file).unwrap();
    let mut flipped = 0;
    let mut from = 0;
    while let Some(at) = bytes[from..]
        .windows(marker.len())
        .position(|w| w == marker)
    {
        let at = from + at;
        bytes[at + marker.len() - 1] ^= 1;
        flipped += 1;
        from = at + marker.len();
    }
    std::fs::write(file, bytes).unwrap();
    flipped
}

/// Overwrites every page that holds the names of the store's tables: redb's table tree (the
/// copies of both commit slots).
fn damage_table_tree(file: &std::path::Path) -> usize {
    let mut bytes = std::fs::read(file).unwrap();
    let mut damaged = 0;
    for page in bytes.chunks_mut(4096).skip(1) {
        let holds = |name: &[u8]| page.windows(name.len()).any(|w| w == name);
        if holds(b"declared_groups") && holds(b"sharq_meta") {
            for (i, b) in page.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(31).wrapping_add(7);
            }
            damaged += 1;
        }
    }
    std::fs::write(file, bytes).unwrap();
    damaged
}

/// The `[http]` address from the `serving HTTP` line.
fn http_address(broker: &SpawnedBroker) -> std::net::SocketAddr {
    broker.wait_for_output("serving HTTP");
    let output = broker.output.lock().unwrap().clone();
    let line = output
        .lines()
        .find(|line| line.contains("serving HTTP"))
        .unwrap();
    let at = line.find("address=").unwrap() + "address=".len();
    line[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Runs the binary on `config` until it exits (it must, within 20 s); its status and output.
fn run_to_exit(config: &str) -> (std::process::ExitStatus, String) {
    let (mut child, output, lines, _config_dir) = spawn_sharq_raw(config);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sharq kept running; output:\n{}", output.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Both pipes closed: the readers hang up once they have everything.
    while lines.recv_timeout(Duration::from_secs(5)).is_ok() {}
    let output = output.lock().unwrap().clone();
    (status, output)
}

/// Messages `message-01` … `message-NN` published at QoS 1 to a persistent subscriber that is
/// offline, then the broker stopped cleanly.
async fn store_messages(config: &str, count: u32) {
    let mut broker = SpawnedBroker::with_config(config);
    let mut sub = connect(broker.addr, "sub", true).await;
    sub.subscribe("jobs/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let mut publisher = RawClient::v5(broker.addr, "publisher").await;
    for n in 1..=count {
        let payload = format!("message-{n:02}");
        publisher
            .publish("jobs/x", payload.as_bytes(), QoS::AtLeastOnce, false)
            .await;
    }
    publisher.disconnect().await;
    broker.terminate();
    assert!(broker.wait_exit(Duration::from_secs(20)).success());
}

/// Everything the persistent subscriber gets after the restart, acknowledged, in order.
async fn drain_sub(broker: &SpawnedBroker) -> Vec<String> {
    let mut sub = connect(broker.addr, "sub", false).await;
    let mut got = Vec::new();
    loop {
        match sub.next_event(Duration::from_secs(2)).await {
            Event::Packet(Packet::Publish(publish)) => {
                sub.ack(&publish).await;
                got.push(String::from_utf8_lossy(&publish.payload).into_owned());
            }
            Event::Packet(_) => {}
            Event::Timeout => return got,
            Event::Closed => panic!("the subscriber was disconnected"),
        }
    }
}

/// A flipped byte in a stored payload: that message is never delivered (here it would read as
/// another, valid one: `message-02` becomes `message-03`), it is counted on `/metrics` and logged
/// with its queue, kept aside byte for byte, and every other message is delivered in order —
/// one damaged record in the window recovery reads and one in the part refilled from disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_is_not_delivered_and_the_rest_is() {
    let top = tempfile::tempdir().unwrap();
    // Not there yet: the broker makes it, private.
    let dir = top.path().join("store");
    let config = format!(
        "{}memory_window_messages = 3\n[http]\nlisten = \"127.0.0.1:0\"\n",
        durable_config(&dir)
    );
    store_messages(&config, 8).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700, "store directory");
        assert_eq!(mode(&dir.join(STORE_FILE)), 0o600, "store file");
    }
    let file = dir.join(STORE_FILE);
    assert!(flip_in_file(&file, b"message-02") > 0);
    assert!(flip_in_file(&file, b"message-06") > 0);

    let broker = SpawnedBroker::with_config(&config);
    let got = drain_sub(&broker).await;
    assert_eq!(
        got,
        [
            "message-01",
            "message-03",
            "message-04",
            "message-05",
            "message-07",
            "message-08"
        ],
        "output:\n{}",
        broker.output.lock().unwrap()
    );
    let http = http_address(&broker);
    let metrics = common::http::get(http, "/metrics").await;
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l == "sharq_store_damaged_records_total 2"),
        "{}",
        metrics.body
    );
    let output = broker.output.lock().unwrap().clone();
    let logged = output
        .lines()
        .find(|l| l.contains("damaged record not delivered"))
        .unwrap_or_else(|| panic!("not logged:\n{output}"));
    assert!(
        logged.contains("queue=c:sub") && logged.contains("checksum"),
        "{logged}"
    );
    broker.terminate();
    let mut broker = broker;
    assert!(broker.wait_exit(Duration::from_secs(20)).success());

    // Kept aside as they were read, the flipped bit included; gone from the queue.
    let db = redb::Database::open(&file).unwrap();
    let read = db.begin_read().unwrap();
    let damaged: redb::TableDefinition<(&str, &str, u64), &[u8]> =
        redb::TableDefinition::new("damaged_records");
    let table = read.open_table(damaged).unwrap();
    let mut kept: Vec<(String, String, bool)> = Vec::new();
    for row in table.iter().unwrap() {
        let (key, value) = row.unwrap();
        let (kind, queue, _) = key.value();
        let value = value.value();
        let holds = |m: &[u8]| value.windows(m.len()).any(|w| w == m);
        kept.push((
            kind.to_owned(),
            queue.to_owned(),
            holds(b"message-03") || holds(b"message-07"),
        ));
    }
    assert_eq!(
        kept,
        vec![
            ("entries".to_owned(), "c:sub".to_owned(), true),
            ("entries".to_owned(), "c:sub".to_owned(), true)
        ]
    );
}

/// redb's table tree overwritten: the broker refuses to start with an error naming the file
/// and why, exits non-zero without a panic, and leaves the file byte for byte as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_damaged_pages_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let config = durable_config(dir.path());
    store_messages(&config, 3).await;
    let file = dir.path().join(STORE_FILE);
    assert!(damage_table_tree(&file) > 0, "the table tree was found");
    let before = std::fs::read(&file).unwrap();

    let (status, output) = run_to_exit(&config);
    assert!(!status.success(), "{output}");
    assert!(
        output.contains(&file.display().to_string()) && output.contains("damaged"),
        "{output}"
    );
    assert!(!output.contains("panicked"), "{output}");
    assert!(!output.contains("listening for MQTT"), "{output}");
    assert!(
        std::fs::read(&file).unwrap() == before,
        "the refused file was modified"
    );
}

/// A store of format 1 (records without checksums, written here through redb the way format 1
/// laid them out) is kept aside as `sharq.redb.format1.bak`, upgraded on open, and delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_store_is_upgraded_on_open_and_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let config = durable_config(dir.path());
    store_messages(&config, 3).await;
    let file = dir.path().join(STORE_FILE);
    {
        let db = redb::Database::open(&file).unwrap();
        let write = db.begin_write().unwrap();
        let v1 = |value: &[u8]| {
            let mut old = value[..value.len() - 4].to_vec();
            old[0] = 1;
            old
        };
        {
            for name in ["sessions", "retained"] {
                let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new(name);
                let mut table = write.open_table(def).unwrap();
                let rows: Vec<(String, Vec<u8>)> = table
                    .iter()
                    .unwrap()
                    .map(|r| r.unwrap())
                    .map(|(k, v)| (k.value().to_owned(), v1(v.value())))
                    .collect();
                for (k, v) in rows {
                    table.insert(k.as_str(), v.as_slice()).unwrap();
                }
            }
            for name in ["entries", "inflight"] {
                let def: redb::TableDefinition<(&str, u64), &[u8]> =
                    redb::TableDefinition::new(name);
                let mut table = write.open_table(def).unwrap();
                let rows: Vec<((String, u64), Vec<u8>)> = table
                    .iter()
                    .unwrap()
                    .map(|r| r.unwrap())
                    .map(|(k, v)| {
                        let (o, id) = k.value();
                        ((o.to_owned(), id), v1(v.value()))
                    })
                    .collect();
                for ((o, id), v) in rows {
                    table.insert((o.as_str(), id), v.as_slice()).unwrap();
                }
            }
            let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("sharq_meta");
            write.open_table(meta).unwrap().insert("format", 1).unwrap();
        }
        write.commit().unwrap();
    }
    let format1 = std::fs::read(&file).unwrap();

    let broker = SpawnedBroker::with_config(&config);
    broker.wait_for_output("store upgraded from format 1 to 2");
    let got = drain_sub(&broker).await;
    assert_eq!(got, ["message-01", "message-02", "message-03"]);
    assert_eq!(
        std::fs::read(dir.path().join("sharq.redb.format1.bak")).unwrap(),
        format1
    );
}
