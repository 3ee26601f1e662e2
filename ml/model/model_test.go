package model

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"not JSON", `hello`, "not a JSON model file"},
		{"no format", `{"features": ["a"]}`, `no "format"`},
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

func TestLoadCommittedModels(t *testing.T) {
	files, err := filepath.Glob("../../models/*/*.json")
	if err != nil || len(files) < 3 {
		t.Fatalf("models: %v %v", files, err)
	}
	for _, f := range files {
		m, err := Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if m.Format() != FormatLogReg || len(m.SHA256) != 64 {
			t.Errorf("%s: format %q sha %q", f, m.Format(), m.SHA256)
		}
	}
	if _, err := Load("no/such/file.json"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
