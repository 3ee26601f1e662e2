#!/usr/bin/python3
"""XGBoost's side of the batch-scoring benchmark.

Reads the exact rows the Go batch job scores, exported as a raw matrix
(PREFIX.f32: little-endian float32, row-major, NaN for missing; PREFIX.json:
{"rows": R, "cols": C, "names": [feature names in model input order]}), loads
the model, and times Debian's XGBoost inplace_predict on the whole prebuilt
matrix in one call (scoring only: reading the matrix and loading the model are
not timed). Prints JSON with the run times, the median and pairs per second;
--save-preds writes the last run's predictions to PREFIX.xgb.f32 (float32) for
a parity check against the Go job.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np
import xgboost as xgb

WARMUP_ROWS = 10000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="XGBoost JSON model")
    ap.add_argument("--matrix", required=True, help="prefix of PREFIX.f32 and PREFIX.json")
    ap.add_argument("--nthread", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--save-preds", action="store_true", help="write the last run's predictions to PREFIX.xgb.f32")
    args = ap.parse_args()
    if args.repeats < 1 or args.nthread < 1:
        sys.exit("--repeats and --nthread must be at least 1")

    with open(args.matrix + ".json") as f:
        meta = json.load(f)
    rows, cols, names = int(meta["rows"]), int(meta["cols"]), list(meta["names"])
    if len(names) != cols:
        sys.exit(f"{args.matrix}.json: {len(names)} names for {cols} cols")
    X = np.fromfile(args.matrix + ".f32", dtype="<f4")
    if X.size != rows * cols:
        sys.exit(f"{args.matrix}.f32: {X.size} floats, want rows*cols = {rows}*{cols} = {rows * cols}")
    X = X.reshape(rows, cols)

    bst = xgb.Booster(model_file=args.model)
    if bst.feature_names is not None:
        if list(bst.feature_names) != names:
            sys.exit(f"feature names differ: matrix {names}, model {list(bst.feature_names)}")
    elif bst.num_features() != cols:
        sys.exit(f"matrix has {cols} cols, model has {bst.num_features()} features")
    bst.set_param({"nthread": args.nthread})

    bst.inplace_predict(X[:WARMUP_ROWS], missing=np.nan)  # warm up
    runs = []
    preds = None
    for _ in range(args.repeats):
        start = time.perf_counter()
        preds = bst.inplace_predict(X, missing=np.nan)
        runs.append(time.perf_counter() - start)
    if preds.shape[0] != rows:
        sys.exit(f"got {preds.shape[0]} predictions for {rows} rows")
    if args.save_preds:
        np.ascontiguousarray(preds, dtype="<f4").tofile(args.matrix + ".xgb.f32")
    med = statistics.median(runs)
    print(json.dumps({"xgboost_version": xgb.__version__, "nthread": args.nthread, "rows": rows, "cols": cols,
                      "runs_s": [round(v, 6) for v in runs], "median_s": round(med, 6),
                      "pairs_per_s_median": round(rows / med) if med > 0 else None,
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


if __name__ == "__main__":
    main()
