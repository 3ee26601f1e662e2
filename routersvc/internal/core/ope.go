package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/adrank/adrank/routersvc/internal/lab"
	"github.com/adrank/adrank/routersvc/internal/stats"
)

// OPEReport is an off-policy estimate of a candidate version's click rate
// in the first slot, from the requests production served and logged.
type OPEReport struct {
	Domain, Candidate, Production string
	// Records are the logged requests used, Clicks their first-slot
	// clicks, and LoggedCTR their click rate (what was shown).
	Records, Clicks, LoggedCTR float64
	// Skipped are records that could not be evaluated (a version that has
	// changed its features since, say).
	Skipped float64
	stats.OPEEstimates
	Alpha float64
}

// Bounds of an off-policy evaluation: concurrent scorings of logged
// requests, and the time the whole evaluation may take whatever the
// caller's deadline.
const (
	MaxOPEWorkers = 8
	MaxOPETime    = 5 * time.Minute
)

// errMalformed is a logged record that cannot be replayed: skipped.
type errMalformed struct{ error }

// EvaluateOffPolicy estimates how often candidate's first ad would be
// clicked, had it served the requests logged for the domain: each logged
// request is scored again by the candidate on the features it was served
// with, its auction run, and its first ad compared with the one shown (see
// stats.OPE). The candidate serves no one meanwhile.
func (e *Engine) EvaluateOffPolicy(ctx context.Context, domain, candidate string, alpha float64) (*OPEReport, error) {
	d, err := e.domain(domain)
	if err != nil {
		return nil, err
	}
	if candidate == "" {
		return nil, &Error{Kind: KindInvalid, Msg: "candidate: is required", Fields: []FieldViolation{{Field: "candidate", Description: "is required"}}}
	}
	if !d.Healthy(candidate) {
		return nil, Errorf(KindFailedPrecondition, "domain %q: no healthy instance of version %q to evaluate; register its ranker first", domain, candidate)
	}
	if alpha == 0 {
		alpha = 0.05
	}
	if !(alpha > 0 && alpha < 1) {
		return nil, &Error{Kind: KindInvalid, Msg: "alpha: want within (0, 1)", Fields: []FieldViolation{{Field: "alpha", Description: "want within (0, 1)"}}}
	}
	recs, clicked, err := e.lab.OPELog(ctx, domain)
	if err != nil {
		return nil, Errorf(KindUnavailable, "experiment state store: %v", err)
	}
	if len(recs) == 0 {
		return nil, Errorf(KindFailedPrecondition, "domain %q has no requests logged for off-policy evaluation: set \"explore\" in its experiment document and serve traffic first", domain)
	}
	logs := make([]stats.Logged, len(recs))
	ok := make([]bool, len(recs))
	ctx, cancel := context.WithTimeout(ctx, MaxOPETime)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(MaxOPEWorkers)
	for i := range recs {
		g.Go(func() error {
			l, err := e.replay(gctx, domain, candidate, recs[i], clicked.On(recs[i], recs[i].Top))
			var bad errMalformed
			switch {
			case errors.As(err, &bad):
				return nil // skipped, counted below
			case err != nil: // the candidate's ranker or the auction failed: no estimate
				return err
			}
			logs[i], ok[i] = l, true
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, downstreamError(ctx, "off-policy evaluation", err)
	}
	r := &OPEReport{Domain: domain, Candidate: candidate, Production: d.ProductionVersion(), Alpha: alpha}
	var used []stats.Logged
	for i, l := range logs {
		if !ok[i] {
			r.Skipped++
			continue
		}
		used = append(used, l)
		r.Clicks += l.Reward
	}
	r.Records = float64(len(used))
	if r.Records < 2 {
		return nil, Errorf(KindFailedPrecondition, "domain %q: %.0f of %d logged requests could be evaluated (the others do not fit %s's features); at least 2 are needed", domain, r.Records, len(recs), candidate)
	}
	r.LoggedCTR = r.Clicks / r.Records
	r.OPEEstimates = stats.OPE(used, alpha)
	return r, nil
}

// replay is one logged request as seen by the candidate.
func (e *Engine) replay(ctx context.Context, domain, candidate string, rec lab.OPERecord, click bool) (stats.Logged, error) {
	var req Request
	var lf loggedFeatures
	if err := json.Unmarshal(rec.Request, &req); err != nil {
		return stats.Logged{}, errMalformed{err}
	}
	if err := json.Unmarshal(rec.Features, &lf); err != nil {
		return stats.Logged{}, errMalformed{err}
	}
	feats := lf.set()
	if len(rec.Pctrs) != len(req.Candidates) || !(rec.Propensity > 0 && rec.Propensity <= 1) {
		return stats.Logged{}, errMalformed{fmt.Errorf("malformed record %s", rec.RequestID)}
	}
	ctx, cancel := context.WithTimeout(ctx, e.limits.Budget)
	defer cancel()
	pctrs, err := e.score(ctx, domain, candidate, feats, len(req.Candidates))
	if err != nil && KindOf(err) == KindInternal { // the candidate refuses these features
		return stats.Logged{}, errMalformed{err}
	}
	if err != nil {
		return stats.Logged{}, err
	}
	a, err := e.auction(ctx, &req, pctrs)
	if err != nil {
		return stats.Logged{}, err
	}
	q := func(ad string) float64 { // production's pCTR: the reward model
		if i := slices.IndexFunc(req.Candidates, func(c Candidate) bool { return c.AdID == ad }); i >= 0 {
			return rec.Pctrs[i]
		}
		return 0
	}
	l := stats.Logged{Propensity: rec.Propensity, QLogged: q(rec.Top)}
	if len(a.Allocations) > 0 {
		top := a.Allocations[0].AdID
		l.Match, l.QTarget = top == rec.Top, q(top)
	}
	if click {
		l.Reward = 1
	}
	return l, nil
}

// loggedFeatures is a FeatureSet as the OPE log keeps it: JSON, with a
// missing value (NaN) as null.
type loggedFeatures struct {
	Shared, Candidates loggedTable
}

type loggedTable struct {
	Names  []string
	Values nanFloats
	Rows   int
}

func logFeatures(f FeatureSet) loggedFeatures {
	return loggedFeatures{
		Shared:     loggedTable{f.Shared.Names, f.Shared.Values, f.Shared.Rows},
		Candidates: loggedTable{f.Candidates.Names, f.Candidates.Values, f.Candidates.Rows},
	}
}

func (l loggedFeatures) set() FeatureSet {
	return FeatureSet{
		Shared:     Table{l.Shared.Names, l.Shared.Values, l.Shared.Rows},
		Candidates: Table{l.Candidates.Names, l.Candidates.Values, l.Candidates.Rows},
	}
}

// nanFloats are floats in JSON with NaN (and infinities, which features
// never are) as null.
type nanFloats []float64

// MarshalJSON implements json.Marshaler.
func (f nanFloats) MarshalJSON() ([]byte, error) {
	b := []byte{'['}
	for i, v := range f {
		if i > 0 {
			b = append(b, ',')
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			b = append(b, "null"...)
		} else {
			b = strconv.AppendFloat(b, v, 'g', -1, 64)
		}
	}
	return append(b, ']'), nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (f *nanFloats) UnmarshalJSON(b []byte) error {
	var raw []*float64
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	out := make([]float64, len(raw))
	for i, p := range raw {
		out[i] = math.NaN()
		if p != nil {
			out[i] = *p
		}
	}
	*f = out
	return nil
}
