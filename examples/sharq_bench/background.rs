//! What a measured run carries besides its own traffic, for the scale curves of issue #15:
//! idle connections (`--idle-connections`) and subscriptions that no published message matches
//! (`--background-subs`). Both are plain MQTT 3.1.1 over raw sockets, written and read here
//! rather than through rumqttc, so that holding 10k connections or sending 1M filters costs
//! this process almost nothing next to the broker it measures. The sockets stay open until
//! the returned [`Background`] is dropped.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use clap::Args;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Args, Clone, Default)]
pub struct BackgroundArgs {
    /// Connections that connect and then stay silent for the whole run (keep-alive 600 s, far
    /// longer than a run; rumqttd refuses keep-alive 0).
    #[arg(long, default_value_t = 0)]
    pub idle_connections: u32,
    /// Subscriptions no published message matches, held by `--background-clients`
    /// connections: half `<prefix>/bg<i>/#` (siblings of the publishers' topic level), half
    /// `bg/<i>/+/telemetry`.
    #[arg(long, default_value_t = 0)]
    pub background_subs: u64,
    #[arg(long, default_value_t = 10)]
    pub background_clients: u32,
}

/// Filters per SUBSCRIBE packet: ~40 B each keeps a packet far below any broker's size limit.
const FILTERS_PER_SUBSCRIBE: u64 = 500;

/// The open sockets; dropping this closes them all.
pub struct Background {
    _sockets: Vec<TcpStream>,
    pub report: Value,
}

fn put_str(buf: &mut BytesMut, s: &str) {
    buf.put_u16(s.len() as u16);
    buf.put_slice(s.as_bytes());
}

fn put_remaining_length(buf: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

fn packet(first_byte: u8, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(body.len() + 5);
    buf.put_u8(first_byte);
    put_remaining_length(&mut buf, body.len());
    buf.put_slice(body);
    buf
}

fn connect_packet(client_id: &str) -> BytesMut {
    let mut body = BytesMut::new();
    put_str(&mut body, "MQTT");
    body.put_u8(4); // 3.1.1
    body.put_u8(0x02); // clean session
    body.put_u16(600); // keep-alive: no PINGREQ is due while a run lasts
    put_str(&mut body, client_id);
    packet(0x10, &body)
}

fn subscribe_packet(packet_id: u16, filters: impl Iterator<Item = String>) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_u16(packet_id);
    for f in filters {
        put_str(&mut body, &f);
        body.put_u8(0);
    }
    packet(0x82, &body)
}

/// Reads one packet and returns its first byte and body.
async fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let first = s.read_u8().await?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = s.read_u8().await?;
        len |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(std::io::Error::other("bad remaining length"));
        }
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).await?;
    Ok((first, body))
}

async fn connect(host: &str, port: u16, client_id: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("{client_id}: connect: {e}"))?;
    s.write_all(&connect_packet(client_id))
        .await
        .map_err(|e| format!("{client_id}: CONNECT: {e}"))?;
    match read_packet(&mut s).await {
        Ok((0x20, body)) if body.get(1) == Some(&0) => Ok(s),
        Ok((first, body)) => Err(format!(
            "{client_id}: expected CONNACK accepted, got {first:#04x} {body:?}"
        )),
        Err(e) => Err(format!("{client_id}: CONNACK: {e}")),
    }
}

fn background_filter(prefix: &str, i: u64) -> String {
    if i % 2 == 0 {
        format!("{prefix}/bg{i}/#")
    } else {
        format!("bg/{i}/+/telemetry")
    }
}

/// One connection subscribing `filters` (a range of background filter indices), pipelining
/// SUBSCRIBEs a few packets ahead of the SUBACKs.
async fn subscriber(
    host: String,
    port: u16,
    client_id: String,
    prefix: String,
    filters: std::ops::Range<u64>,
) -> Result<TcpStream, String> {
    let mut s = connect(&host, port, &client_id).await?;
    let starts: Vec<u64> = filters
        .clone()
        .step_by(FILTERS_PER_SUBSCRIBE as usize)
        .collect();
    let (mut sent, mut acked) = (0usize, 0usize);
    const AHEAD: usize = 8;
    while acked < starts.len() {
        while sent < starts.len() && sent - acked < AHEAD {
            let a = starts[sent];
            let b = (a + FILTERS_PER_SUBSCRIBE).min(filters.end);
            let id = (sent % 65_535 + 1) as u16;
            let p = subscribe_packet(id, (a..b).map(|i| background_filter(&prefix, i)));
            s.write_all(&p)
                .await
                .map_err(|e| format!("{client_id}: SUBSCRIBE: {e}"))?;
            sent += 1;
        }
        match read_packet(&mut s).await {
            Ok((0x90, body)) => {
                if body[2.min(body.len())..].iter().any(|&c| c >= 0x80) {
                    return Err(format!("{client_id}: a background filter was refused"));
                }
                acked += 1;
            }
            Ok((first, _)) => {
                return Err(format!("{client_id}: expected SUBACK, got {first:#04x}"))
            }
            Err(e) => return Err(format!("{client_id}: SUBACK: {e}")),
        }
    }
    Ok(s)
}

/// Opens the idle connections and the background subscriptions, `concurrency` connection
/// attempts at a time. Fails on the first refusal: a run measured without its background would
/// be reported under the wrong label.
pub async fn start(
    args: &BackgroundArgs,
    host: &str,
    port: u16,
    run_tag: &str,
    prefix: &str,
) -> Result<Background, String> {
    let started = std::time::Instant::now();
    let mut sockets = Vec::new();
    if args.idle_connections > 0 {
        crate::idle::raise_nofile()?;
        let mut pending = tokio::task::JoinSet::new();
        for i in 0..args.idle_connections {
            if pending.len() >= 100 {
                if let Some(r) = pending.join_next().await {
                    sockets.push(r.map_err(|e| e.to_string())??);
                }
            }
            let (host, id) = (host.to_owned(), format!("{run_tag}-idle{i}"));
            pending.spawn(async move { connect(&host, port, &id).await });
        }
        while let Some(r) = pending.join_next().await {
            sockets.push(r.map_err(|e| e.to_string())??);
        }
    }
    let idle_secs = started.elapsed().as_secs_f64();
    if args.background_subs > 0 {
        let clients = u64::from(args.background_clients.max(1));
        let per = args.background_subs.div_ceil(clients);
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..clients {
            let range = (c * per)..((c + 1) * per).min(args.background_subs);
            if range.is_empty() {
                continue;
            }
            tasks.spawn(subscriber(
                host.to_owned(),
                port,
                format!("{run_tag}-bg{c}"),
                prefix.to_owned(),
                range,
            ));
        }
        while let Some(r) = tasks.join_next().await {
            sockets.push(r.map_err(|e| e.to_string())??);
        }
    }
    // Let the broker settle (its accept loop and any lazily built state) before the load.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(Background {
        _sockets: sockets,
        report: json!({
            "idle_connections": args.idle_connections,
            "background_subs": args.background_subs,
            "background_setup_secs": crate::round3(started.elapsed().as_secs_f64()),
            "idle_connect_secs": crate::round3(idle_secs),
        }),
    })
}
