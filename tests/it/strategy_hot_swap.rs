//! Hot swap of a shared group's strategy under load, through the real binary: a publisher
//! sends QoS 1 continuously to a group of three acking members while the group's strategy is
//! swapped by editing the config file (the watcher), by `kill -HUP`, by `sharq reload --pid`,
//! and by replacing the plugin file (write + rename, as editors do). Nothing is lost or
//! duplicated, the last strategy's distribution shows, and a broken plugin file leaves the old
//! strategy in place with one error line naming the file and the cause.

use crate::common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use sharq::packet::{Packet, QoS};

/// `sharq --config FILE` as a child process, its log collected line by line.
struct Process {
    child: Child,
    addr: SocketAddr,
    log: Arc<parking_lot::Mutex<Vec<String>>>,
}

impl Process {
    async fn spawn(config: &Path) -> Process {
        let mut child = Command::new(common::sharq_binary_copy())
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run sharq");
        let log: Arc<parking_lot::Mutex<Vec<String>>> = Arc::default();
        for reader in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(reader).lines() {
                    let Ok(line) = line else { break };
                    log.lock().push(common::strip_ansi(&line));
                }
            });
        }
        let mut process = Process {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let addr = process
            .wait_line("the listening address", |l| {
                l.contains("listening for MQTT connections")
            })
            .await;
        let rest = &addr[addr.find("address=").unwrap() + "address=".len()..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        process.addr = rest[..end].trim_matches('"').parse().unwrap();
        process
    }

    fn count(&self, pick: impl Fn(&str) -> bool) -> usize {
        self.log.lock().iter().filter(|l| pick(l)).count()
    }

    fn dump(&self) -> String {
        self.log.lock().join("\n")
    }

    /// Waits (bounded) for a log line `pick` accepts; returns it.
    async fn wait_line(&self, what: &str, pick: impl Fn(&str) -> bool) -> String {
        self.wait_lines(what, 1, pick).await
    }

    /// Waits (bounded) until `n` log lines match; returns the last.
    async fn wait_lines(&self, what: &str, n: usize, pick: impl Fn(&str) -> bool) -> String {
        let found = poll_until(Duration::from_secs(15), || self.count(&pick) >= n).await;
        assert!(found, "timed out waiting for {what}; log:\n{}", self.dump());
        self.log
            .lock()
            .iter()
            .rev()
            .find(|l| pick(l))
            .unwrap()
            .clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(strategy_line: &str) -> String {
    format!(
        "[server]\nlisteners = [\"127.0.0.1:0\"]\nlog = \"info\"\nsys_interval_secs = 0\n\
         [limits]\nmax_inflight = 1000\n\
         [shared]\nplugin_deadline_ms = {TEST_PLUGIN_DEADLINE_MS}\n\
         [[shared.groups]]\nname = \"work\"\n{strategy_line}\n"
    )
}

/// Replaces `path` the way editors and deploy tools do: a new file renamed over the old.
fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn swapped(line: &str) -> bool {
    line.contains("shared group strategy swapped")
}

/// Publishes sequence-numbered QoS 1 messages with up to `WINDOW` awaiting PUBACK, about one
/// per millisecond, until `target` (which the test may raise or lower) is reached.
async fn publish_until(mut client: RawClient, sent: Arc<AtomicU32>, target: Arc<AtomicU32>) {
    const WINDOW: usize = 20;
    let mut outstanding: Vec<u16> = Vec::new();
    let mut seq = 0u32;
    loop {
        if seq >= target.load(Ordering::SeqCst) {
            break;
        }
        while outstanding.len() >= WINDOW {
            read_ack(&mut client, &mut outstanding).await;
        }
        let id = client
            .publish_nowait(
                &format!("jobs/{}", seq % 10),
                seq_payload(seq),
                QoS::AtLeastOnce,
                false,
            )
            .await
            .unwrap();
        outstanding.push(id);
        seq += 1;
        sent.store(seq, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while !outstanding.is_empty() {
        read_ack(&mut client, &mut outstanding).await;
    }
}

async fn read_ack(client: &mut RawClient, outstanding: &mut Vec<u16>) {
    match client.next_event(TIMEOUT).await {
        Event::Packet(Packet::PubAck(ack)) => {
            assert!(!ack.reason_code.is_error(), "PUBACK {ack:?}");
            outstanding.retain(|id| *id != ack.packet_id);
        }
        Event::Packet(_) => {}
        other => panic!("publisher: waiting for PUBACK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategy_swaps_under_load_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sharq.toml");
    let plugin = dir.path().join("strategy.wasm");
    std::fs::copy(common::builtin_wasm("round_robin"), &plugin).unwrap();
    std::fs::write(&config, config_text("strategy = \"round_robin\"")).unwrap();
    let broker = Process::spawn(&config).await;
    let pid = broker.child.id();

    let mut members = Vec::new();
    for i in 0..3 {
        let (mut client, _) =
            RawClient::connect_opts(broker.addr, ConnectOpts::new(V5, &format!("member-{i}")))
                .await;
        client
            .subscribe("$share/work/jobs/#", QoS::AtLeastOnce)
            .await;
        members.push(Member::spawn(client, AckMode::Ack));
    }
    let (client, _) = RawClient::connect_opts(broker.addr, ConnectOpts::new(V5, "publisher")).await;
    let sent = Arc::new(AtomicU32::new(0));
    let target = Arc::new(AtomicU32::new(u32::MAX));
    let publishing = tokio::spawn(publish_until(client, sent.clone(), target.clone()));
    let wait_sent = |n: u32| {
        let sent = sent.clone();
        async move {
            wait_until(Duration::from_secs(15), "publisher progress", || {
                sent.load(Ordering::SeqCst) >= n
            })
            .await
        }
    };
    wait_sent(300).await;

    // 1. The config file is edited: the watcher reloads.
    std::fs::write(&config, config_text("strategy = \"random\"")).unwrap();
    broker
        .wait_lines("swap to random (watcher)", 1, |l| {
            swapped(l) && l.contains("to=random")
        })
        .await;
    wait_sent(sent.load(Ordering::SeqCst) + 200).await;

    // 2. kill -HUP (the watcher may also see the edit; either way one swap to sticky).
    std::fs::write(&config, config_text("strategy = \"sticky\"")).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    broker
        .wait_lines("swap to sticky (SIGHUP)", 1, |l| {
            swapped(l) && l.contains("to=sticky")
        })
        .await;
    wait_sent(sent.load(Ordering::SeqCst) + 200).await;

    // 3. `sharq reload --pid`, to a plugin file (round_robin's component).
    std::fs::write(&config, config_text("plugin = \"strategy.wasm\"")).unwrap();
    let reload = Command::new(common::sharq_binary_copy())
        .args(["reload", "--pid", &pid.to_string()])
        .output()
        .unwrap();
    assert!(
        reload.status.success(),
        "sharq reload: {}",
        String::from_utf8_lossy(&reload.stderr)
    );
    broker
        .wait_lines("swap to the plugin file (sharq reload)", 1, |l| {
            swapped(l) && l.contains("from=sticky") && l.contains("strategy.wasm")
        })
        .await;
    wait_sent(sent.load(Ordering::SeqCst) + 200).await;

    // 4. The plugin file is replaced (failover's component) by write + rename.
    let swaps_before = broker.count(swapped);
    replace_file(
        &plugin,
        &std::fs::read(common::builtin_wasm("failover")).unwrap(),
    );
    broker
        .wait_lines("swap on plugin file replacement", swaps_before + 1, swapped)
        .await;
    // Everything published from now on is dispatched by failover.
    let failover_from = sent.load(Ordering::SeqCst);
    wait_sent(failover_from + 200).await;

    // 5. A broken plugin file: refused, one error line naming the file and the cause, and
    // failover stays.
    let errors = |l: &str| l.contains("ERROR");
    let errors_before = broker.count(errors);
    replace_file(&plugin, b"\0asm\x0d\0\x01\0 garbage, not a component");
    let line = broker
        .wait_lines("the reload error", errors_before + 1, errors)
        .await;
    assert!(line.contains("reload refused"), "{line}");
    assert!(line.contains(&plugin.display().to_string()), "{line}");
    assert!(line.contains("compile"), "{line}");
    let swaps_after_failover = broker.count(swapped);

    // Publish a while longer, then stop at 3000 or more.
    let now = sent.load(Ordering::SeqCst);
    target.store((now + 300).max(3000), Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), publishing)
        .await
        .expect("publisher did not finish")
        .unwrap();
    let total_sent = sent.load(Ordering::SeqCst);
    assert!(total_sent >= 3000);
    let refs: Vec<&Member> = members.iter().collect();
    wait_total(&refs, total_sent as usize).await;
    assert_exactly_once(
        "hot swaps under load",
        refs.iter().flat_map(|m| m.seqs()),
        0..total_sent,
    );
    assert_eq!(
        broker.count(errors),
        errors_before + 1,
        "exactly one error line for the broken plugin; log:\n{}",
        broker.dump()
    );
    assert_eq!(
        broker.count(swapped),
        swaps_after_failover,
        "the broken plugin swapped nothing"
    );

    // failover's distribution: one member (the earliest subscribed) got every message
    // published after the swap, through the broken reload as well.
    let takers: Vec<(usize, usize)> = members
        .iter()
        .enumerate()
        .map(|(i, m)| (i, m.seqs().iter().filter(|s| **s >= failover_from).count()))
        .collect();
    assert_eq!(
        takers,
        vec![(0, (total_sent - failover_from) as usize), (1, 0), (2, 0)],
        "after the swap to failover"
    );
    // Before the swaps, round_robin spread the load over all three.
    assert!(members.iter().all(|m| m.seqs().iter().any(|s| *s < 300)));
}
