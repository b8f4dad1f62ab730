#!/usr/bin/env bash
# Builds level_hash_js.wasm with componentize-js (the StarlingMonkey JS engine plus
# strategy.js, pre-initialised). Stdio and HTTP are left out of the component; the engine still
# imports WASI clocks and random, which sharq grants only as an empty context (`wasi = true`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../tools.sh"
mkdir -p "$SHARQ_PLUGIN_OUT"
out="$SHARQ_PLUGIN_OUT/level_hash_js.wasm"
# Building takes minutes: skip it when the component is newer than everything it is made of.
if [ "$out" -nt "$here/strategy.js" ] && [ "$out" -nt "$0" ] && [ "$out" -nt "$here/../../tools.sh" ] \
    && [ "$out" -nt "$here/../../../../wit/sharq-dispatch.wit" ]; then
    echo "$out"
    exit 0
fi
"$COMPONENTIZE_JS" "$here/strategy.js" --wit "$here/../../../../wit" --world-name strategy \
    --disable stdio http fetch-event \
    -o "$SHARQ_PLUGIN_OUT/level_hash_js.wasm" >/dev/null
echo "$SHARQ_PLUGIN_OUT/level_hash_js.wasm"
