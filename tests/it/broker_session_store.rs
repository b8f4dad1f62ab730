//! Sessions kept in the on-disk store come back at start: offline, with their subscriptions, so
//! messages published before the client reconnects wait for it. The records are written with the
//! store's own API, as an earlier run would have left them.

use std::time::Duration;

use crate::common::{connect_packet, store_sessions, sub_options, RawClient, TestBroker};
use sharq::broker::store::encoding::StoredSession;
use sharq::packet::{ProtocolVersion, QoS};

struct Record {
    client_id: &'static str,
    expiry_interval: u32,
    subscriptions: Vec<(String, sharq::packet::SubscriptionOptions, Option<u32>)>,
}

async fn broker_with(records: Vec<Record>) -> (TestBroker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    store_sessions(
        dir.path(),
        records
            .into_iter()
            .map(|r| {
                (
                    r.client_id.to_owned(),
                    StoredSession {
                        expiry_interval: r.expiry_interval,
                        disconnected_at_ms: None,
                        subscriptions: r.subscriptions,
                        will: None,
                        owner: sharq::broker::owner::Owner::Anonymous,
                    },
                )
            })
            .collect(),
    );
    let path = dir.path().to_owned();
    let broker = TestBroker::with(|c| c.storage.dir = path).await;
    (broker, dir)
}

#[tokio::test]
async fn restored_session_keeps_plain_and_shared_subscriptions() {
    let (broker, _dir) = broker_with(vec![Record {
        client_id: "worker",
        expiry_interval: 3600,
        subscriptions: vec![
            ("jobs/#".into(), sub_options(QoS::AtLeastOnce), Some(7)),
            (
                "$share/pool/tasks/+".into(),
                sub_options(QoS::AtLeastOnce),
                None,
            ),
        ],
    }])
    .await;
    let addr = broker.addr();
    assert_eq!(broker.state().router.subscription_count(), 2);
    assert!(broker.state().router.group("pool", "tasks/+").is_some());

    // Published while the restored session is offline: the plain copy waits in its queue, the
    // shared one in the group queue (its only member is offline).
    let mut publisher = RawClient::v5(addr, "publisher").await;
    publisher
        .publish("jobs/1", b"queued", QoS::AtLeastOnce, false)
        .await;
    publisher
        .publish("tasks/a", b"shared", QoS::AtLeastOnce, false)
        .await;

    let mut connect = connect_packet(ProtocolVersion::V5, "worker");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(3600);
    let (mut worker, connack) = RawClient::connect_with(addr, connect).await;
    assert!(
        connack.session_present,
        "the restored session must be resumed"
    );
    let mut payloads = Vec::new();
    for _ in 0..2 {
        let publish = worker.recv_and_ack().await;
        if publish.topic == "jobs/1" {
            assert_eq!(publish.properties.subscription_identifiers, vec![7]);
        }
        payloads.push(publish.payload.clone());
    }
    payloads.sort();
    assert_eq!(payloads, vec![&b"queued"[..], &b"shared"[..]]);
    worker.expect_no_publish(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn restored_session_with_invalid_filter_skips_only_that_filter() {
    let (broker, _dir) = broker_with(vec![Record {
        client_id: "c",
        expiry_interval: 60,
        subscriptions: vec![
            ("a/#/b".into(), sub_options(QoS::AtMostOnce), None),
            ("ok/+".into(), sub_options(QoS::AtMostOnce), None),
        ],
    }])
    .await;
    assert_eq!(broker.state().router.subscription_count(), 1);
}
