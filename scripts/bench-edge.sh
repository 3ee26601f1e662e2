#!/usr/bin/env bash
# Edge budgets, in one run: the bundle's size (gzipped), the time from page
# load to the first ranking in a real browser (Debian's Chromium, cold
# cache), and the page's time per candidate against the same Go code
# natively. Prints a markdown table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
dir=.cache/bench/edge
mkdir -p "$dir"
make build consul >/dev/null
go test -run '^$' -bench RankCall -benchtime 2s -count "$RUNS" ./edge/internal/rank/ > "$dir/native.txt"
go test -run '^$' -bench EdgeBrowser -benchtime 1x -count "$RUNS" ./e2e/ > "$dir/browser.txt"
/usr/bin/python3 - "$dir" <<'PY'
import re, statistics, sys
d = sys.argv[1]
def metrics(path):
    runs = []
    for line in open(path):
        if line.startswith("Benchmark"):
            runs.append({m.group(2): float(m.group(1)) for m in re.finditer(r"([\d.]+) (\S+)", line)})
    return runs
native, browser = metrics(f"{d}/native.txt"), metrics(f"{d}/browser.txt")
med = lambda rs, k: statistics.median(r[k] for r in rs)
runs = lambda rs, k: ", ".join(f"{r[k]:,.0f}" for r in rs)
n, bz = med(native, "ns/candidate"), med(browser, "ns/candidate")
files = ["scorer.wasm", "model.json", "wasm_exec.js", "features.json"]
total = sum(browser[0][f + "_gzip_bytes"] for f in files)
print("| what | median | runs |\n|---|---|---|")
for f in files:
    print(f"| `{f}`, gzipped (raw) | {browser[0][f + '_gzip_bytes']/1024:,.0f} KiB ({browser[0][f + '_bytes']/1024:,.0f} KiB) | |")
print(f"| **the bundle, gzipped** | **{total/1024:,.0f} KiB** | |")
print(f"| page load to first ranking, cold cache | {med(browser, 'first_rank_ms'):,.0f} ms | {runs(browser, 'first_rank_ms')} |")
print(f"| rank in the browser (WebAssembly), per candidate | {bz:,.0f} ns | {runs(browser, 'ns/candidate')} |")
print(f"| the same Go code natively, per candidate | {n:,.0f} ns | {runs(native, 'ns/candidate')} |")
print(f"| **browser / native** | **{bz/n:.1f}x** | |")
PY
