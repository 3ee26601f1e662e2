package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Scoring XGBoost's held-out rows offline gives XGBoost's numbers.
func TestScoreMatchesXGBoost(t *testing.T) {
	data, err := os.ReadFile("../../../ml/model/testdata/feed-v2.parity.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var input bytes.Buffer
	var want []float64
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() && len(want) < 200 {
		var row struct {
			Features json.RawMessage `json:"features"`
			XGBoost  float64         `json:"xgboost"`
		}
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			t.Fatal(err)
		}
		input.Write(row.Features) // nulls included: they mean missing
		input.WriteByte('\n')
		want = append(want, row.XGBoost)
	}
	path := filepath.Join(t.TempDir(), "rows.jsonl")
	if err := os.WriteFile(path, input.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"score", "--model", "../../../models/feed/v2.json", "--input", path}, nil, &out, &errOut); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d scores for %d rows", len(lines), len(want))
	}
	for i, l := range lines {
		got, err := strconv.ParseFloat(l, 64)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(got-want[i]) > 1e-6 {
			t.Errorf("row %d: %v, XGBoost %v", i+1, got, want[i])
		}
	}
}

func TestScoreErrors(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		stdin string
		want  string
	}{
		{"no command", nil, "", "no command"},
		{"unknown command", []string{"scour"}, "", `unknown command "scour"`},
		{"no model", []string{"score"}, "", "--model is required"},
		{"missing model file", []string{"score", "--model", "nope.json"}, "", "no such file"},
		{"string value", []string{"score", "--model", "../../../models/feed/v1.json"}, "{\"ad_hist_ctr\": 0.1}\n{\"ad_hist_ctr\": \"high\"}\n", `line 2: feature "ad_hist_ctr": want a number or null`},
		{"not an object", []string{"score", "--model", "../../../models/feed/v1.json"}, "[1, 2]\n", "line 1: want a JSON object"},
		{"blank line", []string{"score", "--model", "../../../models/feed/v1.json"}, "{}\n\n{}\n", "line 2: empty line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), tt.args, strings.NewReader(tt.stdin), &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

// Missing values (null or absent) are not zeros.
func TestScoreMissingIsNotZero(t *testing.T) {
	var out bytes.Buffer
	in := "{\"ad_hist_ctr\": null}\n{}\n{\"ad_hist_ctr\": 0}\n{\"ad_hist_ctr\": 0.06, \"unused\": 1}\n"
	if err := run(context.Background(), []string{"score", "--model", "../../../models/feed/v1.json"}, strings.NewReader(in), &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	l := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(l) != 4 || l[0] != l[1] || l[0] == l[2] {
		t.Errorf("scores %q: null and absent must agree and differ from 0", l)
	}
}
