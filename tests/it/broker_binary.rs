//! The `sharq` binary as a process: serves with a config file, refuses an unknown config key
//! by name, on SIGTERM tells v5 clients DISCONNECT 0x8B and exits 0, and logs to stderr
//! without colour codes when it is not a terminal, or as one JSON object per line.

use std::io::BufRead;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;
use sharq::packet::{ProtocolVersion, QoS, ReasonCode};

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

/// Runs the binary on `toml`, which it must refuse: returns its output once it has exited
/// with a non-zero status (within 20 s).
fn refused_config_output(toml: &str) -> String {
    let (mut child, output, lines, _dir) = spawn_sharq_raw(toml);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sharq kept running with a config it must refuse:\n{toml}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        !status.success(),
        "exit status must be non-zero: {status:?}"
    );
    // The readers have collected everything once both pipes are closed and they hang up.
    while lines.recv_timeout(TIMEOUT).is_ok() {}
    let output = output.lock().unwrap().clone();
    output
}

#[test]
fn binary_refuses_unknown_config_key_and_names_it() {
    let output = refused_config_output(&format!(
        "{EPHEMERAL_CONFIG}\n[limits]\nmax_pakcet_size = 1000\n"
    ));
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

/// Runs the binary with `toml`, stdout and stderr piped, `NO_COLOR` unset; each stream's raw
/// lines (bytes, escape codes kept) arrive on its own channel, which hangs up at end of stream.
fn spawn_piped(
    toml: &str,
) -> (
    Child,
    mpsc::Receiver<Vec<u8>>,
    mpsc::Receiver<Vec<u8>>,
    tempfile::TempDir,
) {
    let (mut command, dir) = sharq_command(toml);
    let mut child = command
        .env_remove("NO_COLOR")
        .spawn()
        .expect("cannot run the sharq binary");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read_lines = |reader: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(reader).split(b'\n') {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let out = read_lines(Box::new(stdout));
    let err = read_lines(Box::new(stderr));
    (child, out, err, dir)
}

/// Reads `lines` until one gives a listening address (by `parse_listening`), keeping every line.
fn wait_listening(
    child: &mut Child,
    lines: &mpsc::Receiver<Vec<u8>>,
    seen: &mut Vec<Vec<u8>>,
) -> std::net::SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let addr = parse_listening(&String::from_utf8_lossy(&line));
                seen.push(line);
                if let Some(addr) = addr {
                    return addr;
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no listening address logged; stderr so far:\n{}",
                    seen.iter()
                        .map(|l| String::from_utf8_lossy(l))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
    }
}

/// Stops the broker with SIGTERM and returns the rest of each stream once it has exited.
fn terminate_and_drain(
    child: &mut Child,
    out: &mpsc::Receiver<Vec<u8>>,
    err: &mpsc::Receiver<Vec<u8>>,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("cannot run kill");
    assert!(status.success(), "kill -TERM failed");
    let drain = |rx: &mpsc::Receiver<Vec<u8>>| {
        let mut lines = Vec::new();
        // Ends when the stream's writer is gone (the channel hangs up), or fails the wait.
        loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return lines,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("sharq still writing 10 s after SIGTERM")
                }
            }
        }
    };
    let rest = (drain(out), drain(err));
    let exit = child.wait().expect("wait for sharq");
    assert_eq!(exit.code(), Some(0), "exit status after SIGTERM");
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_one_json_object_per_stderr_line() {
    let toml = format!("{EPHEMERAL_CONFIG}log_format = \"json\"\n");
    let (mut child, out, err, _dir) = spawn_piped(&toml);
    let mut stderr = Vec::new();
    let addr = wait_listening(&mut child, &err, &mut stderr);
    // The logged address is the real one.
    let mut client = RawClient::v5(addr, "json-log").await;
    client.ping().await;
    client.disconnect().await;
    let (stdout, rest) =
        tokio::task::block_in_place(|| terminate_and_drain(&mut child, &out, &err));
    stderr.extend(rest);
    assert!(
        stdout.is_empty(),
        "logs go to stderr, stdout got {stdout:?}"
    );
    let mut messages = Vec::new();
    for line in &stderr {
        let event: serde_json::Value = serde_json::from_slice(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(line)));
        assert!(event.is_object(), "not a JSON object: {event}");
        assert!(event.get("level").is_some_and(|l| l.is_string()), "{event}");
        let message = event["fields"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {event}"));
        messages.push(message.to_owned());
    }
    let listening = stderr
        .iter()
        .map(|line| serde_json::from_slice::<serde_json::Value>(line).unwrap())
        .find(|event| event["fields"]["message"] == "listening for MQTT connections")
        .expect("a listening event");
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["fields"]["address"], addr.to_string());
    assert!(messages.iter().any(|m| m == "stopped"), "{messages:?}");
}

#[test]
fn text_logs_to_a_pipe_carry_no_colour_codes() {
    let (mut child, out, err, _dir) = spawn_piped(EPHEMERAL_CONFIG);
    let mut stderr = Vec::new();
    wait_listening(&mut child, &err, &mut stderr);
    let (stdout, rest) = terminate_and_drain(&mut child, &out, &err);
    stderr.extend(rest);
    assert!(
        stdout.is_empty(),
        "logs go to stderr, stdout got {stdout:?}"
    );
    assert!(
        stderr.len() >= 3,
        "expected start, listening and stop lines: {stderr:?}"
    );
    for line in &stderr {
        assert!(
            !line.windows(2).any(|w| w == b"\x1b["),
            "ANSI escape in a piped log line: {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

/// Anonymous access is the default only while every MQTT listener is on loopback: a config
/// with any other listener (TCP, TLS or WebSocket) that does not say whether clients without a
/// username may connect is refused at start, naming the key.
#[test]
fn a_listener_off_loopback_needs_an_explicit_allow_anonymous() {
    for listeners in [
        "[server]\nlisteners = [\"0.0.0.0:0\"]\n".to_owned(),
        format!("{EPHEMERAL_CONFIG}[[server.ws_listeners]]\naddress = \"0.0.0.0:0\"\npath = \"/mqtt\"\n"),
    ] {
        let output = refused_config_output(&listeners);
        assert!(
            output.contains("auth.allow_anonymous"),
            "the error must name auth.allow_anonymous; output:\n{output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_allow_anonymous_serves_off_loopback() {
    for (allow, expected) in [
        ("true", ReasonCode::SUCCESS),
        ("false", ReasonCode::NOT_AUTHORIZED),
    ] {
        let broker = SpawnedBroker::with_config(&format!(
            "[server]\nlisteners = [\"0.0.0.0:0\"]\nlog = \"info\"\nsys_interval_secs = 0\n\
             [auth]\nallow_anonymous = {allow}\n"
        ));
        let port = broker.addr.port();
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let (_client, connack) =
            RawClient::connect_with(loopback, connect_packet(ProtocolVersion::V5, "anon")).await;
        assert_eq!(connack.reason_code, expected, "allow_anonymous = {allow}");
    }
}

/// An existing plugin cache directory that others may write into, or that another user owns,
/// is refused at start with an error naming `shared.plugin_cache_dir`: its files are loaded as
/// native code. A private one is used.
#[cfg(unix)]
#[test]
fn binary_refuses_a_plugin_cache_dir_others_could_write() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cases = vec![(open.clone(), "writable by group or others (mode 777)")];
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let foreign = dir.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        cases.push((foreign, "owned by uid 65534"));
    }
    let config = |cache: &std::path::Path| {
        format!(
            "{EPHEMERAL_CONFIG}[shared]\nplugin_cache_dir = {:?}\n",
            cache.display().to_string()
        )
    };
    for (cache, why) in cases {
        let output = refused_config_output(&config(&cache));
        assert!(
            output.contains("shared.plugin_cache_dir") && output.contains(why),
            "{output}"
        );
        assert!(!output.contains("listening for MQTT"), "{output}");
    }
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o700)).unwrap();
    drop(SpawnedBroker::with_config(&config(&open)));
}
