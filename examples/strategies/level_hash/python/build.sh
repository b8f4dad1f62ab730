#!/usr/bin/env bash
# Builds level_hash_python.wasm with componentize-py (CPython compiled to Wasm, plus app.py).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../tools.sh"
mkdir -p "$SHARQ_PLUGIN_OUT"
cd "$here"
"$COMPONENTIZE_PY" -d "$here/../../../../wit" -w strategy componentize app \
    -o "$SHARQ_PLUGIN_OUT/level_hash_python.wasm" >/dev/null
echo "$SHARQ_PLUGIN_OUT/level_hash_python.wasm"
