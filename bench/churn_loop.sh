#!/usr/bin/env bash
# Issue #9, "zero loss under member churn, always": `sharq_bench churn-loop` in every variant
# (MQTT 3.1.1 / 5 × abrupt socket drop / clean DISCONNECT) against one freshly started sharq
# per variant. A group of 4 clean-session QoS 1 members, 5k msg/s, one member leaving every
# 500 ms and coming straight back; RUNS runs of MESSAGES messages each per variant.
#
#   bench/churn_loop.sh                      # 100 runs × 15,000 messages, all four variants
#   RUNS=20 VARIANTS="3.1.1:abrupt" bench/churn_loop.sh
#   PROFILE=release bench/churn_loop.sh      # release build instead of the dev profile
#   EXTRA="--work-us 300" LOG=info bench/churn_loop.sh   # more churn-loop flags; broker log level
#
# Each variant's JSON lines (one per run, then a summary) go to $OUT/<variant>.jsonl and the
# broker's log to $OUT/<variant>.broker.log; the summaries are printed. Exits 1 if any run lost a message.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-18839}
RUNS=${RUNS:-100}
MESSAGES=${MESSAGES:-15000}
PROFILE=${PROFILE:-dev}
VARIANTS=${VARIANTS:-"3.1.1:abrupt 3.1.1:clean 5:abrupt 5:clean"}
OUT=${OUT:-target/churn_loop}
LOG=${LOG:-warn}
read -r -a extra <<<"${EXTRA:-}"
mkdir -p "$OUT"

# shellcheck source=broker_run.sh
. bench/broker_run.sh

profile_flag=()
dir=debug
if [[ $PROFILE == release ]]; then
    profile_flag=(--release)
    dir=release
fi
cargo build "${profile_flag[@]}" --bin sharq --example sharq_bench >&2
SHARQ=target/$dir/sharq
BENCH=target/$dir/examples/sharq_bench

cat >"$work/sharq.toml" <<EOF
[server]
listeners = ["127.0.0.1:$PORT"]
log = "$LOG"
sys_interval_secs = 0
EOF

failed=0
for variant in $VARIANTS; do
    protocol=${variant%%:*}
    leave=${variant##*:}
    broker_log="$OUT/${protocol}-${leave}.broker.log"
    : >"$broker_log"
    start_sharq "$work/sharq.toml" "$broker_log" 30
    log="$OUT/${protocol}-${leave}.jsonl"
    echo "== $protocol $leave: $RUNS runs × $MESSAGES messages -> $log" >&2
    if ! "$BENCH" churn-loop --port "$PORT" --runs "$RUNS" --messages "$MESSAGES" \
        --protocol "$protocol" --disconnect "$leave" --label "$PROFILE" "${extra[@]}" >"$log"; then
        failed=1
    fi
    tail -1 "$log"
    stop_broker
done
exit $failed
