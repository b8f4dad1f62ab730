//! `[limits]`, `[session]` and `[keep_alive]`: what one client, one session and the broker as a
//! whole may hold, and the time bounds a client is held to.

use serde::Deserialize;

use super::Invalid;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest packet accepted from a client (advertised in CONNACK), in bytes.
    pub max_packet_size: u32,
    /// How many QoS 1/2 PUBLISHes a client may have unacknowledged towards us.
    pub receive_maximum: u16,
    /// Cap on QoS 1/2 messages in flight towards one client (the client's Receive Maximum may
    /// lower it further).
    pub max_inflight: u16,
    /// Messages queued for one session (offline, or online but behind) before the overflow
    /// policy applies.
    pub max_queued_messages: usize,
    /// Bytes one session may hold, queued or in flight, before the overflow policy applies.
    /// Counted over whole messages: topic, payload and every property.
    pub max_queued_bytes: usize,
    pub max_topic_levels: usize,
    /// Open sockets, counted from accept() on (a client that never finishes CONNECT holds a
    /// place too); above it a new socket is closed at once.
    pub max_connections: usize,
    /// Open sockets from one source address; 0 means no per-address limit.
    pub max_connections_per_ip: usize,
    /// How long a new connection may take to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Topic aliases a client may use towards us (Topic Alias Maximum in CONNACK).
    pub topic_alias_maximum: u16,
    /// Topic aliases we use towards a v5 client, within the Topic Alias Maximum it states;
    /// 0 sends every topic in full.
    pub outgoing_topic_alias_maximum: u16,
    /// Pending will messages and similar timers are per session; this bounds retained messages.
    pub max_retained_messages: usize,
    /// Whole-message bytes (topic, payload, properties) over all retained messages.
    pub max_retained_bytes: usize,
    /// Subscriptions one session may hold; a SUBSCRIBE past it is refused per filter with
    /// 0x97 (Quota exceeded). 0: no bound.
    pub max_subscriptions_per_client: usize,
    /// Persistent sessions (Session Expiry above zero, connected or not) the broker keeps; a
    /// CONNECT that would make one more is refused with 0x97. 0: no bound.
    pub max_sessions: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_packet_size: 1024 * 1024,
            receive_maximum: 1024,
            max_inflight: 64,
            max_queued_messages: 10_000,
            max_queued_bytes: 64 * 1024 * 1024,
            max_topic_levels: 64,
            max_connections: 100_000,
            max_connections_per_ip: 0,
            connect_timeout_secs: 10,
            topic_alias_maximum: 64,
            outgoing_topic_alias_maximum: 64,
            max_retained_messages: 1_000_000,
            max_retained_bytes: 256 * 1024 * 1024,
            max_subscriptions_per_client: 10_000,
            max_sessions: 100_000,
        }
    }
}

impl LimitsConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.max_packet_size < 64 || self.max_packet_size > 268_435_460 {
            return Err(Invalid::new(
                "limits.max_packet_size",
                "must be between 64 and 268435460 bytes",
            ));
        }
        for (key, value) in [
            ("limits.receive_maximum", u64::from(self.receive_maximum)),
            ("limits.max_inflight", u64::from(self.max_inflight)),
            (
                "limits.max_queued_messages",
                self.max_queued_messages as u64,
            ),
            ("limits.max_topic_levels", self.max_topic_levels as u64),
            ("limits.max_connections", self.max_connections as u64),
            ("limits.connect_timeout_secs", self.connect_timeout_secs),
        ] {
            if value == 0 {
                return Err(Invalid::new(key, "must be at least 1"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Upper bound for the Session Expiry Interval a client may ask for; also the expiry of a
    /// 3.1.1 session with Clean Session = 0.
    pub max_expiry_secs: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_expiry_secs: 7 * 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KeepAliveConfig {
    /// A v5 client asking for more (or for 0) is told this value as Server Keep Alive.
    pub max_secs: u16,
    /// When set, every v5 client is told to use this keep-alive (Server Keep Alive).
    pub server_secs: Option<u16>,
}

impl Default for KeepAliveConfig {
    fn default() -> Self {
        KeepAliveConfig {
            max_secs: u16::MAX,
            server_secs: None,
        }
    }
}

impl KeepAliveConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.server_secs == Some(0) {
            return Err(Invalid::new(
                "keep_alive.server_secs",
                "0 would turn keep-alive off for every client; leave the key out instead",
            ));
        }
        Ok(())
    }
}
