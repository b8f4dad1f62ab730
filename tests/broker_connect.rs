//! CONNECT / CONNACK: client identifiers, sessions, takeover, keep-alive, the limits CONNACK
//! announces, and username/password authentication.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use common::*;
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
    c.auth.allow_anonymous = false;
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
