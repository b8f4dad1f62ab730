//! A minimal HTTP/1.1 client for the broker's HTTP side: one request per connection, and a
//! reader of server-sent events. Enough to test every endpoint without a client library.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::TIMEOUT;

/// The `http.token` of [`super::TestBroker::with_http`].
pub const TOKEN: &str = "s3cret";

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// The `error` of a JSON error reply, checking it is one with `status`.
    pub fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {}", self.body))
            .to_owned()
    }
}

/// Sends one request; `auth` is the whole Authorization header value.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> Reply {
    send(
        addr,
        Req {
            method,
            path,
            auth,
            body,
            ..Req::default()
        },
    )
    .await
}

/// One request, in full.
#[derive(Debug, Clone, Copy)]
pub struct Req<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The whole Authorization header value.
    pub auth: Option<&'a str>,
    pub body: Option<&'a str>,
    /// The Host header: `Some("")` sends none, `None` the address connected to.
    pub host: Option<&'a str>,
    /// The local address to connect from (e.g. 127.0.0.2, to be another client).
    pub from: Option<std::net::IpAddr>,
}

impl Default for Req<'_> {
    fn default() -> Self {
        Req {
            method: "GET",
            path: "/",
            auth: None,
            body: None,
            host: None,
            from: None,
        }
    }
}

pub async fn send(addr: SocketAddr, req: Req<'_>) -> Reply {
    let Req {
        method,
        path,
        auth,
        body,
        host,
        from,
    } = req;
    tokio::time::timeout(TIMEOUT * 4, async {
        let mut stream = match from {
            Some(ip) => {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::new(ip, 0)).unwrap();
                socket.connect(addr).await.expect("HTTP connect")
            }
            None => TcpStream::connect(addr).await.expect("HTTP connect"),
        };
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        match host {
            None => head.push_str(&format!("Host: {addr}\r\n")),
            Some("") => {}
            Some(host) => head.push_str(&format!("Host: {host}\r\n")),
        }
        head.push_str("Connection: close\r\n");
        if let Some(auth) = auth {
            head.push_str(&format!("Authorization: {auth}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || matches!(method, "POST" | "PUT") {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        parse(&raw)
    })
    .await
    .unwrap_or_else(|_| panic!("HTTP {method} {path} timed out"))
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, None, None).await
}

fn parse(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body).0;
    }
    Reply {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

/// The data of the complete chunks in `raw`, and how many bytes of `raw` they took.
fn dechunk(raw: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = raw[at..].windows(2).position(|w| w == b"\r\n") else {
            return (out, at);
        };
        let size_text = String::from_utf8_lossy(&raw[at..at + eol]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("chunk size");
        let start = at + eol + 2;
        if size == 0 || raw.len() < start + size + 2 {
            return (out, if size == 0 { raw.len() } else { at });
        }
        out.extend_from_slice(&raw[start..start + size]);
        at = start + size + 2;
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: String,
    pub data: String,
}

/// A live `text/event-stream` response being read.
pub struct SseStream {
    stream: TcpStream,
    /// Bytes read and not yet dechunked.
    raw: Vec<u8>,
    /// Dechunked text not yet split into events.
    text: String,
}

impl SseStream {
    pub async fn open(addr: SocketAddr, path: &str) -> SseStream {
        let mut stream = TcpStream::connect(addr).await.expect("HTTP connect");
        let head =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let split = loop {
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
                .await
                .expect("SSE headers timed out")
                .unwrap();
            assert!(n > 0, "SSE stream closed before its headers");
            raw.extend_from_slice(&buf[..n]);
            if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break split;
            }
        };
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("text/event-stream"),
            "{head}"
        );
        SseStream {
            stream,
            raw: raw[split + 4..].to_vec(),
            text: String::new(),
        }
    }

    /// The next event named `name`, within `limit`.
    pub async fn next_named(&mut self, name: &str, limit: Duration) -> Sse {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while let Some(event) = self.take_event() {
                if event.event == name {
                    return event;
                }
            }
            let mut buf = [0u8; 16384];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no `{name}` event within {limit:?}"))
                .unwrap();
            assert!(n > 0, "SSE stream closed");
            self.raw.extend_from_slice(&buf[..n]);
            let (data, used) = dechunk(&self.raw);
            self.raw.drain(..used);
            self.text.push_str(&String::from_utf8_lossy(&data));
        }
    }

    fn take_event(&mut self) -> Option<Sse> {
        let end = self.text.find("\n\n")?;
        let block: String = self.text.drain(..end + 2).collect();
        let mut event = Sse {
            event: "message".into(),
            data: String::new(),
        };
        for line in block.lines() {
            if let Some(name) = line.strip_prefix("event:") {
                event.event = name.trim().to_owned();
            } else if let Some(data) = line.strip_prefix("data:") {
                if !event.data.is_empty() {
                    event.data.push('\n');
                }
                event.data.push_str(data.strip_prefix(' ').unwrap_or(data));
            }
        }
        Some(event)
    }
}
