// Package snapshots serves batch snapshots to the ranking core: each
// domain's latest generation (looked up every Refresh), the pCTRs of a
// request's candidates from it, with a documented cold-start rule for the
// candidates it lacks, and the cost of staleness: snapshot against live
// pCTRs on sampled real-time requests, by the snapshot's age.
//
// Cold start. A candidate in the user's top K gets its snapshot pCTR. One
// that is not gets its prior, the ad's mean pCTR over every user the job
// scored it for (or, for an ad the job never saw, the mean over all pairs);
// when the user's top K is full, the ad ranked below the K-th for this
// user, so its pCTR is capped at the K-th's.
package snapshots

import (
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/adrank/adrank/platform/snapshot"
	"github.com/adrank/adrank/routersvc/internal/core"
	"github.com/adrank/adrank/routersvc/internal/stats"
)

// Options tune a Server.
type Options struct {
	// Refresh is how often each domain's latest generation is looked up.
	Refresh time.Duration
	// Sample is the share of real-time requests compared with the snapshot.
	Sample float64
	// Queue bounds comparisons waiting; past it they are dropped.
	Queue int
	// Timeout bounds one store call of the background work.
	Timeout time.Duration
	Now     func() time.Time
}

func (o *Options) defaults() {
	if o.Refresh <= 0 {
		o.Refresh = time.Second
	}
	if o.Queue <= 0 {
		o.Queue = 256
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Server implements core.Snapshots over a snapshot store.
type Server struct {
	st      snapshot.Store
	o       Options
	log     *slog.Logger
	domains func() []string

	mu     sync.RWMutex
	latest map[string]*generation

	obs     chan observation
	dropped atomic.Int64
	smu     sync.Mutex
	stale   map[string]*[nBuckets]acc
}

// generation is a domain's latest generation, with its priors.
type generation struct {
	g       snapshot.Generation
	prior   map[string]float64 // ad -> mean pCTR
	mean    float64            // over all pairs
	kept    int                // complete generations in the store
	err     string             // why the last refresh failed
	checked time.Time
}

// New serves the generations of st for the domains domains() lists.
func New(st snapshot.Store, domains func() []string, o Options, log *slog.Logger) *Server {
	o.defaults()
	return &Server{st: st, o: o, log: log, domains: domains, latest: map[string]*generation{},
		obs: make(chan observation, o.Queue), stale: map[string]*[nBuckets]acc{}}
}

// Run refreshes the latest generations and compares observations until ctx
// ends.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case o := <-s.obs:
				s.compare(ctx, o)
			case <-ctx.Done():
				return
			}
		}
	}()
	defer wg.Wait()
	t := time.NewTicker(s.o.Refresh)
	defer t.Stop()
	for {
		s.Refresh(ctx)
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil
		}
	}
}

// Refresh looks up every domain's latest generation now.
func (s *Server) Refresh(ctx context.Context) {
	for _, d := range s.domains() {
		s.refresh(ctx, d)
	}
}

func (s *Server) refresh(ctx context.Context, domain string) {
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	s.mu.RLock()
	cur := s.latest[domain]
	s.mu.RUnlock()
	gens, err := s.st.Generations(ctx, domain)
	next := &generation{checked: s.o.Now()}
	switch {
	case err != nil:
		if cur == nil {
			cur = &generation{}
		}
		c := *cur
		c.err = err.Error()
		next = &c
		s.log.Warn("snapshot store unavailable; keeping the generation in force", "domain", domain, "error", err)
	case len(gens) == 0:
		next = nil
	case cur != nil && cur.g.Generation == gens[0].Generation && cur.prior != nil:
		c := *cur
		c.kept, c.err = len(gens), ""
		next = &c
	default:
		ads, err := s.st.Ads(ctx, gens[0])
		if err != nil {
			s.log.Warn("snapshot generation unreadable; keeping the one in force", "domain", domain, "generation", gens[0].Generation, "error", err)
			return
		}
		next.g, next.kept = gens[0], len(gens)
		next.prior = make(map[string]float64, len(ads))
		var sum float64
		var n int64
		for id, a := range ads {
			next.prior[id] = a.Mean()
			sum += a.Sum
			n += a.N
		}
		if n > 0 {
			next.mean = sum / float64(n)
		}
		if cur == nil || cur.g.Generation != next.g.Generation {
			s.log.Info("batch snapshot in force", "domain", domain, "generation", next.g.Generation, "version", next.g.Version,
				"users", next.g.Users, "pairs", next.g.Pairs, "age", s.o.Now().Sub(next.g.Created).Round(time.Second).String())
		}
	}
	s.mu.Lock()
	if next == nil {
		delete(s.latest, domain)
	} else {
		s.latest[domain] = next
	}
	s.mu.Unlock()
}

func (s *Server) generation(domain string) *generation {
	s.mu.RLock()
	defer s.mu.RUnlock()
	g := s.latest[domain]
	if g == nil || g.prior == nil {
		return nil
	}
	return g
}

// Scores implements core.Snapshots.
func (s *Server) Scores(ctx context.Context, domain, user string, adIDs []string) (core.SnapshotScores, bool, error) {
	g := s.generation(domain)
	if g == nil {
		return core.SnapshotScores{}, false, nil
	}
	top, _, err := s.st.Lookup(ctx, g.g, user)
	if err != nil {
		return core.SnapshotScores{}, false, err
	}
	pctrs, found := g.pctrs(top, adIDs)
	return core.SnapshotScores{
		Generation: g.g.Generation, Version: g.g.Version, Age: s.o.Now().Sub(g.g.Created), Pctrs: pctrs, Found: found,
	}, true, nil
}

// pctrs applies the cold-start rule (see the package doc).
func (g *generation) pctrs(top []snapshot.Entry, adIDs []string) ([]float64, int) {
	in := make(map[string]float64, len(top))
	for _, e := range top {
		in[e.AdID] = e.Pctr
	}
	kth := math.Inf(1)
	if len(top) >= g.g.K && len(top) > 0 {
		kth = top[len(top)-1].Pctr
	}
	out := make([]float64, len(adIDs))
	found := 0
	for i, id := range adIDs {
		if p, ok := in[id]; ok {
			out[i] = p
			found++
			continue
		}
		prior, ok := g.prior[id]
		if !ok {
			prior = g.mean
		}
		out[i] = math.Min(prior, kth)
	}
	return out, found
}

// Info describes a domain's latest generation.
func (s *Server) Info(domain string) (core.SnapshotInfo, bool) {
	s.mu.RLock()
	g := s.latest[domain]
	s.mu.RUnlock()
	if g == nil {
		return core.SnapshotInfo{}, false
	}
	return core.SnapshotInfo{
		Generation: g.g.Generation, Version: g.g.Version, Created: g.g.Created, Completed: g.g.Completed,
		Age: s.o.Now().Sub(g.g.Created), Users: g.g.Users, Pairs: g.g.Pairs, K: g.g.K, Shards: g.g.Shards,
		Generations: g.kept, Err: g.err,
	}, true
}

// observation is a real-time answer to compare with the snapshot.
type observation struct {
	domain, user string
	ads          []string
	live         []float64
	slots        int
}

// Observe implements core.Snapshots: a sampled share of the calls ranked
// by the snapshot's version is queued for comparison; a full queue drops
// it. (Another version's pCTRs would measure the models' difference, not
// staleness.)
func (s *Server) Observe(domain, version, user string, cands []core.Candidate, live []float64, slots int) {
	if s.o.Sample <= 0 || rand.Float64() >= s.o.Sample {
		return
	}
	if g := s.generation(domain); g == nil || g.g.Version != version {
		return
	}
	select {
	case s.obs <- observation{domain: domain, user: user, ads: adIDs(cands), live: slices.Clone(live), slots: slots}:
	default:
		s.dropped.Add(1)
	}
}

// nBuckets is len(ageBuckets).
const nBuckets = 5

// ageBuckets are the snapshot ages staleness is reported by.
var ageBuckets = [nBuckets]struct {
	name string
	upTo time.Duration
}{
	{"<1h", time.Hour}, {"1h-6h", 6 * time.Hour}, {"6h-24h", 24 * time.Hour},
	{"1d-3d", 72 * time.Hour}, {">3d", math.MaxInt64},
}

// acc accumulates one age bucket's comparisons.
type acc struct {
	requests, pairs, ranked int64
	absDiff, overlap, rho   float64
}

func (s *Server) compare(ctx context.Context, o observation) {
	g := s.generation(o.domain)
	if g == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	top, ok, err := s.st.Lookup(ctx, g.g, o.user)
	if err != nil || !ok {
		return // a user the snapshot lacks has no pairs to compare
	}
	snap, _ := g.pctrs(top, o.ads)
	in := make(map[string]bool, len(top))
	for _, e := range top {
		in[e.AdID] = true
	}
	var a acc
	a.requests = 1
	var xs, ys []float64
	for i, id := range o.ads {
		if in[id] {
			a.pairs++
			a.absDiff += math.Abs(snap[i] - o.live[i])
			xs, ys = append(xs, snap[i]), append(ys, o.live[i])
		}
	}
	a.overlap = stats.TopKOverlap(o.live, snap, max(o.slots, 1))
	if len(xs) >= 3 {
		a.ranked, a.rho = 1, stats.Spearman(xs, ys)
	}
	age := s.o.Now().Sub(g.g.Created)
	b := 0
	for b < len(ageBuckets)-1 && age >= ageBuckets[b].upTo {
		b++
	}
	s.smu.Lock()
	defer s.smu.Unlock()
	st := s.stale[o.domain]
	if st == nil {
		st = new([nBuckets]acc)
		s.stale[o.domain] = st
	}
	t := &st[b]
	t.requests += a.requests
	t.pairs += a.pairs
	t.ranked += a.ranked
	t.absDiff += a.absDiff
	t.overlap += a.overlap
	t.rho += a.rho
}

// Staleness implements core.Snapshots.
func (s *Server) Staleness(domain string) []core.Staleness {
	s.smu.Lock()
	defer s.smu.Unlock()
	st := s.stale[domain]
	if st == nil {
		return nil
	}
	var out []core.Staleness
	for i, a := range st {
		if a.requests == 0 {
			continue
		}
		row := core.Staleness{Age: ageBuckets[i].name, Requests: a.requests, Pairs: a.pairs, TopKOverlap: a.overlap / float64(a.requests)}
		if a.pairs > 0 {
			row.MeanAbsDiff = a.absDiff / float64(a.pairs)
		}
		if a.ranked > 0 {
			row.RankCorrelation = a.rho / float64(a.ranked)
		}
		out = append(out, row)
	}
	return out
}

func adIDs(cands []core.Candidate) []string {
	out := make([]string, len(cands))
	for i, c := range cands {
		out[i] = c.AdID
	}
	return out
}
