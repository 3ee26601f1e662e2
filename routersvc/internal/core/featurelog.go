package core

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"time"
)

// TrainingRow is one shown ad of a logged request, with the features it was
// ranked on as they were served at that moment, and whether it was clicked.
type TrainingRow struct {
	RequestID, UserID, AdID, Version string
	At                               time.Time
	Slot                             int
	// Values are the row's features in the order of the export's names;
	// NaN is missing.
	Values []float64
	Click  bool
}

// ExportTrainingRows passes every shown ad of the domain's logged requests
// (see "explore"), oldest first, joined with its click, to fn. names are
// the feature columns, the union of every record's; a feature a record
// lacks is missing (NaN) in its rows. A malformed record is skipped and
// counted.
func (e *Engine) ExportTrainingRows(ctx context.Context, domain string, fn func(names []string, r TrainingRow) error) (skipped int, err error) {
	if _, err := e.domain(domain); err != nil {
		return 0, err
	}
	recs, clicked, err := e.lab.OPELog(ctx, domain)
	if err != nil {
		return 0, Errorf(KindUnavailable, "experiment state store: %v", err)
	}
	if len(recs) == 0 {
		return 0, Errorf(KindFailedPrecondition, "domain %q has no logged requests: set \"explore\" in its experiment document (\"epsilon\": 0 logs without exploring) and serve traffic first", domain)
	}
	type decoded struct {
		req   Request
		feats FeatureSet
	}
	dec := make([]*decoded, len(recs))
	var names []string
	col := map[string]int{}
	for i, rec := range recs {
		var d decoded
		var lf loggedFeatures
		if json.Unmarshal(rec.Request, &d.req) != nil || json.Unmarshal(rec.Features, &lf) != nil {
			skipped++
			continue
		}
		d.feats = lf.set()
		if d.feats.Candidates.Rows != len(d.req.Candidates) || d.feats.Shared.Rows != 1 ||
			len(d.feats.Shared.Values) != len(d.feats.Shared.Names) || len(d.feats.Candidates.Values) != d.feats.Candidates.Rows*len(d.feats.Candidates.Names) {
			skipped++
			continue
		}
		dec[i] = &d
		for _, n := range slices.Concat(d.feats.Shared.Names, d.feats.Candidates.Names) {
			if _, ok := col[n]; !ok {
				col[n] = len(names)
				names = append(names, n)
			}
		}
	}
	for i, rec := range recs {
		d := dec[i]
		if d == nil {
			continue
		}
		if err := ctx.Err(); err != nil {
			return skipped, err
		}
		shown := rec.Shown
		if len(shown) == 0 { // logged before the shown ads were kept
			shown = []string{rec.Top}
		}
		for slot, ad := range shown {
			ci := slices.IndexFunc(d.req.Candidates, func(c Candidate) bool { return c.AdID == ad })
			if ci < 0 {
				skipped++
				continue
			}
			row := TrainingRow{RequestID: rec.RequestID, UserID: d.req.UserID, AdID: ad, Version: rec.Version, At: rec.At, Slot: slot + 1,
				Values: make([]float64, len(names)), Click: clicked.On(rec, ad)}
			for j := range row.Values {
				row.Values[j] = math.NaN()
			}
			for j, n := range d.feats.Shared.Names {
				row.Values[col[n]] = d.feats.Shared.Values[j]
			}
			w := len(d.feats.Candidates.Names)
			for j, n := range d.feats.Candidates.Names {
				row.Values[col[n]] = d.feats.Candidates.Values[ci*w+j]
			}
			if err := fn(names, row); err != nil {
				return skipped, err
			}
		}
	}
	return skipped, nil
}
