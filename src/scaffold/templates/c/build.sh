#!/usr/bin/env bash
# Builds {{name}}.wasm from plugin.c: `wit-bindgen c` generates the bindings for wit/,
# `zig cc` (clang with a bundled wasi-libc) compiles a core module, and
# `wasm-tools component new` wraps it as a component. Intermediate files go to build/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
{{tools}}
# The first build installs the pinned toolchains (minutes, once, into the checkout's cargo
# target directory; nothing system-wide).
[ -x "$WIT_BINDGEN" ] || sharq_install_plugin_tools

build="$here/build"
mkdir -p "$build"
"$WIT_BINDGEN" c "$here/wit" --world strategy --out-dir "$build" >/dev/null
# Reactor: no main, the exports are the entry points. A 16 KiB stack and 128 KiB of initial
# memory are plenty (the member table is the only heap use) and keep instantiation cheap:
# every group gets its own copy of the memory.
$ZIG cc -target wasm32-wasi -mexec-model=reactor -Os -Wall -Werror \
    -I "$build" "$here/plugin.c" "$build/strategy.c" "$build/strategy_component_type.o" \
    -Wl,-z,stack-size=16384 -Wl,--initial-memory=131072 \
    -o "$build/{{name}}-core.wasm"
"$WASM_TOOLS" component new "$build/{{name}}-core.wasm" -o "$here/{{name}}.wasm"
echo "$here/{{name}}.wasm"
