package ranker

import (
	"context"
	"math"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rankerv1 "github.com/adrank/adrank/gen/adrank/ranker/v1"
	"github.com/adrank/adrank/ml/model"
)

func TestScoreAndInfo(t *testing.T) {
	f, err := model.Load("../../models/feed/v2.json")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer("feed", "v2", f)
	req := &rankerv1.ScoreRequest{
		Shared: map[string]float64{"user_age": 30, "ctx_mobile": 1},
		Candidates: []*rankerv1.ScoreCandidate{
			{AdId: "a", Features: map[string]float64{"ad_hist_ctr": 0.2, "user_ad_interest": 0.5}},
			{AdId: "b", Features: map[string]float64{"ad_hist_ctr": 0.01, "user_ad_interest": 0.0}},
			{AdId: "cold"},
		},
	}
	resp, err := s.Score(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetScores()) != 3 || resp.GetModelVersion() != "v2" {
		t.Fatalf("response %v", resp)
	}
	// The service gives exactly what the model package computes.
	want := model.NewScorer(f).Score(req.GetShared(), []map[string]float64{req.Candidates[0].GetFeatures(), req.Candidates[1].GetFeatures(), nil})
	for i := range want {
		if math.Abs(resp.GetScores()[i]-want[i]) > 0 {
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

	big := &rankerv1.ScoreRequest{Candidates: make([]*rankerv1.ScoreCandidate, MaxCandidates+1)}
	if _, err := s.Score(context.Background(), big); status.Code(err) != codes.InvalidArgument {
		t.Errorf("oversized batch: %v", err)
	}
}
