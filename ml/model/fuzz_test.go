package model

import (
	"math"
	"os"
	"testing"
)

// FuzzParse: no model file makes Parse panic, and a model that parses
// predicts a probability (or NaN, which the ranker refuses) for any input.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"../../models/feed/v1.json"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(xgb(`"objective": {"name": "binary:logistic"}`)))
	f.Add([]byte(`{"format": "logreg", "features": ["a"], "weights": [1], "intercept": 0, "impute": [0]}`))
	f.Add([]byte(`{"learner": {}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			return
		}
		k := len(m.Features())
		for _, fill := range []float64{0, 1, -1e30, 1e30, math.NaN()} {
			x := make([]float64, k)
			for i := range x {
				x[i] = fill
			}
			if p := m.Predict(x); !(p >= 0 && p <= 1) && !math.IsNaN(p) {
				t.Fatalf("Predict gave %v", p)
			}
		}
	})
}
