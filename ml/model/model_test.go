package model

import (
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"not JSON", `hello`, "not a JSON model file"},
		{"no format", `{"features": ["a"]}`, `no "format"`},
		{"unknown objective", xgb(`"objective": {"name": "reg:squarederror"}`), `objective "reg:squarederror"`},
		{"multiclass", xgb(`"learner_model_param": {"base_score": "5E-1", "num_class": "3"}`), "num_class 3"},
		{"feature outside the list", xgb(`"trees": [{"left_children": [1, -1, -1], "right_children": [2, -1, -1], "split_indices": [5, 0, 0], "split_conditions": [0.5, 0.1, 0.2], "default_left": [1, 0, 0]}]`), "feature 5, outside the 2 features"},
		{"NaN threshold", xgb(`"trees": [{"left_children": [1, -1, -1], "right_children": [2, -1, -1], "split_indices": [0, 0, 0], "split_conditions": [NaN, 0.1, 0.2], "default_left": [1, 0, 0]}]`), "invalid character 'N'"},
		{"cycle", xgb(`"trees": [{"left_children": [0, -1, -1], "right_children": [2, -1, -1], "split_indices": [0, 0, 0], "split_conditions": [0.5, 0.1, 0.2], "default_left": [1, 0, 0]}]`), "out of order"},
		{"categorical split", xgb(`"trees": [{"left_children": [1, -1, -1], "right_children": [2, -1, -1], "split_indices": [0, 0, 0], "split_conditions": [0.5, 0.1, 0.2], "default_left": [1, 0, 0], "split_type": [1, 0, 0]}]`), "categorical"},
		{"bad base score", xgb(`"learner_model_param": {"base_score": "1.5"}`), "base_score"},
		{"no feature names", xgb(`"feature_names": []`), "no feature_names"},
		{"no trees", xgb(`"trees": []`), "no trees"},
		{"a leaf beyond float32", xgb(`"trees": [{"left_children": [1, -1, -1], "right_children": [2, -1, -1], "split_indices": [0, 0, 0], "split_conditions": [0.5, 1e39, 0.2], "default_left": [1, 0, 0]}]`), "leaf value 1e+39"},
		{"leaves that sum past the bound", xgb(`"trees": [` + strings.Repeat(`{"left_children": [1, -1, -1], "right_children": [2, -1, -1], "split_indices": [0, 0, 0], "split_conditions": [0.5, 6e29, 0.2], "default_left": [1, 0, 0]},`, 1) +
			`{"left_children": [1, -1, -1], "right_children": [2, -1, -1], "split_indices": [0, 0, 0], "split_conditions": [0.5, -6e29, 0.2], "default_left": [1, 0, 0]}]`), "the scores would overflow"},
		{"unknown format", `{"format": "onnx"}`, `"onnx"`},
		{"no features", `{"format": "logreg", "features": [], "weights": [], "intercept": 0, "impute": []}`, "no features"},
		{"weights mismatch", `{"format": "logreg", "features": ["a", "b"], "weights": [1], "intercept": 0, "impute": [0, 0]}`, "1 weights for 2 features"},
		{"impute mismatch", `{"format": "logreg", "features": ["a"], "weights": [1], "intercept": 0, "impute": []}`, "0 impute values"},
		{"duplicate feature", `{"format": "logreg", "features": ["a", "a"], "weights": [1, 1], "intercept": 0, "impute": [0, 0]}`, `"a" is declared twice`},
		{"unknown field", `{"format": "logreg", "features": ["a"], "weights": [1], "intercept": 0, "impute": [0], "bias": 2}`, "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if _, err := Parse([]byte(`{"format": "onnx"}`)); !errors.Is(err, ErrUnsupported) {
		t.Errorf("unknown format: %v, want ErrUnsupported", err)
	}
}

func TestLogRegMissingValuesTakeTheImpute(t *testing.T) {
	m, err := NewLogReg([]string{"a", "b"}, []float64{2, -1}, 0.5, []float64{0.25, 3})
	if err != nil {
		t.Fatal(err)
	}
	sig := func(z float64) float64 { return 1 / (1 + math.Exp(-z)) }
	s := NewScorer(m)
	got := s.Score(
		map[string]float64{"b": 1}, // shared
		[]map[string]float64{
			{"a": 1},         // a=1, b from shared
			{"a": 1, "b": 2}, // own b wins over shared
			nil,              // a missing -> 0.25, b shared
		})
	want := []float64{sig(0.5 + 2 - 1), sig(0.5 + 2 - 2), sig(0.5 + 0.5 - 1)}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-15 {
			t.Errorf("candidate %d: %v, want %v", i, got[i], want[i])
		}
	}
	// Missing is not zero: with nothing known, b takes 3, not 0.
	if none := s.Score(nil, []map[string]float64{nil})[0]; math.Abs(none-sig(0.5+0.5-3)) > 1e-15 {
		t.Errorf("all missing: %v", none)
	}
}

// ScoreTable is the wire's dense form of Score: on random tables with
// missing values, unused and shared columns, both give the same scores.
func TestScoreTableMatchesScore(t *testing.T) {
	m, err := Load("../../models/feed/v2.json")
	if err != nil {
		t.Fatal(err)
	}
	s := NewScorer(m.Model)
	names := m.Features()
	rng := rand.New(rand.NewPCG(7, 7))
	for trial := range 200 {
		// Split the model's inputs (plus a column it does not use) between
		// the shared and the candidate table, some in both.
		var sharedNames, candNames []string
		for _, n := range append(slices.Clone(names), "unused") {
			switch rng.IntN(4) {
			case 0:
				sharedNames = append(sharedNames, n)
			case 1:
				candNames = append(candNames, n)
			case 2:
				sharedNames, candNames = append(sharedNames, n), append(candNames, n)
			}
		}
		value := func() float64 {
			if rng.IntN(5) == 0 {
				return math.NaN()
			}
			return rng.Float64() * 3
		}
		shared := Table{Names: sharedNames, Rows: 1}
		sharedMap := map[string]float64{}
		for _, n := range sharedNames {
			v := value()
			shared.Values = append(shared.Values, v)
			if !math.IsNaN(v) {
				sharedMap[n] = v
			}
		}
		rows := 1 + rng.IntN(60)
		cands := Table{Names: candNames, Rows: rows}
		maps := make([]map[string]float64, rows)
		for r := range rows {
			maps[r] = map[string]float64{}
			for _, n := range candNames {
				v := value()
				cands.Values = append(cands.Values, v)
				if !math.IsNaN(v) {
					maps[r][n] = v
				}
			}
		}
		got, want := s.ScoreTable(shared, cands), s.Score(sharedMap, maps)
		if !slices.Equal(got, want) {
			t.Fatalf("trial %d: table %v, maps %v", trial, got, want)
		}
	}
	// No shared row, no candidate columns: every input missing.
	all := s.ScoreTable(Table{}, Table{Rows: 2})
	if none := s.Score(nil, []map[string]float64{nil}); len(all) != 2 || all[0] != none[0] || all[1] != none[0] {
		t.Errorf("all missing: %v, want %v twice", all, none)
	}
}

func TestLoadCommittedModels(t *testing.T) {
	// Both formats run in the demo.
	for path, format := range map[string]string{
		"../../models/feed/v1.json":    FormatLogReg,
		"../../models/feed/v2.json":    FormatXGBoost,
		"../../models/stories/v1.json": FormatXGBoost,
	} {
		m, err := Load(path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if m.Format() != format || len(m.SHA256) != 64 {
			t.Errorf("%s: format %q sha %q, want format %q", path, m.Format(), m.SHA256, format)
		}
	}
	if _, err := Load("no/such/file.json"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// xgb returns a small valid XGBoost model file with one part replaced: each
// key below may be overridden by a `"key": value` fragment.
func xgb(override string) string {
	parts := map[string]string{
		"objective":           `"objective": {"name": "binary:logistic"}`,
		"learner_model_param": `"learner_model_param": {"base_score": "5E-1", "num_class": "0", "num_feature": "2", "num_target": "1"}`,
		"feature_names":       `"feature_names": ["a", "b"]`,
		"trees": `"trees": [{"left_children": [1, -1, -1], "right_children": [2, -1, -1], "split_indices": [1, 0, 0],
			"split_conditions": [0.5, -0.25, 0.75], "default_left": [1, 0, 0], "split_type": [0, 0, 0]}]`,
	}
	key := strings.Trim(strings.SplitN(override, ":", 2)[0], ` "`)
	parts[key] = override
	return `{"learner": {` + parts["feature_names"] + `, ` + parts["learner_model_param"] + `, ` + parts["objective"] + `,
		"gradient_booster": {"name": "gbtree", "model": {` + parts["trees"] + `, "tree_info": [0]}}}, "version": [1, 7, 4]}`
}

// A hand-made stump: b < 0.5 (or b missing) goes left to -0.25, else 0.75.
func TestXGBoostStump(t *testing.T) {
	m, err := Parse([]byte(xgb(`"objective": {"name": "binary:logistic"}`)))
	if err != nil {
		t.Fatal(err)
	}
	sig := func(z float64) float64 { return 1 / (1 + math.Exp(-z)) }
	nan := math.NaN()
	tests := []struct {
		x    []float64
		want float64
	}{
		{[]float64{9, 0.4}, sig(-0.25)},
		{[]float64{9, 0.5}, sig(0.75)},  // x < split goes left; equal goes right
		{[]float64{9, nan}, sig(-0.25)}, // missing: default left
		// 0.49999999999 rounds to 0.5 in float32, so it goes right, as in XGBoost.
		{[]float64{9, 0.49999999999}, sig(0.75)},
	}
	for _, tt := range tests {
		if got := m.Predict(tt.x); math.Abs(got-tt.want) > 1e-7 {
			t.Errorf("Predict(%v) = %v, want %v", tt.x, got, tt.want)
		}
	}
}

func TestSpecFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.json")
	noNames := xgb(`"feature_names": []`)
	if err := os.WriteFile(path, []byte(noNames), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "no feature spec file") {
		t.Fatalf("without a spec: %v", err)
	}
	if err := os.WriteFile(SpecPath(path), []byte(`{"features": ["x", "y"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Features(); len(got) != 2 || got[0] != "x" || got[1] != "y" {
		t.Errorf("features %v", got)
	}
	// A spec that contradicts the model's own names is an error.
	if err := os.WriteFile(path, []byte(xgb(`"objective": {"name": "binary:logistic"}`)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "differ") {
		t.Errorf("contradicting spec: %v", err)
	}
}
