//! The cost of ACL checks on the publish path: a connection's decision for a topic with no ACL,
//! with a 1,000-rule ACL from its per-connection cache (every message after a topic's first),
//! and the uncached match that a topic's first message (or the first after a reload) pays.
//!
//! cargo bench --bench acl -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;

use bytestring::ByteString;
use criterion::{criterion_group, criterion_main, Criterion};
use sharq::broker::acl::{Acl, AclHandle, Identity, PublishCache};

/// 1,000 rules: 100 users with 8 topic rules and a share rule each, and 100 patterns.
fn acl_file() -> String {
    let mut text = String::from("topic read public/#\n");
    for user in 0..100 {
        text.push_str(&format!("user user{user}\n"));
        for rule in 0..4 {
            text.push_str(&format!("topic readwrite tenants/{user}/area{rule}/#\n"));
            text.push_str(&format!("topic read shared/{user}/feed{rule}/+\n"));
        }
        text.push_str(&format!("share team-{user}-*\n"));
    }
    for pattern in 0..99 {
        text.push_str(&format!("pattern write devices/%c/stream{pattern}\n"));
    }
    text
}

fn bench(c: &mut Criterion) {
    let text = acl_file();
    let rules = text.lines().filter(|l| !l.starts_with("user")).count();
    assert_eq!(rules, 1000);
    let acl = Acl::parse(&text, "bench").unwrap();
    let who = Identity {
        username: Some("user57"),
        client_id: "device-9",
    };
    let topic = ByteString::from("devices/device-9/stream98");
    let mut group = c.benchmark_group("acl_publish_check");

    let none = AclHandle::new(None);
    let mut cache = PublishCache::default();
    group.bench_function("no_acl", |b| {
        b.iter(|| black_box(cache.may_publish(&none, who, black_box(&topic))))
    });

    let handle = AclHandle::new(Some(Acl::parse(&text, "bench").unwrap()));
    let mut cache = PublishCache::default();
    group.bench_function("1000_rules_cached", |b| {
        b.iter(|| black_box(cache.may_publish(&handle, who, black_box(&topic))))
    });

    group.bench_function("1000_rules_uncached", |b| {
        b.iter(|| black_box(acl.may_publish(who, black_box(&topic))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
