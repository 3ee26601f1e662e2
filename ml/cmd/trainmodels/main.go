// Command trainmodels samples click logs from the demo world, trains the demo
// ranker models and writes them under models/<domain>/<version>.json together
// with models/metrics.json (held-out AUC and log loss). Deterministic.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/ml/train"
	"github.com/adrank/adrank/ml/world"
)

// spec is one demo model: which features it may use.
type spec struct {
	domain, version string
	features        []string
}

var popularity = []string{world.FAdHistCTR, world.FAdAgeDays, world.FHourSin, world.FHourCos, world.FMobile, world.FDesktop}

// Metric is one model's held-out quality.
type Metric struct {
	Domain       string  `json:"domain"`
	Version      string  `json:"version"`
	Features     int     `json:"features"`
	AUC          float64 `json:"auc"`
	LogLoss      float64 `json:"log_loss"`
	ConstLogLoss float64 `json:"constant_log_loss"`
	TrainRows    int     `json:"train_rows"`
	TestRows     int     `json:"test_rows"`
}

func main() {
	out := flag.String("out", "models", "output directory")
	rows := flag.Int("rows", 200000, "training rows per domain")
	flag.Parse()
	if err := run(*out, *rows); err != nil {
		log.Fatal(err)
	}
}

func run(out string, rows int) error {
	w, err := world.New(world.DefaultConfig())
	if err != nil {
		return err
	}
	specs := []spec{
		{"feed", "v1", popularity},
		{"feed", "v2", world.AllFeatures},
		{"stories", "v1", world.AllFeatures},
	}
	var metrics []Metric
	for _, s := range specs {
		// Versions of one domain share their train and test logs, so their
		// metrics compare directly.
		seed := domainSeed(s.domain)
		opts := world.LogOptions{Domain: s.domain, N: rows, Seed: seed, ColdUserShare: 0.1, ColdAdShare: 0.05}
		trainLog, err := w.SampleLog(opts)
		if err != nil {
			return err
		}
		opts.N, opts.Seed = rows/4, seed+1000
		testLog, err := w.SampleLog(opts)
		if err != nil {
			return err
		}
		xs, ys := train.Matrix(trainLog, s.features)
		m, err := train.LogReg(s.features, xs, ys, 1.0)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", s.domain, s.version, err)
		}
		m.Metadata = map[string]string{"domain": s.domain, "version": s.version, "trained_by": "ml/cmd/trainmodels"}
		txs, tys := train.Matrix(testLog, s.features)
		scores := model.NewScorer(m).Score(nil, rowsAsMaps(s.features, txs))
		var base float64
		for _, y := range ys {
			base += y
		}
		base /= float64(len(ys))
		constant := make([]float64, len(tys))
		for i := range constant {
			constant[i] = base
		}
		metrics = append(metrics, Metric{
			Domain: s.domain, Version: s.version, Features: len(s.features),
			AUC: train.AUC(scores, tys), LogLoss: train.LogLoss(scores, tys), ConstLogLoss: train.LogLoss(constant, tys),
			TrainRows: len(ys), TestRows: len(tys),
		})
		if err := writeJSON(filepath.Join(out, s.domain, s.version+".json"), m); err != nil {
			return err
		}
	}
	for _, m := range metrics {
		fmt.Printf("%-8s %-3s features=%2d AUC=%.4f logloss=%.4f (constant %.4f)\n", m.Domain, m.Version, m.Features, m.AUC, m.LogLoss, m.ConstLogLoss)
	}
	return writeJSON(filepath.Join(out, "metrics.json"), metrics)
}

// rowsAsMaps turns matrix rows back into feature maps (NaN = absent) so the
// evaluation goes through the same by-name scoring path as the ranker.
func rowsAsMaps(names []string, xs [][]float64) []map[string]float64 {
	out := make([]map[string]float64, len(xs))
	for r, x := range xs {
		m := make(map[string]float64, len(names))
		for i, n := range names {
			if x[i] == x[i] { // not NaN
				m[n] = x[i]
			}
		}
		out[r] = m
	}
	return out
}

func domainSeed(d string) uint64 {
	var h uint64 = 14695981039346656037 // FNV-1a
	for i := 0; i < len(d); i++ {
		h = (h ^ uint64(d[i])) * 1099511628211
	}
	return h
}

func writeJSON(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
