//! Shared subscriptions under churn: four members keep dropping (socket loss, DISCONNECT,
//! takeover) and coming back while a publisher sends at least 2,000 QoS 1 messages (and goes on
//! until every kind of failure has happened, however the machine's speed paced the churn).
//! Afterwards no message is lost, and a message has an extra copy only where a member that
//! failed had received it without acknowledging it, at most one extra copy per such failure.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use parking_lot::Mutex;
use sharq::packet::{Packet, ProtocolVersion, QoS, ReasonCode};
use tokio::sync::Semaphore;

const MESSAGES: u32 = 2_000;
const MEMBERS: usize = 4;
const FILTER: &str = "$share/churn/c/#";
const MODES: [&str; 3] = ["socket drop", "disconnect", "takeover"];

/// One connection of one member: what it read, what it acknowledged, how it ended.
#[derive(Debug, Default, Clone)]
struct Incarnation {
    member: usize,
    received: Vec<u32>,
    acked: HashSet<u32>,
    /// How this connection ended, if it failed; None for the last one (still healthy).
    failure: Option<&'static str>,
}

type Log = Arc<Mutex<Vec<Incarnation>>>;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

async fn join(addr: SocketAddr, version: ProtocolVersion, id: &str) -> RawClient {
    let (mut client, _) = RawClient::connect_opts(addr, ConnectOpts::new(version, id)).await;
    client.subscribe(FILTER, QoS::AtLeastOnce).await;
    client
}

fn new_incarnation(log: &Log, member: usize) -> usize {
    let mut log = log.lock();
    log.push(Incarnation {
        member,
        ..Incarnation::default()
    });
    log.len() - 1
}

/// Reads for `period`, acknowledging (or not) and recording everything.
async fn read_for(client: &mut RawClient, log: &Log, idx: usize, period: Duration, ack: bool) {
    let deadline = tokio::time::Instant::now() + period;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return;
        }
        match client.next_event(left).await {
            Event::Packet(Packet::Publish(p)) => {
                let seq = payload_seq(&p.payload);
                log.lock()[idx].received.push(seq);
                if ack {
                    client.ack_nowait(&p).await;
                    log.lock()[idx].acked.insert(seq);
                }
            }
            Event::Packet(_) => {}
            Event::Timeout => return,
            Event::Closed => panic!("{}: broker closed a healthy member", client.client_id),
        }
    }
}

async fn run_member(
    member: usize,
    addr: SocketAddr,
    log: Log,
    publishing_done: Arc<AtomicBool>,
    finish: Arc<AtomicBool>,
    down: Arc<Semaphore>,
) {
    let version = if member % 2 == 0 { V5 } else { V3_1_1 };
    let id = format!("churn{member}");
    let mut rng = Lcg(member as u64 * 7919 + 17);
    let mut client = join(addr, version, &id).await;
    let mut idx = new_incarnation(&log, member);
    let mut failures = 0usize;
    loop {
        // Healthy: read and acknowledge everything for a while.
        let period = Duration::from_millis(100 + rng.next(300));
        read_for(&mut client, &log, idx, period, true).await;
        if publishing_done.load(Ordering::Relaxed) {
            break;
        }
        // At most two members down at a time, so the group never ends.
        let Ok(permit) = down.clone().try_acquire_owned() else {
            continue;
        };
        // Make sure every PUBACK sent so far has been processed, then stop acknowledging:
        // whatever is read from here on is "received but not acknowledged".
        client.ping().await;
        read_for(
            &mut client,
            &log,
            idx,
            Duration::from_millis(20 + rng.next(40)),
            false,
        )
        .await;
        let mode = MODES[failures % 3];
        failures += 1;
        log.lock()[idx].failure = Some(mode);
        client = match mode {
            "socket drop" => {
                client.drop_socket();
                join(addr, version, &id).await
            }
            "disconnect" => {
                client
                    .disconnect_and_wait(ReasonCode::NORMAL_DISCONNECTION)
                    .await;
                join(addr, version, &id).await
            }
            _ => {
                // The new connection takes the client id over (clean start); the old one is
                // kicked by the broker and never read again.
                let taken = join(addr, version, &id).await;
                drop(client);
                taken
            }
        };
        idx = new_incarnation(&log, member);
        drop(permit);
    }
    // Publishing is over: stay healthy and acknowledge until told to finish.
    while !finish.load(Ordering::Relaxed) {
        read_for(&mut client, &log, idx, Duration::from_millis(50), true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_churn_no_loss_bounded_duplicates() {
    let broker = TestBroker::with(|_| {}).await;
    let addr = broker.addr();
    let log: Log = Arc::default();
    let publishing_done = Arc::new(AtomicBool::new(false));
    let finish = Arc::new(AtomicBool::new(false));
    let down = Arc::new(Semaphore::new(2));
    let mut tasks = Vec::new();
    for member in 0..MEMBERS {
        tasks.push(tokio::spawn(run_member(
            member,
            addr,
            log.clone(),
            publishing_done.clone(),
            finish.clone(),
            down.clone(),
        )));
    }
    wait_until(TIMEOUT, "all members joined", || {
        broker
            .state()
            .router
            .group("churn", "c/#")
            .is_some_and(|g| g.member_count() == MEMBERS)
    })
    .await;

    // 2,000 messages over ~3 s: batches of 20, each acknowledged, 25 ms apart; then more
    // batches while some kind of failure has yet to happen (each member goes through the three
    // in turn, at a pace set by wall-clock periods that a busy machine stretches).
    let modes_seen = |log: &Log| {
        let log = log.lock();
        MODES
            .iter()
            .all(|mode| log.iter().any(|i| i.failure == Some(*mode)))
    };
    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "pub")).await;
    let churn_limit = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut seq = 0;
    while seq < MESSAGES || (!modes_seen(&log) && tokio::time::Instant::now() < churn_limit) {
        let end = seq + 20;
        publisher
            .publish_seqs("c/load", seq..end, QoS::AtLeastOnce)
            .await;
        seq = end;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let published = seq;
    publishing_done.store(true, Ordering::Relaxed);

    let covered = |log: &Log| {
        let log = log.lock();
        log.iter()
            .flat_map(|i| i.received.iter().copied())
            .collect::<HashSet<u32>>()
            .len()
    };
    let complete = poll_until(Duration::from_secs(20), || {
        covered(&log) == published as usize
    })
    .await;
    // Members caught mid-failure when publishing ended are still rejoining: wait (bounded) for
    // the group to settle rather than sampling it at a fixed moment.
    let group = broker.state().router.group("churn", "c/#").unwrap();
    poll_until(TIMEOUT, || {
        group.member_count() == MEMBERS && group.queued() == 0
    })
    .await;
    tokio::time::sleep(QUIET).await;
    let (members, queued) = (group.member_count(), group.queued());
    finish.store(true, Ordering::Relaxed);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("member task did not finish")
            .expect("member task panicked");
    }

    let log = log.lock().clone();
    let failures: Vec<&'static str> = log.iter().filter_map(|i| i.failure).collect();
    for mode in MODES {
        assert!(
            failures.contains(&mode),
            "churn did not exercise {mode}: {failures:?}"
        );
    }

    let mut copies: BTreeMap<u32, usize> = BTreeMap::new();
    let mut allowance: BTreeMap<u32, usize> = BTreeMap::new();
    let mut acked: BTreeMap<u32, usize> = BTreeMap::new();
    for inc in &log {
        let within = histogram(inc.received.iter().copied());
        let repeated: Vec<_> = within.iter().filter(|(_, &c)| c > 1).collect();
        assert!(
            repeated.is_empty(),
            "member {} got a message twice on one connection: {repeated:?}",
            inc.member
        );
        for &seq in &inc.received {
            *copies.entry(seq).or_default() += 1;
            if inc.acked.contains(&seq) {
                *acked.entry(seq).or_default() += 1;
            } else if inc.failure.is_some() {
                *allowance.entry(seq).or_default() += 1;
            } else {
                panic!(
                    "healthy member {} did not acknowledge {seq} (test bug)",
                    inc.member
                );
            }
        }
    }
    let lost: Vec<u32> = (0..published).filter(|s| !copies.contains_key(s)).collect();
    assert!(
        complete && lost.is_empty(),
        "{} messages lost: {lost:?} ({} failures)",
        lost.len(),
        failures.len()
    );
    eprintln!(
        "churn: {} connections, {} failures, {} extra copies",
        log.len(),
        failures.len(),
        copies.values().map(|n| n - 1).sum::<usize>()
    );
    let excess: Vec<(u32, usize, usize)> = copies
        .iter()
        .filter_map(|(&seq, &n)| {
            let allowed = 1 + allowance.get(&seq).copied().unwrap_or(0);
            (n > allowed).then_some((seq, n, allowed))
        })
        .collect();
    assert!(
        excess.is_empty(),
        "copies beyond at-least-once (seq, copies, allowed): {excess:?}"
    );
    assert_eq!(members, MEMBERS, "every member back in the group");
    assert_eq!(queued, 0, "nothing left in the group queue");
    let acked_twice: Vec<u32> = acked
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(&s, _)| s)
        .collect();
    assert!(
        acked_twice.is_empty(),
        "messages acknowledged by two members: {acked_twice:?}"
    );
}
