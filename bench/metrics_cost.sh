#!/usr/bin/env bash
# Issue #13: what metrics cost on the publish path. Shared-group QoS 1 delivered rate (4
# publishers -> 1 group of 4 members, in memory) with the HTTP server on and /metrics scraped
# every second (with SCRAPE_GROUPS idle declared groups, so a scrape has real work), next to the
# same broker with no HTTP server at all, and with the server on but not scraped. With
# BASE_BIN=path/to/sharq, also a binary from before the per-group counters (run the same way).
# Fresh broker per run, ROUNDS rounds with the variants alternating; medians to stdout, every run
# as a JSON line in $OUT.
#
#   bench/metrics_cost.sh
#   ROUNDS=7 BASE_BIN=/tmp/sharq-before bench/metrics_cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18851}
HTTP_PORT=${HTTP_PORT:-18852}
ROUNDS=${ROUNDS:-7}
MESSAGES=${MESSAGES:-2000000}
SCRAPE_GROUPS=${SCRAPE_GROUPS:-1000}
OUT=${OUT:-target/metrics_cost.jsonl}
VARIANTS=${VARIANTS:-"no_http http_scraped http_idle"}
[[ -n ${BASE_BIN:-} ]] && VARIANTS="$VARIANTS before"
. bench/broker_run.sh
require_tools jq curl
require_free_port

cargo build --release --bin sharq --example sharq_bench >&2
SHARQ=target/release/sharq
BENCH=target/release/examples/sharq_bench
scraper=

start() { # VARIANT
    local variant=$1 binary=$SHARQ
    {
        printf '[server]\nlisteners = ["127.0.0.1:%s"]\nlog = "warn"\nsys_interval_secs = 0\n' "$PORT"
        printf '[limits]\nmax_inflight = 64\nmax_queued_messages = 100000\nmax_queued_bytes = 1073741824\nmax_connections = 100000\n'
        printf '[shared]\ngroup_queue_max_messages = 10000000\ngroup_queue_max_bytes = 1073741824\ndefault_strategy = "round_robin"\n'
        case "$variant" in
            http_*) printf '[http]\nlisten = "127.0.0.1:%s"\ntoken = "bench"\n' "$HTTP_PORT" ;;
        esac
        if [[ $variant == http_scraped ]]; then
            for i in $(seq 1 "$SCRAPE_GROUPS"); do
                printf '[[shared.declared]]\nname = "idle%s"\nfilter = "idle/%s"\n' "$i" "$i"
            done
        fi
    } >"$work/sharq.toml"
    [[ $variant == before ]] && binary=$BASE_BIN
    # The binary from before #13 knows no [http]; its config has none (no_http's).
    SHARQ=$binary start_sharq "$work/sharq.toml" "$work/broker.log" 60
    if [[ $variant == http_scraped ]]; then
        (
            while sleep 1; do
                curl -s -o /dev/null "http://127.0.0.1:$HTTP_PORT/metrics" || true
            done
        ) &
        scraper=$!
    fi
}

one_run() { # VARIANT ROUND
    local variant=$1 round=$2 machine json
    machine=$(wait_idle)
    start "$variant"
    local before after hz scrape_ms=null
    hz=$(getconf CLK_TCK)
    if [[ $variant == http_scraped ]]; then
        scrape_ms=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$HTTP_PORT/metrics" | awk '{print $1 * 1000}')
    fi
    before=$(cpu_ticks)
    json=$("$BENCH" shared --port "$PORT" --publishers 4 --groups 1 --members 4 --qos 1 \
        --payload 64 --messages "$MESSAGES" --inflight 100 --max-secs 30 \
        --label "$variant round $round") || true
    after=$(cpu_ticks)
    if [[ -n $scraper ]]; then
        kill "$scraper" 2>/dev/null || true
        wait "$scraper" 2>/dev/null || true
        scraper=
    fi
    stop_broker
    jq -c --arg v "$variant" --argjson r "$round" --arg machine "$machine" \
        --argjson ticks $((after - before)) --argjson hz "$hz" --argjson scrape_ms "$scrape_ms" \
        '. + {variant: $v, round: $r, machine: $machine, scrape_ms: $scrape_ms,
              cpu_us_per_msg: (if .delivered > 0 then $ticks / $hz * 1e6 / .delivered else null end)}' \
        <<<"$json" | tee -a "$OUT"
}

: >"$OUT"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# The machine's speed drifts during a run: each round starts the rotation one variant later, so
# that no variant always runs first (or last) in its round.
read -r -a order <<<"$VARIANTS"
for round in $(seq 1 "$ROUNDS"); do
    for i in "${!order[@]}"; do
        variant=${order[$(((i + round - 1) % ${#order[@]}))]}
        one_run "$variant" "$round" >/dev/null
    done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 - "$OUT" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in runs:
    by.setdefault(r["variant"], []).append(r)
base = statistics.median(r.get("delivered_rate", 0) for r in by.get("no_http", [{"delivered_rate": 0}]))
# Paired per round: each variant against no_http of the same round, which cancels the drift
# between rounds.
base_of = {r["round"]: r for r in by.get("no_http", [])}
def paired(rs, key):
    ratios = [r[key] / base_of[r["round"]][key] for r in rs if r["round"] in base_of and r.get(key) and base_of[r["round"]].get(key)]
    return f"{(statistics.median(ratios) - 1) * 100:+.1f} %" if ratios else "-"

print("| variant | runs | median delivered msg/s | rate vs no_http (paired median) | median broker CPU µs/msg | CPU vs no_http (paired median) | median /metrics scrape ms |")
print("|---|---|---|---|---|---|---|")
for variant, rs in by.items():
    rate = statistics.median(r.get("delivered_rate", 0) for r in rs)
    cpu = statistics.median(r["cpu_us_per_msg"] for r in rs if r.get("cpu_us_per_msg"))
    scrape = [r["scrape_ms"] for r in rs if r.get("scrape_ms") is not None]
    scrape_ms = f"{statistics.median(scrape):.1f}" if scrape else "-"
    print(f"| {variant} | {len(rs)} | {rate:,.0f} | {paired(rs, 'delivered_rate')} | {cpu:.2f} | {paired(rs, 'cpu_us_per_msg')} | {scrape_ms} |")
PY
echo "results in $OUT" >&2
