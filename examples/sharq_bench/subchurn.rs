//! `sub-churn`: clients that subscribe to a shared group and unsubscribe again, as fast as the
//! broker answers (each waits for its SUBACK before unsubscribing and for the UNSUBACK before
//! the next subscribe). By default a holder client keeps every group alive, so the churn is
//! members joining and leaving existing groups (what autoscaled workers do); with
//! `--new-groups` there is no holder and every subscribe creates its group and every
//! unsubscribe ends it.

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

    let remaining = Arc::new(AtomicU64::new(args.pairs));
    let start = Instant::now();
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
