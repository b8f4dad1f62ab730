#!/usr/bin/env bash
# Same-run A/B of two sharq revisions on the shared-group benchmarks (issue #26: "the
# shared-group benchmark is not slower"). Two parts, each interleaved so that both sides see the
# same machine:
#   1. the load: compare.sh's shared-group shapes (default `shared_q1_64` and `shared_q0_64`:
#      2 publishers → 1 group × 4 members, 64 B, Wasm round robin, unlimited rate) against each
#      side's release broker, fresh broker per run (bench/broker_run.sh), ROUNDS rounds, the
#      sides alternating (A B, then B A, ...: the machine's drift hits both alike); one load
#      generator for both sides (B's `sharq_bench`, or BENCH);
#   2. the group's own cost without sockets: `benches/group_dispatch.rs` (criterion), each side's
#      bench binary in turn, BENCH_ROUNDS rounds, the same alternation.
# Prints a table per part (medians, B against A paired per round) and keeps every run as a JSON
# line in $OUT.
#
#   bench/ab_shared_group.sh main bench          # two git revisions (commit, branch, tag)
#   bench/ab_shared_group.sh /tmp/a-target target # existing builds: a target dir holding
#                                                 # release/sharq (and release/deps/group_dispatch-*)
#   bench/ab_shared_group.sh /tmp/sharq-a /tmp/sharq-b   # or sharq binaries: load part only
#
# A revision is built in release (`sharq`, `sharq_bench`, the `group_dispatch` bench) in a
# temporary git worktree under AB_DIR, into a target dir of its own, AB_DIR/target-<commit>,
# kept for the next run (a second run with the same commits builds nothing). A new target dir is
# seeded from SEED (hard links, as the project's worktrees are), so only the sharq crate and the
# built-in plugins rebuild: a few minutes per revision on 2 cores instead of a fresh build. The
# sharq crate's own artifacts and every fingerprint are not linked but left out or copied, so
# that the build never writes through a link into SEED.
#
# Environment: AB_DIR (default target/ab), SEED (default $CARGO_TARGET_DIR or target), ROUNDS
# (default 5), SHAPES (default "shared_q1_64 shared_q0_64"; also shared_q1_4k, shared_q1_2x4),
# MESSAGES (QoS 1 messages per run, default 100000; QoS 0 runs send twice as many),
# BENCH_ROUNDS (default 2; 0 skips the criterion part), BENCH_FILTER (criterion filter, default
# round_robin and native_round_robin at 4, 64 and 1,024 members), MEASUREMENT_SECS (default 2),
# BENCH (the load generator), PORT (default 18871), OUT (default target/ab_shared_group.jsonl),
# IDLE_WAIT (seconds to wait for other builds to finish before each run, default 0: the state is
# recorded next to each run either way). With the defaults, about 4 minutes once built.
set -euo pipefail
cd "$(dirname "$0")/.."
if (($# != 2)); then
    sed -n '2,35p' "$0" >&2
    exit 2
fi
PORT=${PORT:-18871}
ROUNDS=${ROUNDS:-5}
SHAPES=${SHAPES:-"shared_q1_64 shared_q0_64"}
MESSAGES=${MESSAGES:-100000}
BENCH_ROUNDS=${BENCH_ROUNDS:-2}
BENCH_FILTER=${BENCH_FILTER:-'^group_dispatch/(round_robin|native_round_robin)/(4|64|1024)$'}
MEASUREMENT_SECS=${MEASUREMENT_SECS:-2}
AB_DIR=${AB_DIR:-target/ab}
SEED=${SEED:-${CARGO_TARGET_DIR:-target}}
OUT=${OUT:-target/ab_shared_group.jsonl}
export IDLE_WAIT=${IDLE_WAIT:-0}

# shellcheck source=broker_run.sh
. bench/broker_run.sh
require_tools jq
require_free_port

log() { echo "[ab $(date -u +%H:%M:%S)] $*" >&2; }

# Hard-links SEED's release and plugin builds into a new target dir, without the sharq crate's
# own artifacts (they are rebuilt for every revision, and build.rs writes its output in place)
# and with real copies of the fingerprints (cargo rewrites those in place too).
seed_target() { # TARGET_DIR
    local dst=$1 d
    mkdir -p "$dst"
    for d in release plugins; do
        [[ -d $SEED/$d && ! -e $dst/$d ]] && cp -al "$SEED/$d" "$dst/$d"
    done
    [[ -d $dst/release ]] || return 0
    rm -rf "$dst"/release/sharq "$dst"/release/deps/*sharq* "$dst"/release/deps/group_dispatch-* \
        "$dst"/release/build/sharq-* "$dst"/release/examples/*sharq_bench* "$dst"/release/incremental
    while IFS= read -r d; do
        rm -rf "$d"
        cp -a "$SEED/${d#"$dst"/}" "$d"
    done < <(find "$dst" -type d -name .fingerprint)
    rm -rf "$dst"/release/.fingerprint/sharq-*
    # A linked lock file would lock SEED's build too.
    find "$dst" -name .cargo-lock -delete
}

# Sets side_sharq, side_bench (sharq_bench or empty) and side_gd (group_dispatch bench binary or
# empty) for a revision, a target dir, or a sharq binary; builds a revision unless already built.
resolve() { # REV
    side_sharq= side_bench= side_gd= side_name=$1
    if [[ -f $1 && -x $1 ]]; then
        side_sharq=$(realpath "$1")
        return
    fi
    local tdir
    if [[ -d $1 && -e $1/release ]]; then
        tdir=$(realpath "$1")
    else
        local commit
        commit=$(git rev-parse --verify --quiet "$1^{commit}") || {
            echo "$1: neither a sharq binary, a target dir nor a git revision" >&2
            exit 2
        }
        side_name="$1 ($(git rev-parse --short "$commit"))"
        mkdir -p "$AB_DIR"
        tdir=$(realpath "$AB_DIR")/target-$commit
        if [[ ! -f $tdir/.ab-built ]]; then
            log "building $1 ($commit) into $tdir"
            seed_target "$tdir"
            local wt
            wt=$(realpath "$AB_DIR")/src-$commit
            # Left behind by an interrupted run: start over.
            git worktree remove --force "$wt" 2>/dev/null || rm -rf "$wt"
            git worktree prune
            git worktree add --detach "$wt" "$commit" >&2
            # A build failure stops the A/B: a side that did not build has nothing to measure.
            (
                cd "$wt"
                export CARGO_TARGET_DIR=$tdir CARGO_INCREMENTAL=0
                cargo build --release --bin sharq --example sharq_bench >&2
                cargo bench --bench group_dispatch --no-run >&2
            )
            git worktree remove --force "$wt"
            touch "$tdir/.ab-built"
        fi
    fi
    side_sharq=$tdir/release/sharq
    [[ -x $tdir/release/examples/sharq_bench ]] && side_bench=$tdir/release/examples/sharq_bench
    # The newest group_dispatch bench executable (cargo keeps older hashes beside it).
    side_gd=$(find "$tdir/release/deps" -maxdepth 1 -type f -executable -name 'group_dispatch-*' \
        -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -1 | cut -d' ' -f2-)
    [[ -x $side_sharq ]] || {
        echo "$1: no sharq binary at $side_sharq" >&2
        exit 2
    }
}

resolve "$1"
A_SHARQ=$side_sharq A_BENCH=$side_bench A_GD=$side_gd A_NAME=$side_name
resolve "$2"
B_SHARQ=$side_sharq B_BENCH=$side_bench B_GD=$side_gd B_NAME=$side_name
BENCH=${BENCH:-${B_BENCH:-$A_BENCH}}
[[ -n $BENCH && -x $BENCH ]] || {
    echo "no sharq_bench: pass a revision or target dir that has one, or set BENCH" >&2
    exit 2
}
log "A = $A_NAME: $A_SHARQ"
log "B = $B_NAME: $B_SHARQ"
log "load generator: $BENCH"

# compare.sh's broker config, Wasm round robin (compare.sh's sharq rows).
{
    bench_sharq_config
    echo 'default_strategy = "round_robin"'
} >"$work/sharq.toml"

shape_args() { # SHAPE -> sharq_bench arguments (compare.sh's scenarios)
    local q1=$MESSAGES
    case "$1" in
    shared_q1_64) echo "shared --publishers 2 --groups 1 --members 4 --qos 1 --payload 64 --messages $q1 --max-secs 8" ;;
    shared_q0_64) echo "shared --publishers 2 --groups 1 --members 4 --qos 0 --payload 64 --messages $((q1 * 2)) --max-secs 8" ;;
    shared_q1_4k) echo "shared --publishers 2 --groups 1 --members 4 --qos 1 --payload 4k --messages $((q1 / 2)) --max-secs 8" ;;
    shared_q1_2x4) echo "shared --publishers 4 --groups 2 --members 4 --qos 1 --payload 64 --messages $q1 --max-secs 8" ;;
    *)
        echo "unknown shape $1" >&2
        exit 2
        ;;
    esac
}
for shape in $SHAPES; do shape_args "$shape" >/dev/null; done

# The side order of a round: A B in odd rounds, B A in even ones.
sides_of_round() { # ROUND
    if (($1 % 2)); then echo "A B"; else echo "B A"; fi
}

load_run() { # SIDE SHAPE ROUND
    local side=$1 shape=$2 round=$3 bin machine args line
    bin=$A_SHARQ
    [[ $side == B ]] && bin=$B_SHARQ
    machine=$(wait_idle)
    read -r -a args <<<"$(shape_args "$shape")"
    SHARQ=$bin start_sharq "$work/sharq.toml" "$work/broker.log" 30
    line=$("$BENCH" "${args[@]}" --port "$PORT" --broker-pid "$broker_pid" --label "ab $side $shape $round" || true)
    stop_broker
    if [[ -z $line ]]; then
        log "$side $shape round $round: sharq_bench printed nothing"
        return
    fi
    jq -c --arg side "$side" --arg shape "$shape" --argjson round "$round" --arg machine "$machine" \
        --arg bin "$bin" \
        '{part: "load", side: $side, shape: $shape, round: $round, machine: $machine, binary: $bin,
          delivered_rate, delivered, lost, duplicates, errors, latency_us,
          cpu_us_per_msg: (if (.delivered // 0) > 0 and .broker_cpu_secs_measured != null
                           then .broker_cpu_secs_measured * 1e6 / .delivered else null end)}' \
        <<<"$line" | tee -a "$OUT" >&2
}

# Criterion's text output: an id line (`group_dispatch/...`), then `time: [low mid high]`
# (sometimes on the same line). One JSON line per benchmark, the median estimate in ns.
criterion_run() { # SIDE ROUND
    local side=$1 round=$2 gd=$A_GD machine
    [[ $side == B ]] && gd=$B_GD
    machine=$(wait_idle)
    mkdir -p "$work/criterion"
    (cd "$work" && CRITERION_HOME=$work/criterion "$gd" --bench --noplot --warm-up-time 1 \
        --measurement-time "$MEASUREMENT_SECS" "$BENCH_FILTER") 2>&1 | tee "$work/criterion.log" >&2 || true
    python3 - "$work/criterion.log" "$side" "$round" "$machine" <<'PY' | tee -a "$OUT" >&2
import json, re, sys
log, side, rnd, machine = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
unit = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
current = None
for line in open(log):
    m = re.match(r"^(group_dispatch/\S+)", line)
    if m:
        current = m.group(1)
    t = re.search(r"time:\s+\[([\d.]+) (\S+) ([\d.]+) (\S+) ([\d.]+) (\S+)\]", line)
    if t and current:
        print(json.dumps({"part": "criterion", "side": side, "round": rnd, "machine": machine,
                          "bench": current, "ns": float(t.group(3)) * unit[t.group(4)]}))
        current = None
PY
}

mkdir -p "$(dirname "$OUT")"
: >"$OUT"
log "load: $SHAPES × $ROUNDS rounds × 2 sides; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
    for shape in $SHAPES; do
        for side in $(sides_of_round "$round"); do
            load_run "$side" "$shape" "$round"
        done
    done
done
if ((BENCH_ROUNDS > 0)); then
    if [[ -n $A_GD && -n $B_GD ]]; then
        log "criterion: group_dispatch × $BENCH_ROUNDS rounds × 2 sides"
        for round in $(seq 1 "$BENCH_ROUNDS"); do
            for side in $(sides_of_round "$round"); do
                criterion_run "$side" "$round"
            done
        done
    else
        log "criterion part skipped: no group_dispatch bench binary for $([[ -z $A_GD ]] && echo A || echo B)"
    fi
fi
log "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$OUT" "$A_NAME" "$B_NAME" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
a_name, b_name = sys.argv[2], sys.argv[3]
med = lambda xs: statistics.median(xs) if xs else None
def pct(r):
    return f"{(r - 1) * 100:+.1f} %" if r is not None else "-"
def fmt(v, nd=0):
    return "-" if v is None else f"{v:,.{nd}f}"

print(f"A = {a_name}\nB = {b_name}\n")
load = [r for r in rows if r["part"] == "load"]
if load:
    print("| shape | side | runs | delivered msg/s, per round | median | broker CPU µs/msg, median | lost | dup |")
    print("|---|---|---|---|---|---|---|---|")
    for shape in dict.fromkeys(r["shape"] for r in load):
        for side in "AB":
            rs = sorted((r for r in load if r["shape"] == shape and r["side"] == side), key=lambda r: r["round"])
            print(f"| `{shape}` | {side} | {len(rs)} | {' / '.join(fmt(r.get('delivered_rate')) for r in rs)} | "
                  f"{fmt(med([r['delivered_rate'] for r in rs if r.get('delivered_rate')]))} | "
                  f"{fmt(med([r['cpu_us_per_msg'] for r in rs if r.get('cpu_us_per_msg')]), 2)} | "
                  f"{sum(r.get('lost') or 0 for r in rs)} | {sum(r.get('duplicates') or 0 for r in rs)} |")
    print()
    print("| shape | B / A delivered msg/s, paired median | B / A broker CPU per message, paired median |")
    print("|---|---|---|")
    for shape in dict.fromkeys(r["shape"] for r in load):
        by = {(r["side"], r["round"]): r for r in load if r["shape"] == shape}
        rounds = sorted({k[1] for k in by})
        def paired(key):
            xs = [by[("B", n)][key] / by[("A", n)][key] for n in rounds
                  if ("A", n) in by and ("B", n) in by and by[("A", n)].get(key) and by[("B", n)].get(key)]
            return med(xs)
        print(f"| `{shape}` | {pct(paired('delivered_rate'))} | {pct(paired('cpu_us_per_msg'))} |")
    print()
crit = [r for r in rows if r["part"] == "criterion"]
if crit:
    print("| criterion bench | A ns/message (median of rounds) | B ns/message | B / A |")
    print("|---|---|---|---|")
    for bench in dict.fromkeys(r["bench"] for r in crit):
        a = med([r["ns"] for r in crit if r["bench"] == bench and r["side"] == "A"])
        b = med([r["ns"] for r in crit if r["bench"] == bench and r["side"] == "B"])
        print(f"| `{bench}` | {fmt(a, 1)} | {fmt(b, 1)} | {pct(b / a) if a and b else '-'} |")
PY
echo "every run: $OUT" >&2
