//! Broker limits and housekeeping: the offline queue bound, the packet size limit, and `$SYS`.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::common::*;
use bytestring::ByteString;
use sharq::packet::{Ack, Packet, ProtocolVersion, QoS, ReasonCode};

fn persistent_v5(id: &str, clean: bool) -> sharq::packet::Connect {
    let mut connect = connect_packet(ProtocolVersion::V5, id);
    connect.clean_start = clean;
    connect.properties.session_expiry_interval = Some(60);
    connect
}

/// Documented overflow policy: when the session queue is full, the oldest queued QoS 0 message
/// is dropped to make room; with no QoS 0 message queued, the newest message is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queue_bound_refuses_newest_qos1() {
    let broker = TestBroker::with(|c| c.limits.max_queued_messages = 5).await;
    let (mut sub, _) = RawClient::connect_with(broker.addr(), persistent_v5("bound1", true)).await;
    sub.subscribe("bound/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    // Messages published while the broker still has the connection would be in flight to it,
    // not queued.
    broker.wait_session_offline("bound1").await;
    let mut publisher = RawClient::v5(broker.addr(), "bound1-pub").await;
    for i in 0..8 {
        let ack = publish_qos1(&mut publisher, "bound/t", format!("m{i}").as_bytes()).await;
        if i < 5 {
            assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "m{i}: {ack:?}");
        } else {
            // It reached no queue: the publisher is told, with the bound's key.
            assert_quota_exceeded(&ack, "limits.max_queued_messages");
        }
    }
    let (mut sub, _) = RawClient::connect_with(broker.addr(), persistent_v5("bound1", false)).await;
    for i in 0..5 {
        let got = sub.recv_and_ack().await;
        assert_eq!(
            got.payload,
            format!("m{i}").into_bytes(),
            "oldest five are kept"
        );
    }
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queue_bound_drops_oldest_qos0_first() {
    let broker = TestBroker::with(|c| c.limits.max_queued_messages = 5).await;
    let (mut sub, _) = RawClient::connect_with(broker.addr(), persistent_v5("bound0", true)).await;
    sub.subscribe("bound0/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    broker.wait_session_offline("bound0").await;
    let mut publisher = RawClient::v5(broker.addr(), "bound0-pub").await;
    for (payload, qos) in [
        ("a0", QoS::AtMostOnce),
        ("a1", QoS::AtMostOnce),
        ("b0", QoS::AtLeastOnce),
        ("b1", QoS::AtLeastOnce),
        ("b2", QoS::AtLeastOnce),
        ("b3", QoS::AtLeastOnce),
    ] {
        publisher
            .publish("bound0/t", payload.as_bytes(), qos, false)
            .await;
    }
    let (mut sub, _) = RawClient::connect_with(broker.addr(), persistent_v5("bound0", false)).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(String::from_utf8(sub.recv_and_ack().await.payload.to_vec()).unwrap());
    }
    assert_eq!(got, vec!["a1", "b0", "b1", "b2", "b3"]);
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_messages_delivered_after_reconnect_v311() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V3_1_1, "offline311");
    connect.clean_start = false;
    let (mut sub, _) = RawClient::connect_with(broker.addr(), connect.clone()).await;
    sub.subscribe("off/t", QoS::ExactlyOnce).await;
    sub.disconnect().await;
    broker.wait_session_offline("offline311").await;
    let mut publisher = RawClient::v311(broker.addr(), "offline311-pub").await;
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publisher.publish("off/t", b"queued", qos, false).await;
    }
    let (mut sub, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert!(connack.session_present);
    assert_eq!(sub.recv_and_ack().await.qos, QoS::AtLeastOnce);
    assert_eq!(sub.recv_and_ack().await.qos, QoS::ExactlyOnce);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_packet_gets_disconnect_0x95() {
    let broker = TestBroker::with(|c| c.limits.max_packet_size = 1024).await;
    let mut client = RawClient::v5(broker.addr(), "oversize").await;
    client
        .send(&Packet::Publish(publish_packet(
            "big/t",
            &[7u8; 2000],
            QoS::AtMostOnce,
            None,
        )))
        .await;
    client.expect_disconnect(0x95).await;
    assert_broker_alive(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_packet_closes_v311() {
    let broker = TestBroker::with(|c| c.limits.max_packet_size = 1024).await;
    let mut client = RawClient::v311(broker.addr(), "oversize311").await;
    client
        .send(&Packet::Publish(publish_packet(
            "big/t",
            &[7u8; 2000],
            QoS::AtMostOnce,
            None,
        )))
        .await;
    client.expect_error_close(0x95).await;
    assert_broker_alive(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics_published() {
    let broker = TestBroker::with(|c| c.server.sys_interval_secs = 1).await;
    let mut sub = RawClient::v5(broker.addr(), "sys-watch").await;
    sub.subscribe("$SYS/#", QoS::AtMostOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), "sys-pub").await;
    publisher
        .publish("any/t", b"x", QoS::AtLeastOnce, false)
        .await;
    let wanted = [
        "$SYS/broker/uptime",
        "$SYS/broker/clients/connected",
        "$SYS/broker/messages/received",
        "$SYS/broker/messages/sent",
        "$SYS/broker/version",
    ];
    let mut seen: HashMap<String, String> = HashMap::new();
    // A bound on waiting for the periodic publisher, not a claim about its punctuality.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !wanted.iter().all(|t| seen.contains_key(*t))
        || seen
            .get("$SYS/broker/messages/received")
            .is_none_or(|v| v == "0")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing $SYS topics; seen {seen:?}"
        );
        let got = sub.recv_publish().await;
        seen.insert(
            got.topic.to_string(),
            String::from_utf8_lossy(&got.payload).into_owned(),
        );
    }
    let connected: u64 = seen["$SYS/broker/clients/connected"]
        .trim()
        .parse()
        .unwrap();
    assert!(connected >= 2, "{seen:?}");
}

/// Sends a QoS 1 PUBLISH and returns its PUBACK, whatever its reason code.
async fn publish_qos1(client: &mut RawClient, topic: &str, payload: &[u8]) -> Ack {
    let id = client.packet_id();
    client
        .send(&Packet::Publish(publish_packet(
            topic,
            payload,
            QoS::AtLeastOnce,
            Some(id),
        )))
        .await;
    client.recv_ack("PUBACK", id).await
}

fn assert_quota_exceeded(ack: &Ack, key: &str) {
    assert_eq!(ack.reason_code, ReasonCode::QUOTA_EXCEEDED, "{ack:?}");
    let reason = ack.properties.reason_string.as_deref().unwrap_or("");
    assert!(
        reason.contains(key),
        "reason string should name {key}: {ack:?}"
    );
}

/// True if the broker closed `stream` (end of stream or reset) within `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(limit, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// `limits.max_connections` counts sockets from accept() on: of five times the limit in sockets
/// that never send CONNECT, at most the limit stay open; the rest are closed at once, counted,
/// and the places free up when the open ones go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_bounds_sockets_that_never_connect() {
    const LIMIT: usize = 10;
    let broker = TestBroker::with(|c| c.limits.max_connections = LIMIT).await;
    let mut sockets = Vec::new();
    for _ in 0..5 * LIMIT {
        sockets.push(tokio::net::TcpStream::connect(broker.addr()).await.unwrap());
    }
    let checks: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            tokio::spawn(async move {
                let closed = closed_within(&mut socket, Duration::from_secs(2)).await;
                (closed, socket)
            })
        })
        .collect();
    let mut open = Vec::new();
    let mut closed = 0;
    for check in checks {
        let (was_closed, socket) = check.await.unwrap();
        if was_closed {
            closed += 1;
        } else {
            open.push(socket);
        }
    }
    assert_eq!(
        open.len(),
        LIMIT,
        "exactly the limit stays open ({closed} closed)"
    );
    let state = broker.broker.state();
    assert_eq!(state.open_sockets(), LIMIT);
    assert_eq!(
        state
            .stats
            .connections_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        (4 * LIMIT) as u64
    );
    // While the limit is taken, even a real client is turned away...
    let mut late = tokio::net::TcpStream::connect(broker.addr()).await.unwrap();
    assert!(closed_within(&mut late, TIMEOUT).await);
    // ...and once the half-open sockets go, it gets in.
    drop(open);
    wait_until(TIMEOUT, "the places to free up", || {
        state.open_sockets() == 0
    })
    .await;
    assert_broker_alive(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_counted_in_sys() {
    let broker = TestBroker::with(|c| {
        c.limits.max_connections = 2;
        c.server.sys_interval_secs = 1;
    })
    .await;
    let mut watcher = RawClient::v5(broker.addr(), "refusal-watch").await;
    watcher
        .subscribe("$SYS/broker/connections/refused", QoS::AtMostOnce)
        .await;
    let _held = tokio::net::TcpStream::connect(broker.addr()).await.unwrap();
    for _ in 0..3 {
        let mut refused = tokio::net::TcpStream::connect(broker.addr()).await.unwrap();
        assert!(closed_within(&mut refused, TIMEOUT).await);
    }
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no $SYS count of 3");
        let got = watcher.recv_publish().await;
        if &got.payload[..] == b"3" {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_limit_closes_extra_sockets_from_one_address() {
    let broker = TestBroker::with(|c| c.limits.max_connections_per_ip = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(RawClient::v5(broker.addr(), &client_id("per-ip")).await);
    }
    let mut fourth = tokio::net::TcpStream::connect(broker.addr()).await.unwrap();
    assert!(
        closed_within(&mut fourth, TIMEOUT).await,
        "a 4th socket from 127.0.0.1 is closed"
    );
    // Another source address has places of its own (all of 127/8 is loopback on Linux).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket.connect(broker.addr()).await.unwrap();
    other
        .write_all(&encode(
            &Packet::Connect(Box::new(connect_packet(
                ProtocolVersion::V5,
                "per-ip-other",
            ))),
            ProtocolVersion::V5,
        ))
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    use tokio::io::AsyncReadExt;
    let read = tokio::time::timeout(TIMEOUT, other.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(1))) && byte[0] == 0x20,
        "CONNACK from 127.0.0.2: {read:?}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_is_configurable() {
    let broker = TestBroker::with(|c| c.limits.connect_timeout_secs = 1).await;
    let mut silent = tokio::net::TcpStream::connect(broker.addr()).await.unwrap();
    // The default (10 s) is beyond TIMEOUT: only the configured second can close it in time.
    assert!(closed_within(&mut silent, TIMEOUT).await);
}

fn heavy_user_properties(bytes: usize) -> Vec<(ByteString, ByteString)> {
    let value = "v".repeat(60_000);
    (0..bytes / 60_000)
        .map(|i| {
            (
                ByteString::from(format!("k{i}")),
                ByteString::from(value.as_str()),
            )
        })
        .collect()
}

/// Whole-message accounting against the real binary: QoS 1 messages with 480 KB of user
/// properties to an offline group with a 1 MiB queue. What fits is accepted; the rest is refused
/// with 0x97 naming the bound, counted, and not kept: the broker's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_heavy_flood_meets_the_group_queue_byte_bound() {
    let broker = SpawnedBroker::with_config(&format!(
        "{EPHEMERAL_CONFIG}[shared]\ngroup_queue_max_bytes = 1048576\n"
    ));
    let mut connect = connect_packet(ProtocolVersion::V5, "heavy-member");
    connect.clean_start = true;
    connect.properties.session_expiry_interval = Some(300);
    let (mut member, _) = RawClient::connect_with(broker.addr, connect).await;
    member
        .subscribe("$share/heavy/heavy/t", QoS::AtLeastOnce)
        .await;
    member.disconnect().await;

    let mut publisher = RawClient::v5(broker.addr, "heavy-pub").await;
    let properties = heavy_user_properties(480_000);
    let publish_heavy = |id: u16| {
        let mut publish = publish_packet("heavy/t", b"job", QoS::AtLeastOnce, Some(id));
        publish.properties.user_properties = properties.clone();
        Packet::Publish(publish)
    };
    // Warm up allocator and buffers with the first two, which fit.
    for id in 1..=2 {
        publisher.send(&publish_heavy(id)).await;
        let ack = publisher.recv_ack("PUBACK", id).await;
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{ack:?}");
    }
    let before = rss_kib(broker.pid());
    for id in 3..=60 {
        publisher.send(&publish_heavy(id)).await;
        let ack = publisher.recv_ack("PUBACK", id).await;
        assert_quota_exceeded(&ack, "shared.group_queue_max_bytes");
    }
    let grown = rss_kib(broker.pid()).saturating_sub(before);
    // 58 refused messages are 27 MiB; holding them, as before whole-message accounting, grew
    // RSS by about that much.
    assert!(grown < 8 * 1024, "RSS grew by {grown} KiB");
}

async fn publish_retained(client: &mut RawClient, topic: &str, payload: &[u8]) -> Ack {
    let id = client.packet_id();
    let mut publish = publish_packet(topic, payload, QoS::AtLeastOnce, Some(id));
    publish.retain = true;
    client.send(&Packet::Publish(publish)).await;
    client.recv_ack("PUBACK", id).await
}

/// `limits.max_retained_bytes` bounds the retained store over whole messages; a retained
/// publish it cannot take still reaches current subscribers, and its v5 publisher hears 0x97.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_store_byte_limit() {
    let broker = TestBroker::with(|c| c.limits.max_retained_bytes = 10_000).await;
    let mut live = RawClient::v5(broker.addr(), "retain-live").await;
    live.subscribe("ret/#", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), "retain-pub").await;
    let p = &mut publisher;
    assert!(!publish_retained(p, "ret/1", &[1; 4000])
        .await
        .reason_code
        .is_error());
    assert!(!publish_retained(p, "ret/2", &[2; 4000])
        .await
        .reason_code
        .is_error());
    let refused = publish_retained(p, "ret/3", &[3; 4000]).await;
    assert_quota_exceeded(&refused, "limits.max_retained_bytes");
    // Clearing one frees its bytes for another.
    assert!(!publish_retained(p, "ret/2", &[])
        .await
        .reason_code
        .is_error());
    assert!(!publish_retained(p, "ret/3", &[3; 4000])
        .await
        .reason_code
        .is_error());

    let mut seen_live = Vec::new();
    for _ in 0..5 {
        seen_live.push(live.recv_and_ack().await.topic.to_string());
    }
    assert_eq!(
        seen_live.iter().filter(|t| *t == "ret/3").count(),
        2,
        "the refused retained copy still went to the live subscriber: {seen_live:?}"
    );
    let mut late = RawClient::v5(broker.addr(), "retain-late").await;
    late.subscribe("ret/#", QoS::AtLeastOnce).await;
    let mut retained = vec![
        late.recv_and_ack().await.topic.to_string(),
        late.recv_and_ack().await.topic.to_string(),
    ];
    retained.sort();
    assert_eq!(retained, vec!["ret/1", "ret/3"]);
    late.expect_no_publish(QUIET).await;
}

/// After DISCONNECT 0x93 (Receive Maximum exceeded) the client, still sending, reads the reason
/// code and then an orderly end of stream, not a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_disconnect_is_read_without_a_reset() {
    let broker = TestBroker::with(|c| c.limits.receive_maximum = 2).await;
    let mut client = RawClient::v5(broker.addr(), "goodbye-0x93").await;
    let mut bytes = Vec::new();
    for id in 1..=3 {
        bytes.extend(encode(
            &Packet::Publish(publish_packet("g/t", b"x", QoS::ExactlyOnce, Some(id))),
            ProtocolVersion::V5,
        ));
    }
    // Input the broker will not read before it ends the connection.
    let pings: Vec<u8> = (0..50_000)
        .flat_map(|_| encode(&Packet::PingReq, ProtocolVersion::V5))
        .collect();
    bytes.extend(&pings);
    client.send_bytes(&bytes).await;
    // A client still sending when the goodbye arrives (as paho's flow-control test does) must
    // not have its writes fail: a broker that closed on unread input has reset the connection,
    // and the client reports the failed write instead of the reason code.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let write = client.try_send_bytes(&pings).await;
    assert!(write.is_ok(), "write during the goodbye failed: {write:?}");
    client.expect_disconnect(0x93).await;
    assert!(!client.was_reset(), "the connection ended in a reset");
}

/// A refused CONNECT's CONNACK is read too, even with packets pipelined behind the CONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_connack_is_read_without_a_reset() {
    let broker = TestBroker::with(|c| {
        c.auth.allow_anonymous = Some(false);
        c.auth.users.insert("u".into(), "right".into());
    })
    .await;
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut connect = connect_packet(version, "goodbye-refused");
        connect.username = Some(ByteString::from("u"));
        connect.password = Some(bytes::Bytes::from_static(b"wrong"));
        let mut bytes = encode(&Packet::Connect(Box::new(connect)), version);
        for _ in 0..50_000 {
            bytes.extend(encode(&Packet::PingReq, version));
        }
        let mut client = RawClient::open(broker.addr(), version).await;
        client.send_bytes(&bytes).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let write = client
            .try_send_bytes(&encode(&Packet::PingReq, version))
            .await;
        assert!(
            write.is_ok(),
            "{version:?}: write during the goodbye failed: {write:?}"
        );
        let got = client.expect_closed().await;
        assert!(
            matches!(got.first(), Some(Packet::ConnAck(c)) if c.reason_code != ReasonCode::SUCCESS),
            "{version:?}: {got:?}"
        );
        assert!(
            !client.was_reset(),
            "{version:?}: the connection ended in a reset"
        );
    }
}

/// `limits.max_subscriptions_per_client`: a subscription past the bound is refused with 0x97
/// (3.1.1: 0x80) and counted; the filters the session holds stay, and re-subscribing one of
/// them is no new subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_client_are_bounded() {
    let broker = TestBroker::with(|c| c.limits.max_subscriptions_per_client = 3).await;
    for version in [ProtocolVersion::V5, ProtocolVersion::V3_1_1] {
        let mut client = RawClient::connect(broker.addr(), version, &client_id("subs")).await;
        let codes = client
            .subscribe_many(
                &["s/1", "s/2", "s/3", "s/4", "$share/g/s/5"],
                QoS::AtLeastOnce,
            )
            .await;
        let refused = if version.is_v5() {
            ReasonCode::QUOTA_EXCEEDED
        } else {
            ReasonCode(0x80)
        };
        assert_eq!(
            codes,
            vec![
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::GRANTED_QOS_1,
                refused,
                refused
            ],
            "{version:?}"
        );
        assert_eq!(
            client.subscribe_many(&["s/2"], QoS::AtMostOnce).await,
            vec![ReasonCode::GRANTED_QOS_0],
            "{version:?}: replacing a held subscription"
        );
        client.unsubscribe(&["s/1"]).await;
        assert_eq!(
            client.subscribe_many(&["s/4"], QoS::AtMostOnce).await,
            vec![ReasonCode::GRANTED_QOS_0],
            "{version:?}: room again after UNSUBSCRIBE"
        );
    }
    assert_eq!(
        sharq::broker::Stats::get(&broker.state().stats.subscription_quota_refused),
        4
    );
}

/// `limits.max_sessions`: persistent sessions past the bound are refused at CONNECT with 0x97
/// (3.1.1: return code 3, Server unavailable) and counted; clean sessions and resuming a kept
/// session are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_sessions_are_bounded() {
    let broker = TestBroker::with(|c| c.limits.max_sessions = 2).await;
    let mut kept = Vec::new();
    for id in ["kept-1", "kept-2"] {
        let (client, connack) =
            RawClient::connect_with(broker.addr(), persistent_v5(id, true)).await;
        assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
        kept.push(client);
    }
    let (mut third, connack) =
        RawClient::connect_with(broker.addr(), persistent_v5("kept-3", true)).await;
    assert_eq!(connack.reason_code, ReasonCode::QUOTA_EXCEEDED);
    third.expect_closed().await;
    let mut v311 = ConnectOpts::new(ProtocolVersion::V3_1_1, "kept-311")
        .persistent()
        .packet();
    v311.clean_start = false;
    let (_, connack) = RawClient::connect_with(broker.addr(), v311).await;
    assert_eq!(
        connack.reason_code,
        ReasonCode(0x88),
        "3.1.1 return code 3 reads as 0x88"
    );
    // A clean session is no persistent session.
    let _clean = RawClient::v5(broker.addr(), "clean-one").await;
    // The kept ones resume.
    for client in kept.drain(..) {
        client.disconnect().await;
    }
    let (_again, connack) =
        RawClient::connect_with(broker.addr(), persistent_v5("kept-1", false)).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    assert!(connack.session_present);
    assert_eq!(
        sharq::broker::Stats::get(&broker.state().stats.session_quota_refused),
        2
    );
}
