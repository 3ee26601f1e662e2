package model

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"testing"
)

// XGBoost's own predictions on held-out rows, written by `make models`
// (ml/python/train_xgb.py), must equal ours within 1e-6.
func TestXGBoostParity(t *testing.T) {
	for _, tt := range []struct{ model, data string }{
		{"../../models/feed/v2.json", "testdata/feed-v2.parity.jsonl"},
		{"../../models/stories/v1.json", "testdata/stories-v1.parity.jsonl"},
	} {
		t.Run(tt.model, func(t *testing.T) {
			f, err := Load(tt.model)
			if err != nil {
				t.Fatal(err)
			}
			if f.Format() != FormatXGBoost {
				t.Fatalf("format %q", f.Format())
			}
			in, err := os.Open(tt.data)
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			s := NewScorer(f.Model)
			var rows, missing int
			var worst float64
			sc := bufio.NewScanner(in)
			for sc.Scan() {
				var row struct {
					Features map[string]*float64 `json:"features"`
					XGBoost  float64             `json:"xgboost"`
				}
				if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
					t.Fatal(err)
				}
				feats := map[string]float64{}
				for k, v := range row.Features {
					if v == nil {
						missing++
						continue
					}
					feats[k] = *v
				}
				got := s.Score(nil, []map[string]float64{feats})[0]
				worst = math.Max(worst, math.Abs(got-row.XGBoost))
				rows++
			}
			if err := sc.Err(); err != nil {
				t.Fatal(err)
			}
			if rows < 1000 || missing == 0 {
				t.Fatalf("%d rows with %d missing values: the parity data should cover missing values", rows, missing)
			}
			if worst > 1e-6 {
				t.Errorf("largest difference from XGBoost %g over %d rows, want <= 1e-6", worst, rows)
			}
			t.Logf("%d rows (%d missing values): largest difference from XGBoost %.3g", rows, missing, worst)
		})
	}
}
