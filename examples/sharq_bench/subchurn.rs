//! `sub-churn`: clients that subscribe to a shared group and unsubscribe again, as fast as the
//! broker answers (each waits for its SUBACK before unsubscribing and for the UNSUBACK before
//! the next subscribe). By default a holder client keeps every group alive, so the churn is
//! members joining and leaving existing groups (what autoscaled workers do); with
//! `--new-groups` there is no holder and every subscribe creates its group and every
//! unsubscribe ends it.
//!
//! With `--probe-rate N` a probe publisher sends N QoS 1 messages a second to a shared group of
//! its own, untouched by the churn, and the run reports that traffic's latency: what creating
//! and ending groups costs everybody else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

#[derive(Debug, Args, Clone)]
pub struct SubChurnArgs {
    /// Broker host; must resolve to loopback addresses only.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Clients subscribing and unsubscribing concurrently.
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Distinct shared groups the clients cycle through.
    #[arg(long, default_value_t = 16)]
    groups: u32,
    /// Subscribe + unsubscribe pairs in total, over all clients.
    #[arg(long, default_value_t = 20_000)]
    pairs: u64,
    /// Stop after this many seconds even if pairs remain.
    #[arg(long, default_value_t = 10.0)]
    max_secs: f64,
    /// No holder: each subscribe creates its group and each unsubscribe ends it.
    #[arg(long)]
    new_groups: bool,
    /// Messages per second a probe publisher sends to a group of its own during the churn;
    /// 0: no probe.
    #[arg(long, default_value_t = 0)]
    probe_rate: u64,
    #[arg(long, default_value = "")]
    label: String,
}

fn options(args: &SubChurnArgs, id: String) -> MqttOptions {
    let mut o = MqttOptions::new(id, args.host.clone(), args.port);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_clean_session(true);
    o
}

/// Polls until `want` says an event is the one awaited; an error or the deadline ends it.
async fn until(
    events: &mut EventLoop,
    deadline: tokio::time::Instant,
    want: impl Fn(&Packet) -> bool,
) -> Result<(), String> {
    loop {
        match tokio::time::timeout_at(deadline, events.poll()).await {
            Err(_) => return Err("deadline".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(Event::Incoming(p))) if want(&p) => return Ok(()),
            Ok(Ok(_)) => {}
        }
    }
}

pub async fn run(args: SubChurnArgs) -> Value {
    let mut out = json!({
        "scenario": "sub_churn",
        "label": args.label,
        "broker": format!("{}:{}", args.host, args.port),
        "clients": args.clients,
        "groups": args.groups,
        "new_groups": args.new_groups,
        "pairs_target": args.pairs,
    });
    if let Err(e) = crate::check_loopback(&args.host, args.port) {
        out["errors"] = json!([e]);
        return out;
    }
    let run_id = rand::random::<u32>();
    let groups = args.groups.max(1);
    let filter = move |k: u32| format!("$share/sc{run_id:08x}-{k}/sharq-bench/{run_id:08x}/sc");
    let mut errors = Vec::new();
    let deadline_setup = tokio::time::Instant::now() + Duration::from_secs(10);

    // The holder keeps every group alive while the others churn.
    let mut holder = None;
    if !args.new_groups {
        let (client, mut events) =
            AsyncClient::new(options(&args, format!("sc-{run_id:08x}-holder")), 64);
        let mut ok = true;
        for k in 0..groups {
            if client.subscribe(filter(k), QoS::AtLeastOnce).await.is_err() {
                ok = false;
            }
        }
        for _ in 0..groups {
            if let Err(e) = until(&mut events, deadline_setup, |p| {
                matches!(p, Packet::SubAck(_))
            })
            .await
            {
                errors.push(format!("holder: {e}"));
                ok = false;
                break;
            }
        }
        if !ok {
            out["errors"] = json!(errors);
            return out;
        }
        // Keep its event loop polled so the connection stays up.
        holder = Some((
            client,
            tokio::spawn(async move { while events.poll().await.is_ok() {} }),
        ));
    }

    let probe = if args.probe_rate > 0 {
        match Probe::start(&args, run_id).await {
            Ok(probe) => Some(probe),
            Err(e) => {
                out["errors"] = json!([format!("probe: {e}")]);
                return out;
            }
        }
    } else {
        None
    };

    let remaining = Arc::new(AtomicU64::new(args.pairs));
    let start = Instant::now();
    if args.pairs == 0 && probe.is_some() {
        // The probe alone, as a baseline for its latency under churn.
        tokio::time::sleep(Duration::from_secs_f64(args.max_secs)).await;
    }
    let deadline = tokio::time::Instant::from_std(start + Duration::from_secs_f64(args.max_secs));
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let remaining = remaining.clone();
        let o = options(&args, format!("sc-{run_id:08x}-c{c}"));
        tasks.push(tokio::spawn(async move {
            let (client, mut events) = AsyncClient::new(o, 8);
            crate::no_delay(&mut events);
            let mut latencies_ns: Vec<u64> = Vec::new();
            let mut error = None;
            let mut i = c;
            while remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let f = filter(i % groups);
                i += 1;
                let t0 = Instant::now();
                let step = async {
                    client
                        .subscribe(f.clone(), QoS::AtLeastOnce)
                        .await
                        .map_err(|e| e.to_string())?;
                    until(&mut events, deadline, |p| matches!(p, Packet::SubAck(_))).await?;
                    client.unsubscribe(f).await.map_err(|e| e.to_string())?;
                    until(&mut events, deadline, |p| matches!(p, Packet::UnsubAck(_))).await
                };
                match step.await {
                    Ok(()) => latencies_ns.push(t0.elapsed().as_nanos() as u64),
                    Err(e) => {
                        if e != "deadline" {
                            error = Some(format!("client {c}: {e}"));
                        }
                        break;
                    }
                }
            }
            let _ = client.try_disconnect();
            (latencies_ns, error)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        match t.await {
            Ok((l, e)) => {
                latencies.extend(l);
                errors.extend(e);
            }
            Err(e) => errors.push(format!("client task: {e}")),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(probe) = probe {
        let (mut probe_latencies, sent) = probe.stop().await;
        probe_latencies.sort_unstable();
        crate::merge(
            &mut out,
            json!({
                "probe": {
                    "rate": args.probe_rate,
                    "sent": sent,
                    "received": probe_latencies.len(),
                    "latency_us": {
                        "p50": crate::percentile(&probe_latencies, 50.0),
                        "p99": crate::percentile(&probe_latencies, 99.0),
                        "max": crate::percentile(&probe_latencies, 100.0),
                    },
                }
            }),
        );
    }
    if let Some((client, task)) = holder {
        let _ = client.try_disconnect();
        task.abort();
    }
    latencies.sort_unstable();
    let pairs = latencies.len() as u64;
    crate::merge(
        &mut out,
        json!({
            "pairs": pairs,
            "secs": crate::round3(elapsed),
            "pairs_per_sec": if elapsed > 0.0 { (pairs as f64 / elapsed).round() } else { 0.0 },
            // With --new-groups every pair creates a group and ends it.
            "groups_created_per_sec": if args.new_groups && elapsed > 0.0 { (pairs as f64 / elapsed).round() } else { 0.0 },
            "ops_per_sec": if elapsed > 0.0 { (2.0 * pairs as f64 / elapsed).round() } else { 0.0 },
            "pair_latency_us": {
                "p50": crate::percentile(&latencies, 50.0),
                "p99": crate::percentile(&latencies, 99.0),
                "max": crate::percentile(&latencies, 100.0),
            },
            "errors": errors,
        }),
    );
    out
}

/// A publisher at a fixed rate into a shared group of its own, and that group's one member,
/// timing every message from publish to delivery.
struct Probe {
    stop: Arc<std::sync::atomic::AtomicBool>,
    publisher: tokio::task::JoinHandle<u64>,
    member: tokio::task::JoinHandle<Vec<u64>>,
}

impl Probe {
    async fn start(args: &SubChurnArgs, run_id: u32) -> Result<Probe, String> {
        let topic = format!("sharq-bench/{run_id:08x}/probe");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let (member_client, mut member_events) =
            AsyncClient::new(options(args, format!("sc-{run_id:08x}-probe-m")), 1024);
        crate::no_delay(&mut member_events);
        member_client
            .subscribe(
                format!("$share/probe{run_id:08x}/{topic}"),
                QoS::AtLeastOnce,
            )
            .await
            .map_err(|e| e.to_string())?;
        until(&mut member_events, deadline, |p| {
            matches!(p, Packet::SubAck(_))
        })
        .await?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let member = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut latencies = Vec::new();
                loop {
                    let poll =
                        tokio::time::timeout(Duration::from_millis(500), member_events.poll());
                    match poll.await {
                        Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                            if let Ok(sent) =
                                <[u8; 8]>::try_from(&p.payload[..8.min(p.payload.len())])
                            {
                                latencies
                                    .push(crate::now_ns().saturating_sub(u64::from_be_bytes(sent)));
                            }
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) => break,
                        Err(_) if stop.load(Ordering::Relaxed) => break,
                        Err(_) => {}
                    }
                }
                let _ = member_client.try_disconnect();
                latencies
            }
        });
        let (pub_client, mut pub_events) =
            AsyncClient::new(options(args, format!("sc-{run_id:08x}-probe-p")), 1024);
        crate::no_delay(&mut pub_events);
        tokio::spawn(async move { while pub_events.poll().await.is_ok() {} });
        let interval = Duration::from_secs_f64(1.0 / args.probe_rate as f64);
        let publisher = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    ticker.tick().await;
                    let mut payload = crate::now_ns().to_be_bytes().to_vec();
                    payload.resize(64, 0);
                    if pub_client
                        .publish(topic.clone(), QoS::AtLeastOnce, false, payload)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    sent += 1;
                }
                let _ = pub_client.try_disconnect();
                sent
            }
        });
        Ok(Probe {
            stop,
            publisher,
            member,
        })
    }

    /// Stops publishing, lets the last messages arrive, and returns the latencies (ns) and how
    /// many were sent.
    async fn stop(self) -> (Vec<u64>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.publisher.await.unwrap_or(0);
        let latencies = self.member.await.unwrap_or_default();
        (latencies, sent)
    }
}
