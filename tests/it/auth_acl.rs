//! `[auth] acl_file`: Mosquitto's ACL syntax plus `share GLOB`, enforced on PUBLISH (0x87 on
//! v5; acknowledged and dropped on 3.1.1), SUBSCRIBE (0x87 / 0x80 where nothing the filter
//! reaches is readable), delivery (live, retained and shared copies, checked per message where
//! a filter reaches unreadable topics), wills (checked when sent) and shared-group joins, and
//! reloaded on request.

use crate::common::*;
use bytes::Bytes;
use bytestring::ByteString;
use sharq::broker::shared::GroupDrop;
use sharq::broker::DropReason;
use sharq::packet::{LastWill, ProtocolVersion, QoS, ReasonCode, WillProperties};

const ACL: &str = "\
# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic deny alice/secret/#
topic write wills/alice
topic write retained/#
share team-a-*

user bob
topic read alice/inbox/#
topic read retained/#
topic read wills/#
topic readwrite jobs/#
share team-b

pattern readwrite clients/%c/#
";

const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V5, ProtocolVersion::V3_1_1];

async fn broker(acl: &str) -> (TestBroker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sharq.acl");
    std::fs::write(&path, acl).unwrap();
    let broker = TestBroker::with(|c| {
        c.auth.acl_file = Some(path);
        c.auth.users = [("alice", "a"), ("bob", "b")]
            .into_iter()
            .map(|(u, p)| (u.to_owned(), p.to_owned()))
            .collect();
    })
    .await;
    (broker, dir)
}

async fn login(
    broker: &TestBroker,
    version: ProtocolVersion,
    user: Option<&str>,
    client_id: &str,
    will: Option<LastWill>,
) -> RawClient {
    let mut connect = ConnectOpts::new(version, client_id).packet();
    connect.username = user.map(ByteString::from);
    connect.password = user.map(|u| Bytes::from(u[..1].to_owned()));
    connect.will = will;
    let (client, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    client
}

fn v(version: ProtocolVersion) -> &'static str {
    if version == ProtocolVersion::V5 {
        "v5"
    } else {
        "v311"
    }
}

#[tokio::test]
async fn publish_is_allowed_or_refused_and_never_routed_when_refused() {
    let (broker, _dir) = broker(ACL).await;
    let mut bob = login(&broker, ProtocolVersion::V5, Some("bob"), "bob", None).await;
    bob.subscribe("jobs/#", QoS::AtLeastOnce).await;
    bob.subscribe("alice/inbox/#", QoS::AtLeastOnce).await;
    for version in VERSIONS {
        let id = format!("alice-{}", v(version));
        let mut alice = login(&broker, version, Some("alice"), &id, None).await;
        // Allowed: delivered.
        alice
            .publish("alice/inbox/1", b"ok", QoS::AtLeastOnce, false)
            .await;
        assert_eq!(bob.recv_and_ack().await.payload, "ok");
        // Refused: no write rule (jobs/#), and a deny rule over a grant (alice/secret/#).
        for (topic, qos) in [
            ("jobs/1", QoS::AtLeastOnce),
            ("jobs/2", QoS::ExactlyOnce),
            ("alice/secret/x", QoS::AtLeastOnce),
        ] {
            let packet_id = alice
                .publish_nowait(topic, Bytes::from_static(b"no"), qos, false)
                .await
                .unwrap();
            let kind = if qos == QoS::AtLeastOnce {
                "PUBACK"
            } else {
                "PUBREC"
            };
            let ack = alice.recv_ack(kind, packet_id).await;
            let expected = if version == ProtocolVersion::V5 {
                ReasonCode::NOT_AUTHORIZED
            } else {
                ReasonCode::SUCCESS
            };
            assert_eq!(ack.reason_code, expected, "{} {topic}", v(version));
            if qos == QoS::ExactlyOnce && version == ProtocolVersion::V3_1_1 {
                alice
                    .send(&sharq::packet::Packet::PubRel(sharq::packet::Ack::new(
                        packet_id,
                    )))
                    .await;
                alice.recv_ack("PUBCOMP", packet_id).await;
            }
        }
        // `%c` patterns: the client's own subtree.
        alice
            .publish(
                &format!("clients/{id}/state"),
                b"mine",
                QoS::AtLeastOnce,
                false,
            )
            .await;
    }
    bob.expect_no_publish(QUIET).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn subscribe_is_refused_only_where_nothing_is_readable() {
    let (broker, _dir) = broker(ACL).await;
    for version in VERSIONS {
        let mut bob = login(
            &broker,
            version,
            Some("bob"),
            &format!("bob-{}", v(version)),
            None,
        )
        .await;
        let refused = if version == ProtocolVersion::V5 {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode(0x80)
        };
        // `alice/#` and `#` reach alice/inbox/..., which bob reads; public/x and alice/outbox/+
        // reach nothing he does.
        let suback = bob
            .subscribe_with(
                vec![
                    ("alice/inbox/+", sub_options(QoS::AtLeastOnce)),
                    ("alice/#", sub_options(QoS::AtLeastOnce)),
                    ("#", sub_options(QoS::AtLeastOnce)),
                    ("public/x", sub_options(QoS::AtLeastOnce)),
                    ("alice/outbox/+", sub_options(QoS::AtLeastOnce)),
                ],
                None,
            )
            .await;
        assert_eq!(
            suback.reason_codes,
            vec![
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::GRANTED_QOS_1,
                refused,
                refused
            ],
            "{}",
            v(version)
        );
        let mut anonymous = login(
            &broker,
            version,
            None,
            &format!("anon-{}", v(version)),
            None,
        )
        .await;
        let suback = anonymous
            .subscribe_with(
                vec![
                    ("public/#", sub_options(QoS::AtMostOnce)),
                    ("alice/inbox/1", sub_options(QoS::AtMostOnce)),
                ],
                None,
            )
            .await;
        assert_eq!(
            suback.reason_codes,
            vec![ReasonCode::GRANTED_QOS_0, refused]
        );
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn shared_group_joins_follow_share_rules_and_topic_rules() {
    let (broker, _dir) = broker(ACL).await;
    let mut alice = login(&broker, ProtocolVersion::V5, Some("alice"), "alice", None).await;
    let mut bob = login(&broker, ProtocolVersion::V5, Some("bob"), "bob", None).await;
    let codes = |suback: sharq::packet::SubAck| suback.reason_codes;
    assert_eq!(
        codes(
            alice
                .subscribe_with(
                    vec![
                        (
                            "$share/team-a-1/alice/inbox/#",
                            sub_options(QoS::AtLeastOnce)
                        ),
                        ("$share/team-b/alice/inbox/#", sub_options(QoS::AtLeastOnce)),
                    ],
                    None
                )
                .await
        ),
        vec![ReasonCode::GRANTED_QOS_1, ReasonCode::NOT_AUTHORIZED],
        "alice may join team-a-* groups only"
    );
    assert_eq!(
        codes(
            bob.subscribe_with(
                vec![
                    ("$share/team-b/jobs/#", sub_options(QoS::AtLeastOnce)),
                    ("$share/team-a-1/jobs/#", sub_options(QoS::AtLeastOnce)),
                    // The right group, but a filter bob may read nothing of.
                    (
                        "$share/team-b/alice/outbox/#",
                        sub_options(QoS::AtLeastOnce)
                    ),
                ],
                None
            )
            .await
        ),
        vec![
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::NOT_AUTHORIZED,
            ReasonCode::NOT_AUTHORIZED
        ]
    );
    assert!(broker.state().router.group("team-a-1", "jobs/#").is_none());
    broker.shutdown().await;
}

#[tokio::test]
async fn retained_messages_reach_only_readers() {
    let (broker, _dir) = broker(ACL).await;
    let mut alice = login(&broker, ProtocolVersion::V5, Some("alice"), "alice", None).await;
    alice
        .publish("retained/news", b"kept", QoS::AtLeastOnce, true)
        .await;
    for version in VERSIONS {
        let mut bob = login(
            &broker,
            version,
            Some("bob"),
            &format!("bob-{}", v(version)),
            None,
        )
        .await;
        bob.subscribe("retained/#", QoS::AtLeastOnce).await;
        let publish = bob.recv_and_ack().await;
        assert!(publish.retain);
        assert_eq!(publish.payload, "kept");
        let mut anonymous = login(
            &broker,
            version,
            None,
            &format!("anon-{}", v(version)),
            None,
        )
        .await;
        let suback = anonymous
            .subscribe_with(vec![("retained/#", sub_options(QoS::AtLeastOnce))], None)
            .await;
        assert!(suback.reason_codes[0].is_error());
        anonymous.expect_no_publish(QUIET).await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn wills_are_checked_when_they_are_sent() {
    let (broker, _dir) = broker(ACL).await;
    let mut bob = login(&broker, ProtocolVersion::V5, Some("bob"), "bob", None).await;
    bob.subscribe("wills/#", QoS::AtLeastOnce).await;
    let will = |topic: &str| LastWill {
        topic: ByteString::from(topic),
        payload: Bytes::from(topic.to_owned()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties::default(),
    };
    for version in VERSIONS {
        for topic in ["wills/alice", "wills/other"] {
            let id = format!("alice-{}-{topic}", v(version));
            let alice = login(&broker, version, Some("alice"), &id, Some(will(topic))).await;
            alice.drop_socket();
            broker.wait_session_ended(&id).await;
        }
        let got = bob.recv_and_ack().await;
        assert_eq!(got.topic, "wills/alice", "{}", v(version));
        bob.expect_no_publish(QUIET).await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_reloaded_acl_applies_to_connections_already_open() {
    let (broker, dir) = broker(ACL).await;
    let mut bob = login(&broker, ProtocolVersion::V5, Some("bob"), "bob", None).await;
    let packet_id = bob
        .publish_nowait("jobs/1", Bytes::from_static(b"x"), QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(
        bob.recv_ack("PUBACK", packet_id).await.reason_code,
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
    std::fs::write(
        dir.path().join("sharq.acl"),
        ACL.replace("topic readwrite jobs/#", "topic read jobs/#"),
    )
    .unwrap();
    broker.state().reload_acl().unwrap();
    let packet_id = bob
        .publish_nowait("jobs/1", Bytes::from_static(b"x"), QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(
        bob.recv_ack("PUBACK", packet_id).await.reason_code,
        ReasonCode::NOT_AUTHORIZED,
        "the connection's cached decision is dropped on reload"
    );
    // A file that does not parse leaves the rules in force.
    std::fs::write(dir.path().join("sharq.acl"), "topik read #\n").unwrap();
    let err = broker.state().reload_acl().unwrap_err().to_string();
    assert!(err.contains("line 1"), "{err}");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_bad_acl_file_stops_the_start_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.acl");
    std::fs::write(&path, "user a\ntopic read a/#/b\n").unwrap();
    let mut config = sharq::Config::default();
    config.server.listeners = vec!["127.0.0.1:0".parse().unwrap()];
    config.auth.acl_file = Some(path.clone());
    let err = sharq::Broker::start(config).await.unwrap_err().to_string();
    assert!(err.contains("bad.acl") && err.contains("line 2"), "{err}");
}

/// Paho's interoperability suite runs under the first two lines; alice may publish on the denied
/// topic, so that delivery has something to filter.
const PAHO_ACL: &str = "\
topic readwrite #
topic deny test/nosubscribe

user alice
topic write #
";

fn refused(version: ProtocolVersion) -> ReasonCode {
    if version == ProtocolVersion::V5 {
        ReasonCode::NOT_AUTHORIZED
    } else {
        ReasonCode(0x80)
    }
}

/// Issue #25: one deny rule must not break wildcard subscriptions. `#` and `+/+` are granted
/// beside `topic deny test/nosubscribe`, and the denied topic is filtered at delivery: a
/// message on it, published before an allowed one by the same client, never arrives first.
#[tokio::test]
async fn one_deny_rule_leaves_wildcards_granted_and_filters_delivery() {
    let (broker, _dir) = broker(PAHO_ACL).await;
    let mut alice = login(&broker, ProtocolVersion::V5, Some("alice"), "alice", None).await;
    for version in VERSIONS {
        let id = format!("anon-{}", v(version));
        let mut anon = login(&broker, version, None, &id, None).await;
        let codes = anon
            .subscribe_many(
                &["#", "+/+", "test/nosubscribe", "test/+", "TopicA/#"],
                QoS::AtLeastOnce,
            )
            .await;
        assert_eq!(
            codes,
            vec![
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::GRANTED_QOS_1,
                refused(version),
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::GRANTED_QOS_1
            ],
            "{}",
            v(version)
        );
        let filtered_before = broker.state().stats.dropped_by(DropReason::Acl);
        for (topic, payload) in [
            ("test/nosubscribe", "denied"),
            ("test/allowed", "ok"),
            ("TopicA/B", "ok"),
        ] {
            alice
                .publish(topic, payload.as_bytes(), QoS::AtLeastOnce, false)
                .await;
        }
        for expected in ["test/allowed", "TopicA/B"] {
            let publish = anon.recv_and_ack().await;
            assert_eq!(publish.topic, expected, "{}", v(version));
        }
        assert_eq!(
            broker.state().stats.dropped_by(DropReason::Acl),
            filtered_before + 1,
            "one session, one filtered copy, counted as acl"
        );
        // Deeper than the denied topic is readable again: the rule is about that topic only.
        alice
            .publish("test/nosubscribe/deeper", b"ok", QoS::AtLeastOnce, false)
            .await;
        assert_eq!(anon.recv_and_ack().await.topic, "test/nosubscribe/deeper");
        anon.drop_socket();
        broker.wait_session_ended(&id).await;
    }
    broker.shutdown().await;
}

/// Retained messages on the denied topic are not sent at subscribe time either.
#[tokio::test]
async fn retained_messages_on_a_denied_topic_are_not_sent_to_a_wildcard() {
    let (broker, _dir) = broker(PAHO_ACL).await;
    let mut alice = login(&broker, ProtocolVersion::V5, Some("alice"), "alice", None).await;
    for (topic, payload) in [
        ("test/nosubscribe", "denied"),
        ("TopicA/C", "kept"),
        ("end", "sentinel"),
    ] {
        alice
            .publish(topic, payload.as_bytes(), QoS::AtLeastOnce, true)
            .await;
    }
    for version in VERSIONS {
        let id = format!("anon-{}", v(version));
        let mut anon = login(&broker, version, None, &id, None).await;
        for (filter, expected) in [
            ("#", vec!["TopicA/C", "end", "end"]),
            ("+/+", vec!["TopicA/C", "end"]),
        ] {
            let filtered_before = broker.state().stats.dropped_by(DropReason::Acl);
            let suback = anon.subscribe(filter, QoS::AtLeastOnce).await;
            assert_eq!(suback.reason_codes, vec![ReasonCode::GRANTED_QOS_1]);
            // Retained copies follow their SUBACK in the session's queue: the sentinel a second
            // SUBSCRIBE brings comes after everything the first one sent, so a copy on the
            // denied topic would be among these.
            anon.subscribe("end", QoS::AtLeastOnce).await;
            let mut topics = Vec::new();
            for _ in 0..expected.len() {
                let publish = anon.recv_and_ack().await;
                assert!(publish.retain);
                topics.push(publish.topic.to_string());
            }
            topics.sort();
            assert_eq!(topics, expected, "{} {filter}", v(version));
            assert_eq!(
                broker.state().stats.dropped_by(DropReason::Acl),
                filtered_before + 1,
                "{filter}"
            );
            anon.unsubscribe(&[filter, "end"]).await;
        }
        anon.drop_socket();
        broker.wait_session_ended(&id).await;
    }
    broker.shutdown().await;
}

/// A filter is refused when all it reaches is denied: `test/#` under `topic deny test/#`.
#[tokio::test]
async fn a_filter_whose_whole_reach_is_denied_is_refused() {
    let (broker, _dir) =
        broker("topic readwrite #\ntopic deny test/#\ntopic deny a\ntopic deny a/+/#\n").await;
    for version in VERSIONS {
        let id = format!("anon-{}", v(version));
        let mut anon = login(&broker, version, None, &id, None).await;
        let filters = ["test/#", "test/+", "test", "a/#", "+/+", "#", "b/a"];
        let codes = anon.subscribe_many(&filters, QoS::AtMostOnce).await;
        let no = refused(version);
        let yes = ReasonCode::GRANTED_QOS_0;
        // `a/#` is denied whole by `a` and `a/+/#` together.
        assert_eq!(
            codes,
            vec![no, no, no, no, yes, yes, yes],
            "{} {filters:?}",
            v(version)
        );
    }
    broker.shutdown().await;
}

/// `$share/g/#` is granted beside the deny rule; the member a denied message falls to drops it
/// (counted per group as `acl`), and no member ever gets it.
#[tokio::test]
async fn shared_members_never_get_the_denied_topic() {
    let (broker, _dir) = broker(PAHO_ACL).await;
    let mut alice = login(&broker, ProtocolVersion::V5, Some("alice"), "alice", None).await;
    let mut members = Vec::new();
    for version in VERSIONS {
        let id = format!("member-{}", v(version));
        let mut member = login(&broker, version, None, &id, None).await;
        let suback = member.subscribe("$share/g/#", QoS::AtLeastOnce).await;
        assert_eq!(suback.reason_codes, vec![ReasonCode::GRANTED_QOS_1]);
        members.push(member);
    }
    let denied = 3;
    let allowed = 6;
    for i in 0..denied {
        alice
            .publish("test/nosubscribe", b"denied", QoS::AtLeastOnce, false)
            .await;
        for j in 0..allowed / denied {
            alice
                .publish(&format!("jobs/{i}/{j}"), b"ok", QoS::AtLeastOnce, false)
                .await;
        }
    }
    let group = broker.state().router.group("g", "#").unwrap();
    wait_until(TIMEOUT, "every message handed out or dropped", || {
        group
            .counters
            .dispatched
            .load(std::sync::atomic::Ordering::Relaxed)
            == allowed
            && group.counters.dropped_by(GroupDrop::Acl) == denied
    })
    .await;
    let mut received = 0;
    for member in &mut members {
        let count = group
            .member_stats()
            .iter()
            .find(|m| *m.client_id == *member.client_id)
            .map_or(0, |m| m.dispatched);
        for _ in 0..count {
            let publish = member.recv_and_ack().await;
            assert!(publish.topic.starts_with("jobs/"), "{}", publish.topic);
            received += 1;
        }
    }
    assert_eq!(received, allowed);
    broker.shutdown().await;
}

/// Subscriptions restored from a session record that names no owner (written before owners
/// were kept) are read-checked as an anonymous client's until the client connects again; from
/// then on, as the client now behind them.
#[tokio::test]
async fn restored_subscriptions_are_checked_for_the_client_that_resumes_them() {
    let dir = tempfile::tempdir().unwrap();
    store_sessions(
        dir.path(),
        vec![(
            "worker".to_owned(),
            sharq::broker::store::encoding::StoredSession {
                expiry_interval: 3600,
                disconnected_at_ms: None,
                subscriptions: vec![("#".to_owned(), sub_options(QoS::AtLeastOnce), None)],
                will: None,
                // Stored before owners were kept: the first identity to resume it adopts it.
                owner: sharq::broker::owner::Owner::Unrecorded,
            },
        )],
    );
    let acl = dir.path().join("sharq.acl");
    std::fs::write(&acl, format!("{PAHO_ACL}\nuser bob\ntopic read #\n")).unwrap();
    let storage = dir.path().to_owned();
    let broker = TestBroker::with(|c| {
        c.storage.dir = storage;
        c.auth.acl_file = Some(acl);
        c.auth.users = [("alice", "a"), ("bob", "b")]
            .into_iter()
            .map(|(u, p)| (u.to_owned(), p.to_owned()))
            .collect();
    })
    .await;
    let mut alice = login(&broker, ProtocolVersion::V5, Some("alice"), "alice", None).await;
    // Offline, under the anonymous rules: the denied topic is not queued, the other is.
    alice
        .publish("test/nosubscribe", b"before", QoS::AtLeastOnce, false)
        .await;
    alice
        .publish("TopicA", b"before", QoS::AtLeastOnce, false)
        .await;
    let mut connect = ConnectOpts::new(ProtocolVersion::V5, "worker").packet();
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(3600);
    connect.username = Some(ByteString::from("bob"));
    connect.password = Some(Bytes::from_static(b"b"));
    let (mut worker, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert!(connack.session_present);
    assert_eq!(worker.recv_and_ack().await.topic, "TopicA");
    // bob may read everything: the denied topic of anonymous clients reaches him now.
    alice
        .publish("test/nosubscribe", b"after", QoS::AtLeastOnce, false)
        .await;
    let publish = worker.recv_and_ack().await;
    assert_eq!(
        (&*publish.topic, &publish.payload[..]),
        ("test/nosubscribe", &b"after"[..])
    );
    broker.shutdown().await;
}
