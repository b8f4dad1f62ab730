#!/usr/bin/env bash
# Issue #11, measurement 1: shared-group QoS 1 delivered rate with the durable store on (fsync per
# commit), next to sharq in memory only, sharq with `sync = false`, and Mosquitto (persistence
# true, its default autosave_interval 1800 s; and persistence false), in the same run. Fresh
# broker (and fresh store directory) per run, ROUNDS rounds with the brokers alternating;
# medians to stdout, every run as a JSON line in $OUT. For sharq each line also has the broker's
# CPU time per delivered message and its split over threads (the committer thread is
# `sharq-store`). Then a sweep of `storage.commit_interval_ms` (CI_VALUES) with sync = true.
#
#   bench/durable_rate.sh
#   ROUNDS=5 PAYLOADS="64" CI_VALUES="0 2 5 10" bench/durable_rate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18841}
ROUNDS=${ROUNDS:-3}
PAYLOADS=${PAYLOADS:-"64 1k"}
BROKERS=${BROKERS:-"sharq_mem sharq_sync sharq_nosync mosquitto_persist mosquitto"}
CI_VALUES=${CI_VALUES:-"0 2 5 10"}
MESSAGES=${MESSAGES:-200000}
OUT=${OUT:-target/durable_rate.jsonl}
. bench/broker_run.sh
require_tools jq
[[ " $BROKERS " == *" mosquitto"* ]] && require_tools mosquitto
require_free_port

cargo build --release --bin sharq --example sharq_bench >&2
SHARQ=target/release/sharq
BENCH=target/release/examples/sharq_bench

# sharq: the comparison config of bench/results/compare.md (native_round_robin, raised queue limits), plus
# [storage] for the durable variants. The store lives under $work (same ext4 disk as the repo).
start() { # NAME [COMMIT_INTERVAL_MS]
    local name=$1 ci=${2:-2}
    rm -rf "$work/store" "$work/mosq"
    mkdir -p "$work/store" "$work/mosq"
    # Mosquitto must be able to write its database.
    give_to_mosquitto "$work/mosq"
    case "$name" in
        sharq_*)
            {
                printf '[server]\nlisteners = ["127.0.0.1:%s"]\nlog = "warn"\nsys_interval_secs = 0\n' "$PORT"
                printf '[limits]\nmax_inflight = 64\nmax_queued_messages = 100000\nmax_queued_bytes = 1073741824\nmax_connections = 100000\n'
                printf '[shared]\ngroup_queue_max_bytes = 1073741824\ndefault_strategy = "native_round_robin"\n'
                case "$name" in
                    sharq_mem) printf '[storage]\ndir = ""\n' ;;
                    sharq_sync) printf '[storage]\ndir = "store"\nsync = true\ncommit_interval_ms = %s\n' "$ci" ;;
                    sharq_nosync) printf '[storage]\ndir = "store"\nsync = false\ncommit_interval_ms = %s\n' "$ci" ;;
                esac
            } >"$work/sharq.toml"
            start_sharq "$work/sharq.toml" "$work/broker.log" 30
            ;;
        mosquitto | mosquitto_persist)
            local persist=false
            [[ $name == mosquitto_persist ]] && persist=true
            cat >"$work/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
max_inflight_messages 64
max_queued_messages 100000
set_tcp_nodelay true
persistence $persist
persistence_location $work/mosq/
sys_interval 0
log_dest stderr
log_type error
log_type warning
EOF
            start_mosquitto "$work/mosquitto.conf" "$work/broker.log" 30
            ;;
    esac
}

# Clock ticks per thread name of the broker: "comm ticks" lines.
thread_ticks() {
    for t in /proc/"$broker_pid"/task/*; do
        local comm stat
        comm=$(cat "$t/comm" 2>/dev/null) || continue
        stat=$(cat "$t/stat" 2>/dev/null) || continue
        # Fields after the ")" that closes comm: utime and stime are the 12th and 13th.
        awk -v c="$comm" '{ s = substr($0, index($0, ") ") + 2); split(s, f, " "); print c, f[12] + f[13] }' <<<"$stat"
    done | awk '{ t[$1] += $2 } END { for (c in t) print c, t[c] }' | sort
}

one_run() { # NAME PAYLOAD ROUND [CI]
    local name=$1 payload=$2 round=$3 ci=${4:-}
    local machine
    machine=$(wait_idle)
    start "$name" "${ci:-2}"
    local before after json hz
    hz=$(getconf CLK_TCK)
    before=$(cpu_ticks)
    json=$("$BENCH" shared --port "$PORT" --publishers 4 --groups 1 --members 4 --qos 1 \
        --payload "$payload" --messages "$MESSAGES" --inflight "${INFLIGHT:-100}" --max-secs 20 \
        --label "$name $payload round $round${ci:+ ci $ci}") || true
    after=$(cpu_ticks)
    local threads
    threads=$(thread_ticks | jq -R 'split(" ") | {(.[0]): (.[1] | tonumber)}' | jq -s 'add // {}')
    local store_bytes=0
    [[ -f $work/store/sharq.redb ]] && store_bytes=$(stat -c %s "$work/store/sharq.redb")
    stop_broker
    jq -c --arg b "$name" --arg p "$payload" --argjson r "$round" --arg ci "$ci" \
        --argjson ticks $((after - before)) --argjson hz "$hz" --argjson threads "$threads" \
        --argjson store "$store_bytes" --arg machine "$machine" --argjson inflight "${INFLIGHT:-100}" \
        '. + {machine: $machine, inflight: $inflight, broker: $b, payload: $p, round: $r, commit_interval_ms: ($ci | if . == "" then null else tonumber end),
              cpu_ticks: $ticks, clk_tck: $hz, thread_ticks: $threads, store_file_bytes: $store,
              cpu_us_per_msg: (if .delivered > 0 then $ticks / $hz * 1e6 / .delivered else null end)}' \
        <<<"$json" | tee -a "$OUT"
}

: >"$OUT"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for round in $(seq 1 "$ROUNDS"); do
    for payload in $PAYLOADS; do
        for broker in $BROKERS; do
            one_run "$broker" "$payload" "$round" >/dev/null
        done
    done
    for ci in $CI_VALUES; do
        one_run sharq_sync 64 "$round" "$ci" >/dev/null
    done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 bench/durable_report.py rate "$OUT"
echo "results in $OUT" >&2
