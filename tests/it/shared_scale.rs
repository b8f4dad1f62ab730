//! Shared subscriptions at scale: 100k memberships across 10k groups, subscribed and
//! unsubscribed in batches; asserts completion and bookkeeping, never timing.

use crate::common::*;
use sharq::packet::{QoS, ReasonCode};

const CLIENTS: usize = 10;
const GROUPS: usize = 10_000;
const BATCH: usize = 500;

fn filters() -> Vec<String> {
    (0..GROUPS)
        .map(|i| format!("$share/g{i}/scale/{}/+", i % 97))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_scale_100k_subscriptions_10k_groups() {
    // Groups linger a second after their last member: the end checks 10k linger timers too.
    let broker = TestBroker::with(|c| c.shared.group_linger_secs = 1).await;
    let addr = broker.addr();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let (mut client, _) =
                RawClient::connect_opts(addr, ConnectOpts::new(V5, &format!("scale{c}"))).await;
            let all = filters();
            for batch in all.chunks(BATCH) {
                let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
                let codes = client.subscribe_many(&refs, QoS::AtLeastOnce).await;
                assert_eq!(codes, vec![ReasonCode::GRANTED_QOS_1; batch.len()]);
            }
            client
        }));
    }
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.unwrap());
    }
    let router = &broker.state().router;
    assert_eq!(router.subscription_count(), CLIENTS * GROUPS);
    assert_eq!(router.groups().len(), GROUPS);
    let sample = router.group("g1234", "scale/70/+").unwrap();
    assert_eq!(sample.member_count(), CLIENTS);

    // One message per group filter still goes to exactly one member.
    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "pub")).await;
    publisher
        .publish("scale/70/x", &seq_payload(1), QoS::AtLeastOnce, false)
        .await;
    let dispatched = || -> u64 {
        router
            .groups()
            .iter()
            .map(|g| {
                g.counters
                    .dispatched
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum()
    };
    // Groups whose filter is scale/70/+ : i % 97 == 70.
    let matching = (0..GROUPS).filter(|i| i % 97 == 70).count() as u64;
    // The PUBACK does not promise the dispatch is complete, only that it will be.
    wait_until(TIMEOUT, "every matching group dispatched", || {
        dispatched() >= matching
    })
    .await;
    assert_eq!(dispatched(), matching);

    let mut tasks = Vec::new();
    for mut client in clients {
        tasks.push(tokio::spawn(async move {
            let all = filters();
            for batch in all.chunks(BATCH) {
                let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
                client.unsubscribe(&refs).await;
            }
            client
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(router.subscription_count(), 0);
    wait_until(TIMEOUT, "every lingering group ended", || {
        router.groups().is_empty()
    })
    .await;
}
