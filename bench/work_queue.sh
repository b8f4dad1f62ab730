#!/usr/bin/env bash
# Issue #14: (1) shared-group QoS 1 delivered rate of an `ordered_by = "topic"` group with 1,000
# keys (4 publishers x 250 topics) next to the same group unordered, ROUNDS rounds alternating;
# (2) for each ACK_TIMEOUTS value, the time from a member hanging (connected, no more PUBACKs)
# to its messages reaching the other member (bench/ack_timeout_recovery.py, paho-mqtt).
# JSON lines in $OUT; medians to stdout.
#
#   bench/work_queue.sh
#   ROUNDS=5 ACK_TIMEOUTS="100 1000" bench/work_queue.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18861}
ROUNDS=${ROUNDS:-5}
MESSAGES=${MESSAGES:-1000000}
ACK_TIMEOUTS=${ACK_TIMEOUTS:-"100 500 1000 5000"}
OUT=${OUT:-target/work_queue.jsonl}
. bench/broker_run.sh
require_tools jq paho
require_free_port

cargo build --release --bin sharq --example sharq_bench >&2
SHARQ=target/release/sharq
BENCH=target/release/examples/sharq_bench

start() { # EXTRA_TOML
    {
        printf '[server]\nlisteners = ["127.0.0.1:%s"]\nlog = "warn"\nsys_interval_secs = 0\n' "$PORT"
        printf '[limits]\nmax_inflight = 64\nmax_queued_messages = 100000\nmax_queued_bytes = 1073741824\nmax_connections = 100000\n'
        printf '[shared]\ngroup_queue_max_messages = 10000000\ngroup_queue_max_bytes = 1073741824\ndefault_strategy = "round_robin"\n'
        printf '%b' "$1"
    } >"$work/sharq.toml"
    start_sharq "$work/sharq.toml" "$work/broker.log" 30
}

: >"$OUT"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for round in $(seq 1 "$ROUNDS"); do
    for variant in unordered ordered; do
        machine=$(wait_idle)
        start '[[shared.groups]]\nname = "ordered*"\nordered_by = "topic"\n'
        json=$(SHARQ_BENCH_GROUP_PREFIX="$variant" "$BENCH" shared --port "$PORT" --publishers 4 \
            --groups 1 --members 4 --qos 1 --payload 64 --keys 250 --messages "$MESSAGES" \
            --inflight 100 --max-secs 60 --label "$variant round $round") || true
        stop_broker
        jq -c --arg v "$variant" --argjson r "$round" --arg m "$machine" \
            '. + {bench: "ordered_rate", variant: $v, round: $r, machine: $m}' <<<"$json" | tee -a "$OUT" >/dev/null
    done
done
for timeout in $ACK_TIMEOUTS; do
    start "[[shared.groups]]\nname = \"hang\"\nack_timeout_ms = $timeout\n"
    python3 bench/ack_timeout_recovery.py "$PORT" "$timeout" | jq -c '. + {bench: "ack_timeout"}' | tee -a "$OUT" >/dev/null
    stop_broker
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 - "$OUT" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rate = {}
for r in runs:
    if r.get("bench") == "ordered_rate":
        rate.setdefault(r["variant"], []).append(r)
print("| group (1,000 keys, 4 members, QoS 1) | runs | median delivered msg/s | lost | duplicates |")
print("|---|---|---|---|---|")
for v, rs in rate.items():
    print(f"| {v} | {len(rs)} | {statistics.median(x.get('delivered_rate', 0) for x in rs):,.0f} | {sum(x.get('lost', 0) for x in rs)} | {sum(x.get('duplicates', 0) for x in rs)} |")
print()
print("| ack_timeout_ms | messages held by the hung member | not redelivered | stuck ms median | p95 | max |")
print("|---|---|---|---|---|---|")
for r in runs:
    if r.get("bench") == "ack_timeout":
        print(f"| {r['ack_timeout_ms']} | {r['held_by_hung_member']} | {r['not_redelivered']} | {r['stuck_ms_median']} | {r['stuck_ms_p95']} | {r['stuck_ms_max']} |")
PY
echo "results in $OUT" >&2
