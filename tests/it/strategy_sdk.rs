//! Strategies written on `plugins/sdk` (fixtures in `tests/fixtures/hostile/sdk_*`), run by the
//! real binary: a router by user property end to end with paho-mqtt, a panicking plugin whose
//! own message reaches the log, a log flooder that is rate-limited and counted, and a contract
//! 0.1.0 component beside 0.2.0 ones in one broker.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use bytestring::ByteString;
use sharq::packet::{Packet, QoS, Subscribe, SubscribeProperties, TopicSubscription};

/// A config for the real binary with `$SYS` every second (for the strategy counters) and one
/// `[[shared.groups]]` rule per (share name, fixture).
fn config(groups: &[(&str, &str)]) -> String {
    let mut toml = String::from(
        "[server]\nlisteners = [\"127.0.0.1:0\"]\nlog = \"info\"\nsys_interval_secs = 1\n",
    );
    for (name, stem) in groups {
        let plugin = fixture_plugin(stem);
        toml.push_str(&format!(
            "[[shared.groups]]\nname = {name:?}\nplugin = {:?}\n",
            plugin.display().to_string()
        ));
    }
    toml
}

fn props(pairs: &[(&str, &str)]) -> Vec<(ByteString, ByteString)> {
    pairs
        .iter()
        .map(|(k, v)| (ByteString::from(*k), ByteString::from(*v)))
        .collect()
}

/// Joins `filter` of share `group` with the SUBSCRIBE user properties `user`.
async fn join(client: &mut RawClient, group: &str, filter: &str, user: &[(&str, &str)]) {
    let subscribe = Subscribe {
        packet_id: client.packet_id(),
        filters: vec![TopicSubscription {
            filter: ByteString::from(format!("$share/{group}/{filter}")),
            options: sub_options(QoS::AtLeastOnce),
        }],
        properties: SubscribeProperties {
            user_properties: props(user),
            ..SubscribeProperties::default()
        },
    };
    client.send(&Packet::Subscribe(subscribe)).await;
    client
        .recv_matching("SUBACK", |p| matches!(p, Packet::SubAck(_)))
        .await;
}

async fn publish_with(client: &mut RawClient, topic: &str, payload: &str, user: &[(&str, &str)]) {
    let mut publish = publish_packet(topic, payload.as_bytes(), QoS::AtLeastOnce, None);
    publish.properties.user_properties = props(user);
    client.publish_full(publish).await;
}

/// Every PUBLISH that arrives until none has for `quiet`, acknowledged, as payload strings.
async fn drain(client: &mut RawClient, quiet: Duration) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        match client.next_event(quiet).await {
            Event::Packet(Packet::Publish(p)) => {
                client.ack(&p).await;
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
            Event::Packet(_) => {}
            Event::Closed | Event::Timeout => return got,
        }
    }
}

/// The group's strategy counters from its retained `$SYS/broker/shared/<name>` message, once
/// `ready` holds for them (the broker republishes every second).
async fn strategy_stats(
    addr: std::net::SocketAddr,
    group: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut reader = RawClient::v5(addr, &client_id("sys")).await;
        reader
            .subscribe(&format!("$SYS/broker/shared/{group}"), QoS::AtMostOnce)
            .await;
        if let Event::Packet(Packet::Publish(p)) = reader.next_event(Duration::from_secs(3)).await {
            let groups: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            let strategy = groups["filters"][0]["strategy"].clone();
            if ready(&strategy) {
                return strategy;
            }
            assert!(
                Instant::now() < deadline,
                "counters never ready: {strategy}"
            );
        }
        assert!(Instant::now() < deadline, "no $SYS/broker/shared/{group}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The acceptance path: a strategy written on the SDK routes by a user property, with
/// paho-mqtt publishers and subscribers against the real binary.
#[test]
fn a_user_property_router_on_the_sdk_works_end_to_end_with_paho() {
    if !interop_ready(true) {
        return;
    }
    let broker = SpawnedBroker::with_config(&config(&[("regions", "fixture_sdk_by_property")]));
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/paho_route_by_property.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .arg("127.0.0.1")
        .arg(broker.addr.port().to_string())
        .arg("regions");
    let output = run_tool(command, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "stdout {}\nstderr {}\nbroker output:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        broker.output.lock().unwrap()
    );
}

/// A Rust plugin's panic shows the author's message (through the SDK's panic hook and the
/// `log` import), not a WASI complaint, and the message it panicked on is still delivered.
#[tokio::test]
async fn a_panicking_sdk_plugin_logs_its_own_message_and_loses_nothing() {
    let broker = SpawnedBroker::with_config(&config(&[("panicky", "fixture_sdk_panic")]));
    let mut worker = RawClient::v5(broker.addr, "panicky-worker").await;
    join(&mut worker, "panicky", "jobs/#", &[]).await;
    let mut publisher = RawClient::v5(broker.addr, "panicky-publisher").await;
    publish_with(&mut publisher, "jobs/1", "before", &[]).await;
    publish_with(
        &mut publisher,
        "jobs/2",
        "doomed",
        &[("explode", "tenant acme is over quota")],
    )
    .await;
    publish_with(&mut publisher, "jobs/3", "after", &[]).await;

    let mut got = drain(&mut worker, Duration::from_secs(2)).await;
    got.sort();
    assert_eq!(got, ["after", "before", "doomed"]);
    broker.wait_for_output("refusing to route: tenant acme is over quota");
    let output = strip_ansi(&broker.output.lock().unwrap());
    let line = output
        .lines()
        .find(|l| l.contains("refusing to route"))
        .unwrap()
        .to_owned();
    assert!(line.contains("panicky"), "names the group: {line}");
    assert!(line.contains("panicked at"), "says where: {line}");
    assert!(
        !output.contains("wasi = true"),
        "no WASI red herring:\n{output}"
    );

    let stats = strategy_stats(broker.addr, "panicky", |s| s["traps"] == 1).await;
    assert_eq!(stats["fallbacks_by"]["trap"], 1, "{stats}");
    // The message after the panic may arrive while the instance is being rebuilt, and then
    // goes by the fallback too, counted as `rebuilding`.
    let handed_out = stats["selections"].as_u64().unwrap() + stats["fallbacks"].as_u64().unwrap();
    assert_eq!(handed_out, 3, "{stats}");
}

/// A plugin that logs on every message gets a burst and then ten lines a second into the
/// broker's log; the rest are counted as `log_dropped`, and every message is delivered.
#[tokio::test]
async fn a_log_flooding_plugin_is_rate_limited_and_counted() {
    const MESSAGES: usize = 300;
    let broker = SpawnedBroker::with_config(&config(&[("chatty", "fixture_sdk_log_flood")]));
    let mut worker = RawClient::v5(broker.addr, "chatty-worker").await;
    join(&mut worker, "chatty", "jobs/#", &[]).await;
    let mut publisher = RawClient::v5(broker.addr, "chatty-publisher").await;
    let started = Instant::now();
    for i in 0..MESSAGES {
        publish_with(&mut publisher, &format!("jobs/{i}"), &i.to_string(), &[]).await;
    }
    let got = drain(&mut worker, Duration::from_secs(2)).await;
    assert_eq!(got.len(), MESSAGES);
    // The next line let through after the flood carries the summary of what was dropped.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    publish_with(&mut publisher, "jobs/last", "last", &[]).await;
    assert_eq!(drain(&mut worker, Duration::from_secs(2)).await, ["last"]);
    broker.wait_for_output("plugin log lines dropped by the rate limit");

    let stats = strategy_stats(broker.addr, "chatty", |s| s["selections"] == MESSAGES + 1).await;
    let elapsed = started.elapsed().as_secs_f64();
    let output = broker.output.lock().unwrap().clone();
    let logged = output.lines().filter(|l| l.contains("flood line")).count();
    let dropped = stats["log_dropped"].as_u64().unwrap() as usize;
    // A burst of 20, then 10 a second over however long this took.
    let allowed = 20 + (elapsed * 10.0).ceil() as usize;
    assert!(
        logged >= 20 && logged <= allowed,
        "{logged} lines in {elapsed:.1} s"
    );
    assert!(dropped > 0, "{stats}");
    assert_eq!(
        logged + dropped,
        MESSAGES + 1,
        "every line logged or counted: {stats}"
    );
    assert_eq!(stats["selections"], MESSAGES as u64 + 1, "{stats}");
}

/// One broker runs a contract 0.1.0 component and a 0.2.0 component side by side: each group
/// delivers every message once, the old one by its round robin, the new one by the members'
/// SUBSCRIBE user properties, which only 0.2.0 can see.
#[tokio::test]
async fn contract_0_1_0_and_0_2_0_components_run_side_by_side() {
    let broker = SpawnedBroker::with_config(&config(&[
        ("old", "fixture_v010_round_robin"),
        ("new", "fixture_sdk_by_property"),
    ]));
    let mut old_a = RawClient::v5(broker.addr, "old-a").await;
    let mut old_b = RawClient::v5(broker.addr, "old-b").await;
    let mut eu = RawClient::v5(broker.addr, "new-eu").await;
    let mut us = RawClient::v5(broker.addr, "new-us").await;
    join(&mut old_a, "old", "side/#", &[]).await;
    join(&mut old_b, "old", "side/#", &[]).await;
    join(&mut eu, "new", "side/#", &[("region", "eu")]).await;
    join(&mut us, "new", "side/#", &[("region", "us")]).await;

    let mut publisher = RawClient::v5(broker.addr, "side-publisher").await;
    for i in 0..10 {
        let region = if i % 2 == 0 { "eu" } else { "us" };
        publish_with(
            &mut publisher,
            &format!("side/{i}"),
            &format!("{region}:{i}"),
            &[("region", region)],
        )
        .await;
    }

    let quiet = Duration::from_millis(1500);
    let (a, b, eu_got, us_got) = tokio::join!(
        drain(&mut old_a, quiet),
        drain(&mut old_b, quiet),
        drain(&mut eu, quiet),
        drain(&mut us, quiet)
    );
    assert_eq!((a.len(), b.len()), (5, 5), "0.1.0 round robin: {a:?} {b:?}");
    assert_eq!(eu_got.len(), 5, "{eu_got:?}");
    assert!(eu_got.iter().all(|p| p.starts_with("eu:")), "{eu_got:?}");
    assert!(us_got.iter().all(|p| p.starts_with("us:")), "{us_got:?}");

    for group in ["old", "new"] {
        let stats = strategy_stats(broker.addr, group, |s| s["selections"] == 10).await;
        assert_eq!(stats["fallbacks"], 0, "{group}: {stats}");
    }
}

/// A plugin failing on message after message (here: panicking on every one, with the group
/// never pinned) gets one failure warning a second in the broker's log, and the next warning
/// says how many were suppressed; every message is still delivered.
#[tokio::test]
async fn failure_warnings_are_rate_limited_per_group_with_a_suppressed_count() {
    const MESSAGES: usize = 40;
    let mut toml = config(&[("panicky", "fixture_sdk_panic")]);
    toml = toml.replace(
        "[[shared.groups]]",
        "[shared]\nplugin_max_failures = 1000\n[[shared.groups]]",
    );
    let broker = SpawnedBroker::with_config(&toml);
    let mut worker = RawClient::v5(broker.addr, "storm-worker").await;
    join(&mut worker, "panicky", "jobs/#", &[]).await;
    let mut publisher = RawClient::v5(broker.addr, "storm-publisher").await;
    let started = Instant::now();
    for i in 0..MESSAGES {
        let why = format!("storm {i}");
        publish_with(&mut publisher, "jobs/x", "x", &[("explode", why.as_str())]).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        drain(&mut worker, Duration::from_secs(2)).await.len(),
        MESSAGES
    );
    // One more failure after the one-second window: its warning carries the count.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    publish_with(&mut publisher, "jobs/x", "x", &[("explode", "last")]).await;
    assert_eq!(drain(&mut worker, Duration::from_secs(2)).await.len(), 1);
    let elapsed = started.elapsed().as_secs_f64();

    let stats = strategy_stats(broker.addr, "panicky", |s| {
        s["selections"].as_u64().unwrap() + s["fallbacks"].as_u64().unwrap() == MESSAGES as u64 + 1
    })
    .await;
    let traps = stats["traps"].as_u64().unwrap();
    assert!(traps >= 5, "{stats}");
    let output = strip_ansi(&broker.output.lock().unwrap());
    let warnings: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("strategy call failed"))
        .collect();
    assert!(
        !warnings.is_empty() && warnings.len() <= 1 + elapsed.ceil() as usize,
        "{} warnings for {traps} traps in {elapsed:.1} s:\n{}",
        warnings.len(),
        warnings.join("\n")
    );
    let summary = warnings
        .iter()
        .filter_map(|l| l.split("suppressed=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    assert!(
        summary > 0,
        "no warning counts the suppressed ones:\n{}",
        warnings.join("\n")
    );
}
