#!/usr/bin/env bash
# Issue #10's measurement: how fast groups can be created (each subscribe creates a shared group,
# each unsubscribe ends it: `sub-churn --new-groups`), and what that does to a bystander — a
# publisher at a fixed rate into a group of its own (`--probe-rate`), whose p99 is compared with
# the same probe on an idle broker. Brokers: this build of sharq (default Wasm round_robin, and
# `sharq_native` with native_round_robin, to show what the per-group Wasm instance costs),
# Mosquitto, and optionally an older sharq binary (BEFORE_BIN) for a before/after comparison;
# fresh broker per run, ROUNDS rounds alternating; the JSON lines go to $OUT and a median table
# to stdout.
#
#   bench/group_churn.sh
#   BEFORE_BIN=/path/to/old/sharq ROUNDS=3 bench/group_churn.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-1885}
ROUNDS=${ROUNDS:-3}
GROUPS_PER_RUN=${GROUPS_PER_RUN:-1000}   # distinct group names cycled through
PAIRS=${PAIRS:-20000}                     # groups created (and ended) per run
PROBE_RATE=${PROBE_RATE:-1000}
OUT=${OUT:-target/group_churn.jsonl}
. bench/broker_run.sh
require_tools mosquitto
require_free_port

cargo build --release --bin sharq --example sharq_bench >&2
SHARQ=target/release/sharq
BENCH=target/release/examples/sharq_bench

start() { # NAME
    case "$1" in
        sharq | sharq_before | sharq_native)
            local bin=$SHARQ strategy=round_robin
            [[ $1 == sharq_before ]] && bin=$BEFORE_BIN
            [[ $1 == sharq_native ]] && strategy=native_round_robin
            printf '[server]\nlisteners = ["127.0.0.1:%s"]\nlog = "warn"\nsys_interval_secs = 0\n[shared]\ndefault_strategy = "%s"\n' "$PORT" "$strategy" >"$work/sharq.toml"
            SHARQ=$bin start_sharq "$work/sharq.toml" "$work/broker.log" 10
            ;;
        mosquitto)
            printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$PORT" >"$work/mosquitto.conf"
            start_mosquitto "$work/mosquitto.conf" "$work/broker.log" 10
            ;;
    esac
}

brokers=(sharq sharq_native mosquitto)
[[ -n "${BEFORE_BIN:-}" ]] && brokers=(sharq_before sharq sharq_native mosquitto)
: >"$OUT"
for round in $(seq 1 "$ROUNDS"); do
    for broker in "${brokers[@]}"; do
        for mode in idle churn; do
            start "$broker"
            if [[ $mode == idle ]]; then
                args=(--pairs 0 --max-secs 3)
            else
                args=(--clients 4 --groups "$GROUPS_PER_RUN" --pairs "$PAIRS" --new-groups --max-secs 30)
            fi
            "$BENCH" sub-churn --port "$PORT" --probe-rate "$PROBE_RATE" "${args[@]}" \
                --label "$broker $mode round $round" | tee -a "$OUT"
            stop_broker
        done
    done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    broker, mode = r["label"].split()[:2]
    runs.setdefault((broker, mode), []).append(r)
med = lambda xs: statistics.median(xs) if xs else float("nan")
print("| broker | groups created/s (churn) | probe p50 idle / churn (µs) | probe p99 idle / churn (µs) |")
print("|---|---|---|---|")
for broker in dict.fromkeys(b for b, _ in runs):
    idle, churn = runs.get((broker, "idle"), []), runs.get((broker, "churn"), [])
    lat = lambda rs, p: med([r["probe"]["latency_us"][p] for r in rs if r.get("probe")])
    print(f"| {broker} | {med([r['groups_created_per_sec'] for r in churn]):,.0f} | "
          f"{lat(idle, 'p50'):.0f} / {lat(churn, 'p50'):.0f} | {lat(idle, 'p99'):.0f} / {lat(churn, 'p99'):.0f} |")
PY
echo "results in $OUT" >&2
