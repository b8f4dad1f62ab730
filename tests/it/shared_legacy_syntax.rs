//! HiveMQ 3's shared-subscription spelling `$share:GROUP:FILTER` (`shared.legacy_colon_syntax`).
//! On, it is the same subscription as `$share/GROUP/FILTER`: the same group (one copy per
//! message between members of either spelling), the same validation (SUBACK 0x8F / 0x80), and
//! UNSUBSCRIBE with either spelling removes it; a stored session restores it into its group.
//! Off (the default), it is an ordinary filter, matching only topics literally named so.

use crate::common;

use crate::common::*;
use sharq::broker::store::encoding::StoredSession;
use sharq::packet::{ProtocolVersion, QoS, ReasonCode};

const COLON: &str = "$share:g:legacy/+/t";
const SLASH: &str = "$share/g/legacy/+/t";

async fn broker(legacy: bool) -> TestBroker {
    TestBroker::with(|config| config.shared.legacy_colon_syntax = legacy).await
}

async fn member(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    id: &str,
    filter: &str,
) -> Member {
    let (mut client, _) = RawClient::connect_opts(addr, ConnectOpts::new(version, id)).await;
    client.subscribe(filter, QoS::AtLeastOnce).await;
    Member::spawn(client, AckMode::Ack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_colon_members_share_one_group_with_slash_members() {
    let broker = broker(true).await;
    let addr = broker.addr();
    let a = member(addr, V5, "colon-v5", COLON).await;
    let b = member(addr, V5, "slash-v5", SLASH).await;
    let c = member(addr, V3_1_1, "colon-v311", COLON).await;
    let router = &broker.state().router;
    let group = router
        .group("g", "legacy/+/t")
        .expect("one group g on legacy/+/t");
    assert_eq!(group.member_count(), 3);
    assert_eq!(router.groups().len(), 1, "no group under another name");
    // Memberships and plain subscriptions together: the colon form is not also a plain one.
    assert_eq!(router.subscription_count(), 3);

    let (mut p, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "pub")).await;
    p.publish_seqs("legacy/x/t", 0..30, QoS::AtLeastOnce).await;
    wait_total(&[&a, &b, &c], 30).await;
    assert_exactly_once("group g", [&a, &b, &c].iter().flat_map(|m| m.seqs()), 0..30);
    // The default strategy is an exact round robin over the three members.
    assert_eq!((a.count(), b.count(), c.count()), (10, 10, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_unsubscribe_with_the_colon_form_leaves_the_group() {
    let broker = broker(true).await;
    let addr = broker.addr();
    let (mut a, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "colon")).await;
    a.subscribe(COLON, QoS::AtLeastOnce).await;
    let b = member(addr, V5, "slash", SLASH).await;
    let group = broker.state().router.group("g", "legacy/+/t").unwrap();
    assert_eq!(group.member_count(), 2);

    assert_eq!(
        a.unsubscribe(&[COLON]).await.reason_codes,
        vec![ReasonCode::SUCCESS]
    );
    assert_eq!(group.member_count(), 1);
    assert_eq!(
        a.unsubscribe(&[COLON]).await.reason_codes,
        vec![ReasonCode::NO_SUBSCRIPTION_EXISTED]
    );
    let filters = broker
        .state()
        .session("colon")
        .unwrap()
        .subscription_filters();
    assert!(filters.is_empty(), "{filters:?}");

    // Either spelling names the same subscription: subscribe with one, remove with the other.
    a.subscribe(SLASH, QoS::AtLeastOnce).await;
    a.subscribe(COLON, QoS::AtLeastOnce).await;
    assert_eq!(group.member_count(), 2);
    let filters = broker
        .state()
        .session("colon")
        .unwrap()
        .subscription_filters();
    assert_eq!(filters, vec![SLASH.to_owned()]);
    assert_eq!(
        a.unsubscribe(&[COLON]).await.reason_codes,
        vec![ReasonCode::SUCCESS]
    );
    assert_eq!(group.member_count(), 1);

    // Everything now goes to the remaining member; `a` gets nothing (checked in order: the
    // marker sent after the batch is the first and only thing `a`, resubscribed plainly, sees).
    let (mut p, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "pub")).await;
    p.publish_seqs("legacy/x/t", 0..10, QoS::AtLeastOnce).await;
    wait_total(&[&b], 10).await;
    assert_exactly_once("remaining member", b.seqs(), 0..10);
    a.subscribe("marker", QoS::AtLeastOnce).await;
    p.publish("marker", &seq_payload(99), QoS::AtLeastOnce, false)
        .await;
    let first = a.expect_publish().await;
    assert_eq!(
        &*first.topic, "marker",
        "the unsubscribed member got {first:?}"
    );
}

async fn check_invalid_colon_forms(version: ProtocolVersion, refused: ReasonCode) {
    let broker = broker(true).await;
    let addr = broker.addr();
    let (mut c, _) = RawClient::connect_opts(addr, ConnectOpts::new(version, "validator")).await;
    for filter in [
        "$share:",
        "$share:g",
        "$share::x",
        "$share:g:",
        "$share:a+b:x",
        "$share:#:x",
        "$share:a/b:x",
        "$share:g:a/#/b",
    ] {
        let codes = c.subscribe_many(&[filter], QoS::AtLeastOnce).await;
        assert_eq!(codes, vec![refused], "{version:?}: SUBSCRIBE {filter:?}");
    }
    assert!(broker.state().router.groups().is_empty());
    assert_eq!(broker.state().router.subscription_count(), 0);
    c.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_invalid_colon_forms_are_refused_v5() {
    check_invalid_colon_forms(V5, ReasonCode::TOPIC_FILTER_INVALID).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_invalid_colon_forms_are_refused_v311() {
    check_invalid_colon_forms(V3_1_1, ReasonCode(0x80)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_the_colon_form_is_a_plain_filter() {
    let broker = broker(false).await;
    let addr = broker.addr();
    let (mut plain, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "colon")).await;
    plain.subscribe(COLON, QoS::AtLeastOnce).await;
    let member = member(addr, V5, "slash", SLASH).await;
    let router = &broker.state().router;
    assert_eq!(router.groups().len(), 1);
    assert_eq!(router.group("g", "legacy/+/t").unwrap().member_count(), 1);
    // The group membership and the plain subscription.
    assert_eq!(router.subscription_count(), 2);

    // A topic the group matches: only the group gets it.
    let (mut p, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "pub")).await;
    p.publish_seqs("legacy/x/t", 0..10, QoS::AtLeastOnce).await;
    // A topic literally named like the colon filter: only the plain subscriber gets it.
    p.publish(
        "$share:g:legacy/x/t",
        &seq_payload(10),
        QoS::AtLeastOnce,
        false,
    )
    .await;
    // A marker for the group, after the literal topic: the group's only member receives in
    // routing order, so once it has the marker it would have had the literal topic too.
    p.publish("legacy/x/t", &seq_payload(11), QoS::AtLeastOnce, false)
        .await;

    // The plain subscriber's first message is the literal topic: none of the group's came
    // before it.
    let first = plain.expect_publish().await;
    assert_eq!(&*first.topic, "$share:g:legacy/x/t");
    assert_eq!(payload_seq(&first.payload), 10);
    plain.ack_nowait(&first).await;

    wait_until(TIMEOUT, "the group's marker", || {
        member.seqs().contains(&11)
    })
    .await;
    let mut seqs = member.seqs();
    seqs.retain(|s| *s != 11);
    assert_exactly_once("group g", seqs, 0..10);
    assert_eq!(member.count(), 11);

    // The colon form unsubscribes as the plain filter it is.
    assert_eq!(
        plain.unsubscribe(&[COLON]).await.reason_codes,
        vec![ReasonCode::SUCCESS]
    );
    assert_eq!(router.subscription_count(), 1);
    assert_eq!(router.group("g", "legacy/+/t").unwrap().member_count(), 1);
}

/// A stored session comes back into its group whichever spelling it was stored with, under
/// the setting at start; the session then knows the subscription by its `$share/` name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_colon_subscription_restores_by_the_setting_at_start() {
    for legacy in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        common::store_sessions(
            dir.path(),
            vec![(
                "worker".to_owned(),
                StoredSession {
                    expiry_interval: 3600,
                    disconnected_at_ms: None,
                    subscriptions: vec![(COLON.into(), sub_options(QoS::AtLeastOnce), None)],
                    will: None,
                    owner: sharq::broker::owner::Owner::Anonymous,
                },
            )],
        );
        let path = dir.path().to_owned();
        let broker = TestBroker::with(|c| {
            c.storage.dir = path;
            c.shared.legacy_colon_syntax = legacy;
        })
        .await;
        let state = broker.state();
        let filters = state.session("worker").unwrap().subscription_filters();
        if legacy {
            assert_eq!(
                state
                    .router
                    .group("g", "legacy/+/t")
                    .unwrap()
                    .member_count(),
                1
            );
            assert_eq!(filters, vec![SLASH.to_owned()]);
        } else {
            assert!(state.router.groups().is_empty());
            assert_eq!(state.router.subscription_count(), 1);
            assert_eq!(filters, vec![COLON.to_owned()]);
        }
        broker.shutdown().await;
    }
}
