#!/usr/bin/env bash
# A CPU profile of the release broker under the shared-group QoS 1 load of bench/compare.sh
# (2 publishers → 1 group × 4 members, 64 B, unlimited rate), as a flame graph SVG and the
# top functions by self time.
#
#   bench/profile.sh LABEL [sharq_bench shared args...]
#
# writes, in bench/plots/: flame_LABEL.svg (not committed, see .gitignore), flame_LABEL.txt (the
# parts' shares and perf report's top functions by self time) and flame_LABEL.folded.gz (the
# folded stacks the SVG is drawn from, tens of KB: commit these two with the results that cite
# them; `zcat flame_LABEL.folded.gz | inferno-flamegraph --width 1600 >flame_LABEL.svg` redraws
# the graph).
# Needs perf and inferno (bench/install-tools perf inferno). The release binary keeps its
# symbols and unwind tables, so `perf --call-graph dwarf` names every function; build
# `--profile profiling` and set SHARQ=target/profiling/sharq for line numbers too.
#
# Environment: PORT (default 18831), FREQ (samples per second, default 999), SHARQ, BENCH,
# CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
LABEL=${1:?usage: bench/profile.sh LABEL [sharq_bench shared args...]}
shift
PORT=${PORT:-18831}
FREQ=${FREQ:-999}
TARGET=${CARGO_TARGET_DIR:-target}
SHARQ=${SHARQ:-$TARGET/release/sharq}
BENCH=${BENCH:-$TARGET/release/examples/sharq_bench}
if (($# == 0)); then
    set -- --publishers 2 --groups 1 --members 4 --qos 1 --payload 64 --messages 1000000 --max-secs 15
fi

# shellcheck source=broker_run.sh
. bench/broker_run.sh
require_tools perf inferno
[[ -x $SHARQ && -x $BENCH ]] || cargo build --release --bin sharq --example sharq_bench >&2

bench_sharq_config >"$work/sharq.toml"
start_sharq "$work/sharq.toml" "$work/broker.log" 10
# perf attaches to the running broker, so start-up (compiling the strategies) stays out.
perf record -q -F "$FREQ" --call-graph dwarf,32768 -p "$broker_pid" -o "$work/perf.data" \
    2>>"$work/perf.log" &
perf_pid=$!
sleep 0.5
t0=$(cpu_ticks)
line=$("$BENCH" shared "$@" --port "$PORT" --label "profile_$LABEL" || true)
t1=$(cpu_ticks)
kill -INT "$perf_pid"
wait "$perf_pid" || true
stop_broker
delivered=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("delivered") or 0)')
rate=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("delivered_rate"))')
cpu_us=$(python3 -c "print(round(($t1 - $t0) / $(getconf CLK_TCK) * 1e6 / max($delivered, 1), 2))")

mkdir -p bench/plots
perf script --no-inline -i "$work/perf.data" 2>/dev/null | "$INFERNO/inferno-collapse-perf" >"$work/folded"
gzip -9cn "$work/folded" >"bench/plots/flame_$LABEL.folded.gz"
"$INFERNO/inferno-flamegraph" --title "sharq $LABEL: shared $*" --width 1600 \
    <"$work/folded" >"bench/plots/flame_$LABEL.svg"
{
    echo "# bench/profile.sh $LABEL $*"
    echo "# broker: $SHARQ (source tree at $(git rev-parse --short HEAD))"
    echo "# delivered $delivered at $rate msg/s, broker CPU $cpu_us µs per delivered message (under perf)"
    echo "# share of samples whose stack contains (inclusive):"
    python3 - "$work/folded" <<'PY'
import re, sys
parts = {
    "kernel: system calls (entry_SYSCALL_64)": r"entry_SYSCALL_64",
    "kernel: context switches (finish_task_switch)": r"finish_task_switch",
    "the Wasm strategy call (WasmInstance::select)": r"WasmInstance::select",
    "strategy dispatch incl. the call (Dispatcher::choose)": r"Dispatcher::choose",
    "routing a PUBLISH (Router::route)": r"Router::route",
    "encoding packets (codec::encode)": r"sharq::codec::encode",
    "memmove": r"memmove",
    "malloc/free": r"(^|;)(malloc|free|_int_malloc|_int_free|realloc|cfree)",
    "clock reads (clock_gettime)": r"clock_gettime",
}
total, hits = 0, {k: 0 for k in parts}
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip().rpartition(" ")
    n = int(n)
    total += n
    for k, pat in parts.items():
        if re.search(pat, stack):
            hits[k] += n
for k, v in hits.items():
    print(f"#   {100 * v / max(total, 1):5.1f} %  {k}")
PY
    echo "# top functions by self time:"
    perf report -i "$work/perf.data" -g none --no-children --sort symbol --percent-limit 0.7 --stdio 2>/dev/null |
        grep -v '^$' | grep -v '^#' | grep '%' | head -60
} >"bench/plots/flame_$LABEL.txt"
echo "wrote bench/plots/flame_$LABEL.svg, .folded.gz and .txt" >&2
head -13 "bench/plots/flame_$LABEL.txt" >&2
