//! The `sharq` binary as a process: serves with a config file, refuses an unknown config key
//! by name, and on SIGTERM tells v5 clients DISCONNECT 0x8B and exits 0.

mod common;

use std::time::Duration;

use common::*;
use sharq::packet::QoS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_starts_with_config_file_and_serves() {
    let broker = SpawnedBroker::start();
    let mut sub = RawClient::v5(broker.addr, "bin-sub").await;
    sub.subscribe("bin/t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::v311(broker.addr, "bin-pub").await;
    publisher
        .publish("bin/t", b"from a process", QoS::AtLeastOnce, false)
        .await;
    let got = sub.recv_and_ack().await;
    assert_eq!(&got.payload[..], b"from a process");
}

#[test]
fn binary_refuses_unknown_config_key_and_names_it() {
    let toml = format!("{EPHEMERAL_CONFIG}\n[limits]\nmax_pakcet_size = 1000\n");
    let (mut child, output, _lines, _dir) = spawn_sharq_raw(&toml);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sharq kept running with an unknown config key");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        !status.success(),
        "exit status must be non-zero: {status:?}"
    );
    // Give the reader threads a moment to collect the last lines.
    std::thread::sleep(Duration::from_millis(100));
    let output = output.lock().unwrap().clone();
    assert!(
        output.contains("max_pakcet_size"),
        "the error must name the unknown key; output:\n{output}"
    );
}

#[test]
fn binary_refuses_missing_config_file() {
    let status = std::process::Command::new(sharq_binary())
        .args(["--config", "/nonexistent/sharq.toml"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_v5_disconnect_0x8b_and_exits_0() {
    let mut broker = SpawnedBroker::start();
    let mut v5 = RawClient::v5(broker.addr, "bin-v5").await;
    let mut v311 = RawClient::v311(broker.addr, "bin-v311").await;
    v5.ping().await;
    v311.ping().await;
    broker.terminate();
    v5.expect_disconnect(0x8B).await;
    v311.expect_error_close(0x8B).await;
    let status = tokio::task::block_in_place(|| broker.wait_exit(Duration::from_secs(10)));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM; output:\n{}",
        broker.output.lock().unwrap()
    );
}
