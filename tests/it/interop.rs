//! Interop with real third-party clients against the real `sharq` binary: mosquitto_pub /
//! mosquitto_sub (MQTT 3.1.1 and 5.0, QoS 0/1/2, retained, will) and Eclipse paho-mqtt 2.x for
//! Python (`tests/interop/paho_check.py`).
//!
//! Missing tools fail the tests with a pointer to `.ci/install-test-tools`, unless
//! `SHARQ_SKIP_INTEROP=1` is set.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn mosquitto(tool: &str, broker: &SpawnedBroker, version: &str) -> Command {
    let mut command = Command::new(tool);
    command
        .arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(broker.addr.port().to_string())
        .arg("-V")
        .arg(version);
    command
}

fn publish(broker: &SpawnedBroker, version: &str, topic: &str, message: &str, extra: &[&str]) {
    let mut command = mosquitto("mosquitto_pub", broker, version);
    command.args(["-t", topic, "-m", message]).args(extra);
    let output = run_tool(command, Duration::from_secs(10));
    assert!(
        output.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts mosquitto_sub (debug output on) for one message and waits until it is subscribed.
fn subscriber(
    broker: &SpawnedBroker,
    version: &str,
    topic: &str,
    qos: u8,
    extra: &[&str],
) -> Child {
    // mosquitto_sub block-buffers stdout into a pipe: stdbuf makes its debug lines (SUBACK)
    // arrive as they happen.
    let mut command = Command::new("stdbuf");
    command
        .args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p"])
        .arg(broker.addr.port().to_string())
        .args(["-V", version])
        .args([
            "-t",
            topic,
            "-q",
            &qos.to_string(),
            "-C",
            "1",
            "-W",
            "10",
            "-d",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    // Read debug lines until SUBACK, then hand the rest of stdout back through a thread.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("SUBACK") => break,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("mosquitto_sub did not get SUBACK within 10 s");
            }
        }
    }
    // Keep the remaining lines for `finish`.
    SUB_LINES.with(|l| l.borrow_mut().push((child.id(), rx)));
    child
}

thread_local! {
    static SUB_LINES: std::cell::RefCell<Vec<(u32, std::sync::mpsc::Receiver<String>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Waits for mosquitto_sub to exit after its one message; returns the non-debug output lines.
fn finish(mut child: Child) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mosquitto_sub received nothing within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let rx = SUB_LINES.with(|l| {
        let mut l = l.borrow_mut();
        let index = l.iter().position(|(id, _)| *id == child.id()).unwrap();
        l.remove(index).1
    });
    // It has exited: its stdout reaches end of stream, and the reader hangs up once it has
    // forwarded the last line.
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => lines.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("mosquitto_sub exited but its output did not end within 10 s")
            }
        }
    }
    lines.retain(|l| !l.starts_with("Client ") && !l.starts_with("Subscribed"));
    assert!(
        status.success(),
        "mosquitto_sub failed: {status:?}, output {lines:?}"
    );
    lines
}

#[test]
fn mosquitto_clients_qos_0_1_2_v311_and_v5() {
    if !interop_ready(false) {
        return;
    }
    let broker = SpawnedBroker::start();
    for version in ["mqttv311", "mqttv5"] {
        for qos in 0..=2u8 {
            let topic = format!("interop/mosq/{version}/{qos}");
            let message = format!("mosquitto {version} qos {qos}");
            let sub = subscriber(&broker, version, &topic, qos, &[]);
            publish(
                &broker,
                version,
                &topic,
                &message,
                &["-q", &qos.to_string()],
            );
            let lines = finish(sub);
            assert_eq!(lines, vec![message], "{version} QoS {qos}");
        }
    }
}

#[test]
fn mosquitto_clients_retained() {
    if !interop_ready(false) {
        return;
    }
    let broker = SpawnedBroker::start();
    for version in ["mqttv311", "mqttv5"] {
        let topic = format!("interop/mosq/retained/{version}");
        publish(&broker, version, &topic, "kept", &["-r", "-q", "1"]);
        let sub = subscriber(&broker, version, &topic, 1, &[]);
        assert_eq!(finish(sub), vec!["kept".to_owned()], "{version}");
        // Clear it with an empty retained message.
        publish(&broker, version, &topic, "", &["-r", "-q", "1"]);
    }
}

#[test]
fn mosquitto_clients_will() {
    if !interop_ready(false) {
        return;
    }
    let broker = SpawnedBroker::start();
    for version in ["mqttv311", "mqttv5"] {
        let will_topic = format!("interop/mosq/will/{version}");
        let watcher = subscriber(&broker, version, &will_topic, 1, &[]);
        // A client holding a will, killed (socket dropped without DISCONNECT).
        let doomed = subscriber(
            &broker,
            version,
            "interop/mosq/unused",
            0,
            &[
                "--will-topic",
                &will_topic,
                "--will-payload",
                "gone",
                "--will-qos",
                "1",
            ],
        );
        let mut doomed = doomed;
        doomed.kill().unwrap();
        let _ = doomed.wait();
        assert_eq!(finish(watcher), vec!["gone".to_owned()], "{version}");
    }
}

/// Runs `tests/interop/SCRIPT HOST PORT` against a freshly started broker; the script exits 0
/// when every check passed.
fn run_paho_script(script: &str) {
    run_paho_script_with(script, EPHEMERAL_CONFIG);
}

/// Like [`run_paho_script`], with the broker started on `toml`.
fn run_paho_script_with(script: &str, toml: &str) {
    run_paho_script_args(script, toml, &[]);
}

/// Like [`run_paho_script_with`], with `args` after HOST PORT.
fn run_paho_script_args(script: &str, toml: &str, args: &[&str]) {
    if !interop_ready(true) {
        return;
    }
    let broker = SpawnedBroker::with_config(toml);
    let path = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new("python3");
    command
        .arg(path)
        .arg("127.0.0.1")
        .arg(broker.addr.port().to_string())
        .args(args);
    let output = run_tool(command, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "{script} failed:\nstdout {}\nstderr {}\nbroker output:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        broker.output.lock().unwrap()
    );
}

#[test]
fn paho_python_v311_and_v5() {
    run_paho_script("paho_check.py");
}

/// Server-to-client topic aliases with paho-mqtt as the receiving client.
#[test]
fn paho_python_receives_server_topic_aliases() {
    run_paho_script("paho_topic_alias.py");
}

/// Paho's `test_subscribe_failure`: an ACL that denies `test/nosubscribe` makes that SUBSCRIBE
/// fail (0x80 on 3.1.1, 0x87 on 5) while a permitted topic is granted.
#[test]
fn paho_subscribe_failure_with_an_acl() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("paho.acl");
    std::fs::write(
        &acl,
        "topic readwrite test/#\ntopic deny test/nosubscribe\n",
    )
    .unwrap();
    let toml = format!(
        "{EPHEMERAL_CONFIG}[auth]\nacl_file = {:?}\n",
        acl.display().to_string()
    );
    run_paho_script_with("paho_subscribe_failure.py", &toml);
}

/// A broker config whose ACL file (in `dir`) is `acl`, with anonymous clients allowed and a user
/// `writer` (password `w`).
fn acl_config(dir: &std::path::Path, acl: &str) -> String {
    let path = dir.join("sharq.acl");
    std::fs::write(&path, acl).unwrap();
    format!(
        "{EPHEMERAL_CONFIG}[auth]\nallow_anonymous = true\nacl_file = {:?}\nusers = {{ writer = \"w\" }}\n",
        path.display().to_string()
    )
}

/// The two lines Paho's interoperability suite is run with.
const PAHO_TWO_LINES: &str = "topic readwrite #\ntopic deny test/nosubscribe\n";

/// Issue #25: one deny rule must not break wildcard subscriptions. Under Paho's two-line ACL,
/// paho-mqtt clients in 3.1.1 and 5 are granted `#`, `+/+` and `$share/g/#`, get the suite's
/// live and retained messages, and never a message on the denied topic (published by `writer`,
/// who may); `test/nosubscribe` itself is refused, and so is a filter all of whose reach is
/// denied. Paho's own `test_subscribe_failure` passes under the same two lines.
#[test]
fn paho_wildcards_beside_one_deny_rule() {
    let dir = tempfile::tempdir().unwrap();
    let two_lines = acl_config(
        dir.path(),
        &format!("{PAHO_TWO_LINES}\nuser writer\ntopic write #\n"),
    );
    run_paho_script_args("paho_acl_wildcards.py", &two_lines, &["paho"]);
    run_paho_script_with("paho_subscribe_failure.py", &two_lines);
    let subtree = tempfile::tempdir().unwrap();
    let deny_subtree = acl_config(subtree.path(), "topic readwrite #\ntopic deny test/#\n");
    run_paho_script_args("paho_acl_wildcards.py", &deny_subtree, &["deny-subtree"]);
}
