package model

import (
	"bufio"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Benchmarks score batches of 100 candidates of 50 features (5% missing).
// With ADRANK_BENCH_DIR set (make bench-scoring), the GBDT and rows are the
// ones ml/python/bench_xgb.py trained and timed with XGBoost; otherwise a
// random ensemble of the same shape (100 full trees of depth 6) is used.

const benchBatch, benchFeatures = 100, 50

func benchRows(b *testing.B) [][]float64 {
	b.Helper()
	if dir := os.Getenv("ADRANK_BENCH_DIR"); dir != "" {
		f, err := os.Open(dir + "/rows.csv")
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		var rows [][]float64
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var row []float64
			for _, s := range strings.Split(sc.Text(), ",") {
				v, err := strconv.ParseFloat(s, 64)
				if err != nil {
					b.Fatal(err)
				}
				row = append(row, v)
			}
			rows = append(rows, row)
		}
		return rows
	}
	rng := rand.New(rand.NewPCG(1, 1))
	rows := make([][]float64, 10000)
	for i := range rows {
		rows[i] = make([]float64, benchFeatures)
		for j := range rows[i] {
			rows[i][j] = rng.NormFloat64()
			if rng.Float64() < 0.05 {
				rows[i][j] = math.NaN()
			}
		}
	}
	return rows
}

func benchNames() []string {
	names := make([]string, benchFeatures)
	for i := range names {
		names[i] = fmt.Sprintf("f%d", i)
	}
	return names
}

func benchGBDT(b *testing.B) Model {
	b.Helper()
	if dir := os.Getenv("ADRANK_BENCH_DIR"); dir != "" {
		f, err := Load(dir + "/gbdt.json")
		if err != nil {
			b.Fatal(err)
		}
		return f.Model
	}
	rng := rand.New(rand.NewPCG(2, 2))
	m := &XGBoost{names: benchNames()}
	for range 100 {
		m.roots = append(m.roots, int32(len(m.nodes)))
		m.depths = append(m.depths, 6)
		base := int32(len(m.nodes))
		// A full tree of depth 6: 63 splits, then 64 leaves, in heap order.
		for i := int32(0); i < 127; i++ {
			if i < 63 {
				m.nodes = append(m.nodes, node{feature: uint32(rng.IntN(benchFeatures)) | uint32(rng.IntN(2))<<31, split: float32(rng.NormFloat64()),
					kids: [2]int32{base + 2*i + 2, base + 2*i + 1}})
			} else {
				m.nodes = append(m.nodes, node{split: float32(rng.NormFloat64() * 0.1), kids: [2]int32{base + i, base + i}})
			}
		}
	}
	return m
}

func benchLogReg(b *testing.B) Model {
	b.Helper()
	w := make([]float64, benchFeatures)
	for i := range w {
		w[i] = 0.01 * float64(i%7-3)
	}
	m, err := NewLogReg(benchNames(), w, -2, make([]float64, benchFeatures))
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// benchVectors times Predict on prebuilt vectors: the model's own cost.
func benchVectors(b *testing.B, m Model) {
	rows := benchRows(b)
	out := make([]float64, benchBatch)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := (i * benchBatch) % (len(rows) - benchBatch)
		if bm, ok := m.(BatchModel); ok {
			bm.PredictBatch(rows[start:start+benchBatch], out)
			continue
		}
		for j, x := range rows[start : start+benchBatch] {
			out[j] = m.Predict(x)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/candidate")
}

// benchScorer times the ranker's path: feature maps by name (10 shared
// features, 40 per candidate) into vectors, then Predict.
func benchScorer(b *testing.B, m Model) {
	rows := benchRows(b)
	names := benchNames()
	maps := make([]map[string]float64, len(rows))
	for r, x := range rows {
		maps[r] = map[string]float64{}
		for i := 10; i < benchFeatures; i++ {
			if !math.IsNaN(x[i]) {
				maps[r][names[i]] = x[i]
			}
		}
	}
	shared := map[string]float64{}
	for i := range 10 {
		shared[names[i]] = 0.5
	}
	s := NewScorer(m)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := (i * benchBatch) % (len(rows) - benchBatch)
		s.Score(shared, maps[start:start+benchBatch])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/candidate")
}

// benchTable times the ranker's path: dense tables as they come off the wire
// (10 shared columns, 40 per candidate) into vectors, then Predict.
func benchTable(b *testing.B, m Model) {
	rows := benchRows(b)
	names := benchNames()
	cands := Table{Names: names[10:], Rows: len(rows)}
	for _, x := range rows {
		cands.Values = append(cands.Values, x[10:]...)
	}
	shared := Table{Names: names[:10], Values: make([]float64, 10), Rows: 1}
	for i := range shared.Values {
		shared.Values[i] = 0.5
	}
	w := len(cands.Names)
	s := NewScorer(m)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := (i * benchBatch) % (len(rows) - benchBatch)
		s.ScoreTable(shared, Table{Names: cands.Names, Values: cands.Values[start*w : (start+benchBatch)*w], Rows: benchBatch})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/candidate")
}

func BenchmarkGBDTPredict(b *testing.B)   { benchVectors(b, benchGBDT(b)) }
func BenchmarkGBDTTable(b *testing.B)     { benchTable(b, benchGBDT(b)) }
func BenchmarkLogRegTable(b *testing.B)   { benchTable(b, benchLogReg(b)) }
func BenchmarkGBDTScorer(b *testing.B)    { benchScorer(b, benchGBDT(b)) }
func BenchmarkLogRegPredict(b *testing.B) { benchVectors(b, benchLogReg(b)) }
func BenchmarkLogRegScorer(b *testing.B)  { benchScorer(b, benchLogReg(b)) }
