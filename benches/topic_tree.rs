//! Topic-tree benchmarks: publish-path matching against 10k subscriptions, and subscription churn.
//!
//! cargo bench --bench topic_tree -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sharq::topic::TopicTree;

/// 10,000 filters shaped like a fleet deployment: mostly per-device literal filters, per-site
/// `#` subtrees, the inner filters of shared work queues (`$share/workers/jobs/{k}/+` is stored
/// as `jobs/{k}/+`), `$SYS` monitoring, and a handful of fleet-wide wildcards that every matching
/// walk must also follow.
fn subscriptions() -> Vec<String> {
    let mut v = Vec::with_capacity(10_000);
    v.extend((0..6000).map(|i| format!("devices/{i}/telemetry")));
    v.extend((0..1000).map(|i| format!("devices/{i}/cmd/#")));
    v.extend((0..1500).map(|n| format!("site/{n}/#")));
    v.extend((0..1000).map(|k| format!("jobs/{k}/+")));
    v.extend((0..496).map(|k| format!("$SYS/broker/{k}/load")));
    v.extend(
        [
            "devices/+/status",
            "devices/+/telemetry",
            "site/+/alarm",
            "+/heartbeat",
        ]
        .map(String::from),
    );
    assert_eq!(v.len(), 10_000);
    v
}

fn build(filters: &[String]) -> TopicTree<u32> {
    let mut tree = TopicTree::new();
    for (i, f) in filters.iter().enumerate() {
        tree.get_or_insert_with(f, || i as u32);
    }
    tree
}

fn count_matches(tree: &TopicTree<u32>, topic: &str) -> usize {
    let mut n = 0;
    tree.for_each_match(topic, |v| {
        black_box(v);
        n += 1;
    });
    n
}

fn bench_match(c: &mut Criterion) {
    let tree = build(&subscriptions());
    let mut group = c.benchmark_group("topic_tree/match_10k_subs");
    // (topic, expected number of matching filters), so a broken tree cannot bench fast.
    let cases = [
        ("devices/1234/telemetry", 2),
        ("devices/1234/status", 1),
        ("site/42/floor/3/temp", 1),
        ("jobs/7/run", 1),
        ("$SYS/broker/3/load", 1),
        ("nomatch/x/y", 0),
    ];
    for (topic, expected) in cases {
        assert_eq!(count_matches(&tree, topic), expected, "{topic}");
        group.bench_function(topic, |b| b.iter(|| count_matches(&tree, black_box(topic))));
    }

    let mixed: Vec<String> = (0..1000)
        .map(|i| match i % 5 {
            0 | 1 => format!("devices/{}/telemetry", i * 7 % 6000),
            2 => format!("devices/{}/status", i % 6000),
            3 => format!("site/{}/floor/{}/temp", i % 1500, i % 9),
            _ => format!("jobs/{}/run", i % 1000),
        })
        .collect();
    group.throughput(Throughput::Elements(mixed.len() as u64));
    group.bench_function("mixed_1000_topics", |b| {
        b.iter(|| {
            mixed
                .iter()
                .map(|t| count_matches(&tree, black_box(t)))
                .sum::<usize>()
        })
    });
    group.finish();
}

fn bench_churn(c: &mut Criterion) {
    let filters = subscriptions();
    let mut group = c.benchmark_group("topic_tree/churn_10k_filters");
    group.throughput(Throughput::Elements(filters.len() as u64));
    group.bench_function("insert", |b| {
        b.iter_batched(
            TopicTree::<u32>::new,
            |mut tree| {
                for (i, f) in filters.iter().enumerate() {
                    tree.get_or_insert_with(f, || i as u32);
                }
                // Returned so that dropping the tree is not timed.
                tree
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("insert_then_remove", |b| {
        b.iter(|| {
            let mut tree = build(&filters);
            for f in &filters {
                black_box(tree.remove(f));
            }
            assert!(tree.is_empty());
        })
    });
    group.finish();
}

criterion_group!(benches, bench_match, bench_churn);
criterion_main!(benches);
