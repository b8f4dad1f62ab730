//! What a measured run carries besides its own traffic, for the scale curves of issue #15:
//! idle connections (`--idle-connections`) and subscriptions that no published message matches
//! (`--background-subs`). Both are plain MQTT 3.1.1 over raw sockets, encoded and decoded by
//! the broker crate's codec rather than run by rumqttc, so that holding 10k connections or
//! sending 1M filters costs this process almost nothing next to the broker it measures. The sockets stay open until
//! the returned [`Background`] is dropped.

use std::time::Duration;

use bytes::BytesMut;
use clap::Args;
use serde_json::{json, Value};
use sharq::codec::{self, Decoder};
use sharq::packet::{
    Connect, Packet, ProtocolVersion, ReasonCode, Subscribe, SubscriptionOptions, TopicSubscription,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const VERSION: ProtocolVersion = ProtocolVersion::V3_1_1;

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

/// One background connection, spoken through the broker crate's own codec (client side).
struct Conn {
    socket: TcpStream,
    /// Bytes read but not yet decoded.
    input: BytesMut,
    decoder: Decoder,
    client_id: String,
}

impl Conn {
    async fn open(host: &str, port: u16, client_id: &str) -> Result<Conn, String> {
        let socket = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("{client_id}: connect: {e}"))?;
        let mut conn = Conn {
            socket,
            input: BytesMut::new(),
            decoder: Decoder::with_version(VERSION, 1 << 20),
            client_id: client_id.to_owned(),
        };
        conn.send(&Packet::Connect(Box::new(Connect {
            protocol: VERSION,
            clean_start: true,
            // No PINGREQ is due while a run lasts (rumqttd refuses keep-alive 0).
            keep_alive: 600,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: Default::default(),
        })))
        .await?;
        match conn.receive().await? {
            Packet::ConnAck(ack) if ack.reason_code == ReasonCode::SUCCESS => Ok(conn),
            other => Err(format!(
                "{client_id}: expected CONNACK accepted, got {other:?}"
            )),
        }
    }

    async fn send(&mut self, packet: &Packet) -> Result<(), String> {
        let mut buf = BytesMut::new();
        codec::encode(packet, VERSION, &mut buf)
            .map_err(|e| format!("{}: encode {}: {e}", self.client_id, packet.name()))?;
        self.socket
            .write_all(&buf)
            .await
            .map_err(|e| format!("{}: {}: {e}", self.client_id, packet.name()))
    }

    async fn receive(&mut self) -> Result<Packet, String> {
        loop {
            let decoded = self.decoder.decode(&mut self.input);
            if let Some(packet) = decoded.map_err(|e| format!("{}: {e}", self.client_id))? {
                return Ok(packet);
            }
            match self.socket.read_buf(&mut self.input).await {
                Ok(0) => {
                    return Err(format!(
                        "{}: the broker closed the connection",
                        self.client_id
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(format!("{}: read: {e}", self.client_id)),
            }
        }
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
    let mut conn = Conn::open(&host, port, &client_id).await?;
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
            let subscribe = Subscribe {
                packet_id: (sent % 65_535 + 1) as u16,
                filters: (a..b)
                    .map(|i| TopicSubscription {
                        filter: background_filter(&prefix, i).into(),
                        options: SubscriptionOptions::default(),
                    })
                    .collect(),
                properties: Default::default(),
            };
            conn.send(&Packet::Subscribe(subscribe)).await?;
            sent += 1;
        }
        match conn.receive().await? {
            Packet::SubAck(ack) if ack.reason_codes.iter().any(|c| c.is_error()) => {
                return Err(format!("{client_id}: a background filter was refused"))
            }
            Packet::SubAck(_) => acked += 1,
            other => return Err(format!("{client_id}: expected SUBACK, got {other:?}")),
        }
    }
    Ok(conn.socket)
}

/// Opens the idle connections (100 connection attempts at a time) and the background
/// subscriptions. Fails on the first refusal: a run measured without its background would
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
            pending
                .spawn(async move { Ok::<_, String>(Conn::open(&host, port, &id).await?.socket) });
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
