#!/usr/bin/python3
"""Fit the demo GBDT ranker models with XGBoost and write parity test data.

Reads the CSV logs that `trainmodels -step prepare` wrote, fits one
binary:logistic gbtree model per spec, saves it with Booster.save_model (the
XGBoost JSON format the ranker loads), and writes XGBoost's own predictions on
held-out rows to ml/model/testdata/<domain>-<version>.parity.jsonl so that Go
tests can assert parity without Python.

Run by `make models` with Debian's python3-xgboost (1.7). Deterministic:
one thread, fixed seed.

With --export, it fits one model instead from a training file that
`adrankctl features export DOMAIN --out FILE.csv` wrote (the features as
they were served, and the clicks): the loop from logs to a new version.
"""
import argparse
import json
import math
import os

import numpy as np
import xgboost as xgb

# domain, version, features (in model input order), parameters.
ALL = ["user_age", "user_activity", "user_hist_ctr", "ad_hist_ctr", "ad_age_days", "user_ad_interest",
       "query_match", "ctx_hour_sin", "ctx_hour_cos", "ctx_mobile", "ctx_desktop", "ctx_tablet", "ctx_has_query"]
SPECS = [
    ("feed", "v2", ALL, dict(max_depth=5, eta=0.1, rounds=200)),
    ("stories", "v1", ALL, dict(max_depth=5, eta=0.1, rounds=200)),
]
PARITY_ROWS = 2000


def load(path, features):
    with open(path) as f:
        header = f.readline().strip().split(",")
    data = np.genfromtxt(path, delimiter=",", skip_header=1, dtype=np.float64, missing_values="", filling_values=np.nan)
    cols = [header.index(n) for n in features]
    return data[:, cols], data[:, header.index("click")]


def train_export(path, features, model_out, rounds, max_depth):
    """Fits a model on an exported training file and saves it to model_out."""
    X, y = load(path, features)
    if len(y) == 0 or y.sum() == 0:
        raise SystemExit(f"{path}: {len(y)} rows, {int(y.sum())} clicked: nothing to learn from")
    dtrain = xgb.DMatrix(X, label=y, missing=np.nan, feature_names=features)
    params = {"objective": "binary:logistic", "max_depth": max_depth, "eta": 0.1,
              "tree_method": "hist", "nthread": 1, "seed": 7, "eval_metric": "logloss"}
    bst = xgb.train(params, dtrain, num_boost_round=rounds)
    os.makedirs(os.path.dirname(model_out) or ".", exist_ok=True)
    bst.save_model(model_out)
    print(f"{model_out}: {rounds} trees, depth {max_depth}, from {len(y)} rows, {int(y.sum())} clicked")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logs", default=".cache/logs")
    ap.add_argument("--out", default="models")
    ap.add_argument("--testdata", default="ml/model/testdata")
    ap.add_argument("--export", help="an exported training file (CSV) to fit one model on")
    ap.add_argument("--model-out", help="with --export: the model file to write")
    ap.add_argument("--features", default=",".join(ALL), help="with --export: the features, comma-separated")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--max-depth", type=int, default=4)
    args = ap.parse_args()
    if args.export:
        if not args.model_out:
            raise SystemExit("--export needs --model-out")
        train_export(args.export, args.features.split(","), args.model_out, args.rounds, args.max_depth)
        return
    for domain, version, features, p in SPECS:
        X, y = load(os.path.join(args.logs, f"{domain}-train.csv"), features)
        Xt, _ = load(os.path.join(args.logs, f"{domain}-test.csv"), features)
        dtrain = xgb.DMatrix(X, label=y, missing=np.nan, feature_names=features)
        params = {"objective": "binary:logistic", "max_depth": p["max_depth"], "eta": p["eta"],
                  "tree_method": "hist", "nthread": 1, "seed": 7, "eval_metric": "logloss"}
        bst = xgb.train(params, dtrain, num_boost_round=p["rounds"])
        path = os.path.join(args.out, domain, f"{version}.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        bst.save_model(path)
        rows = Xt[:PARITY_ROWS]
        preds = bst.predict(xgb.DMatrix(rows, missing=np.nan, feature_names=features))
        os.makedirs(args.testdata, exist_ok=True)
        with open(os.path.join(args.testdata, f"{domain}-{version}.parity.jsonl"), "w") as f:
            for r, pred in zip(rows, preds):
                feats = {n: (None if math.isnan(v) else float(v)) for n, v in zip(features, r)}
                f.write(json.dumps({"features": feats, "xgboost": float(pred)}) + "\n")
        print(f"{domain}/{version}: {p['rounds']} trees, depth {p['max_depth']}, saved {path}")


if __name__ == "__main__":
    main()
