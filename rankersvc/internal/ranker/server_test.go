package ranker

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	rankerv1 "github.com/adrank/adrank/gen/adrank/ranker/v1"
	"github.com/adrank/adrank/ml/model"
)

func TestScoreAndInfo(t *testing.T) {
	f, err := model.Load("../../../models/feed/v2.json")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer("feed", "v2", f)
	nan := math.NaN()
	req := &rankerv1.ScoreRequest{
		Shared: &featuresv1.FeatureTable{Names: []string{"user_age", "ctx_mobile"}, Values: []float64{30, 1}, Rows: 1},
		Candidates: &featuresv1.FeatureTable{
			Names: []string{"ad_hist_ctr", "user_ad_interest", "not_a_model_input"},
			Values: []float64{
				0.2, 0.5, 7, // a
				0.01, 0.0, 7, // b
				nan, nan, nan, // cold
			},
			Rows: 3,
		},
	}
	resp, err := s.Score(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetScores()) != 3 || resp.GetModelVersion() != "v2" {
		t.Fatalf("response %v", resp)
	}
	// The service gives exactly what the model package computes by name.
	want := model.NewScorer(f).Score(map[string]float64{"user_age": 30, "ctx_mobile": 1}, []map[string]float64{
		{"ad_hist_ctr": 0.2, "user_ad_interest": 0.5},
		{"ad_hist_ctr": 0.01, "user_ad_interest": 0.0},
		nil,
	})
	for i := range want {
		if resp.GetScores()[i] != want[i] {
			t.Errorf("score %d: %v, want %v", i, resp.GetScores()[i], want[i])
		}
	}
	if resp.GetScores()[0] <= resp.GetScores()[1] {
		t.Errorf("a popular, interesting ad scored %v, below %v", resp.GetScores()[0], resp.GetScores()[1])
	}

	info, err := s.GetModelInfo(context.Background(), &rankerv1.GetModelInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetDomain() != "feed" || info.GetVersion() != "v2" || info.GetModelSha256() != f.SHA256 || info.GetFormat() != "xgboost" || len(info.GetFeatureNames()) != 13 {
		t.Errorf("info %v", info)
	}

}

func TestScoreRejectsBadTables(t *testing.T) {
	f, err := model.Load("../../../models/feed/v1.json")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer("feed", "v1", f)
	table := func(names []string, values []float64, rows int32) *featuresv1.FeatureTable {
		return &featuresv1.FeatureTable{Names: names, Values: values, Rows: rows}
	}
	tests := []struct {
		name  string
		req   *rankerv1.ScoreRequest
		field string
	}{
		{"too many candidates", &rankerv1.ScoreRequest{Candidates: table(nil, nil, MaxCandidates+1)}, "candidates.rows"},
		{"negative rows", &rankerv1.ScoreRequest{Candidates: table(nil, nil, -1)}, "candidates.rows"},
		{"short values", &rankerv1.ScoreRequest{Candidates: table([]string{"a", "b"}, []float64{1, 2, 3}, 2)}, "candidates.values"},
		{"long values", &rankerv1.ScoreRequest{Candidates: table([]string{"a"}, []float64{1, 2}, 1)}, "candidates.values"},
		{"duplicate column", &rankerv1.ScoreRequest{Candidates: table([]string{"a", "a"}, []float64{1, 2}, 1)}, "candidates.names"},
		{"two shared rows", &rankerv1.ScoreRequest{Shared: table([]string{"a"}, []float64{1, 2}, 2)}, "shared.rows"},
		{"shared values", &rankerv1.ScoreRequest{Shared: table([]string{"a"}, nil, 1)}, "shared.values"},
	}
	for _, tt := range tests {
		_, err := s.Score(context.Background(), tt.req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.field) {
			t.Errorf("%s: %v, want INVALID_ARGUMENT naming %s", tt.name, err, tt.field)
		}
	}
	// Many columns take the map path of the duplicate check.
	names := make([]string, 100)
	for i := range names {
		names[i] = fmt.Sprint("f", i%99)
	}
	if _, err := s.Score(context.Background(), &rankerv1.ScoreRequest{Candidates: table(names, make([]float64, 100), 1)}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("duplicate among 100 columns: %v", err)
	}
	// No candidates is not an error: no scores.
	resp, err := s.Score(context.Background(), &rankerv1.ScoreRequest{})
	if err != nil || len(resp.GetScores()) != 0 {
		t.Errorf("empty request: %v, %v", resp, err)
	}
}
