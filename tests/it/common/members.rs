//! Shared-group members that read in their own tasks, and checks of what a group delivered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use sharq::packet::{Packet, Publish, QoS, ReasonCode};

use super::{wait_until, Event, RawClient, QUIET, TIMEOUT};

/// A sequence-numbered payload, so tests can tell every message apart.
pub fn seq_payload(seq: u32) -> Bytes {
    Bytes::from(format!("{seq}"))
}

pub fn payload_seq(payload: &[u8]) -> u32 {
    std::str::from_utf8(payload)
        .expect("utf-8 payload")
        .parse()
        .expect("sequence-number payload")
}

/// What a member does with the QoS 1/2 messages it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// PUBACK / PUBREC → PUBCOMP, at once.
    Ack,
    /// Like `Ack`, then a PINGREQ round trip: once [`Member::acked`] counts a message, the
    /// broker has processed its acknowledgement, so a test can control each member's in-flight
    /// count instead of racing the members' tasks.
    AckConfirmed,
    /// Never acknowledge anything.
    Never,
    /// PUBACK / PUBREC with this (failure) reason code.
    Reject(u8),
}

/// One message as a member received it.
#[derive(Debug, Clone)]
pub struct Got {
    /// The raw first byte of the PUBLISH's fixed header.
    pub first_byte: u8,
    pub publish: Publish,
    pub seq: u32,
}

/// A member reading in its own task, recording everything it receives.
pub struct Member {
    received: Arc<parking_lot::Mutex<Vec<Got>>>,
    /// Messages acknowledged (PUBACK or PUBREC sent; with `AckConfirmed`, also processed).
    acked: Arc<std::sync::atomic::AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<RawClient>,
}

impl Member {
    pub fn spawn(mut client: RawClient, mode: AckMode) -> Member {
        let received: Arc<parking_lot::Mutex<Vec<Got>>> = Arc::default();
        let (stop, mut stopped) = oneshot::channel();
        let log = received.clone();
        let acked: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let acks = acked.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return client,
                    event = client.next_event(Duration::from_secs(3600)) => match event {
                        Event::Packet(Packet::Publish(publish)) => {
                            let seq = payload_seq(&publish.payload);
                            let first_byte = client.first_byte();
                            log.lock().push(Got { first_byte, publish: publish.clone(), seq });
                            if let Some(id) = publish.packet_id {
                                match (mode, publish.qos) {
                                    (AckMode::Ack, _) => {
                                        client.ack_nowait(&publish).await;
                                        acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                    }
                                    (AckMode::AckConfirmed, _) => {
                                        client.ack_nowait(&publish).await;
                                        client.ping().await;
                                        acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                    }
                                    (AckMode::Never, _) => {}
                                    (AckMode::Reject(code), QoS::AtLeastOnce) => client.puback(id, ReasonCode(code)).await,
                                    (AckMode::Reject(code), _) => client.pubrec(id, ReasonCode(code)).await,
                                }
                            }
                        }
                        Event::Packet(Packet::PubRel(rel)) => {
                            if matches!(mode, AckMode::Ack | AckMode::AckConfirmed) {
                                client.pubcomp(rel.packet_id).await;
                            }
                        }
                        Event::Packet(_) => {}
                        Event::Timeout => {}
                        Event::Closed => {
                            // Wait to be stopped; the test decides what a closed link means.
                            let _ = (&mut stopped).await;
                            return client;
                        }
                    }
                }
            }
        });
        Member {
            received,
            acked,
            stop: Some(stop),
            task,
        }
    }

    pub fn count(&self) -> usize {
        self.received.lock().len()
    }

    /// Messages this member has acknowledged (see [`AckMode::AckConfirmed`]).
    pub fn acked(&self) -> usize {
        self.acked.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn seqs(&self) -> Vec<u32> {
        self.received.lock().iter().map(|g| g.seq).collect()
    }

    pub fn got(&self) -> Vec<Got> {
        self.received.lock().clone()
    }

    /// Stops reading and hands the client back (packets not yet read stay unread).
    pub async fn stop(mut self) -> RawClient {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("member task did not stop")
            .expect("member task panicked")
    }
}

/// Total messages received by `members`.
pub fn total(members: &[&Member]) -> usize {
    members.iter().map(|m| m.count()).sum()
}

/// Waits until `members` together received `n` messages, then watches [`QUIET`] for extra
/// copies.
pub async fn wait_total(members: &[&Member], n: usize) {
    wait_until(
        Duration::from_secs(10),
        &format!("{n} messages in total"),
        || total(members) >= n,
    )
    .await;
    tokio::time::sleep(QUIET).await;
}

/// How many times each sequence number appears.
pub fn histogram(seqs: impl IntoIterator<Item = u32>) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for seq in seqs {
        *counts.entry(seq).or_insert(0) += 1;
    }
    counts
}

/// Asserts that `seqs` is exactly `expected`, each once.
pub fn assert_exactly_once(
    what: &str,
    seqs: impl IntoIterator<Item = u32>,
    expected: std::ops::Range<u32>,
) {
    let counts = histogram(seqs);
    let missing: Vec<u32> = expected
        .clone()
        .filter(|s| !counts.contains_key(s))
        .collect();
    let dups: Vec<(u32, usize)> = counts
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(&s, &c)| (s, c))
        .collect();
    let stray: Vec<u32> = counts
        .keys()
        .filter(|s| !expected.contains(s))
        .copied()
        .collect();
    assert!(
        missing.is_empty() && dups.is_empty() && stray.is_empty(),
        "{what}: missing {missing:?}, duplicated (seq, copies) {dups:?}, unexpected {stray:?}"
    );
}
