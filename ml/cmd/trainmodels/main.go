// Command trainmodels builds the demo ranker models from the synthetic world.
// `make models` runs it in three steps:
//
//  1. -step prepare: sample train and test click logs per domain, write them
//     as CSV under -logs for XGBoost, and fit the logistic-regression models;
//  2. ml/python/train_xgb.py fits the GBDT models with XGBoost and writes its
//     own predictions on held-out rows as parity test data;
//  3. -step eval: score every model through adrank's own loader on the test
//     logs and write models/metrics.json (held-out AUC and log loss).
//
// Every step is deterministic.
package main

import (
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"

	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/ml/train"
	"github.com/adrank/adrank/ml/world"
)

// Demo is one demo model.
type Demo struct {
	Domain, Version, Format string
	Features                []string
}

var popularity = []string{world.FAdHistCTR, world.FAdAgeDays, world.FHourSin, world.FHourCos, world.FMobile, world.FDesktop}

// Demos are the demo models. The GBDT ones are trained in Python; their
// feature lists live in ml/python/train_xgb.py's SPECS too.
var Demos = []Demo{
	{"feed", "v1", model.FormatLogReg, popularity},
	{"feed", "v2", model.FormatXGBoost, world.AllFeatures},
	{"stories", "v1", model.FormatXGBoost, world.AllFeatures},
	// The same features as feed/v2 in a linear model: a subtly worse ranker,
	// for the interleaving-versus-A/B simulation.
	{"feed", "v2lr", model.FormatLogReg, world.AllFeatures},
}

// Metric is one model's held-out quality.
type Metric struct {
	Domain       string  `json:"domain"`
	Version      string  `json:"version"`
	Format       string  `json:"format"`
	Features     int     `json:"features"`
	AUC          float64 `json:"auc"`
	LogLoss      float64 `json:"log_loss"`
	ConstLogLoss float64 `json:"constant_log_loss"`
	TrainRows    int     `json:"train_rows"`
	TestRows     int     `json:"test_rows"`
}

type options struct {
	step, out, logs string
	rows            int
}

func main() {
	var o options
	flag.StringVar(&o.step, "step", "prepare", "prepare (logs + logistic regression) or eval (metrics)")
	flag.StringVar(&o.out, "out", "models", "model directory")
	flag.StringVar(&o.logs, "logs", ".cache/logs", "directory for the sampled CSV logs")
	flag.IntVar(&o.rows, "rows", 200000, "training rows per domain (the test log has a quarter as many)")
	flag.Parse()
	if err := run(o); err != nil {
		log.Fatal(err)
	}
}

func run(o options) error {
	w, err := world.New(world.DefaultConfig())
	if err != nil {
		return err
	}
	switch o.step {
	case "prepare":
		return prepare(w, o)
	case "eval":
		return eval(w, o)
	default:
		return fmt.Errorf("unknown -step %q", o.step)
	}
}

// logs samples a domain's train and test logs. Versions of one domain share
// them, so their metrics compare directly.
func logs(w *world.World, domain string, rows int) (trainLog, testLog []world.Impression, err error) {
	seed := domainSeed(domain)
	opts := world.LogOptions{Domain: domain, N: rows, Seed: seed, ColdUserShare: 0.1, ColdAdShare: 0.05}
	if trainLog, err = w.SampleLog(opts); err != nil {
		return nil, nil, err
	}
	opts.N, opts.Seed = rows/4, seed+1000
	testLog, err = w.SampleLog(opts)
	return trainLog, testLog, err
}

func prepare(w *world.World, o options) error {
	for _, domain := range []string{"feed", "stories"} {
		trainLog, testLog, err := logs(w, domain, o.rows)
		if err != nil {
			return err
		}
		if err := writeCSV(filepath.Join(o.logs, domain+"-train.csv"), trainLog); err != nil {
			return err
		}
		if err := writeCSV(filepath.Join(o.logs, domain+"-test.csv"), testLog); err != nil {
			return err
		}
		for _, d := range Demos {
			if d.Domain != domain || d.Format != model.FormatLogReg {
				continue
			}
			xs, ys := train.Matrix(trainLog, d.Features)
			m, err := train.LogReg(d.Features, xs, ys, 1.0)
			if err != nil {
				return fmt.Errorf("%s/%s: %w", d.Domain, d.Version, err)
			}
			m.Metadata = map[string]string{"domain": d.Domain, "version": d.Version, "trained_by": "ml/cmd/trainmodels"}
			if err := writeJSON(filepath.Join(o.out, d.Domain, d.Version+".json"), m); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeCSV writes every feature (empty when missing) and the click label.
// Floats are written in their shortest exact form, so Python reads the very
// same float64 values.
func writeCSV(path string, log []world.Impression) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	cw := csv.NewWriter(f)
	header := append(append([]string{}, world.AllFeatures...), "click")
	if err := cw.Write(header); err != nil {
		return err
	}
	row := make([]string, len(header))
	for _, im := range log {
		for i, name := range world.AllFeatures {
			row[i] = ""
			if v, ok := im.Feature(name); ok {
				row[i] = strconv.FormatFloat(v, 'g', -1, 64)
			}
		}
		row[len(row)-1] = "0"
		if im.Clicked {
			row[len(row)-1] = "1"
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	return f.Close()
}

func eval(w *world.World, o options) error {
	var metrics []Metric
	for _, d := range Demos {
		trainLog, testLog, err := logs(w, d.Domain, o.rows)
		if err != nil {
			return err
		}
		f, err := model.Load(filepath.Join(o.out, d.Domain, d.Version+".json"))
		if err != nil {
			return err
		}
		if f.Format() != d.Format {
			return fmt.Errorf("%s/%s is %s, want %s", d.Domain, d.Version, f.Format(), d.Format)
		}
		maps := make([]map[string]float64, len(testLog))
		ys := make([]float64, len(testLog))
		for i, im := range testLog {
			maps[i] = merged(im)
			if im.Clicked {
				ys[i] = 1
			}
		}
		scores := model.NewScorer(f).Score(nil, maps)
		var base float64
		for _, im := range trainLog {
			if im.Clicked {
				base++
			}
		}
		base /= float64(len(trainLog))
		constant := make([]float64, len(ys))
		for i := range constant {
			constant[i] = base
		}
		metrics = append(metrics, Metric{
			Domain: d.Domain, Version: d.Version, Format: d.Format, Features: len(f.Features()),
			AUC: train.AUC(scores, ys), LogLoss: train.LogLoss(scores, ys), ConstLogLoss: train.LogLoss(constant, ys),
			TrainRows: len(trainLog), TestRows: len(testLog),
		})
	}
	for _, m := range metrics {
		fmt.Printf("%-8s %-3s %-8s features=%2d AUC=%.4f logloss=%.4f (constant %.4f)\n", m.Domain, m.Version, m.Format, m.Features, m.AUC, m.LogLoss, m.ConstLogLoss)
	}
	return writeJSON(filepath.Join(o.out, "metrics.json"), metrics)
}

func merged(im world.Impression) map[string]float64 {
	m := make(map[string]float64, len(im.Shared)+len(im.Ad))
	for k, v := range im.Shared {
		m[k] = v
	}
	for k, v := range im.Ad {
		m[k] = v
	}
	return m
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
