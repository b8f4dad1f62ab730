//! `sharq plugin check`: on a built-in component it prints the distribution over the simulated
//! members and exits 0; on a broken or missing file it exits non-zero with a clear message.

use crate::common;

use std::process::{Command, Output};

fn check(args: &[&str]) -> (Output, String, String) {
    let output = Command::new(common::sharq_binary_copy())
        .args(["plugin", "check"])
        .args(args)
        // The default is the broker's 20 ms; a loaded test machine can deschedule a healthy
        // call for that long, and a timed-out call fails the check.
        .args(["--deadline-ms", "5000"])
        .env("NO_COLOR", "1")
        .output()
        .expect("cannot run sharq");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// The per-member counts of the distribution section.
fn distribution(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("member-"))
        .map(|rest| rest.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn round_robin_prints_an_even_distribution() {
    let wasm = common::builtin_wasm("round_robin");
    let (output, stdout, stderr) = check(&[
        wasm.to_str().unwrap(),
        "--members",
        "4",
        "--messages",
        "4000",
    ]);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("distribution"), "{stdout}");
    assert!(stdout.contains("Jain fairness index"), "{stdout}");
    assert!(
        stdout.contains("keys moved when a member joined"),
        "{stdout}"
    );
    let counts = distribution(&stdout);
    // Four members, one joins and one leaves half way: the member rows (however the report
    // groups them) account for all 4000 messages, and round robin gives each member the same.
    assert!(counts.len() >= 5, "{stdout}");
    assert_eq!(counts.iter().sum::<u64>(), 4000, "{stdout}");
    let nonzero: Vec<u64> = counts.iter().copied().filter(|c| *c > 0).collect();
    assert!(nonzero.len() >= 5, "every member got messages: {stdout}");
}

#[test]
fn hash_topic_levels_check_takes_params() {
    let wasm = common::builtin_wasm("hash_topic_levels");
    let (output, stdout, stderr) = check(&[
        wasm.to_str().unwrap(),
        "--messages",
        "2000",
        "--params",
        "pattern=devices/{id}/#",
    ]);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("needs:   topic=true"), "{stdout}");
    assert_eq!(distribution(&stdout).iter().sum::<u64>(), 2000, "{stdout}");

    // Without its required params, init refuses: non-zero, and the message says why.
    let (output, stdout, stderr) = check(&[wasm.to_str().unwrap(), "--messages", "100"]);
    assert!(!output.status.success(), "{stdout}");
    assert!(stderr.contains("FAILED"), "{stderr}");
    assert!(
        stderr.contains("init refused the configuration"),
        "{stderr}"
    );
}

#[test]
fn broken_file_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not webassembly").unwrap();
    let (output, stdout, stderr) = check(&[garbage.to_str().unwrap()]);
    assert!(!output.status.success(), "{stdout}");
    assert!(stderr.contains("FAILED"), "{stderr}");
    assert!(stderr.contains(garbage.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("compile"), "{stderr}");
    assert!(!stdout.contains("distribution"), "{stdout}");

    let missing = dir.path().join("missing.wasm");
    let (output, _, stderr) = check(&[missing.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(stderr.contains("cannot read"), "{stderr}");
    assert!(stderr.contains(missing.to_str().unwrap()), "{stderr}");
}
