// Package router implements RouterService: it validates a request, then
// calls featuresvc, the domain's production ranker and the auction.
package router

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	auctionv1 "github.com/adrank/adrank/gen/adrank/auction/v1"
	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	rankerv1 "github.com/adrank/adrank/gen/adrank/ranker/v1"
	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/grpcx"
	"github.com/adrank/adrank/platform/logging"
	"github.com/adrank/adrank/routersvc/internal/lab"
	"github.com/adrank/adrank/routersvc/internal/routing"
)

// Downstream gives the clients of the services the router calls.
type Downstream interface {
	Features() (featuresv1.FeatureServiceClient, error)
	Auction() (auctionv1.AuctionServiceClient, error)
	Ranker(domain, version string) (rankerv1.RankerServiceClient, error)
}

// Limits bound the router's work.
type Limits struct {
	// Budget is a Rank call's default deadline (a sooner caller deadline wins).
	Budget time.Duration
	// FeaturesTimeout bounds the features call within the budget; past it,
	// Rank answers from default features, flagged as degraded.
	FeaturesTimeout time.Duration
	// MaxInflight bounds concurrent Rank calls; the excess is refused at once
	// with RESOURCE_EXHAUSTED. 0 means no bound.
	MaxInflight int
	// HedgeAfter sends a second, identical ranker call (to the next instance,
	// by round robin) when the first has not answered in this time; the first
	// answer wins. 0 disables hedging.
	HedgeAfter time.Duration
}

// Server implements RouterService.
type Server struct {
	routerv1.UnimplementedRouterServiceServer
	table    *routing.Table
	down     Downstream
	lab      *lab.Lab
	limits   Limits
	inflight chan struct{}
	log      *slog.Logger
	// lastDegradedLog (unix nanos) rate-limits the degraded-mode warning.
	lastDegradedLog atomic.Int64
}

// NewServer returns a router within limits that runs experiments with lb.
func NewServer(table *routing.Table, down Downstream, lb *lab.Lab, limits Limits, log *slog.Logger) *Server {
	s := &Server{table: table, down: down, lab: lb, limits: limits, log: log}
	if limits.MaxInflight > 0 {
		s.inflight = make(chan struct{}, limits.MaxInflight)
	}
	return s
}

// LabDomains lists the table's domains as the lab sees them (lab.Options.Experiments).
func LabDomains(t *routing.Table) func() map[string]lab.Domain {
	return func() map[string]lab.Domain {
		out := map[string]lab.Domain{}
		for name, d := range t.Snapshot().Domains {
			out[name] = LabDomain(d)
		}
		return out
	}
}

// LabDomain is what the lab needs of a routing domain.
func LabDomain(d *routing.Domain) lab.Domain {
	return lab.Domain{Production: d.ProductionVersion(), Exp: d.Experiment, ExpRaw: d.ExperimentRaw, Healthy: d.Healthy}
}

// scored is one version's ranking of the candidates, priced by the auction.
type scored struct {
	version string
	pctrs   []float64
	auction *auctionv1.RunAuctionResponse
}

// Rank implements RouterService.
func (s *Server) Rank(ctx context.Context, req *routerv1.RankRequest) (*routerv1.RankResponse, error) {
	tm := timing{start: time.Now()}
	if err := validate(req); err != nil {
		return nil, err
	}
	if s.inflight != nil {
		select {
		case s.inflight <- struct{}{}:
			defer func() { <-s.inflight }()
		default:
			return nil, status.Errorf(codes.ResourceExhausted, "router overloaded: %d requests in flight; retry with backoff", cap(s.inflight))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.limits.Budget)
	defer cancel()
	// One ID for the whole request, by grpcx's rule: the request's own, else
	// the one the first edge minted (in the context), else a new one (a call
	// in process, from the library, that brought none).
	reqID := req.GetRequestId()
	if reqID == "" {
		reqID = logging.RequestID(ctx)
	}
	if reqID == "" {
		reqID = logging.NewRequestID()
	}
	ctx = logging.WithRequestID(ctx, reqID)

	d, ok := s.table.Snapshot().Domains[req.GetDomain()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "domain %q is not known", req.GetDomain())
	}
	prod := d.ProductionVersion()
	if prod == "" {
		return nil, status.Errorf(codes.Unavailable, "domain %q has no production version: set %s%s", d.Name, routing.ConfigPrefix, d.Name)
	}
	if !d.Healthy(prod) {
		return nil, status.Errorf(codes.Unavailable, "domain %q: no healthy instance of production version %q", d.Name, prod)
	}
	a := s.lab.Assign(d.Name, LabDomain(d), req.GetUserId(), reqID)

	t := time.Now()
	feats, degraded, err := s.featuresOrDefaults(ctx, req)
	tm.features += time.Since(t)
	if err != nil {
		return nil, err
	}
	sreq := scoreRequest(feats)
	var calls []lab.Call
	rank := func(version string) (scored, error) {
		start := time.Now()
		pctrs, err := s.score(ctx, d.Name, version, sreq, len(req.GetCandidates()))
		took := time.Since(start)
		tm.ranker += took
		calls = append(calls, lab.Call{Version: version, Latency: took, Failed: err != nil})
		if err != nil {
			return scored{}, err
		}
		start = time.Now()
		auction, err := s.auction(ctx, req, pctrs)
		tm.auction += time.Since(start)
		return scored{version: version, pctrs: pctrs, auction: auction}, err
	}
	// An experiment's version that fails falls back to production for this
	// request, and says so.
	fallback := func(err error) (scored, error) {
		calls[len(calls)-1].Fallback = true
		a.Fallback = fmt.Sprintf("version %q failed: %s", calls[len(calls)-1].Version, status.Convert(err).Message())
		a.Strategy, a.Version, a.Other, a.Group = lab.Production, prod, "", "fallback"
		return rank(prod)
	}

	var results []*routerv1.Result
	var main scored
	if a.Strategy == lab.Interleaved {
		ra, errA := rank(a.Version)
		var rb scored
		var errB error
		if errA == nil {
			rb, errB = rank(a.Other)
		}
		switch {
		case errA != nil:
			main, err = fallback(errA)
		case errB != nil:
			main, err = fallback(errB)
		default:
			main = ra
			results = interleave(req, reqID, ra, rb)
		}
	} else {
		main, err = rank(a.Version)
		if err != nil && a.Version != prod && ctx.Err() == nil {
			main, err = fallback(err)
		}
	}
	if err != nil {
		return nil, err
	}
	if results == nil {
		results = priced(req, reqID, main)
	}
	resp := &routerv1.RankResponse{
		RequestId: reqID, Domain: d.Name, ModelVersion: a.Version, AuctionType: main.auction.GetAuctionType(), Results: results,
		Assignment: &routerv1.Assignment{
			Strategy: strategies[a.Strategy], Version: a.Version, OtherVersion: a.Other, Group: a.Group, Propensity: a.Propensity,
			FallbackReason: a.Fallback, Experiment: a.Experiment, Shadowed: len(a.Shadow) > 0,
		},
		Degraded: degraded != "", DegradedReason: degraded,
	}
	served := lab.Served{Domain: d.Name, UserID: req.GetUserId(), RequestID: reqID, A: a, Calls: calls}
	for _, r := range results {
		served.Results = append(served.Results, lab.ServedResult{ImpressionID: r.GetImpressionId(), Slot: int(r.GetSlot()), Price: r.GetPriceMicros(), Version: r.GetVersion()})
	}
	s.lab.Record(served)
	if len(a.Shadow) > 0 && a.Strategy != lab.Interleaved {
		s.lab.Shadow(d.Name, a.Shadow, sreq, main.pctrs, int(req.GetSlots()))
	}
	// Best effort: a caller that is not a gRPC server stream (a test, the
	// in-process client) has nowhere to put the header.
	_ = grpc.SetHeader(ctx, metadata.Pairs(ServerTimingHeader, tm.String()))
	return resp, nil
}

// ServerTimingHeader is the response metadata in which Rank says where its
// time went, in the form of HTTP's Server-Timing (ms): the downstream calls
// as the router saw them (hop included), and the total from the start of
// the handler. total - features - ranker - auction is the router's own
// overhead. The gateway passes it on as the Server-Timing HTTP header.
const ServerTimingHeader = "server-timing"

// timing adds up the time of one Rank call's downstream calls.
type timing struct {
	start                     time.Time
	features, ranker, auction time.Duration
}

func (t timing) String() string {
	ms := func(d time.Duration) string { return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 3, 64) }
	return "features;dur=" + ms(t.features) + ", ranker;dur=" + ms(t.ranker) + ", auction;dur=" + ms(t.auction) + ", total;dur=" + ms(time.Since(t.start))
}

var strategies = map[string]routerv1.Strategy{
	lab.Production:  routerv1.Strategy_STRATEGY_PRODUCTION,
	lab.Canary:      routerv1.Strategy_STRATEGY_CANARY,
	lab.AB:          routerv1.Strategy_STRATEGY_AB,
	lab.Bandit:      routerv1.Strategy_STRATEGY_BANDIT,
	lab.Interleaved: routerv1.Strategy_STRATEGY_INTERLEAVED,
}

// priced turns one version's auction into results.
func priced(req *routerv1.RankRequest, reqID string, sc scored) []*routerv1.Result {
	pctrOf := make(map[string]float64, len(sc.pctrs))
	for i, c := range req.GetCandidates() {
		pctrOf[c.GetAdId()] = sc.pctrs[i]
	}
	allocs := sc.auction.GetAllocations()
	out := make([]*routerv1.Result, len(allocs))
	for i, a := range allocs {
		out[i] = result(reqID, a, a.GetSlot(), pctrOf[a.GetAdId()], sc.version)
	}
	return out
}

func result(reqID string, a *auctionv1.Allocation, slot int32, pctr float64, version string) *routerv1.Result {
	return &routerv1.Result{
		AdId: a.GetAdId(), Slot: slot, Pctr: pctr, PriceMicros: a.GetPriceMicros(),
		ImpressionId: ImpressionID(reqID, a.GetAdId(), slot),
		Ecpm:         a.GetEcpm(), RunnerUpEcpm: a.GetRunnerUpEcpm(), ReserveMicros: a.GetReserveMicros(), Version: version,
	}
}

// interleave merges A's and B's priced rankings by team draft; each ad keeps
// its team's pCTR and price. The coin of each round hashes the request ID.
func interleave(req *routerv1.RankRequest, reqID string, a, b scored) []*routerv1.Result {
	list := func(sc scored) []lab.Ranked {
		out := make([]lab.Ranked, len(sc.auction.GetAllocations()))
		for i, al := range sc.auction.GetAllocations() {
			out[i] = lab.Ranked{AdID: al.GetAdId(), Item: al}
		}
		return out
	}
	pctr := func(sc scored, id string) float64 {
		for i, c := range req.GetCandidates() {
			if c.GetAdId() == id {
				return sc.pctrs[i]
			}
		}
		return 0
	}
	picks := lab.TeamDraft(list(a), list(b), int(req.GetSlots()), func(round int) bool {
		h := sha256.Sum256([]byte(reqID + "/coin/" + strconv.Itoa(round)))
		return h[0]&1 == 1
	})
	out := make([]*routerv1.Result, len(picks))
	for i, p := range picks {
		team := a
		if p.Team == 1 {
			team = b
		}
		out[i] = result(reqID, p.Item.(*auctionv1.Allocation), int32(i+1), pctr(team, p.AdID), team.version)
	}
	return out
}

// ImpressionID identifies one shown ad; it is a pure function of the request
// ID, the ad and the slot, so identical requests get identical answers.
func ImpressionID(requestID, adID string, slot int32) string {
	h := sha256.New()
	h.Write([]byte(requestID))
	h.Write([]byte{0})
	h.Write([]byte(adID))
	h.Write([]byte{0})
	h.Write([]byte(strconv.Itoa(int(slot))))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

var deviceNames = map[routerv1.Device]string{
	routerv1.Device_DEVICE_MOBILE:  "mobile",
	routerv1.Device_DEVICE_DESKTOP: "desktop",
	routerv1.Device_DEVICE_TABLET:  "tablet",
}

// featuresOrDefaults asks featuresvc within FeaturesTimeout. When it is down
// or too slow, the candidates are ranked from default features (every
// feature missing: the models' own defaults) and the reason is returned.
func (s *Server) featuresOrDefaults(ctx context.Context, req *routerv1.RankRequest) (*featuresv1.GetFeaturesResponse, string, error) {
	fctx := ctx
	if t := s.limits.FeaturesTimeout; t > 0 {
		var cancel context.CancelFunc
		fctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	feats, err := s.features(fctx, req)
	if err == nil {
		return feats, "", nil
	}
	if ctx.Err() != nil {
		return nil, "", err
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
	default:
		return nil, "", err
	}
	// Once a second at most: an outage must not flood the log.
	if now := time.Now().UnixNano(); now-s.lastDegradedLog.Load() > int64(time.Second) {
		s.lastDegradedLog.Store(now)
		s.log.WarnContext(ctx, "features unavailable; ranking from default features", "error", status.Convert(err).Message())
	}
	n := len(req.GetCandidates())
	defaults := &featuresv1.GetFeaturesResponse{Ads: make([]*featuresv1.AdFeatures, n), AdFeatures: &featuresv1.FeatureTable{Rows: int32(n)}}
	for i, c := range req.GetCandidates() {
		defaults.Ads[i] = &featuresv1.AdFeatures{AdId: c.GetAdId()}
	}
	return defaults, "features unavailable (" + status.Convert(err).Message() + "): ranked from default features", nil
}

func (s *Server) features(ctx context.Context, req *routerv1.RankRequest) (*featuresv1.GetFeaturesResponse, error) {
	c, err := s.down.Features()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "features: %v", err)
	}
	ids := make([]string, len(req.GetCandidates()))
	for i, cand := range req.GetCandidates() {
		ids[i] = cand.GetAdId()
	}
	rc := req.GetContext()
	resp, err := c.GetFeatures(ctx, &featuresv1.GetFeaturesRequest{
		UserId: req.GetUserId(),
		AdIds:  ids,
		Context: &featuresv1.RequestContext{
			Timestamp: rc.GetTimestamp(),
			Device:    deviceNames[rc.GetDevice()],
			Country:   rc.GetCountry(),
			Query:     rc.GetQuery(),
		},
	})
	if err != nil {
		return nil, downstreamError(ctx, "features", err)
	}
	if len(resp.GetAds()) != len(ids) || int(resp.GetAdFeatures().GetRows()) != len(ids) {
		return nil, status.Errorf(codes.Internal, "features returned %d ads and %d rows for %d", len(resp.GetAds()), resp.GetAdFeatures().GetRows(), len(ids))
	}
	return resp, nil
}

// scoreRequest passes featuresvc's tables to the rankers as they came: no
// copy, no re-encoding by name. The ranker checks their shape.
func scoreRequest(feats *featuresv1.GetFeaturesResponse) *rankerv1.ScoreRequest {
	return &rankerv1.ScoreRequest{Shared: feats.GetShared(), Candidates: feats.GetAdFeatures()}
}

func (s *Server) score(ctx context.Context, domain, version string, req *rankerv1.ScoreRequest, n int) ([]float64, error) {
	c, err := s.down.Ranker(domain, version)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "ranker %s/%s: %v", domain, version, err)
	}
	resp, err := s.hedged(ctx, c, req)
	if err != nil {
		return nil, downstreamError(ctx, fmt.Sprintf("ranker %s/%s", domain, version), err)
	}
	if len(resp.GetScores()) != n {
		return nil, status.Errorf(codes.Internal, "ranker %s/%s returned %d scores for %d candidates", domain, version, len(resp.GetScores()), n)
	}
	return resp.GetScores(), nil
}

// hedged calls Score, and once more if the first call has not answered
// within HedgeAfter: a slow instance then costs HedgeAfter, not its delay.
// The two calls share one grpcx.Attempts, so the balancer sends the hedge
// to another instance than the first call's. The first success wins; the
// other call is cancelled. Scoring has no side effects, so a duplicate call
// is safe.
func (s *Server) hedged(ctx context.Context, c rankerv1.RankerServiceClient, req *rankerv1.ScoreRequest) (*rankerv1.ScoreResponse, error) {
	if s.limits.HedgeAfter <= 0 {
		return c.Score(ctx, req)
	}
	ctx, cancel := context.WithCancel(grpcx.WithAttempts(ctx, &grpcx.Attempts{}))
	defer cancel() // stops the loser
	type answer struct {
		resp *rankerv1.ScoreResponse
		err  error
	}
	answers := make(chan answer, 2) // both senders can finish without a reader
	call := func() {
		resp, err := c.Score(ctx, req)
		answers <- answer{resp, err}
	}
	go call()
	timer := time.NewTimer(s.limits.HedgeAfter)
	defer timer.Stop()
	pending := 1
	var last error
	for {
		select {
		case a := <-answers:
			if a.err == nil {
				return a.resp, nil
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

// Scorer adapts Downstream for the lab's shadow calls.
type Scorer struct{ Down Downstream }

// Score implements lab.Scorer.
func (s Scorer) Score(ctx context.Context, domain, version string, req *rankerv1.ScoreRequest) ([]float64, error) {
	c, err := s.Down.Ranker(domain, version)
	if err != nil {
		return nil, err
	}
	resp, err := c.Score(ctx, req)
	return resp.GetScores(), err
}

func (s *Server) auction(ctx context.Context, req *routerv1.RankRequest, pctrs []float64) (*auctionv1.RunAuctionResponse, error) {
	c, err := s.down.Auction()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "auction: %v", err)
	}
	ar := &auctionv1.RunAuctionRequest{Domain: req.GetDomain(), Slots: req.GetSlots(), ReserveMicros: req.GetReserveMicros(), Bids: make([]*auctionv1.Bid, len(pctrs))}
	for i, cand := range req.GetCandidates() {
		ar.Bids[i] = &auctionv1.Bid{AdId: cand.GetAdId(), AdvertiserId: cand.GetAdvertiserId(), BidMicros: cand.GetBidMicros(), Pctr: pctrs[i], Quality: cand.GetQuality()}
	}
	resp, err := c.RunAuction(ctx, ar)
	if err != nil {
		return nil, downstreamError(ctx, "auction", err)
	}
	return resp, nil
}

// downstreamError maps a failed downstream call to the caller's status: our
// own deadline or the caller's cancellation pass through; a downstream that
// is down or overloaded is UNAVAILABLE; anything else (a downstream
// INVALID_ARGUMENT included) is our fault, INTERNAL.
func downstreamError(ctx context.Context, what string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			return status.Errorf(codes.DeadlineExceeded, "%s: deadline exceeded", what)
		}
		return status.Errorf(codes.Canceled, "%s: canceled", what)
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unavailable, codes.ResourceExhausted, codes.DeadlineExceeded:
		return status.Errorf(st.Code(), "%s: %s", what, st.Message())
	default:
		return status.Errorf(codes.Internal, "%s: %s: %s", what, st.Code(), st.Message())
	}
}

// ListDomains implements RouterService.
func (s *Server) ListDomains(context.Context, *routerv1.ListDomainsRequest) (*routerv1.ListDomainsResponse, error) {
	snap := s.table.Snapshot()
	resp := &routerv1.ListDomainsResponse{}
	for _, d := range snap.Sorted() {
		di := &routerv1.DomainInfo{Domain: d.Name, ConfigError: d.ConfigError}
		di.ProductionVersion = d.ProductionVersion()
		if d.Config != nil {
			di.ConfigLoadedAt = timestamppb.New(d.LoadedAt)
		}
		for _, name := range slices.Sorted(maps.Keys(d.Versions)) {
			v := d.Versions[name]
			di.Versions = append(di.Versions, &routerv1.VersionInfo{
				Version: v.Name, HealthyInstances: int32(v.Healthy), TotalInstances: int32(v.Total), ModelSha256: v.SHA256,
			})
		}
		resp.Domains = append(resp.Domains, di)
	}
	return resp, nil
}
