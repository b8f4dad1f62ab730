//! CONNECT / CONNACK: client identifiers, sessions, takeover, keep-alive, the limits CONNACK
//! announces, and username/password authentication.

use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use bytestring::ByteString;
use sharq::packet::{DisconnectProperties, Packet, ProtocolVersion, QoS, ReasonCode};

/// Sends `bytes`, reads everything until the broker closes, returns the raw bytes received.
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "broker did not close the connection; received so far {got:02x?}"
    );
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_empty_client_id_gets_assigned_identifier() {
    let broker = TestBroker::start().await;
    let (mut client, connack) =
        RawClient::connect_with(broker.addr(), connect_packet(ProtocolVersion::V5, "")).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    let assigned = connack
        .properties
        .assigned_client_identifier
        .expect("CONNACK must carry Assigned Client Identifier for an empty v5 client id");
    assert!(!assigned.is_empty());
    client.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_empty_client_id_with_clean_session_accepted() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::v311(broker.addr(), "").await;
    client.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_empty_client_id_without_clean_session_refused_with_return_code_2() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V3_1_1, "");
    connect.clean_start = false;
    let bytes = encode(&Packet::Connect(Box::new(connect)), ProtocolVersion::V3_1_1);
    let got = raw_exchange(broker.addr(), &bytes).await;
    assert_eq!(
        got,
        vec![0x20, 0x02, 0x00, 0x02],
        "expected CONNACK return code 2 (identifier rejected) then close"
    );
    assert_broker_alive(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_present_on_resume() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "resume5");
    connect.properties.session_expiry_interval = Some(60);
    let (client, connack) = RawClient::connect_with(broker.addr(), connect.clone()).await;
    assert!(!connack.session_present, "first connect: no session");
    client.disconnect().await;
    connect.clean_start = false;
    let (_client, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    assert!(connack.session_present, "resume must set Session Present");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_session_present_on_resume() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V3_1_1, "resume311");
    connect.clean_start = false;
    let (client, connack) = RawClient::connect_with(broker.addr(), connect.clone()).await;
    assert!(!connack.session_present);
    client.disconnect().await;
    let (_client, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert!(connack.session_present, "resume must set Session Present");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_start_discards_session_and_subscriptions() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "clean");
    connect.properties.session_expiry_interval = Some(60);
    let (mut sub, _) = RawClient::connect_with(broker.addr(), connect.clone()).await;
    sub.subscribe("clean/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    // Clean Start = 1 over the stored session.
    let (mut sub, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert!(!connack.session_present, "clean start must discard");
    let mut publisher = RawClient::v5(broker.addr(), "clean-pub").await;
    publisher
        .publish("clean/t", b"x", QoS::AtLeastOnce, false)
        .await;
    sub.expect_no_publish(QUIET).await;
}

/// The session ends once its expiry interval has passed offline, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_expires_after_interval() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "expiring");
    connect.properties.session_expiry_interval = Some(1);
    let (mut sub, _) = RawClient::connect_with(broker.addr(), connect.clone()).await;
    sub.subscribe("exp/t", QoS::AtLeastOnce).await;
    // The broker's expiry clock starts when it handles the DISCONNECT: after this instant.
    let disconnected = Instant::now();
    sub.disconnect().await;
    broker.wait_session_ended("expiring").await;
    let offline = disconnected.elapsed();
    assert!(
        offline >= Duration::from_secs(1),
        "session with expiry 1 s ended after {offline:?} offline"
    );
    connect.clean_start = false;
    let (_sub, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert!(
        !connack.session_present,
        "session with expiry 1 s must be gone once it expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_survives_within_interval() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "not-expired");
    // Far longer than anything this test waits for, however slow the machine.
    connect.properties.session_expiry_interval = Some(60);
    let (sub, _) = RawClient::connect_with(broker.addr(), connect.clone()).await;
    sub.disconnect().await;
    // Offline (not taken over by the next CONNECT): the session was kept past its connection.
    broker.wait_session_offline("not-expired").await;
    assert!(broker.broker.state().session("not-expired").is_some());
    connect.clean_start = false;
    let (_sub, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert!(connack.session_present);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_disconnect_setting_expiry_after_zero_is_protocol_error() {
    let broker = TestBroker::start().await;
    // CONNECT without Session Expiry Interval: 0.
    let mut client = RawClient::v5(broker.addr(), "exp-zero").await;
    client
        .disconnect_with(
            0,
            DisconnectProperties {
                session_expiry_interval: Some(30),
                ..DisconnectProperties::default()
            },
        )
        .await;
    client.expect_disconnect(0x82).await;
    assert_broker_alive(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_disconnect_can_change_nonzero_expiry() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "exp-change");
    connect.properties.session_expiry_interval = Some(60);
    let (mut client, _) = RawClient::connect_with(broker.addr(), connect.clone()).await;
    // 60 -> 0: the session ends with the connection.
    client
        .disconnect_with(
            0,
            DisconnectProperties {
                session_expiry_interval: Some(0),
                ..DisconnectProperties::default()
            },
        )
        .await;
    // Reconnecting before the broker has handled the DISCONNECT would take the session over.
    broker.wait_session_ended("exp-change").await;
    connect.clean_start = false;
    let (_client, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert!(
        !connack.session_present,
        "DISCONNECT with expiry 0 must end the session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_sends_disconnect_0x8e_to_old_v5_connection() {
    let broker = TestBroker::start().await;
    let mut old = RawClient::v5(broker.addr(), "taken").await;
    let mut connect = connect_packet(ProtocolVersion::V5, "taken");
    connect.clean_start = false;
    let (mut new, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    old.expect_disconnect(0x8E).await;
    new.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_closes_old_v311_connection() {
    let broker = TestBroker::start().await;
    let mut old = RawClient::v311(broker.addr(), "taken311").await;
    let mut new = RawClient::v311(broker.addr(), "taken311").await;
    old.expect_error_close(0x8E).await;
    new.ping().await;
}

/// A silent client is closed with 0x8D (Keep Alive timeout), and not before one and a half
/// times its keep-alive [MQTT-3.1.2-22]. How much later depends on the machine's load: the
/// wait for the close is bounded by `TIMEOUT`, not asserted to a tighter figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_enforced() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "idle");
    connect.keep_alive = 1;
    // Before the CONNECT is sent: the broker's clock starts after this instant.
    let started = Instant::now();
    let (mut client, _) = RawClient::connect_with(broker.addr(), connect).await;
    client.expect_disconnect(0x8D).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "keep-alive 1 s: closed after {elapsed:?}, before 1.5 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_enforced_v311() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V3_1_1, "idle311");
    connect.keep_alive = 1;
    let started = Instant::now();
    let (mut client, _) = RawClient::connect_with(broker.addr(), connect).await;
    client.expect_error_close(0x8D).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "keep-alive 1 s: closed after {elapsed:?}, before 1.5 s"
    );
}

/// Pings keep a connection open well past one and a half times its keep-alive. The pings come
/// every 250 ms against a 3 s allowance, so only a stall of seconds could close it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_satisfied_by_pings() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "pinger");
    connect.keep_alive = 2;
    let (mut client, _) = RawClient::connect_with(broker.addr(), connect).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3500) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        client.ping().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_keep_alive_sent_when_configured() {
    let broker = TestBroker::with(|c| c.keep_alive.server_secs = Some(7)).await;
    let (_client, connack) =
        RawClient::connect_with(broker.addr(), connect_packet(ProtocolVersion::V5, "ska")).await;
    assert_eq!(connack.properties.server_keep_alive, Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_announces_limits_and_features() {
    let broker = TestBroker::with(|c| {
        c.limits.receive_maximum = 17;
        c.limits.max_packet_size = 65_000;
        c.limits.topic_alias_maximum = 9;
    })
    .await;
    let (_client, connack) =
        RawClient::connect_with(broker.addr(), connect_packet(ProtocolVersion::V5, "caps")).await;
    let p = &connack.properties;
    assert_eq!(p.shared_subscription_available, Some(true), "{p:?}");
    assert_eq!(p.receive_maximum, Some(17), "{p:?}");
    assert_eq!(p.maximum_packet_size, Some(65_000), "{p:?}");
    assert_eq!(p.topic_alias_maximum, Some(9), "{p:?}");
}

fn auth_broker_config(c: &mut sharq::Config) {
    c.auth.allow_anonymous = Some(false);
    c.auth.users.insert("alice".into(), "secret".into());
}

fn with_credentials(
    version: ProtocolVersion,
    user: Option<&str>,
    password: Option<&[u8]>,
) -> sharq::packet::Connect {
    let mut connect = connect_packet(version, "auth-client");
    connect.username = user.map(ByteString::from);
    connect.password = password.map(Bytes::copy_from_slice);
    connect
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_good_password_accepted() {
    let broker = TestBroker::with(auth_broker_config).await;
    for version in [ProtocolVersion::V5, ProtocolVersion::V3_1_1] {
        let (mut client, connack) = RawClient::connect_with(
            broker.addr(),
            with_credentials(version, Some("alice"), Some(b"secret")),
        )
        .await;
        assert_eq!(connack.reason_code, ReasonCode::SUCCESS, "{version:?}");
        client.ping().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_bad_password_refused_v5_0x86() {
    let broker = TestBroker::with(auth_broker_config).await;
    let (mut client, connack) = RawClient::connect_with(
        broker.addr(),
        with_credentials(ProtocolVersion::V5, Some("alice"), Some(b"wrong")),
    )
    .await;
    assert_eq!(connack.reason_code, ReasonCode(0x86));
    client.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_bad_password_refused_v311_return_code_4() {
    let broker = TestBroker::with(auth_broker_config).await;
    let connect = with_credentials(ProtocolVersion::V3_1_1, Some("alice"), Some(b"wrong"));
    let bytes = encode(&Packet::Connect(Box::new(connect)), ProtocolVersion::V3_1_1);
    let got = raw_exchange(broker.addr(), &bytes).await;
    assert_eq!(got, vec![0x20, 0x02, 0x00, 0x04]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_anonymous_refused_when_not_allowed() {
    let broker = TestBroker::with(auth_broker_config).await;
    let (_client, connack) = RawClient::connect_with(
        broker.addr(),
        with_credentials(ProtocolVersion::V5, None, None),
    )
    .await;
    assert!(
        connack.reason_code == ReasonCode(0x87) || connack.reason_code == ReasonCode(0x86),
        "anonymous: expected 0x87 (or 0x86), got {:?}",
        connack.reason_code
    );
    let connect = with_credentials(ProtocolVersion::V3_1_1, None, None);
    let bytes = encode(&Packet::Connect(Box::new(connect)), ProtocolVersion::V3_1_1);
    let got = raw_exchange(broker.addr(), &bytes).await;
    assert!(
        got == vec![0x20, 0x02, 0x00, 0x05] || got == vec![0x20, 0x02, 0x00, 0x04],
        "3.1.1 anonymous: expected return code 5 (or 4), got {got:02x?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Session ownership: a client id is not a key to another identity's session (README,
// "Session ownership"). Against the real binary.
// ---------------------------------------------------------------------------------------------

/// Two users with passwords, anonymous clients allowed too.
const OWNERSHIP_CONFIG: &str = "[server]\nlisteners = [\"127.0.0.1:0\"]\nlog = \"info\"\nsys_interval_secs = 0\n[auth]\nallow_anonymous = true\nusers = { alice = \"alice-pw\", bob = \"bob-pw\" }\n";

fn owned_connect(
    version: ProtocolVersion,
    client_id: &str,
    user: Option<&str>,
) -> sharq::packet::Connect {
    let mut connect = ConnectOpts::new(version, client_id).persistent().packet();
    connect.username = user.map(ByteString::from);
    connect.password = user.map(|u| Bytes::from(format!("{u}-pw")));
    connect
}

/// The CONNACK a refused claimant gets: its return code as a 3.1.1 client reads it on the
/// wire, or the v5 reason code; and that nothing else came before the close.
async fn refused_claim(addr: std::net::SocketAddr, connect: sharq::packet::Connect) -> u8 {
    let version = connect.protocol;
    let mut client = RawClient::open(addr, version).await;
    client.send(&Packet::Connect(Box::new(connect))).await;
    let bytes = client.read_raw_until_closed(TIMEOUT).await;
    assert_eq!(bytes[0], 0x20, "not a CONNACK: {bytes:02x?}");
    assert_eq!(
        bytes[2], 0,
        "Session Present must be 0 for a refusal: {bytes:02x?}"
    );
    let connack_len = 2 + usize::from(bytes[1]);
    assert_eq!(
        bytes.len(),
        connack_len,
        "only the CONNACK may come: {bytes:02x?}"
    );
    bytes[3]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_does_not_open_another_users_session() {
    let broker = SpawnedBroker::with_config(OWNERSHIP_CONFIG);
    for (version, not_authorized) in [(ProtocolVersion::V5, 0x87), (ProtocolVersion::V3_1_1, 5)] {
        let id = format!("owned-{version:?}");
        let (mut bob, connack) =
            RawClient::connect_with(broker.addr, owned_connect(version, &id, Some("bob"))).await;
        assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
        bob.subscribe("b/#", QoS::AtLeastOnce).await;
        bob.disconnect().await;
        let mut publisher = RawClient::v5(broker.addr, &format!("pub-{version:?}")).await;
        publisher
            .publish("b/queued", b"for bob", QoS::AtLeastOnce, false)
            .await;

        // Another user, anonymous, with Clean Start 0 and 1: each refused, nothing read.
        for (user, clean_start) in [
            (Some("alice"), false),
            (Some("alice"), true),
            (None, false),
            (None, true),
        ] {
            let mut connect = owned_connect(version, &id, user);
            connect.clean_start = clean_start;
            assert_eq!(
                refused_claim(broker.addr, connect).await,
                not_authorized,
                "{version:?} user {user:?} clean start {clean_start}"
            );
        }

        // The owner's session is untouched: present, with the message queued for it.
        let (mut bob, connack) =
            RawClient::connect_with(broker.addr, owned_connect(version, &id, Some("bob"))).await;
        assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
        assert!(
            connack.session_present,
            "{version:?}: bob's session was discarded"
        );
        let queued = bob.expect_publish().await;
        assert_eq!(&queued.payload[..], b"for bob");
        bob.ack(&queued).await;

        // While bob is connected, a claim by alice neither takes over nor disturbs him.
        assert_eq!(
            refused_claim(broker.addr, owned_connect(version, &id, Some("alice"))).await,
            not_authorized
        );
        publisher
            .publish("b/live", b"still bob's", QoS::AtLeastOnce, false)
            .await;
        let live = bob.expect_publish().await;
        assert_eq!(&live.payload[..], b"still bob's");
        bob.ack(&live).await;
        bob.ping().await;
    }
    broker.wait_for_output("the client id's session belongs to another identity (bob)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_session_is_claimable_only_anonymously() {
    let broker = SpawnedBroker::with_config(OWNERSHIP_CONFIG);
    let id = "anonymous-owned";
    let (anonymous, connack) =
        RawClient::connect_with(broker.addr, owned_connect(V5, id, None)).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    anonymous.disconnect().await;
    assert_eq!(
        refused_claim(broker.addr, owned_connect(V5, id, Some("alice"))).await,
        0x87
    );
    let (_again, connack) = RawClient::connect_with(broker.addr, owned_connect(V5, id, None)).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    assert!(connack.session_present);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_pattern_requires_the_username_prefix() {
    let config = format!("{OWNERSHIP_CONFIG}client_id_pattern = \"%u-*\"\n");
    let broker = SpawnedBroker::with_config(&config);
    for version in [V5, V3_1_1] {
        let (_ok, connack) = RawClient::connect_with(
            broker.addr,
            owned_connect(version, "alice-1", Some("alice")),
        )
        .await;
        assert_eq!(connack.reason_code, ReasonCode::SUCCESS, "{version:?}");
        let code = refused_claim(broker.addr, owned_connect(version, "bob-1", Some("alice"))).await;
        assert_eq!(code, if version == V5 { 0x85 } else { 2 }, "{version:?}");
        let code = refused_claim(broker.addr, owned_connect(version, "alice-2", None)).await;
        assert_eq!(
            code,
            if version == V5 { 0x85 } else { 2 },
            "{version:?} anonymous"
        );
    }
    // An id the broker assigns fits the pattern.
    let mut connect = connect_packet(V5, "");
    connect.username = Some(ByteString::from("alice"));
    connect.password = Some(Bytes::from_static(b"alice-pw"));
    let (_client, connack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    let assigned = connack.properties.assigned_client_identifier.unwrap();
    assert!(assigned.starts_with("alice-"), "{assigned}");
}

/// Ownership survives a restart: it is part of the session's stored record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ownership_survives_a_restart() {
    let store = tempfile::tempdir().unwrap();
    let config = format!(
        "{OWNERSHIP_CONFIG}[storage]\ndir = {:?}\n",
        store.path().display().to_string()
    );
    let broker = SpawnedBroker::with_config(&config);
    let (bob, connack) =
        RawClient::connect_with(broker.addr, owned_connect(V5, "kept", Some("bob"))).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    bob.disconnect().await;
    broker.terminate();
    let mut broker = broker;
    assert!(broker.wait_exit(Duration::from_secs(20)).success());
    let broker = SpawnedBroker::with_config(&config);
    assert_eq!(
        refused_claim(broker.addr, owned_connect(V5, "kept", Some("alice"))).await,
        0x87
    );
    let (_bob, connack) =
        RawClient::connect_with(broker.addr, owned_connect(V5, "kept", Some("bob"))).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    assert!(connack.session_present);
}

/// Keep-alive counts whole packets, not bytes [MQTT-3.1.2-24]: a client with Keep Alive 2 that
/// starts a 1000-byte PUBLISH (`30 e8 07`) and then trickles one byte every 0.5 s is closed
/// once 3 s pass without a whole packet, however many bytes it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_is_not_reset_by_a_trickled_packet() {
    let broker = SpawnedBroker::start();
    for version in [V5, V3_1_1] {
        let (mut client, connack) = RawClient::connect_with(
            broker.addr,
            ConnectOpts::new(version, &format!("trickle-{version:?}"))
                .keep_alive(2)
                .packet(),
        )
        .await;
        assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
        let started = Instant::now();
        client.send_bytes(&[0x30, 0xe8, 0x07]).await;
        // Bytes of the same packet until the broker closes, for at most 12 s: 4 times the
        // deadline, where the old code let the connection live as long as bytes came.
        let mut closed = false;
        while started.elapsed() < Duration::from_secs(12) {
            match client.next_event(Duration::from_millis(500)).await {
                Event::Timeout => {
                    if client.try_send_bytes(&[0x00]).await.is_err() {
                        closed = true;
                        break;
                    }
                }
                Event::Packet(Packet::Disconnect(d)) => {
                    assert_eq!(d.reason_code, ReasonCode::KEEP_ALIVE_TIMEOUT, "{version:?}");
                }
                Event::Packet(other) => panic!("{version:?}: unexpected {other:?}"),
                Event::Closed => {
                    closed = true;
                    break;
                }
            }
        }
        assert!(
            closed,
            "{version:?}: a trickled packet held the connection open for 12 s"
        );
    }
}
