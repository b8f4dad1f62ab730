#!/usr/bin/env bash
# Issue #12: what TLS and ACLs cost, in one run with the brokers alternating round by round.
#  1. Shared-group QoS 1 delivered rate: sharq plain TCP, sharq TLS, Mosquitto TCP, Mosquitto
#     TLS, and (3.) sharq plain TCP with an ACL file of ~1,000 rules (`sharq_acl`).
#  2. Connections per second (TCP, TLS + CONNECT/CONNACK + DISCONNECT; full TLS handshakes, the
#     client does no session resumption): sharq and Mosquitto, TCP and TLS.
# A CA and a server certificate (SAN localhost, 127.0.0.1; KEY_TYPE rsa = RSA 2048, or ec =
# ECDSA P-256) are made with openssl in the scratch directory. sharq runs from memory only
# (no [storage] dir) with the comparison config of bench/results/compare.md (native_round_robin). Medians
# to stdout, every run as a JSON line in $OUT. The broker's CPU time per message (or per
# connection) is recorded too: less sensitive to other load on a shared machine.
#
#   bench/tls_acl.sh
#   ROUNDS=5 MESSAGES=200000 CONNECTIONS=5000 KEY_TYPE=ec bench/tls_acl.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18851}
ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-100000}
CONNECTIONS=${CONNECTIONS:-2000}
CONCURRENCY=${CONCURRENCY:-16}
KEY_TYPE=${KEY_TYPE:-rsa}
BROKERS=${BROKERS:-"sharq_tcp sharq_tls mosquitto_tcp mosquitto_tls sharq_acl"}
HS_BROKERS=${HS_BROKERS:-"sharq_tcp sharq_tls mosquitto_tcp mosquitto_tls"}
OUT=${OUT:-target/tls_acl.jsonl}
# The machine is usually shared: don't wait for other builds, record what ran next to each run.
export IDLE_WAIT=${IDLE_WAIT:-0}
. bench/broker_run.sh
require_tools jq openssl
[[ " $BROKERS $HS_BROKERS " == *" mosquitto_"* ]] && require_tools mosquitto
require_free_port

cargo build --release --bin sharq --example sharq_bench >&2
SHARQ=target/release/sharq
BENCH=target/release/examples/sharq_bench

# --- certificates ---------------------------------------------------------------------------
# Mosquitto started as root drops to the `mosquitto` user: it must be able to read these.
chmod 755 "$work"
certs=$work/certs
mkdir -p "$certs"
case "$KEY_TYPE" in
    rsa) newkey=(-newkey rsa:2048) ;;
    ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    *) echo "KEY_TYPE must be rsa or ec" >&2 && exit 1 ;;
esac
openssl req -x509 "${newkey[@]}" -nodes -days 30 -subj "/CN=sharq bench CA" \
    -keyout "$certs/ca.key" -out "$certs/ca.pem" 2>/dev/null
openssl req "${newkey[@]}" -nodes -subj "/CN=localhost" \
    -keyout "$certs/server.key" -out "$certs/server.csr" 2>/dev/null
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\n" >"$certs/server.ext"
openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" \
    -CAcreateserial -days 30 -extfile "$certs/server.ext" -out "$certs/server.pem" 2>/dev/null
chmod 755 "$certs" && chmod 644 "$certs"/*

# --- the ACL file: ~1,000 rules -------------------------------------------------------------
# Anonymous clients (the bench's): 10 decoy rules, then what the bench needs — its topics
# `sharq-bench/<run>/p<i>` and its groups `$share/g<k>/sharq-bench/<run>/#`. Then 100 users
# with 8 topic rules and a share rule each, and 90 `pattern` rules (the %c ones apply to the
# bench's clients too). The file has `share` rules, so joins are checked against them.
acl=$work/sharq.acl
{
    for i in $(seq 0 9); do echo "topic read anon/decoy$i/+/status"; done
    echo "topic readwrite sharq-bench/#"
    echo "share g*"
    for u in $(seq 0 99); do
        echo
        echo "user user$u"
        for t in $(seq 0 7); do
            case $((t % 4)) in
                0) echo "topic readwrite tenants/t$u/app$t/#" ;;
                1) echo "topic read tenants/t$u/+/events$t" ;;
                2) echo "topic write tenants/t$u/cmd$t/+" ;;
                3) echo "topic deny tenants/t$u/app$t/secret/#" ;;
            esac
        done
        echo "share team$u-*"
    done
    echo
    for p in $(seq 0 89); do
        case $((p % 3)) in
            0) echo "pattern readwrite devices/%c/ch$p/#" ;;
            1) echo "pattern read users/%u/inbox$p/+" ;;
            2) echo "pattern write telemetry/%c/m$p" ;;
        esac
    done
} >"$acl"
acl_rules=$(grep -cE '^(topic|pattern|share) ' "$acl")
echo "ACL file: $acl_rules rules" >&2

start() { # NAME
    local name=$1
    case "$name" in
        sharq_*)
            {
                printf '[server]\nlog = "warn"\nsys_interval_secs = 0\n'
                if [[ $name == sharq_tls ]]; then
                    printf 'listeners = []\n'
                    printf '[[server.tls_listeners]]\naddress = "127.0.0.1:%s"\ncert = "%s"\nkey = "%s"\n' \
                        "$PORT" "$certs/server.pem" "$certs/server.key"
                else
                    printf 'listeners = ["127.0.0.1:%s"]\n' "$PORT"
                fi
                printf '[limits]\nmax_inflight = 64\nmax_queued_messages = 100000\nmax_queued_bytes = 1073741824\nmax_connections = 100000\n'
                printf '[shared]\ngroup_queue_max_bytes = 1073741824\ndefault_strategy = "native_round_robin"\n'
                printf '[storage]\ndir = ""\n'
                [[ $name == sharq_acl ]] && printf '[auth]\nacl_file = "%s"\n' "$acl"
            } >"$work/sharq.toml"
            start_sharq "$work/sharq.toml" "$work/broker.log" 30
            ;;
        mosquitto_*)
            {
                printf 'listener %s 127.0.0.1\n' "$PORT"
                if [[ $name == mosquitto_tls ]]; then
                    printf 'cafile %s\ncertfile %s\nkeyfile %s\n' \
                        "$certs/ca.pem" "$certs/server.pem" "$certs/server.key"
                fi
                cat <<EOC
allow_anonymous true
max_inflight_messages 64
max_queued_messages 100000
set_tcp_nodelay true
persistence false
sys_interval 0
log_dest stderr
log_type error
log_type warning
EOC
            } >"$work/mosquitto.conf"
            start_mosquitto "$work/mosquitto.conf" "$work/broker.log" 30
            ;;
    esac
}

tls_args() { [[ $1 == *_tls ]] && echo "--tls-ca $certs/ca.pem" || true; }

record() { # JSON NAME ROUND TICKS MACHINE
    jq -c --arg b "$2" --argjson r "$3" --argjson ticks "$4" --arg machine "$5" \
        --argjson hz "$(getconf CLK_TCK)" --argjson rules "$acl_rules" --arg key "$KEY_TYPE" \
        '. + {broker: $b, round: $r, machine: $machine, cpu_ticks: $ticks, clk_tck: $hz,
              key_type: $key, acl_rules: (if $b == "sharq_acl" then $rules else 0 end)}' \
        <<<"$1" >>"$OUT"
}

shared_run() { # NAME ROUND
    local machine before after json
    machine=$(wait_idle)
    start "$1"
    before=$(cpu_ticks)
    # shellcheck disable=SC2046
    json=$("$BENCH" shared --port "$PORT" $(tls_args "$1") --publishers 2 --groups 1 \
        --members 4 --qos 1 --payload 64 --messages "$MESSAGES" --max-secs 30 \
        --label "$1 round $2") || true
    after=$(cpu_ticks)
    stop_broker
    record "$json" "$1" "$2" $((after - before)) "$machine"
}

handshake_run() { # NAME ROUND
    local machine before after json
    machine=$(wait_idle)
    start "$1"
    before=$(cpu_ticks)
    # shellcheck disable=SC2046
    json=$("$BENCH" handshakes --port "$PORT" $(tls_args "$1") --connections "$CONNECTIONS" \
        --concurrency "$CONCURRENCY" --max-secs 60 --label "$1 round $2") || true
    after=$(cpu_ticks)
    stop_broker
    record "$json" "$1" "$2" $((after - before)) "$machine"
}

: >"$OUT"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for round in $(seq 1 "$ROUNDS"); do
    for b in $BROKERS; do shared_run "$b" "$round"; done
    for b in $HS_BROKERS; do handshake_run "$b" "$round"; done
    echo "round $round done, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 - "$OUT" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
def f(x, d=0):
    return "—" if x is None else (f"{x:,.{d}f}")
def by(scenario):
    g = {}
    for r in runs:
        if r.get("scenario") == scenario:
            g.setdefault(r["broker"], []).append(r)
    return g
sh = by("shared")
base = {b: med([r.get("delivered_rate") for r in sh.get(b, [])]) for b in sh}
def rel(b, ref):
    m, m0 = base.get(b), base.get(ref)
    return f"{m / m0:.0%}" if m and m0 else "—"
print("Shared group, QoS 1, 64 B, 2 publishers → 1 group × 4 members")
print()
print("| broker | delivered msg/s (median) | per round | vs same broker TCP | lost | dup | p50 µs | p99 µs | broker CPU µs/msg |")
print("|---|---|---|---|---|---|---|---|---|")
for b, rs in sh.items():
    ref = {"sharq_tls": "sharq_tcp", "sharq_acl": "sharq_tcp", "mosquitto_tls": "mosquitto_tcp"}.get(b, b)
    cpu = med([r["cpu_ticks"] / r["clk_tck"] * 1e6 / r["delivered"] for r in rs if r.get("delivered")])
    print(f"| {b} | {f(base[b])} | {' / '.join(f(r.get('delivered_rate')) for r in rs)} | {rel(b, ref)} "
          f"| {sum(r.get('lost', 0) for r in rs)} | {sum(r.get('duplicates', 0) for r in rs)} "
          f"| {f(med([r.get('latency_us', {}).get('p50') for r in rs]))} "
          f"| {f(med([r.get('latency_us', {}).get('p99') for r in rs]))} | {f(cpu, 2)} |")
# Same-round ratios: each round's two runs are seconds apart, so they share the machine's load.
print()
for a, ref in (("sharq_tls", "sharq_tcp"), ("mosquitto_tls", "mosquitto_tcp"), ("sharq_acl", "sharq_tcp"), ("sharq_tls", "mosquitto_tls")):
    ra = {r["round"]: r.get("delivered_rate") for r in sh.get(a, [])}
    rb = {r["round"]: r.get("delivered_rate") for r in sh.get(ref, [])}
    ratios = [ra[k] / rb[k] for k in ra if ra.get(k) and rb.get(k)]
    if ratios:
        print(f"{a} / {ref}, same round: median {statistics.median(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)})")
hs = by("handshakes")
if hs:
    print()
    print("Connections per second (connect, CONNACK, DISCONNECT; TLS = full handshake)")
    print()
    print("| broker | connections/s (median) | per round | failed | CONNACK p50 µs | p99 µs | broker CPU µs/connection |")
    print("|---|---|---|---|---|---|---|")
    for b, rs in hs.items():
        cpu = med([r["cpu_ticks"] / r["clk_tck"] * 1e6 / r["connected"] for r in rs if r.get("connected")])
        print(f"| {b} | {f(med([r.get('connections_per_sec') for r in rs]))} "
              f"| {' / '.join(f(r.get('connections_per_sec')) for r in rs)} | {sum(r.get('failed', 0) for r in rs)} "
              f"| {f(med([r.get('connack_us', {}).get('p50') for r in rs]))} "
              f"| {f(med([r.get('connack_us', {}).get('p99') for r in rs]))} | {f(cpu)} |")
errors = [(r.get("label"), e) for r in runs for e in r.get("errors", [])]
machines = [r.get("machine", "") for r in runs]
print()
print(f"machine: {sum(m.startswith('idle') for m in machines)} of {len(runs)} runs started with no compiler running; "
      f"load at run start {min(machines)} … {max(machines)}")
for l, e in errors[:20]:
    print(f"error ({l}): {e}")
PY
echo "results in $OUT" >&2
