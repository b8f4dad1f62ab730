#!/usr/bin/env bash
# Builds level_hash in all four languages; prints the four component paths. The toolchains
# must be installed first (.ci/install-test-tools, or `. ../tools.sh && sharq_install_plugin_tools`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
for language in rust c python js; do
    "$here/$language/build.sh"
done
