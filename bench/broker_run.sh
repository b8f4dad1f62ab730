# Sourced by the bench scripts (not run on its own): a scratch directory `$work` removed on
# exit, and one broker process at a time (`$broker_pid`) on 127.0.0.1:$PORT, stopped on exit
# too, so an interrupted run never leaves a broker behind to be measured by the next one. Every
# broker a bench script measures, sharq or a peer, is started here (`start_sharq`,
# `start_mosquitto`, `start_rumqttd`, `start_rmqtt`, or `run_broker` for anything else) and
# stopped here (`stop_broker`). Also sources bench/tools.sh (`require_tools`, the peers' paths).
#
#   BROKER_CPUS   a taskset CPU list every broker started here runs on (e.g. 0); default none

# shellcheck source=tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

work=$(mktemp -d)
broker_pid=

# SIGTERM, and SIGKILL after 10 s: an rmqttd run once hung in its shutdown and held the whole
# comparison for a quarter of an hour.
stop_broker() {
    if [[ -n "$broker_pid" ]]; then
        kill "$broker_pid" 2>/dev/null || true
        local waited=0
        while kill -0 "$broker_pid" 2>/dev/null && ((waited < 100)); do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$broker_pid" 2>/dev/null; then
            echo "broker $broker_pid did not stop in 10 s after SIGTERM: SIGKILL" >&2
            kill -9 "$broker_pid" 2>/dev/null || true
        fi
        wait "$broker_pid" 2>/dev/null || true
    fi
    broker_pid=
}

# A crash on purpose (the durability benchmarks): SIGKILL, no shutdown.
kill9_broker() {
    if [[ -n "$broker_pid" ]]; then
        kill -9 "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    broker_pid=
}

cleanup() {
    stop_broker
    rm -rf "$work"
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# Something already listening on $PORT would be measured instead of the broker under test.
require_free_port() {
    if port_open; then
        echo "port $PORT is already in use; set PORT=..." >&2
        exit 1
    fi
}

# Call right after starting the broker in the background and setting broker_pid: waits up to
# SECS seconds for $PORT to accept connections; if the broker exits or never listens, prints
# the end of its LOG and exits.
wait_for_broker() { # LOG SECS
    local deadline=$((SECONDS + $2))
    until port_open; do
        if ! kill -0 "$broker_pid" 2>/dev/null || ((SECONDS >= deadline)); then
            echo "the broker did not open port $PORT; its log:" >&2
            tail -20 "$1" >&2
            exit 1
        fi
        sleep 0.05
    done
}

# Starts CMD in the background as the broker ($broker_pid), its output appended to LOG, and
# waits up to WAIT_SECS for $PORT to accept connections (0: does not wait; the caller times the
# start itself). The broker gets the hard open-file limit as its soft one (10k idle
# connections need 10k descriptors) and runs under `taskset -c $BROKER_CPUS` if that is set;
# with -C DIR it runs in DIR (rmqttd finds its plugin configs relative to it).
run_broker() { # [-C DIR] LOG WAIT_SECS CMD [ARG...]
    local dir=.
    if [[ $1 == -C ]]; then
        dir=$2
        shift 2
    fi
    local log=$1 secs=$2
    shift 2
    require_free_port
    local pin=()
    [[ -n ${BROKER_CPUS:-} ]] && pin=(taskset -c "$BROKER_CPUS")
    (
        ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
        cd "$dir" && exec "${pin[@]}" "$@"
    ) >>"$log" 2>&1 &
    broker_pid=$!
    if ((secs > 0)); then
        wait_for_broker "$log" "$secs"
    fi
}

# sharq: the binary $SHARQ (set by the script; `SHARQ=other/sharq start_sharq ...` for an A/B).
start_sharq() { # CONFIG [LOG] [WAIT_SECS]
    run_broker "${2:-$work/broker.log}" "${3:-30}" "${SHARQ:?SHARQ is not set}" --config "$1"
}

start_mosquitto() { # CONFIG [LOG] [WAIT_SECS]
    require_tools mosquitto
    run_broker "${2:-$work/broker.log}" "${3:-30}" "$MOSQUITTO" -c "$1"
}

start_rumqttd() { # CONFIG [LOG] [WAIT_SECS]
    require_tools rumqttd
    run_broker "${2:-$work/broker.log}" "${3:-30}" "$RUMQTTD" -q -c "$1"
}

# Runs in the config's directory: that is where its `plugins.dir` is expected.
start_rmqtt() { # CONFIG [LOG] [WAIT_SECS]
    require_tools rmqttd
    run_broker -C "$(dirname "$1")" "${2:-$work/broker.log}" "${3:-30}" "$RMQTTD" -f "$1"
}

# Started as root, Mosquitto drops to the `mosquitto` user: without this it cannot write its
# database ("Error saving in-memory database ... Permission denied") or read its certificates.
give_to_mosquitto() { # PATH...
    if [[ $(id -u) == 0 ]] && id mosquitto >/dev/null 2>&1; then
        chown mosquitto: "$@"
    fi
}

# The broker's user+system CPU time in clock ticks: CPU per message is far less sensitive to
# other load on a shared machine than wall-clock throughput.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$broker_pid/stat"; }

# Waits up to IDLE_WAIT seconds (default 120) until no compiler runs on the machine (rustc, cc1:
# someone else's build would skew the numbers), and prints what it found: `idle` or
# `busy: N compilers, load L` — record it next to the numbers.
wait_idle() {
    local deadline=$((SECONDS + ${IDLE_WAIT:-120}))
    while pgrep -x rustc >/dev/null || pgrep -x cc1 >/dev/null; do
        ((SECONDS >= deadline)) && break
        sleep 5
    done
    local n
    n=$( (pgrep -x rustc; pgrep -x cc1) | wc -l)
    if ((n == 0)); then
        echo "idle, load $(cut -d' ' -f1 /proc/loadavg)"
    else
        echo "busy: $n compilers, load $(cut -d' ' -f1 /proc/loadavg)"
    fi
}

# The broker configuration the throughput benchmarks share (compare.sh, profile.sh,
# release_profile_ab.sh, ab_shared_group.sh), up to the [shared] table's first line; callers
# append their own [shared] keys. Why these limits: see the comment above write_sharq_config in
# compare.sh.
bench_sharq_config() {
    cat <<EOC
[server]
listeners = ["127.0.0.1:$PORT"]
log = "warn"
sys_interval_secs = 0

[limits]
max_inflight = 64
max_queued_messages = 100000
max_queued_bytes = 1073741824
max_connections = 100000
# The scale runs hold up to 1M background subscriptions on a few connections.
max_subscriptions_per_client = 0

[shared]
group_queue_max_messages = 400000
group_queue_max_bytes = 1073741824
EOC
}
