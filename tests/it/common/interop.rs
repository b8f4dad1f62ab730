//! Third-party clients: the rumqttc library in-process, and command-line tools (mosquitto_pub,
//! mosquitto_sub, paho-mqtt for Python) in child processes.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::TIMEOUT;

/// A rumqttc 3.1.1 client whose event loop runs in a task forwarding every event.
pub async fn rumqttc_v311(
    addr: SocketAddr,
    client_id: &str,
) -> (
    rumqttc::AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<Result<rumqttc::Event, String>>,
) {
    let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(event) => {
                    if tx.send(Ok(event)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    });
    // Wait for the CONNACK.
    let connack = wait_event(&mut rx, "CONNACK", |e| {
        matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))
    })
    .await;
    if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(c)) = connack {
        assert_eq!(c.code, rumqttc::ConnectReturnCode::Success);
    }
    (client, rx)
}

/// A rumqttc v5 client whose event loop runs in a task forwarding every event.
pub async fn rumqttc_v5(
    addr: SocketAddr,
    client_id: &str,
) -> (
    rumqttc::v5::AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<Result<rumqttc::v5::Event, String>>,
) {
    let mut options = rumqttc::v5::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 64);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(event) => {
                    if tx.send(Ok(event)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    });
    wait_event(&mut rx, "CONNACK", |e| {
        matches!(
            e,
            rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_))
        )
    })
    .await;
    (client, rx)
}

/// Waits (bounded) for an event satisfying `pred`; fails on an event-loop error.
pub async fn wait_event<E: std::fmt::Debug>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Result<E, String>>,
    what: &str,
    pred: impl Fn(&E) -> bool,
) -> E {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => panic!("timed out waiting for {what}"),
            Ok(None) => panic!("event loop ended while waiting for {what}"),
            Ok(Some(Err(e))) => panic!("client error while waiting for {what}: {e}"),
            Ok(Some(Ok(event))) if pred(&event) => return event,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// True if tests with third-party tools should run; fails the test if they should but the
/// tools are missing (`.ci/install-test-tools` installs them). `SHARQ_SKIP_INTEROP=1` skips.
pub fn interop_ready(needs_paho: bool) -> bool {
    if std::env::var("SHARQ_SKIP_INTEROP").as_deref() == Ok("1") {
        eprintln!("SHARQ_SKIP_INTEROP=1: interop test skipped");
        return false;
    }
    let have = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let mut missing = Vec::new();
    for tool in ["mosquitto_pub", "mosquitto_sub", "stdbuf"] {
        if !have("sh", &["-c", &format!("command -v {tool}")]) {
            missing.push(tool);
        }
    }
    if needs_paho && !have("python3", &["-c", "import paho.mqtt"]) {
        missing.push("python3 paho-mqtt");
    }
    assert!(
        missing.is_empty(),
        "interop tools missing: {missing:?}; run `.ci/install-test-tools` (or set SHARQ_SKIP_INTEROP=1 to skip)"
    );
    true
}

/// Runs `command` to its end within `limit` (killed and failing the test after), collecting
/// its output.
pub fn run_tool(mut command: Command, limit: Duration) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{command:?} did not finish within {limit:?}; stdout {:?} stderr {:?}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `tests/interop/SCRIPT` with python3 and `args`; fails the test unless it exits 0.
pub fn run_python_script(script: &str, args: &[String]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    let mut command = Command::new("python3");
    command.arg(&path).args(args);
    let output = run_tool(command, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "{script} {args:?} failed: stdout {} stderr {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
