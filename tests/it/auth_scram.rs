//! MQTT 5 enhanced authentication with SCRAM-SHA-256, against a client side written here from
//! RFC 5802 (not the broker's code): login, wrong password, unknown user, users from a password
//! file, re-authentication (right, wrong, another user), and an exchange left unfinished.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use bytestring::ByteString;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sharq::packet::{Auth, AuthProperties, ConnAck, Connect, Packet, QoS, ReasonCode};

const METHOD: &str = "SCRAM-SHA-256";

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The client side of one SCRAM-SHA-256 exchange.
struct ScramClient {
    password: String,
    client_first_bare: String,
    nonce: String,
    /// The ServerSignature the server must send back, known after client-final.
    expected_server_signature: Option<[u8; 32]>,
}

impl ScramClient {
    fn new(user: &str, password: &str) -> ScramClient {
        let nonce = B64.encode(rand::random::<[u8; 18]>());
        let name = user.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            password: password.to_owned(),
            client_first_bare: format!("n={name},r={nonce}"),
            nonce,
            expected_server_signature: None,
        }
    }

    fn client_first(&self) -> Bytes {
        Bytes::from(format!("n,,{}", self.client_first_bare))
    }

    fn client_final(&mut self, server_first: &[u8]) -> Bytes {
        let server_first = std::str::from_utf8(server_first).unwrap();
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attribute in server_first.split(',') {
            match attribute.split_at(2) {
                ("r=", v) => nonce = Some(v.to_owned()),
                ("s=", v) => salt = Some(B64.decode(v).unwrap()),
                ("i=", v) => iterations = Some(v.parse::<u32>().unwrap()),
                _ => {}
            }
        }
        let nonce = nonce.expect("server-first without r=");
        assert!(
            nonce.starts_with(&self.nonce) && nonce.len() > self.nonce.len(),
            "the server nonce must extend ours: {server_first}"
        );
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(
            self.password.as_bytes(),
            &salt.expect("s="),
            iterations.expect("i="),
            &mut salted,
        );
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(&salted, b"Server Key");
        self.expected_server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        Bytes::from(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks server-final: the server proved it knows our keys.
    fn verify_server_final(&self, server_final: &[u8]) {
        let expected = format!(
            "v={}",
            B64.encode(self.expected_server_signature.expect("no client-final yet"))
        );
        assert_eq!(std::str::from_utf8(server_final).unwrap(), expected);
    }
}

fn auth_packet(code: ReasonCode, data: Bytes) -> Packet {
    Packet::Auth(Auth {
        reason_code: code,
        properties: AuthProperties {
            authentication_method: Some(ByteString::from(METHOD)),
            authentication_data: Some(data),
            ..AuthProperties::default()
        },
    })
}

fn scram_connect(scram: &ScramClient, client: &str) -> Connect {
    let mut connect = connect_packet(V5, client);
    connect.properties.authentication_method = Some(ByteString::from(METHOD));
    connect.properties.authentication_data = Some(scram.client_first());
    connect
}

async fn expect_auth(client: &mut RawClient, code: ReasonCode) -> Auth {
    match client.recv().await {
        Packet::Auth(auth) => {
            assert_eq!(auth.reason_code, code, "{auth:?}");
            assert_eq!(
                auth.properties.authentication_method.as_deref(),
                Some(METHOD)
            );
            auth
        }
        other => panic!("expected AUTH 0x{:02X}, got {other:?}", code.0),
    }
}

/// Runs the whole exchange; returns the client (connected or refused) and the CONNACK, whose
/// server-final is checked on success.
async fn scram_login(broker: &TestBroker, user: &str, password: &str) -> (RawClient, ConnAck) {
    let mut scram = ScramClient::new(user, password);
    let mut client = RawClient::open(broker.addr(), V5).await;
    client.client_id = format!("scram-{user}");
    client
        .send(&Packet::Connect(Box::new(scram_connect(
            &scram,
            &client.client_id.clone(),
        ))))
        .await;
    let server_first = match client.recv().await {
        Packet::Auth(auth) => {
            assert_eq!(auth.reason_code, ReasonCode::CONTINUE_AUTHENTICATION);
            auth.properties.authentication_data.unwrap()
        }
        Packet::ConnAck(connack) => return (client, connack),
        other => panic!("expected AUTH, got {other:?}"),
    };
    let client_final = scram.client_final(&server_first);
    client
        .send(&auth_packet(
            ReasonCode::CONTINUE_AUTHENTICATION,
            client_final,
        ))
        .await;
    let connack = match client.recv().await {
        Packet::ConnAck(connack) => connack,
        other => panic!("expected CONNACK, got {other:?}"),
    };
    if connack.reason_code == ReasonCode::SUCCESS {
        assert_eq!(
            connack.properties.authentication_method.as_deref(),
            Some(METHOD)
        );
        scram.verify_server_final(connack.properties.authentication_data.as_ref().unwrap());
    }
    (client, connack)
}

/// Re-authenticates on an open connection: AUTH 0x19, AUTH 0x18, AUTH 0x18, then the answer.
async fn reauthenticate(client: &mut RawClient, user: &str, password: &str) -> Option<Auth> {
    let mut scram = ScramClient::new(user, password);
    client
        .send(&auth_packet(
            ReasonCode::RE_AUTHENTICATE,
            scram.client_first(),
        ))
        .await;
    let server_first = match client.recv().await {
        Packet::Auth(auth) if auth.reason_code == ReasonCode::CONTINUE_AUTHENTICATION => {
            auth.properties.authentication_data.unwrap()
        }
        Packet::Disconnect(d) => {
            assert_eq!(d.reason_code, ReasonCode::NOT_AUTHORIZED);
            return None;
        }
        other => panic!("expected AUTH 0x18, got {other:?}"),
    };
    let client_final = scram.client_final(&server_first);
    client
        .send(&auth_packet(
            ReasonCode::CONTINUE_AUTHENTICATION,
            client_final,
        ))
        .await;
    match client.recv().await {
        Packet::Auth(auth) => {
            assert_eq!(auth.reason_code, ReasonCode::SUCCESS);
            scram.verify_server_final(auth.properties.authentication_data.as_ref().unwrap());
            Some(auth)
        }
        Packet::Disconnect(d) => {
            assert_eq!(d.reason_code, ReasonCode::NOT_AUTHORIZED, "{d:?}");
            None
        }
        other => panic!("expected AUTH 0x00 or DISCONNECT, got {other:?}"),
    }
}

async fn config_users_broker() -> TestBroker {
    TestBroker::with(|c| {
        c.auth.allow_anonymous = Some(false);
        c.auth.users.insert("alice".into(), "pencil".into());
        c.auth.users.insert("b,o=b".into(), "p=w,d".into());
    })
    .await
}

fn auth_failed(broker: &TestBroker) -> u64 {
    sharq::broker::Stats::get(&broker.state().stats.auth_failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_login_with_a_config_user() {
    let broker = config_users_broker().await;
    let (mut client, connack) = scram_login(&broker, "alice", "pencil").await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS, "{connack:?}");
    // A working connection.
    client.subscribe("t", QoS::AtLeastOnce).await;
    client.publish("t", b"x", QoS::AtLeastOnce, false).await;
    assert_eq!(&client.expect_publish().await.payload[..], b"x");
    // A name and password that need SCRAM's escapes.
    let (_, connack) = scram_login(&broker, "b,o=b", "p=w,d").await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS, "{connack:?}");
    assert_eq!(auth_failed(&broker), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_wrong_password_and_unknown_user_get_0x86() {
    let broker = config_users_broker().await;
    let (mut client, connack) = scram_login(&broker, "alice", "pencil!").await;
    assert_eq!(connack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    assert_eq!(connack.properties.authentication_data, None);
    client.expect_closed().await;
    // An unknown user gets a server-first too (the same salt each time) and fails at the end.
    let (_, connack) = scram_login(&broker, "nobody", "pencil").await;
    assert_eq!(connack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    assert_eq!(auth_failed(&broker), 2);
    // A CONNECT naming another user than SCRAM's.
    let scram = ScramClient::new("alice", "pencil");
    let mut connect = scram_connect(&scram, "mixed");
    connect.username = Some(ByteString::from("b,o=b"));
    let (_, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert_eq!(connack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    // Channel binding is not offered.
    let mut connect = connect_packet(V5, "cb");
    connect.properties.authentication_method = Some(ByteString::from(METHOD));
    connect.properties.authentication_data =
        Some(Bytes::from_static(b"p=tls-unique,,n=alice,r=abc"));
    let (_, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert_eq!(connack.reason_code, ReasonCode::NOT_AUTHORIZED);
    // Another method is still refused as before.
    let mut connect = connect_packet(V5, "other");
    connect.properties.authentication_method = Some(ByteString::from("SCRAM-SHA-1"));
    let (_, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert_eq!(connack.reason_code, ReasonCode::BAD_AUTHENTICATION_METHOD);
}

fn sharq_passwd(file: &Path, user: &str, password: &str) {
    let mut child = Command::new(sharq_binary_copy())
        .arg("passwd")
        .arg(file)
        .arg(user)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// `sharq passwd` writes SCRAM keys beside the argon2 hash; a mosquitto entry has none, so that
/// user can log in with a password but not with SCRAM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_with_password_file_users() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.pw");
    sharq_passwd(&file, "carol", "c-pass");
    let status = Command::new("mosquitto_passwd")
        .args(["-b"])
        .arg(&file)
        .args(["alice", "a-pass"])
        .status()
        .expect("mosquitto_passwd missing: run .ci/install-test-tools");
    assert!(status.success());
    let path = file.clone();
    let broker = TestBroker::with(move |c| {
        c.auth.allow_anonymous = Some(false);
        c.auth.password_file = path;
    })
    .await;
    let (_, connack) = scram_login(&broker, "carol", "c-pass").await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    let (_, connack) = scram_login(&broker, "carol", "a-pass").await;
    assert_eq!(connack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let (_, connack) = scram_login(&broker, "alice", "a-pass").await;
    assert_eq!(connack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let mut connect = connect_packet(V5, "plain-alice");
    connect.username = Some(ByteString::from("alice"));
    connect.password = Some(Bytes::from_static(b"a-pass"));
    let (_, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauthentication_succeeds_then_a_wrong_one_disconnects_0x87() {
    let broker = config_users_broker().await;
    let (mut client, connack) = scram_login(&broker, "alice", "pencil").await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    client.subscribe("t", QoS::AtMostOnce).await;
    for _ in 0..2 {
        assert!(reauthenticate(&mut client, "alice", "pencil")
            .await
            .is_some());
    }
    // The connection works on after re-authenticating.
    client.publish("t", b"after", QoS::AtLeastOnce, false).await;
    assert_eq!(&client.expect_publish().await.payload[..], b"after");
    assert_eq!(auth_failed(&broker), 0);

    assert!(reauthenticate(&mut client, "alice", "wrong")
        .await
        .is_none());
    client.expect_closed().await;
    assert_eq!(auth_failed(&broker), 1);

    // Re-authenticating as another user is refused, even with that user's right password.
    let (mut client, _) = scram_login(&broker, "alice", "pencil").await;
    assert!(reauthenticate(&mut client, "b,o=b", "p=w,d")
        .await
        .is_none());
    client.expect_closed().await;
}

/// AUTH on a connection that did not use enhanced authentication, or with another method, is a
/// protocol error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_out_of_place_is_a_protocol_error() {
    let broker = config_users_broker().await;
    let mut connect = connect_packet(V5, "plain");
    connect.username = Some(ByteString::from("alice"));
    connect.password = Some(Bytes::from_static(b"pencil"));
    let (mut client, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    let scram = ScramClient::new("alice", "pencil");
    client
        .send(&auth_packet(
            ReasonCode::RE_AUTHENTICATE,
            scram.client_first(),
        ))
        .await;
    client.expect_disconnect(0x82).await;

    let (mut client, _) = scram_login(&broker, "alice", "pencil").await;
    client
        .send(&Packet::Auth(Auth {
            reason_code: ReasonCode::RE_AUTHENTICATE,
            properties: AuthProperties {
                authentication_method: Some(ByteString::from("PLAIN")),
                authentication_data: Some(scram.client_first()),
                ..AuthProperties::default()
            },
        }))
        .await;
    client.expect_disconnect(0x82).await;
}

/// A client that stops after server-first is closed once the connect timeout passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_exchange_times_out() {
    let broker = TestBroker::with(|c| {
        c.auth.users.insert("alice".into(), "pencil".into());
        c.limits.connect_timeout_secs = 1;
    })
    .await;
    let scram = ScramClient::new("alice", "pencil");
    let mut client = RawClient::open(broker.addr(), V5).await;
    client
        .send(&Packet::Connect(Box::new(scram_connect(&scram, "slow"))))
        .await;
    expect_auth(&mut client, ReasonCode::CONTINUE_AUTHENTICATION).await;
    let started = std::time::Instant::now();
    let got = client.expect_closed_within(Duration::from_secs(3)).await;
    assert!(got.is_empty(), "{got:?}");
    assert!(started.elapsed() >= Duration::from_millis(500));
}
