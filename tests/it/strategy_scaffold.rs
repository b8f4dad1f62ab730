//! `sharq plugin new` end to end: for each language, the real binary scaffolds a project into a
//! temp dir, the template's one build command builds it with the real toolchain, and
//! `sharq plugin check` accepts the component (with `--wasi` for Python and JavaScript).
//!
//! The C, Python and JavaScript builds use the pinned toolchains of
//! `examples/strategies/tools.sh`, which `.ci/install-test-tools` installs (the templates'
//! build scripts install them on first use too); the Rust build needs the wasm32-wasip2
//! target. Nothing is skipped when a toolchain is missing: the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use crate::common::{sharq_binary, toolchain_builds};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cargo target directory, as examples/strategies/tools.sh computes it: the plugin
/// toolchains live under it.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from)
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn plugin_new(parent: &Path, name: &str, lang: &str) -> Output {
    Command::new(sharq_binary())
        .args(["plugin", "new", "--lang", lang, "--dir"])
        .arg(parent)
        // `--`: a name starting with `-` reaches the name check instead of clap's options.
        .args(["--", name])
        .output()
        .expect("run sharq plugin new")
}

/// Scaffolds `lang`'s template, builds it with its one command, checks the component, and
/// runs its scenario with `sharq plugin test`.
fn scaffold_build_check(lang: &str) {
    let _serial = toolchain_builds();
    let parent = tempfile::tempdir().expect("temp dir");
    let name = format!("tenant-router-{lang}");
    let output = plugin_new(parent.path(), &name, lang);
    assert!(
        output.status.success(),
        "plugin new {lang}: {}",
        text(&output)
    );
    let dir = parent.path().join(&name);
    for file in [
        "README.md",
        "scenario.toml",
        "wit/sharq-dispatch.wit",
        "build.sh",
    ] {
        assert!(dir.join(file).is_file(), "{lang}: {file} missing");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("wit/sharq-dispatch.wit")).expect("read the WIT"),
        std::fs::read_to_string(repo().join("wit/0.2.0/sharq-dispatch.wit")).expect("WIT"),
        "{lang}: the project carries contract 0.2.0"
    );

    // The one command the README gives.
    let mut build = Command::new(dir.join("build.sh"));
    build.current_dir(&dir).env_remove("OUT_DIR");
    if lang == "rust" {
        // A target dir of its own that outlives the test, so the SDK's dependencies compile
        // once, and that is not the broker's (whose lock the other tests hold).
        build.env("CARGO_TARGET_DIR", target_dir().join("scaffold-test/rust"));
    }
    let started = Instant::now();
    let output = build.output().expect("run build.sh");
    assert!(
        output.status.success(),
        "building the {lang} template failed (are the toolchains installed? run \
         .ci/install-test-tools): {}",
        text(&output)
    );
    eprintln!("{lang}: built in {:.1} s", started.elapsed().as_secs_f64());
    let wasm = dir.join(format!("{name}.wasm"));
    assert!(
        wasm.is_file(),
        "{lang}: {} not built: {}",
        wasm.display(),
        text(&output)
    );

    let wasi = matches!(lang, "python" | "js");
    let mut check = Command::new(sharq_binary());
    check.args(["plugin", "check"]).arg(&wasm).args([
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
    if wasi {
        // As the README says: the interpreters import WASI and need more memory.
        check.args(["--wasi", "--memory-mib", "96"]);
    }
    let output = check.output().expect("run sharq plugin check");
    let report = text(&output);
    assert!(output.status.success(), "plugin check {lang}: {report}");
    // The check's messages carry no `tenant`: the template spreads them round robin, and
    // never declines while members are online.
    assert!(report.contains("\n0 declined"), "{lang}: {report}");

    // The scenario the project ships passes on the component it builds.
    let mut test = Command::new(sharq_binary());
    test.args(["plugin", "test"])
        .arg(&wasm)
        .arg(dir.join("scenario.toml"))
        .args(["--deadline-ms", "60000", "--init-deadline-ms", "60000"]);
    if wasi {
        test.args(["--memory-mib", "96"]);
    }
    let output = test.output().expect("run sharq plugin test");
    let report = text(&output);
    assert!(output.status.success(), "plugin test {lang}: {report}");
    assert!(report.contains(", 0 failed"), "{lang}: {report}");
}

#[test]
fn c_template_builds_and_checks() {
    scaffold_build_check("c");
}

#[test]
fn python_template_builds_and_checks() {
    scaffold_build_check("python");
}

#[test]
fn js_template_builds_and_checks() {
    scaffold_build_check("js");
}

#[test]
fn rust_template_builds_and_checks() {
    scaffold_build_check("rust");
}

/// `plugin new` refuses a directory that exists (touching nothing in it) and a name that is
/// not letters, digits, `-` and `_`, with an error saying which and exit status 2.
#[test]
fn refuses_existing_directory_and_bad_names() {
    let parent = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(parent.path().join("taken")).expect("mkdir");
    std::fs::write(parent.path().join("taken/notes.txt"), "mine").expect("write");
    let output = plugin_new(parent.path(), "taken", "c");
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(parent.path().join("taken"))
        .expect("read dir")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["notes.txt"], "the existing directory was changed");

    for bad in ["../escape", "has space", "9lives", "-flag", "ünïcode", ""] {
        let output = plugin_new(parent.path(), bad, "python");
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("invalid project name"), "{bad:?}: {stderr}");
    }
    assert!(!parent.path().join("../escape").exists());
    let output = plugin_new(parent.path(), "fn", "rust");
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));

    // And an unknown language is clap's error, listing the accepted ones.
    let output = plugin_new(parent.path(), "ok", "cobol");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("rust") && stderr.contains("python") && stderr.contains("js"),
        "{stderr}"
    );
    assert!(!parent.path().join("ok").exists());
}
