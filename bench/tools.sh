# Sourced by the bench scripts (through bench/broker_run.sh; not run on its own): where the
# outside tools the benchmarks use are, and `require_tools`, which checks for them. Nothing here
# installs anything: bench/install-tools does, once, and a script that misses a tool stops
# before building or measuring and names the command that installs it.
#
#   PEER_CACHE   where the cargo-installed peer brokers are (default ~/.cache/sharq-bench/peers)
#   TOOLS        where the other cargo-installed tools are (default ~/.cache/sharq-bench/tools)
#
# Both are outside the repository so that a fresh clone reuses them and `cargo clean` does not
# throw them away.

BENCH_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/sharq-bench
PEER_CACHE=${PEER_CACHE:-$BENCH_CACHE/peers}
TOOLS=${TOOLS:-$BENCH_CACHE/tools}
# A version is a tilde requirement: the newest patch release of it.
RUMQTTD_VERSION=0.20.0
RMQTTD_VERSION=0.24
INFERNO_VERSION=0.12
# `cargo install` puts each crate and version under its own root, so that a version bump
# installs beside the old one instead of over it.
RUMQTTD=$PEER_CACHE/rumqttd-$RUMQTTD_VERSION/bin/rumqttd
RMQTTD=$PEER_CACHE/rmqttd-$RMQTTD_VERSION/bin/rmqttd
INFERNO=$TOOLS/inferno-$INFERNO_VERSION/bin
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

# Prints a Python that has matplotlib: $PYTHON (default python3), or the system's, where
# Debian's python3-matplotlib goes when pip may not install.
matplotlib_python() {
    local py
    for py in "${PYTHON:-python3}" /usr/bin/python3; do
        if "$py" -c 'import matplotlib' 2>/dev/null; then
            echo "$py"
            return 0
        fi
    done
    return 1
}

# True when TOOL is there. Names: mosquitto, rumqttd, rmqttd, inferno, matplotlib (for
# $PYTHON, default python3), paho (paho-mqtt 2.x), or any command (perf, jq, curl, openssl,
# taskset, heaptrack).
have_tool() { # TOOL
    case "$1" in
    mosquitto) [[ -x $MOSQUITTO ]] ;;
    rumqttd) [[ -x $RUMQTTD ]] ;;
    rmqttd) [[ -x $RMQTTD ]] ;;
    inferno) [[ -x $INFERNO/inferno-flamegraph && -x $INFERNO/inferno-collapse-perf ]] ;;
    matplotlib) matplotlib_python >/dev/null ;;
    paho) "${PYTHON:-python3}" -c 'import paho.mqtt' 2>/dev/null ;;
    *) command -v "$1" >/dev/null ;;
    esac
}

# Exits 1, naming every missing tool and the command that installs them, unless all are there.
require_tools() { # TOOL...
    local missing=() t
    for t in "$@"; do
        have_tool "$t" || missing+=("$t")
    done
    if ((${#missing[@]} > 0)); then
        echo "$(basename "$0"): missing ${missing[*]}; install with: bench/install-tools ${missing[*]}" >&2
        exit 1
    fi
}
