#!/usr/bin/env python3
"""Tables for the durable-store scripts (issue #11) from their JSON lines.

    durable_report.py rate  target/durable_rate.jsonl
    durable_report.py kill9 target/kill9_loop.jsonl
"""
import json
import statistics
import sys


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0):
    if x is None:
        return "—"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def rate(path):
    runs = [json.loads(line) for line in open(path) if line.strip()]
    main = [r for r in runs if r.get("commit_interval_ms") is None]
    sweep = [r for r in runs if r.get("commit_interval_ms") is not None]
    groups = {}
    for r in main:
        groups.setdefault((r["payload"], r["broker"]), []).append(r)
    payloads = list(dict.fromkeys(r["payload"] for r in main))
    brokers = list(dict.fromkeys(r["broker"] for r in main))
    print("| payload | broker | delivered msg/s (median) | per round | vs sharq_mem | lost | dup "
          "| p99 µs | broker CPU µs/msg | `sharq-store` thread CPU µs/msg | store file MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for p in payloads:
        base = med([r["delivered_rate"] for r in groups.get((p, "sharq_mem"), [])])
        for b in brokers:
            rs = groups.get((p, b), [])
            if not rs:
                continue
            m = med([r["delivered_rate"] for r in rs])
            per = " / ".join(fmt(r["delivered_rate"]) for r in rs)
            store_us = med([
                r["thread_ticks"].get("sharq-store", 0) / r["clk_tck"] * 1e6 / r["delivered"]
                for r in rs if r.get("delivered") and b.startswith("sharq")
            ])
            ratio = f"{m / base:.0%}" if base and m is not None else "—"
            lost = sum(r.get("lost", 0) for r in rs)
            dup = sum(r.get("duplicates", 0) for r in rs)
            p99 = med([r["latency_us"]["p99"] for r in rs if r.get("latency_us")])
            store_mib = med([r["store_file_bytes"] / 2**20 for r in rs]) if b in ("sharq_sync", "sharq_nosync") else None
            print(f"| {p} | {b} | {fmt(m)} | {per} | {ratio} | {lost} | {dup} | {fmt(p99)} "
                  f"| {fmt(med([r['cpu_us_per_msg'] for r in rs]), 2)} | {fmt(store_us, 2)} | {fmt(store_mib, 1)} |")
    errors = [(r["label"], e) for r in runs for e in r.get("errors", [])]
    idle = sum(1 for r in runs if str(r.get("machine", "")).startswith("idle"))
    loads = [float(str(r.get("machine", "")).rsplit(" ", 1)[-1]) for r in runs if r.get("machine")]
    print()
    print(f"machine: {idle} of {len(runs)} runs started with no compiler running"
          + (f"; 1-min load average at run start {min(loads):.2f}–{max(loads):.2f} (median {statistics.median(loads):.2f})" if loads else ""))
    if sweep:
        print()
        print("commit_interval_ms sweep (sharq, sync = true, 64 B):")
        print()
        print("| commit_interval_ms | delivered msg/s (median) | per round | p50 µs | p99 µs | broker CPU µs/msg | `sharq-store` CPU µs/msg |")
        print("|---|---|---|---|---|---|---|")
        by = {}
        for r in sweep:
            by.setdefault(r["commit_interval_ms"], []).append(r)
        for ci in sorted(by):
            rs = by[ci]
            store_us = med([r["thread_ticks"].get("sharq-store", 0) / r["clk_tck"] * 1e6 / r["delivered"]
                            for r in rs if r.get("delivered")])
            print(f"| {ci} | {fmt(med([r['delivered_rate'] for r in rs]))} | "
                  f"{' / '.join(fmt(r['delivered_rate']) for r in rs)} | "
                  f"{fmt(med([r['latency_us']['p50'] for r in rs if r.get('latency_us')]))} | "
                  f"{fmt(med([r['latency_us']['p99'] for r in rs if r.get('latency_us')]))} | "
                  f"{fmt(med([r['cpu_us_per_msg'] for r in rs]), 2)} | {fmt(store_us, 2)} |")
    print()
    print("thread CPU split, median share of the broker's CPU time (sharq runs, 64 B):")
    print()
    for b in brokers:
        rs = [r for r in groups.get(("64", b), []) if b.startswith("sharq") and r.get("cpu_ticks")]
        if not rs:
            continue
        names = sorted({n for r in rs for n in r["thread_ticks"]})
        shares = {n: med([r["thread_ticks"].get(n, 0) / max(1, sum(r["thread_ticks"].values())) for r in rs]) for n in names}
        print(f"- {b}: " + ", ".join(f"{n} {s:.0%}" for n, s in sorted(shares.items(), key=lambda kv: -kv[1]) if s >= 0.005))
    if errors:
        print()
        print("errors reported by the load tool:")
        for label, e in errors:
            print(f"- {label}: {e}")


def kill9(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| broker | subscriber | rounds | acknowledged (PUBACK) | delivered after the last restart | lost (acknowledged, never delivered) | lost % | duplicates | delivered but never acknowledged |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pct = f"{100 * r['lost'] / r['acked']:.2f} %" if r["acked"] else "—"
        print(f"| {r['broker']} | {r['subscriber']} | {r['rounds']} | {r['acked']:,} | {r['delivered_unique']:,} | "
              f"{r['lost']:,} | {pct} | {r['duplicates']:,} | {r['unacked_delivered']:,} |")


if __name__ == "__main__":
    {"rate": rate, "kill9": kill9}[sys.argv[1]](sys.argv[2])
