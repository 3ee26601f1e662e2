package router

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/testing/protocmp"

	auctionv1 "github.com/adrank/adrank/gen/adrank/auction/v1"
	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	rankerv1 "github.com/adrank/adrank/gen/adrank/ranker/v1"
	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/discovery"
	"github.com/adrank/adrank/platform/grpcx"
	"github.com/adrank/adrank/platform/idsig"
	"github.com/adrank/adrank/routersvc/internal/core"
	"github.com/adrank/adrank/routersvc/internal/downstream"
	"github.com/adrank/adrank/routersvc/internal/lab"
	"github.com/adrank/adrank/routersvc/internal/routing"
	"github.com/adrank/adrank/routersvc/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeDown answers like the real services would, from fixed data: features
// are empty, the ranker scores candidate i with 0.01*(i+1), the auction ranks
// by bid x pCTR and charges the bid. Errors can be injected per service.
type fakeDown struct {
	featuresErr, rankerErr, auctionErr error
	scores                             int // number of scores the ranker returns; 0 = one per candidate
}

func (f *fakeDown) Features() (featuresv1.FeatureServiceClient, error) {
	return fakeFeatures{f: f}, nil
}
func (f *fakeDown) Auction() (auctionv1.AuctionServiceClient, error) { return fakeAuction{f}, nil }
func (f *fakeDown) Ranker(string, string) (rankerv1.RankerServiceClient, error) {
	return fakeRanker{f}, nil
}

// fakeFeatures answers the router's calls; the store's other RPCs are not the router's.
type fakeFeatures struct {
	featuresv1.FeatureServiceClient
	f *fakeDown
}

func (x fakeFeatures) BatchGetFeatures(ctx context.Context, in *featuresv1.BatchGetFeaturesRequest, _ ...grpc.CallOption) (*featuresv1.BatchGetFeaturesResponse, error) {
	out := &featuresv1.BatchGetFeaturesResponse{}
	for _, r := range in.GetRequests() {
		one, err := x.GetFeatures(ctx, r)
		if err != nil {
			return nil, err
		}
		out.Responses = append(out.Responses, one)
	}
	return out, nil
}

func (x fakeFeatures) GetFeatures(_ context.Context, in *featuresv1.GetFeaturesRequest, _ ...grpc.CallOption) (*featuresv1.GetFeaturesResponse, error) {
	if x.f.featuresErr != nil {
		return nil, x.f.featuresErr
	}
	out := &featuresv1.GetFeaturesResponse{AdFeatures: &featuresv1.FeatureTable{Rows: int32(len(in.GetAdIds()))}}
	for _, id := range in.GetAdIds() {
		out.Ads = append(out.Ads, &featuresv1.AdFeatures{AdId: id})
	}
	return out, nil
}

type fakeRanker struct{ f *fakeDown }

func (x fakeRanker) Score(_ context.Context, in *rankerv1.ScoreRequest, _ ...grpc.CallOption) (*rankerv1.ScoreResponse, error) {
	if x.f.rankerErr != nil {
		return nil, x.f.rankerErr
	}
	n := int(in.GetCandidates().GetRows())
	if x.f.scores > 0 {
		n = x.f.scores
	}
	out := &rankerv1.ScoreResponse{}
	for i := range n {
		out.Scores = append(out.Scores, 0.01*float64(i+1))
	}
	return out, nil
}

func (fakeRanker) GetModelInfo(context.Context, *rankerv1.GetModelInfoRequest, ...grpc.CallOption) (*rankerv1.GetModelInfoResponse, error) {
	return &rankerv1.GetModelInfoResponse{}, nil
}

type fakeAuction struct{ f *fakeDown }

func (x fakeAuction) BatchRunAuction(ctx context.Context, in *auctionv1.BatchRunAuctionRequest, _ ...grpc.CallOption) (*auctionv1.BatchRunAuctionResponse, error) {
	out := &auctionv1.BatchRunAuctionResponse{}
	for _, r := range in.GetRequests() {
		one, err := x.RunAuction(ctx, r)
		if err != nil {
			return nil, err
		}
		out.Responses = append(out.Responses, one)
	}
	return out, nil
}

func (x fakeAuction) RunAuction(_ context.Context, in *auctionv1.RunAuctionRequest, _ ...grpc.CallOption) (*auctionv1.RunAuctionResponse, error) {
	if x.f.auctionErr != nil {
		return nil, x.f.auctionErr
	}
	bids := in.GetBids()
	best := bids[0]
	for _, b := range bids {
		if float64(b.GetBidMicros())*b.GetPctr() > float64(best.GetBidMicros())*best.GetPctr() {
			best = b
		}
	}
	return &auctionv1.RunAuctionResponse{Allocations: []*auctionv1.Allocation{{AdId: best.GetAdId(), Slot: 1, PriceMicros: best.GetBidMicros()}}}, nil
}

// serve runs a router over bufconn with the given domains and returns the
// generated client.
func serve(t *testing.T, down downstream.Clients, rankers []discovery.Instance, configs map[string]string) routerv1.RouterServiceClient {
	t.Helper()
	return serveWith(t, down, rankers, configs, core.Limits{Budget: time.Second, FeaturesTimeout: 200 * time.Millisecond, MaxInflight: 2})
}

func serveWith(t *testing.T, down downstream.Clients, rankers []discovery.Instance, configs map[string]string, limits core.Limits, opts ...func(*core.Engine)) routerv1.RouterServiceClient {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	table := routing.NewTable(log, nil)
	table.SetRankers(rankers)
	raw := map[string][]byte{}
	for k, v := range configs {
		raw[k] = []byte(v)
	}
	table.SetConfigs(raw)
	table.SetExperiments(nil)
	lis := bufconn.Listen(1 << 20)
	lb := newLab(t, log, table)
	srv, _ := grpcx.NewServer(log)
	e := core.New(table, downstream.Adapt(down), lb, limits, log)
	e.SignImpressions(testKeys)
	for _, o := range opts {
		o(e)
	}
	routerv1.RegisterRouterServiceServer(srv, NewServer(e))
	go func() { _ = srv.Serve(lis) }()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); srv.Stop() })
	return routerv1.NewRouterServiceClient(cc)
}

// testKeys sign the impression IDs of every test router, as a router started
// by app.Run signs them.
var testKeys = idsig.Random()

// newLab runs a lab over a bbolt file in a temporary folder; it verifies
// impression IDs with testKeys.
func newLab(t *testing.T, log *slog.Logger, table *routing.Table) *lab.Lab {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	lb := lab.New(lab.Options{Store: st, Log: log, Refresh: 20 * time.Millisecond, Experiments: core.LabDomains(table), Open: testKeys.Open})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = lb.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	return lb
}

func inst(domain, version string, healthy bool) discovery.Instance {
	return discovery.Instance{ID: domain + version, Addr: "x:1", Healthy: healthy,
		Meta: map[string]string{consulx.MetaDomain: domain, consulx.MetaVersion: version}}
}

func request() *routerv1.RankRequest {
	req := &routerv1.RankRequest{RequestId: "r1", UserId: "u1", Domain: "feed", Slots: 1}
	for i := range 3 {
		req.Candidates = append(req.Candidates, &routerv1.Candidate{AdId: fmt.Sprintf("ad%d", i), BidMicros: 1000})
	}
	return req
}

func TestRank(t *testing.T) {
	client := serve(t, &fakeDown{}, []discovery.Instance{inst("feed", "v1", true)}, map[string]string{"feed": `{"production": "v1"}`})
	resp, err := client.Rank(context.Background(), request())
	if err != nil {
		t.Fatal(err)
	}
	want := &routerv1.RankResponse{RequestId: "r1", Domain: "feed", ModelVersion: "v1", Results: []*routerv1.Result{
		{AdId: "ad2", Slot: 1, Pctr: 0.03, PriceMicros: 1000, ImpressionId: testKeys.Sign(core.ImpressionID("feed", "u1", "r1", "ad2", 1)), Version: "v1"},
	}, Assignment: &routerv1.Assignment{Strategy: routerv1.Strategy_STRATEGY_PRODUCTION, Version: "v1", Group: "production", Propensity: 1},
		Source: routerv1.Source_SOURCE_REALTIME}
	if diff := cmp.Diff(want, resp, protocmp.Transform()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	id := core.ImpressionID
	if id("feed", "u1", "r1", "ad2", 1) == id("feed", "u1", "r2", "ad2", 1) || id("feed", "u1", "r1", "ad2", 1) == id("feed", "u1", "r1", "ad2", 2) ||
		id("feed", "u1", "r1", "ad2", 1) == id("feed", "u2", "r1", "ad2", 1) || id("feed", "u1", "r1", "ad2", 1) == id("stories", "u1", "r1", "ad2", 1) {
		t.Error("impression ids collide")
	}
}

func TestRankErrors(t *testing.T) {
	rankers := []discovery.Instance{inst("feed", "v1", true), inst("stories", "v1", false), inst("nocfg", "v1", true)}
	configs := map[string]string{"feed": `{"production": "v1"}`, "stories": `{"production": "v1"}`}
	tests := []struct {
		name  string
		down  *fakeDown
		edit  func(*routerv1.RankRequest)
		code  codes.Code
		field string // first field violation, for INVALID_ARGUMENT
		msg   string
	}{
		{name: "missing user", edit: func(r *routerv1.RankRequest) { r.UserId = "" }, code: codes.InvalidArgument, field: "user_id"},
		{name: "slots over limit", edit: func(r *routerv1.RankRequest) { r.Slots = core.MaxSlots + 1 }, code: codes.InvalidArgument, field: "slots"},
		{name: "long request id", edit: func(r *routerv1.RankRequest) { r.RequestId = strings.Repeat("x", core.MaxIDLength+1) }, code: codes.InvalidArgument, field: "request_id"},
		{name: "long query", edit: func(r *routerv1.RankRequest) {
			r.Context = &routerv1.RequestContext{Query: strings.Repeat("q", core.MaxQueryLength+1)}
		}, code: codes.InvalidArgument, field: "context.query"},
		{name: "several violations", edit: func(r *routerv1.RankRequest) { r.UserId, r.Slots = "", 0 }, code: codes.InvalidArgument, field: "user_id", msg: "(and 1 more)"},
		// Every string: bounded, and no control or bidi characters.
		{name: "NUL in a user id", edit: func(r *routerv1.RankRequest) { r.UserId = "u\x001" }, code: codes.InvalidArgument, field: "user_id", msg: "U+0000"},
		{name: "newline in a request id", edit: func(r *routerv1.RankRequest) { r.RequestId = "r1\nforged log line" }, code: codes.InvalidArgument, field: "request_id"},
		{name: "right-to-left override in an ad id", edit: func(r *routerv1.RankRequest) { r.Candidates[1].AdId = "ad\u202e1" }, code: codes.InvalidArgument, field: "candidates[1].ad_id", msg: "U+202E"},
		{name: "C1 control in a query", edit: func(r *routerv1.RankRequest) { r.Context = &routerv1.RequestContext{Query: "shoes\u0085"} }, code: codes.InvalidArgument, field: "context.query"},
		{name: "control in a domain", edit: func(r *routerv1.RankRequest) { r.Domain = "feed\t" }, code: codes.InvalidArgument, field: "domain"},
		// Every number: bounded.
		{name: "bid over the bound", edit: func(r *routerv1.RankRequest) { r.Candidates[0].BidMicros = core.MaxBidMicros + 1 }, code: codes.InvalidArgument, field: "candidates[0].bid_micros"},
		{name: "reserve over the bound", edit: func(r *routerv1.RankRequest) { r.ReserveMicros = core.MaxBidMicros + 1 }, code: codes.InvalidArgument, field: "reserve_micros"},
		{name: "unknown domain", edit: func(r *routerv1.RankRequest) { r.Domain = "video" }, code: codes.NotFound, msg: `"video"`},
		{name: "no healthy production", edit: func(r *routerv1.RankRequest) { r.Domain = "stories" }, code: codes.Unavailable, msg: "no healthy instance"},
		{name: "no config", edit: func(r *routerv1.RankRequest) { r.Domain = "nocfg" }, code: codes.Unavailable, msg: "adrank/domains/nocfg"},
		{name: "features reject our request: our fault", down: &fakeDown{featuresErr: status.Error(codes.InvalidArgument, "bad")}, code: codes.Internal, msg: "features"},
		{name: "ranker rejects our request: our fault", down: &fakeDown{rankerErr: status.Error(codes.InvalidArgument, "bad")}, code: codes.Internal, msg: "ranker feed/v1"},
		{name: "auction overloaded", down: &fakeDown{auctionErr: status.Error(codes.ResourceExhausted, "busy")}, code: codes.ResourceExhausted, msg: "auction"},
		{name: "ranker returns too few scores", down: &fakeDown{scores: 1}, code: codes.Internal, msg: "1 scores for 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			down := tt.down
			if down == nil {
				down = &fakeDown{}
			}
			client := serve(t, down, rankers, configs)
			req := request()
			if tt.edit != nil {
				tt.edit(req)
			}
			_, err := client.Rank(context.Background(), req)
			st := status.Convert(err)
			if st.Code() != tt.code {
				t.Fatalf("code %v (%q), want %v", st.Code(), st.Message(), tt.code)
			}
			if !strings.Contains(st.Message(), tt.msg) {
				t.Errorf("message %q does not mention %q", st.Message(), tt.msg)
			}
			if tt.field != "" {
				var br *errdetails.BadRequest
				for _, d := range st.Details() {
					if b, ok := d.(*errdetails.BadRequest); ok {
						br = b
					}
				}
				if br == nil || br.GetFieldViolations()[0].GetField() != tt.field {
					t.Errorf("details %v, want first field %q", st.Details(), tt.field)
				}
			}
		})
	}
}

// The router passes the caller's deadline on when it is sooner than its own
// budget (1s here): the features call it makes is given at most the
// caller's 50 ms. (gRPC sends a deadline as time remaining, so each hop's
// deadline is at most that long after the call reached it.)
func TestRankHonoursTheBudget(t *testing.T) {
	down := &slowDown{}
	client := serve(t, down, []discovery.Instance{inst("feed", "v1", true)}, map[string]string{"feed": `{"production": "v1"}`})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := client.Rank(ctx, request())
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err %v, want DEADLINE_EXCEEDED", err)
	}
	if began, got := down.deadline(); got.IsZero() || got.Sub(began) > 50*time.Millisecond {
		t.Errorf("the features call's deadline is %v after it began, more than the caller's 50ms", got.Sub(began))
	}
}

// slowDown's features call waits for its deadline, and records it and when
// the call began.
type slowDown struct {
	fakeDown
	noBatch
	mu         sync.Mutex
	began, saw time.Time
}

func (s *slowDown) Features() (featuresv1.FeatureServiceClient, error) { return s, nil }

// noBatch is a features client without BatchGetFeatures (Rank never calls it).
// noBatch has no batch call; the store's other RPCs are not the router's.
type noBatch struct {
	featuresv1.FeatureServiceClient
}

func (noBatch) BatchGetFeatures(context.Context, *featuresv1.BatchGetFeaturesRequest, ...grpc.CallOption) (*featuresv1.BatchGetFeaturesResponse, error) {
	return nil, status.Error(codes.Unimplemented, "not in this test")
}

func (s *slowDown) deadline() (began, deadline time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.began, s.saw
}

func (s *slowDown) GetFeatures(ctx context.Context, _ *featuresv1.GetFeaturesRequest, _ ...grpc.CallOption) (*featuresv1.GetFeaturesResponse, error) {
	d, ok := ctx.Deadline()
	if !ok {
		return nil, status.Error(codes.Internal, "downstream call without a deadline")
	}
	s.mu.Lock()
	s.began, s.saw = time.Now(), d
	s.mu.Unlock()
	<-ctx.Done()
	return nil, status.FromContextError(ctx.Err()).Err()
}

// featuresvc down or too slow: Rank still answers, from default features,
// flagged as degraded; a slow one is given no more than the features
// timeout.
func TestRankDegradesWithoutFeatures(t *testing.T) {
	slow := &slowDown{}
	for name, down := range map[string]downstream.Clients{
		"down": &fakeDown{featuresErr: status.Error(codes.Unavailable, "no healthy instance")},
		"slow": slow,
	} {
		t.Run(name, func(t *testing.T) {
			client := serve(t, down, []discovery.Instance{inst("feed", "v1", true)}, map[string]string{"feed": `{"production": "v1"}`})
			resp, err := client.Rank(context.Background(), request())
			if err != nil {
				t.Fatal(err)
			}
			if !resp.GetDegraded() || !strings.Contains(resp.GetDegradedReason(), "default features") || len(resp.GetResults()) != 1 {
				t.Errorf("response %v", resp)
			}
			if down == slow {
				// The deadline was set before the call began, so it is at
				// most the timeout after.
				if began, got := slow.deadline(); got.IsZero() || got.Sub(began) > 200*time.Millisecond {
					t.Errorf("the features call's deadline is %v after it began, want the 200ms features timeout", got.Sub(began))
				}
			}
		})
	}
}

// blockedDown's features calls signal that they have started, then wait
// until released.
type blockedDown struct {
	noBatch
	fakeDown
	entered chan struct{}
	release chan struct{}
}

func (b *blockedDown) Features() (featuresv1.FeatureServiceClient, error) { return b, nil }

func (b *blockedDown) GetFeatures(ctx context.Context, in *featuresv1.GetFeaturesRequest, opts ...grpc.CallOption) (*featuresv1.GetFeaturesResponse, error) {
	b.entered <- struct{}{}
	select {
	case <-b.release:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return fakeFeatures{f: &b.fakeDown}.GetFeatures(ctx, in, opts...)
}

// Past MaxInflight concurrent calls, the excess is refused at once: with two
// calls admitted and held inside until the test lets them go, a third is
// refused (had it waited for a slot, it would have waited for good).
func TestRankRefusesOverload(t *testing.T) {
	down := &blockedDown{entered: make(chan struct{}, 2), release: make(chan struct{})}
	client := serveWith(t, down, []discovery.Instance{inst("feed", "v1", true)}, map[string]string{"feed": `{"production": "v1"}`},
		core.Limits{Budget: time.Minute, FeaturesTimeout: time.Minute, MaxInflight: 2})
	done := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := client.Rank(context.Background(), request())
			done <- err
		}()
	}
	<-down.entered
	<-down.entered
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err := client.Rank(ctx, request())
	cancel()
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("third concurrent call: %v, want RESOURCE_EXHAUSTED", err)
	}
	close(down.release)
	for range 2 {
		if err := <-done; err != nil {
			t.Errorf("admitted call: %v", err)
		}
	}
}

// twoInstances stands for a ranker version with a stuck and a fast instance
// behind round robin: calls alternate between them, and the stuck one
// answers only when its caller gives up.
type twoInstances struct {
	fakeDown
	calls atomic.Int64
}

func (d *twoInstances) Ranker(string, string) (rankerv1.RankerServiceClient, error) { return d, nil }

func (d *twoInstances) Score(ctx context.Context, in *rankerv1.ScoreRequest, _ ...grpc.CallOption) (*rankerv1.ScoreResponse, error) {
	if d.calls.Add(1)%2 == 1 {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return fakeRanker{&d.fakeDown}.Score(ctx, in)
}

func (d *twoInstances) GetModelInfo(context.Context, *rankerv1.GetModelInfoRequest, ...grpc.CallOption) (*rankerv1.GetModelInfoResponse, error) {
	return &rankerv1.GetModelInfoResponse{}, nil
}

// A stuck instance costs the hedge delay, not its own delay: hedging, every
// call is answered although half the first attempts never are; without
// hedging, those calls fail at the budget, which shows the fault is real.
func TestRankHedgesASlowInstance(t *testing.T) {
	rankers := []discovery.Instance{inst("feed", "v1", true)}
	configs := map[string]string{"feed": `{"production": "v1"}`}
	failed := func(limits core.Limits) (n int) {
		client := serveWith(t, &twoInstances{}, rankers, configs, limits)
		for range 4 {
			if _, err := client.Rank(context.Background(), request()); err != nil {
				n++
			}
		}
		return n
	}
	without := failed(core.Limits{Budget: 100 * time.Millisecond})
	with := failed(core.Limits{Budget: time.Minute, HedgeAfter: 10 * time.Millisecond})
	if without == 0 {
		t.Errorf("without hedging no call met the stuck instance")
	}
	if with != 0 {
		t.Errorf("hedging after 10ms, %d of 4 calls failed", with)
	}
}

func TestListDomains(t *testing.T) {
	client := serve(t, &fakeDown{}, []discovery.Instance{inst("feed", "v2", true), inst("feed", "v1", true), inst("feed", "v1", false)},
		map[string]string{"feed": `{"production": "v1"}`, "stories": `{"production": "v1"}`})
	resp, err := client.ListDomains(context.Background(), &routerv1.ListDomainsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := &routerv1.ListDomainsResponse{Domains: []*routerv1.DomainInfo{
		{Domain: "feed", ProductionVersion: "v1", Mode: "realtime", Versions: []*routerv1.VersionInfo{
			{Version: "v1", HealthyInstances: 1, TotalInstances: 2}, {Version: "v2", HealthyInstances: 1, TotalInstances: 1},
		}},
		{Domain: "stories", ConfigError: `production: version "v1" is not registered for domain "stories"`},
	}}
	if diff := cmp.Diff(want, resp, protocmp.Transform(), protocmp.IgnoreFields(&routerv1.DomainInfo{}, "config_loaded_at")); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// sleepyRanker scores after a fixed delay.
type sleepyRanker struct {
	fakeDown
	delay time.Duration
}

func (d *sleepyRanker) Ranker(string, string) (rankerv1.RankerServiceClient, error) { return d, nil }

func (d *sleepyRanker) Score(ctx context.Context, in *rankerv1.ScoreRequest, opts ...grpc.CallOption) (*rankerv1.ScoreResponse, error) {
	time.Sleep(d.delay)
	return fakeRanker{&d.fakeDown}.Score(ctx, in, opts...)
}

func (d *sleepyRanker) GetModelInfo(context.Context, *rankerv1.GetModelInfoRequest, ...grpc.CallOption) (*rankerv1.GetModelInfoResponse, error) {
	return &rankerv1.GetModelInfoResponse{}, nil
}

// Rank says where its time went in a Server-Timing header: the downstream
// calls as the router saw them, and its total.
func TestRankServerTiming(t *testing.T) {
	client := serve(t, &sleepyRanker{delay: 20 * time.Millisecond}, []discovery.Instance{inst("feed", "v1", true)}, map[string]string{"feed": `{"production": "v1"}`})
	var md metadata.MD
	start := time.Now()
	if _, err := client.Rank(context.Background(), request(), grpc.Header(&md)); err != nil {
		t.Fatal(err)
	}
	took := float64(time.Since(start).Microseconds()) / 1000
	v := md.Get(ServerTimingHeader)
	if len(v) != 1 {
		t.Fatalf("server-timing %v", md)
	}
	durs := map[string]float64{}
	for _, part := range strings.Split(v[0], ", ") {
		name, dur, ok := strings.Cut(part, ";dur=")
		f, err := strconv.ParseFloat(dur, 64)
		if !ok || err != nil {
			t.Fatalf("bad entry %q in %q", part, v[0])
		}
		durs[name] = f
	}
	if durs["ranker"] < 20 || durs["total"] < durs["features"]+durs["ranker"]+durs["auction"] || durs["total"] > took {
		t.Errorf("server-timing %q: want ranker ≥ 20 ms, and a total covering the parts and within the %.1f ms the caller waited", v[0], took)
	}
}

// Events: every string bounded and clean, every value bounded, so that no
// sum can overflow.
func TestReportEventsRefuses(t *testing.T) {
	client := serve(t, &fakeDown{}, []discovery.Instance{inst("feed", "v1", true)}, map[string]string{"feed": `{"production": "v1"}`})
	for _, tt := range []struct {
		ev    *routerv1.Event
		field string
	}{
		{&routerv1.Event{ImpressionId: "i\x00", Type: routerv1.EventType_EVENT_TYPE_CLICK}, "events[0].impression_id"},
		{&routerv1.Event{ImpressionId: "i", Type: routerv1.EventType_EVENT_TYPE_CLICK, EventId: "e\u2066"}, "events[0].event_id"},
		{&routerv1.Event{ImpressionId: "i", Type: routerv1.EventType_EVENT_TYPE_CONVERSION, Value: 1.7e308}, "events[0].value"},
		{&routerv1.Event{ImpressionId: "i", Type: routerv1.EventType_EVENT_TYPE_CONVERSION, Value: core.MaxConversionValue * 2}, "events[0].value"},
	} {
		_, err := client.ReportEvents(context.Background(), &routerv1.ReportEventsRequest{Events: []*routerv1.Event{tt.ev}})
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), tt.field) {
			t.Errorf("%v: %v, want InvalidArgument naming %s", tt.ev, err, tt.field)
		}
	}
}

// A downstream's own error text (resolver and transport internals) never
// reaches the caller: the caller gets what failed and how.
func TestInternalTextDoesNotLeak(t *testing.T) {
	leak := "max retries exhausted: produced zero addresses for dns:///ranker.internal:7001"
	client := serve(t, &fakeDown{rankerErr: status.Error(codes.Unavailable, leak)}, []discovery.Instance{inst("feed", "v1", true)}, map[string]string{"feed": `{"production": "v1"}`})
	_, err := client.Rank(context.Background(), request())
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || strings.Contains(st.Message(), "zero addresses") || !strings.Contains(st.Message(), "ranker feed/v1: unavailable") {
		t.Fatalf("caller saw %v %q", st.Code(), st.Message())
	}
}

// Impression IDs are signed: an event for an ID the router never handed
// out, or for an altered one, is refused and counted as forged before the
// store is asked; the real ID counts.
func TestEventsNeedSignedImpressionIDs(t *testing.T) {
	client := serve(t, &fakeDown{}, []discovery.Instance{inst("feed", "v1", true)}, map[string]string{"feed": `{"production": "v1"}`})
	ctx := context.Background()
	resp, err := client.Rank(ctx, request())
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetResults()[0].GetImpressionId()
	plain := core.ImpressionID("feed", "u1", "r1", "ad2", 1)
	altered := []byte(id)
	altered[0] ^= 1 // the plain part: the signature no longer matches
	for _, tt := range []struct {
		name, id string
		want     routerv1.EventResult
	}{
		{"unsigned", plain, routerv1.EventResult_EVENT_RESULT_REJECTED},
		{"altered", string(altered), routerv1.EventResult_EVENT_RESULT_REJECTED},
		{"another key's", idsig.Random().Sign(plain), routerv1.EventResult_EVENT_RESULT_REJECTED},
		{"never served", testKeys.Sign(core.ImpressionID("feed", "u1", "r9", "ad2", 1)), routerv1.EventResult_EVENT_RESULT_UNKNOWN_IMPRESSION},
		{"handed out", id, routerv1.EventResult_EVENT_RESULT_ACCEPTED},
	} {
		ev, err := client.ReportEvents(ctx, &routerv1.ReportEventsRequest{Events: []*routerv1.Event{{ImpressionId: tt.id, Type: routerv1.EventType_EVENT_TYPE_CLICK}}})
		if err != nil || ev.GetResults()[0] != tt.want {
			t.Errorf("%s ID %q: %v, %v; want %v", tt.name, tt.id, ev, err, tt.want)
		}
	}
	rep, err := client.GetExperimentReport(ctx, &routerv1.GetExperimentReportRequest{Domain: "feed"})
	if err != nil || rep.GetEventsForged() != 3 || rep.GetEventsRejected() != 4 {
		t.Fatalf("report: forged %v (want 3), rejected %v (want 4), %v", rep.GetEventsForged(), rep.GetEventsRejected(), err)
	}
}
