//! A TCP relay that re-chunks what clients send, so a scenario proves the broker reads packets
//! whatever TCP does to them.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
