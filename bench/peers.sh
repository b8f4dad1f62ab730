# Sourced by the bench scripts (not run on its own): the peer brokers sharq is compared with,
# each installed on first use, pinned, into a cache directory outside the repository so that a
# fresh clone reuses them and `cargo clean` does not throw them away.
#
#   PEER_CACHE   where they go (default ~/.cache/sharq-bench/peers)
#
# After `ensure_peers`: $MOSQUITTO, $RUMQTTD, $RMQTTD are executables.

PEER_CACHE=${PEER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sharq-bench/peers}
# A version is a tilde requirement: the newest patch release of it.
RUMQTTD_VERSION=0.20.0
RMQTTD_VERSION=0.24
SUDO=
[[ $(id -u) != 0 ]] && SUDO=sudo

peer_log() { echo "[peers $(date -u +%H:%M:%S)] $*" >&2; }

apt_install() { # package...
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    ((${#missing[@]} == 0)) && return
    peer_log "installing ${missing[*]} (apt)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_mosquitto() {
    if ! command -v mosquitto >/dev/null && [[ ! -x /usr/sbin/mosquitto ]]; then
        apt_install mosquitto
        # Its service is never used (each run starts its own instance on its own port).
        $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
    fi
    MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
}

# `cargo install` into its own root per crate and version, so that a version bump installs
# beside the old one instead of over it.
cargo_install_pinned() { # crate version bin [cargo install flags...]
    local crate=$1 version=$2 bin=$3
    shift 3
    local root="$PEER_CACHE/$crate-$version"
    if [[ ! -x "$root/bin/$bin" ]]; then
        peer_log "installing $crate $version into $root (cargo install, several minutes)"
        # Its own target dir: the project's CARGO_TARGET_DIR must not collect a peer's build.
        CARGO_TARGET_DIR="$PEER_CACHE/build" CARGO_INCREMENTAL=0 \
            cargo install -q "$crate" --version "~$version" --root "$root" "$@" >&2 || return 1
        rm -rf "$PEER_CACHE/build"
    fi
    echo "$root/bin/$bin"
}

ensure_peers() {
    ensure_mosquitto
    # rumqttd's lock file pins crates that no longer build on current rustc, so no --locked.
    RUMQTTD=$(cargo_install_pinned rumqttd "$RUMQTTD_VERSION" rumqttd)
    # rmqtt builds protobuf definitions (protoc) and a bundled C library (cmake).
    apt_install protobuf-compiler cmake
    RMQTTD=$(cargo_install_pinned rmqttd "$RMQTTD_VERSION" rmqttd --locked)
}
