//! Unit tests of the session: queueing, flight, acknowledgements, takeover, claims.

use std::time::Instant;

use super::*;
use crate::broker::delivery::{Enqueued, QueueLimits};
use crate::broker::delivery::{GroupId, GroupOrigin, GroupTag};
use crate::broker::message::Message;
use crate::broker::message::Quota;
use crate::packet::{Packet, ProtocolVersion, QoS, ReasonCode};
use bytes::Bytes;

fn message(topic: &str, payload: &'static [u8], qos: QoS) -> Arc<Message> {
    Message::internal(
        ByteString::from(topic),
        Bytes::from_static(payload),
        qos,
        false,
    )
}

fn delivery(payload: &'static [u8], qos: QoS, group: Option<GroupId>) -> Delivery {
    Delivery {
        message: message("t", payload, qos),
        qos,
        retain: false,
        subscription_ids: Vec::new(),
        group: group.map(|id| GroupTag {
            origin: GroupOrigin::Local(id),
            tally: Default::default(),
            handed_at: Instant::now(),
            failures: 0,
            key: None,
        }),
        stored: None,
    }
}

const LIMITS: QueueLimits = QueueLimits {
    max_messages: 3,
    max_bytes: 1 << 20,
};

fn online(session: &Session, window: usize) -> Attached {
    session.attach(ProtocolVersion::V5, window, u32::MAX, None, 0)
}

fn payloads(packets: &[Packet]) -> Vec<Bytes> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.payload.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn full_queue_drops_oldest_qos0_first_then_refuses() {
    let session = Session::new(1, ByteString::from("c"), Owner::Anonymous, 0, None);
    assert_eq!(
        session.enqueue(delivery(b"a", QoS::AtMostOnce, None), LIMITS),
        Enqueued::Queued
    );
    assert_eq!(
        session.enqueue(delivery(b"b", QoS::AtLeastOnce, None), LIMITS),
        Enqueued::Queued
    );
    assert_eq!(
        session.enqueue(delivery(b"c", QoS::AtLeastOnce, None), LIMITS),
        Enqueued::Queued
    );
    assert_eq!(
        session.enqueue(delivery(b"d", QoS::AtLeastOnce, None), LIMITS),
        Enqueued::QueuedDroppingOldestQos0
    );
    assert_eq!(
        session.enqueue(delivery(b"e", QoS::AtLeastOnce, None), LIMITS),
        Enqueued::Refused(Quota::SessionMessages)
    );
    let attached = online(&session, 10);
    let mut out = Vec::new();
    let mut dropped = Dropped::default();
    session.take_sendable(
        attached.generation,
        Instant::now(),
        &mut out,
        &mut dropped,
        100,
    );
    assert_eq!(
        payloads(&out),
        vec![
            Bytes::from_static(b"b"),
            Bytes::from_static(b"c"),
            Bytes::from_static(b"d")
        ]
    );
}

#[test]
fn inflight_window_limits_qos1_and_ack_frees_a_slot() {
    let session = Session::new(1, ByteString::from("c"), Owner::Anonymous, 0, None);
    let attached = online(&session, 2);
    for p in [&b"1"[..], &b"2"[..], &b"3"[..]] {
        session.enqueue(delivery(p, QoS::AtLeastOnce, None), LIMITS);
    }
    let mut out = Vec::new();
    let mut dropped = Dropped::default();
    session.take_sendable(
        attached.generation,
        Instant::now(),
        &mut out,
        &mut dropped,
        100,
    );
    assert_eq!(out.len(), 2);
    assert!(!session.member_load().has_room());
    let Packet::Publish(first) = &out[0] else {
        panic!("not a publish")
    };
    let id = first.packet_id.unwrap();
    assert!(matches!(
        session.acknowledge_publish(attached.generation, id, ReasonCode::SUCCESS, false),
        AckOutcome::Done
    ));
    assert!(matches!(
        session.acknowledge_publish(attached.generation, id, ReasonCode::SUCCESS, false),
        AckOutcome::UnknownPacketId
    ));
    out.clear();
    session.take_sendable(
        attached.generation,
        Instant::now(),
        &mut out,
        &mut dropped,
        100,
    );
    assert_eq!(payloads(&out), vec![Bytes::from_static(b"3")]);
}

#[test]
fn resume_resends_inflight_in_order_with_dup() {
    let session = Session::new(1, ByteString::from("c"), Owner::Anonymous, 60, None);
    let attached = online(&session, 10);
    session.enqueue(delivery(b"1", QoS::AtLeastOnce, None), LIMITS);
    session.enqueue(delivery(b"2", QoS::ExactlyOnce, None), LIMITS);
    let mut out = Vec::new();
    let mut dropped = Dropped::default();
    session.take_sendable(
        attached.generation,
        Instant::now(),
        &mut out,
        &mut dropped,
        100,
    );
    let Packet::Publish(second) = &out[1] else {
        panic!("not a publish")
    };
    assert!(matches!(
        session.acknowledge_publish(
            attached.generation,
            second.packet_id.unwrap(),
            ReasonCode::SUCCESS,
            true
        ),
        AckOutcome::SendPubRel { stored: false }
    ));
    assert_eq!(
        session.detach(attached.generation).map(|r| r.len()),
        Some(0)
    );
    let resumed = online(&session, 10);
    assert_eq!(resumed.resend.len(), 2);
    assert!(matches!(&resumed.resend[0], Packet::Publish(p) if p.dup && p.payload == "1"));
    assert!(matches!(&resumed.resend[1], Packet::PubRel(_)));
}

#[test]
fn detach_returns_shared_qos1_inflight_then_queued_and_keeps_qos2() {
    let group: GroupId = 7;
    let session = Session::new(1, ByteString::from("c"), Owner::Anonymous, 60, None);
    let attached = online(&session, 2);
    session.enqueue(
        delivery(b"q1-inflight", QoS::AtLeastOnce, Some(group)),
        LIMITS,
    );
    session.enqueue(
        delivery(b"q2-inflight", QoS::ExactlyOnce, Some(group)),
        LIMITS,
    );
    session.enqueue(
        delivery(b"q1-queued", QoS::AtLeastOnce, Some(group)),
        LIMITS,
    );
    let mut out = Vec::new();
    let mut dropped = Dropped::default();
    session.take_sendable(
        attached.generation,
        Instant::now(),
        &mut out,
        &mut dropped,
        100,
    );
    assert_eq!(out.len(), 2);
    let back: Vec<Bytes> = session
        .detach(attached.generation)
        .unwrap()
        .into_iter()
        .map(|d| d.message.payload.clone())
        .collect();
    assert_eq!(
        back,
        vec![
            Bytes::from_static(b"q1-inflight"),
            Bytes::from_static(b"q1-queued")
        ]
    );
    assert_eq!(
        session.inflight(),
        1,
        "the QoS 2 copy stays with its member"
    );
}

/// A connection that was taken over may still be reading its socket. The PUBACK its
/// client sent for a shared copy names a packet id the new connection can have reused
/// (ids wrap; the copy itself went back to the group at the takeover). It must not complete
/// the new connection's message: that one would leave flight unacknowledged, and when the
/// new connection failed too it would not go back to the group — lost.
#[test]
fn stale_connection_ack_cannot_complete_the_new_connections_message() {
    let group: GroupId = 7;
    let session = Session::new(1, ByteString::from("c"), Owner::Anonymous, 60, None);
    let old = online(&session, 10);
    session.enqueue(delivery(b"first", QoS::AtLeastOnce, Some(group)), LIMITS);
    let mut out = Vec::new();
    let mut dropped = Dropped::default();
    session.take_sendable(old.generation, Instant::now(), &mut out, &mut dropped, 100);
    let Some(Packet::Publish(first)) = out.first() else {
        panic!("nothing sent")
    };
    let reused = first.packet_id.unwrap();

    // Takeover: the old connection's copy goes back to the group.
    let new = online(&session, 10);
    assert_eq!(new.redispatch.len(), 1);
    // The packet id counter comes round to the freed id for the new connection's message.
    session.state.lock().next_packet_id = reused;
    session.enqueue(delivery(b"second", QoS::AtLeastOnce, Some(group)), LIMITS);
    out.clear();
    session.take_sendable(new.generation, Instant::now(), &mut out, &mut dropped, 100);
    assert!(matches!(out.first(), Some(Packet::Publish(p)) if p.packet_id == Some(reused)));

    // The old connection reads its client's PUBACK for "first".
    assert!(matches!(
        session.acknowledge_publish(old.generation, reused, ReasonCode::SUCCESS, false),
        AckOutcome::UnknownPacketId
    ));
    assert_eq!(session.inflight(), 1, "\"second\" is still in flight");
    // The new connection fails before its client acknowledged: "second" goes back.
    let back: Vec<Bytes> = session
        .detach(new.generation)
        .unwrap()
        .into_iter()
        .map(|d| d.message.payload.clone())
        .collect();
    assert_eq!(back, vec![Bytes::from_static(b"second")]);
}

#[test]
fn only_the_owner_claims_and_an_unrecorded_owner_is_adopted() {
    let alice = Owner::User(ByteString::from("alice"));
    let bob = Owner::User(ByteString::from("bob"));
    let session = Session::new(1, ByteString::from("c"), alice.clone(), 60, None);
    let generation = session.generation();
    assert!(!session.claim(&bob));
    assert!(!session.claim(&Owner::Anonymous));
    assert_eq!(
        session.generation(),
        generation,
        "a refused claim changes nothing"
    );
    assert!(session.claim(&alice));
    let legacy = Session::new(2, ByteString::from("d"), Owner::Unrecorded, 60, None);
    assert!(legacy.claim(&bob));
    assert_eq!(legacy.owner(), bob);
    assert_eq!(legacy.username().as_deref(), Some("bob"));
    assert!(!legacy.claim(&alice), "adopted: now only bob's");
}

#[test]
fn expiry_stands_down_for_a_claimed_or_attached_session() {
    let session = Session::new(1, ByteString::from("c"), Owner::Anonymous, 60, None);
    let first = online(&session, 10);
    assert!(session.detach(first.generation).is_some());
    // A reconnect claimed it (under the registry's lock) but has not attached yet.
    assert!(session.claim(&Owner::Anonymous));
    assert!(session.end_if_idle_since(first.generation).is_none());
    assert!(!session.is_ended());
    let second = online(&session, 10);
    assert!(
        session.end_if_idle_since(second.generation).is_none(),
        "attached"
    );
    assert!(session.detach(second.generation).is_some());
    assert!(session.end_if_idle_since(second.generation).is_some());
    assert!(session.is_ended());
}

#[test]
fn stale_connection_cannot_take_messages_after_takeover() {
    let session = Session::new(1, ByteString::from("c"), Owner::Anonymous, 60, None);
    let old = online(&session, 10);
    let new = online(&session, 10);
    session.enqueue(delivery(b"x", QoS::AtMostOnce, None), LIMITS);
    let mut out = Vec::new();
    let mut dropped = Dropped::default();
    session.take_sendable(old.generation, Instant::now(), &mut out, &mut dropped, 100);
    assert!(out.is_empty());
    assert!(session.detach(old.generation).is_none());
    session.take_sendable(new.generation, Instant::now(), &mut out, &mut dropped, 100);
    assert_eq!(out.len(), 1);
}
