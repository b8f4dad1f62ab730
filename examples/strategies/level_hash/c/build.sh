#!/usr/bin/env bash
# Builds level_hash_c.wasm: `wit-bindgen c` generates the bindings, `zig cc` (clang with a
# bundled wasi-libc) compiles a core module, `wasm-tools component new` wraps it as a component.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../tools.sh"
build="$SHARQ_PLUGIN_BUILD/c"
mkdir -p "$SHARQ_PLUGIN_OUT" "$build"
"$WIT_BINDGEN" c "$here/../../../../wit" --world strategy --out-dir "$build" >/dev/null
# Reactor model: no main, the exports are the entry points. A 16 KiB stack and a 128 KiB
# initial memory are plenty (the member table is the only heap use) and keep instantiation
# cheap: every group gets its own copy of the memory.
$ZIG cc -target wasm32-wasi -mexec-model=reactor -Os -Wall -Werror \
    -I "$build" "$here/level_hash.c" "$build/strategy.c" "$build/strategy_component_type.o" \
    -Wl,-z,stack-size=16384 -Wl,--initial-memory=131072 \
    -o "$build/level_hash_core.wasm"
"$WASM_TOOLS" component new "$build/level_hash_core.wasm" -o "$SHARQ_PLUGIN_OUT/level_hash_c.wasm"
echo "$SHARQ_PLUGIN_OUT/level_hash_c.wasm"
