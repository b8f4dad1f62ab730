//! Arbitrary bytes as the first thing a client sends, through the broker's whole connection
//! layer (the CONNECT phase, authentication, the CONNACK or refusal, the goodbye): a real
//! broker on a loopback port, one TCP connection per input. Nothing may panic (a panic in any
//! broker task aborts the process, which the fuzzer reports), every connection must end by
//! itself once the input is sent, and the first thing the broker answers is a CONNACK.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sharq::codec::Decoder;
use sharq::packet::ProtocolVersion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

struct Target {
    runtime: Runtime,
    addr: SocketAddr,
}

/// One broker for the whole run: memory only, users with passwords so authentication runs,
/// and a short CONNECT deadline so an input that stops halfway ends quickly.
fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default_hook(info);
            std::process::abort();
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let config = sharq::Config::from_toml(
            "[server]\nlisteners = [\"127.0.0.1:0\"]\nlog = \"error\"\nsys_interval_secs = 0\n\
             [limits]\nconnect_timeout_secs = 1\nmax_packet_size = 65536\n\
             [auth]\nallow_anonymous = true\nusers = { fuzz = \"fuzz\" }\n\
             [http]\nlisten = \"\"\n[storage]\ndir = \"\"\n",
            "fuzz",
        )
        .expect("the fuzz config");
        let broker = runtime
            .block_on(sharq::Broker::start(config))
            .expect("the broker starts");
        let addr = broker.local_addrs()[0];
        // Serves until the process ends.
        std::mem::forget(broker);
        Target { runtime, addr }
    })
}

fuzz_target!(|data: &[u8]| {
    let target = target();
    target.runtime.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(target.addr)
            .await
            .expect("the broker accepts");
        // The broker may close before reading everything; that is an answer, not a failure.
        let _ = stream.write_all(data).await;
        let _ = stream.shutdown().await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
        assert!(read.await.is_ok(), "the connection did not end by itself");
        // Nothing comes before a CONNACK, and a CONNACK (3.1.1 or v5) is what comes first.
        if let Some(&first) = answer.first() {
            assert_eq!(first, 0x20, "the first answer is no CONNACK: {answer:02x?}");
            let decodes = [ProtocolVersion::V5, ProtocolVersion::V3_1_1]
                .into_iter()
                .any(|version| {
                    let mut buf = BytesMut::from(&answer[..]);
                    Decoder::with_version(version, u32::MAX)
                        .decode(&mut buf)
                        .is_ok_and(|packet| packet.is_some())
                });
            assert!(decodes, "an undecodable CONNACK: {answer:02x?}");
        }
    });
});
