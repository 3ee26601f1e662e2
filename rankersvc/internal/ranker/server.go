// Package ranker serves one model version of one domain over gRPC.
package ranker

import (
	"context"
	"fmt"
	"math"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	rankerv1 "github.com/adrank/adrank/gen/adrank/ranker/v1"
	"github.com/adrank/adrank/ml/model"
)

// MaxCandidates is the largest batch Score accepts.
const MaxCandidates = 1000

// MaxColumns is the most columns a feature table may have.
const MaxColumns = 10_000

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
	shared, err := Table("shared", req.GetShared(), 1)
	if err != nil {
		return nil, err
	}
	cands, err := Table("candidates", req.GetCandidates(), MaxCandidates)
	if err != nil {
		return nil, err
	}
	scores := s.scorer.ScoreTable(shared, cands)
	for i, p := range scores {
		if math.IsNaN(p) || p < 0 || p > 1 {
			return nil, status.Errorf(codes.Internal, "model produced pCTR %v for candidate %d", p, i)
		}
	}
	return &rankerv1.ScoreResponse{Scores: scores, ModelVersion: s.version}, nil
}

// Table checks a feature table from the wire (at most maxRows rows, unique
// column names, rows x columns values) and returns it for the model package.
// Its errors are INVALID_ARGUMENT naming field.
func Table(field string, t *featuresv1.FeatureTable, maxRows int) (model.Table, error) {
	names, values, rows := t.GetNames(), t.GetValues(), int(t.GetRows())
	var bad string
	switch {
	case rows < 0 || rows > maxRows:
		bad = fmt.Sprintf("%s.rows: %d, want 0 to %d", field, rows, maxRows)
	case len(names) > MaxColumns:
		bad = fmt.Sprintf("%s.names: %d columns, at most %d", field, len(names), MaxColumns)
	case len(values) != rows*len(names):
		bad = fmt.Sprintf("%s.values: %d values, want rows x names = %d x %d", field, len(values), rows, len(names))
	default:
		if dup, ok := duplicate(names); ok {
			bad = fmt.Sprintf("%s.names: %q appears twice", field, dup)
		}
	}
	if bad != "" {
		return model.Table{}, invalid(field, bad)
	}
	return model.Table{Names: names, Values: values, Rows: rows}, nil
}

func duplicate(names []string) (string, bool) {
	if len(names) <= 32 { // the usual case: no map
		for i, n := range names {
			for _, m := range names[:i] {
				if n == m {
					return n, true
				}
			}
		}
		return "", false
	}
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		if seen[n] {
			return n, true
		}
		seen[n] = true
	}
	return "", false
}

func invalid(field, msg string) error {
	st, err := status.New(codes.InvalidArgument, msg).WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: msg}},
	})
	if err != nil {
		return status.Error(codes.InvalidArgument, msg)
	}
	return st.Err()
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
