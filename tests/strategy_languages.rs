//! The same strategy written in Rust, C, Python and JavaScript (examples/strategies/level_hash)
//! distributes one message stream identically through the real broker.
//!
//! The test builds the four components from source with the project's toolchains (installed by
//! `.ci/install-test-tools`; a missing toolchain fails the test, it is never skipped), gives
//! each its own group in one broker, subscribes three members per group in the same order,
//! publishes one stream whose topics carry the key at level 1, and checks that every group sent
//! every topic to the member the algorithm predicts (computed here independently) — so the four
//! agree with each other and with the specification.

mod shared_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use shared_support::*;
use sharq::packet::QoS;

const LANGUAGES: [&str; 4] = ["rust", "c", "python", "js"];
const MEMBERS: usize = 3;
const KEYS: u32 = 40;
const MESSAGES: u32 = 240;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the four components; returns the directory holding them.
fn build_examples() -> PathBuf {
    let out = repo().join("target").join("plugin-examples");
    let mut command = Command::new(repo().join("examples/strategies/level_hash/build-all.sh"));
    // The scripts put tools and outputs under the cargo target directory; without
    // CARGO_TARGET_DIR they use the repo's `target/`, which is where `out` points.
    let out = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("plugin-examples"),
        None => out,
    };
    command.env_remove("OUT_DIR");
    let output = command.output().expect("run build-all.sh");
    assert!(
        output.status.success(),
        "building the example strategies failed (are the toolchains installed? run \
         .ci/install-test-tools):\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// The algorithm of examples/strategies/level_hash/README.md, written once more here.
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

fn topic(seq: u32) -> String {
    format!("dist/key-{}/reading", seq % KEYS)
}

fn expected_member(topic: &str) -> usize {
    let key = topic.split('/').nth(1).unwrap_or(topic);
    fnv1a32(key.as_bytes()) as usize % MEMBERS
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_languages_distribute_identically() {
    let dir = tokio::task::spawn_blocking(build_examples)
        .await
        .expect("build task");
    let mut toml = String::from("[shared]\nplugin_cache_dir = ");
    toml.push_str(&format!("{:?}\n", dir.join("cache").display().to_string()));
    for language in LANGUAGES {
        let path = dir.join(format!("level_hash_{language}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        let runtime = matches!(language, "python" | "js");
        toml.push_str(&format!(
            "[[shared.groups]]\nname = \"lang-{language}\"\nplugin = {:?}\nparams = {{ level = 1 }}\n\
             wasi = {runtime}\nmemory_mib = {}\n",
            path.display().to_string(),
            if runtime { 96 } else { 4 },
        ));
    }
    let parsed = sharq::Config::from_toml(&toml, "test").expect("test config");
    // Loading compiles the Python and JavaScript components (seconds, or a cache hit).
    let (broker, addr) = start_broker(move |config| {
        config.shared = parsed.shared;
        // Windows never fill here, so the choice is the hash alone.
        config.limits.max_inflight = 1000;
    })
    .await;

    let mut members: BTreeMap<&str, Vec<Member>> = BTreeMap::new();
    for language in LANGUAGES {
        for index in 0..MEMBERS {
            // Joined in order, so member ids (session ids, a counter) ascend with `index`,
            // which is the candidate order the algorithm sorts by.
            let (mut client, _) = RawClient::connect(
                addr,
                ConnectOpts::new(V5, &format!("{language}-member-{index}")),
            )
            .await;
            client
                .subscribe(&format!("$share/lang-{language}/dist/#"), QoS::AtLeastOnce)
                .await;
            members
                .entry(language)
                .or_default()
                .push(Member::spawn(client, AckMode::Ack));
        }
        let group = broker
            .state()
            .router
            .group(&format!("lang-{language}"), "dist/#")
            .expect("group exists");
        assert!(
            group.strategy_label().contains(&format!("level_hash_{language}")),
            "group lang-{language} runs {}",
            group.strategy_label()
        );
    }

    let (mut publisher, _) = RawClient::connect(addr, ConnectOpts::new(V5, "publisher")).await;
    for seq in 0..MESSAGES {
        publisher
            .publish(&topic(seq), seq_payload(seq), QoS::AtLeastOnce, false)
            .await;
    }
    let total = |language: &str| -> usize { members[language].iter().map(|m| m.got().len()).sum() };
    for language in LANGUAGES {
        wait_until(WAIT * 6, &format!("all messages reach lang-{language}"), || {
            total(language) >= MESSAGES as usize
        })
        .await;
    }

    let mut counts: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for language in LANGUAGES {
        for (index, member) in members[language].iter().enumerate() {
            for got in member.got() {
                assert_eq!(
                    index,
                    expected_member(&got.publish.topic),
                    "lang-{language}: topic {} went to member {index}",
                    got.publish.topic
                );
            }
        }
        counts.insert(
            language,
            members[language].iter().map(|m| m.got().len()).collect(),
        );
        let group = broker
            .state()
            .router
            .group(&format!("lang-{language}"), "dist/#")
            .expect("group exists");
        let fallbacks = group
            .strategy_counters
            .fallbacks
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(fallbacks, 0, "lang-{language}: the strategy failed or declined");
    }
    let expected: Vec<usize> = (0..MEMBERS)
        .map(|index| (0..MESSAGES).filter(|seq| expected_member(&topic(*seq)) == index).count())
        .collect();
    for (language, got) in &counts {
        assert_eq!(got, &expected, "per-member counts of lang-{language}");
    }
    // The stream must exercise every member, or equality would prove little.
    assert!(expected.iter().all(|n| *n > 0), "{expected:?}");
}
