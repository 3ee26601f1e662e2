package downstream_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/types/known/timestamppb"

	auctioninproc "github.com/adrank/adrank/auctionsvc/inproc"
	featuresinproc "github.com/adrank/adrank/featuresvc/inproc"
	auctionv1 "github.com/adrank/adrank/gen/adrank/auction/v1"
	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	rankerv1 "github.com/adrank/adrank/gen/adrank/ranker/v1"
	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/consultest"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/service"
	rankerinproc "github.com/adrank/adrank/rankersvc/inproc"
	"github.com/adrank/adrank/routersvc/internal/core"
	"github.com/adrank/adrank/routersvc/internal/downstream"
)

// The acceptance suite of the core's downstream interfaces. Every test runs
// against both implementations: gRPC clients that find the services in a
// real Consul agent (the microservices), and the same services' code called
// in process (ML as one service, the library). Each compares what an
// implementation returns with the service's own code called directly, and
// the rankers' test does so for every model file, in each model format.

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

const modelsDir = "../../../models"

// auctionConfigs are given to every auction, whichever the implementation.
var auctionConfigs = api.KVPairs{{Key: auctioninproc.ConfigPrefix + "stories", Value: []byte(`{"type": "vcg", "reserve_micros": 500}`)}}

type impl struct {
	name string
	down core.Downstream
}

var worldOnce = sync.OnceValues(func() (*world.World, error) { return world.New(world.DefaultConfig()) })

// fixture is the world, the model files and both implementations.
type fixture struct {
	w      *world.World
	models map[string]*model.File // domain/version
	impls  []impl
}

func setup(t *testing.T) *fixture {
	t.Helper()
	w, err := worldOnce()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{w: w, models: map[string]*model.File{}}
	paths, err := filepath.Glob(filepath.Join(modelsDir, "*", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if strings.HasSuffix(p, model.SpecSuffix) {
			continue
		}
		m, err := model.Load(p)
		if err != nil {
			t.Fatal(err)
		}
		f.models[filepath.Base(filepath.Dir(p))+"/"+strings.TrimSuffix(filepath.Base(p), ".json")] = m
	}

	local := downstream.NewLocal(w, quiet)
	if _, err := local.LoadModels(modelsDir); err != nil {
		t.Fatal(err)
	}
	local.SetAuctionConfigs(auctionConfigs)
	f.impls = append(f.impls, impl{"in-process", downstream.Adapt(local)}, impl{"gRPC+Consul", f.consul(t)})
	return f
}

// consul starts featuresvc, one ranker per model file and auctionsvc as gRPC
// servers registered in a real Consul agent, and returns the Consul-found
// downstream once it sees them all.
func (f *fixture) consul(t *testing.T) core.Downstream {
	t.Helper()
	agent := consultest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	start := func(o service.Options, register func(*service.Server)) {
		o.Listen, o.ConsulAddr, o.Grace, o.Log = "127.0.0.1:0", agent.Addr, time.Second, quiet
		srv, err := service.New(o)
		if err != nil {
			t.Fatal(err)
		}
		register(srv)
		wg.Add(1)
		go func() { defer wg.Done(); _ = srv.Run(ctx) }()
	}
	start(service.Options{Name: consulx.FeatureService}, func(s *service.Server) {
		featuresv1.RegisterFeatureServiceServer(s.GRPC(), featuresinproc.New(f.w))
	})
	auction := auctioninproc.New(quiet)
	auction.SetConfigs(auctionConfigs)
	start(service.Options{Name: consulx.AuctionService}, func(s *service.Server) {
		auctionv1.RegisterAuctionServiceServer(s.GRPC(), auction)
	})
	for dv, m := range f.models {
		domain, version, _ := strings.Cut(dv, "/")
		start(service.Options{Name: consulx.RankerService, Meta: map[string]string{
			consulx.MetaDomain: domain, consulx.MetaVersion: version, consulx.MetaModelSHA256: m.SHA256, consulx.MetaModelFormat: m.Format(),
		}}, func(s *service.Server) {
			rankerv1.RegisterRankerServiceServer(s.GRPC(), rankerinproc.New(domain, version, m))
		})
	}
	disc := downstream.NewConsul(agent.Client, quiet)
	wg.Add(1)
	go func() { defer wg.Done(); _ = disc.Run(ctx) }()
	down := downstream.Adapt(disc)

	// Ready when every ranker is healthy in the table and each service
	// answers through it.
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := ready(ctx, disc, down, f.models)
		if err == nil {
			return down
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Consul-found services are not ready after 60 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ready(ctx context.Context, disc *downstream.Consul, down core.Downstream, models map[string]*model.File) error {
	snap := disc.Table.Snapshot()
	for dv := range models {
		domain, version, _ := strings.Cut(dv, "/")
		d, ok := snap.Domains[domain]
		if !ok || !d.Healthy(version) {
			return core.Errorf(core.KindUnavailable, "%s not healthy yet", dv)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := down.Features.Features(cctx, core.FeatureQuery{UserID: "u1", AdIDs: []string{"ad1"}}); err != nil {
		return err
	}
	for dv := range models {
		domain, version, _ := strings.Cut(dv, "/")
		if _, err := down.Rankers.Score(cctx, domain, version, core.FeatureSet{Candidates: core.Table{Rows: 1}}); err != nil {
			return err
		}
	}
	_, err := down.Auction.Auction(cctx, core.AuctionRequest{Domain: "feed", Slots: 1, Bids: []core.Bid{{AdID: "a", BidMicros: 1, Pctr: 0.1}}})
	return err
}

// TestAcceptance runs the suite against both implementations, set up once.
func TestAcceptance(t *testing.T) {
	f := setup(t)
	for _, tc := range []struct {
		name string
		test func(*testing.T, *fixture)
	}{
		{"features", testFeatures},
		{"rankers, every model", testRankersEveryModel},
		{"rankers reject bad tables", testRankersRejectBadTables},
		{"auction", testAuction},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, f) })
	}
}

func call(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// queries are feature queries of known and unknown users and ads, with and
// without a page context.
func queries(w *world.World) []core.FeatureQuery {
	var feed []string
	for _, a := range w.Ads("feed")[:20] {
		feed = append(feed, a.ID)
	}
	at := time.Date(2026, 11, 26, 20, 30, 0, 0, time.UTC)
	return []core.FeatureQuery{
		{UserID: w.Users()[0].ID, AdIDs: feed},
		{UserID: w.Users()[1].ID, AdIDs: feed[:3], Context: core.PageContext{Timestamp: at, Device: core.DeviceMobile, Country: "DE", Query: "shoes"}},
		{UserID: "nobody", AdIDs: []string{feed[0], "no-such-ad"}, Context: core.PageContext{Device: core.DeviceTablet}},
	}
}

// nanEqual compares feature values with NaN (missing) equal to NaN.
var nanEqual = cmpopts.EquateNaNs()

// Features returns, for every query, the table featuresvc's own code
// returns: the same columns, one row per ad in query order, bit for bit.
func testFeatures(t *testing.T, f *fixture) {
	direct := featuresinproc.New(f.w)
	for _, im := range f.impls {
		t.Run(im.name, func(t *testing.T) {
			for i, q := range queries(f.w) {
				got, err := im.down.Features.Features(call(t), q)
				if err != nil {
					t.Fatalf("query %d: %v", i, err)
				}
				want := directFeatures(t, direct, q)
				if got.Candidates.Rows != len(q.AdIDs) || got.Shared.Rows != 1 || len(got.Candidates.Values) != len(q.AdIDs)*len(got.Candidates.Names) {
					t.Errorf("query %d: shape shared %d rows, candidates %d rows x %d names (%d values), want %d candidate rows",
						i, got.Shared.Rows, got.Candidates.Rows, len(got.Candidates.Names), len(got.Candidates.Values), len(q.AdIDs))
				}
				if diff := cmp.Diff(want, got, nanEqual); diff != "" {
					t.Errorf("query %d differs from featuresvc's own answer (-want +got):\n%s", i, diff)
				}
			}
			// The batch call answers each query as its own call does.
			qs := queries(f.w)
			sets, err := im.down.Features.(core.BatchFeatures).FeaturesBatch(call(t), qs)
			if err != nil || len(sets) != len(qs) {
				t.Fatalf("batch: %d sets for %d queries (%v)", len(sets), len(qs), err)
			}
			for i, q := range qs {
				if diff := cmp.Diff(directFeatures(t, direct, q), sets[i], nanEqual); diff != "" {
					t.Errorf("batch, query %d (-want +got):\n%s", i, diff)
				}
			}
		})
	}
}

func directFeatures(t *testing.T, s featuresv1.FeatureServiceServer, q core.FeatureQuery) core.FeatureSet {
	t.Helper()
	pc := &featuresv1.RequestContext{Device: q.Context.Device.String(), Country: q.Context.Country, Query: q.Context.Query}
	if !q.Context.Timestamp.IsZero() {
		pc.Timestamp = timestamppb.New(q.Context.Timestamp)
	}
	resp, err := s.GetFeatures(context.Background(), &featuresv1.GetFeaturesRequest{UserId: q.UserID, AdIds: q.AdIDs, Context: pc})
	if err != nil {
		t.Fatal(err)
	}
	tab := func(x *featuresv1.FeatureTable) core.Table {
		return core.Table{Names: x.GetNames(), Values: x.GetValues(), Rows: int(x.GetRows())}
	}
	return core.FeatureSet{Shared: tab(resp.GetShared()), Candidates: tab(resp.GetAdFeatures())}
}

// Every model file, in each format (XGBoost JSON, adrank's logistic
// regression), scores through either implementation exactly as the model
// package scores the same features, and a version nobody serves is
// KindUnavailable.
func testRankersEveryModel(t *testing.T, f *fixture) {
	formats := map[string]bool{}
	for _, m := range f.models {
		formats[m.Format()] = true
	}
	if len(formats) < 2 {
		t.Fatalf("model formats under %s: %v, want at least two", modelsDir, formats)
	}
	for _, im := range f.impls {
		t.Run(im.name, func(t *testing.T) {
			for _, q := range queries(f.w) {
				feats, err := im.down.Features.Features(call(t), q)
				if err != nil {
					t.Fatal(err)
				}
				for dv, m := range f.models {
					domain, version, _ := strings.Cut(dv, "/")
					got, err := im.down.Rankers.Score(call(t), domain, version, feats)
					if err != nil {
						t.Fatalf("%s (%s): %v", dv, m.Format(), err)
					}
					want := model.NewScorer(m.Model).ScoreTable(
						model.Table{Names: feats.Shared.Names, Values: feats.Shared.Values, Rows: feats.Shared.Rows},
						model.Table{Names: feats.Candidates.Names, Values: feats.Candidates.Values, Rows: feats.Candidates.Rows})
					if !cmp.Equal(want, got) {
						t.Errorf("%s (%s): scores %v, want the model's own %v", dv, m.Format(), got, want)
					}
					for i, p := range got {
						if !(p > 0 && p < 1) {
							t.Errorf("%s: pCTR %v of candidate %d outside (0, 1)", dv, p, i)
						}
					}
				}
			}
			_, err := im.down.Rankers.Score(call(t), "feed", "v404", core.FeatureSet{Candidates: core.Table{Rows: 1}})
			if core.KindOf(err) != core.KindUnavailable {
				t.Errorf("unknown version: %v (kind %d), want KindUnavailable", err, core.KindOf(err))
			}
		})
	}
}

// Rankers reject malformed feature tables as the service does: to the
// core that is its own fault, KindInternal, with the ranker's reason in the
// error's detail (for logs; callers see a summary).
func testRankersRejectBadTables(t *testing.T, f *fixture) {
	for _, im := range f.impls {
		t.Run(im.name, func(t *testing.T) {
			bad := core.FeatureSet{Candidates: core.Table{Names: []string{"x"}, Values: []float64{1, 2, 3}, Rows: 2}}
			_, err := im.down.Rankers.Score(call(t), "feed", "v1", bad)
			if core.KindOf(err) != core.KindInternal || !strings.Contains(core.Detail(err), "candidates") {
				t.Errorf("3 values for 2 rows x 1 column: %v (kind %d), want KindInternal naming candidates", err, core.KindOf(err))
			}
		})
	}
}

// The auction allocates and prices as auctionsvc's own code does, with the
// domain's config (stories: VCG with a reserve).
func testAuction(t *testing.T, f *fixture) {
	direct := auctioninproc.New(quiet)
	direct.SetConfigs(auctionConfigs)
	reqs := []core.AuctionRequest{
		{Domain: "feed", Slots: 2, Bids: []core.Bid{{AdID: "a", AdvertiserID: "x", BidMicros: 1000, Pctr: 0.02, Quality: 1}, {AdID: "b", AdvertiserID: "y", BidMicros: 900, Pctr: 0.05}, {AdID: "c", AdvertiserID: "z", BidMicros: 5000, Pctr: 0.001}}},
		{Domain: "stories", Slots: 3, ReserveMicros: 100, Bids: []core.Bid{{AdID: "a", BidMicros: 1000, Pctr: 0.02}, {AdID: "b", BidMicros: 20000, Pctr: 0.05}, {AdID: "c", BidMicros: 400, Pctr: 0.5}}},
	}
	for _, im := range f.impls {
		t.Run(im.name, func(t *testing.T) {
			for i, r := range reqs {
				got, err := im.down.Auction.Auction(call(t), r)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				want := directAuction(t, direct, r)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("request %d differs from auctionsvc's own answer (-want +got):\n%s", i, diff)
				}
				if len(got.Allocations) == 0 || len(got.Allocations) > r.Slots {
					t.Errorf("request %d: %d allocations for %d slots", i, len(got.Allocations), r.Slots)
				}
			}
			batch, err := im.down.Auction.(core.BatchAuctioneer).AuctionBatch(call(t), reqs)
			if err != nil || len(batch) != len(reqs) {
				t.Fatalf("batch: %d auctions for %d requests (%v)", len(batch), len(reqs), err)
			}
			for i, r := range reqs {
				if diff := cmp.Diff(directAuction(t, direct, r), batch[i]); diff != "" {
					t.Errorf("batch, request %d (-want +got):\n%s", i, diff)
				}
			}
			_, err = im.down.Auction.Auction(call(t), core.AuctionRequest{Domain: "feed", Slots: 0, Bids: []core.Bid{{AdID: "a", BidMicros: 1, Pctr: 0.1}}})
			if core.KindOf(err) != core.KindInternal || !strings.Contains(err.Error(), "InvalidArgument") {
				t.Errorf("0 slots: %v (kind %d), want KindInternal keeping the auction's InvalidArgument", err, core.KindOf(err))
			}
		})
	}
}

func directAuction(t *testing.T, s auctionv1.AuctionServiceServer, r core.AuctionRequest) core.Auction {
	t.Helper()
	ar := &auctionv1.RunAuctionRequest{Domain: r.Domain, Slots: int32(r.Slots), ReserveMicros: r.ReserveMicros}
	for _, b := range r.Bids {
		ar.Bids = append(ar.Bids, &auctionv1.Bid{AdId: b.AdID, AdvertiserId: b.AdvertiserID, BidMicros: b.BidMicros, Pctr: b.Pctr, Quality: b.Quality})
	}
	resp, err := s.RunAuction(context.Background(), ar)
	if err != nil {
		t.Fatal(err)
	}
	out := core.Auction{Type: resp.GetAuctionType(), Allocations: []core.Allocation{}}
	for _, a := range resp.GetAllocations() {
		out.Allocations = append(out.Allocations, core.Allocation{AdID: a.GetAdId(), Slot: int(a.GetSlot()), PriceMicros: a.GetPriceMicros(),
			Ecpm: a.GetEcpm(), RunnerUpEcpm: a.GetRunnerUpEcpm(), ReserveMicros: a.GetReserveMicros()})
	}
	return out
}
