//! The same strategy written in Rust, C, Python and JavaScript (examples/strategies/level_hash)
//! distributes one message stream identically through the real broker.
//!
//! The test builds the four components from source with the project's toolchains (installed by
//! `.ci/install-test-tools`; a missing toolchain fails the test, it is never skipped), gives
//! each its own group in one broker, subscribes three members per group in the same order,
//! publishes one stream whose topics carry the key at level 1, and checks that every group sent
//! every topic to the member the algorithm predicts (computed here independently) — so the four
//! agree with each other and with the specification.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::*;
use sharq::packet::QoS;

const LANGUAGES: [&str; 4] = ["rust", "c", "python", "js"];
const MEMBERS: usize = 3;
const KEYS: u32 = 40;
const MESSAGES: u32 = 240;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the four components once per test binary; returns the directory holding them.
fn examples() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let _serial = toolchain_builds();
        let script = repo().join("examples/strategies/level_hash/build-all.sh");
        // The scripts put tools and outputs under the cargo target directory (the repo's
        // `target/` unless CARGO_TARGET_DIR says otherwise), as tools.sh computes it.
        let out = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| repo().join("target"), PathBuf::from)
            .join("plugin-examples");
        let output = Command::new(script)
            .env_remove("OUT_DIR")
            .output()
            .expect("run build-all.sh");
        assert!(
            output.status.success(),
            "building the example strategies failed (are the toolchains installed? run \
             .ci/install-test-tools):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        out
    })
}

fn component(language: &str) -> PathBuf {
    let path = examples().join(format!("level_hash_{language}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

fn needs_runtime(language: &str) -> bool {
    matches!(language, "python" | "js")
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
    let dir = tokio::task::spawn_blocking(|| examples().to_path_buf())
        .await
        .expect("build task");
    // Deadlines no healthy interpreter reaches on a busy machine: a timed-out call would be
    // delivered by the fallback round robin and spoil the comparison.
    let mut toml = format!(
        "[shared]\nplugin_deadline_ms = {TEST_PLUGIN_DEADLINE_MS}\nplugin_init_deadline_ms = 60000\n\
         plugin_cache_dir = "
    );
    toml.push_str(&format!("{:?}\n", dir.join("cache").display().to_string()));
    for language in LANGUAGES {
        let path = component(language);
        let runtime = needs_runtime(language);
        toml.push_str(&format!(
            "[[shared.groups]]\nname = \"lang-{language}\"\nplugin = {:?}\nparams = {{ level = 1 }}\n\
             wasi = {runtime}\nmemory_mib = {}\n",
            path.display().to_string(),
            if runtime { 96 } else { 4 },
        ));
    }
    let parsed = sharq::Config::from_toml(&toml, "test").expect("test config");
    // Loading compiles the Python and JavaScript components: seconds to a minute cold on a
    // busy 2-core machine, milliseconds from the disk cache. Not `TestBroker`, whose
    // timeout is for brokers without large plugins.
    let mut config = sharq::Config::default();
    config.server.listeners = vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))];
    config.server.sys_interval_secs = 0;
    config.shared = parsed.shared;
    // Windows never fill here, so the choice is the hash alone.
    config.limits.max_inflight = 1000;
    let broker = sharq::Broker::start(config).await.expect("broker start");
    let addr = broker.local_addrs()[0];

    let mut members: BTreeMap<&str, Vec<Member>> = BTreeMap::new();
    for language in LANGUAGES {
        for index in 0..MEMBERS {
            // Joined in order, so member ids (session ids, a counter) ascend with `index`,
            // which is the candidate order the algorithm sorts by.
            let (mut client, _) = RawClient::connect_opts(
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
            group
                .strategy_label()
                .contains(&format!("level_hash_{language}")),
            "group lang-{language} runs {}",
            group.strategy_label()
        );
    }

    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "publisher")).await;
    for seq in 0..MESSAGES {
        publisher
            .publish(&topic(seq), &seq_payload(seq), QoS::AtLeastOnce, false)
            .await;
    }
    let total = |language: &str| -> usize { members[language].iter().map(|m| m.got().len()).sum() };
    for language in LANGUAGES {
        wait_until(
            TIMEOUT * 6,
            &format!("all messages reach lang-{language}"),
            || total(language) >= MESSAGES as usize,
        )
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
        let fallbacks = group.strategy_counters.fallbacks.total();
        assert_eq!(
            fallbacks, 0,
            "lang-{language}: the strategy failed or declined"
        );
    }
    let expected: Vec<usize> = (0..MEMBERS)
        .map(|index| {
            (0..MESSAGES)
                .filter(|seq| expected_member(&topic(*seq)) == index)
                .count()
        })
        .collect();
    for (language, got) in &counts {
        assert_eq!(got, &expected, "per-member counts of lang-{language}");
    }
    // The stream must exercise every member, or equality would prove little.
    assert!(expected.iter().all(|n| *n > 0), "{expected:?}");
}

/// `sharq plugin check` accepts every one of the four (Python and JavaScript with `--wasi`),
/// and refuses the Python one without it, naming the flag and the config key.
#[test]
fn plugin_check_accepts_every_language() {
    for language in LANGUAGES {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sharq"));
        command
            .args(["plugin", "check"])
            .arg(component(language))
            .args([
                "--params",
                "level=1",
                "--members",
                "4",
                "--messages",
                "2000",
                // Acceptance, not speed, is under test: no deadline a busy machine can reach.
                "--deadline-ms",
                "60000",
                "--init-deadline-ms",
                "60000",
            ]);
        if needs_runtime(language) {
            command.args(["--wasi", "--memory-mib", "96"]);
        }
        let output = command.output().expect("run sharq plugin check");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "plugin check {language}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("needs:   topic=true"),
            "{language}: {stdout}"
        );
        assert!(stdout.contains("\n0 declined"), "{language}: {stdout}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_sharq"))
        .args(["plugin", "check"])
        .arg(component("python"))
        .args(["--memory-mib", "96"])
        .output()
        .expect("run sharq plugin check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("`wasi = true`") && stderr.contains("--wasi"),
        "{stderr}"
    );
}

/// A config that points at a WASI-importing component without `wasi = true` is refused at
/// load, naming the key; a bad `level` is refused by every language's `init`.
#[test]
fn config_load_names_the_wasi_key_and_init_refusals() {
    let cache = examples().join("cache");
    let load = |language: &str, extra: &str| {
        let toml = format!(
            "[shared]\nplugin_init_deadline_ms = 60000\nplugin_cache_dir = {:?}\n\
             [[shared.groups]]\nname = \"g\"\nplugin = {:?}\nmemory_mib = 96\n{extra}",
            cache.display().to_string(),
            component(language).display().to_string(),
        );
        let config = sharq::Config::from_toml(&toml, "test").expect("test config");
        sharq::strategy::StrategyRegistry::new(&config.shared, None)
    };
    let error = load("python", "")
        .expect_err("python without wasi")
        .to_string();
    assert!(error.contains("`wasi = true`"), "{error}");
    for language in LANGUAGES {
        let wasi = if needs_runtime(language) {
            "wasi = true\n"
        } else {
            ""
        };
        assert!(load(language, wasi).is_ok(), "{language} loads");
        let error = load(language, &format!("{wasi}params = {{ level = \"x\" }}\n"))
            .expect_err("a bad level is refused")
            .to_string();
        assert!(error.contains("level"), "{language}: {error}");
    }
}
