#!/usr/bin/env bash
# Batch benchmark: the whole batch job (world features, GBDT scoring, top K,
# the store) on the demo universe of feed (5,000 users x 1,000 ads) against
# Debian's XGBoost scoring the same rows, prebuilt as one matrix, with two
# threads, scoring only; in one run. Prints a markdown table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
RUNS=${RUNS:-3}
MODEL=${MODEL:-models/feed/v2.json}
dir=.cache/bench/batch
rm -rf "$dir" && mkdir -p "$dir"
"$PYTHON" -c 'import xgboost' 2>/dev/null || { echo "needs Debian's python3-xgboost: apt-get install -y python3-xgboost"; exit 1; }
go build -o bin/adrankctl ./adrankctl/cmd/adrankctl

# The exact rows the job scores, and adrank's scores of them.
bin/adrankctl batch run --domain feed --version v2 --model "$MODEL" --export-matrix "$dir/rows" 2>/dev/null

job() { # store, generation -> one JSON line: the job's summary plus the process's wall time and peak RSS
  /usr/bin/time -f '%e %M' -o "$dir/time" bin/adrankctl batch run --domain feed --version v2 --model "$MODEL" \
    --store "$1" --generation "$2" --progress none > "$dir/summary" 2>/dev/null
  read -r wall rss < "$dir/time"
  "$PYTHON" -c 'import json,sys; s=json.load(open(sys.argv[1])); s["wall_s"]=float(sys.argv[2]); s["rss_kib"]=int(sys.argv[3]); print(json.dumps(s))' "$dir/summary" "$wall" "$rss"
}

redis_pid=
if command -v redis-server >/dev/null; then
  port=$(( 20000 + RANDOM % 20000 ))
  redis-server --port "$port" --save "" --appendonly no --daemonize no >/dev/null 2>&1 &
  redis_pid=$!
  trap 'kill $redis_pid 2>/dev/null || true' EXIT
  sleep 0.5
fi
: > "$dir/jobs.jsonl"
for i in $(seq 1 "$RUNS"); do
  echo "{\"store\":\"embedded\",\"run\":$(job "$dir/store" "g$i")}" >> "$dir/jobs.jsonl"
  if [ -n "$redis_pid" ]; then
    echo "{\"store\":\"redis\",\"run\":$(job "redis://127.0.0.1:$port/0" "g$i")}" >> "$dir/jobs.jsonl"
  fi
  # XGBoost between the job's runs, so that drift falls on both alike.
  "$PYTHON" ml/python/bench_batch_xgb.py --model "$MODEL" --matrix "$dir/rows" --nthread 2 --repeats 1 \
    $([ "$i" = 1 ] && echo --save-preds) >> "$dir/xgboost.jsonl"
done

"$PYTHON" - "$dir" <<'PY'
import json, statistics, sys
import numpy as np
d = sys.argv[1]
jobs = [json.loads(l) for l in open(f"{d}/jobs.jsonl")]
xgb = [json.loads(l) for l in open(f"{d}/xgboost.jsonl")]
meta = json.load(open(f"{d}/rows.json"))
ours = np.fromfile(f"{d}/rows.go.f32", dtype="<f4")
theirs = np.fromfile(f"{d}/rows.xgb.f32", dtype="<f4")
runs = lambda vs: ", ".join("{:,.0f}".format(v) for v in vs)
x = statistics.median(r["pairs_per_s_median"] for r in xgb)
diff = float(np.max(np.abs(ours - theirs)))
print(f"rows: {meta['rows']:,} pairs x {meta['cols']} features; model feed/v2 (XGBoost {xgb[0]['xgboost_version']}); "
      f"largest |adrank - XGBoost| over every row: {diff:.2e}\n")
print("| what | pairs/s, median | runs | vs XGBoost, 2 threads | peak RSS (MiB) |")
print("|---|---|---|---|---|")
xr = runs(r["pairs_per_s_median"] for r in xgb)
xm = max(r["peak_rss_mib"] for r in xgb)
print(f"| XGBoost `inplace_predict`, nthread=2, one prebuilt matrix, scoring only | {x:,.0f} | {xr} | 1.00 | {xm:.0f} |")
for store in ["embedded", "redis"]:
    rs = [j["run"] for j in jobs if j["store"] == store]
    if not rs:
        continue
    job = [r["pairs_per_second"] for r in rs]
    wall = [r["generation_pairs"] / r["wall_s"] for r in rs]
    rss = max(r["rss_kib"] for r in rs) / 1024
    jm, wm = statistics.median(job), statistics.median(wall)
    print(f"| adrank job, {store} store: features, scoring, top 100, writing (`Run`) | {jm:,.0f} | {runs(job)} | **{jm / x:.2f}** | {rss:.0f} |")
    print(f"| the same, whole process (start, world, model, job, exit) | {wm:,.0f} | {runs(wall)} | {wm / x:.2f} | |")
PY
