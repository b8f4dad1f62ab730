//! `/metrics`, scraped over HTTP and parsed by the `prometheus_client` package's parser (the
//! reference Python client's): the per-group numbers match what the test's clients saw.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::http::{self, Reply};
use crate::common::*;
use serde_json::Value;
use sharq::packet::{QoS, ReasonCode};

/// A parsed sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Runs the reference parser on `text`; `openmetrics` selects its strict OpenMetrics parser.
fn parse(text: &str, openmetrics: bool) -> Vec<Sample> {
    use std::io::Write;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/parse_metrics.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .args(openmetrics.then_some("openmetrics"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples: Vec<(String, BTreeMap<String, String>, Value)> =
        serde_json::from_slice(&output.stdout).unwrap();
    samples
        .into_iter()
        .map(|(name, labels, value)| {
            let value = match value {
                Value::String(s) if s == "+Inf" => f64::INFINITY,
                other => other.as_f64().unwrap(),
            };
            (name, labels, value)
        })
        .collect()
}

/// The value of the one sample named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0].2
}

async fn scrape(addr: std::net::SocketAddr) -> Vec<Sample> {
    let reply: Reply = http::get(addr, "/metrics").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    parse(&reply.body, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_counters_match_what_the_members_saw() {
    let broker = TestBroker::with_http(|c| c.shared.group_queue_max_messages = 5).await;
    let (http_addr, _) = broker.http();
    let mut members = Vec::new();
    for i in 0..3 {
        let mut client = RawClient::v5(broker.addr(), &format!("worker-{i}")).await;
        client
            .subscribe("$share/work/jobs/#", QoS::AtLeastOnce)
            .await;
        members.push(Member::spawn(client, AckMode::AckConfirmed));
    }
    let mut publisher = RawClient::v5(broker.addr(), "producer").await;
    publisher
        .publish_seqs("jobs/a", 0..30, QoS::AtLeastOnce)
        .await;
    let refs: Vec<&Member> = members.iter().collect();
    wait_total(&refs, 30).await;
    wait_until(Duration::from_secs(5), "all acked", || {
        members.iter().map(|m| m.acked()).sum::<usize>() == 30
    })
    .await;

    let samples = scrape(http_addr).await;
    let group = [("group", "work"), ("filter", "jobs/#")];
    assert_eq!(
        value(&samples, "sharq_group_dispatched_total", &group),
        30.0
    );
    for (i, member) in members.iter().enumerate() {
        let client = format!("worker-{i}");
        let labels = [group[0], group[1], ("client_id", client.as_str())];
        assert_eq!(
            value(&samples, "sharq_group_member_dispatched_total", &labels),
            member.count() as f64,
            "{client}"
        );
    }
    // PUBACKs reach the broker after the members counted them: give the last one a moment.
    let mut acked = value(&samples, "sharq_group_acked_total", &group);
    for _ in 0..50 {
        if acked == 30.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        acked = value(&scrape(http_addr).await, "sharq_group_acked_total", &group);
    }
    assert_eq!(acked, 30.0);
    let samples = scrape(http_addr).await;
    assert_eq!(
        value(
            &samples,
            "sharq_group_members",
            &[group[0], group[1], ("state", "online")]
        ),
        3.0
    );
    assert_eq!(
        value(
            &samples,
            "sharq_group_members",
            &[group[0], group[1], ("state", "offline")]
        ),
        0.0
    );
    assert_eq!(value(&samples, "sharq_group_queued_messages", &group), 0.0);
    assert_eq!(value(&samples, "sharq_group_in_flight", &group), 0.0);
    assert_eq!(
        value(
            &samples,
            "sharq_group_strategy_info",
            &[group[0], group[1], ("strategy", "round_robin")]
        ),
        1.0
    );
    assert!(value(&samples, "sharq_messages_received_total", &[]) >= 30.0);
    assert_eq!(
        value(&samples, "sharq_sessions", &[("state", "online")]),
        4.0
    );
    let listener = format!("tcp {}", broker.addr());
    assert_eq!(
        value(
            &samples,
            "sharq_connections",
            &[("listener", listener.as_str())]
        ),
        4.0
    );

    // A member that takes copies and never acknowledges them, then goes away: its copies come
    // back, counted as redelivered because it disconnected.
    for member in members {
        member.stop().await.disconnect().await;
    }
    let mut hoarder = RawClient::v5(broker.addr(), "hoarder").await;
    hoarder
        .subscribe("$share/work/jobs/#", QoS::AtLeastOnce)
        .await;
    publisher
        .publish_seqs("jobs/b", 100..104, QoS::AtLeastOnce)
        .await;
    for _ in 0..4 {
        hoarder.recv_publish().await;
    }
    let samples = scrape(http_addr).await;
    assert_eq!(value(&samples, "sharq_group_in_flight", &group), 4.0);
    hoarder.drop_socket();
    broker.wait_session_offline("hoarder").await;
    // Nobody is left to take them: the group queue holds 5, so 4 wait and are counted.
    let samples = scrape(http_addr).await;
    assert_eq!(
        value(
            &samples,
            "sharq_group_redelivered_total",
            &[group[0], group[1], ("reason", "member_disconnected")]
        ),
        4.0
    );
    assert_eq!(value(&samples, "sharq_group_queued_messages", &group), 4.0);
    assert!(value(&samples, "sharq_group_lag_seconds", &group) > 0.0);

    // The queue holds 5: of 3 more, 1 is accepted and 2 refused (0x97 to the publisher), and
    // the group counts them as dropped because its queue was full.
    let mut refused = 0;
    for seq in 200..203u32 {
        let id = publisher.packet_id();
        publisher
            .send(&sharq::packet::Packet::Publish(publish_packet(
                "jobs/c",
                &seq_payload(seq),
                QoS::AtLeastOnce,
                Some(id),
            )))
            .await;
        let ack = publisher.recv_ack("PUBACK", id).await;
        if ack.reason_code == ReasonCode(0x97) {
            refused += 1;
        }
    }
    assert_eq!(refused, 2);
    let samples = scrape(http_addr).await;
    assert_eq!(
        value(
            &samples,
            "sharq_group_dropped_total",
            &[group[0], group[1], ("reason", "queue_full_messages")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &samples,
            "sharq_messages_dropped_total",
            &[("reason", "group_queue_messages")]
        ),
        2.0
    );
    assert_eq!(value(&samples, "sharq_group_queued_messages", &group), 5.0);
    assert!(value(&samples, "sharq_group_queued_bytes", &group) > 0.0);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_past_the_label_limit_are_summed_under_other() {
    let broker = TestBroker::with_http(|c| c.http.max_labelled_groups = 2).await;
    let (http_addr, _) = broker.http();
    let mut clients = Vec::new();
    for i in 0..4 {
        let mut client = RawClient::v5(broker.addr(), &format!("m{i}")).await;
        client
            .subscribe(&format!("$share/g{i}/t/{i}"), QoS::AtMostOnce)
            .await;
        clients.push(client);
    }
    let samples = scrape(http_addr).await;
    let labelled: std::collections::BTreeSet<String> = samples
        .iter()
        .filter(|(n, _, _)| n == "sharq_group_dispatched_total")
        .map(|(_, l, _)| l["group"].clone())
        .collect();
    assert_eq!(labelled, ["_other", "g0", "g1"].map(String::from).into());
    assert_eq!(value(&samples, "sharq_groups", &[]), 4.0);
    assert_eq!(
        value(
            &samples,
            "sharq_group_members",
            &[("group", "_other"), ("state", "online")]
        ),
        2.0
    );
    // No per-member series for the summed groups: that is what the guard is for.
    assert!(!samples
        .iter()
        .any(|(n, l, _)| n == "sharq_group_member_dispatched_total" && l["group"] == "_other"));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_latency_and_failures_of_a_wasm_strategy_are_exported_as_openmetrics_too() {
    let broker = TestBroker::with_http(|c| c.shared.default_strategy = "round_robin".into()).await;
    let (http_addr, _) = broker.http();
    let mut member = RawClient::v5(broker.addr(), "solo").await;
    member.subscribe("$share/wasm/w/#", QoS::AtMostOnce).await;
    let mut publisher = RawClient::v5(broker.addr(), "pub").await;
    for i in 0..10u32 {
        publisher
            .publish("w/x", &i.to_be_bytes(), QoS::AtMostOnce, false)
            .await;
        member.recv_publish().await;
    }
    let samples = scrape(http_addr).await;
    let group = [("group", "wasm"), ("filter", "w/#")];
    assert_eq!(
        value(
            &samples,
            "sharq_group_select_duration_seconds_count",
            &group
        ),
        10.0
    );
    assert_eq!(
        value(
            &samples,
            "sharq_group_select_duration_seconds_bucket",
            &[group[0], group[1], ("le", "+Inf")]
        ),
        10.0
    );
    assert_eq!(
        value(&samples, "sharq_group_strategy_selections_total", &group),
        10.0
    );
    assert_eq!(
        value(
            &samples,
            "sharq_group_strategy_failures_total",
            &[group[0], group[1], ("kind", "trap")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &samples,
            "sharq_group_strategy_info",
            &[group[0], group[1], ("strategy", "round_robin")]
        ),
        1.0
    );

    // The same numbers as OpenMetrics, for a scraper that asks for it, through the strict
    // OpenMetrics parser.
    let mut stream = tokio::net::TcpStream::connect(http_addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(format!("GET /metrics HTTP/1.1\r\nHost: {http_addr}\r\nAccept: application/openmetrics-text;version=1.0.0\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("application/openmetrics-text"), "{head}");
    let body = if head.to_ascii_lowercase().contains("chunked") {
        dechunk_text(body)
    } else {
        body.to_owned()
    };
    let samples = parse(&body, true);
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(
        value(
            &samples,
            "sharq_group_select_duration_seconds_count",
            &group
        ),
        10.0
    );
    broker.shutdown().await;
}

fn dechunk_text(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    out
}
