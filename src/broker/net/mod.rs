//! The network side: listeners (TCP, TLS, WebSocket), accepting sockets within the connection limits, one task per connection
//! (reading, writing, the goodbye), the topic aliases a connection uses towards its client, and
//! why a connection ends.

pub mod admission;
pub mod connection;
pub mod error;
pub mod listener;
pub mod stream;
pub mod tls;
pub mod topic_alias;
pub mod ws;
