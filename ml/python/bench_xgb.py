#!/usr/bin/python3
"""XGBoost's side of the scoring benchmark (make bench-scoring).

Trains a GBDT of the benchmark's shape (100 trees of depth 6 over 50 features)
on synthetic data with missing values, saves it and 10,000 rows for the Go
benchmark, then times XGBoost's own single-threaded prediction on batches of
100 rows (inplace_predict, the least overhead XGBoost offers) and prints the
median ns per candidate over repeated runs.
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
import xgboost as xgb

FEATURES, TREES, DEPTH, ROWS, BATCH = 50, 100, 6, 10000, 100


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".cache/bench")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50000, FEATURES))
    X[rng.random(X.shape) < 0.05] = np.nan
    logit = np.nansum(X[:, :10] * rng.normal(size=10), axis=1) + np.sin(np.nan_to_num(X[:, 10])) - 2
    y = (rng.random(len(X)) < 1 / (1 + np.exp(-logit))).astype(float)
    names = [f"f{i}" for i in range(FEATURES)]
    bst = xgb.train({"objective": "binary:logistic", "max_depth": DEPTH, "eta": 0.1, "tree_method": "hist",
                     "nthread": 1, "seed": 1, "grow_policy": "depthwise"},
                    xgb.DMatrix(X, label=y, missing=np.nan, feature_names=names), num_boost_round=TREES)
    os.makedirs(args.out, exist_ok=True)
    bst.save_model(os.path.join(args.out, "gbdt.json"))
    rows = X[:ROWS]
    np.savetxt(os.path.join(args.out, "rows.csv"), rows, delimiter=",", fmt="%.17g")
    bst.set_param({"nthread": 1})
    batches = [rows[i:i + BATCH] for i in range(0, ROWS, BATCH)]
    for b in batches[:10]:  # warm up
        bst.inplace_predict(b)
    per_candidate = []
    for _ in range(args.repeats):
        start = time.perf_counter_ns()
        for b in batches:
            bst.inplace_predict(b)
        per_candidate.append((time.perf_counter_ns() - start) / ROWS)
    nodes = sum(len(t["left_children"]) for t in json.load(open(os.path.join(args.out, "gbdt.json")))
                ["learner"]["gradient_booster"]["model"]["trees"])
    print(json.dumps({"xgboost_version": xgb.__version__, "trees": TREES, "depth": DEPTH, "features": FEATURES,
                      "nodes": nodes, "batch": BATCH, "ns_per_candidate_median": statistics.median(per_candidate),
                      "runs": [round(v, 1) for v in per_candidate]}))


if __name__ == "__main__":
    main()
