//! Password files: one made by the real `mosquitto_passwd`, one made by the real
//! `sharq passwd`; logins with right and wrong passwords over v5 and 3.1.1 (our raw client and
//! mosquitto_pub); a reload on SIGHUP that adds a user while a connection stays.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use bytestring::ByteString;
use sharq::packet::{ConnAck, Packet, ProtocolVersion, ReasonCode};

fn mosquitto_passwd(file: &Path, user: &str, password: &str) {
    let status = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(file)
        .args([user, password])
        .status()
        .expect("mosquitto_passwd missing: run .ci/install-test-tools (Debian package mosquitto)");
    assert!(status.success(), "mosquitto_passwd failed");
}

/// Runs `sharq passwd FILE USER` with `password` on its standard input (not a terminal).
fn sharq_passwd(file: &Path, user: &str, password: &str) {
    let mut child = Command::new(sharq_binary_copy())
        .arg("passwd")
        .arg(file)
        .arg(user)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run sharq passwd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sharq passwd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn login(
    broker: &TestBroker,
    version: ProtocolVersion,
    user: Option<&str>,
    password: Option<&str>,
) -> (RawClient, ConnAck) {
    let mut connect = connect_packet(version, &client_id("pw"));
    connect.username = user.map(ByteString::from);
    connect.password = password.map(|p| Bytes::copy_from_slice(p.as_bytes()));
    RawClient::connect_with(broker.addr(), connect).await
}

async fn password_broker(file: &Path) -> TestBroker {
    let file = file.to_path_buf();
    TestBroker::with(move |c| {
        c.auth.allow_anonymous = Some(false);
        c.auth.password_file = file;
    })
    .await
}

fn auth_failed(broker: &TestBroker) -> u64 {
    sharq::broker::Stats::get(&broker.state().stats.auth_failed)
}

/// The v3.1.1 CONNACK return code on the wire: our decoder maps it to an MQTT 5 code, so the
/// raw bytes are read here to be sure what a 3.1.1 client sees.
async fn v311_return_code(broker: &TestBroker, user: &str, password: &str) -> u8 {
    let mut client = RawClient::open(broker.addr(), ProtocolVersion::V3_1_1).await;
    let mut connect = connect_packet(ProtocolVersion::V3_1_1, "raw311");
    connect.username = Some(ByteString::from(user));
    connect.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    client.send(&Packet::Connect(Box::new(connect))).await;
    let bytes = client.read_raw_until_closed(TIMEOUT).await;
    assert_eq!(&bytes[..2], &[0x20, 0x02], "not a CONNACK: {bytes:02x?}");
    bytes[3]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_passwd_file_right_and_wrong_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mosquitto.pw");
    mosquitto_passwd(&file, "alice", "correct horse");
    let broker = password_broker(&file).await;

    for version in [V5, V3_1_1] {
        let (mut client, connack) =
            login(&broker, version, Some("alice"), Some("correct horse")).await;
        assert_eq!(connack.reason_code, ReasonCode::SUCCESS, "{version:?}");
        client.ping().await;
        let (_, connack) = login(&broker, version, Some("alice"), Some("correct hors")).await;
        assert_eq!(
            connack.reason_code,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            "{version:?}"
        );
        let (_, connack) = login(&broker, version, Some("mallory"), Some("x")).await;
        assert_eq!(
            connack.reason_code,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            "{version:?}"
        );
        let (_, connack) = login(&broker, version, None, None).await;
        assert_eq!(
            connack.reason_code,
            ReasonCode::NOT_AUTHORIZED,
            "{version:?}"
        );
    }
    assert_eq!(v311_return_code(&broker, "alice", "nope").await, 0x04);
    // Three refusals per version, and the raw 3.1.1 one.
    assert_eq!(auth_failed(&broker), 7);
}

/// A real third-party client: mosquitto_pub's exit status and message for the right and the
/// wrong password, over 3.1.1 and 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_logs_in_with_the_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mosquitto.pw");
    mosquitto_passwd(&file, "alice", "correct horse");
    let broker = password_broker(&file).await;
    let port = broker.port().to_string();
    for protocol in ["mqttv311", "mqttv5"] {
        for (password, ok) in [("correct horse", true), ("wrong", false)] {
            let port = port.clone();
            let out = tokio::task::spawn_blocking(move || {
                Command::new("mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-p", &port, "-V", protocol])
                    .args(["-u", "alice", "-P", password, "-t", "t", "-m", "m"])
                    .output()
                    .expect("mosquitto_pub missing: run .ci/install-test-tools")
            })
            .await
            .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
            assert_eq!(out.status.success(), ok, "{protocol} {password}: {stderr}");
            if !ok {
                assert!(
                    stderr.contains("bad user name or password"),
                    "{protocol}: {stderr}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharq_passwd_file_right_and_wrong_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sharq.pw");
    sharq_passwd(&file, "carol", "first");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "a new password file is private");
    }
    // Kept lines: a mosquitto user; replaced line: carol's new password.
    let mosquitto_file = dir.path().join("m.pw");
    mosquitto_passwd(&mosquitto_file, "alice", "correct horse");
    let alice_line = std::fs::read_to_string(&mosquitto_file).unwrap();
    let carol_line = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("# users\n{alice_line}{carol_line}")).unwrap();
    sharq_passwd(&file, "carol", "second");
    sharq_passwd(&file, "dave", "third");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.starts_with(&format!("# users\n{alice_line}carol:$argon2id$")));

    let broker = password_broker(&file).await;
    for version in [V5, V3_1_1] {
        for (user, password, code) in [
            ("carol", "second", ReasonCode::SUCCESS),
            ("carol", "first", ReasonCode::BAD_USER_NAME_OR_PASSWORD),
            ("dave", "third", ReasonCode::SUCCESS),
            ("dave", "thirD", ReasonCode::BAD_USER_NAME_OR_PASSWORD),
            ("alice", "correct horse", ReasonCode::SUCCESS),
        ] {
            let (_, connack) = login(&broker, version, Some(user), Some(password)).await;
            assert_eq!(connack.reason_code, code, "{version:?} {user} {password}");
        }
    }
    assert_eq!(v311_return_code(&broker, "dave", "x").await, 0x04);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_file_is_relative_to_the_config_and_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    sharq_passwd(&dir.path().join("users.pw"), "erin", "pw");
    let base = dir.path().to_path_buf();
    let broker = TestBroker::with(move |c| {
        c.base_dir = Some(base);
        c.auth.password_file = PathBuf::from("users.pw");
    })
    .await;
    let (_, connack) = login(&broker, V5, Some("erin"), Some("pw")).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    broker.shutdown().await;

    let bad = dir.path().join("bad.pw");
    std::fs::write(&bad, "# fine\nerin:plaintext\n").unwrap();
    let mut config = sharq::Config::default();
    config.server.listeners = vec!["127.0.0.1:0".parse().unwrap()];
    config.auth.password_file = bad.clone();
    let err = sharq::Broker::start(config).await.unwrap_err().to_string();
    assert!(
        err.contains("auth.password_file")
            && err.contains(&bad.display().to_string())
            && err.contains("line 2"),
        "{err}"
    );
}

fn pw_config(file: &Path) -> String {
    format!(
        "{EPHEMERAL_CONFIG}[auth]\nallow_anonymous = false\npassword_file = {:?}\n",
        file.display().to_string()
    )
}

fn sighup(pid: u32) {
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn login_to(addr: std::net::SocketAddr, user: &str, password: &str) -> (RawClient, ConnAck) {
    let mut connect = connect_packet(V5, &client_id("hup"));
    connect.username = Some(ByteString::from(user));
    connect.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    RawClient::connect_with(addr, connect).await
}

/// SIGHUP re-reads the password file: a user added by `sharq passwd` can log in, a connection
/// made before stays, and a file that no longer parses keeps the users loaded before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_password_file_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.pw");
    sharq_passwd(&file, "alice", "a-pass");
    let broker = SpawnedBroker::with_config(&pw_config(&file));

    let (mut alice, connack) = login_to(broker.addr, "alice", "a-pass").await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    alice
        .subscribe("news", sharq::packet::QoS::AtLeastOnce)
        .await;
    let (_, connack) = login_to(broker.addr, "bob", "b-pass").await;
    assert_eq!(connack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);

    sharq_passwd(&file, "bob", "b-pass");
    // Not applied until the reload: the file is not watched.
    tokio::time::sleep(QUIET).await;
    let (_, connack) = login_to(broker.addr, "bob", "b-pass").await;
    assert_eq!(connack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);

    sighup(broker.pid());
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut bob = loop {
        let (client, connack) = login_to(broker.addr, "bob", "b-pass").await;
        if connack.reason_code == ReasonCode::SUCCESS {
            break client;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob still refused after SIGHUP; output:\n{}",
            broker.output.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Alice's connection lived through the reload.
    bob.publish("news", b"hello", sharq::packet::QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&alice.expect_publish().await.payload[..], b"hello");

    // A broken file: the error names it and the line, and the loaded users stay.
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("mallory\n");
    std::fs::write(&file, &text).unwrap();
    sighup(broker.pid());
    let wanted = format!("{}, line 3", file.display());
    wait_until(TIMEOUT, "the reload error", || {
        broker.output.lock().unwrap().contains(&wanted)
    })
    .await;
    let (_, connack) = login_to(broker.addr, "bob", "b-pass").await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    alice.ping().await;
}
