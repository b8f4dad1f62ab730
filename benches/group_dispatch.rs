//! What one message costs a shared group, by group size: `SharedGroup::dispatch` choosing a
//! member (through the group's Wasm strategy, or the native round robin) and handing the
//! message to it, with 4, 64 and 1,024 members. Members are in-memory mailboxes that always
//! have room and drop what they are handed, so the numbers are the group's own work with no
//! socket, task wake-up or acknowledgement in them (those are in `bench/compare.sh`'s scale
//! curves).
//!
//! Messages cycle through 256 precomputed ones: 64 topics from 16 publishers, QoS 1, 64 B.
//!
//! Run: `cargo bench --bench group_dispatch -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sharq::broker::delivery::{Delivery, Enqueued, GroupId, Mailbox, QueueLimits};
use sharq::broker::events::EventFeed;
use sharq::broker::message::{Message, SessionId};
use sharq::broker::shared::group::GroupSetup;
use sharq::broker::shared::Membership;
use sharq::broker::shared::{BacklogIndex, Dispatched, GroupLimits, SharedGroup};
use sharq::config::SharedConfig;
use sharq::packet::{Publish, PublishProperties, QoS, SubscriptionOptions};
use sharq::strategy::{Dispatcher, MemberLoad, StrategyRegistry};

const SIZES: [u64; 3] = [4, 64, 1024];
const STRATEGIES: [&str; 4] = [
    "round_robin",
    "hash_clientid",
    "hash_topic",
    "native_round_robin",
];
const MESSAGES: usize = 256;

/// A member that always has room and lets go of what it is handed.
#[derive(Debug)]
struct Sink {
    id: SessionId,
    client_id: ByteString,
}

impl Mailbox for Sink {
    fn session_id(&self) -> SessionId {
        self.id
    }
    fn client_id(&self) -> &ByteString {
        &self.client_id
    }
    fn enqueue(&self, delivery: Delivery, _limits: QueueLimits) -> Enqueued {
        drop(black_box(delivery));
        Enqueued::Queued
    }
    fn load(&self) -> MemberLoad {
        MemberLoad {
            inflight: 0,
            capacity: 64,
            online: true,
        }
    }
    fn take_overdue(&self, _group: GroupId, _deadline: std::time::Instant) -> Vec<Delivery> {
        Vec::new()
    }
}

const LIMITS: GroupLimits = GroupLimits {
    max_messages: 100_000,
    max_bytes: 1 << 30,
    member_queue: QueueLimits {
        max_messages: 100_000,
        max_bytes: 1 << 30,
    },
};

fn group(registry: &StrategyRegistry, strategy: &str, members: u64) -> Arc<SharedGroup> {
    let name = ByteString::from("bench");
    let dispatcher = if strategy == "native_round_robin" {
        Dispatcher::native(name.clone())
    } else {
        let resolved = registry
            .resolve(strategy)
            .unwrap_or_else(|| panic!("no strategy `{strategy}`"));
        Dispatcher::build(&name, Some(resolved)).unwrap()
    };
    let group = Arc::new(SharedGroup::new(
        1,
        name,
        "devices/#".into(),
        GroupSetup {
            dispatcher,
            settings: Default::default(),
        },
        None,
        EventFeed::default(),
        Arc::new(BacklogIndex::default()),
    ));
    for id in 1..=members {
        group.add_member(
            Arc::new(Sink {
                id,
                client_id: format!("worker-{id}").into(),
            }),
            Membership {
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
                identifier: None,
                weight: 1,
                user_properties: Vec::new(),
                read: None,
            },
        );
    }
    group
}

fn messages() -> Vec<Arc<Message>> {
    (0..MESSAGES)
        .map(|i| {
            let topic = ByteString::from(format!("devices/dev-{}/telemetry", i % 64));
            let publish = Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: topic.clone(),
                packet_id: Some(1),
                payload: Bytes::from(vec![0x5a; 64]),
                properties: PublishProperties::default(),
            };
            let publisher = i as u64 % 16;
            Message::from_publish(
                publish,
                topic,
                Some(10_000 + publisher),
                Some(format!("publisher-{publisher}").into()),
            )
        })
        .collect()
}

fn dispatch(c: &mut Criterion) {
    // A strategy per name, each its own group rule; no disk cache, so nothing is left behind.
    let config: SharedConfig = toml::from_str(
        r#"
        plugin_cache_dir = ""
        [[groups]]
        name = "round_robin"
        strategy = "round_robin"
        [[groups]]
        name = "hash_clientid"
        strategy = "hash_clientid"
        [[groups]]
        name = "hash_topic"
        strategy = "hash_topic"
        "#,
    )
    .unwrap();
    let registry = StrategyRegistry::new(&config, None).unwrap();
    let msgs = messages();
    for strategy in STRATEGIES {
        let mut bench = c.benchmark_group(format!("group_dispatch/{strategy}"));
        for members in SIZES {
            let group = group(&registry, strategy, members);
            let mut i = 0usize;
            bench.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
                b.iter(|| {
                    let message = msgs[i % MESSAGES].clone();
                    i = i.wrapping_add(1);
                    let placed = group.dispatch(message, LIMITS);
                    debug_assert_eq!(placed, Dispatched::Accepted);
                    black_box(placed)
                })
            });
            // The strategy placed them, not the fallback.
            if strategy != "native_round_robin" {
                let counters = &group.strategy_counters;
                assert_eq!(
                    counters.fallbacks.total(),
                    0,
                    "{strategy} × {members}: fell back"
                );
            }
        }
        bench.finish();
    }
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
