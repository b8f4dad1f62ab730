//! Shared helpers for the integration tests: an in-process broker on an ephemeral port, the
//! real `sharq` binary in a child process, a raw-TCP MQTT client built on our own codec, and
//! shared-group members that read in their own tasks.
//!
//! Every wait is bounded (see [`TIMEOUT`]) so that no test can hang.
//!
//! [`QUIET`] is 400 ms. The broker tests used 400 ms and the shared-subscription tests 300 ms;
//! the longer one is kept so that no "nothing arrives" check watches for less time than it
//! did before the two helper modules were merged.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use sharq::broker::BrokerState;
use sharq::codec::{self, Decoder};
use sharq::packet::{
    Ack, ConnAck, Connect, ConnectProperties, Disconnect, DisconnectProperties, Packet,
    ProtocolVersion, Publish, PublishProperties, QoS, ReasonCode, SubAck, Subscribe,
    SubscribeProperties, SubscriptionOptions, TopicSubscription, UnsubAck, Unsubscribe,
    UnsubscribeProperties,
};
use sharq::{Broker, Config};

#[allow(unused_imports)]
pub use ProtocolVersion::{V3_1_1, V5};

pub mod http;

/// The longest any single wait in a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(400);

/// A per-call strategy deadline no healthy call reaches, however busy the machine: the default
/// 20 ms of wall-clock time can pass while the test process is descheduled, and a timed-out
/// call hands its message to the fallback round robin, which would falsify any test of a
/// distribution. Tests about deadlines set their own.
pub const TEST_PLUGIN_DEADLINE_MS: u64 = 5000;

// ---------------------------------------------------------------------------------------------
// In-process broker
// ---------------------------------------------------------------------------------------------

/// A broker serving on an ephemeral port of 127.0.0.1, stopped when dropped.
pub struct TestBroker {
    pub broker: Broker,
    addr: SocketAddr,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        TestBroker::with(|_| {}).await
    }

    /// Starts with the default configuration changed by `configure`. `$SYS` is off unless
    /// `configure` turns it on; strategy calls get [`TEST_PLUGIN_DEADLINE_MS`] unless
    /// `configure` says otherwise.
    pub async fn with(configure: impl FnOnce(&mut Config)) -> TestBroker {
        let mut config = Config::default();
        config.server.listeners = vec!["127.0.0.1:0".parse().unwrap()];
        config.server.sys_interval_secs = 0;
        config.shared.plugin_deadline_ms = TEST_PLUGIN_DEADLINE_MS;
        configure(&mut config);
        TestBroker::from_config(config).await
    }

    /// Like [`TestBroker::with`], with the HTTP side on an ephemeral loopback port and the
    /// token [`http::TOKEN`].
    pub async fn with_http(configure: impl FnOnce(&mut Config)) -> TestBroker {
        TestBroker::with(|c| {
            c.http.listen = "127.0.0.1:0".into();
            c.http.token = http::TOKEN.into();
            configure(c);
        })
        .await
    }

    /// Starts with `config` exactly as given (it must listen on one ephemeral port).
    pub async fn from_config(config: Config) -> TestBroker {
        init_tracing();
        let broker = tokio::time::timeout(TIMEOUT, Broker::start(config))
            .await
            .expect("broker start timed out")
            .expect("broker start failed");
        let addr = broker.local_addrs()[0];
        TestBroker { broker, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn state(&self) -> &Arc<BrokerState> {
        self.broker.state()
    }

    /// The HTTP side's address and token (the config must set `http.listen`).
    pub fn http(&self) -> (SocketAddr, String) {
        let http = self.broker.http().expect("the config sets no http.listen");
        (http.address, http.token.clone())
    }

    pub async fn shutdown(&self) {
        self.broker.shutdown(Duration::from_secs(2)).await;
    }

    /// Waits until the broker has settled the end of `client_id`'s connection: its session is
    /// offline (kept for a later connection) or gone. The broker closes a socket before it
    /// detaches the session, so a client seeing the close (or having sent DISCONNECT) is not
    /// enough.
    pub async fn wait_session_offline(&self, client_id: &str) {
        let state = self.broker.state();
        wait_until(TIMEOUT, &format!("session {client_id} offline"), || {
            state
                .session(client_id)
                .is_none_or(|session| !session.is_online())
        })
        .await
    }

    /// Waits until `client_id`'s session has ended.
    pub async fn wait_session_ended(&self, client_id: &str) {
        let state = self.broker.state();
        wait_until(TIMEOUT, &format!("session {client_id} ended"), || {
            state.session(client_id).is_none()
        })
        .await
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.broker.state().shutdown.cancel();
    }
}

fn init_tracing() {
    // RUST_LOG=sharq=debug cargo test ... shows the broker's view of a failing test.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_test_writer()
        .try_init();
}

// ---------------------------------------------------------------------------------------------
// Bounded waiting
// ---------------------------------------------------------------------------------------------

/// Polls `condition` every 10 ms until it holds; fails the test with `what` after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    if !poll_until(limit, &mut condition).await {
        panic!("timed out after {limit:?} waiting for: {what}");
    }
}

/// Polls `condition` every 10 ms until it holds (true) or `limit` passes (false).
pub async fn poll_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------------------

/// The `sharq` binary running as a child process, killed when dropped.
pub struct SpawnedBroker {
    pub child: Child,
    pub addr: SocketAddr,
    /// Everything the process printed so far (stdout and stderr, ANSI codes stripped).
    pub output: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

/// [`EPHEMERAL_CONFIG`] with the durable store in `dir`.
pub fn durable_config(dir: &std::path::Path) -> String {
    format!(
        "{EPHEMERAL_CONFIG}[storage]\ndir = {:?}\n",
        dir.display().to_string()
    )
}

/// The resident memory of process `pid`, in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A config file body listening on an ephemeral port of 127.0.0.1.
pub const EPHEMERAL_CONFIG: &str =
    "[server]\nlisteners = [\"127.0.0.1:0\"]\nlog = \"info\"\nsys_interval_secs = 0\n";

pub fn sharq_binary() -> &'static str {
    env!("CARGO_BIN_EXE_sharq")
}

/// A private copy of the binary under test, made once per test binary: several worktrees
/// sharing one target directory can overwrite `target/debug/sharq` while tests run.
pub fn sharq_binary_copy() -> &'static std::path::Path {
    static COPY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("sharq-bin-")
            .tempdir()
            .unwrap()
            .keep();
        let copy = dir.join("sharq");
        std::fs::copy(sharq_binary(), &copy).unwrap();
        copy
    })
}

/// A built-in strategy's component, as build.rs left it in the target dir.
pub fn builtin_wasm(name: &str) -> std::path::PathBuf {
    let target = std::path::Path::new(sharq_binary())
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap();
    let path = target
        .join("plugins/wasm32-wasip2/release")
        .join(format!("sharq_plugin_{name}.wasm"));
    assert!(path.is_file(), "{} missing", path.display());
    path
}

/// `sharq --config FILE` with `toml` written to FILE in a temp dir (keep it alive while the
/// broker runs): stdin closed, stdout and stderr piped, `RUST_LOG` unset.
pub fn sharq_command(toml: &str) -> (Command, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sharq.toml");
    std::fs::write(&path, toml).unwrap();
    let mut command = Command::new(sharq_binary());
    command
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    (command, dir)
}

/// Writes `toml` to a temp file and runs `sharq --config FILE`, collecting its output.
/// Returns the child, the output collector and the temp dir (keep it alive).
pub fn spawn_sharq_raw(
    toml: &str,
) -> (
    Child,
    Arc<Mutex<String>>,
    mpsc::Receiver<String>,
    tempfile::TempDir,
) {
    let (mut command, dir) = sharq_command(toml);
    let mut child = command
        .env("NO_COLOR", "1")
        .spawn()
        .expect("cannot run the sharq binary");
    let output = Arc::new(Mutex::new(String::new()));
    let (lines_tx, lines_rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    for reader in [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr) as Box<dyn std::io::Read + Send>,
    ] {
        let output = output.clone();
        let lines_tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                {
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
                let _ = lines_tx.send(line);
            }
        });
    }
    (child, output, lines_rx, dir)
}

impl SpawnedBroker {
    /// Runs the binary with [`EPHEMERAL_CONFIG`].
    pub fn start() -> SpawnedBroker {
        SpawnedBroker::with_config(EPHEMERAL_CONFIG)
    }

    /// Runs the binary with `toml` (which must log at info and listen on one ephemeral port)
    /// and waits for it to log its bound address.
    pub fn with_config(toml: &str) -> SpawnedBroker {
        let (mut child, output, lines, dir) = spawn_sharq_raw(toml);
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = parse_listening(&line) {
                        break addr;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "sharq did not log `listening for MQTT connections address=...` within 10 s; output:\n{}",
                        output.lock().unwrap()
                    );
                }
            }
        };
        SpawnedBroker {
            child,
            addr,
            output,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The bound address of the first listener of `kind` (`tcp`, `tls`, `ws`, `wss`), from its
    /// `listening for MQTT connections` line; waits for it up to 10 s.
    pub fn listening(&self, kind: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .output
                .lock()
                .unwrap()
                .lines()
                .filter(|line| listening_kind(line).as_deref() == Some(kind))
                .find_map(parse_listening);
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "sharq did not log a `{kind}` listener; output:\n{}",
                self.output.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to 10 s) until the output holds a line containing `text`.
    pub fn wait_for_output(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.output.lock().unwrap().contains(text) {
            assert!(
                Instant::now() < deadline,
                "sharq did not log `{text}`; output:\n{}",
                self.output.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM with `kill -TERM <pid>`.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Kills the process with SIGKILL (`kill -9`): no shutdown, no last commit.
    pub fn kill9(&mut self) {
        self.child.kill().expect("cannot kill sharq");
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "sharq did not exit within {limit:?}; output:\n{}",
                    self.output.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SpawnedBroker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Finds the bound address in the `listening for MQTT connections` log line, as text
/// (`... address=HOST:PORT`) or as JSON (`server.log_format = "json"`).
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening for MQTT connections") {
        return None;
    }
    if line.trim_start().starts_with('{') {
        let event: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = event.get("fields")?;
        if fields.get("message")?.as_str()? != "listening for MQTT connections" {
            return None;
        }
        return fields.get("address")?.as_str()?.parse().ok();
    }
    let rest = &line[line.find("address=")? + "address=".len()..];
    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    rest[..end].trim_matches('"').parse().ok()
}

/// The `kind` field (`tcp`, `tls`, `ws`, `wss`) of a `listening for MQTT connections` line.
pub fn listening_kind(line: &str) -> Option<String> {
    if !line.contains("listening for MQTT connections") {
        return None;
    }
    if line.trim_start().starts_with('{') {
        let event: serde_json::Value = serde_json::from_str(line).ok()?;
        return Some(event.get("fields")?.get("kind")?.as_str()?.to_owned());
    }
    let rest = &line[line.find("kind=")? + "kind=".len()..];
    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"').to_owned())
}

pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Packet builders
// ---------------------------------------------------------------------------------------------

pub fn connect_packet(version: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 60,
        client_id: ByteString::from(client_id),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

/// The CONNECT options the shared-subscription tests vary, for [`RawClient::connect_opts`].
#[derive(Debug, Clone)]
pub struct ConnectOpts {
    pub version: ProtocolVersion,
    pub client_id: String,
    pub clean_start: bool,
    /// v5 only: Session Expiry Interval.
    pub session_expiry: Option<u32>,
    pub keep_alive: u16,
    /// v5 only: Receive Maximum.
    pub receive_maximum: Option<u16>,
}

impl ConnectOpts {
    pub fn new(version: ProtocolVersion, client_id: &str) -> ConnectOpts {
        ConnectOpts {
            version,
            client_id: client_id.to_owned(),
            clean_start: true,
            session_expiry: None,
            keep_alive: 0,
            receive_maximum: None,
        }
    }

    /// A session that outlives its connection: Clean Start 0, and for v5 an expiry of 300 s.
    pub fn persistent(mut self) -> ConnectOpts {
        self.clean_start = false;
        if self.version == V5 {
            self.session_expiry = Some(300);
        }
        self
    }

    pub fn keep_alive(mut self, secs: u16) -> ConnectOpts {
        self.keep_alive = secs;
        self
    }

    pub fn packet(&self) -> Connect {
        Connect {
            protocol: self.version,
            clean_start: self.clean_start,
            keep_alive: self.keep_alive,
            client_id: ByteString::from(self.client_id.as_str()),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties {
                session_expiry_interval: self.session_expiry,
                receive_maximum: self.receive_maximum,
                ..ConnectProperties::default()
            },
        }
    }
}

pub fn publish_packet(topic: &str, payload: &[u8], qos: QoS, packet_id: Option<u16>) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from(topic),
        packet_id,
        payload: Bytes::copy_from_slice(payload),
        properties: PublishProperties::default(),
    }
}

pub fn sub_options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

/// Encodes `packet` for `version` with our codec.
pub fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    codec::encode(packet, version, &mut buf).expect("encode");
    buf.to_vec()
}

// ---------------------------------------------------------------------------------------------
// Raw client
// ---------------------------------------------------------------------------------------------

/// What the next read produced.
#[allow(clippy::large_enum_variant)] // a test helper: one value at a time
#[derive(Debug)]
pub enum Event {
    Packet(Packet),
    Closed,
    Timeout,
}

/// A bare MQTT client over TCP: it sends exactly what the test says, acknowledges nothing by
/// itself, and reports exactly what arrives, decoded with our codec (malformed input from the
/// broker fails the test).
///
/// Writes: [`RawClient::send`] tolerates a broker that already closed (tests of a close check
/// what was received instead); the helpers that write without waiting for an answer
/// ([`RawClient::send_checked`], `publish_nowait`, `ack_nowait`, `puback`, `pubrec`, `pubcomp`)
/// fail the test when the write fails, since no later read would reveal it, and so does
/// `disconnect_and_wait`.
#[derive(Debug)]
pub struct RawClient {
    stream: Box<dyn ClientStream>,
    pub version: ProtocolVersion,
    /// The CONNECT's client id (empty until one is sent), to name the client in failures.
    pub client_id: String,
    decoder: Decoder,
    buf: BytesMut,
    /// Packets read while waiting for another kind, returned first by later reads, each with
    /// the raw first byte of its fixed header.
    stash: VecDeque<(u8, Packet)>,
    /// The raw first byte of the fixed header of the packet `next_event` last returned.
    first_byte: u8,
    next_packet_id: u16,
    closed: bool,
    /// The connection ended in a reset (ECONNRESET) rather than an orderly close.
    reset: bool,
}

/// What a [`RawClient`] talks over: a TCP socket, or a TLS or WebSocket stream.
pub trait ClientStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug> ClientStream
    for T
{
}

impl RawClient {
    /// Opens a TCP connection; sends nothing.
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> RawClient {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect failed");
        stream.set_nodelay(true).unwrap();
        RawClient::over(stream, version)
    }

    /// A client over an established stream (TLS, WebSocket); sends nothing.
    pub fn over(stream: impl ClientStream + 'static, version: ProtocolVersion) -> RawClient {
        RawClient {
            stream: Box::new(stream),
            version,
            client_id: String::new(),
            decoder: Decoder::with_version(version, 268_435_460),
            buf: BytesMut::with_capacity(4096),
            stash: VecDeque::new(),
            first_byte: 0,
            next_packet_id: 1,
            closed: false,
            reset: false,
        }
    }

    /// Opens a connection, sends `connect` and returns the CONNACK.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (RawClient, ConnAck) {
        let client = RawClient::open(addr, connect.protocol).await;
        client.connect_as(connect).await
    }

    /// Sends `connect` on this (fresh) connection and returns the CONNACK.
    pub async fn connect_as(self, connect: Connect) -> (RawClient, ConnAck) {
        let mut client = self;
        client.client_id = connect.client_id.to_string();
        client.send(&Packet::Connect(Box::new(connect))).await;
        match client.recv().await {
            Packet::ConnAck(connack) => (client, connack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects with Clean Start and asserts success.
    pub async fn connect(addr: SocketAddr, version: ProtocolVersion, client_id: &str) -> RawClient {
        let (client, connack) =
            RawClient::connect_with(addr, connect_packet(version, client_id)).await;
        assert_eq!(
            connack.reason_code,
            ReasonCode::SUCCESS,
            "CONNACK refused: {connack:?}"
        );
        client
    }

    /// Connects with `opts` and asserts the CONNACK is not a refusal.
    pub async fn connect_opts(addr: SocketAddr, opts: ConnectOpts) -> (RawClient, ConnAck) {
        let (client, connack) = RawClient::connect_with(addr, opts.packet()).await;
        assert!(
            !connack.reason_code.is_error(),
            "CONNACK refused: {:?}",
            connack.reason_code
        );
        (client, connack)
    }

    pub async fn v5(addr: SocketAddr, client_id: &str) -> RawClient {
        RawClient::connect(addr, ProtocolVersion::V5, client_id).await
    }

    pub async fn v311(addr: SocketAddr, client_id: &str) -> RawClient {
        RawClient::connect(addr, ProtocolVersion::V3_1_1, client_id).await
    }

    /// True once the connection ended in a reset instead of an orderly close (FIN).
    pub fn was_reset(&self) -> bool {
        self.reset
    }

    pub fn packet_id(&mut self) -> u16 {
        let id = self.next_packet_id;
        self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
        id
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        // A broker that already closed may reset the socket: tests check what it sent instead.
        // Flushed: a TLS or WebSocket stream may hold written bytes until then.
        let stream = &mut self.stream;
        let _ = tokio::time::timeout(TIMEOUT, async move {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await;
    }

    /// Writes `bytes` and reports the write's own result: a write after the broker reset the
    /// connection fails.
    pub async fn try_send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let stream = &mut self.stream;
        let write = async move {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        match tokio::time::timeout(TIMEOUT, write).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::other("write timed out")),
        }
    }

    pub async fn send(&mut self, packet: &Packet) {
        let bytes = encode(packet, self.version);
        self.send_bytes(&bytes).await;
    }

    /// Sends `packet`; a failed or timed-out write fails the test.
    pub async fn send_checked(&mut self, packet: &Packet) {
        let bytes = encode(packet, self.version);
        if let Err(e) = self.try_send_bytes(&bytes).await {
            panic!("{}: write failed: {e}", self.client_id);
        }
    }

    /// The next packet, the close of the connection, or a timeout after `limit`.
    pub async fn next_event(&mut self, limit: Duration) -> Event {
        if let Some((first, packet)) = self.stash.pop_front() {
            self.first_byte = first;
            return Event::Packet(packet);
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let first = self.buf.first().copied();
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(packet)) => {
                    self.first_byte = first.unwrap_or_default();
                    return Event::Packet(packet);
                }
                Ok(None) => {}
                Err(e) => panic!(
                    "{}: the broker sent bytes our codec cannot decode: {e}; buffer {:02x?}",
                    self.client_id,
                    &self.buf[..]
                ),
            }
            if self.closed {
                return Event::Closed;
            }
            self.buf.reserve(4096);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Event::Timeout,
                Ok(Ok(0)) => self.closed = true,
                Ok(Err(e)) => {
                    self.closed = true;
                    self.reset = e.kind() == std::io::ErrorKind::ConnectionReset;
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The raw first byte of the fixed header (type and flags) of the packet the last read
    /// returned, for tests of what the broker put on the wire.
    pub fn first_byte(&self) -> u8 {
        self.first_byte
    }

    /// The next packet; fails on close or timeout.
    pub async fn recv(&mut self) -> Packet {
        match self.next_event(TIMEOUT).await {
            Event::Packet(packet) => packet,
            other => panic!("{}: expected a packet, got {other:?}", self.client_id),
        }
    }

    /// Reads until a packet satisfies `pred`, stashing the others for later reads.
    pub async fn recv_matching(&mut self, what: &str, pred: impl Fn(&Packet) -> bool) -> Packet {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let mut skipped = VecDeque::new();
        // Look in the stash first.
        if let Some(index) = self.stash.iter().position(|(_, p)| pred(p)) {
            if let Some((first, packet)) = self.stash.remove(index) {
                self.first_byte = first;
                return packet;
            }
        }
        let stash = std::mem::take(&mut self.stash);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Event::Packet(packet) if pred(&packet) => {
                    let mut rest = stash;
                    rest.extend(skipped);
                    self.stash = rest;
                    return packet;
                }
                Event::Packet(packet) => skipped.push_back((self.first_byte, packet)),
                other => panic!(
                    "{}: expected {what}, got {other:?}; packets skipped: {skipped:?}",
                    self.client_id
                ),
            }
        }
    }

    pub async fn recv_publish(&mut self) -> Publish {
        match self
            .recv_matching("PUBLISH", |p| matches!(p, Packet::Publish(_)))
            .await
        {
            Packet::Publish(publish) => publish,
            _ => unreachable!(),
        }
    }

    /// The next packet, which must be a PUBLISH (unlike [`RawClient::recv_publish`], which
    /// skips other packets).
    pub async fn expect_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(publish) => publish,
            other => panic!("{}: expected PUBLISH, got {other:?}", self.client_id),
        }
    }

    /// Asserts no packet arrives for `limit` (closing is not allowed either).
    pub async fn expect_nothing(&mut self, limit: Duration) {
        match self.next_event(limit).await {
            Event::Timeout => {}
            other => panic!("expected nothing for {limit:?}, got {other:?}"),
        }
    }

    /// Asserts no PUBLISH arrives for `limit` (other packets are stashed).
    pub async fn expect_no_publish(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Event::Timeout => return,
                Event::Packet(Packet::Publish(p)) => {
                    panic!("{}: expected no PUBLISH, got {p:?}", self.client_id)
                }
                Event::Packet(other) => self.stash.push_back((self.first_byte, other)),
                Event::Closed => panic!(
                    "{}: expected no PUBLISH, the connection closed",
                    self.client_id
                ),
            }
        }
    }

    /// Asserts the broker closes the connection (within [`TIMEOUT`]) and returns what it sent
    /// before closing.
    pub async fn expect_closed(&mut self) -> Vec<Packet> {
        self.expect_closed_within(TIMEOUT).await
    }

    /// Asserts the broker closes the connection within `limit` and returns what it sent
    /// before closing.
    pub async fn expect_closed_within(&mut self, limit: Duration) -> Vec<Packet> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Event::Closed => return got,
                Event::Packet(packet) => got.push(packet),
                Event::Timeout => panic!(
                    "{}: expected the broker to close the connection within {limit:?}; still \
                     open, got {got:?}",
                    self.client_id
                ),
            }
        }
    }

    /// Reads raw bytes until the broker closes (or `limit`), without decoding.
    pub async fn read_raw_until_closed(&mut self, limit: Duration) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut all = self.buf.split().to_vec();
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!("{}: connection still open after {limit:?}", self.client_id),
                Ok(Ok(0)) | Ok(Err(_)) => return all,
                Ok(Ok(n)) => all.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Asserts that the broker sends DISCONNECT with `code` (skipping any PUBLISH still on
    /// the way) and then closes.
    pub async fn expect_disconnect(&mut self, code: u8) -> Disconnect {
        let got = self.expect_closed().await;
        let disconnect = got.iter().find_map(|p| match p {
            Packet::Disconnect(d) => Some(d.clone()),
            _ => None,
        });
        match disconnect {
            Some(d) => {
                assert_eq!(
                    d.reason_code,
                    ReasonCode(code),
                    "DISCONNECT reason code: expected 0x{code:02X}, got {d:?}"
                );
                d
            }
            None => {
                panic!("expected DISCONNECT 0x{code:02X} before close, got only {got:?} then close")
            }
        }
    }

    /// v5: DISCONNECT with `code` then close; 3.1.1: close without DISCONNECT.
    pub async fn expect_error_close(&mut self, v5_code: u8) {
        if self.version.is_v5() {
            self.expect_disconnect(v5_code).await;
        } else {
            let got = self.expect_closed().await;
            assert!(
                !got.iter().any(|p| matches!(p, Packet::Disconnect(_))),
                "a 3.1.1 client must never receive DISCONNECT: {got:?}"
            );
        }
    }

    pub async fn subscribe_with(
        &mut self,
        filters: Vec<(&str, SubscriptionOptions)>,
        identifier: Option<u32>,
    ) -> SubAck {
        let packet_id = self.packet_id();
        let subscribe = Subscribe {
            packet_id,
            filters: filters
                .into_iter()
                .map(|(filter, options)| TopicSubscription {
                    filter: ByteString::from(filter),
                    options,
                })
                .collect(),
            properties: SubscribeProperties {
                subscription_identifier: identifier,
                ..SubscribeProperties::default()
            },
        };
        self.send(&Packet::Subscribe(subscribe)).await;
        match self
            .recv_matching("SUBACK", |p| matches!(p, Packet::SubAck(_)))
            .await
        {
            Packet::SubAck(suback) => {
                assert_eq!(suback.packet_id, packet_id, "SUBACK packet id");
                suback
            }
            _ => unreachable!(),
        }
    }

    /// Subscribes to one filter and asserts the grant.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubAck {
        let suback = self
            .subscribe_with(vec![(filter, sub_options(qos))], None)
            .await;
        assert_eq!(
            suback.reason_codes,
            vec![ReasonCode(qos as u8)],
            "{}: SUBACK for {filter}",
            self.client_id
        );
        suback
    }

    /// Subscribes to every filter at `qos`; returns the SUBACK reason codes.
    pub async fn subscribe_many(&mut self, filters: &[&str], qos: QoS) -> Vec<ReasonCode> {
        let list = filters.iter().map(|f| (*f, sub_options(qos))).collect();
        self.subscribe_with(list, None).await.reason_codes
    }

    pub async fn unsubscribe(&mut self, filters: &[&str]) -> UnsubAck {
        let packet_id = self.packet_id();
        let unsubscribe = Unsubscribe {
            packet_id,
            filters: filters.iter().map(|f| ByteString::from(*f)).collect(),
            properties: UnsubscribeProperties::default(),
        };
        self.send(&Packet::Unsubscribe(unsubscribe)).await;
        match self
            .recv_matching("UNSUBACK", |p| matches!(p, Packet::UnsubAck(_)))
            .await
        {
            Packet::UnsubAck(unsuback) => {
                assert_eq!(unsuback.packet_id, packet_id, "UNSUBACK packet id");
                unsuback
            }
            _ => unreachable!(),
        }
    }

    /// Publishes and completes the QoS flow (PUBACK, or PUBREC/PUBREL/PUBCOMP).
    pub async fn publish_full(&mut self, mut publish: Publish) {
        if publish.qos != QoS::AtMostOnce && publish.packet_id.is_none() {
            publish.packet_id = Some(self.packet_id());
        }
        let packet_id = publish.packet_id;
        let qos = publish.qos;
        self.send(&Packet::Publish(publish)).await;
        match (qos, packet_id) {
            (QoS::AtMostOnce, _) => {}
            (QoS::AtLeastOnce, Some(id)) => {
                let ack = self.recv_ack("PUBACK", id).await;
                assert!(!ack.reason_code.is_error(), "PUBACK: {ack:?}");
            }
            (QoS::ExactlyOnce, Some(id)) => {
                let rec = self.recv_ack("PUBREC", id).await;
                assert!(!rec.reason_code.is_error(), "PUBREC: {rec:?}");
                self.send(&Packet::PubRel(Ack::new(id))).await;
                let comp = self.recv_ack("PUBCOMP", id).await;
                assert_eq!(comp.reason_code, ReasonCode::SUCCESS, "PUBCOMP: {comp:?}");
            }
            _ => unreachable!(),
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        let mut publish = publish_packet(topic, payload, qos, None);
        publish.retain = retain;
        self.publish_full(publish).await;
    }

    /// Sends a PUBLISH and waits for nothing; returns its packet id (QoS > 0).
    pub async fn publish_nowait(
        &mut self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Option<u16> {
        let packet_id = (qos != QoS::AtMostOnce).then(|| self.packet_id());
        self.send_checked(&Packet::Publish(Publish {
            dup: false,
            qos,
            retain,
            topic: ByteString::from(topic),
            packet_id,
            payload,
            properties: PublishProperties::default(),
        }))
        .await;
        packet_id
    }

    /// Publishes `seqs` as sequence-numbered payloads (see [`seq_payload`]), pipelined: all
    /// are sent, then every acknowledgement is awaited (a PINGREQ round trip for QoS 0, so the
    /// broker has routed them when this returns). Ack reason codes are not checked.
    pub async fn publish_seqs(
        &mut self,
        topic: &str,
        seqs: impl IntoIterator<Item = u32>,
        qos: QoS,
    ) {
        let mut ids = Vec::new();
        for seq in seqs {
            if let Some(id) = self
                .publish_nowait(topic, seq_payload(seq), qos, false)
                .await
            {
                ids.push(id);
            }
        }
        match qos {
            QoS::AtMostOnce => self.ping().await,
            QoS::AtLeastOnce => {
                for id in ids {
                    self.recv_ack("PUBACK", id).await;
                }
            }
            QoS::ExactlyOnce => {
                for id in ids {
                    self.recv_ack("PUBREC", id).await;
                    self.send_checked(&Packet::PubRel(Ack::new(id))).await;
                    self.recv_ack("PUBCOMP", id).await;
                }
            }
        }
    }

    /// Waits for the ack of `kind` ("PUBACK", "PUBREC", "PUBREL", "PUBCOMP") for `packet_id`.
    pub async fn recv_ack(&mut self, kind: &'static str, packet_id: u16) -> Ack {
        let packet = self
            .recv_matching(kind, |p| match (kind, p) {
                ("PUBACK", Packet::PubAck(a))
                | ("PUBREC", Packet::PubRec(a))
                | ("PUBREL", Packet::PubRel(a))
                | ("PUBCOMP", Packet::PubComp(a)) => a.packet_id == packet_id,
                _ => false,
            })
            .await;
        match packet {
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => a,
            _ => unreachable!(),
        }
    }

    /// Acknowledges a received PUBLISH completely.
    pub async fn ack(&mut self, publish: &Publish) {
        match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, _) => {}
            (QoS::AtLeastOnce, Some(id)) => self.send(&Packet::PubAck(Ack::new(id))).await,
            (QoS::ExactlyOnce, Some(id)) => {
                self.send(&Packet::PubRec(Ack::new(id))).await;
                self.recv_ack("PUBREL", id).await;
                self.send(&Packet::PubComp(Ack::new(id))).await;
            }
            _ => panic!("QoS > 0 PUBLISH without packet id: {publish:?}"),
        }
    }

    /// Sends the first acknowledgement of a received PUBLISH (PUBACK, or PUBREC for QoS 2) and
    /// waits for nothing: a PUBREL is the caller's to answer.
    pub async fn ack_nowait(&mut self, publish: &Publish) {
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => self.send_checked(&Packet::PubAck(Ack::new(id))).await,
            (QoS::ExactlyOnce, Some(id)) => self.send_checked(&Packet::PubRec(Ack::new(id))).await,
            _ => {}
        }
    }

    pub async fn puback(&mut self, packet_id: u16, reason: ReasonCode) {
        self.send_checked(&Packet::PubAck(Ack::with_reason(packet_id, reason)))
            .await
    }

    pub async fn pubrec(&mut self, packet_id: u16, reason: ReasonCode) {
        self.send_checked(&Packet::PubRec(Ack::with_reason(packet_id, reason)))
            .await
    }

    pub async fn pubcomp(&mut self, packet_id: u16) {
        self.send_checked(&Packet::PubComp(Ack::new(packet_id)))
            .await
    }

    /// Receives one PUBLISH, acknowledges it, returns it.
    pub async fn recv_and_ack(&mut self) -> Publish {
        let publish = self.recv_publish().await;
        self.ack(&publish).await;
        publish
    }

    pub async fn disconnect(mut self) {
        self.disconnect_with(0, DisconnectProperties::default())
            .await;
    }

    pub async fn disconnect_with(&mut self, code: u8, properties: DisconnectProperties) {
        self.send(&Packet::Disconnect(Disconnect {
            reason_code: ReasonCode(code),
            properties,
        }))
        .await;
        let _ = self.stream.shutdown().await;
    }

    /// DISCONNECT with `reason` (v5) or the plain 3.1.1 DISCONNECT, then closes the socket and
    /// waits for the broker to close its side, so the DISCONNECT has been handled.
    pub async fn disconnect_and_wait(mut self, reason: ReasonCode) {
        self.send_checked(&Packet::Disconnect(Disconnect {
            reason_code: reason,
            properties: DisconnectProperties::default(),
        }))
        .await;
        let _ = self.stream.shutdown().await;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Event::Packet(_) => continue,
                Event::Closed => return,
                Event::Timeout => panic!(
                    "{}: server kept the connection open after DISCONNECT",
                    self.client_id
                ),
            }
        }
    }

    /// Closes the socket without any MQTT goodbye.
    pub fn drop_socket(self) {
        drop(self);
    }

    /// Sends PINGREQ and waits for PINGRESP: proves the connection is alive and everything the
    /// broker sent before has been read.
    pub async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        self.recv_matching("PINGRESP", |p| matches!(p, Packet::PingResp))
            .await;
    }
}

/// Asserts the broker still serves: a fresh v5 client can connect and ping.
pub async fn assert_broker_alive(addr: SocketAddr) {
    let mut client = RawClient::v5(addr, "").await;
    client.ping().await;
    client.disconnect().await;
}

/// Unique-enough client ids for tests sharing a broker.
pub fn client_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------------------
// Shared-group members
// ---------------------------------------------------------------------------------------------

/// A sequence-numbered payload, so tests can tell every message apart.
pub fn seq_payload(seq: u32) -> Bytes {
    Bytes::from(format!("{seq}"))
}

pub fn payload_seq(payload: &[u8]) -> u32 {
    std::str::from_utf8(payload)
        .expect("utf-8 payload")
        .parse()
        .expect("sequence-number payload")
}

/// What a member does with the QoS 1/2 messages it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// PUBACK / PUBREC → PUBCOMP, at once.
    Ack,
    /// Like `Ack`, then a PINGREQ round trip: once [`Member::acked`] counts a message, the
    /// broker has processed its acknowledgement, so a test can control each member's in-flight
    /// count instead of racing the members' tasks.
    AckConfirmed,
    /// Never acknowledge anything.
    Never,
    /// PUBACK / PUBREC with this (failure) reason code.
    Reject(u8),
}

/// One message as a member received it.
#[derive(Debug, Clone)]
pub struct Got {
    /// The raw first byte of the PUBLISH's fixed header.
    pub first_byte: u8,
    pub publish: Publish,
    pub seq: u32,
}

/// A member reading in its own task, recording everything it receives.
pub struct Member {
    received: Arc<parking_lot::Mutex<Vec<Got>>>,
    /// Messages acknowledged (PUBACK or PUBREC sent; with `AckConfirmed`, also processed).
    acked: Arc<std::sync::atomic::AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<RawClient>,
}

impl Member {
    pub fn spawn(mut client: RawClient, mode: AckMode) -> Member {
        let received: Arc<parking_lot::Mutex<Vec<Got>>> = Arc::default();
        let (stop, mut stopped) = oneshot::channel();
        let log = received.clone();
        let acked: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let acks = acked.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return client,
                    event = client.next_event(Duration::from_secs(3600)) => match event {
                        Event::Packet(Packet::Publish(publish)) => {
                            let seq = payload_seq(&publish.payload);
                            let first_byte = client.first_byte();
                            log.lock().push(Got { first_byte, publish: publish.clone(), seq });
                            if let Some(id) = publish.packet_id {
                                match (mode, publish.qos) {
                                    (AckMode::Ack, _) => {
                                        client.ack_nowait(&publish).await;
                                        acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                    }
                                    (AckMode::AckConfirmed, _) => {
                                        client.ack_nowait(&publish).await;
                                        client.ping().await;
                                        acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                    }
                                    (AckMode::Never, _) => {}
                                    (AckMode::Reject(code), QoS::AtLeastOnce) => client.puback(id, ReasonCode(code)).await,
                                    (AckMode::Reject(code), _) => client.pubrec(id, ReasonCode(code)).await,
                                }
                            }
                        }
                        Event::Packet(Packet::PubRel(rel)) => {
                            if matches!(mode, AckMode::Ack | AckMode::AckConfirmed) {
                                client.pubcomp(rel.packet_id).await;
                            }
                        }
                        Event::Packet(_) => {}
                        Event::Timeout => {}
                        Event::Closed => {
                            // Wait to be stopped; the test decides what a closed link means.
                            let _ = (&mut stopped).await;
                            return client;
                        }
                    }
                }
            }
        });
        Member {
            received,
            acked,
            stop: Some(stop),
            task,
        }
    }

    pub fn count(&self) -> usize {
        self.received.lock().len()
    }

    /// Messages this member has acknowledged (see [`AckMode::AckConfirmed`]).
    pub fn acked(&self) -> usize {
        self.acked.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn seqs(&self) -> Vec<u32> {
        self.received.lock().iter().map(|g| g.seq).collect()
    }

    pub fn got(&self) -> Vec<Got> {
        self.received.lock().clone()
    }

    /// Stops reading and hands the client back (packets not yet read stay unread).
    pub async fn stop(mut self) -> RawClient {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("member task did not stop")
            .expect("member task panicked")
    }
}

/// Total messages received by `members`.
pub fn total(members: &[&Member]) -> usize {
    members.iter().map(|m| m.count()).sum()
}

/// Waits until `members` together received `n` messages, then watches [`QUIET`] for extra
/// copies.
pub async fn wait_total(members: &[&Member], n: usize) {
    wait_until(
        Duration::from_secs(10),
        &format!("{n} messages in total"),
        || total(members) >= n,
    )
    .await;
    tokio::time::sleep(QUIET).await;
}

/// How many times each sequence number appears.
pub fn histogram(seqs: impl IntoIterator<Item = u32>) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for seq in seqs {
        *counts.entry(seq).or_insert(0) += 1;
    }
    counts
}

/// Asserts that `seqs` is exactly `expected`, each once.
pub fn assert_exactly_once(
    what: &str,
    seqs: impl IntoIterator<Item = u32>,
    expected: std::ops::Range<u32>,
) {
    let counts = histogram(seqs);
    let missing: Vec<u32> = expected
        .clone()
        .filter(|s| !counts.contains_key(s))
        .collect();
    let dups: Vec<(u32, usize)> = counts
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(&s, &c)| (s, c))
        .collect();
    let stray: Vec<u32> = counts
        .keys()
        .filter(|s| !expected.contains(s))
        .copied()
        .collect();
    assert!(
        missing.is_empty() && dups.is_empty() && stray.is_empty(),
        "{what}: missing {missing:?}, duplicated (seq, copies) {dups:?}, unexpected {stray:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Fixture strategies
// ---------------------------------------------------------------------------------------------

/// The outer build's target dir: the test binary runs from `<target>/debug/deps/`.
pub fn target_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = std::path::PathBuf::from(dir);
        if dir.is_absolute() {
            return dir;
        }
    }
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "deps"))
        .and_then(|deps| deps.parent()?.parent())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Builds the fixture strategies (`tests/fixtures/hostile/`) once per test run and returns
/// their release directory.
fn fixtures_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hostile/Cargo.toml");
        let target = target_dir().join("hostile-fixtures");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("build")
            .arg("--manifest-path")
            .arg(&manifest)
            .args(["--release", "--locked", "--target", "wasm32-wasip2"])
            .arg("--target-dir")
            .arg(&target);
        // As build.rs does: the outer build's host settings must not leak into the wasm build.
        for (key, _) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            let leaks = matches!(
                key,
                "RUSTFLAGS"
                    | "CARGO_ENCODED_RUSTFLAGS"
                    | "CARGO_BUILD_RUSTFLAGS"
                    | "CARGO_BUILD_TARGET"
                    | "CARGO_TARGET_DIR"
                    | "CARGO_BUILD_TARGET_DIR"
                    | "CARGO_BUILD_BUILD_DIR"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "CARGO_BUILD_RUSTC_WRAPPER"
                    | "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER"
                    | "CARGO_MAKEFLAGS"
            ) || key.starts_with("CARGO_PROFILE_");
            if leaks {
                cmd.env_remove(key);
            }
        }
        let output = cmd
            .output()
            .expect("cannot run cargo to build the hostile fixtures");
        assert!(
            output.status.success(),
            "building tests/fixtures/hostile failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        target.join("wasm32-wasip2").join("release")
    })
}

/// A fixture strategy component by file stem (`hostile_wrong_member`, `fixture_key_affinity`).
pub fn fixture_plugin(stem: &str) -> std::path::PathBuf {
    let path = fixtures_dir().join(format!("{stem}.wasm"));
    assert!(path.is_file(), "{} missing", path.display());
    path
}

// ---------------------------------------------------------------------------------------------
// rumqttc clients (a real third-party client library)
// ---------------------------------------------------------------------------------------------

/// A rumqttc 3.1.1 client whose event loop runs in a task forwarding every event.
pub async fn rumqttc_v311(
    addr: SocketAddr,
    client_id: &str,
) -> (
    rumqttc::AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<Result<rumqttc::Event, String>>,
) {
    let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(event) => {
                    if tx.send(Ok(event)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    });
    // Wait for the CONNACK.
    let connack = wait_event(&mut rx, "CONNACK", |e| {
        matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))
    })
    .await;
    if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(c)) = connack {
        assert_eq!(c.code, rumqttc::ConnectReturnCode::Success);
    }
    (client, rx)
}

/// A rumqttc v5 client whose event loop runs in a task forwarding every event.
pub async fn rumqttc_v5(
    addr: SocketAddr,
    client_id: &str,
) -> (
    rumqttc::v5::AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<Result<rumqttc::v5::Event, String>>,
) {
    let mut options = rumqttc::v5::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 64);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(event) => {
                    if tx.send(Ok(event)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    });
    wait_event(&mut rx, "CONNACK", |e| {
        matches!(
            e,
            rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_))
        )
    })
    .await;
    (client, rx)
}

/// Waits (bounded) for an event satisfying `pred`; fails on an event-loop error.
pub async fn wait_event<E: std::fmt::Debug>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Result<E, String>>,
    what: &str,
    pred: impl Fn(&E) -> bool,
) -> E {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => panic!("timed out waiting for {what}"),
            Ok(None) => panic!("event loop ended while waiting for {what}"),
            Ok(Some(Err(e))) => panic!("client error while waiting for {what}: {e}"),
            Ok(Some(Ok(event))) if pred(&event) => return event,
            Ok(Some(Ok(_))) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Re-chunking proxy
// ---------------------------------------------------------------------------------------------

/// How [`ChunkingProxy`] cuts the client's bytes on their way to the broker.
#[derive(Debug, Clone, Copy)]
pub enum Chunking {
    /// Every byte in a write of its own.
    OneByte,
    /// Writes of pseudo-random sizes from 1 to `max` bytes, fixed by `seed`.
    Random { seed: u64, max: usize },
    /// Everything the client sends within `window` of its first byte goes in one write.
    Coalesce { window: Duration },
}

/// A TCP relay between test clients and a broker that re-chunks the client-to-broker stream,
/// so that a scenario proves the broker reads packets whatever TCP does to them. Broker-to-
/// client bytes pass unchanged. Each direction's close is passed on as a half-close.
pub struct ChunkingProxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ChunkingProxy {
    pub async fn start(upstream: SocketAddr, chunking: Chunking) -> ChunkingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut connection = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                connection += 1;
                let chunking = match chunking {
                    // Each connection gets its own cut pattern, still fixed by the seed.
                    Chunking::Random { seed, max } => Chunking::Random {
                        seed: seed ^ connection.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                        max,
                    },
                    other => other,
                };
                tokio::spawn(relay(client, upstream, chunking));
            }
        });
        ChunkingProxy { addr, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ChunkingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, chunking: Chunking) {
    let Ok(broker) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = broker.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut broker_read, mut broker_write) = broker.into_split();
    let downstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut broker_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    let mut rng = match chunking {
        Chunking::Random { seed, .. } => seed | 1,
        _ => 1,
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut pending = buf[..n].to_vec();
        if let Chunking::Coalesce { window } = chunking {
            let deadline = tokio::time::Instant::now() + window;
            let mut closed = false;
            while let Ok(read) = tokio::time::timeout_at(deadline, client_read.read(&mut buf)).await
            {
                match read {
                    Ok(0) | Err(_) => {
                        closed = true;
                        break;
                    }
                    Ok(more) => pending.extend_from_slice(&buf[..more]),
                }
            }
            if broker_write.write_all(&pending).await.is_err() || closed {
                break;
            }
            continue;
        }
        let mut rest = &pending[..];
        while !rest.is_empty() {
            let size = match chunking {
                Chunking::OneByte => 1,
                Chunking::Random { max, .. } => {
                    // xorshift64: deterministic for a seed, good enough to vary the cuts.
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    1 + (rng % max.max(1) as u64) as usize
                }
                Chunking::Coalesce { .. } => rest.len(),
            }
            .min(rest.len());
            if broker_write.write_all(&rest[..size]).await.is_err() {
                return;
            }
            rest = &rest[size..];
            if matches!(chunking, Chunking::OneByte) {
                // Let each byte leave as a segment of its own rather than merge in the socket.
                tokio::task::yield_now().await;
            }
        }
    }
    let _ = broker_write.shutdown().await;
    let _ = downstream.await;
}

/// Writes session records into a store directory as an earlier run would have left them.
pub fn store_sessions(
    dir: &std::path::Path,
    sessions: Vec<(String, sharq::broker::store::encoding::StoredSession)>,
) {
    use sharq::broker::store::redb_backend::RedbBackend;
    use sharq::broker::store::{encoding, Op, StoreBackend};
    let store = RedbBackend::open(dir, true).unwrap();
    let ops: Vec<Op> = sessions
        .iter()
        .map(|(client_id, record)| Op::PutSession {
            client_id: Arc::from(client_id.as_str()),
            value: encoding::encode_session(record),
        })
        .collect();
    store.commit(&ops, encoding::unix_now_ms(), 1).unwrap();
    store.close();
}

// ---------------------------------------------------------------------------------------------
// TLS and WebSocket clients, and certificates made at test time
// ---------------------------------------------------------------------------------------------

/// A CA made at test time, writing PEM files into its own temp dir: the CA certificate, and
/// server and client certificates it signs.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM.
    pub ca_pem: std::path::PathBuf,
    next_serial: u64,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sharq test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        TestPki {
            dir,
            ca,
            ca_pem,
            next_serial: 1,
        }
    }

    /// Writes `NAME.pem` and `NAME.key` in the PKI's dir: a certificate with subject CN `cn`
    /// for `localhost` and 127.0.0.1, usable by a server or (`client`) a client.
    pub fn issue(
        &mut self,
        name: &str,
        cn: &str,
        client: bool,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.serial_number = Some(rcgen::SerialNumber::from(self.next_serial));
        self.next_serial += 1;
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let cert_path = self.dir.path().join(format!("{name}.pem"));
        let key_path = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    pub fn server(&mut self, name: &str, cn: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        self.issue(name, cn, false)
    }

    pub fn client(&mut self, name: &str, cn: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        self.issue(name, cn, true)
    }

    /// A rustls client trusting this CA, presenting `identity` (cert, key files) if given.
    pub fn client_config(
        &self,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Arc<tokio_rustls::rustls::ClientConfig> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&self.ca_pem).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(cert)
                        .unwrap()
                        .map(Result::unwrap)
                        .collect(),
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }
}

pub type TlsClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS handshake with the broker at `addr` as `localhost`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<tokio_rustls::rustls::ClientConfig>,
) -> std::io::Result<TlsClientStream> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost")
        .map_err(std::io::Error::other)?;
    tokio::time::timeout(
        TIMEOUT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// The subject CN of the certificate the server presented.
pub fn server_cn(stream: &TlsClientStream) -> String {
    let leaf = &stream.get_ref().1.peer_certificates().unwrap()[0];
    sharq::broker::net::tls::subject_common_name(leaf).unwrap()
}

/// A WebSocket upgrade to `url` (`ws://HOST:PORT/PATH`) over `stream`, offering `protocols`
/// (none: no Sec-WebSocket-Protocol header).
pub async fn ws_upgrade<S>(
    stream: S,
    url: &str,
    protocols: Option<&str>,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<S>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request()?;
    if let Some(protocols) = protocols {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            protocols.parse().expect("a header value"),
        );
    }
    tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("WebSocket upgrade timed out")
}

// ---------------------------------------------------------------------------------------------
// Third-party client tools (mosquitto_pub/sub, paho-mqtt for Python)
// ---------------------------------------------------------------------------------------------

/// True if tests with third-party tools should run; fails the test if they should but the
/// tools are missing (`.ci/install-test-tools` installs them). `SHARQ_SKIP_INTEROP=1` skips.
pub fn interop_ready(needs_paho: bool) -> bool {
    if std::env::var("SHARQ_SKIP_INTEROP").as_deref() == Ok("1") {
        eprintln!("SHARQ_SKIP_INTEROP=1: interop test skipped");
        return false;
    }
    let have = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let mut missing = Vec::new();
    for tool in ["mosquitto_pub", "mosquitto_sub", "stdbuf"] {
        if !have("sh", &["-c", &format!("command -v {tool}")]) {
            missing.push(tool);
        }
    }
    if needs_paho && !have("python3", &["-c", "import paho.mqtt"]) {
        missing.push("python3 paho-mqtt");
    }
    assert!(
        missing.is_empty(),
        "interop tools missing: {missing:?}; run `.ci/install-test-tools` (or set SHARQ_SKIP_INTEROP=1 to skip)"
    );
    true
}

/// Runs `command` to its end within `limit` (killed and failing the test after), collecting
/// its output.
pub fn run_tool(mut command: Command, limit: Duration) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{command:?} did not finish within {limit:?}; stdout {:?} stderr {:?}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `tests/interop/SCRIPT` with python3 and `args`; fails the test unless it exits 0.
pub fn run_python_script(script: &str, args: &[String]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    let mut command = Command::new("python3");
    command.arg(&path).args(args);
    let output = run_tool(command, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "{script} {args:?} failed: stdout {} stderr {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
