//! TLS listeners: serving MQTT over TLS, client certificates (optional, required, as the
//! username), certificate reload without dropping connections, the handshake deadline, and
//! errors naming the config key. Certificates come from a CA made at test time (rcgen).

use std::path::Path;
use std::time::Duration;

use sharq::config::TlsListenerConfig;
use sharq::packet::{QoS, ReasonCode};
use sharq::{Broker, Config};
use tokio::io::AsyncReadExt;

use crate::common::*;

fn tls_listener(cert: &Path, key: &Path) -> TlsListenerConfig {
    TlsListenerConfig {
        address: "127.0.0.1:0".parse().unwrap(),
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        client_ca: None,
        require_client_cert: false,
        use_identity_as_username: false,
    }
}

async fn tls_broker(listener: TlsListenerConfig) -> TestBroker {
    TestBroker::with(|config| config.server.tls_listeners = vec![listener]).await
}

/// MQTT over TLS, both ways: a TLS subscriber gets a plain TCP client's message and the reverse.
#[tokio::test]
async fn publish_and_subscribe_over_tls() {
    let mut pki = TestPki::new();
    let (cert, key) = pki.server("server", "broker-1");
    let broker = tls_broker(tls_listener(&cert, &key)).await;
    let tls_addr = broker.broker.tls_addrs()[0];
    assert_ne!(tls_addr, broker.addr(), "TLS has its own port");
    let stream = tls_connect(tls_addr, pki.client_config(None))
        .await
        .unwrap();
    assert_eq!(server_cn(&stream), "broker-1");
    let (mut secure, connack) = RawClient::over(stream, V5)
        .connect_as(connect_packet(V5, "secure"))
        .await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    secure.subscribe("tls/#", QoS::AtLeastOnce).await;
    let mut plain = RawClient::v5(broker.addr(), "plain").await;
    plain.subscribe("back", QoS::AtLeastOnce).await;
    plain
        .publish("tls/in", b"over tcp", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&secure.recv_and_ack().await.payload[..], b"over tcp");
    secure
        .publish("back", b"over tls", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&plain.recv_and_ack().await.payload[..], b"over tls");
    // A plain MQTT client on the TLS port gets no MQTT answer: a TLS alert at most (0x15).
    let mut wrong = RawClient::open(tls_addr, V5).await;
    wrong
        .send(&sharq::packet::Packet::Connect(Box::new(connect_packet(
            V5, "x",
        ))))
        .await;
    let got = wrong.read_raw_until_closed(TIMEOUT).await;
    assert!(
        got.first().is_none_or(|first| *first == 0x15),
        "plain MQTT on a TLS port must be closed: {got:02x?}"
    );
    assert_broker_alive(broker.addr()).await;
}

/// Sends CONNECT over a TLS stream that a server may have refused after the handshake (TLS
/// 1.3 clients finish before the server checks their certificate): true if a CONNACK came.
async fn connack_over(stream: std::io::Result<TlsClientStream>, id: &str) -> Option<ReasonCode> {
    let stream = stream.ok()?;
    let mut client = RawClient::over(stream, V5);
    client
        .send(&sharq::packet::Packet::Connect(Box::new(connect_packet(
            V5, id,
        ))))
        .await;
    match client.next_event(TIMEOUT).await {
        Event::Packet(sharq::packet::Packet::ConnAck(connack)) => Some(connack.reason_code),
        _ => None,
    }
}

#[tokio::test]
async fn required_client_certificate_refuses_clients_without_one() {
    let mut pki = TestPki::new();
    let (cert, key) = pki.server("server", "broker");
    let (client_cert, client_key) = pki.client("client", "device-1");
    let mut listener = tls_listener(&cert, &key);
    listener.client_ca = Some(pki.ca_pem.clone());
    listener.require_client_cert = true;
    let broker = tls_broker(listener).await;
    let addr = broker.broker.tls_addrs()[0];

    let anonymous = tls_connect(addr, pki.client_config(None)).await;
    assert_eq!(connack_over(anonymous, "anonymous").await, None);

    // A certificate from another CA is refused as well.
    let mut stranger_pki = TestPki::new();
    let (other_cert, other_key) = stranger_pki.client("stranger", "stranger");
    let stranger_config = {
        // Trusts our server's CA, presents a certificate our broker does not trust.
        let trusting = TestPki::new();
        std::fs::copy(&pki.ca_pem, &trusting.ca_pem).unwrap();
        trusting.client_config(Some((&other_cert, &other_key)))
    };
    let stranger = tls_connect(addr, stranger_config).await;
    assert_eq!(connack_over(stranger, "stranger").await, None);

    let good = tls_connect(addr, pki.client_config(Some((&client_cert, &client_key)))).await;
    assert_eq!(
        connack_over(good, "device").await,
        Some(ReasonCode::SUCCESS)
    );
}

#[tokio::test]
async fn optional_client_certificate_is_verified_when_presented() {
    let mut pki = TestPki::new();
    let (cert, key) = pki.server("server", "broker");
    let mut listener = tls_listener(&cert, &key);
    listener.client_ca = Some(pki.ca_pem.clone());
    let broker = tls_broker(listener).await;
    let addr = broker.broker.tls_addrs()[0];
    let anonymous = tls_connect(addr, pki.client_config(None)).await;
    assert_eq!(
        connack_over(anonymous, "anonymous").await,
        Some(ReasonCode::SUCCESS)
    );
    let mut stranger_pki = TestPki::new();
    let (other_cert, other_key) = stranger_pki.client("stranger", "stranger");
    let trusting = TestPki::new();
    std::fs::copy(&pki.ca_pem, &trusting.ca_pem).unwrap();
    let stranger = tls_connect(
        addr,
        trusting.client_config(Some((&other_cert, &other_key))),
    )
    .await;
    assert_eq!(connack_over(stranger, "stranger").await, None);
}

/// A broker whose one TLS listener verifies client certificates against `pki`'s CA and takes
/// the certificate's CN as the username; anonymous clients refused; `configure` adds the rest.
async fn identity_broker(
    pki: &TestPki,
    cert: &Path,
    key: &Path,
    configure: impl FnOnce(&mut Config),
) -> TestBroker {
    let mut listener = tls_listener(cert, key);
    listener.client_ca = Some(pki.ca_pem.clone());
    listener.use_identity_as_username = true;
    TestBroker::with(|config| {
        config.server.tls_listeners = vec![listener];
        config.auth.allow_anonymous = Some(false);
        configure(config);
    })
    .await
}

/// `use_identity_as_username`: the CN is the username whatever CONNECT says, no password is
/// checked, and a client without a certificate is refused with 0x87 (0x05 in 3.1.1).
#[tokio::test]
async fn certificate_common_name_is_the_username() {
    let mut pki = TestPki::new();
    let (cert, key) = pki.server("server", "broker");
    let (client_cert, client_key) = pki.client("client", "device-7");
    let broker = identity_broker(&pki, &cert, &key, |config| {
        config
            .auth
            .users
            .insert("device-7".to_owned(), "unused".to_owned());
    })
    .await;
    let addr = broker.broker.tls_addrs()[0];

    // CONNECT names another user with a wrong password: the certificate's CN wins.
    let stream = tls_connect(addr, pki.client_config(Some((&client_cert, &client_key))))
        .await
        .unwrap();
    let mut connect = connect_packet(V5, "cn-user");
    connect.username = Some("mallory".into());
    connect.password = Some(bytes::Bytes::from_static(b"wrong"));
    let (mut client, connack) = RawClient::over(stream, V5).connect_as(connect).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    client.ping().await;
    // No username at all: anonymous clients are refused here, the CN is the username.
    let stream = tls_connect(addr, pki.client_config(Some((&client_cert, &client_key))))
        .await
        .unwrap();
    let (_, connack) = RawClient::over(stream, V3_1_1)
        .connect_as(connect_packet(V3_1_1, "cn-only"))
        .await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    // The same username and password on plain TCP are refused: the CN did it.
    let mut connect = connect_packet(V5, "tcp-user");
    connect.username = Some("mallory".into());
    connect.password = Some(bytes::Bytes::from_static(b"wrong"));
    let (_, connack) = RawClient::connect_with(broker.addr(), connect).await;
    assert_eq!(connack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);

    for (version, code) in [(V5, 0x87u8), (V3_1_1, 0x05)] {
        let stream = tls_connect(addr, pki.client_config(None)).await.unwrap();
        let mut client = RawClient::over(stream, version);
        client
            .send(&sharq::packet::Packet::Connect(Box::new(connect_packet(
                version, "no-cert",
            ))))
            .await;
        let got = client.read_raw_until_closed(TIMEOUT).await;
        assert_eq!(got.first(), Some(&0x20), "CONNACK expected, got {got:02x?}");
        // 20 LEN FLAGS CODE: the code is the fourth byte in both versions.
        assert_eq!(got.get(3), Some(&code), "{version:?}: {got:02x?}");
    }
}

/// Session ownership with client certificates: a session made by the certificate with CN
/// `device-7` cannot be opened by the certificate with CN `device-8` under the same client id
/// (0x87; 3.1.1 return code 5), whether Clean Start is set or not, and `device-7` resumes it.
#[tokio::test]
async fn a_certificate_identity_owns_its_session() {
    let mut pki = TestPki::new();
    let (cert, key) = pki.server("server", "broker");
    let (owner_cert, owner_key) = pki.client("owner", "device-7");
    let (other_cert, other_key) = pki.client("other", "device-8");
    let broker = identity_broker(&pki, &cert, &key, |_| {}).await;
    let addr = broker.broker.tls_addrs()[0];
    for (version, not_authorized) in [(V5, 0x87u8), (V3_1_1, 0x05)] {
        let id = format!("cert-owned-{version:?}");
        let persistent = |clean_start: bool| {
            let mut connect = ConnectOpts::new(version, &id).persistent().packet();
            connect.clean_start = clean_start;
            connect
        };
        let stream = tls_connect(addr, pki.client_config(Some((&owner_cert, &owner_key))))
            .await
            .unwrap();
        let (mut owner, connack) = RawClient::over(stream, version)
            .connect_as(persistent(false))
            .await;
        assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
        owner.subscribe("dev/#", QoS::AtLeastOnce).await;
        for clean_start in [false, true] {
            let stream = tls_connect(addr, pki.client_config(Some((&other_cert, &other_key))))
                .await
                .unwrap();
            let mut other = RawClient::over(stream, version);
            other
                .send(&sharq::packet::Packet::Connect(Box::new(persistent(
                    clean_start,
                ))))
                .await;
            let bytes = other.read_raw_until_closed(TIMEOUT).await;
            assert_eq!(&bytes[..3], &[0x20, bytes[1], 0x00], "{bytes:02x?}");
            assert_eq!(
                bytes[3], not_authorized,
                "{version:?} clean start {clean_start}"
            );
        }
        // The owner's connection was not taken over.
        owner.ping().await;
        owner.disconnect().await;
        let stream = tls_connect(addr, pki.client_config(Some((&owner_cert, &owner_key))))
            .await
            .unwrap();
        let (_owner, connack) = RawClient::over(stream, version)
            .connect_as(persistent(false))
            .await;
        assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
        assert!(connack.session_present, "{version:?}");
    }
}

/// Certificates are read again on reload: live connections go on, new handshakes get the new
/// certificate, and a bad file keeps the current one.
#[tokio::test]
async fn reload_swaps_the_certificate_without_dropping_connections() {
    let mut pki = TestPki::new();
    let (cert, key) = pki.server("server", "first");
    let broker = tls_broker(tls_listener(&cert, &key)).await;
    let addr = broker.broker.tls_addrs()[0];
    let stream = tls_connect(addr, pki.client_config(None)).await.unwrap();
    assert_eq!(server_cn(&stream), "first");
    let (mut old, _) = RawClient::over(stream, V5)
        .connect_as(connect_packet(V5, "old"))
        .await;
    old.subscribe("reload/#", QoS::AtLeastOnce).await;

    // New files under the same names, as a renewal leaves them.
    let (new_cert, new_key) = pki.server("renewed", "second");
    std::fs::rename(&new_cert, &cert).unwrap();
    std::fs::rename(&new_key, &key).unwrap();
    let state = broker.state().clone();
    let (reloaded, errors) = tokio::task::spawn_blocking(move || state.reload_certificates())
        .await
        .unwrap();
    assert_eq!((reloaded, errors.len()), (1, 0), "{errors:?}");

    let stream = tls_connect(addr, pki.client_config(None)).await.unwrap();
    assert_eq!(server_cn(&stream), "second");
    let (mut new, _) = RawClient::over(stream, V5)
        .connect_as(connect_packet(V5, "new"))
        .await;
    new.publish("reload/x", b"after", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&old.recv_and_ack().await.payload[..], b"after");
    old.publish("reload/y", b"old still sends", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&old.recv_and_ack().await.payload[..], b"old still sends");

    // A broken certificate file: the reload fails naming it, the current one stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    let state = broker.state().clone();
    let (reloaded, errors) = tokio::task::spawn_blocking(move || state.reload_certificates())
        .await
        .unwrap();
    assert_eq!(reloaded, 0);
    let message = errors[0].to_string();
    assert!(
        message.contains("server.tls_listeners[0].cert")
            && message.contains(&cert.display().to_string()),
        "{message}"
    );
    let stream = tls_connect(addr, pki.client_config(None)).await.unwrap();
    assert_eq!(server_cn(&stream), "second");
    old.ping().await;
}

/// The real binary: SIGHUP reloads the certificate, the connection made before keeps working.
#[tokio::test]
async fn sighup_reloads_the_certificate_of_the_real_binary() {
    let mut pki = TestPki::new();
    let (cert, key) = pki.server("server", "before-hup");
    let config = format!(
        "{EPHEMERAL_CONFIG}\n[[server.tls_listeners]]\naddress = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let spawned = SpawnedBroker::with_config(&config);
    let addr = spawned.listening("tls");
    let stream = tls_connect(addr, pki.client_config(None)).await.unwrap();
    assert_eq!(server_cn(&stream), "before-hup");
    let (mut old, _) = RawClient::over(stream, V5)
        .connect_as(connect_packet(V5, "old"))
        .await;
    old.subscribe("hup", QoS::AtLeastOnce).await;

    let (new_cert, new_key) = pki.server("renewed", "after-hup");
    std::fs::rename(&new_cert, &cert).unwrap();
    std::fs::rename(&new_key, &key).unwrap();
    let status = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(spawned.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    spawned.wait_for_output("TLS certificate reloaded");

    let stream = tls_connect(addr, pki.client_config(None)).await.unwrap();
    assert_eq!(server_cn(&stream), "after-hup");
    let (mut new, _) = RawClient::over(stream, V5)
        .connect_as(connect_packet(V5, "new"))
        .await;
    new.publish("hup", b"from the new", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&old.recv_and_ack().await.payload[..], b"from the new");
}

/// A socket that never finishes the handshake is closed after `limits.connect_timeout_secs`,
/// and TLS sockets count against the connection limits.
#[tokio::test]
async fn handshake_deadline_and_connection_limits_apply() {
    let mut pki = TestPki::new();
    let (cert, key) = pki.server("server", "broker");
    let listener = tls_listener(&cert, &key);
    let broker = TestBroker::with(|config| {
        config.server.tls_listeners = vec![listener];
        config.limits.connect_timeout_secs = 1;
        config.limits.max_connections = 1;
    })
    .await;
    let addr = broker.broker.tls_addrs()[0];
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    wait_until(TIMEOUT, "the silent socket admitted", || {
        broker.state().open_sockets() == 1
    })
    .await;
    // The limit is reached: another socket on the TLS port is closed at once.
    let refused = tls_connect(addr, pki.client_config(None)).await;
    assert!(refused.is_err(), "a second socket must be refused");
    let started = std::time::Instant::now();
    let mut scratch = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(4), silent.read(&mut scratch))
        .await
        .expect("the silent socket must be closed by the handshake deadline");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    wait_until(TIMEOUT, "the place given back", || {
        broker.state().open_sockets() == 0
    })
    .await;
}

/// A missing certificate file stops the start with an error naming the key and the path;
/// relative paths are resolved against the config file's directory.
#[tokio::test]
async fn start_errors_name_the_key_and_relative_paths_resolve() {
    let mut pki = TestPki::new();
    pki.server("server", "broker");
    let mut config = Config::default();
    config.server.listeners = vec!["127.0.0.1:0".parse().unwrap()];
    config.server.sys_interval_secs = 0;
    config.server.tls_listeners = vec![tls_listener(
        Path::new("missing.pem"),
        Path::new("server.key"),
    )];
    config.base_dir = Some(pki.dir.path().to_path_buf());
    let err = Broker::start(config.clone()).await.unwrap_err().to_string();
    assert!(
        err.contains("server.tls_listeners[0].cert")
            && err.contains(&pki.dir.path().join("missing.pem").display().to_string()),
        "{err}"
    );
    config.server.tls_listeners[0].cert = "server.pem".into();
    let broker = TestBroker::from_config(config).await;
    let addr = broker.broker.tls_addrs()[0];
    let stream = tls_connect(addr, pki.client_config(None)).await.unwrap();
    assert_eq!(server_cn(&stream), "broker");
}

fn mtls_config(pki: &mut TestPki, identity: bool) -> String {
    let (cert, key) = pki.server("server", "broker");
    format!(
        "{EPHEMERAL_CONFIG}\n[[server.tls_listeners]]\naddress = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\nrequire_client_cert = true\nuse_identity_as_username = {identity}\n",
        cert.display().to_string(),
        key.display().to_string(),
        pki.ca_pem.display().to_string(),
    )
}

/// mosquitto_pub and mosquitto_sub over mTLS (`--cafile`, `--cert`, `--key`): a retained
/// message published over TLS is read back over TLS, in 3.1.1 and 5.0; without a client
/// certificate mosquitto_pub fails.
#[test]
fn mosquitto_clients_over_mutual_tls() {
    if !interop_ready(false) {
        return;
    }
    let mut pki = TestPki::new();
    let config = mtls_config(&mut pki, true);
    let (client_cert, client_key) = pki.client("client", "mosquitto-user");
    let broker = SpawnedBroker::with_config(&config);
    let port = broker.listening("tls").port().to_string();
    let tls_args = |with_cert: bool| {
        let mut args = vec![
            "-h".to_owned(),
            "localhost".to_owned(),
            "-p".to_owned(),
            port.clone(),
            "--cafile".to_owned(),
            pki.ca_pem.display().to_string(),
        ];
        if with_cert {
            args.extend([
                "--cert".to_owned(),
                client_cert.display().to_string(),
                "--key".to_owned(),
                client_key.display().to_string(),
            ]);
        }
        args
    };
    for version in ["mqttv311", "mqttv5"] {
        let topic = format!("tls/mosquitto/{version}");
        let message = format!("retained over TLS {version}");
        let mut publish = std::process::Command::new("mosquitto_pub");
        publish
            .args(tls_args(true))
            .args(["-V", version, "-q", "1", "-r", "-t", &topic, "-m", &message]);
        let output = run_tool(publish, Duration::from_secs(10));
        assert!(
            output.status.success(),
            "mosquitto_pub failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut subscribe = std::process::Command::new("mosquitto_sub");
        subscribe
            .args(tls_args(true))
            .args(["-V", version, "-t", &topic, "-C", "1", "-W", "10"]);
        let output = run_tool(subscribe, Duration::from_secs(15));
        assert!(
            output.status.success(),
            "mosquitto_sub failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), message);
    }
    // use_identity_as_username: the broker knows them by their certificate's CN.
    broker.wait_for_output("username=mosquitto-user");
    let mut refused = std::process::Command::new("mosquitto_pub");
    refused
        .args(tls_args(false))
        .args(["-t", "tls/none", "-m", "x"]);
    let output = run_tool(refused, Duration::from_secs(10));
    assert!(
        !output.status.success(),
        "mosquitto_pub without a client certificate must fail"
    );
}

/// paho-mqtt for Python over TLS with a client certificate, 3.1.1 and 5.0.
#[test]
fn paho_over_mutual_tls() {
    if !interop_ready(true) {
        return;
    }
    let mut pki = TestPki::new();
    let config = mtls_config(&mut pki, false);
    let (client_cert, client_key) = pki.client("client", "paho-user");
    let broker = SpawnedBroker::with_config(&config);
    let port = broker.listening("tls").port();
    run_python_script(
        "paho_transport.py",
        &[
            "tls".to_owned(),
            "127.0.0.1".to_owned(),
            port.to_string(),
            pki.ca_pem.display().to_string(),
            client_cert.display().to_string(),
            client_key.display().to_string(),
        ],
    );
}

/// Runs `openssl ARGS` in `dir`, failing the test with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cannot run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The X.509 version of a PEM certificate file, read from its DER: 1 when the optional
/// version field is absent.
fn x509_version(pem: &Path) -> u8 {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let der = tokio_rustls::rustls::pki_types::CertificateDer::from_pem_file(pem).unwrap();
    // SEQUENCE { SEQUENCE (tbs) { [0] { INTEGER v } ...: both headers are 4 bytes long here.
    let tbs = &der[4..];
    let tbs_body = &tbs[if tbs[1] & 0x80 != 0 {
        2 + usize::from(tbs[1] & 0x7f)
    } else {
        2
    }..];
    if tbs_body[0] == 0xa0 {
        tbs_body[4] + 1
    } else {
        1
    }
}

/// Issue #25: a client certificate made as Mosquitto's TLS guide shows (`openssl x509 -req`
/// without extensions: X.509 v1) is refused, and the broker logs why, naming the version;
/// the same key signed with README's `-extfile` recipe (v3, extendedKeyUsage = clientAuth) is
/// accepted.
#[test]
fn a_v1_client_certificate_is_refused_with_the_reason_logged_and_a_v3_one_accepted() {
    let mut pki = TestPki::new();
    let (server_cert, server_key) = pki.server("server", "broker");
    let dir = pki.dir.path().to_path_buf();
    // The CA and the client's key and request, as in mosquitto-tls(7) (without -des3).
    openssl(
        &dir,
        &[
            "req",
            "-new",
            "-x509",
            "-days",
            "30",
            "-extensions",
            "v3_ca",
            "-nodes",
            "-subj",
            "/CN=guide CA",
            "-keyout",
            "guide-ca.key",
            "-out",
            "guide-ca.crt",
        ],
    );
    openssl(&dir, &["genrsa", "-out", "client.key", "2048"]);
    openssl(
        &dir,
        &[
            "req",
            "-new",
            "-key",
            "client.key",
            "-subj",
            "/CN=device-v1",
            "-out",
            "client.csr",
        ],
    );
    let sign = |out: &str, extfile: Option<&str>| {
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "guide-ca.crt",
            "-CAkey",
            "guide-ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-out",
            out,
        ];
        if let Some(extfile) = extfile {
            args.extend(["-extfile", extfile]);
        }
        openssl(&dir, &args);
    };
    sign("client-v1.crt", None);
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    sign("client-v3.crt", Some("client.ext"));
    assert_eq!(
        x509_version(&dir.join("client-v1.crt")),
        1,
        "this openssl no longer makes v1 certificates with `x509 -req`"
    );
    assert_eq!(x509_version(&dir.join("client-v3.crt")), 3);

    let config = format!(
        "{EPHEMERAL_CONFIG}\n[[server.tls_listeners]]\naddress = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\nrequire_client_cert = true\n",
        server_cert.display().to_string(),
        server_key.display().to_string(),
        dir.join("guide-ca.crt").display().to_string(),
    );
    let broker = SpawnedBroker::with_config(&config);
    let addr = broker.listening("tls");
    // rustls will not even present a v1 certificate: OpenSSL's client, as mosquitto_pub uses,
    // does.
    let mut s_client = std::process::Command::new("openssl");
    s_client
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .arg("-CAfile")
        .arg(&pki.ca_pem)
        .args(["-cert", "client-v1.crt", "-key", "client.key"])
        .current_dir(&dir);
    // TLS 1.3: the client may finish before the server's alert arrives; the log is the point.
    run_tool(s_client, Duration::from_secs(10));
    broker.wait_for_output("client certificate refused");
    let output = broker.output.lock().unwrap().clone();
    let line = output
        .lines()
        .find(|l| l.contains("client certificate refused"))
        .unwrap();
    for part in [
        "X.509 v1",
        "only v3",
        "subject_cn=Some(\"device-v1\")",
        "version=Some(1)",
        "not_after=Some(",
        "server.tls_listeners[0]",
    ] {
        assert!(line.contains(part), "{part} not in: {line}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = pki.client_config(Some((&dir.join("client-v3.crt"), &dir.join("client.key"))));
    assert_eq!(
        runtime.block_on(async { connack_over(tls_connect(addr, config).await, "device").await }),
        Some(ReasonCode::SUCCESS),
        "README's -extfile recipe makes a certificate that works"
    );
}
