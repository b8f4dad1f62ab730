//! The `sharq` binary in a child process: its config files, its output, its signals.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

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
