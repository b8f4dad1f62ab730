//! `idle`: many connected, silent MQTT clients, and the broker's resident memory per
//! connection (VmRSS of `--broker-pid` from `/proc`, before the first connection and after
//! the last one has settled).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use crate::procfs;

#[derive(Debug, Args, Clone)]
pub struct IdleArgs {
    /// Broker host; must resolve to loopback addresses only.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    #[arg(long, default_value_t = 10_000)]
    connections: u32,
    /// The broker's process id: its VmRSS is read from /proc before and after.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 100)]
    concurrency: u32,
    /// Wait this long after the last CONNACK before reading the broker's memory.
    #[arg(long, default_value_t = 2.0)]
    settle_secs: f64,
    /// Give up connecting after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    max_secs: f64,
    #[arg(long, default_value = "")]
    label: String,
}

/// Raises this process's open-file limit to its hard limit: every connection is a descriptor,
/// and the usual soft limit (1024) is far below the connection counts measured here.
pub fn raise_nofile() -> Result<u64, String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(lim.rlim_cur)
}

pub async fn run(args: IdleArgs) -> Value {
    let mut out = json!({
        "scenario": "idle",
        "label": args.label,
        "broker": format!("{}:{}", args.host, args.port),
        "connections_target": args.connections,
    });
    let mut errors: Vec<String> = Vec::new();
    if let Err(e) = crate::check_loopback(&args.host, args.port) {
        out["errors"] = json!([e]);
        return out;
    }
    match raise_nofile() {
        Ok(n) if n < u64::from(args.connections) + 64 => errors.push(format!(
            "open-file limit {n} is below the connection count; raise the hard limit (ulimit -Hn)"
        )),
        Ok(_) => {}
        Err(e) => errors.push(e),
    }
    let rss_before = args.broker_pid.and_then(procfs::rss_kib);

    let connected = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(parking_lot::Mutex::new(None::<String>));
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1) as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let start = Instant::now();
    let run_id = rand::random::<u32>();
    let mut tasks = Vec::with_capacity(args.connections as usize);
    for i in 0..args.connections {
        let mut o = MqttOptions::new(
            format!("idle-{run_id:08x}-{i}"),
            args.host.clone(),
            args.port,
        );
        // Long enough that no PINGREQ is sent while we measure: the connections are idle.
        o.set_keep_alive(Duration::from_secs(600));
        o.set_clean_session(true);
        let (connected, failed, dropped, first_error, gate) = (
            connected.clone(),
            failed.clone(),
            dropped.clone(),
            first_error.clone(),
            gate.clone(),
        );
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(permit) = gate.acquire_owned().await else {
                return;
            };
            let mut permit = Some(permit);
            let (_client, mut events) = AsyncClient::new(o, 1);
            loop {
                let event = tokio::select! {
                    _ = stop.changed() => break,
                    e = events.poll() => e,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected.fetch_add(1, Ordering::Relaxed);
                        permit = None;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if permit.is_some() {
                            failed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        first_error.lock().get_or_insert_with(|| e.to_string());
                        break;
                    }
                }
            }
            drop(permit);
        }));
    }
    let deadline = start + Duration::from_secs_f64(args.max_secs);
    loop {
        let done = connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
        if done >= u64::from(args.connections) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
    let n = connected.load(Ordering::Relaxed);
    let rss_after = args.broker_pid.and_then(procfs::rss_kib);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_millis(100), t).await;
    }
    if let Some(e) = first_error.lock().take() {
        errors.push(format!("first connection error: {e}"));
    }
    if n < u64::from(args.connections) {
        errors.push(format!("only {n} of {} connected", args.connections));
    }
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if n > 0 => json!(((a.saturating_sub(b)) * 1024) as f64 / n as f64),
        _ => Value::Null,
    };
    crate::merge(
        &mut out,
        json!({
            "connected": n,
            "failed": failed.load(Ordering::Relaxed),
            "dropped_while_idle": dropped.load(Ordering::Relaxed),
            "connect_secs": crate::round3(connect_secs),
            "connect_rate": if connect_secs > 0.0 { (n as f64 / connect_secs).round() } else { 0.0 },
            "broker_rss_before_kib": rss_before,
            "broker_rss_after_kib": rss_after,
            "rss_bytes_per_connection": per_conn,
            "errors": errors,
        }),
    );
    out
}
