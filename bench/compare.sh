#!/usr/bin/env bash
# sharq against Mosquitto, rumqttd and rmqtt; sharq's dispatch strategies against each other;
# and how sharq's cost per message grows with group size, groups, subscriptions and
# connections (the scale curves), in one run.
#
#   bench/install-tools         # once: Mosquitto, rumqttd, rmqttd, matplotlib (see there)
#   bench/compare.sh            # full run (about 30 minutes on 2 cores), rewrites
#                               # bench/results/compare.md
#   bench/compare.sh --quick    # smoke run: one round, small counts
#
# What it does, on a Debian/Ubuntu machine with Rust installed:
# 1. checks for the peer brokers it runs (Mosquitto from apt, rumqttd 0.20.0 and rmqttd 0.24
#    cargo-installed into ~/.cache/sharq-bench/peers, see bench/tools.sh), matplotlib and
#    taskset, and stops naming `bench/install-tools` if one is missing. No broker is ever
#    started as a service: each run starts its own instance (bench/broker_run.sh), with its own
#    config, on its own port;
# 2. builds sharq and the load generator (`examples/sharq_bench`) in release;
# 3. runs every scenario against every broker, rotating their order round by round, each run on
#    a freshly started broker; then the key scenarios again with the broker and the load
#    generator pinned to different cores (`taskset`), and over MQTT 5;
# 4. runs the same shared load once per sharq dispatch strategy (Mosquitto's one fixed
#    distribution as a reference row);
# 5. the scale curves, on every broker that runs them;
# 6. writes the comparison section of bench/results/compare.md (between the markers; the rest
#    of the file is kept) and the PNG plots under bench/plots/.
#
# Environment: ROUNDS (default 3; 1 with --quick), PORT (default 18831), BROKERS (default
# "sharq mosquitto rumqttd rmqtt"), ONLY (space-separated sections to run: h2h pinned v5
# strategies scale; default all), IDS (only these scenario ids of those sections, e.g.
# "shared_q0_64 shared_q0_64@pinned"), CARGO_TARGET_DIR, PYTHON, PEER_CACHE. A partial run
# keeps the other rows of bench/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
BUILD=1
for arg in "$@"; do
    case "$arg" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;; # use the binaries already in the target dir
    -h | --help)
        sed -n '2,31p' "$0"
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
read -r -a BROKERS <<<"${BROKERS:-sharq mosquitto rumqttd rmqtt}"
ONLY=${ONLY:-h2h pinned v5 strategies scale}
# Message counts: full / quick.
if [[ $QUICK == 1 ]]; then N=1; else N=2; fi

log() { echo "[compare $(date -u +%H:%M:%S)] $*" >&2; }
section() { [[ " $ONLY " == *" $1 "* ]]; }

# --- 1. tools -----------------------------------------------------------------------------
# shellcheck source=broker_run.sh
. bench/broker_run.sh
needed=(matplotlib)
section pinned && needed+=(taskset)
# The strategy runs have Mosquitto as their reference row whatever BROKERS says.
section strategies && needed+=(mosquitto)
for b in "${BROKERS[@]}"; do
    case "$b" in
    sharq) ;;
    rmqtt) needed+=(rmqttd) ;;
    *) needed+=("$b") ;;
    esac
done
require_tools "${needed[@]}"
PY=$(matplotlib_python)

# --- 2. build -----------------------------------------------------------------------------
if [[ $BUILD == 1 ]]; then
    log "building sharq and sharq_bench (release)"
    cargo build --release --bin sharq --example sharq_bench >&2
fi
SHARQ="$TARGET/release/sharq"
BENCH="$TARGET/release/examples/sharq_bench"

# Every broker gets the same limits where it has the same knob: 64 messages in flight per
# client, 100,000 queued per client (the defaults are lower — sharq 10,000, Mosquitto and rmqtt
# 1,000 — and then drop QoS 1 messages when the load generator's subscribers fall behind its
# publishers, which would measure the queue limit rather than the broker) and, for sharq's
# shared-group queue, 400,000 (what the peers queue for the 4 members together; at its default
# of 100,000 sharq drops QoS 0 at unlimited rate where they queue), queued bytes
# unlimited in Mosquitto (its default) and 1 GiB in sharq (its defaults, 64 MiB per session
# and 256 MiB per shared group queue, hold only 16k and 64k messages of 4 KiB),
# TCP_NODELAY, no persistence, no $SYS traffic, room for 10k idle connections and more.
# rumqttd has no per-client queue limit to set (its router keeps a commitlog per filter);
# rmqtt's per-client dequeue rate limit stays at its default (unlimited).
write_sharq_config() { # strategy
    local default=$1 rule=
    if [[ $1 == hash_topic_levels ]]; then
        # It needs to know which levels form the key: the publisher level of
        # sharq-bench/<run>/p<i>.
        default=round_robin
        rule=$'\n[[shared.groups]]\nname = "*"\nstrategy = "hash_topic_levels"\nparams = { levels = "2" }'
    fi
    {
        bench_sharq_config
        echo "default_strategy = \"$default\"$rule"
    } >"$work/sharq.toml"
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
# rumqttd listens per protocol: [v4.1] for 3.1.1, [v5.1] for 5, here on the same port.
write_rumqttd_config() { # 3.1.1|5
    local section=v4
    [[ $1 == 5 ]] && section=v5
    cat >"$work/rumqttd.toml" <<EOF
id = 0

[router]
id = 0
max_connections = 100000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[$section.1]
name = "$section-1"
listen = "127.0.0.1:$PORT"
next_connection_delay_ms = 0
    [$section.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 1048576
    max_inflight_count = 64
    dynamic_filters = true
EOF
}
mkdir -p "$work/rmqtt-plugins"
cat >"$work/rmqtt-plugins/rmqtt-shared-subscription.toml" <<EOF
strategy = "round_robin"
EOF
cat >"$work/rmqtt.toml" <<EOF
node.id = 1
node.busy.check_enable = false
rpc.server_addr = "127.0.0.1:$((PORT + 1))"
log.to = "console"
log.level = "warn"
plugins.dir = "$work/rmqtt-plugins/"
plugins.default_startups = ["rmqtt-shared-subscription"]
mqtt.max_sessions = 0
listener.tcp.external.addr = "127.0.0.1:$PORT"
listener.tcp.external.max_connections = 1024000
listener.tcp.external.max_handshaking_limit = 500
listener.tcp.external.max_packet_size = "1MB"
listener.tcp.external.backlog = 1024
listener.tcp.external.nodelay = true
listener.tcp.external.allow_anonymous = true
listener.tcp.external.allow_zero_keepalive = true
listener.tcp.external.max_inflight = 64
listener.tcp.external.max_mqueue_len = 100000
listener.tcp.external.max_subscriptions = 0
EOF

# With PIN set, the broker runs on CPU 0 (start_broker) and the load generator on CPU 1.
PIN=
pin_prefix() { # cpu
    if [[ -n $PIN ]]; then echo "taskset -c $1"; fi
}

# bench/broker_run.sh gives every broker the hard open-file limit as its soft one: 10k idle
# connections need 10k descriptors in the broker (and in sharq_bench, which raises its own).
start_broker() { # broker [strategy] [protocol]
    # Read by run_broker (bench/broker_run.sh): pinned runs put the broker on CPU 0.
    local BROKER_CPUS=
    [[ -n $PIN ]] && BROKER_CPUS=0
    case "$1" in
    sharq)
        write_sharq_config "${2:-round_robin}"
        start_sharq "$work/sharq.toml" "$work/broker.log" 10
        ;;
    mosquitto) start_mosquitto "$work/mosquitto.conf" "$work/broker.log" 10 ;;
    rumqttd)
        write_rumqttd_config "${3:-3.1.1}"
        start_rumqttd "$work/rumqttd.toml" "$work/broker.log" 10
        ;;
    rmqtt) start_rmqtt "$work/rmqtt.toml" "$work/broker.log" 10 ;;
    esac
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
    local args=("$@") protocol=3.1.1 i
    for ((i = 0; i < ${#args[@]} - 1; i++)); do
        [[ ${args[i]} == --protocol ]] && protocol=${args[i + 1]}
    done
    start_broker "$broker" "$strategy" "$protocol"
    local run_args=("${args[@]}")
    # sharq_bench reads the broker's CPU time itself over the measured phase (shared, fanout),
    # and its memory (idle).
    case "${args[0]}" in idle | shared | fanout) run_args+=(--broker-pid "$broker_pid") ;; esac
    local load t0 line pin
    load=$(cut -d' ' -f1 /proc/loadavg)
    pin=$(pin_prefix 1)
    t0=$(cpu_ticks)
    # shellcheck disable=SC2086 # $pin is a command prefix or nothing
    line=$($pin "$BENCH" "${run_args[@]}" --port "$PORT" --label "$id" || true)
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

# Runs scenarios ("id|sharq_bench args") on every broker, ROUNDS times, rotating the brokers'
# order each round so that none always runs first or after the same neighbour. With IDS set,
# only the scenarios it names.
run_rounds() { # scenario...
    local round s id k b args order strategy
    for round in $(seq 1 "$ROUNDS"); do
        order=()
        for ((k = 0; k < ${#BROKERS[@]}; k++)); do
            order+=("${BROKERS[(k + round - 1) % ${#BROKERS[@]}]}")
        done
        for s in "$@"; do
            id=${s%%|*}
            [[ -z ${IDS:-} || " $IDS " == *" $id "* ]] || continue
            read -r -a args <<<"${s#*|}"
            for b in "${order[@]}"; do
                # sharq with its default strategy, the Wasm round robin; the peers with theirs.
                strategy=-
                [[ $b == sharq ]] && strategy=round_robin
                measure "$id" "$b" "$strategy" "$round" -- "${args[@]}"
            done
        done
    done
}

# --- 3. head to head ----------------------------------------------------------------------
# id and sharq_bench arguments (--port and --label are added). Shared groups: 2 publishers →
# 1 group × 4 members unless stated.
M=$((50000 * N))
Q0_64="shared --publishers 2 --groups 1 --members 4 --qos 0 --payload 64 --messages $((M * 2)) --max-secs 8"
Q1_64="shared --publishers 2 --groups 1 --members 4 --qos 1 --payload 64 --messages $M --max-secs 8"
R10K_Q1="shared --publishers 2 --groups 1 --members 4 --qos 1 --payload 64 --rate 10000 --messages $((10000 * (N + 1))) --max-secs 12"
Q1_4K="shared --publishers 2 --groups 1 --members 4 --qos 1 --payload 4k --messages $((M / 2)) --max-secs 8"
scenarios=(
    "shared_q0_64|$Q0_64"
    "shared_q1_64|$Q1_64"
    "shared_q2_64|shared --publishers 2 --groups 1 --members 4 --qos 2 --payload 64 --messages $((M / 2)) --max-secs 8"
    "shared_q0_4k|shared --publishers 2 --groups 1 --members 4 --qos 0 --payload 4k --messages $M --max-secs 8"
    "shared_q1_4k|$Q1_4K"
    "shared_q1_2x4|shared --publishers 4 --groups 2 --members 4 --qos 1 --payload 64 --messages $M --max-secs 8"
    "rate10k_q0|shared --publishers 2 --groups 1 --members 4 --qos 0 --payload 64 --rate 10000 --messages $((10000 * (N + 1))) --max-secs 12"
    "rate10k_q1|$R10K_Q1"
    "rate10k_q2|shared --publishers 2 --groups 1 --members 4 --qos 2 --payload 64 --rate 10000 --messages $((10000 * (N + 1))) --max-secs 12"
    "rate10k_q1_4k|shared --publishers 2 --groups 1 --members 4 --qos 1 --payload 4k --rate 10000 --messages $((10000 * (N + 1))) --max-secs 12"
    "fanout_q1|fanout --publishers 2 --subscribers 4 --qos 1 --payload 64 --messages $((M / 2)) --max-secs 8"
    "churn_q1|shared --publishers 2 --groups 1 --members 4 --qos 1 --payload 64 --rate 5000 --messages $((5000 * (N + 2))) --max-secs 15 --churn 3 --churn-down-secs 0.5"
    "churn_q1_persistent|shared --publishers 2 --groups 1 --members 4 --qos 1 --payload 64 --rate 5000 --messages $((5000 * (N + 2))) --max-secs 15 --churn 3 --churn-down-secs 0.5 --persistent-members"
    "idle_10k|idle --connections $([[ $QUICK == 1 ]] && echo 2000 || echo 10000) --concurrency 100 --settle-secs 2"
    "sub_churn|sub-churn --clients 4 --groups 16 --pairs $((5000 * N)) --max-secs 8"
    "sub_churn_new_groups|sub-churn --clients 4 --groups 16 --pairs $((2000 * N)) --max-secs 10 --new-groups"
)
if section h2h; then
    log "head to head: ${#scenarios[@]} scenarios × ${#BROKERS[@]} brokers × $ROUNDS rounds"
    run_rounds "${scenarios[@]}"
fi

# The key scenarios with the broker on CPU 0 and the load generator on CPU 1: on 2 shared
# cores the scheduler decides how much CPU a broker gets next to its clients, and a broker
# that burns less leaves its clients more. Pinning takes that out of the ratios.
if section pinned; then
    log "pinned (taskset): broker on CPU 0, load generator on CPU 1"
    PIN=1
    run_rounds "shared_q0_64@pinned|$Q0_64" "shared_q1_64@pinned|$Q1_64" \
        "rate10k_q1@pinned|$R10K_Q1" "shared_q1_4k@pinned|$Q1_4K"
    PIN=
fi

# MQTT 5 on every broker (rumqttd through its v5 listener).
if section v5; then
    log "MQTT 5"
    run_rounds "shared_q0_64@v5|$Q0_64 --protocol 5" "shared_q1_64@v5|$Q1_64 --protocol 5" \
        "rate10k_q1@v5|$R10K_Q1 --protocol 5"
fi

# --- 4. strategies ------------------------------------------------------------------------
# 8 publishers (so hashing on client id or topic has 8 keys to spread), 1 group × 4 members,
# QoS 1, unlimited rate.
# Twice: at unlimited rate (throughput; every member's window fills, and a full member is
# skipped whatever the strategy chose) and at a fixed 10k msg/s (each strategy's own choices).
strategy_args=(shared --publishers 8 --groups 1 --members 4 --qos 1 --payload 64 --messages $((M / 2)) --max-secs 10)
strategy_rate_args=(shared --publishers 8 --groups 1 --members 4 --qos 1 --payload 64 --rate 10000 --messages $((10000 * (N + 1))) --max-secs 12)
if section strategies; then
    for strategy in round_robin round_robin_per_publisher random sticky hash_clientid hash_topic \
        hash_topic_levels least_inflight weighted failover native_round_robin; do
        measure "strategy" sharq "$strategy" 1 -- "${strategy_args[@]}"
        measure "strategy_10k" sharq "$strategy" 1 -- "${strategy_rate_args[@]}"
    done
    measure "strategy" mosquitto "(mosquitto)" 1 -- "${strategy_args[@]}"
    measure "strategy_10k" mosquitto "(mosquitto)" 1 -- "${strategy_rate_args[@]}"
fi

# --- 5. scale curves ----------------------------------------------------------------------
# QoS 1, 64 B, 2 publishers, unlimited rate; one parameter varied at a time from the base
# (1 group × 4 members, nothing else on the broker). Ids are scale_<axis>_<value>.
S=$((25000 * N))
read -r -a SCALE_BASE <<<"--publishers 2 --qos 1 --payload 64 --messages $S --max-secs 10"
if [[ $QUICK == 1 ]]; then
    members_axis=(4 64 256) groups_axis=(1 100 1000) subs_axis=(1000 10000 100000) conns_axis=(0 2000)
else
    members_axis=(4 64 1024) groups_axis=(1 100 10000) subs_axis=(1000 100000 1000000) conns_axis=(0 10000)
fi
if section scale; then
    scale=()
    for m in "${members_axis[@]}"; do
        scale+=("scale_members_$m|shared ${SCALE_BASE[*]} --groups 1 --members $m")
    done
    for g in "${groups_axis[@]}"; do
        scale+=("scale_groups_$g|shared ${SCALE_BASE[*]} --group-topics --groups $g --members 4")
    done
    for n in "${subs_axis[@]}"; do
        scale+=("scale_subs_$n|shared ${SCALE_BASE[*]} --groups 1 --members 4 --background-subs $n")
    done
    for c in "${conns_axis[@]}"; do
        scale+=("scale_conns_$c|shared ${SCALE_BASE[*]} --groups 1 --members 4 --idle-connections $c")
    done
    log "scale curves: ${#scale[@]} points × ${#BROKERS[@]} brokers × $ROUNDS rounds"
    run_rounds "${scale[@]}"
    # Group size against sharq's other strategies: round robin and the hash strategies must
    # not cost more per message as the group grows.
    for round in $(seq 1 "$ROUNDS"); do
        for strategy in hash_clientid hash_topic least_inflight native_round_robin; do
            for m in "${members_axis[@]}"; do
                measure "scale_members_$m" sharq "$strategy" "$round" -- \
                    shared "${SCALE_BASE[@]}" --groups 1 --members "$m"
            done
        done
    done
fi

# --- 6. report ----------------------------------------------------------------------------
# A run of some sections only keeps the other sections' rows (and commands) from the last run.
"$PY" bench/report.py merge "$results" bench/results.jsonl "$work/merged.jsonl"
mv "$work/merged.jsonl" bench/results.jsonl
touch bench/results.commands
awk -F'|' 'NR == FNR {measured[$1] = 1; next} !($1 in measured)' "$commands" bench/results.commands \
    >"$work/old_commands"
cat "$work/old_commands" "$commands" >bench/results.commands
machine=$(
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- CPU: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), nproc = $(nproc)"
    echo "- memory: $(free -h | awk '/^Mem:/ {print $2}') total"
    echo "- kernel: $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "- sharq: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- . ':(exclude)bench/results.jsonl' ':(exclude)bench/results.commands' ':(exclude)bench/RESULTS.md' ':(exclude)bench/results' ':(exclude)bench/plots' 2>/dev/null || echo ' (with uncommitted changes)'), $(rustc --version)"
    echo "- peers: Mosquitto $("$MOSQUITTO" -h 2>/dev/null | head -1 | sed 's/^mosquitto //'); rumqttd $RUMQTTD_VERSION and rmqttd $RMQTTD_VERSION.x (cargo install, bench/install-tools)"
    echo "- load average at the start of the runs: $(head -1 "$results" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["load_before"])')"
    echo "- mode: $([[ $QUICK == 1 ]] && echo 'quick (--quick)' || echo full), $ROUNDS round(s), sections: $ONLY"
)
# The configurations as the head-to-head runs used them.
write_sharq_config round_robin
write_rumqttd_config 3.1.1
"$PY" bench/report.py report bench/results.jsonl bench/results.commands bench/results/compare.md bench/plots \
    "$machine" "sharq's configuration (the strategy runs change \`default_strategy\`)=$work/sharq.toml" \
    "Mosquitto's=$work/mosquitto.conf" \
    "rumqttd's (for MQTT 5 the section is \`[v5.1]\`)=$work/rumqttd.toml" \
    "rmqtt's=$work/rmqtt.toml" \
    "rmqtt's shared-subscription plugin (\`rmqtt-plugins/rmqtt-shared-subscription.toml\`)=$work/rmqtt-plugins/rmqtt-shared-subscription.toml"
log "wrote bench/results/compare.md and bench/plots/"
