#!/usr/bin/env bash
# The project's whole test suite: formatting, lints, unit, integration and interop tests, and a
# compile check of the benchmarks. README's test command; CI runs it through .ci/run.
set -euo pipefail
cd "$(dirname "$0")"
# A test run is a one-off build: incremental caches only cost disk (gigabytes with wasmtime
# linked into every test binary) and CI's disk is small.
export CARGO_INCREMENTAL=0
.ci/install-test-tools
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
# --all-targets builds the criterion benchmarks in the test profile and runs each once, quickly;
# running them for numbers is a separate step (bench/RESULTS.md).
