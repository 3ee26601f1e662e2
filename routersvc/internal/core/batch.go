package core

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/adrank/adrank/routersvc/internal/lab"
)

// BatchFeatures is implemented by Features that answer several queries in
// one call.
type BatchFeatures interface {
	FeaturesBatch(ctx context.Context, qs []FeatureQuery) ([]FeatureSet, error)
}

// BatchAuctioneer is implemented by an Auctioneer that runs several
// auctions in one call.
type BatchAuctioneer interface {
	AuctionBatch(ctx context.Context, rs []AuctionRequest) ([]Auction, error)
}

// Micro-batch bounds: the features service's and the rankers' own limits.
const (
	MaxBatchQueries = 256
	MaxBatchRows    = 1000
)

// BatchResult is one request's answer in a batch.
type BatchResult struct {
	Response *Response
	Err      error
	// Served is what to record.
	Served lab.Served
}

// RankBatch ranks several requests as Rank ranks each, in fewer calls: the
// features of all of them in one call (when the features allow it), the
// candidates of every request assigned the same domain and version scored
// in one ranker call (at most MaxBatchRows rows), and the auctions in one
// call (when the auction allows it). Fewer calls for the same work is where
// a micro-batch saves. ctx bounds the whole batch. Nothing is recorded:
// each answer's Served is for the caller to record (the stream worker
// records idempotently, in one transaction, before it commits).
func (e *Engine) RankBatch(ctx context.Context, reqs []*Request) []BatchResult {
	out := make([]BatchResult, len(reqs))
	var rcs []*rankCall
	var idx []int // rcs[i] answers reqs[idx[i]]
	for i, req := range reqs {
		if err := Validate(req); err != nil {
			out[i].Err = err
			continue
		}
		rc, err := e.begin(ctx, req, time.Now())
		if err != nil {
			out[i].Err = err
			continue
		}
		rcs, idx = append(rcs, rc), append(idx, i)
	}
	if len(rcs) == 0 {
		return out
	}
	var live []*rankCall // the calls not served from a snapshot already
	for _, rc := range rcs {
		if rc.source == SourceRealtime {
			live = append(live, rc)
		}
	}
	if err := e.batchFeatures(ctx, live); err != nil {
		for _, i := range idx {
			out[i].Err = err
		}
		return out
	}
	for _, rc := range live {
		rc.snapshotOverDefaults()
	}
	e.batchScores(ctx, rcs)
	e.batchAuctions(ctx, rcs)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for j, rc := range rcs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var served lab.Served
			record := func(s lab.Served) error { served = s; return nil }
			if rc.err != nil {
				out[idx[j]] = BatchResult{Err: rc.err}
				return
			}
			resp, err := rc.finish(record)
			out[idx[j]] = BatchResult{Response: resp, Err: err, Served: served}
		}()
	}
	wg.Wait()
	return out
}

// batchAuctions runs, in calls of MaxBatchQueries, the auctions of the
// calls scored in a batch; when the auction cannot batch, or a batch call
// fails, each call runs its own.
func (e *Engine) batchAuctions(ctx context.Context, rcs []*rankCall) {
	ba, ok := e.down.Auction.(BatchAuctioneer)
	if !ok {
		return
	}
	var ready []*rankCall
	for _, rc := range rcs {
		if _, ok := rc.scores[rc.a.Version]; ok && rc.err == nil {
			ready = append(ready, rc)
		}
	}
	for lo := 0; lo < len(ready); lo += MaxBatchQueries {
		chunk := ready[lo:min(lo+MaxBatchQueries, len(ready))]
		rs := make([]AuctionRequest, len(chunk))
		for i, rc := range chunk {
			rs[i] = auctionRequest(rc.req, rc.scores[rc.a.Version])
		}
		t := time.Now()
		as, err := ba.AuctionBatch(ctx, rs)
		took := time.Since(t)
		if err != nil || len(as) != len(rs) {
			continue
		}
		for i, rc := range chunk {
			rc.auctions = map[string]Auction{rc.a.Version: as[i]}
			rc.timing.Auction = took
		}
	}
}

// batchFeatures gets every call's features: in calls of MaxBatchQueries
// when the features are a BatchFeatures, else one call each. A features
// service that is down or slow degrades the calls to default features, as
// in Rank; its other errors fail the batch.
func (e *Engine) batchFeatures(ctx context.Context, rcs []*rankCall) error {
	bf, ok := e.down.Features.(BatchFeatures)
	if !ok {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for _, rc := range rcs {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				t := time.Now()
				rc.feats, rc.degraded, rc.err = e.featuresOrDefaults(rc.ctx, rc.req)
				rc.timing.Features = time.Since(t)
			}()
		}
		wg.Wait()
		return nil
	}
	for lo := 0; lo < len(rcs); lo += MaxBatchQueries {
		chunk := rcs[lo:min(lo+MaxBatchQueries, len(rcs))]
		qs := make([]FeatureQuery, len(chunk))
		for i, rc := range chunk {
			qs[i] = query(rc.req)
		}
		t := time.Now()
		sets, err := bf.FeaturesBatch(ctx, qs)
		took := time.Since(t)
		if err == nil && len(sets) != len(qs) {
			err = Errorf(KindInternal, "returned %d feature sets for %d queries", len(sets), len(qs))
		}
		for i, rc := range chunk {
			rc.timing.Features = took
			if err != nil {
				continue
			}
			if !wellFormed(sets[i]) || sets[i].Candidates.Rows != len(rc.req.Candidates) {
				rc.err = Errorf(KindInternal, "features returned a malformed table (%d rows for %d ads)", sets[i].Candidates.Rows, len(rc.req.Candidates))
				continue
			}
			rc.feats = sets[i]
		}
		if err != nil {
			err = downstreamError(ctx, "features", err)
			switch KindOf(err) {
			case KindUnavailable, KindDeadline, KindOverloaded:
				if ctx.Err() != nil {
					return err
				}
				for _, rc := range chunk {
					rc.feats, rc.degraded = e.defaults(rc.ctx, rc.req, err)
				}
			default:
				// One query the service refuses must not fail the others:
				// ask for each on its own; the one at fault fails alone.
				for _, rc := range chunk {
					var ferr error
					rc.feats, rc.degraded, ferr = e.featuresOrDefaults(rc.ctx, rc.req)
					if ferr != nil {
						rc.err = ferr
					}
				}
			}
		}
	}
	return nil
}

func query(req *Request) FeatureQuery {
	ids := make([]string, len(req.Candidates))
	for i, c := range req.Candidates {
		ids[i] = c.AdID
	}
	return FeatureQuery{UserID: req.UserID, AdIDs: ids, Context: req.Context}
}

// batchScores scores, for each domain and version, the candidates of every
// call assigned it (interleaving aside) in calls of at most MaxBatchRows
// rows. A group whose call fails is left to score call by call, as Rank
// would (with its fallback to production).
func (e *Engine) batchScores(ctx context.Context, rcs []*rankCall) {
	type key struct{ domain, version string }
	groups := map[key][]*rankCall{}
	var order []key
	for _, rc := range rcs {
		if rc.err != nil || rc.source != SourceRealtime || rc.a.Strategy == lab.Interleaved || len(rc.req.Candidates) > MaxBatchRows || !wellFormed(rc.feats) {
			continue // scored on its own (a malformed table is the ranker's to refuse)
		}
		k := key{rc.domain, rc.a.Version}
		if groups[k] == nil {
			order = append(order, k)
		}
		groups[k] = append(groups[k], rc)
	}
	var wg sync.WaitGroup
	for _, k := range order {
		g := groups[k]
		for len(g) > 0 {
			n, rows := 0, 0
			for n < len(g) && rows+len(g[n].req.Candidates) <= MaxBatchRows {
				rows += len(g[n].req.Candidates)
				n++
			}
			chunk := g[:n]
			g = g[n:]
			wg.Add(1)
			go func() {
				defer wg.Done()
				e.scoreChunk(ctx, k.domain, k.version, chunk, rows)
			}()
		}
	}
	wg.Wait()
}

func (e *Engine) scoreChunk(ctx context.Context, domain, version string, chunk []*rankCall, rows int) {
	sets := make([]FeatureSet, len(chunk))
	for i, rc := range chunk {
		sets[i] = rc.feats
	}
	t := time.Now()
	scores, err := e.score(ctx, domain, version, FeatureSet{Candidates: Merge(sets)}, rows)
	took := time.Since(t)
	if err != nil {
		return
	}
	for _, rc := range chunk {
		n := len(rc.req.Candidates)
		rc.scores = map[string][]float64{version: scores[:n:n]}
		scores = scores[n:]
		rc.timing.Ranker = took
		rc.calls = append(rc.calls, lab.Call{Version: version, Latency: took})
	}
}

// wellFormed reports whether a feature set's tables hold rows x names
// values (and the shared table at most one row).
func wellFormed(f FeatureSet) bool {
	return f.Shared.Rows <= 1 && f.Shared.Rows >= 0 && f.Candidates.Rows >= 0 &&
		len(f.Shared.Values) == f.Shared.Rows*len(f.Shared.Names) &&
		len(f.Candidates.Values) == f.Candidates.Rows*len(f.Candidates.Names)
}

// Merge puts several feature sets' candidates in one table, each row
// carrying its own set's shared features too, so that a ranker scores every
// row as it would have in its own set: a model input comes from the row's
// candidate value, else (missing) from its set's shared value.
func Merge(sets []FeatureSet) Table {
	col := map[string]int{}
	var names []string
	add := func(t Table) {
		for _, n := range t.Names {
			if _, ok := col[n]; !ok {
				col[n] = len(names)
				names = append(names, n)
			}
		}
	}
	rows := 0
	for _, s := range sets {
		add(s.Candidates)
		add(s.Shared)
		rows += s.Candidates.Rows
	}
	w := len(names)
	values := make([]float64, rows*w)
	for i := range values {
		values[i] = math.NaN()
	}
	r := 0
	for _, s := range sets {
		cw := len(s.Candidates.Names)
		for k := range s.Candidates.Rows {
			row := values[(r+k)*w : (r+k+1)*w]
			for j, n := range s.Candidates.Names {
				row[col[n]] = s.Candidates.Values[k*cw+j]
			}
			if s.Shared.Rows > 0 {
				for j, n := range s.Shared.Names {
					if c := col[n]; math.IsNaN(row[c]) {
						row[c] = s.Shared.Values[j]
					}
				}
			}
		}
		r += s.Candidates.Rows
	}
	return Table{Names: names, Values: values, Rows: rows}
}
