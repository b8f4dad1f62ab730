#!/usr/bin/env bash
# Builds {{name}}.wasm from plugin.js with componentize-js: the StarlingMonkey JavaScript engine
# plus plugin.js, pre-initialised. Stdio and HTTP are left out; the engine still imports WASI
# clocks and random, so the broker must run it with `wasi = true` (and `sharq plugin check`
# with `--wasi`), which grants them only as an empty context.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
{{tools}}
# The first build installs the pinned toolchains (minutes, once, into the checkout's cargo
# target directory; nothing system-wide).
[ -x "$COMPONENTIZE_JS" ] || sharq_install_plugin_tools

"$COMPONENTIZE_JS" "$here/plugin.js" --wit "$here/wit" --world-name strategy \
    --disable stdio http fetch-event -o "$here/{{name}}.wasm" >/dev/null
echo "$here/{{name}}.wasm"
