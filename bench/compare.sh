#!/usr/bin/env bash
# sharq against Mosquitto, and sharq's dispatch strategies against each other, in one run.
#
#   bench/compare.sh            # full run (about 10 minutes on 2 cores), rewrites bench/RESULTS.md
#   bench/compare.sh --quick    # smoke run: one round, small counts (about 4 minutes)
#
# What it does, on a fresh Debian/Ubuntu machine with Rust installed:
# 1. installs Mosquitto (apt) and matplotlib (pip, or apt's python3-matplotlib) if missing;
#    Mosquitto is never started as a service: each run starts its own instance with its own
#    config on its own port;
# 2. builds sharq and the load generator (`examples/sharq_bench`) in release;
# 3. runs every scenario against both brokers, alternating (sharq then Mosquitto in odd rounds,
#    Mosquitto then sharq in even ones), each run on a freshly started broker;
# 4. runs the same shared load once per sharq dispatch strategy (Mosquitto's one fixed
#    distribution as a reference row);
# 5. writes the "sharq vs Mosquitto" section of bench/RESULTS.md (between the markers; the rest
#    of the file is kept) and the PNG plots under bench/plots/.
#
# Environment: ROUNDS (default 3; 1 with --quick), PORT (default 18831), CARGO_TARGET_DIR, PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
BUILD=1
for arg in "$@"; do
    case "$arg" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;; # use the binaries already in the target dir
    -h | --help)
        sed -n '2,20p' "$0"
        exit 0
        ;;
    *)
        echo "unknown argument: $arg" >&2
        exit 2
        ;;
    esac
done
ROUNDS=${ROUNDS:-$([[ $QUICK == 1 ]] && echo 1 || echo 3)}
PORT=${PORT:-18831}
TARGET=${CARGO_TARGET_DIR:-target}
PY=${PYTHON:-python3}
# Message counts: full / quick.
if [[ $QUICK == 1 ]]; then N=1; else N=2; fi

log() { echo "[compare $(date -u +%H:%M:%S)] $*" >&2; }

# --- 1. tools -----------------------------------------------------------------------------
SUDO=
[[ $(id -u) != 0 ]] && SUDO=sudo
if ! command -v mosquitto >/dev/null && [[ ! -x /usr/sbin/mosquitto ]]; then
    log "installing mosquitto"
    $SUDO apt-get update -qq
    # The package's service is not wanted: policy-rc.d-free systems may start it; we stop it
    # right after and never use port 1883.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto >/dev/null
    $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
    log "installing matplotlib"
    if ! "$PY" -m pip install -q matplotlib 2>/dev/null; then
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-matplotlib >/dev/null
        PY=/usr/bin/python3
    fi
fi

# --- 2. build -----------------------------------------------------------------------------
if [[ $BUILD == 1 ]]; then
    log "building sharq and sharq_bench (release)"
    cargo build --release --bin sharq --example sharq_bench >&2
fi
SHARQ="$TARGET/release/sharq"
BENCH="$TARGET/release/examples/sharq_bench"

# shellcheck source=broker_run.sh
. bench/broker_run.sh

# Both brokers get the same limits where they have the same knob: 64 messages in flight per
# client, 100,000 queued per client (both default to less — sharq 10,000, Mosquitto 1,000 — and
# then drop QoS 1 messages when the load generator's subscribers fall behind its publishers,
# which would measure the queue limit rather than the broker), queued bytes unlimited in
# Mosquitto (its default) and 1 GiB in sharq (its defaults, 64 MiB per session and 256 MiB per
# shared group queue, hold only 16k and 64k messages of 4 KiB),
# TCP_NODELAY, no persistence, no $SYS traffic.
write_sharq_config() { # strategy
    local default=$1 rule=
    if [[ $1 == hash_topic_levels ]]; then
        # It needs to know which levels form the key: the publisher level of
        # sharq-bench/<run>/p<i>.
        default=round_robin
        rule=$'\n[[shared.groups]]\nname = "*"\nstrategy = "hash_topic_levels"\nparams = { levels = "2" }'
    fi
    cat >"$work/sharq.toml" <<EOF
[server]
listeners = ["127.0.0.1:$PORT"]
log = "warn"
sys_interval_secs = 0

[limits]
max_inflight = 64
max_queued_messages = 100000
max_queued_bytes = 1073741824
max_connections = 100000

[shared]
group_queue_max_bytes = 1073741824
default_strategy = "$default"$rule
EOF
}
cat >"$work/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
max_inflight_messages 64
max_queued_messages 100000
set_tcp_nodelay true
persistence false
sys_interval 0
log_dest stderr
log_type error
log_type warning
EOF

start_broker() { # sharq|mosquitto [strategy]
    require_free_port
    # 10k idle connections need 10k descriptors in the broker (and in sharq_bench, which raises
    # its own soft limit to the hard one).
    local nofile
    nofile=$(ulimit -Hn)
    case "$1" in
    sharq)
        write_sharq_config "${2:-round_robin}"
        (ulimit -n "$nofile" && exec "$SHARQ" --config "$work/sharq.toml") >>"$work/broker.log" 2>&1 &
        ;;
    mosquitto)
        (ulimit -n "$nofile" && exec "$MOSQUITTO" -c "$work/mosquitto.conf") >>"$work/broker.log" 2>&1 &
        ;;
    esac
    broker_pid=$!
    wait_for_broker "$work/broker.log" 5
}

hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$broker_pid/status"; }

results="$work/results.jsonl"
: >"$results"
commands="$work/commands.txt"
: >"$commands"

# One measured run: fresh broker, the load generator, CPU time and peak RSS of the broker.
measure() { # id broker strategy round -- sharq_bench args...
    local id=$1 broker=$2 strategy=$3 round=$4
    shift 5
    start_broker "$broker" "$strategy"
    local args=("$@")
    [[ "${args[0]}" == idle ]] && args+=(--broker-pid "$broker_pid")
    local load t0 line
    load=$(cut -d' ' -f1 /proc/loadavg)
    t0=$(cpu_ticks)
    line=$("$BENCH" "${args[@]}" --port "$PORT" --label "$id" || true)
    local t1 hwm
    t1=$(cpu_ticks)
    hwm=$(hwm_kib)
    stop_broker
    if [[ -z "$line" ]]; then
        log "$id $broker: sharq_bench printed nothing"
        return
    fi
    echo "$line" | "$PY" bench/report.py annotate "$id" "$broker" "$strategy" "$round" "$load" \
        "$t0" "$t1" "$(getconf CLK_TCK)" "$hwm" >>"$results"
    "$PY" bench/report.py brief "$(tail -1 "$results")" >&2
    grep -qxF "$id|${args[*]}" "$commands" || echo "$id|${args[*]}" >>"$commands"
}

# --- 3. head to head ----------------------------------------------------------------------
# id and sharq_bench arguments (--port and --label are added). Shared groups: 2 publishers →
# 1 group × 4 members unless stated.
M=$((50000 * N))
scenarios=(
    "shared_q0_64|shared --publishers 2 --groups 1 --members 4 --qos 0 --payload 64 --messages $((M * 2)) --max-secs 8"
    "shared_q1_64|shared --publishers 2 --groups 1 --members 4 --qos 1 --payload 64 --messages $M --max-secs 8"
    "shared_q2_64|shared --publishers 2 --groups 1 --members 4 --qos 2 --payload 64 --messages $((M / 2)) --max-secs 8"
    "shared_q0_4k|shared --publishers 2 --groups 1 --members 4 --qos 0 --payload 4k --messages $M --max-secs 8"
    "shared_q1_4k|shared --publishers 2 --groups 1 --members 4 --qos 1 --payload 4k --messages $((M / 2)) --max-secs 8"
    "shared_q1_2x4|shared --publishers 4 --groups 2 --members 4 --qos 1 --payload 64 --messages $M --max-secs 8"
    "rate10k_q0|shared --publishers 2 --groups 1 --members 4 --qos 0 --payload 64 --rate 10000 --messages $((10000 * (N + 1))) --max-secs 12"
    "rate10k_q1|shared --publishers 2 --groups 1 --members 4 --qos 1 --payload 64 --rate 10000 --messages $((10000 * (N + 1))) --max-secs 12"
    "rate10k_q2|shared --publishers 2 --groups 1 --members 4 --qos 2 --payload 64 --rate 10000 --messages $((10000 * (N + 1))) --max-secs 12"
    "rate10k_q1_4k|shared --publishers 2 --groups 1 --members 4 --qos 1 --payload 4k --rate 10000 --messages $((10000 * (N + 1))) --max-secs 12"
    "fanout_q1|fanout --publishers 2 --subscribers 4 --qos 1 --payload 64 --messages $((M / 2)) --max-secs 8"
    "churn_q1|shared --publishers 2 --groups 1 --members 4 --qos 1 --payload 64 --rate 5000 --messages $((5000 * (N + 2))) --max-secs 15 --churn 3 --churn-down-secs 0.5"
    "churn_q1_persistent|shared --publishers 2 --groups 1 --members 4 --qos 1 --payload 64 --rate 5000 --messages $((5000 * (N + 2))) --max-secs 15 --churn 3 --churn-down-secs 0.5 --persistent-members"
    "idle_10k|idle --connections $([[ $QUICK == 1 ]] && echo 2000 || echo 10000) --concurrency 100 --settle-secs 2"
    "sub_churn|sub-churn --clients 4 --groups 16 --pairs $((5000 * N)) --max-secs 8"
    "sub_churn_new_groups|sub-churn --clients 4 --groups 16 --pairs $((2000 * N)) --max-secs 10 --new-groups"
)
for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2 == 1)); then order=(sharq mosquitto); else order=(mosquitto sharq); fi
    for s in "${scenarios[@]}"; do
        id=${s%%|*}
        read -r -a args <<<"${s#*|}"
        for broker in "${order[@]}"; do
            # sharq with its default strategy, the Wasm round robin.
            strategy=round_robin
            [[ $broker == mosquitto ]] && strategy=-
            measure "$id" "$broker" "$strategy" "$round" -- "${args[@]}"
        done
    done
done

# --- 4. strategies ------------------------------------------------------------------------
# 8 publishers (so hashing on client id or topic has 8 keys to spread), 1 group × 4 members,
# QoS 1, unlimited rate.
# Twice: at unlimited rate (throughput; every member's window fills, and a full member is
# skipped whatever the strategy chose) and at a fixed 10k msg/s (each strategy's own choices).
strategy_args=(shared --publishers 8 --groups 1 --members 4 --qos 1 --payload 64 --messages $((M / 2)) --max-secs 10)
strategy_rate_args=(shared --publishers 8 --groups 1 --members 4 --qos 1 --payload 64 --rate 10000 --messages $((10000 * (N + 1))) --max-secs 12)
for strategy in round_robin round_robin_per_publisher random sticky hash_clientid hash_topic \
    hash_topic_levels least_inflight weighted failover native_round_robin; do
    measure "strategy" sharq "$strategy" 1 -- "${strategy_args[@]}"
    measure "strategy_10k" sharq "$strategy" 1 -- "${strategy_rate_args[@]}"
done
measure "strategy" mosquitto "(mosquitto)" 1 -- "${strategy_args[@]}"
measure "strategy_10k" mosquitto "(mosquitto)" 1 -- "${strategy_rate_args[@]}"

# --- 5. report ----------------------------------------------------------------------------
cp "$results" bench/results.jsonl
machine=$(
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- CPU: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), nproc = $(nproc)"
    echo "- memory: $(free -h | awk '/^Mem:/ {print $2}') total"
    echo "- kernel: $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "- sharq: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- . ':(exclude)bench/results.jsonl' ':(exclude)bench/RESULTS.md' ':(exclude)bench/plots' 2>/dev/null || echo ' (with uncommitted changes)'), $(rustc --version)"
    echo "- Mosquitto: $("$MOSQUITTO" -h 2>/dev/null | head -1 | sed 's/^mosquitto //')"
    echo "- load average at the start of the runs: $(head -1 "$results" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["load_before"])')"
    echo "- mode: $([[ $QUICK == 1 ]] && echo 'quick (--quick)' || echo full), $ROUNDS round(s)"
)
"$PY" bench/report.py report bench/results.jsonl "$commands" bench/RESULTS.md bench/plots \
    "$machine" "$work/sharq.toml" "$work/mosquitto.conf"
log "wrote bench/RESULTS.md and bench/plots/"
