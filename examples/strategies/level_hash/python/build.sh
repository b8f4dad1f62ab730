#!/usr/bin/env bash
# Builds level_hash_python.wasm with componentize-py (CPython compiled to Wasm, plus app.py).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../tools.sh"
mkdir -p "$SHARQ_PLUGIN_OUT"
out="$SHARQ_PLUGIN_OUT/level_hash_python.wasm"
# Building takes minutes: skip it when the component is newer than everything it is made of.
if [ "$out" -nt "$here/app.py" ] && [ "$out" -nt "$0" ] && [ "$out" -nt "$here/../../tools.sh" ] \
    && [ "$out" -nt "$here/../../../../wit/sharq-dispatch.wit" ]; then
    echo "$out"
    exit 0
fi
cd "$here"
"$COMPONENTIZE_PY" -d "$here/../../../../wit" -w strategy componentize app \
    -o "$SHARQ_PLUGIN_OUT/level_hash_python.wasm" >/dev/null
echo "$SHARQ_PLUGIN_OUT/level_hash_python.wasm"
