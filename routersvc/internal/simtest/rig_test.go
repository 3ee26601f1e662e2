package simtest

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/grpcx"
	"github.com/adrank/adrank/routersvc/internal/app"
	"github.com/adrank/adrank/routersvc/internal/core"
	"github.com/adrank/adrank/routersvc/internal/downstream"
	"github.com/adrank/adrank/routersvc/internal/lab"
	"github.com/adrank/adrank/routersvc/internal/routing"
	"github.com/adrank/adrank/routersvc/internal/store"
	"github.com/adrank/adrank/sim"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// rig is a router with its experiments, served over bufconn, in front of the
// real feature, ranker and auction code running in-process.
//
// The lab's schedules do not run on the wall clock here: its clock moves
// only when a test advances it, and bandit allocations and canary states are
// recomputed only when a test calls refresh. So a test's outcome does not
// depend on how fast the machine runs it.
type rig struct {
	t      *testing.T
	client routerv1.RouterServiceClient
	table  *routing.Table
	pipe   *downstream.Local
	lab    *lab.Lab
	world  *world.World
	clock  *clock

	mu   sync.Mutex
	exps map[string][]byte
}

type rigOptions struct {
	store  store.Store // nil: a bbolt file in a temporary folder
	window time.Duration
	// versions are feed's versions and their model files; feed/v1 is
	// production.
	versions map[string]string
	// shadowQueue bounds the shadow queue (0: the default).
	shadowQueue int
}

var worldOnce = sync.OnceValues(func() (*world.World, error) { return world.New(world.DefaultConfig()) })

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	w, err := worldOnce()
	if err != nil {
		t.Fatal(err)
	}
	if o.versions == nil {
		o.versions = map[string]string{"v1": "feed/v1", "v2": "feed/v2"}
	}
	r := &rig{t: t, world: w, pipe: downstream.NewLocal(w, quiet), exps: map[string][]byte{}, clock: &clock{now: time.Now()}}
	for v, m := range o.versions {
		f, err := model.Load("../../../models/" + m + ".json")
		if err != nil {
			t.Fatal(err)
		}
		r.pipe.AddRanker("feed", v, f)
	}
	r.table = routing.NewTable(quiet, nil)
	r.table.SetRankers(r.pipe.Instances())
	r.table.SetConfigs(map[string][]byte{"feed": []byte(`{"production": "v1"}`)})
	r.table.SetExperiments(nil)
	st := o.store
	if st == nil {
		if st, err = store.OpenBolt(filepath.Join(t.TempDir(), "state.db")); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
	}
	router := app.New(app.Parts{
		Table: r.table, Clients: r.pipe, Store: st, Log: quiet, Limits: core.Limits{Budget: 5 * time.Second},
		Lab: lab.Options{
			Window:  o.window,
			Refresh: -1, Now: r.clock.Now, // only refresh recomputes
			ShadowQueue: o.shadowQueue, ShadowWorkers: 1, ShadowTimeout: time.Hour, // never cut short here
			SetExperiment: func(_ context.Context, domain string, doc []byte) error {
				r.experiment(domain, string(doc))
				return nil
			},
		},
	})
	r.lab = router.Lab
	ctx, cancel := context.WithCancel(context.Background())
	labDone := make(chan struct{})
	go func() { _ = router.Run(ctx); close(labDone) }()

	lis := bufconn.Listen(1 << 20)
	srv, _ := grpcx.NewServer(quiet)
	routerv1.RegisterRouterServiceServer(srv, router.GRPC)
	go func() { _ = srv.Serve(lis) }()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	r.client = routerv1.NewRouterServiceClient(cc)
	t.Cleanup(func() {
		cc.Close()
		srv.Stop()
		cancel()
		<-labDone
	})
	return r
}

// experiment puts a domain's experiment document in force, as a KV update
// would, and fails the test if it is rejected.
func (r *rig) experiment(domain, doc string) {
	r.mu.Lock()
	r.exps[domain] = []byte(doc)
	exps := maps.Clone(r.exps)
	r.mu.Unlock()
	r.table.SetExperiments(exps)
	if e := r.table.Snapshot().Domains[domain].ExperimentError; e != "" {
		r.t.Fatalf("experiment rejected: %s", e)
	}
}

// refresh writes what is recorded, then has the lab recompute bandit
// allocations and step or guard canaries, as its periodic refresh would.
func (r *rig) refresh() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.lab.Flush(ctx); err != nil {
		r.t.Fatal(err)
	}
	r.lab.Refresh(ctx)
}

// clock is the lab's clock in the rig: it moves only when advanced.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// report flushes recorded impressions and returns the domain's report.
func (r *rig) report(domain string) *routerv1.GetExperimentReportResponse {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.lab.Flush(ctx); err != nil {
		r.t.Fatal(err)
	}
	rep, err := r.client.GetExperimentReport(ctx, &routerv1.GetExperimentReportRequest{Domain: domain})
	if err != nil {
		r.t.Fatal(err)
	}
	return rep
}

func (r *rig) run(cfg sim.Config) *sim.Result {
	r.t.Helper()
	if cfg.Domain == "" {
		cfg.Domain = "feed"
	}
	res, err := sim.Run(context.Background(), r.client, r.world, cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	if res.Errors > 0 || res.Rejected > 0 {
		r.t.Fatalf("simulation: %d errors, %d rejected events", res.Errors, res.Rejected)
	}
	return res
}
