//! `handshakes`: connections per second. Each of `--concurrency` workers repeatedly connects
//! (TCP, TLS with `--tls-ca`, MQTT 3.1.1 CONNECT/CONNACK with a clean session), sends
//! DISCONNECT and closes the socket, until `--connections` connections have completed in all.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, Transport};
use serde_json::{json, Value};

#[derive(Debug, Args, Clone)]
pub struct HandshakesArgs {
    /// Broker host; must resolve to loopback addresses only.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Connections in total.
    #[arg(long, default_value_t = 5_000)]
    connections: u64,
    /// Connections in progress at once.
    #[arg(long, default_value_t = 16)]
    concurrency: u32,
    /// Connect with TLS, trusting the CA certificate(s) in this PEM file.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Stop starting connections after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    max_secs: f64,
    #[arg(long, default_value = "")]
    label: String,
}

/// One connection: CONNECT until CONNACK, then DISCONNECT. Returns the time to CONNACK.
async fn one(host: &str, port: u16, id: String, transport: Transport) -> Result<Duration, String> {
    let started = Instant::now();
    let mut o = MqttOptions::new(id, host.to_owned(), port);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_clean_session(true);
    o.set_transport(transport);
    let (client, mut events) = AsyncClient::new(o, 4);
    crate::no_delay(&mut events);
    let connack = loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if ack.code != rumqttc::ConnectReturnCode::Success {
                    return Err(format!("CONNACK {:?}", ack.code));
                }
                break started.elapsed();
            }
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    };
    client.try_disconnect().map_err(|e| e.to_string())?;
    loop {
        match events.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("after CONNACK: {e}")),
        }
    }
    Ok(connack)
}

pub async fn run(args: HandshakesArgs) -> Value {
    let mut out = json!({
        "scenario": "handshakes",
        "label": args.label,
        "broker": format!("{}:{}", args.host, args.port),
        "tls": args.tls_ca.is_some(),
        "connections_target": args.connections,
        "concurrency": args.concurrency,
    });
    if let Err(e) = crate::check_loopback(&args.host, args.port) {
        out["errors"] = json!([e]);
        return out;
    }
    let transport = match crate::tls::transport(args.tls_ca.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            out["errors"] = json!([e]);
            return out;
        }
    };
    let run_id = rand::random::<u32>();
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.max_secs);
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (next, failed, errors, transport) = (
            next.clone(),
            failed.clone(),
            errors.clone(),
            transport.clone(),
        );
        let (host, port, total) = (args.host.clone(), args.port, args.connections);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() >= deadline {
                    break;
                }
                let id = format!("hs-{run_id:08x}-{i}");
                let attempt = one(&host, port, id, transport.clone());
                match tokio::time::timeout(Duration::from_secs(10), attempt).await {
                    Ok(Ok(d)) => latencies.push(d.as_nanos() as u64),
                    Ok(Err(e)) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let mut errors = errors.lock();
                        if errors.len() < 10 {
                            errors.push(format!("connection {i}: {e}"));
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let mut errors = errors.lock();
                        if errors.len() < 10 {
                            errors.push(format!("connection {i}: no CONNACK within 10 s"));
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for w in workers {
        if let Ok(l) = w.await {
            latencies.extend(l);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let ok = latencies.len() as u64;
    out["connected"] = json!(ok);
    out["failed"] = json!(failed.load(Ordering::Relaxed));
    out["secs"] = json!(crate::round3(elapsed));
    out["connections_per_sec"] = json!((ok as f64 / elapsed).round());
    out["connack_us"] = json!({
        "p50": crate::percentile(&latencies, 50.0),
        "p99": crate::percentile(&latencies, 99.0),
        "max": crate::percentile(&latencies, 100.0),
    });
    let errors = errors.lock().clone();
    out["errors"] = json!(errors);
    out
}
