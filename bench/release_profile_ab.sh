#!/usr/bin/env bash
# A/B of two sharq release binaries (issue #15: does LTO pay?): the same shared load (2
# publishers -> 1 group x 4 members, 64 B, QoS 1 and QoS 0), alternating binaries, three
# rounds, each run on a freshly started broker; prints delivered rates and the broker's CPU
# ticks (user + system, 1/100 s) per run.
#
#   cargo build --release --bin sharq --example sharq_bench && cp target/release/sharq /tmp/sharq-nolto
#   cargo build --release --bin sharq --config 'profile.release.lto="fat"' \
#       --config 'profile.release.codegen-units=1' && cp target/release/sharq /tmp/sharq-lto
#   bench/release_profile_ab.sh /tmp/sharq-nolto /tmp/sharq-lto
set -u
cd "$(dirname "$0")/.."
A=${1:?first sharq binary}
Bin=${2:?second sharq binary}
B=${CARGO_TARGET_DIR:-target}/release/examples/sharq_bench
PORT=${PORT:-18841}
# shellcheck source=broker_run.sh
. bench/broker_run.sh
bench_sharq_config >"$work/sharq.toml"
require_free_port
for round in 1 2 3; do
  for bin in "$A" "$Bin"; do
    for q in 1 0; do
      M=$([[ $q == 0 ]] && echo 400000 || echo 200000)
      SHARQ=$bin start_sharq "$work/sharq.toml" "$work/broker.log" 10
      out=$($B shared --host 127.0.0.1 --port "$PORT" --publishers 2 --groups 1 --members 4 --qos $q --payload 64 --messages $M --max-secs 8 2>&1 | grep -o '"delivered_rate":[0-9.]*' | head -1)
      cpu=$(cpu_ticks)
      stop_broker
      echo "round=$round bin=$bin qos=$q cpu_ticks=$cpu $out"
    done
  done
done
