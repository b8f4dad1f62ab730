//! The byte stream a connection serves: a plain TCP socket, or anything else that reads and
//! writes bytes (TLS, WebSocket, secure WebSocket).
//!
//! Plain TCP stays a variant of its own so that an idle connection can wait for readiness
//! without holding a read buffer (`readable()`, then `try_read_buf`). Other streams have no
//! readiness call; they wait by reading one byte into the stream's own memory, and only then
//! does the connection reserve a read buffer and take what else is already there without
//! waiting. An idle TLS or WebSocket connection holds no read buffer of ours either.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Any stream a connection can serve besides plain TCP.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

pub enum Stream {
    Tcp(TcpStream),
    Other(Box<dyn ByteStream>),
}

/// What `Stream::wait_input` found.
pub enum Input {
    /// Bytes are waiting in the socket.
    Ready,
    /// This byte was read (other streams), maybe with more behind it.
    Byte(u8),
    /// The peer closed its side.
    Closed,
}

impl Stream {
    /// Waits until input is there, holding no read buffer. Cancel-safe: no byte is lost if
    /// another branch of a `select!` wins.
    pub async fn wait_input(&mut self) -> io::Result<Input> {
        match self {
            Stream::Tcp(stream) => stream.readable().await.map(|()| Input::Ready),
            Stream::Other(stream) => match stream.read_u8().await {
                Ok(byte) => Ok(Input::Byte(byte)),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Input::Closed),
                Err(e) => Err(e),
            },
        }
    }

    /// Reads what is available now into `buf`'s spare capacity, without waiting:
    /// `WouldBlock` if nothing is.
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.try_read_buf(buf),
            Stream::Other(stream) => {
                // One poll with a waker that does nothing: the next `wait_input` polls with
                // the task's own waker, which registers it again.
                let mut cx = Context::from_waker(Waker::noop());
                match tokio_util::io::poll_read_buf(Pin::new(stream), &mut cx, buf) {
                    Poll::Ready(result) => result,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }

    /// Writes all of `buf` and flushes (a WebSocket sends its message on flush; TLS and TCP
    /// have written already).
    pub async fn write_all_flush(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.write_all_buf(buf).await,
            Stream::Other(stream) => {
                stream.write_all_buf(buf).await?;
                stream.flush().await
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Other(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Other(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Other(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Other(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}
