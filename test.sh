#!/usr/bin/env bash
# The project's whole test suite: formatting, lints, unit, integration and interop tests, and a
# compile check of the benchmarks. README's test command; CI runs it through .ci/run.
set -euo pipefail
cd "$(dirname "$0")"
# A test run is a one-off build: incremental caches only cost disk (gigabytes with wasmtime
# linked into every test binary) and CI's disk is small.
export CARGO_INCREMENTAL=0
# Each step says how long it took, so a slow step shows in CI's log (bench/results/test-build.md).
step() {
    local started=$SECONDS
    "$@"
    echo "test.sh: $((SECONDS - started)) s: $*" >&2
}
step .ci/install-test-tools
step cargo fmt --check
# The nested workspaces (built-in strategies and SDK; test fixtures) are formatted too.
step cargo fmt --manifest-path plugins/Cargo.toml --all --check
step cargo fmt --manifest-path tests/fixtures/hostile/Cargo.toml --all --check
step cargo clippy --all-targets -- -D warnings
step cargo test --all-targets
# The strategies' own workspace: its shared logic and the SDK are unit-tested on the host, and
# the guests (wasm32 only) are linted for the target they build for.
plugin_target="${CARGO_TARGET_DIR:-target}/plugins-host"
step cargo clippy --manifest-path plugins/Cargo.toml --locked --target-dir "$plugin_target" \
    -p sharq-strategies -p sharq-sdk --all-targets -- -D warnings
step cargo clippy --manifest-path plugins/Cargo.toml --locked --target-dir "$plugin_target" \
    --target wasm32-wasip2 --workspace -- -D warnings
step cargo test --manifest-path plugins/Cargo.toml --locked --target-dir "$plugin_target" \
    -p sharq-strategies -p sharq-sdk
# --all-targets builds the criterion benchmarks in the test profile and runs each once, quickly;
# running them for numbers is a separate step (bench/RESULTS.md).
