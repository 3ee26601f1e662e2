#!/usr/bin/env bash
# Scoring benchmark: adrank's Go scorer against XGBoost's own single-threaded
# prediction, on the same model (100 trees, depth 6, 50 features) and rows,
# in batches of 100, in one run. Prints a markdown table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
COUNT=${COUNT:-7}
dir=.cache/bench
mkdir -p "$dir"
"$PYTHON" ml/python/bench_xgb.py --out "$dir" --repeats "$COUNT" > "$dir/xgboost.json"
ADRANK_BENCH_DIR=$PWD/$dir go test -run '^$' -bench . -benchtime 1s -count "$COUNT" ./ml/model/ > "$dir/go.txt"
"$PYTHON" - "$dir" <<'PY'
import json, re, statistics, sys
d = sys.argv[1]
xgb = json.load(open(f"{d}/xgboost.json"))
runs = {}
for line in open(f"{d}/go.txt"):
    m = re.match(r"Benchmark(\w+)-\d+\s+\d+\s+[\d.]+ ns/op\s+([\d.]+) ns/candidate", line)
    if m:
        runs.setdefault(m.group(1), []).append(float(m.group(2)))
med = {k: statistics.median(v) for k, v in runs.items()}
x = xgb["ns_per_candidate_median"]
print(f"model: {xgb['trees']} trees, depth {xgb['depth']}, {xgb['features']} features, {xgb['nodes']} nodes; "
      f"batches of {xgb['batch']}; XGBoost {xgb['xgboost_version']}, 1 thread; medians of {len(runs['GBDTPredict'])} runs\n")
print("| what | ns per candidate (median) | runs | vs XGBoost |")
print("|---|---|---|---|")
print(f"| XGBoost `inplace_predict` (numpy rows) | {x:.0f} | {', '.join(f'{v:.0f}' for v in xgb['runs'])} | 1.00 |")
names = {"GBDTPredict": "adrank GBDT, vectors (`PredictBatch`)",
         "GBDTTable": "adrank GBDT, dense wire tables (`ScoreTable`, the ranker's path: 10 shared + 40 own columns)",
         "GBDTScorer": "adrank GBDT, feature maps by name (`Score`: 10 shared + 40 own)",
         "LogRegPredict": "adrank logistic regression, vectors", "LogRegTable": "adrank logistic regression, dense wire tables",
         "LogRegScorer": "adrank logistic regression, feature maps by name"}
for k in ["GBDTPredict", "GBDTTable", "GBDTScorer", "LogRegPredict", "LogRegTable", "LogRegScorer"]:
    ratio = f"{x / med[k]:.2f}x faster" if k.startswith("GBDT") else "(not comparable)"
    print(f"| {names[k]} | {med[k]:.0f} | {', '.join(f'{v:.0f}' for v in runs[k])} | {ratio} |")
PY
