#!/usr/bin/env bash
# Builds level_hash_rust.wasm: cargo makes a wasm32-wasip2 component directly.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../tools.sh"
mkdir -p "$SHARQ_PLUGIN_OUT"
cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$here/Cargo.toml" \
    --target-dir "$SHARQ_PLUGIN_BUILD/rust"
cp "$SHARQ_PLUGIN_BUILD/rust/wasm32-wasip2/release/level_hash.wasm" "$SHARQ_PLUGIN_OUT/level_hash_rust.wasm"
echo "$SHARQ_PLUGIN_OUT/level_hash_rust.wasm"
