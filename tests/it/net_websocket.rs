//! WebSocket listeners: the upgrade (path, subprotocol), MQTT packets independent of
//! WebSocket message boundaries, secure WebSocket, and paho-mqtt over both.
//!
//! Subprotocols: `mqtt` (and `mqttv3.1`) is chosen and echoed; a client offering none is
//! served anyway; a client offering only others is refused with HTTP 400; another path gets
//! HTTP 404.

use std::net::SocketAddr;

use futures_sink::Sink;
use sharq::broker::net::ws::WsStream;
use sharq::config::WsListenerConfig;
use sharq::packet::{Packet, QoS, ReasonCode};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::common::*;

fn ws_listener() -> WsListenerConfig {
    WsListenerConfig {
        address: "127.0.0.1:0".parse().unwrap(),
        path: "/mqtt".to_owned(),
        cert: None,
        key: None,
    }
}

async fn ws_broker() -> (TestBroker, SocketAddr) {
    let broker = TestBroker::with(|config| config.server.ws_listeners = vec![ws_listener()]).await;
    let addr = broker.broker.ws_addrs()[0];
    (broker, addr)
}

async fn upgrade(
    addr: SocketAddr,
    path: &str,
    protocols: Option<&str>,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<TcpStream>,
        tungstenite::handshake::client::Response,
    ),
    tungstenite::Error,
> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    ws_upgrade(tcp, &format!("ws://{addr}{path}"), protocols).await
}

async fn send_message(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>, message: Message) {
    use std::future::poll_fn;
    use std::pin::Pin;
    poll_fn(|cx| Pin::new(&mut *ws).poll_ready(cx))
        .await
        .unwrap();
    Pin::new(&mut *ws).start_send(message).unwrap();
    poll_fn(|cx| Pin::new(&mut *ws).poll_flush(cx))
        .await
        .unwrap();
}

/// One CONNECT split over three WebSocket messages, then one message holding SUBSCRIBE,
/// PUBLISH and PINGREQ: the broker answers each packet, as on TCP.
#[tokio::test]
async fn packets_are_independent_of_websocket_messages() {
    let (broker, addr) = ws_broker().await;
    let (mut ws, response) = upgrade(addr, "/mqtt", Some("mqtt")).await.unwrap();
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "mqtt"
    );
    let connect = encode(
        &Packet::Connect(Box::new(connect_packet(V5, "ws-split"))),
        V5,
    );
    let (a, rest) = connect.split_at(3);
    let (b, c) = rest.split_at(rest.len() / 2);
    for part in [a, b, c] {
        send_message(
            &mut ws,
            Message::Binary(bytes::Bytes::copy_from_slice(part)),
        )
        .await;
    }
    let mut client = RawClient::over(WsStream::new(ws), V5);
    match client.recv().await {
        Packet::ConnAck(connack) => assert_eq!(connack.reason_code, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    let mut several = encode(
        &Packet::Subscribe(sharq::packet::Subscribe {
            packet_id: 1,
            filters: vec![sharq::packet::TopicSubscription {
                filter: "ws/#".into(),
                options: sub_options(QoS::AtLeastOnce),
            }],
            properties: Default::default(),
        }),
        V5,
    );
    several.extend(encode(
        &Packet::Publish(publish_packet(
            "ws/one",
            b"in one message",
            QoS::AtLeastOnce,
            Some(2),
        )),
        V5,
    ));
    several.extend(encode(&Packet::PingReq, V5));
    // RawClient writes all of it with one write: the WebSocket adapter sends one message.
    client.send_bytes(&several).await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match client.recv().await {
            Packet::SubAck(_) => seen.push("SUBACK"),
            Packet::PubAck(_) => seen.push("PUBACK"),
            Packet::PingResp => seen.push("PINGRESP"),
            Packet::Publish(publish) => {
                assert_eq!(&publish.payload[..], b"in one message");
                client.ack(&publish).await;
                seen.push("PUBLISH");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    seen.sort();
    assert_eq!(seen, ["PINGRESP", "PUBACK", "PUBLISH", "SUBACK"]);
    // WebSocket and TCP clients share one broker.
    let mut plain = RawClient::v5(broker.addr(), "plain").await;
    plain
        .publish("ws/two", b"from tcp", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&client.recv_and_ack().await.payload[..], b"from tcp");
}

#[tokio::test]
async fn subprotocols_and_paths() {
    let (_broker, addr) = ws_broker().await;
    // mqttv3.1 is accepted and echoed.
    let (_, response) = upgrade(addr, "/mqtt", Some("mqttv3.1")).await.unwrap();
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "mqttv3.1"
    );
    // No subprotocol: served, without the header; MQTT works.
    let (ws, response) = upgrade(addr, "/mqtt", None).await.unwrap();
    assert!(response.headers().get("Sec-WebSocket-Protocol").is_none());
    let (mut client, connack) = RawClient::over(WsStream::new(ws), V3_1_1)
        .connect_as(connect_packet(V3_1_1, "no-protocol"))
        .await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    client.ping().await;
    // Only other subprotocols: 400.
    match upgrade(addr, "/mqtt", Some("chat")).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("expected HTTP 400, got {other:?}"),
    }
    // Another path: 404.
    match upgrade(addr, "/elsewhere", Some("mqtt")).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("expected HTTP 404, got {other:?}"),
    }
}

/// MQTT must come in binary messages [MQTT-6.0.0-1]: a text message closes the connection.
#[tokio::test]
async fn a_text_message_closes_the_connection() {
    let (_broker, addr) = ws_broker().await;
    let (mut ws, _) = upgrade(addr, "/mqtt", Some("mqtt")).await.unwrap();
    let connect = encode(&Packet::Connect(Box::new(connect_packet(V5, "texter"))), V5);
    send_message(&mut ws, Message::Binary(connect.into())).await;
    send_message(&mut ws, Message::Text("hello".into())).await;
    let mut client = RawClient::over(WsStream::new(ws), V5);
    let got = client.expect_closed().await;
    assert!(
        matches!(got.first(), Some(Packet::ConnAck(_))),
        "CONNACK, then the close: {got:?}"
    );
}

/// wss with a raw client: TLS, then the upgrade, then MQTT.
#[tokio::test]
async fn secure_websocket() {
    let mut pki = TestPki::new();
    let (cert, key) = pki.server("server", "wss-broker");
    let mut listener = ws_listener();
    listener.cert = Some(cert);
    listener.key = Some(key);
    let broker = TestBroker::with(|config| config.server.ws_listeners = vec![listener]).await;
    let addr = broker.broker.ws_addrs()[0];
    let tls = tls_connect(addr, pki.client_config(None)).await.unwrap();
    assert_eq!(server_cn(&tls), "wss-broker");
    let (ws, _) = ws_upgrade(
        tls,
        &format!("wss://localhost:{}/mqtt", addr.port()),
        Some("mqtt"),
    )
    .await
    .unwrap();
    let (mut client, connack) = RawClient::over(WsStream::new(ws), V5)
        .connect_as(connect_packet(V5, "wss"))
        .await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    client.subscribe("wss", QoS::AtLeastOnce).await;
    client
        .publish("wss", b"secure", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&client.recv_and_ack().await.payload[..], b"secure");
}

/// paho-mqtt for Python with `transport="websockets"`, path `/mqtt`, over ws and wss.
#[test]
fn paho_over_ws_and_wss() {
    if !interop_ready(true) {
        return;
    }
    let mut pki = TestPki::new();
    let (cert, key) = pki.server("server", "broker");
    let config = format!(
        "{EPHEMERAL_CONFIG}\n[[server.ws_listeners]]\naddress = \"127.0.0.1:0\"\n\n[[server.ws_listeners]]\naddress = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let broker = SpawnedBroker::with_config(&config);
    let ws_port = broker.listening("ws").port();
    let wss_port = broker.listening("wss").port();
    run_python_script(
        "paho_transport.py",
        &["ws".to_owned(), "127.0.0.1".to_owned(), ws_port.to_string()],
    );
    run_python_script(
        "paho_transport.py",
        &[
            "wss".to_owned(),
            "127.0.0.1".to_owned(),
            wss_port.to_string(),
            pki.ca_pem.display().to_string(),
        ],
    );
}

/// Upgrades a raw TCP socket to WebSocket by hand, so the test can then write frames byte by
/// byte as an attacker would.
async fn raw_ws_upgrade(addr: SocketAddr) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /mqtt HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(TIMEOUT, tcp.read(&mut byte))
            .await
            .expect("no upgrade response")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed during the upgrade: {:?}",
            String::from_utf8_lossy(&response)
        );
        response.push(byte[0]);
    }
    assert!(
        response.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    tcp
}

/// Before CONNECT, a WebSocket may make the broker buffer no more than one packet of
/// `limits.max_packet_size` (plus framing). Three sockets that never send CONNECT each push
/// one 47 MiB binary frame; the broker refuses each at its header and closes, and its memory
/// stays flat. It used to accept messages up to 64 MiB whatever the packet limit, and RSS grew
/// by about 141 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_frame_before_connect_is_refused_at_its_header() {
    use tokio::io::AsyncWriteExt;
    let broker = SpawnedBroker::with_config(&format!(
        "{EPHEMERAL_CONFIG}[[server.ws_listeners]]\naddress = \"127.0.0.1:0\"\npath = \"/mqtt\"\n\
         [limits]\nmax_packet_size = 1048576\n"
    ));
    let addr = broker.listening("ws");
    let before = rss_kib(broker.pid());
    const FRAME: u64 = 47 << 20;
    let chunk = vec![0u8; 64 * 1024];
    let mut sockets = Vec::new();
    let mut sent_total = 0u64;
    for _ in 0..3 {
        let mut tcp = raw_ws_upgrade(addr).await;
        // FIN + binary; masked (as every client frame must be), 64-bit length; mask 0.
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&FRAME.to_be_bytes());
        header.extend_from_slice(&[0, 0, 0, 0]);
        tcp.write_all(&header).await.unwrap();
        let mut sent = 0u64;
        while sent < FRAME {
            match tokio::time::timeout(TIMEOUT, tcp.write_all(&chunk)).await {
                Ok(Ok(())) => sent += chunk.len() as u64,
                // Closed by the broker, or it stopped reading: either way it holds no more.
                Ok(Err(_)) | Err(_) => break,
            }
        }
        sent_total += sent;
        sockets.push(tcp);
    }
    let grown = rss_kib(broker.pid()).saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "RSS grew by {grown} KiB after {sent_total} bytes of frames before CONNECT"
    );
    drop(sockets);
    assert_broker_alive(broker.listening("tcp")).await;
}
