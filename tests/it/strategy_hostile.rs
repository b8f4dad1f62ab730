//! Hostile strategy plugins (sources in `tests/fixtures/hostile/`, built here once per test
//! run): a plugin that loops forever, exhausts its memory, traps every nth call, answers
//! non-members, or is too big. For each, the broker keeps serving every group, every
//! message of the hostile group arrives exactly once through the native fallback, and the
//! group's `strategy_counters` (and pinning after `plugin_max_failures`) say what happened. A
//! plugin that cannot load fails `Broker::start` with the file named, and at reload leaves the
//! old strategy in place; so does one that imports WASI clocks or files without `wasi = true`.
//! Setting an instance up (instantiate + `init`) has its own, longer deadline than a call.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::*;
use sharq::packet::QoS;
use sharq::strategy::{MessageView, SandboxLimits, StrategyCounters, StrategyError, WasmHost};
use sharq::{Broker, Config};

fn fixture(name: &str) -> PathBuf {
    fixture_plugin(&format!("hostile_{name}"))
}

/// A per-call deadline no healthy call reaches however busy the machine: tests that are not
/// about timeouts must not see one because the test process was descheduled.
const GENEROUS_DEADLINE_MS: u64 = 5000;

/// `[shared]` with group `hostile` on `plugin` (with `params`, a TOML inline table body) and
/// group `healthy` on round_robin.
fn config_for(plugin: &Path, params: &str, max_failures: u32, memory_mib: u32) -> Config {
    config_with_deadline(
        plugin,
        params,
        max_failures,
        memory_mib,
        GENEROUS_DEADLINE_MS,
    )
}

fn config_with_deadline(
    plugin: &Path,
    params: &str,
    max_failures: u32,
    memory_mib: u32,
    deadline_ms: u64,
) -> Config {
    // The deadline is the hostile group's own: the healthy group must never time out by chance.
    let text = format!(
        "[shared]\nplugin_max_failures = {max_failures}\nplugin_deadline_ms = {GENEROUS_DEADLINE_MS}\nplugin_memory_mib = {memory_mib}\n\
         [[shared.groups]]\nname = \"hostile\"\nplugin = {plugin:?}\nparams = {{ {params} }}\ndeadline_ms = {deadline_ms}\n\
         [[shared.groups]]\nname = \"healthy\"\nstrategy = \"round_robin\"\n",
        plugin = plugin.display().to_string()
    );
    let mut config = Config::from_toml(&text, "test").expect("test config");
    config.server.listeners = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
    config.server.sys_interval_secs = 0;
    config.limits.max_inflight = 1000;
    config
}

struct Scene {
    broker: TestBroker,
    addr: SocketAddr,
    hostile: Vec<Member>,
    healthy: Vec<Member>,
    plain: Member,
    publisher: RawClient,
    published: u32,
}

impl Scene {
    async fn start(config: Config) -> Scene {
        let broker = TestBroker::from_config(config).await;
        let addr = broker.addr();
        let mut hostile = Vec::new();
        let mut healthy = Vec::new();
        for i in 0..2 {
            hostile.push(member(addr, &format!("hostile-{i}"), "$share/hostile/h/#").await);
            healthy.push(member(addr, &format!("healthy-{i}"), "$share/healthy/h/#").await);
        }
        let plain = member(addr, "plain", "h/#").await;
        let (publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "publisher")).await;
        Scene {
            broker,
            addr,
            hostile,
            healthy,
            plain,
            publisher,
            published: 0,
        }
    }

    /// Publishes `n` more QoS 1 messages (each PUBACK awaited) on distinct topics, and checks
    /// that every group and the plain subscriber got every message so far exactly once.
    async fn publish_and_check(&mut self, n: u32) {
        let from = self.published;
        for seq in from..from + n {
            self.publisher
                .publish(
                    &format!("h/{}", seq % 7),
                    &seq_payload(seq),
                    QoS::AtLeastOnce,
                    false,
                )
                .await;
            // A failed instance is rebuilt off the message path while the round robin serves;
            // let each message meet the rebuilt instance, so the counts below are exact.
            if let Some(group) = self.broker.state().router.group("hostile", "h/#") {
                wait_until(TIMEOUT, "the strategy rebuild", || {
                    !group.strategy_rebuilding()
                })
                .await;
            }
        }
        self.published += n;
        let all = self.published;
        for (what, members) in [
            ("hostile group", &self.hostile),
            ("healthy group", &self.healthy),
        ] {
            let refs: Vec<&Member> = members.iter().collect();
            wait_total(&refs, all as usize).await;
            assert_exactly_once(what, refs.iter().flat_map(|m| m.seqs()), 0..all);
        }
        wait_total(&[&self.plain], all as usize).await;
        assert_exactly_once("plain subscriber", self.plain.seqs(), 0..all);
    }

    fn group(&self, name: &str) -> std::sync::Arc<sharq::broker::shared::SharedGroup> {
        self.broker
            .state()
            .router
            .group(name, "h/#")
            .expect("group exists")
    }

    fn counters(&self) -> Counts {
        Counts::of(&self.group("hostile").strategy_counters)
    }
}

async fn member(addr: SocketAddr, client_id: &str, filter: &str) -> Member {
    let (mut client, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, client_id)).await;
    client.subscribe(filter, QoS::AtLeastOnce).await;
    Member::spawn(client, AckMode::Ack)
}

/// A snapshot of [`StrategyCounters`], comparable as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Counts {
    selections: u64,
    fallbacks: u64,
    traps: u64,
    timeouts: u64,
    invalid_answers: u64,
    rebuilds: u64,
    spills: u64,
}

impl Counts {
    fn of(c: &StrategyCounters) -> Counts {
        Counts {
            selections: c.selections.load(Ordering::Relaxed),
            fallbacks: c.fallbacks.total(),
            traps: c.traps.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            invalid_answers: c.fallbacks.invalid_answer.load(Ordering::Relaxed),
            rebuilds: c.rebuilds.load(Ordering::Relaxed),
            spills: c.spills.load(Ordering::Relaxed),
        }
    }
}

const MAX_FAILURES: u32 = 3;

/// A plugin that fails on every `select`: after `MAX_FAILURES` failures in a row (the first
/// `MAX_FAILURES - 1` each followed by a rebuild) the group is pinned to the native round
/// robin, and nothing is lost meanwhile.
async fn always_failing(name: &str, deadline_ms: u64) -> (Scene, Counts) {
    let plugin = fixture(name);
    let config = config_with_deadline(&plugin, "", MAX_FAILURES, 16, deadline_ms);
    always_failing_with(name, &plugin, config).await
}

async fn always_failing_with(name: &str, plugin: &Path, config: Config) -> (Scene, Counts) {
    let mut scene = Scene::start(config).await;
    let group = scene.group("hostile");
    assert_eq!(group.strategy_label(), plugin.display().to_string());
    assert!(!group.strategy_is_pinned());
    scene.publish_and_check(40).await;
    let counts = scene.counters();
    assert!(
        group.strategy_is_pinned(),
        "{name}: not pinned after {counts:?}"
    );
    assert!(
        group
            .strategy_label()
            .contains("pinned to native_round_robin"),
        "{}",
        group.strategy_label()
    );
    assert_eq!(scene.group("healthy").strategy_label(), "round_robin");
    assert_eq!(
        Counts::of(&scene.group("healthy").strategy_counters).fallbacks,
        0
    );
    // Every message went through the native round robin: the failed ones counted as
    // fallbacks (each caller checks how many), the ones after pinning not asked of the
    // strategy at all.
    assert_eq!(counts.selections, 0, "{name}: {counts:?}");
    assert!(
        scene.hostile.iter().all(|m| m.count() == 20),
        "native round robin splits evenly"
    );
    (scene, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_times_out_and_is_pinned() {
    // Any deadline stops the loop; one this long is never reached by the group's other calls
    // (microseconds of work each) however the process is scheduled, so every timeout counted
    // is a select's.
    let (_scene, counts) = always_failing("infinite_loop", 200).await;
    assert_eq!(
        counts,
        Counts {
            selections: 0,
            fallbacks: MAX_FAILURES as u64,
            traps: 0,
            timeouts: MAX_FAILURES as u64,
            invalid_answers: 0,
            rebuilds: MAX_FAILURES as u64 - 1,
            spills: 0,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_traps_and_is_pinned() {
    // A generous deadline, so that filling 16 MiB on a busy machine traps on the memory
    // limit rather than timing out.
    let (_scene, counts) = always_failing("memory_bomb", 5000).await;
    assert_eq!(
        counts,
        Counts {
            selections: 0,
            fallbacks: MAX_FAILURES as u64,
            traps: MAX_FAILURES as u64,
            timeouts: 0,
            invalid_answers: 0,
            rebuilds: MAX_FAILURES as u64 - 1,
            spills: 0,
        }
    );
}

/// A guest importing WASI clocks and files (beyond the `wasi:cli`/`wasi:io` that every Rust
/// guest declares) without `wasi = true` is refused when the config loads, naming the key —
/// before it could trap on a message. (Were it let in, every call would trap and pin the group.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_import_is_refused_at_start_naming_the_wasi_key() {
    let plugin = fixture("forbidden_import");
    let config = config_with_deadline(&plugin, "", MAX_FAILURES, 16, 20);
    let error = Broker::start(config)
        .await
        .expect_err("a WASI-importing plugin without `wasi = true` must not load")
        .to_string();
    assert!(error.contains("`wasi = true`"), "{error}");
    assert!(error.contains(&plugin.display().to_string()), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_member_is_pinned_until_the_next_reload() {
    let (mut scene, counts) = always_failing("wrong_member", GENEROUS_DEADLINE_MS).await;
    // The strategy's own counters stand still once pinned; what the fallback handled from then
    // on is counted apart (the 40 messages less the failed calls).
    let pinned = &scene.group("hostile").strategy_counters.pinned_messages;
    assert_eq!(
        pinned.load(std::sync::atomic::Ordering::Relaxed),
        40 - MAX_FAILURES as u64
    );
    assert_eq!(
        counts,
        Counts {
            selections: 0,
            fallbacks: MAX_FAILURES as u64,
            traps: 0,
            timeouts: 0,
            invalid_answers: MAX_FAILURES as u64,
            rebuilds: 0,
            spills: 0,
        }
    );
    // A reload (even of the same config) gives the pinned group a fresh instance.
    let config = config_for(&fixture("wrong_member"), "", MAX_FAILURES, 16);
    let swapped = tokio::task::spawn_blocking({
        let state = scene.broker.state().clone();
        move || state.reload_strategies(&config)
    })
    .await
    .unwrap()
    .expect("reload");
    assert_eq!(swapped, 1, "only the pinned group is rebuilt");
    let group = scene.group("hostile");
    assert!(!group.strategy_is_pinned());
    assert!(!group.strategy_label().contains("pinned"));
    scene.publish_and_check(10).await;
    assert!(group.strategy_is_pinned());
    let after = scene.counters();
    assert_eq!(after.invalid_answers, 2 * MAX_FAILURES as u64, "{after:?}");
    assert_eq!(after.fallbacks, 2 * MAX_FAILURES as u64, "{after:?}");
    let _ = scene.addr;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_on_nth_traps_every_fifth_call_and_is_never_pinned() {
    let plugin = fixture("trap_on_nth");
    let mut scene = Scene::start(config_for(&plugin, "n = \"5\"", MAX_FAILURES, 16)).await;
    scene.publish_and_check(50).await;
    let group = scene.group("hostile");
    // Each instance chooses 4 messages and traps on its 5th; success resets the failure run.
    assert!(!group.strategy_is_pinned());
    assert_eq!(
        scene.counters(),
        Counts {
            selections: 40,
            fallbacks: 10,
            traps: 10,
            timeouts: 0,
            invalid_answers: 0,
            // Every trapped instance is rebuilt at once, off the message path (the one that
            // trapped on the 50th message too): one rebuild per trap.
            rebuilds: 10,
            spills: 0,
        }
    );
    assert_eq!(group.strategy_label(), plugin.display().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_on_nth_bad_params_fail_start_naming_the_file() {
    let plugin = fixture("trap_on_nth");
    let err = Broker::start(config_for(&plugin, "n = \"zero\"", MAX_FAILURES, 16))
        .await
        .expect_err("init refused its params");
    let message = err.to_string();
    assert!(message.contains(&plugin.display().to_string()), "{message}");
    assert!(
        message.contains("`n` must be a positive integer"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_component_is_refused_at_start_and_at_reload() {
    let plugin = fixture("huge_component");
    // 20 MiB of static data cannot fit in 16 MiB of plugin memory.
    let err = Broker::start(config_for(&plugin, "", MAX_FAILURES, 16))
        .await
        .expect_err("a component bigger than plugin_memory_mib must be refused");
    let message = err.to_string();
    assert!(message.contains(&plugin.display().to_string()), "{message}");

    // At reload: the old strategy stays, and the broker keeps serving.
    let good = config_for(&fixture("trap_on_nth"), "n = \"1000000\"", MAX_FAILURES, 16);
    let mut scene = Scene::start(good).await;
    scene.publish_and_check(10).await;
    let before = scene.group("hostile").strategy_label();
    let bad = config_for(&plugin, "", MAX_FAILURES, 16);
    let result = tokio::task::spawn_blocking({
        let state = scene.broker.state().clone();
        move || state.reload_strategies(&bad)
    })
    .await
    .unwrap();
    let err = result.expect_err("reload with a too-big component must be refused");
    assert!(
        err.to_string().contains(&plugin.display().to_string()),
        "{err}"
    );
    assert_eq!(scene.group("hostile").strategy_label(), before);
    scene.publish_and_check(10).await;
    assert_eq!(scene.counters().selections, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_plugin_fails_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("garbage.wasm");
    std::fs::write(&plugin, b"\0asm this is not a component at all").unwrap();
    let err = Broker::start(config_for(&plugin, "", MAX_FAILURES, 16))
        .await
        .expect_err("garbage must be refused");
    let message = err.to_string();
    assert!(message.contains(&plugin.display().to_string()), "{message}");
    assert!(message.contains("compile"), "{message}");

    let missing = dir.path().join("missing.wasm");
    let err = Broker::start(config_for(&missing, "", MAX_FAILURES, 16))
        .await
        .expect_err("a missing file must be refused");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

/// `[shared]` with group `hostile` on `slow_init` (WASI granted: it reads the clock) with
/// `params`, its deadlines the defaults unless `shared_extra` (lines of `[shared]`) or
/// `rule_extra` (lines of its rule) set one; group `healthy` on round_robin with a deadline it
/// never reaches by chance.
fn slow_init_config(params: &str, shared_extra: &str, rule_extra: &str) -> Config {
    let text = format!(
        "[shared]\nplugin_max_failures = {MAX_FAILURES}\n{shared_extra}\n\
         [[shared.groups]]\nname = \"hostile\"\nplugin = {plugin:?}\nwasi = true\nparams = {{ {params} }}\n{rule_extra}\n\
         [[shared.groups]]\nname = \"healthy\"\nstrategy = \"round_robin\"\ndeadline_ms = {GENEROUS_DEADLINE_MS}\n",
        plugin = fixture("slow_init").display().to_string()
    );
    let mut config = Config::from_toml(&text, "test").expect("test config");
    config.server.listeners = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
    config.server.sys_interval_secs = 0;
    config.limits.max_inflight = 1000;
    config
}

/// With the default deadlines, an `init` that takes 200 ms (ten per-call deadlines) loads, at
/// start and at every rebuild, while a `select` that never returns is still cut off by the
/// 20 ms per-call deadline: every failure is a timeout and every rebuild succeeds (a failed
/// setup would count a failure that is not a timeout, or no rebuild).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_init_loads_under_the_init_deadline_and_select_keeps_the_call_deadline() {
    let defaults = Config::default().shared;
    assert_eq!(
        (
            defaults.plugin_deadline_ms,
            defaults.plugin_init_deadline_ms
        ),
        (20, 1000)
    );
    let config = slow_init_config("init_ms = \"200\", select = \"spin\"", "", "");
    let (_scene, counts) = always_failing_with("slow_init", &fixture("slow_init"), config).await;
    // The group's membership calls get the same 20 ms; one descheduled that long on a busy
    // machine times out too (rightly a failure), leaving one select fewer to fail.
    assert!(
        (1..=MAX_FAILURES as u64).contains(&counts.fallbacks),
        "{counts:?}"
    );
    assert_eq!(
        counts,
        Counts {
            selections: 0,
            fallbacks: counts.fallbacks,
            traps: 0,
            timeouts: MAX_FAILURES as u64,
            invalid_answers: 0,
            rebuilds: MAX_FAILURES as u64 - 1,
            spills: 0,
        }
    );
}

/// A guest's `member-joined` that runs until its deadline holds up its own group only: while a
/// member joins a group whose strategy spins there, another client's QoS 1 publish on a topic
/// no group matches is acknowledged long before that deadline. (Were the guest called under
/// the topic tree's lock, the publish could not be matched until the guest call ended.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joined_spinning_to_its_deadline_holds_up_no_publisher() {
    const DEADLINE: Duration = Duration::from_secs(3);
    let config = slow_init_config(
        "member_joined = \"spin\"",
        "",
        &format!("deadline_ms = {}", DEADLINE.as_millis()),
    );
    let broker = TestBroker::from_config(config).await;
    let addr = broker.addr();
    let (mut publisher, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "publisher")).await;
    let (mut joiner, _) = RawClient::connect_opts(addr, ConnectOpts::new(V5, "joiner")).await;
    let router = &broker.state().router;
    assert!(router.group("hostile", "h/#").is_none());
    // Its SUBACK waits for the guest's deadline: the join runs on its own task.
    let join = tokio::spawn(async move {
        joiner
            .subscribe("$share/hostile/h/#", QoS::AtLeastOnce)
            .await;
        joiner
    });
    // The group is in the registry once the join holds the tree's lock to add the member; the
    // guest hears of the member after that (it spins for `DEADLINE`).
    wait_until(TIMEOUT, "the join to begin", || {
        router.group("hostile", "h/#").is_some()
    })
    .await;
    let started = Instant::now();
    publisher
        .publish("elsewhere/x", b"m", QoS::AtLeastOnce, false)
        .await;
    let took = started.elapsed();
    assert!(
        took < DEADLINE / 2,
        "an unrelated PUBACK took {took:?} while a member joined a group whose member-joined \
         spins to its {DEADLINE:?} deadline"
    );
    let _joiner = join.await.expect("the join task");
    // The guest really was called and spun to its deadline.
    let group = router.group("hostile", "h/#").expect("group exists");
    wait_until(TIMEOUT, "the member-joined timeout", || {
        group.strategy_counters.timeouts.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(group.member_count(), 1);
}

/// The init deadline is a deadline: an `init` that never returns fails the start, with an
/// error naming the plugin and the keys that grant more time, whether the deadline comes from
/// `[shared]` or from the group's rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_that_never_returns_fails_the_start_naming_the_init_deadline() {
    for (shared_extra, rule_extra) in [
        ("plugin_init_deadline_ms = 50", ""),
        ("", "init_deadline_ms = 50"),
    ] {
        let config = slow_init_config("init_ms = \"forever\"", shared_extra, rule_extra);
        let error = tokio::time::timeout(TIMEOUT, Broker::start(config))
            .await
            .expect("the init deadline must stop a looping init")
            .expect_err("an init that never returns must not load")
            .to_string();
        assert!(
            error.contains(&fixture("slow_init").display().to_string()),
            "{error}"
        );
        assert!(
            error.contains("init deadline of 50 ms") && error.contains("plugin_init_deadline_ms"),
            "{error}"
        );
    }
}

/// A deadline of N ms never interrupts a call before N ms have passed, even when the epoch
/// ticker advances just after the deadline was armed.
#[test]
fn a_call_deadline_is_never_cut_short() {
    const DEADLINE_MS: u64 = 30;
    let host = WasmHost::new(SandboxLimits::from_mib_and_ms(16, DEADLINE_MS, 1000)).unwrap();
    let bytes = std::fs::read(fixture("infinite_loop")).unwrap();
    let plugin = host.load("infinite_loop", &bytes).unwrap();
    let view = MessageView {
        topic: "t",
        publisher: "p",
        payload: b"",
        topic_hash: 1,
        key_hash: 1,
        publisher_hash: 2,
        qos: 1,
        retain: false,
        user_properties: &[],
        content_type: None,
    };
    // Several calls, so that some are armed just before a tick.
    for _ in 0..5 {
        // An interrupted instance is poisoned: a fresh one each round.
        let mut instance = host.instantiate(&plugin, "g", &[]).unwrap();
        let started = Instant::now();
        let result = instance.select(&view);
        let took = started.elapsed();
        assert!(
            matches!(result, Err(StrategyError::Timeout { .. })),
            "{result:?}"
        );
        assert!(
            took >= Duration::from_millis(DEADLINE_MS),
            "interrupted after {took:?}, before its {DEADLINE_MS} ms deadline"
        );
    }
}
