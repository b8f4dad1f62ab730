#!/usr/bin/env bash
# End-to-end throughput of one shared group with the Wasm `round_robin` strategy vs the native
# round robin (`default_strategy = "native_round_robin"`), in the same run: one release build,
# then alternating broker starts (wasm, native, wasm, native, ...), each measured with
# `sharq_bench shared` on loopback, and a table at the end.
#
# Usage: bench/strategy_e2e.sh            (ROUNDS=3 MESSAGES=200000 ... to override)
# Needs python3 for the table. Set CARGO_TARGET_DIR to reuse a target dir.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
MESSAGES=${MESSAGES:-200000}
MAX_SECS=${MAX_SECS:-10}
PUBLISHERS=${PUBLISHERS:-2}
GROUPS_=${GROUPS_:-1}
MEMBERS=${MEMBERS:-4}
QOS=${QOS:-1}
PAYLOAD=${PAYLOAD:-64}
RATE=${RATE:-0}
PORT=${PORT:-18830}
# Optional CPU pinning (taskset lists), e.g. BROKER_CPUS=0 BENCH_CPUS=1: with the broker alone on
# a core it is the bottleneck, so its per-message cost shows in throughput.
BROKER_CPUS=${BROKER_CPUS:-}
BENCH_CPUS=${BENCH_CPUS:-}
TARGET=${CARGO_TARGET_DIR:-target}
# shellcheck source=broker_run.sh
. bench/broker_run.sh
[[ -n "$BROKER_CPUS$BENCH_CPUS" ]] && require_tools taskset

cargo build --release --bin sharq --example sharq_bench >&2
BROKER="$TARGET/release/sharq"
BENCH="$TARGET/release/examples/sharq_bench"
bench_cmd=("$BENCH")
[[ -n "$BENCH_CPUS" ]] && bench_cmd=(taskset -c "$BENCH_CPUS" "$BENCH")

for strategy in round_robin native_round_robin; do
    cat >"$work/$strategy.toml" <<EOF
[server]
listeners = ["127.0.0.1:$PORT"]
log = "warn"
sys_interval_secs = 0

[shared]
default_strategy = "$strategy"
EOF
done

loadavg() { cut -d' ' -f1 /proc/loadavg; }
CLK_TCK=$(getconf CLK_TCK)

results="$work/results.jsonl"
: >"$results"
for round in $(seq 1 "$ROUNDS"); do
    for strategy in round_robin native_round_robin; do
        # Under taskset -c $BROKER_CPUS if set (bench/broker_run.sh).
        SHARQ=$BROKER start_sharq "$work/$strategy.toml" "$work/broker-$strategy-$round.log" 10
        load_before=$(loadavg)
        ticks_before=$(cpu_ticks)
        line=$("${bench_cmd[@]}" shared --port "$PORT" --publishers "$PUBLISHERS" --groups "$GROUPS_" \
            --members "$MEMBERS" --qos "$QOS" --payload "$PAYLOAD" --messages "$MESSAGES" \
            --rate "$RATE" --max-secs "$MAX_SECS" --label "$strategy round $round" || true)
        ticks_after=$(cpu_ticks)
        load_after=$(loadavg)
        stop_broker
        if [[ -z "$line" ]]; then
            echo "round $round $strategy: sharq_bench printed nothing" >&2
            continue
        fi
        echo "$line" >&2
        echo "$line" | python3 -c '
import json, sys
d = json.load(sys.stdin)
d["strategy"], d["round"], d["load_before"], d["load_after"] = sys.argv[1:5]
cpu_secs = (float(sys.argv[6]) - float(sys.argv[5])) / float(sys.argv[7])
d["broker_cpu_secs"] = cpu_secs
d["broker_cpu_us_per_msg"] = cpu_secs * 1e6 / d["delivered"] if d["delivered"] else None
print(json.dumps(d))' "$strategy" "$round" "$load_before" "$load_after" \
            "$ticks_before" "$ticks_after" "$CLK_TCK" >>"$results"
    done
done

python3 - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| round | strategy | published | publish msg/s | delivered msg/s | broker CPU µs/msg | lost | dup | Jain | p50 µs | p99 µs | p99.9 µs | max µs | load before→after | errors |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    lat = r["latency_us"]
    print(f"| {r['round']} | {r['strategy']} | {r['published']:,} | {r['publish_rate']:,.0f} | {r['delivered_rate']:,.0f} | {r['broker_cpu_us_per_msg'] or 0:.2f} | {r['lost']} | {r['duplicates']} | {r['jain_min']} | {lat['p50']} | {lat['p99']} | {lat['p99.9']} | {lat['max']} | {r['load_before']}→{r['load_after']} | {len(r['errors'])} |")
med, cpu = {}, {}
print()
for s in ("round_robin", "native_round_robin"):
    rates = [r["delivered_rate"] for r in rows if r["strategy"] == s]
    cpus = [r["broker_cpu_us_per_msg"] for r in rows if r["strategy"] == s and r["broker_cpu_us_per_msg"]]
    if rates and cpus:
        med[s], cpu[s] = statistics.median(rates), statistics.median(cpus)
        print(f"{s}: median delivered {med[s]:,.0f} msg/s over {len(rates)} runs (min {min(rates):,.0f}, max {max(rates):,.0f}); median broker CPU {cpu[s]:.2f} µs/msg")
if len(med) == 2:
    diff = (med["round_robin"] / med["native_round_robin"] - 1) * 100
    extra = (cpu["round_robin"] / cpu["native_round_robin"] - 1) * 100
    print(f"Wasm round_robin vs native: {diff:+.1f}% delivered throughput, {extra:+.1f}% broker CPU per message (target: throughput no worse than -5%)")
EOF
