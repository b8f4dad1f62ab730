//! MQTT over WebSocket: the upgrade (path, subprotocol) and a byte stream over binary
//! messages, so the connection code reads and writes it like a socket.
//!
//! MQTT packets and WebSocket messages are independent [MQTT-6.0.0-2]: one packet may span
//! several messages and one message may hold several packets. The adapter forgets message
//! boundaries and the MQTT decoder finds packet boundaries, as on TCP.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// The subprotocols we speak, in order of preference: `mqtt` (MQTT 3.1.1 and 5.0) and the
/// `mqttv3.1` that older clients (paho's 3.1 mode) ask for.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// A WebSocket as a byte stream: reads return the payloads of binary messages in order,
/// each write is sent as one binary message (the connection writes a whole batch of packets
/// at once, then flushes).
#[derive(Debug)]
pub struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// What is left of the last binary message read.
    pending: Bytes,
}

impl<S> WsStream<S> {
    pub fn new(inner: WebSocketStream<S>) -> WsStream<S> {
        WsStream {
            inner,
            pending: Bytes::new(),
        }
    }
}

/// Settings for a server-side WebSocket carrying MQTT packets of up to `max_packet_size`.
///
/// tungstenite holds a whole message (all its frames) before handing any of it over, so the
/// message and frame bounds are what a socket can make the broker buffer, before CONNECT as
/// after: one packet of the largest size we accept, and the few bytes a client library may
/// add around it. A message holding several packets must fit the same bound.
pub fn server_config(max_packet_size: u32) -> WebSocketConfig {
    // tungstenite allocates its read buffer eagerly: keep it small, as an idle connection
    // should cost little; large messages still grow it as needed. Writes go out when the
    // connection flushes, which it does after every batch.
    let max_message = max_ws_message_size(max_packet_size);
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// The largest WebSocket message (and frame) accepted: `max_packet_size` plus a little room
/// for framing. A larger one closes the connection (WebSocket close code 1009).
pub fn max_ws_message_size(max_packet_size: u32) -> usize {
    (max_packet_size as usize).saturating_add(WS_MESSAGE_SLACK)
}

/// Room above `limits.max_packet_size` in a WebSocket message: the largest MQTT fixed header
/// is 5 bytes; the rest is margin for clients that pad.
const WS_MESSAGE_SLACK: usize = 64;

/// What to answer a client's Sec-WebSocket-Protocol with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subprotocol {
    /// The client offered none: no header.
    NoneOffered,
    Chosen(&'static str),
    /// The client offered only protocols that are not MQTT.
    Unsupported,
}

fn choose_subprotocol(request: &Request) -> Subprotocol {
    let offered: Vec<&str> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect();
    if offered.is_empty() {
        // A client that offers no subprotocol is served anyway: simple clients and test tools
        // often leave the header out, and what follows is MQTT or an MQTT error either way.
        return Subprotocol::NoneOffered;
    }
    SUBPROTOCOLS
        .iter()
        .find(|ours| {
            offered
                .iter()
                .any(|theirs| theirs.eq_ignore_ascii_case(ours))
        })
        .map_or(Subprotocol::Unsupported, |ours| Subprotocol::Chosen(ours))
}

/// The upgrade callback of a listener serving `path`: 404 for another path, 400 for a client
/// that offers subprotocols none of which is MQTT, otherwise the chosen subprotocol (if any)
/// in the response.
// The signature tungstenite's upgrade callback has; its error is the HTTP response to send.
#[allow(clippy::result_large_err)]
pub fn check_upgrade(
    path: &str,
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    if request.uri().path() != path {
        return Err(error_response(StatusCode::NOT_FOUND, "not found"));
    }
    match choose_subprotocol(request) {
        Subprotocol::Chosen(protocol) => {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(protocol),
            );
            Ok(response)
        }
        Subprotocol::NoneOffered => Ok(response),
        Subprotocol::Unsupported => Err(error_response(
            StatusCode::BAD_REQUEST,
            "unsupported subprotocol: offer mqtt",
        )),
    }
}

fn error_response(status: StatusCode, body: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(body.to_owned()));
    *response.status_mut() = status;
    response
}

fn to_io(error: tungstenite::Error) -> io::Error {
    match error {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::from(io::ErrorKind::BrokenPipe)
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.pending = data,
                // Pings are answered by tungstenite itself; pongs need nothing.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // MQTT goes in binary messages only; anything else closes the connection
                // [MQTT-6.0.0-1].
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "WebSocket text message: MQTT needs binary messages",
                    )))
                }
                // End of stream: the peer closed, or the connection is gone.
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )) => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.inner).poll_ready(cx)).map_err(to_io)?;
        Pin::new(&mut self.inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A Close frame; the peer's answer ends the stream for our reads.
        match ready!(Pin::new(&mut self.inner).poll_close(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, protocols: Option<&str>) -> Request {
        let mut builder = Request::builder().uri(path);
        if let Some(protocols) = protocols {
            builder = builder.header(header::SEC_WEBSOCKET_PROTOCOL, protocols);
        }
        builder.body(()).unwrap()
    }

    fn chosen(path: &str, protocols: Option<&str>) -> Result<Option<String>, u16> {
        check_upgrade("/mqtt", &request(path, protocols), Response::new(()))
            .map(|r| {
                r.headers()
                    .get(header::SEC_WEBSOCKET_PROTOCOL)
                    .map(|v| v.to_str().unwrap().to_owned())
            })
            .map_err(|e| e.status().as_u16())
    }

    #[test]
    fn path_and_subprotocol_are_checked() {
        assert_eq!(chosen("/mqtt", Some("mqtt")), Ok(Some("mqtt".to_owned())));
        assert_eq!(
            chosen("/mqtt", Some("mqttv3.1")),
            Ok(Some("mqttv3.1".to_owned()))
        );
        assert_eq!(
            chosen("/mqtt", Some("chat, mqttv3.1, MQTT")),
            Ok(Some("mqtt".to_owned()))
        );
        assert_eq!(chosen("/mqtt?x=1", None), Ok(None));
        assert_eq!(chosen("/mqtt", Some("chat")), Err(400));
        assert_eq!(chosen("/other", Some("mqtt")), Err(404));
        assert_eq!(chosen("/mqtt/", Some("mqtt")), Err(404));
    }
}
