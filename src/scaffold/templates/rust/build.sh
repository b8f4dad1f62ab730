#!/usr/bin/env bash
# Builds {{name}}.wasm: `cargo build --release` (for wasm32-wasip2, which .cargo/config.toml
# sets) makes the component; this copies it next to the sources, where the other languages'
# templates put theirs too.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
cargo build --quiet --release
target="${CARGO_TARGET_DIR:-$here/target}"
cp "$target/wasm32-wasip2/release/{{crate}}.wasm" "$here/{{name}}.wasm"
echo "$here/{{name}}.wasm"
