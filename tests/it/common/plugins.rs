//! Strategy components the tests load: the built-in ones build.rs made, the fixture
//! strategies of `tests/fixtures/hostile/` (built once per test run), and the lock that keeps
//! toolchain builds one at a time.

use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use super::sharq_binary;

/// A built-in strategy's component, as build.rs left it in the target dir.
pub fn builtin_wasm(name: &str) -> std::path::PathBuf {
    let target = std::path::Path::new(sharq_binary())
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap();
    let path = target
        .join("plugins/wasm32-wasip2/release")
        .join(format!("sharq_plugin_{name}.wasm"));
    assert!(path.is_file(), "{} missing", path.display());
    path
}

/// The outer build's target dir: the test binary runs from `<target>/debug/deps/`.
pub fn target_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = std::path::PathBuf::from(dir);
        if dir.is_absolute() {
            return dir;
        }
    }
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "deps"))
        .and_then(|deps| deps.parent()?.parent())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Builds the fixture strategies (`tests/fixtures/hostile/`) once per test run and returns
/// their release directory.
fn fixtures_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hostile/Cargo.toml");
        let target = target_dir().join("hostile-fixtures");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("build")
            .arg("--manifest-path")
            .arg(&manifest)
            .args(["--release", "--locked", "--target", "wasm32-wasip2"])
            .arg("--target-dir")
            .arg(&target);
        // As build.rs does: the outer build's host settings must not leak into the wasm build.
        for (key, _) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            let leaks = matches!(
                key,
                "RUSTFLAGS"
                    | "CARGO_ENCODED_RUSTFLAGS"
                    | "CARGO_BUILD_RUSTFLAGS"
                    | "CARGO_BUILD_TARGET"
                    | "CARGO_TARGET_DIR"
                    | "CARGO_BUILD_TARGET_DIR"
                    | "CARGO_BUILD_BUILD_DIR"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "CARGO_BUILD_RUSTC_WRAPPER"
                    | "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER"
                    | "CARGO_MAKEFLAGS"
            ) || key.starts_with("CARGO_PROFILE_");
            if leaks {
                cmd.env_remove(key);
            }
        }
        let output = cmd
            .output()
            .expect("cannot run cargo to build the hostile fixtures");
        assert!(
            output.status.success(),
            "building tests/fixtures/hostile failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        target.join("wasm32-wasip2").join("release")
    })
}

/// A fixture strategy component by file stem (`hostile_wrong_member`, `fixture_key_affinity`).
pub fn fixture_plugin(stem: &str) -> std::path::PathBuf {
    let path = fixtures_dir().join(format!("{stem}.wasm"));
    assert!(path.is_file(), "{} missing", path.display());
    path
}

/// Held while a test builds strategies with the plugin toolchains (`examples/strategies/tools.sh`,
/// `sharq plugin new` templates): one such build at a time in the whole test process. The first
/// build installs the toolchains into the target dir, and two installs at once break each other;
/// and each build is a minute of both cores on the 2-core machines this runs on.
pub fn toolchain_builds() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
