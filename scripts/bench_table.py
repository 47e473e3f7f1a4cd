#!/usr/bin/env python3
"""Prints the markdown tables of docs/benchmarks.md from the JSON files scripts/bench.sh wrote."""
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench")


def load(name):
    p = out / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def fmt(v, unit="", digits=1):
    return "-" if v is None else f"{v:.{digits}f}{unit}"


rows = sorted(p.stem for p in out.glob("s*.json"))
print("| run | sync (s) | RSS (MB) | RSS/proxy (KB) | +10% proxies (KB each) | idle CPU | "
      "endpoint p50/p99 (ms) | floor p50/p99 (ms) | p99/floor | CPU/change (ms) | bytes/proxy | "
      "rollout p50/p99 (ms) | new service p50/p99 (ms) |")
print("|" + "---|" * 13)
for name in rows:
    r = load(name)
    ch = r.get("changes") or {}
    ep = ch.get("endpoint") or {}
    ro = ch.get("rollout") or {}
    sv = ch.get("service") or {}
    fl = r.get("floor") or {}
    per = (r["rss_mb"] - r["rss_empty_mb"]) * 1e3 / r["proxies"]
    ratio = ep.get("p99_ms") / fl["p99_ms"] if ep and fl.get("p99_ms") else None
    print(
        f"| {name} | {r['initial_sync_ms'] / 1e3:.1f} | {r['rss_mb']:.0f} | {per:.0f} | "
        f"{r['rss_per_added_proxy_kb']:.0f} | {r['idle_core_percent']:.2f} % | "
        f"{fmt(ep.get('p50_ms'))} / {fmt(ep.get('p99_ms'))} | "
        f"{fmt(fl.get('p50_ms'))} / {fmt(fl.get('p99_ms'))} | {fmt(ratio, 'x')} | "
        f"{fmt(ep.get('cpu_ms'))} | {ep.get('bytes_per_proxy', '-')} | "
        f"{fmt(ro.get('p50_ms'))} / {fmt(ro.get('p99_ms'))} | "
        f"{fmt(sv.get('p50_ms'))} / {fmt(sv.get('p99_ms'))} |"
    )
storms = [(n, load(n)["storm"]) for n in rows if load(n).get("storm")]
if storms:
    print()
    print("| run | storm: proxies | synced in (s) | dropped | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for n, s in storms:
        print(f"| {n} | {s['proxies']} | {s['sync_ms'] / 1e3:.1f} | {s['dropped']} | {s['peak_rss_mb']:.0f} |")
def first_run(e):
    # apply-bench writes {"runs": [...]}; the Envoy rows are its first (only) run.
    return e["runs"][0] if e and e.get("runs") else e


envoy = [(k, first_run(load(f"envoy-{k}"))) for k in ("delta", "sotw")]
if any(e for _, e in envoy):
    print()
    print("| real Envoy, stream | clusters | initial sync (s) | change: server -> ACK p50/p99 (ms) | file -> ACK p50/p99 (ms) |")
    print("|---|---|---|---|---|")
    for k, e in envoy:
        if e:
            s, f = e["server_to_ack_ms"], e["file_to_ack_ms"]
            print(f"| {k} | {e['clusters']} | {e['initial_live_ms'] / 1e3:.1f} | {s['p50']:.1f} / {s['p99']:.1f} | {f['p50']:.1f} / {f['p99']:.1f} |")
