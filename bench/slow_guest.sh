#!/usr/bin/env bash
# Slow-guest isolation: does a group served by a Python (or JavaScript) strategy slow anything
# but itself? Each round runs, against one broker, at full speed and at the same time:
#   - `fast`:  a shared group g0 with the built-in (Rust) `round_robin` strategy,
#   - `plain`: a non-shared subscriber (fanout),
# once alone (`baseline`), once next to `slow`: a third load generator publishing at
# SLOW_RATE msg/s to a group whose strategy is level_hash in Python (or LANG=js), and once next
# to the same third load generator publishing to a group with the built-in round_robin
# (`with_control`), which tells the guest's cost apart from the extra load generator's. The
# fast and plain throughputs and latencies of all variants are compared in a table.
#
# Usage: bench/slow_guest.sh   (ROUNDS=2 SECS=10 SLOW_RATE=2000 LANG_=python PROFILE=release)
# Needs the plugin toolchains (.ci/install-test-tools) and python3 for the table.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
SECS=${SECS:-10}
SLOW_RATE=${SLOW_RATE:-2000}
LANG_=${LANG_:-python}
PROFILE=${PROFILE:-release}
PORT=${PORT:-18840}
TARGET=${CARGO_TARGET_DIR:-target}

if [[ "$PROFILE" == release ]]; then
    cargo build --release --bin sharq --example sharq_bench >&2
    dir="$TARGET/release"
else
    cargo build --bin sharq --example sharq_bench >&2
    dir="$TARGET/debug"
fi
BROKER="$dir/sharq"
BENCH="$dir/examples/sharq_bench"
# PLUGIN=path skips rebuilding the component.
PLUGIN=${PLUGIN:-$("examples/strategies/level_hash/$LANG_/build.sh" | tail -1)}

# shellcheck source=broker_run.sh
. bench/broker_run.sh
cat >"$work/sharq.toml" <<EOF
[server]
listeners = ["127.0.0.1:$PORT"]
log = "warn"
sys_interval_secs = 0

[limits]
max_queued_messages = 1000000

[shared]
default_strategy = "round_robin"
plugin_cache_dir = "$TARGET/plugin-examples/cache"

[[shared.groups]]
name = "slow*"
plugin = "$PLUGIN"
params = { level = 1 }
wasi = true
memory_mib = 96
EOF

results="$work/results.jsonl"
: >"$results"
for round in $(seq 1 "$ROUNDS"); do
    for variant in baseline with_control with_slow; do
        # Up to a minute: a cold start compiles the Python or JavaScript component.
        SHARQ=$BROKER start_sharq "$work/sharq.toml" "$work/broker.log" 60
        common=(--port "$PORT" --qos 1 --payload 64 --messages 100000000 --max-secs "$SECS")
        if [[ "$variant" != baseline ]]; then
            # Only share names starting with `slow` get the guest (see the config above).
            prefix=slow
            [[ "$variant" == with_control ]] && prefix=control
            SHARQ_BENCH_GROUP_PREFIX=$prefix "$BENCH" shared "${common[@]}" --rate "$SLOW_RATE" \
                --members 2 --label slow >"$work/slow.json" &
            slow_pid=$!
        fi
        "$BENCH" shared "${common[@]}" --members 2 --label fast >"$work/fast.json" &
        fast_pid=$!
        "$BENCH" fanout "${common[@]}" --subscribers 1 --label plain >"$work/plain.json" || true
        wait "$fast_pid" || true
        if [[ "$variant" != baseline ]]; then
            wait "$slow_pid" || true
        fi
        stop_broker
        for who in fast plain slow; do
            if [[ -s "$work/$who.json" ]]; then
                python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["variant"]=sys.argv[2]; d["round"]=sys.argv[3]; print(json.dumps(d))' \
                    "$work/$who.json" "$variant" "$round" >>"$results"
            fi
        done
        rm -f "$work/slow.json" "$work/fast.json" "$work/plain.json"
    done
done

python3 - "$results" "$LANG_" "$SLOW_RATE" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"slow group: level_hash ({sys.argv[2]}) at {sys.argv[3]} msg/s")
print("| round | variant | load | delivered msg/s | p50 µs | p99 µs | lost |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    lat = r["latency_us"]
    print(f"| {r['round']} | {r['variant']} | {r['label']} | {r['delivered_rate']:,.0f} | {lat['p50']} | {lat['p99']} | {r['lost']} |")
print()
def median(who, variant):
    rates = [r["delivered_rate"] for r in rows if r["label"] == who and r["variant"] == variant]
    return statistics.median(rates) if rates else None
for who in ("fast", "plain"):
    s = median(who, "with_slow")
    for against in ("baseline", "with_control"):
        b = median(who, against)
        if b and s:
            print(f"{who}: with_slow vs {against}: median {b:,.0f} -> {s:,.0f} msg/s ({(s - b) / b * 100:+.1f}%)")
PY
