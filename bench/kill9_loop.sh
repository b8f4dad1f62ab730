#!/usr/bin/env bash
# Issue #11, measurement 3: messages lost under kill -9, sharq (durable store, sync = true)
# side by side with Mosquitto (persistence true, autosave_interval 1).
#
# Per broker, on a fresh data directory:
#   1. start the broker; create two persistent sessions (MQTT 3.1.1, clean session 0) with QoS 1
#      subscriptions: a plain subscriber of `k9/#` and one member of the shared group
#      `$share/k9g/k9/#`; disconnect them; stop the broker gracefully (SIGTERM, so Mosquitto
#      saves them);
#   2. ROUNDS times: start the broker, publish QoS 1 as fast as possible (`sharq_bench fill`,
#      PUBLISHERS publishers, inflight 100 each), recording every message id that got a PUBACK,
#      and kill -9 the broker KILL_AFTER seconds after starting the publishers;
#   3. start the broker, reconnect each subscriber (same client id, clean session 0), take
#      everything until QUIET seconds pass without a message, and count per subscriber the
#      acknowledged messages that never arrived.
#
#   bench/kill9_loop.sh
#   ROUNDS=5 KILL_AFTER=3 BROKERS="sharq mosquitto" bench/kill9_loop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18843}
ROUNDS=${ROUNDS:-5}
KILL_AFTER=${KILL_AFTER:-3}
PUBLISHERS=${PUBLISHERS:-2}
PAYLOAD=${PAYLOAD:-64}
QUIET=${QUIET:-10}
BROKERS=${BROKERS:-"sharq mosquitto"}
OUT=${OUT:-target/kill9_loop.jsonl}
. bench/broker_run.sh
require_tools jq
[[ " $BROKERS " == *" mosquitto "* ]] && require_tools mosquitto
require_free_port

cargo build --release --bin sharq --example sharq_bench >&2
SHARQ=target/release/sharq
BENCH=target/release/examples/sharq_bench

# Data directories on the repository's disk (target/), not in a tmpfs.
DATA=${DATA:-target/kill9_loop}
rm -rf "$DATA"
mkdir -p "$DATA"
DATA=$(cd "$DATA" && pwd)
trap 'cleanup; rm -rf "$DATA"' EXIT

configure() { # BROKER
    case "$1" in
        sharq)
            mkdir -p "$DATA/sharq/store"
            cat >"$DATA/sharq/sharq.toml" <<EOF
[server]
listeners = ["127.0.0.1:$PORT"]
log = "info"
sys_interval_secs = 0

[limits]
max_inflight = 64
max_queued_messages = 5000000
max_queued_bytes = 4294967296

[shared]
group_queue_max_messages = 5000000
group_queue_max_bytes = 4294967296
default_strategy = "native_round_robin"

[storage]
dir = "store"
sync = true
commit_interval_ms = 2
EOF
            ;;
        mosquitto)
            mkdir -p "$DATA/mosquitto/db"
            # Without this Mosquitto loses everything on a restart, whatever the persistence
            # settings (see give_to_mosquitto).
            give_to_mosquitto "$DATA/mosquitto/db"
            cat >"$DATA/mosquitto/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $DATA/mosquitto/db/
autosave_interval 1
max_inflight_messages 64
max_queued_messages 0
max_queued_bytes 0
set_tcp_nodelay true
sys_interval 0
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
EOF
            ;;
    esac
}

start() { # BROKER
    case "$1" in
        sharq) start_sharq "$DATA/sharq/sharq.toml" "$DATA/$1.log" 60 ;;
        mosquitto) start_mosquitto "$DATA/mosquitto/mosquitto.conf" "$DATA/$1.log" 60 ;;
    esac
}

subscribers() { # BROKER -> "name|filter" lines
    echo "plain|k9/#"
    echo "shared|\$share/k9g/k9/#"
}

: >"$OUT"
machine=$(wait_idle)
echo "machine at start: $machine; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for broker in $BROKERS; do
    configure "$broker"
    echo "== $broker: sessions" >&2
    start "$broker"
    while IFS='|' read -r name filter; do
        "$BENCH" drain --port "$PORT" --filter "$filter" --members 1 --qos 1 --persistent \
            --setup-only --client-prefix "k9-$name" --label "$broker $name setup" >&2
    done < <(subscribers "$broker")
    stop_broker
    for round in $(seq 1 "$ROUNDS"); do
        start "$broker"
        "$BENCH" fill --port "$PORT" --topic k9 --publishers "$PUBLISHERS" --qos 1 \
            --payload "$PAYLOAD" --messages 100000000 --inflight 100 --max-secs 600 \
            --acked-out "$DATA/$broker.acked.$round" --label "$broker round $round" \
            >"$DATA/$broker.fill.$round.json" 2>&1 &
        fill_pid=$!
        sleep "$KILL_AFTER"
        kill9_broker
        wait "$fill_pid" || true
        echo "$broker round $round: $(jq -c '{sent, acked, publish_rate}' "$DATA/$broker.fill.$round.json")" >&2
    done
    echo "== $broker: restart and drain" >&2
    t0=$(date +%s%N)
    start "$broker"
    echo "$broker: spawn → listening $((($(date +%s%N) - t0) / 1000000)) ms" >&2
    while IFS='|' read -r name filter; do
        drain=$("$BENCH" drain --port "$PORT" --filter "$filter" --members 1 --qos 1 --persistent \
            --client-prefix "k9-$name" --quiet-secs "$QUIET" --max-secs 900 \
            --ids-out "$DATA/$broker.received.$name" --label "$broker $name drain") || true
        echo "$drain" | jq -c '{name: .label, session_present, delivered, unique, duplicates, drain_rate, errors}' >&2
        python3 - "$DATA" "$broker" "$name" "$ROUNDS" "$drain" <<'PY' | tee -a "$OUT"
import glob, json, sys
data, broker, name, rounds, drain = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
def ids(path):
    with open(path) as f:
        return [tuple(line.split()) for line in f if line.strip()]
acked = set()
for p in sorted(glob.glob(f"{data}/{broker}.acked.*")):
    acked.update(ids(p))
received = ids(f"{data}/{broker}.received.{name}")
unique = set(received)
print(json.dumps({
    "broker": broker, "subscriber": name, "rounds": rounds,
    "acked": len(acked), "delivered": len(received), "delivered_unique": len(unique),
    "lost": len(acked - unique), "duplicates": len(received) - len(unique),
    "unacked_delivered": len(unique - acked),
    "session_present": drain.get("session_present"), "errors": drain.get("errors"),
}))
PY
    done < <(subscribers "$broker")
    stop_broker
    grep -iE "store recovered|error|warn|saving|restored|loaded" "$DATA/$broker.log" | tail -8 >&2 || true
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 bench/durable_report.py kill9 "$OUT"
echo "results in $OUT" >&2
