// Command routersvc composes the ranking pipeline per request: features, the
// domain's ranker version(s) chosen by its experiment, then the shared
// auction. It finds every service through Consul, registers itself as
// adrank-router, and keeps experiment state in a bbolt file (default) or
// Redis (--redis-addr, for several replicas).
//
// With --ml-service it is the seed article's "ML as one service": one
// process that serves every model instead of calling rankers. It runs
// featuresvc's world (--seed, --users, --ads-per-domain), a ranker for every
// model file under --models and the auction in-process, with no network hop
// between them. Everything else is as in the microservices: it registers in
// Consul as adrank-router, takes the domain configs, experiments and auction
// configs from Consul KV, and keeps experiment state in bbolt or, for several
// replicas, in Redis.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/service"
	"github.com/adrank/adrank/routersvc/internal/inproc"
	"github.com/adrank/adrank/routersvc/internal/lab"
	"github.com/adrank/adrank/routersvc/internal/router"
	"github.com/adrank/adrank/routersvc/internal/routing"
	"github.com/adrank/adrank/routersvc/internal/store"
)

type options struct {
	service.Flags
	budget     time.Duration
	stateFile  string
	redisAddr  string
	flushEvery time.Duration
	window     time.Duration
	mlService  bool
	world      world.Config
	// limits
	featuresTimeout time.Duration
	maxInflight     int
	hedgeAfter      time.Duration
	shadowQueue     int
	shadowTimeout   time.Duration
	models          string
}

func main() {
	o := options{world: world.DefaultConfig()}
	fs := flag.NewFlagSet("routersvc", flag.ExitOnError)
	o.Register(fs, "127.0.0.1:9090")
	fs.DurationVar(&o.budget, "budget", 250*time.Millisecond, "default time budget of one Rank call (a sooner caller deadline wins)")
	fs.StringVar(&o.stateFile, "state-file", ".data/router.db", "experiment state file (bbolt), when --redis-addr is empty")
	fs.StringVar(&o.redisAddr, "redis-addr", "", "Redis host:port for experiment state shared by several router replicas")
	fs.DurationVar(&o.flushEvery, "flush-every", 100*time.Millisecond, "how often served impressions and counters are written to the state store, as one transaction")
	fs.DurationVar(&o.window, "attribution-window", 24*time.Hour, "how long an impression can be joined to click and conversion events")
	fs.DurationVar(&o.featuresTimeout, "features-timeout", 100*time.Millisecond, "features call timeout; past it Rank answers from default features, flagged degraded")
	fs.IntVar(&o.maxInflight, "max-inflight", 512, "concurrent Rank calls before the excess is refused with RESOURCE_EXHAUSTED (0: no bound)")
	fs.DurationVar(&o.hedgeAfter, "hedge-after", 25*time.Millisecond, "send a second ranker call when the first has not answered in this time (0: no hedging)")
	fs.IntVar(&o.shadowQueue, "shadow-queue", 1024, "shadow calls waiting for a worker; past it they are dropped and counted, never waited for")
	fs.DurationVar(&o.shadowTimeout, "shadow-timeout", time.Second, "time limit of one shadow call")
	fs.BoolVar(&o.mlService, "ml-service", false, "ML as one service: serve features, every model and the auction in this process instead of calling featuresvc, rankers and auctionsvc")
	fs.StringVar(&o.models, "models", "models", "with --ml-service: serve every model file <dir>/<domain>/<version>.json")
	o.world.RegisterFlags(fs) // with --ml-service
	_ = fs.Parse(os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "routersvc:", err)
		os.Exit(1)
	}
}

func openStore(ctx context.Context, o options) (store.Store, error) {
	if o.redisAddr != "" {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return store.OpenRedis(cctx, o.redisAddr, "adrank:")
	}
	if err := os.MkdirAll(filepath.Dir(o.stateFile), 0o755); err != nil {
		return nil, err
	}
	return store.OpenBolt(o.stateFile)
}

// mlService builds the in-process pipeline and a routing table of its
// rankers.
func mlService(o options, log *slog.Logger) (*inproc.Pipeline, *routing.Table, error) {
	w, err := world.New(o.world)
	if err != nil {
		return nil, nil, err
	}
	pipe := inproc.New(w, log)
	served, err := pipe.LoadModels(o.models)
	if err != nil {
		return nil, nil, err
	}
	table := routing.NewTable(log, nil)
	table.SetRankers(pipe.Instances())
	log.Info("ML as one service: serving every model in-process", "models", served)
	return pipe, table, nil
}

func run(ctx context.Context, o options) error {
	if o.budget <= 0 || o.window <= 0 || o.shadowQueue <= 0 || o.shadowTimeout <= 0 {
		return fmt.Errorf("--budget %v, --attribution-window %v, --shadow-queue %d and --shadow-timeout %v: want > 0",
			o.budget, o.window, o.shadowQueue, o.shadowTimeout)
	}
	log := o.Setup("routersvc")
	client, err := consulx.NewClient(o.ConsulAddr)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, o)
	if err != nil {
		return err
	}
	defer st.Close()
	var (
		down   router.Downstream
		table  *routing.Table
		watch  func(context.Context) error
		setExp func(context.Context, string, []byte) error
		sopts  = o.Options(consulx.RouterService, log)
	)
	if o.mlService {
		pipe, t, err := mlService(o, log)
		if err != nil {
			return err
		}
		down, table, setExp = pipe, t, router.PutExperiment(client)
		watch = func(ctx context.Context) error {
			return router.WatchConfigs(ctx, client, log, t, pipe.SetAuctionConfigs)
		}
	} else {
		disc := router.NewConsul(client, log)
		down, table, watch, setExp = disc, disc.Table, disc.Run, disc.SetExperiment
	}
	lb := lab.New(lab.Options{
		Store: st, Log: log, Window: o.window, FlushEvery: o.flushEvery, Scorer: router.Scorer{Down: down},
		ShadowQueue: o.shadowQueue, ShadowTimeout: o.shadowTimeout,
		Experiments: router.LabDomains(table), SetExperiment: setExp,
	})
	srv, err := service.New(sopts)
	if err != nil {
		return err
	}
	limits := router.Limits{Budget: o.budget, FeaturesTimeout: o.featuresTimeout, MaxInflight: o.maxInflight, HedgeAfter: o.hedgeAfter}
	routerv1.RegisterRouterServiceServer(srv.GRPC(), router.NewServer(table, down, lb, limits, log))

	// The lab outlives the server's drain, so that the impressions of the
	// last requests are written: it stops when the server has stopped.
	labCtx, stopLab := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLab()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return watch(gctx) })
	labDone := make(chan error, 1)
	go func() { labDone <- lb.Run(labCtx) }()
	g.Go(func() error {
		defer stopLab()
		// Ready only once the catalog and the domain configs have been read.
		select {
		case <-table.Synced():
		case <-gctx.Done():
			return nil
		}
		return srv.Run(gctx)
	})
	err = g.Wait()
	stopLab()
	if lerr := <-labDone; err == nil {
		err = lerr
	}
	return err
}
