//! The codec's hot path: decoding and encoding a PUBLISH with a 64-byte payload, 1000 packets
//! per iteration, reported both as bytes/s and packets/s.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sharq::codec::{encode, Decoder};
use sharq::packet::{Packet, ProtocolVersion, Publish, QoS};

const PACKETS: usize = 1000;

fn publish() -> Packet {
    Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: "sensors/building-7/floor-3/temperature".into(),
        packet_id: Some(4242),
        payload: Bytes::from(vec![0x5a; 64]),
        ..Publish::default()
    })
}

fn stream(version: ProtocolVersion) -> BytesMut {
    let p = publish();
    let mut buf = BytesMut::new();
    for _ in 0..PACKETS {
        encode(&p, version, &mut buf).unwrap();
    }
    buf
}

const VERSIONS: [(&str, ProtocolVersion); 2] = [
    ("v3.1.1", ProtocolVersion::V3_1_1),
    ("v5", ProtocolVersion::V5),
];

fn benches(c: &mut Criterion) {
    for (group_name, bytes_unit) in [("publish64_bytes", true), ("publish64_packets", false)] {
        let mut group = c.benchmark_group(group_name);
        for (name, version) in VERSIONS {
            let wire = stream(version);
            group.throughput(if bytes_unit {
                Throughput::Bytes(wire.len() as u64)
            } else {
                Throughput::Elements(PACKETS as u64)
            });
            group.bench_function(format!("decode/{name}"), |b| {
                b.iter_batched_ref(
                    || wire.clone(),
                    |buf| {
                        let mut d = Decoder::with_version(version, 1 << 20);
                        while let Some(p) = d.decode(buf).unwrap() {
                            black_box(p);
                        }
                    },
                    BatchSize::SmallInput,
                )
            });
            let p = publish();
            let mut out = BytesMut::with_capacity(wire.len());
            group.bench_function(format!("encode/{name}"), |b| {
                b.iter(|| {
                    out.clear();
                    for _ in 0..PACKETS {
                        encode(black_box(&p), version, &mut out).unwrap();
                    }
                    black_box(&out);
                })
            });
        }
        group.finish();
    }
}

criterion_group!(codec, benches);
criterion_main!(codec);
