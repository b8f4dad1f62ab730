//! The network side: listeners (TCP, TLS, WebSocket), accepting sockets within the connection
//! limits, and one task per connection (`connection/`: the connect phase, the read loop, the
//! goodbye) that calls the packet handlers of `broker/handle/`.

pub mod admission;
pub mod connection;
pub mod listener;
pub mod stream;
pub mod tls;
pub mod ws;
