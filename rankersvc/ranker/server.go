// Package ranker serves one model version of one domain over gRPC.
package ranker

import (
	"context"
	"math"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rankerv1 "github.com/adrank/adrank/gen/adrank/ranker/v1"
	"github.com/adrank/adrank/ml/model"
)

// MaxCandidates is the largest batch Score accepts.
const MaxCandidates = 1000

// Server implements RankerService for one loaded model file.
type Server struct {
	rankerv1.UnimplementedRankerServiceServer
	domain, version string
	file            *model.File
	scorer          *model.Scorer
}

// NewServer serves f as domain/version.
func NewServer(domain, version string, f *model.File) *Server {
	return &Server{domain: domain, version: version, file: f, scorer: model.NewScorer(f.Model)}
}

// Score implements RankerService.
func (s *Server) Score(_ context.Context, req *rankerv1.ScoreRequest) (*rankerv1.ScoreResponse, error) {
	cands := req.GetCandidates()
	if len(cands) > MaxCandidates {
		return nil, status.Errorf(codes.InvalidArgument, "candidates: %d, at most %d", len(cands), MaxCandidates)
	}
	maps := make([]map[string]float64, len(cands))
	for i, c := range cands {
		maps[i] = c.GetFeatures()
	}
	scores := s.scorer.Score(req.GetShared(), maps)
	for i, p := range scores {
		if math.IsNaN(p) || p < 0 || p > 1 {
			return nil, status.Errorf(codes.Internal, "model produced pCTR %v for candidate %d", p, i)
		}
	}
	return &rankerv1.ScoreResponse{Scores: scores, ModelVersion: s.version}, nil
}

// GetModelInfo implements RankerService.
func (s *Server) GetModelInfo(context.Context, *rankerv1.GetModelInfoRequest) (*rankerv1.GetModelInfoResponse, error) {
	return &rankerv1.GetModelInfoResponse{
		Domain:       s.domain,
		Version:      s.version,
		FeatureNames: s.file.Features(),
		ModelSha256:  s.file.SHA256,
		Format:       s.file.Format(),
	}, nil
}
