package core

import (
	"context"
	"time"

	"github.com/adrank/adrank/routersvc/internal/lab"
)

// Snapshots serve pCTRs from batch snapshots (adrankctl batch run): the
// whole answer of a domain in batch mode, and the fallback of a real-time
// domain whose production ranker or features fail.
type Snapshots interface {
	// Scores returns a pCTR for each of adIDs for user from domain's latest
	// snapshot: the user's snapshot pCTR for an ad in their top K, else the
	// cold-start pCTR. ok is false when the domain has no snapshot.
	Scores(ctx context.Context, domain, user string, adIDs []string) (s SnapshotScores, ok bool, err error)
	// Observe offers a real-time answer by version for comparison with the
	// snapshot (the cost of staleness: compared only when the snapshot is
	// of the same version). It must not block.
	Observe(domain, version, user string, cands []Candidate, live []float64, slots int)
	// Info describes the domain's latest snapshot; false: it has none.
	Info(domain string) (SnapshotInfo, bool)
	// Staleness is the comparison so far, by snapshot age.
	Staleness(domain string) []Staleness
}

// SnapshotInfo describes a domain's latest snapshot generation.
type SnapshotInfo struct {
	Generation, Version string
	Created, Completed  time.Time
	Age                 time.Duration
	Users, Pairs        int64
	K, Shards           int
	// Generations is how many complete ones the store keeps.
	Generations int
	// Err is why the store could not be read at the last look, if so.
	Err string
}

// Staleness compares a snapshot's pCTRs with live ones for the requests
// served while the snapshot was of one age range.
type Staleness struct {
	Age             string
	Requests        int64
	Pairs           int64
	MeanAbsDiff     float64
	TopKOverlap     float64
	RankCorrelation float64
}

// SnapshotScores are a request's pCTRs from a snapshot.
type SnapshotScores struct {
	Generation, Version string
	Age                 time.Duration
	Pctrs               []float64
	// Found counts the candidates taken from the user's top K; the others
	// have the cold-start pCTR.
	Found int
}

// UseSnapshots serves batch-mode domains, and real-time fallbacks, from s.
func (e *Engine) UseSnapshots(s Snapshots) { e.snapshots = s }

// useSnapshot takes the call's pCTRs from the domain's snapshot; reason,
// when not empty, is why (a failure: the answer is degraded). It reports
// whether there was one.
func (rc *rankCall) useSnapshot(reason string) bool {
	if rc.e.snapshots == nil || rc.ctx.Err() != nil {
		return false
	}
	ids := make([]string, len(rc.req.Candidates))
	for i, c := range rc.req.Candidates {
		ids[i] = c.AdID
	}
	s, ok, err := rc.e.snapshots.Scores(rc.ctx, rc.domain, rc.req.UserID, ids)
	if err != nil {
		rc.e.log.WarnContext(rc.ctx, "batch snapshot unavailable", "domain", rc.domain, "error", err)
		return false
	}
	if !ok || len(s.Pctrs) != len(ids) {
		return false
	}
	group := "batch"
	if reason != "" {
		group = "snapshot"
		rc.degraded = reason + ": ranked from batch snapshot " + s.Generation + " (" + s.Version + ", " + s.Age.Round(time.Second).String() + " old)"
	}
	rc.a = lab.Assignment{Strategy: lab.Production, Version: s.Version, Group: group, Propensity: 1, Experiment: rc.a.Experiment, Fallback: reason}
	rc.prod = s.Version
	rc.scores = map[string][]float64{s.Version: s.Pctrs}
	rc.auctions = nil
	rc.source, rc.age = SourceSnapshot, s.Age
	return true
}
