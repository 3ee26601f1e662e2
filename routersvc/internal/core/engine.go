// Package core is adrank's ranking core, free of any transport: one Rank
// from plain Go types (assignment to an experiment's arm, features or
// defaults, scoring by the versions the assignment needs, hedged, the
// auction, interleaving, recording and shadowing), and the experiment
// calls around it (events, reports, canary promotion and rollback). It
// talks to features, rankers and the auction through small interfaces
// (Downstream) and returns typed errors (*Error); each front (the gRPC
// router, and the library through it; the stream worker) maps them once.
package core

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/adrank/adrank/platform/assign"
	"github.com/adrank/adrank/platform/idsig"
	"github.com/adrank/adrank/platform/logging"
	"github.com/adrank/adrank/routersvc/internal/lab"
	"github.com/adrank/adrank/routersvc/internal/routing"
)

// Limits bound the core's work.
type Limits struct {
	// Budget is a Rank call's default deadline (a sooner caller deadline wins).
	Budget time.Duration
	// FeaturesTimeout bounds the features call within the budget; past it,
	// Rank answers from default features, flagged as degraded.
	FeaturesTimeout time.Duration
	// MaxInflight bounds concurrent Rank calls; the excess is refused at once
	// with KindOverloaded. 0 means no bound.
	MaxInflight int
	// HedgeAfter sends a second, identical ranker call when the first has
	// not answered in this time; the first answer wins. 0 disables hedging.
	HedgeAfter time.Duration
}

// Engine ranks: it is the router's logic, whatever the front.
type Engine struct {
	table    *routing.Table
	down     Downstream
	lab      *lab.Lab
	limits   Limits
	inflight chan struct{}
	results  Results // precomputed answers; nil: none
	// snapshots serve batch-mode domains and real-time fallbacks; nil: none.
	snapshots Snapshots
	// auctionConfigs read auction configs for edge plans; nil: none.
	auctionConfigs AuctionConfigs
	auctionErrors  func(domain string) string
	// ids sign the impression IDs handed out; nil: unsigned.
	ids *idsig.Keys
	// overloaded hears each Rank call refused for overload (metrics).
	overloaded func()
	edge       edgeCounts
	log        *slog.Logger
	// lastDegradedLog (unix nanos) rate-limits the degraded-mode warning.
	lastDegradedLog atomic.Int64
}

// New returns an engine within limits that serves the domains of table,
// calls down, and runs experiments with lb.
func New(table *routing.Table, down Downstream, lb *lab.Lab, limits Limits, log *slog.Logger) *Engine {
	e := &Engine{table: table, down: down, lab: lb, limits: limits, log: log}
	if limits.MaxInflight > 0 {
		e.inflight = make(chan struct{}, limits.MaxInflight)
	}
	return e
}

// SignImpressions makes the engine sign the impression IDs it hands out
// (served online and accepted from devices) with keys; the lab must verify
// them (lab.Options.Open). Call it before serving.
func (e *Engine) SignImpressions(keys *idsig.Keys) { e.ids = keys }

// OnOverload calls f for each Rank call refused because too many were in
// flight (a metric). Call it before serving.
func (e *Engine) OnOverload(f func()) { e.overloaded = f }

// LabDomains lists the table's domains as the lab sees them (lab.Options.Experiments).
func LabDomains(t *routing.Table) func() map[string]lab.Domain {
	return func() map[string]lab.Domain {
		out := map[string]lab.Domain{}
		for name, d := range t.Snapshot().Domains {
			out[name] = labDomain(d)
		}
		return out
	}
}

// labDomain is what the lab needs of a routing domain.
func labDomain(d *routing.Domain) lab.Domain {
	return lab.Domain{Production: d.ProductionVersion(), Exp: d.Experiment, ExpRaw: d.ExperimentRaw, Healthy: d.Healthy}
}

// scored is one version's ranking of the candidates, priced by the auction.
type scored struct {
	version string
	pctrs   []float64
	auction Auction
}

// rankCall is the state of one Rank call.
type rankCall struct {
	e        *Engine
	ctx      context.Context
	req      *Request
	id       string
	domain   string
	prod     string
	a        lab.Assignment
	feats    FeatureSet
	degraded string
	// scores are pCTRs already computed for a version, and auctions the
	// auctions already run on them (a micro-batch's).
	scores   map[string][]float64
	auctions map[string]Auction
	calls    []lab.Call
	timing   Timing
	start    time.Time
	// err fails the call before it is scored (a micro-batch's features
	// refused for it alone).
	err error
	// source is where the pCTRs come from (a snapshot: age is its age).
	source Source
	age    time.Duration
	// rankerFailed: the last error was the ranker's (not the auction's).
	rankerFailed bool
	// note degrades the answer whatever else happens (a batch-mode domain
	// without a snapshot).
	note string
}

// Rank ranks and prices req's candidates.
func (e *Engine) Rank(ctx context.Context, req *Request) (*Response, error) {
	resp, err := e.rank(ctx, req)
	if err == nil {
		annotate(ctx, resp)
	}
	return resp, err
}

func (e *Engine) rank(ctx context.Context, req *Request) (*Response, error) {
	start := time.Now()
	if err := Validate(req); err != nil {
		return nil, err
	}
	if e.inflight != nil {
		select {
		case e.inflight <- struct{}{}:
			defer func() { <-e.inflight }()
		default:
			if e.overloaded != nil {
				e.overloaded()
			}
			return nil, Errorf(KindOverloaded, "router overloaded: %d requests in flight; retry with backoff", cap(e.inflight))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, e.limits.Budget)
	defer cancel()
	if resp, ok := e.precomputed(ctx, req); ok {
		return resp, nil
	}
	rc, err := e.begin(ctx, req, start)
	if err != nil {
		return nil, err
	}
	if rc.source == SourceSnapshot {
		return rc.finish(nil)
	}
	t := time.Now()
	rc.feats, rc.degraded, err = e.featuresOrDefaults(rc.ctx, req)
	rc.timing.Features = time.Since(t)
	if err != nil {
		return nil, err
	}
	rc.snapshotOverDefaults()
	return rc.finish(nil)
}

// annotate puts what a Rank call did on its trace span (the RPC's, when
// traced): domain, version, strategy, source and whether it degraded.
func annotate(ctx context.Context, resp *Response) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(
		attribute.String("adrank.domain", resp.Domain),
		attribute.String("adrank.version", resp.ModelVersion),
		attribute.String("adrank.strategy", string(resp.Assignment.Strategy)),
		attribute.String("adrank.source", resp.Source.String()),
		attribute.Bool("adrank.degraded", resp.Degraded),
	)
	if resp.Degraded {
		span.SetAttributes(attribute.String("adrank.degraded_reason", resp.DegradedReason))
	}
}

// snapshotOverDefaults serves from the snapshot, when there is one, a call
// whose features failed: the snapshot's pCTRs were computed from the real
// features, default features know nothing of the user.
func (rc *rankCall) snapshotOverDefaults() {
	if rc.degraded != "" && rc.source == SourceRealtime {
		rc.useSnapshot("features unavailable")
	}
}

// begin gives the request its ID, finds its domain and assigns it a version.
func (e *Engine) begin(ctx context.Context, req *Request, start time.Time) (*rankCall, error) {
	// One ID for the whole request: the request's own, else the one the
	// first edge minted (in the context), else a new one (a call in process
	// that brought none).
	reqID := req.RequestID
	if reqID == "" {
		reqID = logging.RequestID(ctx)
	}
	if reqID == "" {
		reqID = logging.NewRequestID()
	}
	ctx = logging.WithRequestID(ctx, reqID)

	d, ok := e.table.Snapshot().Domains[req.Domain]
	if !ok {
		return nil, Errorf(KindNotFound, "domain %q is not known", req.Domain)
	}
	prod := d.ProductionVersion()
	if prod == "" {
		return nil, Errorf(KindUnavailable, "domain %q has no production version: set %s%s", d.Name, routing.ConfigPrefix, d.Name)
	}
	rc := &rankCall{e: e, ctx: ctx, req: req, id: reqID, domain: d.Name, prod: prod, start: start, source: SourceRealtime}
	if d.Batch() {
		// Batch mode: the snapshot's pCTRs, no experiment. Without a
		// snapshot, the domain is ranked in real time, and says so.
		if rc.useSnapshot("") {
			return rc, nil
		}
		rc.note = "batch mode, but domain " + d.Name + " has no batch snapshot: ranked in real time"
	}
	if !d.Healthy(prod) {
		if rc.useSnapshot(fmt.Sprintf("no healthy instance of production version %q", prod)) {
			return rc, nil
		}
		return nil, Errorf(KindUnavailable, "domain %q: no healthy instance of production version %q", d.Name, prod)
	}
	rc.a = e.lab.Assign(d.Name, labDomain(d), req.UserID, reqID)
	return rc, nil
}

// finish scores (unless scored already), runs the auction, records what was
// served (with record, when not nil) and queues the shadows.
func (rc *rankCall) finish(record func(lab.Served) error) (*Response, error) {
	a := &rc.a
	main, results, err := rc.serve(a, rc.prod)
	if err != nil && rc.rankerFailed && rc.source == SourceRealtime && rc.useSnapshot("ranker "+rc.domain+"/"+rc.prod+" failed ("+Message(err)+")") {
		main, results, err = rc.serve(a, rc.prod)
	}
	if err != nil {
		return nil, err
	}
	if rc.note != "" {
		rc.degraded = strings.TrimSuffix(rc.note+"; "+rc.degraded, "; ")
	}
	resp := &Response{
		RequestID: rc.id, Domain: rc.domain, ModelVersion: a.Version, AuctionType: main.auction.Type, Results: results,
		Assignment: *a, Degraded: rc.degraded != "", DegradedReason: rc.degraded, Source: rc.source, Age: rc.age,
	}
	var ope *lab.OPERecord
	if pick, eps, logged := a.Explore(rc.id, len(rc.req.Candidates)); logged && rc.source == SourceRealtime && rc.degraded == "" && len(results) > 0 {
		results, ope = rc.explore(main, results, pick, eps)
		resp.Results = results
	}
	served := lab.Served{Domain: rc.domain, UserID: rc.req.UserID, RequestID: rc.id, A: *a, Calls: rc.calls, OPE: ope}
	for _, r := range results {
		served.Results = append(served.Results, lab.ServedResult{ImpressionID: r.plainID, AdID: r.AdID, Slot: r.Slot, Price: r.PriceMicros, Version: r.Version})
	}
	if record == nil {
		rc.e.lab.Record(served)
	} else if err := record(served); err != nil {
		return nil, Errorf(KindUnavailable, "experiment state store: %v", err)
	}
	if rc.source == SourceRealtime && rc.e.snapshots != nil && a.Strategy != lab.Interleaved && rc.degraded == "" {
		rc.e.snapshots.Observe(rc.domain, main.version, rc.req.UserID, rc.req.Candidates, main.pctrs, rc.req.Slots)
	}
	if len(a.Shadow) > 0 && a.Strategy != lab.Interleaved && rc.source == SourceRealtime {
		rankers, domain, feats := rc.e.down.Rankers, rc.domain, rc.feats
		rc.e.lab.Shadow(domain, a.Shadow, func(ctx context.Context, version string) ([]float64, error) {
			return rankers.Score(ctx, domain, version, feats)
		}, main.pctrs, rc.req.Slots)
	}
	rc.timing.Total = time.Since(rc.start)
	resp.Timing = rc.timing
	return resp, nil
}

// serve ranks with the assigned version(s) and prices the result. A failed
// experiment version falls back to production for this request, and a says
// so.
func (rc *rankCall) serve(a *lab.Assignment, prod string) (scored, []Result, error) {
	fallback := func(err error) (scored, error) {
		rc.calls[len(rc.calls)-1].Fallback = true
		a.Fallback = fmt.Sprintf("version %q failed: %s", rc.calls[len(rc.calls)-1].Version, Message(err))
		a.Strategy, a.Version, a.Other, a.Group = lab.Production, prod, "", "fallback"
		return rc.rank(prod)
	}
	var main scored
	var err error
	if a.Strategy == lab.Interleaved {
		teams := make([]scored, len(a.Teams))
		for i, v := range a.Teams {
			if teams[i], err = rc.rank(v); err != nil {
				break
			}
		}
		if err == nil {
			a.Agreed = agreed(teams)
			return teams[0], rc.interleave(teams), nil
		}
		main, err = fallback(err)
	} else {
		main, err = rc.rank(a.Version)
		if err != nil && a.Version != prod && rc.ctx.Err() == nil {
			main, err = fallback(err)
		}
	}
	if err != nil {
		return scored{}, nil, err
	}
	return main, rc.priced(main), nil
}

// rank scores the candidates with one version and runs the auction.
func (rc *rankCall) rank(version string) (scored, error) {
	pctrs, ok := rc.scores[version]
	if ok {
		delete(rc.scores, version) // a second call (after a fallback) scores afresh
		if a, ok := rc.auctions[version]; ok {
			delete(rc.auctions, version)
			return scored{version: version, pctrs: pctrs, auction: a}, nil
		}
	} else {
		start := time.Now()
		var err error
		pctrs, err = rc.e.score(rc.ctx, rc.domain, version, rc.feats, len(rc.req.Candidates))
		took := time.Since(start)
		rc.timing.Ranker += took
		rc.calls = append(rc.calls, lab.Call{Version: version, Latency: took, Failed: err != nil})
		rc.rankerFailed = err != nil
		if err != nil {
			return scored{}, err
		}
	}
	start := time.Now()
	auction, err := rc.e.auction(rc.ctx, rc.req, pctrs)
	rc.timing.Auction += time.Since(start)
	return scored{version: version, pctrs: pctrs, auction: auction}, err
}

// priced turns one version's auction into results.
func (rc *rankCall) priced(sc scored) []Result {
	pctrOf := make(map[string]float64, len(sc.pctrs))
	for i, c := range rc.req.Candidates {
		pctrOf[c.AdID] = sc.pctrs[i]
	}
	out := make([]Result, len(sc.auction.Allocations))
	for i, a := range sc.auction.Allocations {
		out[i] = rc.result(a, a.Slot, pctrOf[a.AdID], sc.version)
	}
	return out
}

func (rc *rankCall) result(a Allocation, slot int, pctr float64, version string) Result {
	plain := ImpressionID(rc.domain, rc.req.UserID, rc.id, a.AdID, slot)
	return Result{
		AdID: a.AdID, Slot: slot, Pctr: pctr, PriceMicros: a.PriceMicros,
		ImpressionID: rc.e.ids.Sign(plain), plainID: plain,
		Ecpm: a.Ecpm, RunnerUpEcpm: a.RunnerUpEcpm, ReserveMicros: a.ReserveMicros, Version: version,
	}
}

// interleave merges A's and B's priced rankings by team draft; each ad keeps
// its team's pCTR and price. The coin of each round hashes the request ID.
func (rc *rankCall) interleave(teams []scored) []Result {
	lists := make([][]lab.Ranked, len(teams))
	for t, sc := range teams {
		for _, al := range sc.auction.Allocations {
			lists[t] = append(lists[t], lab.Ranked{AdID: al.AdID, Item: al})
		}
	}
	pctr := func(sc scored, id string) float64 {
		for i, c := range rc.req.Candidates {
			if c.AdID == id {
				return sc.pctrs[i]
			}
		}
		return 0
	}
	// Each round's picking order, hashed from the request ID: a coin for
	// two teams, a shuffle for more.
	order := func(round int) []int {
		h := sha256.Sum256([]byte(rc.id + "/coin/" + strconv.Itoa(round)))
		if len(teams) == 2 {
			if h[0]&1 == 1 {
				return []int{1, 0}
			}
			return []int{0, 1}
		}
		rng := rand.New(rand.NewPCG(binary.BigEndian.Uint64(h[:8]), binary.BigEndian.Uint64(h[8:16])))
		return rng.Perm(len(teams))
	}
	picks := lab.Multileave(lists, rc.req.Slots, order)
	out := make([]Result, len(picks))
	for i, p := range picks {
		team := teams[p.Team]
		out[i] = rc.result(p.Item.(Allocation), i+1, pctr(team, p.AdID), team.version)
	}
	return out
}

// explore logs a request for off-policy evaluation: when pick is a
// candidate (not -1), that candidate takes the first slot, charged nothing
// (the platform pays for exploration), and production's ads follow in their
// order, each at its own price, as many as production showed. The record
// says which ad was shown first and the chance it had.
func (rc *rankCall) explore(main scored, results []Result, pick int, eps float64) ([]Result, *lab.OPERecord) {
	n := len(rc.req.Candidates)
	prodTop, top := results[0].AdID, results[0].AdID
	if pick >= 0 {
		top = rc.req.Candidates[pick].AdID
	}
	if top != prodTop {
		pctrOf := make(map[string]float64, n)
		for i, c := range rc.req.Candidates {
			pctrOf[c.AdID] = main.pctrs[i]
		}
		out := []Result{rc.result(Allocation{AdID: top, Slot: 1}, 1, pctrOf[top], main.version)}
		for _, al := range main.auction.Allocations {
			if len(out) == len(results) {
				break
			}
			if al.AdID != top {
				out = append(out, rc.result(al, len(out)+1, pctrOf[al.AdID], main.version))
			}
		}
		results = out
	}
	p := eps / float64(n)
	if top == prodTop {
		p += 1 - eps
	}
	rec := &lab.OPERecord{
		RequestID: rc.id, At: time.Now(), Version: main.version, Pctrs: main.pctrs,
		ProductionTop: prodTop, Top: top, Propensity: p, Epsilon: eps,
	}
	for _, r := range results {
		rec.Shown = append(rec.Shown, r.AdID)
	}
	var err error
	if rec.Request, err = json.Marshal(rc.req); err == nil {
		rec.Features, err = json.Marshal(logFeatures(rc.feats))
	}
	if err != nil { // cannot happen: plain structs and finite floats
		rc.e.log.Warn("request not logged for off-policy evaluation", "error", err)
		return results, nil
	}
	return results, rec
}

// agreed is how many first slots every team fills with the same ads in the
// same order: team draft shows that prefix first, slot for slot.
func agreed(teams []scored) int {
	n := 0
	for {
		for _, t := range teams {
			if n >= len(t.auction.Allocations) || t.auction.Allocations[n].AdID != teams[0].auction.Allocations[n].AdID {
				return n
			}
		}
		n++
	}
}

// ImpressionID identifies one shown ad: see assign.ImpressionID (the edge
// client names its impressions with the same function).
func ImpressionID(domain, user, requestID, adID string, slot int) string {
	return assign.ImpressionID(domain, user, requestID, adID, slot)
}

// featuresOrDefaults asks for features within FeaturesTimeout. When the
// features are down or too slow, the candidates are ranked from default
// features (every feature missing: the models' own defaults) and the reason
// is returned.
func (e *Engine) featuresOrDefaults(ctx context.Context, req *Request) (FeatureSet, string, error) {
	fctx := ctx
	if t := e.limits.FeaturesTimeout; t > 0 {
		var cancel context.CancelFunc
		fctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	feats, err := e.features(fctx, req)
	if err == nil {
		return feats, "", nil
	}
	if ctx.Err() != nil {
		return FeatureSet{}, "", err
	}
	switch KindOf(err) {
	case KindUnavailable, KindDeadline, KindOverloaded:
	default:
		return FeatureSet{}, "", err
	}
	feats, reason := e.defaults(ctx, req, err)
	return feats, reason, nil
}

// defaults are req's default features (every feature missing: the models'
// own defaults) when the features failed with err, and the reason to give.
func (e *Engine) defaults(ctx context.Context, req *Request, err error) (FeatureSet, string) {
	// Once a second at most: an outage must not flood the log.
	if now := time.Now().UnixNano(); now-e.lastDegradedLog.Load() > int64(time.Second) {
		e.lastDegradedLog.Store(now)
		e.log.WarnContext(ctx, "features unavailable; ranking from default features", "error", Detail(err))
	}
	return FeatureSet{Candidates: Table{Rows: len(req.Candidates)}}, "features unavailable (" + Message(err) + "): ranked from default features"
}

func (e *Engine) features(ctx context.Context, req *Request) (FeatureSet, error) {
	f, err := e.down.Features.Features(ctx, query(req))
	if err != nil {
		return FeatureSet{}, downstreamError(ctx, "features", err)
	}
	if f.Candidates.Rows != len(req.Candidates) {
		return FeatureSet{}, Errorf(KindInternal, "features returned %d rows for %d ads", f.Candidates.Rows, len(req.Candidates))
	}
	return f, nil
}

func (e *Engine) score(ctx context.Context, domain, version string, f FeatureSet, n int) ([]float64, error) {
	scores, err := e.hedged(ctx, domain, version, f)
	what := "ranker " + domain + "/" + version
	if err != nil {
		return nil, downstreamError(ctx, what, err)
	}
	if len(scores) != n {
		return nil, Errorf(KindInternal, "%s returned %d scores for %d candidates", what, len(scores), n)
	}
	return scores, nil
}

// hedged scores, and once more if the first call has not answered within
// HedgeAfter: a slow instance then costs HedgeAfter, not its delay. When the
// rankers are a Hedger, the two calls go to different instances. The first
// success wins; the other call is cancelled. Scoring has no side effects, so
// a duplicate call is safe.
func (e *Engine) hedged(ctx context.Context, domain, version string, f FeatureSet) ([]float64, error) {
	r := e.down.Rankers
	if e.limits.HedgeAfter <= 0 {
		return r.Score(ctx, domain, version, f)
	}
	if h, ok := r.(Hedger); ok {
		ctx = h.Hedge(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the loser
	type answer struct {
		scores []float64
		err    error
	}
	answers := make(chan answer, 2) // both senders can finish without a reader
	call := func() {
		s, err := r.Score(ctx, domain, version, f)
		answers <- answer{s, err}
	}
	go call()
	timer := time.NewTimer(e.limits.HedgeAfter)
	defer timer.Stop()
	pending := 1
	var last error
	for {
		select {
		case a := <-answers:
			if a.err == nil {
				return a.scores, nil
			}
			last = a.err
			if pending--; pending == 0 {
				return nil, last
			}
		case <-timer.C:
			pending++
			go call()
		}
	}
}

func auctionRequest(req *Request, pctrs []float64) AuctionRequest {
	ar := AuctionRequest{Domain: req.Domain, Slots: req.Slots, ReserveMicros: req.ReserveMicros, Bids: make([]Bid, len(pctrs))}
	for i, c := range req.Candidates {
		ar.Bids[i] = Bid{AdID: c.AdID, AdvertiserID: c.AdvertiserID, BidMicros: c.BidMicros, Pctr: pctrs[i], Quality: c.Quality}
	}
	return ar
}

func (e *Engine) auction(ctx context.Context, req *Request, pctrs []float64) (Auction, error) {
	a, err := e.down.Auction.Auction(ctx, auctionRequest(req, pctrs))
	if err != nil {
		return Auction{}, downstreamError(ctx, "auction", err)
	}
	return a, nil
}
