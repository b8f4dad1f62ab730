#!/usr/bin/env bash
# Issue #11, measurement 2: a backlog of MESSAGES (2,000,000) QoS 1 messages of PAYLOAD (1 KiB)
# in a declared shared group with no member, on the durable store (sync = true, defaults
# otherwise). Measures the publish rate, the broker's RSS while the backlog waits, the store
# file's size, then kill -9 and the time from spawning the broker again until its port accepts
# connections (and the `store recovered` line's elapsed_ms), then the drain rate with MEMBERS
# members of `$share/bulk/bulk/#`, and checks that every message came back exactly once.
#
#   bench/durable_backlog.sh
#   MESSAGES=200000 bench/durable_backlog.sh     # a quicker smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18842}
MESSAGES=${MESSAGES:-2000000}
PAYLOAD=${PAYLOAD:-1k}
PUBLISHERS=${PUBLISHERS:-4}
MEMBERS=${MEMBERS:-4}
OUT=${OUT:-target/durable_backlog.json}
. bench/broker_run.sh
require_tools jq
require_free_port

cargo build --release --bin sharq --example sharq_bench >&2
SHARQ=target/release/sharq
BENCH=target/release/examples/sharq_bench

# The store goes on the disk the repository is on (target/), not in a tmpfs.
STORE_PARENT=${STORE_PARENT:-target/durable_backlog}
rm -rf "$STORE_PARENT"
mkdir -p "$STORE_PARENT/store"
STORE_PARENT=$(cd "$STORE_PARENT" && pwd)
trap 'cleanup; for f in "$STORE_PARENT"/broker*.log; do cp "$f" "target/durable_backlog.${f##*/}" 2>/dev/null; done; rm -rf "$STORE_PARENT"' EXIT
cat >"$STORE_PARENT/sharq.toml" <<EOF
[server]
listeners = ["127.0.0.1:$PORT"]
log = "info"
sys_interval_secs = 0

[limits]
max_inflight = 64

[shared]
group_queue_max_messages = 2100000
group_queue_max_bytes = 3758096384
default_strategy = "native_round_robin"

[[shared.declared]]
name = "bulk"
filter = "bulk/#"

[storage]
dir = "store"
sync = true
commit_interval_ms = 2
EOF

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$broker_pid/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$broker_pid/status"; }

machine=$(wait_idle)
echo "machine at start: $machine; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
log=$STORE_PARENT/broker.log
start_sharq "$STORE_PARENT/sharq.toml" "$log" 30
rss_idle=$(rss_kib)

# 1. Fill.
cpu0=$(cpu_ticks)
fill=$("$BENCH" fill --port "$PORT" --topic bulk --publishers "$PUBLISHERS" --qos 1 \
    --payload "$PAYLOAD" --messages "$MESSAGES" --inflight 100 --max-secs 1200 \
    --progress-secs 10 --label "fill $MESSAGES") || true
cpu1=$(cpu_ticks)
echo "$fill" >&2
rss_filled_hwm=$(hwm_kib)
sleep 5
rss_waiting=$(rss_kib)
store_bytes=$(stat -c %s "$STORE_PARENT/store/sharq.redb")
store_disk_kib=$(du -k "$STORE_PARENT/store/sharq.redb" | cut -f1)

# 2. kill -9, restart, time to listening.
kill9_broker
sync
log2=$STORE_PARENT/broker2.log
t0=$(date +%s%N)
# 0: no wait; the loop below times spawn → listening itself.
start_sharq "$STORE_PARENT/sharq.toml" "$log2" 0
until port_open; do
    if ! kill -0 "$broker_pid" 2>/dev/null; then
        echo "the broker died on restart:" >&2
        tail -20 "$log2" >&2
        exit 1
    fi
    sleep 0.005
done
t1=$(date +%s%N)
listen_ms=$(((t1 - t0) / 1000000))
recovered=$(grep -m1 'store recovered' "$log2" || true)
echo "$recovered" >&2
recovered_ms=$(sed -n 's/.*elapsed_ms=\([0-9]*\).*/\1/p' <<<"$recovered")
recovered_queued=$(sed -n 's/.*queued_messages=\([0-9]*\).*/\1/p' <<<"$recovered")
# Where the start-up time goes, from the restarted broker's log timestamps (ms after its first
# line): the store is opened (redb repairs a file closed uncleanly here) before the `storage:`
# line, then recovery, then the listener.
startup_split=$(python3 - "$log2" <<'PY'
import datetime, json, re, sys
marks = {"storage": "storage: durable", "recovered": "store recovered", "listening": "listening for MQTT"}
t = {}
first = None
for line in open(sys.argv[1]):
    m = re.match(r"(\S+Z)\s", line)
    if not m:
        continue
    ts = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
    first = ts if first is None else first
    for k, v in marks.items():
        if v in line and k not in t:
            t[k] = round((ts - first) * 1000)
print(json.dumps(t))
PY
)
echo "start-up split (ms after the first log line): $startup_split" >&2
sleep 1
rss_recovered=$(rss_kib)

# 3. Drain.
cpu2=$(cpu_ticks)
drain=$("$BENCH" drain --port "$PORT" --filter '$share/bulk/bulk/#' --members "$MEMBERS" \
    --qos 1 --expect "$MESSAGES" --quiet-secs 15 --max-secs 1800 --progress-secs 10 \
    --broker-pid "$broker_pid" --client-prefix "bulk-$$" --label "drain $MESSAGES") || true
cpu3=$(cpu_ticks)
echo "$drain" >&2
sleep 3
store_after_drain=$(stat -c %s "$STORE_PARENT/store/sharq.redb")
rss_after_drain=$(rss_kib)
stop_broker

hz=$(getconf CLK_TCK)
jq -n --argjson fill "$fill" --argjson drain "$drain" --arg recovered "$recovered" \
    --argjson messages "$MESSAGES" --arg payload "$PAYLOAD" --arg machine "$machine" \
    --argjson rss_idle "$rss_idle" --argjson rss_hwm "$rss_filled_hwm" --argjson rss_waiting "$rss_waiting" \
    --argjson rss_recovered "$rss_recovered" --argjson rss_after_drain "$rss_after_drain" \
    --argjson store_bytes "$store_bytes" --argjson store_disk_kib "$store_disk_kib" \
    --argjson store_after_drain "$store_after_drain" --argjson listen_ms "$listen_ms" \
    --argjson startup_split "$startup_split" --argjson recovered_ms "${recovered_ms:-null}" --argjson recovered_queued "${recovered_queued:-null}" \
    --argjson fill_cpu_us "$(((cpu1 - cpu0) * 1000000 / hz))" --argjson drain_cpu_us "$(((cpu3 - cpu2) * 1000000 / hz))" \
    '{machine: $machine, messages: $messages, payload: $payload, fill: $fill, drain: $drain, recovered_line: $recovered,
      rss_kib: {idle: $rss_idle, peak_while_filling: $rss_hwm, waiting: $rss_waiting, after_restart: $rss_recovered, after_drain: $rss_after_drain},
      store_file_bytes: {after_fill: $store_bytes, after_fill_on_disk: ($store_disk_kib * 1024), after_drain: $store_after_drain},
      restart: {spawn_to_listening_ms: $listen_ms, log_ms_after_first_line: $startup_split, store_recovered_elapsed_ms: $recovered_ms, recovered_queued: $recovered_queued},
      cpu_us_per_msg: {fill: ($fill_cpu_us / ($fill.acked | if . > 0 then . else 1 end)), drain: ($drain_cpu_us / ($drain.delivered | if . > 0 then . else 1 end))}}' |
    tee "$OUT" >/dev/null

jq -r '
  def mib: . / 1048576 * 10 | round / 10;
  "| measure | value | target |",
  "|---|---|---|",
  "| messages published (QoS 1, \(.payload)) / acknowledged | \(.fill.sent) / \(.fill.acked) | 2,000,000 |",
  "| publish rate (acknowledged msg/s) | \(.fill.publish_rate) (\(.fill.publish_secs) s) | |",
  "| broker RSS idle before filling (MiB) | \(.rss_kib.idle / 1024 * 10 | round / 10) | |",
  "| broker peak RSS while filling, VmHWM (MiB) | \(.rss_kib.peak_while_filling / 1024 * 10 | round / 10) | |",
  "| broker RSS while the backlog waits (MiB) | \(.rss_kib.waiting / 1024 * 10 | round / 10) | ≤ 256 |",
  "| store file after fill: size / allocated on disk (MiB) | \(.store_file_bytes.after_fill | mib) / \(.store_file_bytes.after_fill_on_disk | mib) | |",
  "| kill -9, then spawn → port accepts (ms) | \(.restart.spawn_to_listening_ms) | ≤ 5,000 |",
  "| `store recovered` elapsed_ms / queued_messages | \(.restart.store_recovered_elapsed_ms) / \(.restart.recovered_queued) | |",
  "| restarted broker log, ms after its first line: `storage: durable` (store opened) / `store recovered` / `listening` | \(.restart.log_ms_after_first_line.storage) / \(.restart.log_ms_after_first_line.recovered) / \(.restart.log_ms_after_first_line.listening) | |",
  "| broker RSS after restart (MiB) | \(.rss_kib.after_restart / 1024 * 10 | round / 10) | |",
  "| drained: delivered / unique / duplicates | \(.drain.delivered) / \(.drain.unique) / \(.drain.duplicates) | unique = acknowledged |",
  "| drain rate, SUBACK → last message (msg/s) | \(.drain.drain_rate) (\(.drain.drain_secs) s) | |",
  "| broker peak RSS while draining (MiB) | \(.drain.broker_rss_max_kib / 1024 * 10 | round / 10) | |",
  "| store file after drain (MiB) | \(.store_file_bytes.after_drain | mib) | |",
  "| broker CPU µs per message: fill / drain | \(.cpu_us_per_msg.fill * 10 | round / 10) / \(.cpu_us_per_msg.drain * 10 | round / 10) | |"
' "$OUT"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "results in $OUT" >&2
