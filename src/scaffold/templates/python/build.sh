#!/usr/bin/env bash
# Builds {{name}}.wasm from app.py with componentize-py: CPython compiled to WebAssembly, plus
# app.py and the bindings it generates for wit/. The component imports WASI, so the broker must
# run it with `wasi = true` (and `sharq plugin check` with `--wasi`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
{{tools}}
# The first build installs the pinned toolchains (minutes, once, into the checkout's cargo
# target directory; nothing system-wide).
[ -x "$COMPONENTIZE_PY" ] || sharq_install_plugin_tools

cd "$here"
"$COMPONENTIZE_PY" -d "$here/wit" -w strategy componentize app -o "$here/{{name}}.wasm" >/dev/null
echo "$here/{{name}}.wasm"
