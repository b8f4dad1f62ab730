//! The network side: listeners (TCP, TLS, WebSocket) accepting sockets within the connection
//! limits (`broker/admission.rs`), and one task per connection (`connection/`: the connect phase, the read loop, the
//! goodbye) that calls the packet handlers of `broker/handle/`.

pub mod connection;
pub mod listener;
pub mod stream;
pub mod ws;
