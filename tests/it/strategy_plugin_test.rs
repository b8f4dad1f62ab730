//! `sharq plugin test FILE.wasm SCENARIO.toml` and `sharq plugin check --scenario`, through the
//! real binary: exit 0 when every step passes, 1 when one fails (the output names the step),
//! 2 when the scenario is unusable (the error names the step and the key).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn text(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

fn sharq(args: &[&str]) -> Run {
    let output = Command::new(common::sharq_binary_copy())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("cannot run sharq");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn scenario(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `plugin test` with a per-call deadline no healthy call reaches on a loaded machine (a
/// timed-out call would fail a step for a reason the test is not about).
fn plugin_test(wasm: &Path, scenario: &Path) -> Run {
    sharq(&[
        "plugin",
        "test",
        wasm.to_str().unwrap(),
        scenario.to_str().unwrap(),
        "--deadline-ms",
        "5000",
    ])
}

const ROUND_ROBIN_OK: &str = r#"
group = "workers"

[[step]]
join = { client = "worker-a" }

[[step]]
join = { client = "worker-b" }

[[step]]
join = { client = "worker-c" }

[[step]]
publish = { topic = "jobs/{n}", publisher = "p-{n}", count = 90 }
expect_even = 5

[[step]]
load = { client = "worker-a", state = "full" }

[[step]]
publish = { topic = "jobs/{n}", count = 40 }
expect_even = 5

[[step]]
leave = "worker-b"

[[step]]
publish = { count = 10 }
expect = "worker-c"
"#;

#[test]
fn round_robin_passes_its_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario(dir.path(), "ok.toml", ROUND_ROBIN_OK);
    let run = plugin_test(&common::builtin_wasm("round_robin"), &path);
    assert_eq!(run.code, Some(0), "{}", run.text());
    assert!(
        run.stdout
            .contains("step 4 publish 90 messages: ok (worker-a 30, worker-b 30, worker-c 30)"),
        "{}",
        run.text()
    );
    assert!(
        run.stdout.contains("step 6 publish 40 messages: ok"),
        "{}",
        run.text()
    );
    assert!(run.stdout.contains("(contract 0.2.0)"), "{}", run.text());
    assert!(
        run.stdout.contains("8 steps, 3 expectations, 0 failed"),
        "{}",
        run.text()
    );
}

#[test]
fn a_wrong_client_fails_naming_the_step() {
    let dir = tempfile::tempdir().unwrap();
    // hash_clientid spreads publishers over the members: not every one lands on worker-a.
    let path = scenario(
        dir.path(),
        "wrong.toml",
        r#"
[[step]]
join = { client = "worker-a" }

[[step]]
join = { client = "worker-b" }

[[step]]
publish = { publisher = "publisher-{n}", count = 50 }
expect = "worker-a"
"#,
    );
    let run = plugin_test(&common::builtin_wasm("hash_clientid"), &path);
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert!(
        run.stdout
            .contains("step 3 publish 50 messages: FAILED: message "),
        "{}",
        run.text()
    );
    assert!(
        run.stdout.contains("went to worker-b, expected worker-a ("),
        "{}",
        run.text()
    );
    assert!(
        run.stdout.contains("3 steps, 1 expectations, 1 failed"),
        "{}",
        run.text()
    );

    // sticky keeps every message on the member it chose while it stays: expecting the newcomer
    // fails.
    let path = scenario(
        dir.path(),
        "sticky.toml",
        r#"
[[step]]
join = { client = "worker-a" }

[[step]]
publish = { count = 5 }
expect = "worker-a"

[[step]]
join = { client = "worker-b" }

[[step]]
publish = { count = 5 }
expect = "worker-b"
"#,
    );
    let run = plugin_test(&common::builtin_wasm("sticky"), &path);
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert!(
        run.stdout.contains("step 2 publish 5 messages: ok"),
        "{}",
        run.text()
    );
    assert!(
        run.stdout.contains("step 4 publish 5 messages: FAILED: message 0 went to worker-a, expected worker-b (5 of 5 wrong)"),
        "{}",
        run.text()
    );
}

#[test]
fn an_unknown_key_is_an_unusable_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario(
        dir.path(),
        "typo.toml",
        "[[step]]\njoin = { client = \"a\" }\n\n[[step]]\npublish = { count = 3 }\nexpect_evenly = 10\n",
    );
    let run = plugin_test(&common::builtin_wasm("round_robin"), &path);
    assert_eq!(run.code, Some(2), "{}", run.text());
    assert!(run.stderr.contains("step 2"), "{}", run.text());
    assert!(run.stderr.contains("`expect_evenly`"), "{}", run.text());

    let path = scenario(
        dir.path(),
        "nested.toml",
        "[[step]]\njoin = { client = \"a\", wieght = 2 }\n",
    );
    let run = plugin_test(&common::builtin_wasm("round_robin"), &path);
    assert_eq!(run.code, Some(2), "{}", run.text());
    assert!(
        run.stderr.contains("step 1") && run.stderr.contains("wieght"),
        "{}",
        run.text()
    );
}

#[test]
fn round_robin_moves_messages_when_a_member_joins() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario(
        dir.path(),
        "moves.toml",
        r#"
[[step]]
join = { client = "worker-a" }

[[step]]
join = { client = "worker-b" }

[[step]]
publish = { topic = "jobs/{n}", count = 60 }

[[step]]
join = { client = "worker-c" }
expect_moved_at_most = 0
"#,
    );
    let run = plugin_test(&common::builtin_wasm("round_robin"), &path);
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert!(
        run.stdout
            .contains("step 4 join worker-c (member 3): FAILED: "),
        "{}",
        run.text()
    );
    assert!(
        run.stdout.contains("of 60 messages of step 3 moved"),
        "{}",
        run.text()
    );
}

#[test]
fn a_trap_is_a_failure_naming_the_call_and_the_instance_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario(
        dir.path(),
        "trap.toml",
        r#"
params = { n = "3" }

[[step]]
join = { client = "worker-a" }

[[step]]
publish = { count = 2 }
expect = "worker-a"

[[step]]
publish = { count = 1 }

[[step]]
publish = { count = 2 }
expect = "worker-a"
"#,
    );
    let run = plugin_test(&common::fixture_plugin("hostile_trap_on_nth"), &path);
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert!(run.stdout.contains("(contract 0.1.0)"), "{}", run.text());
    assert!(
        run.stdout
            .contains("step 3 publish 1 message: FAILED: message 0 select failed: "),
        "{}",
        run.text()
    );
    // The rebuilt instance (init again, membership replayed) counts from zero again.
    assert!(
        run.stdout.contains("step 4 publish 2 messages: ok"),
        "{}",
        run.text()
    );
}

#[test]
fn plugin_check_runs_a_scenario_after_the_simulation() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = common::builtin_wasm("round_robin");
    let ok = scenario(dir.path(), "ok.toml", ROUND_ROBIN_OK);
    let args = |scenario: &Path| {
        sharq(&[
            "plugin",
            "check",
            wasm.to_str().unwrap(),
            "--members",
            "3",
            "--messages",
            "300",
            "--deadline-ms",
            "5000",
            "--scenario",
            scenario.to_str().unwrap(),
        ])
    };
    let run = args(&ok);
    assert_eq!(run.code, Some(0), "{}", run.text());
    assert!(run.stdout.contains("Jain fairness index"), "{}", run.text());
    assert!(
        run.stdout.contains("8 steps, 3 expectations, 0 failed"),
        "{}",
        run.text()
    );

    let failing = scenario(
        dir.path(),
        "fail.toml",
        "[[step]]\njoin = { client = \"a\" }\n[[step]]\njoin = { client = \"b\" }\n\
         [[step]]\npublish = { count = 4 }\nexpect = \"a\"\n",
    );
    let run = args(&failing);
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert!(
        run.stdout.contains("step 3 publish 4 messages: FAILED"),
        "{}",
        run.text()
    );

    // An unusable scenario is reported before the simulation runs.
    let typo = scenario(
        dir.path(),
        "typo.toml",
        "[[step]]\njion = { client = \"a\" }\n",
    );
    let run = args(&typo);
    assert_eq!(run.code, Some(2), "{}", run.text());
    assert!(run.stderr.contains("`jion`"), "{}", run.text());
    assert!(!run.stdout.contains("distribution"), "{}", run.text());
}

#[test]
fn plugin_check_names_the_call_and_message_that_failed() {
    let run = sharq(&[
        "plugin",
        "check",
        common::fixture_plugin("hostile_infinite_loop")
            .to_str()
            .unwrap(),
        "--messages",
        "100",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert!(
        run.stderr.contains("select failed on message 1 of 100: "),
        "{}",
        run.text()
    );
    // The broker's default deadline.
    assert!(
        run.stderr.contains("call exceeded its deadline of 20 ms"),
        "{}",
        run.text()
    );
}

#[test]
fn plugin_help_does_not_describe_serving() {
    for sub in ["check", "test"] {
        let run = sharq(&["plugin", sub, "--help"]);
        assert_eq!(run.code, Some(0), "{}", run.text());
        assert!(
            !run.stdout.contains("127.0.0.1:1883"),
            "{sub}: {}",
            run.stdout
        );
        assert!(!run.stdout.contains("--config"), "{sub}: {}", run.stdout);
        // The defaults are the broker's.
        assert!(
            run.stdout.contains("[default: 20]"),
            "{sub}: {}",
            run.stdout
        );
        assert!(
            run.stdout.contains("[default: 16]"),
            "{sub}: {}",
            run.stdout
        );
    }
    // The serve help still has it.
    let run = sharq(&["--help"]);
    assert!(run.stdout.contains("127.0.0.1:1883"), "{}", run.stdout);
}
