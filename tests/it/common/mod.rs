//! Shared helpers for the integration tests, one file per job:
//!
//! - [`broker`]: a broker inside the test process on an ephemeral port, and store directories
//!   written as an earlier run would have left them;
//! - [`process`]: the real `sharq` binary in a child process;
//! - [`client`]: a raw MQTT client built on our own codec, over TCP, TLS or WebSocket;
//! - [`members`]: shared-group members that read in their own tasks;
//! - [`proxy`]: a relay that re-chunks the bytes clients send;
//! - [`tls`]: certificates made at test time;
//! - [`plugins`]: the built-in and fixture strategy components;
//! - [`interop`]: third-party clients (rumqttc, mosquitto, paho-mqtt);
//! - [`http`]: a minimal HTTP client for the broker's HTTP side.
//!
//! Every wait is bounded (see [`TIMEOUT`]) so that no test can hang.
//!
//! [`QUIET`] is 400 ms. The broker tests used 400 ms and the shared-subscription tests 300 ms;
//! the longer one is kept so that no "nothing arrives" check watches for less time than it
//! did before the two helper modules were merged.

use std::time::Duration;

pub mod broker;
pub mod client;
pub mod http;
pub mod interop;
pub mod members;
pub mod plugins;
pub mod process;
pub mod proxy;
pub mod tls;

pub use broker::*;
pub use client::*;
pub use interop::*;
pub use members::*;
pub use plugins::*;
pub use process::*;
pub use proxy::*;
pub use tls::*;

pub use sharq::packet::ProtocolVersion::{V3_1_1, V5};

/// The longest any single wait in a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(400);

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
