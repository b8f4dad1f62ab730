#!/usr/bin/env bash
# Issue #13: the cost of metrics in instructions, which a busy machine cannot blur. Runs the
# broker under `valgrind --tool=callgrind` for the shared-group QoS 1 load of
# bench/metrics_cost.sh (native_round_robin: no Wasm JIT under valgrind) at two message counts;
# the difference divided by the extra messages is the broker's instructions per message, without
# start-up. Variants: no_http, http_scraped (/metrics fetched every second), and BASE_BIN (the
# binary before the per-group counters) when given.
#
#   BASE_BIN=/tmp/sharq-before bench/metrics_cost_callgrind.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18871}
HTTP_PORT=${HTTP_PORT:-18872}
SMALL=${SMALL:-10000}
LARGE=${LARGE:-40000}
VARIANTS=${VARIANTS:-"no_http http_scraped"}
[[ -n ${BASE_BIN:-} ]] && VARIANTS="$VARIANTS before"
. bench/broker_run.sh
require_free_port
cargo build --release --bin sharq --example sharq_bench >&2
BENCH=target/release/examples/sharq_bench

instructions() { # VARIANT MESSAGES -> total Ir of the broker process
    local variant=$1 messages=$2 binary=target/release/sharq scraper=
    {
        printf '[server]\nlisteners = ["127.0.0.1:%s"]\nlog = "warn"\nsys_interval_secs = 0\n' "$PORT"
        printf '[limits]\nmax_inflight = 64\nmax_queued_messages = 100000\nmax_connections = 1000\n'
        printf '[shared]\ngroup_queue_max_messages = 10000000\ndefault_strategy = "native_round_robin"\n'
        [[ $variant == http_scraped ]] && printf '[http]\nlisten = "127.0.0.1:%s"\ntoken = "bench"\n' "$HTTP_PORT"
    } >"$work/sharq.toml"
    [[ $variant == before ]] && binary=$BASE_BIN
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$binary" --config "$work/sharq.toml" \
        >"$work/broker.log" 2>&1 &
    broker_pid=$!
    wait_for_broker "$work/broker.log" 120
    if [[ $variant == http_scraped ]]; then
        (while sleep 1; do curl -s -o /dev/null "http://127.0.0.1:$HTTP_PORT/metrics" || true; done) &
        scraper=$!
    fi
    "$BENCH" shared --port "$PORT" --publishers 2 --groups 1 --members 4 --qos 1 --payload 64 \
        --messages "$messages" --inflight 100 --max-secs 600 --drain-secs 10 >"$work/bench.json" || true
    [[ -n $scraper ]] && { kill "$scraper"; wait "$scraper" 2>/dev/null || true; }
    kill -TERM "$broker_pid"
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=
    callgrind_annotate "$work/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'
}

echo "| variant | Ir at $SMALL msgs | Ir at $LARGE msgs | broker instructions per message |"
echo "|---|---|---|---|"
for variant in $VARIANTS; do
    small=$(instructions "$variant" "$SMALL")
    large=$(instructions "$variant" "$LARGE")
    echo "| $variant | $small | $large | $(( (large - small) / (LARGE - SMALL) )) |"
done
