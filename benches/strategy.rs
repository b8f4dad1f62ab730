//! Per-selection cost of every built-in strategy, as the embedded Wasm component called through
//! `WasmInstance::select` (what the broker does per message) and as the same logic linked
//! natively (`sharq_strategies::builtin`), plus the cost of pushing a member's state
//! (`member-load`).
//!
//! Setup: one group of 8 online members (`worker-0` .. `worker-7`, weights 1..4, window 64).
//! Messages cycle through 256 precomputed ones: 64 topics `devices/dev-{i}/telemetry` from 16
//! publishers, QoS 1, 64-byte payload, hashes computed with the host's `key_hash` (xxh3).
//! `hash_topic_levels` (pattern `devices/{id}/#`) asks for the topic, so its Wasm variant goes
//! through `select-full` with the topic string copied into the guest, as in the broker.
//!
//! Run: `cargo bench --bench strategy -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::sync::Arc;

use bytestring::ByteString;
use criterion::{criterion_group, criterion_main, Criterion};
use sharq::strategy::builtin;
use sharq::strategy::{
    key_hash, MemberInfo, MemberLoad, MessageView, SandboxLimits, WasmHost, WasmInstance,
};
use sharq_strategies::{Member, MsgMeta, Strategy, BUILTIN_NAMES};

const MEMBERS: u64 = 8;
const MESSAGES: usize = 256;
const CAPACITY: u32 = 64;

struct Message {
    topic: String,
    publisher: String,
    payload: Vec<u8>,
    topic_hash: u64,
    publisher_hash: u64,
}

impl Message {
    fn view(&self) -> MessageView<'_> {
        MessageView {
            topic: &self.topic,
            publisher: &self.publisher,
            payload: &self.payload,
            topic_hash: self.topic_hash,
            key_hash: self.topic_hash,
            publisher_hash: self.publisher_hash,
            qos: 1,
            retain: false,
            user_properties: &[],
            content_type: None,
        }
    }

    fn meta(&self) -> MsgMeta {
        MsgMeta {
            topic_hash: self.topic_hash,
            publisher_hash: self.publisher_hash,
            qos: 1,
            retain: false,
            payload_len: self.payload.len() as u32,
            key_hash: self.topic_hash,
        }
    }
}

fn messages() -> Vec<Message> {
    (0..MESSAGES)
        .map(|i| {
            let topic = format!("devices/dev-{}/telemetry", i % 64);
            let publisher = format!("publisher-{}", i % 16);
            Message {
                topic_hash: key_hash(topic.as_bytes()),
                publisher_hash: key_hash(publisher.as_bytes()),
                topic,
                publisher,
                payload: vec![0x5a; 64],
            }
        })
        .collect()
}

fn member(i: u64) -> Member {
    Member {
        id: 1000 + i,
        client_id: format!("worker-{i}"),
        weight: 1 + (i % 4) as u32,
        subscribed_at_ms: 1_700_000_000_000 + i,
    }
}

/// Params that make each strategy do its real work (the others need none).
fn params(name: &str) -> Vec<(String, String)> {
    match name {
        "hash_topic_levels" => vec![("pattern".into(), "devices/{id}/#".into())],
        "random" | "sticky" => vec![("seed".into(), "42".into())],
        _ => Vec::new(),
    }
}

fn wasm_instance(host: &WasmHost, name: &str) -> WasmInstance {
    let bytes = builtin::component(name).unwrap_or_else(|| panic!("no built-in `{name}`"));
    let plugin = host.load(name, bytes).unwrap();
    let mut instance = host.instantiate(&plugin, "bench", &params(name)).unwrap();
    for i in 0..MEMBERS {
        let m = member(i);
        instance
            .member_joined(&MemberInfo {
                id: m.id,
                client_id: ByteString::from(m.client_id),
                weight: m.weight,
                subscribed_at_ms: m.subscribed_at_ms,
                user_properties: Vec::new(),
            })
            .unwrap();
        instance
            .member_load(
                m.id,
                MemberLoad {
                    inflight: 0,
                    capacity: CAPACITY,
                    online: true,
                },
            )
            .unwrap();
    }
    instance
}

fn native_instance(name: &str) -> Box<dyn Strategy + Send> {
    let mut s = sharq_strategies::builtin(name).unwrap();
    s.init("bench", &params(name)).unwrap();
    for i in 0..MEMBERS {
        let m = member(i);
        let id = m.id;
        s.member_joined(m);
        s.member_load(id, 0, CAPACITY, true);
    }
    s
}

fn selection(c: &mut Criterion, host: &WasmHost) {
    let msgs = Arc::new(messages());
    for name in BUILTIN_NAMES {
        let mut group = c.benchmark_group(format!("select/{name}"));

        let mut wasm = wasm_instance(host, name);
        // Sanity: the guest answers with one of our members, not a fallback.
        let first = wasm.select(&msgs[0].view()).unwrap();
        assert!(
            matches!(first, Some(id) if (1000..1000 + MEMBERS).contains(&id)),
            "{name}: wasm answered {first:?}"
        );
        let mut i = 0usize;
        group.bench_function("wasm", |b| {
            b.iter(|| {
                let m = &msgs[i % MESSAGES];
                i = i.wrapping_add(1);
                black_box(wasm.select(black_box(&m.view())).unwrap())
            })
        });

        let mut native = native_instance(name);
        let needs_topic = name == &"hash_topic_levels";
        let mut i = 0usize;
        group.bench_function("native", |b| {
            b.iter(|| {
                let m = &msgs[i % MESSAGES];
                i = i.wrapping_add(1);
                let meta = m.meta();
                let answer = if needs_topic {
                    native.select_full(black_box(&m.topic), "", None, black_box(&meta))
                } else {
                    native.select(black_box(&meta))
                };
                black_box(answer)
            })
        });
        group.finish();
    }
}

/// `member-load`: one member's window flips between full and not full, as the broker pushes it
/// (only on a change of online/full).
fn membership(c: &mut Criterion, host: &WasmHost) {
    for name in ["round_robin", "least_inflight", "weighted"] {
        let mut group = c.benchmark_group(format!("member_load/{name}"));
        let mut wasm = wasm_instance(host, name);
        let mut flip = false;
        group.bench_function("wasm", |b| {
            b.iter(|| {
                flip = !flip;
                let load = MemberLoad {
                    inflight: if flip { CAPACITY } else { 10 },
                    capacity: CAPACITY,
                    online: true,
                };
                wasm.member_load(black_box(1003), black_box(load)).unwrap()
            })
        });
        let mut native = native_instance(name);
        let mut flip = false;
        group.bench_function("native", |b| {
            b.iter(|| {
                flip = !flip;
                let inflight = if flip { CAPACITY } else { 10 };
                native.member_load(black_box(1003), black_box(inflight), CAPACITY, true)
            })
        });
        group.finish();
    }
}

fn benches(c: &mut Criterion) {
    let host = WasmHost::new(SandboxLimits {
        memory_bytes: 16 << 20,
        deadline_ticks: 100,
        init_deadline_ticks: 1000,
    })
    .unwrap();
    selection(c, &host);
    membership(c, &host);
}

criterion_group!(strategy, benches);
criterion_main!(strategy);
