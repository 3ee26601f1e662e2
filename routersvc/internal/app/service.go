package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	auctioninproc "github.com/adrank/adrank/auctionsvc/inproc"
	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/auth"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/idsig"
	"github.com/adrank/adrank/platform/service"
	"github.com/adrank/adrank/platform/snapshot"
	"github.com/adrank/adrank/platform/tracing"
	"github.com/adrank/adrank/routersvc/internal/activity"
	"github.com/adrank/adrank/routersvc/internal/core"
	"github.com/adrank/adrank/routersvc/internal/downstream"
	"github.com/adrank/adrank/routersvc/internal/lab"
	"github.com/adrank/adrank/routersvc/internal/routing"
	"github.com/adrank/adrank/routersvc/internal/snapshots"
	"github.com/adrank/adrank/routersvc/internal/store"
	"github.com/adrank/adrank/routersvc/internal/stream"
	"github.com/adrank/adrank/routersvc/internal/telemetry"
)

// Config is routersvc's command line.
type Config struct {
	service.Flags
	Limits    core.Limits
	StateFile string
	RedisAddr string
	// FlushEvery, Window, ShadowQueue and ShadowTimeout go to the lab.
	FlushEvery    time.Duration
	Window        time.Duration
	ShadowQueue   int
	ShadowTimeout time.Duration
	// MLService serves features, every model under Models and the auction
	// in process (World's data) instead of calling the services.
	MLService bool
	Models    string
	World     world.Config
	// Stream: with KafkaBrokers, the router also runs the stream worker.
	KafkaBrokers   string
	StreamGroup    string
	StreamID       string
	StreamBatch    int
	StreamLinger   time.Duration
	ResultTTL      time.Duration
	UsePrecomputed bool
	// Snapshots is the batch snapshot store (a directory or redis://...);
	// empty: no batch mode and no snapshot fallback.
	Snapshots       string
	StalenessSample float64
	// Tokens is the bearer tokens file; empty: admin and event calls are
	// open.
	Tokens string
	// ImpressionKey is the impression ID keys file; empty: a key made at
	// start, which IDs from before a restart or from another router fail.
	ImpressionKey string
	// AcceptUnsignedUntil: until then, events may name unsigned impression
	// IDs (those handed out before the upgrade to signed ones).
	AcceptUnsignedUntil string
}

// RegisterFlags defines routersvc's flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.World = world.DefaultConfig()
	c.Register(fs, "127.0.0.1:9090")
	fs.DurationVar(&c.Limits.Budget, "budget", 250*time.Millisecond, "default time budget of one Rank call (a sooner caller deadline wins)")
	fs.DurationVar(&c.Limits.FeaturesTimeout, "features-timeout", 100*time.Millisecond, "features call timeout; past it Rank answers from default features, flagged degraded")
	fs.IntVar(&c.Limits.MaxInflight, "max-inflight", 512, "concurrent Rank calls before the excess is refused with RESOURCE_EXHAUSTED (0: no bound)")
	fs.DurationVar(&c.Limits.HedgeAfter, "hedge-after", 25*time.Millisecond, "send a second ranker call when the first has not answered in this time (0: no hedging)")
	fs.StringVar(&c.StateFile, "state-file", ".data/router.db", "experiment state file (bbolt), when --redis-addr is empty")
	fs.StringVar(&c.RedisAddr, "redis-addr", "", "Redis host:port for experiment state shared by several router replicas")
	fs.DurationVar(&c.FlushEvery, "flush-every", 100*time.Millisecond, "how often served impressions and counters are written to the state store, as one transaction")
	fs.DurationVar(&c.Window, "attribution-window", 24*time.Hour, "how long an impression can be joined to click and conversion events")
	fs.IntVar(&c.ShadowQueue, "shadow-queue", 1024, "shadow calls waiting for a worker; past it they are dropped and counted, never waited for")
	fs.DurationVar(&c.ShadowTimeout, "shadow-timeout", time.Second, "time limit of one shadow call")
	fs.BoolVar(&c.MLService, "ml-service", false, "ML as one service: serve features, every model and the auction in this process instead of calling featuresvc, rankers and auctionsvc")
	fs.StringVar(&c.Models, "models", "models", "with --ml-service: serve every model file <dir>/<domain>/<version>.json")
	c.World.RegisterFlags(fs) // with --ml-service
	fs.StringVar(&c.KafkaBrokers, "kafka-brokers", "", "Kafka seed brokers host:port,...: also run the stream worker (rank requests and events from Kafka, answers to Kafka, exactly once)")
	fs.StringVar(&c.StreamGroup, "stream-group", "adrank-stream", "the stream workers' consumer group")
	fs.StringVar(&c.StreamID, "stream-id", "", "this worker's Kafka transactional ID, unique among running workers and kept across restarts (default: adrank-stream-<listen address>)")
	fs.IntVar(&c.StreamBatch, "stream-batch", 64, "records per poll: one transaction, one micro-batch")
	fs.DurationVar(&c.StreamLinger, "stream-linger", 10*time.Millisecond, "how long the broker may wait to fill a poll (at least 10ms)")
	fs.DurationVar(&c.ResultTTL, "result-ttl", 10*time.Minute, "how long a streamed answer is kept for Rank to return (precomputed)")
	fs.StringVar(&c.Tokens, "tokens", "", `bearer tokens file ("admin TOKEN" and "events TOKEN" lines): canary promotion and rollback need an admin token, events an events token (empty: open; make run makes one)`)
	fs.StringVar(&c.ImpressionKey, "impression-key", "", "impression ID signing keys file (hex lines, 32+ bytes; the first signs, all verify), the same for every router sharing experiment state (empty: a key made at start, so events for impressions served before a restart are refused; make run makes one)")
	fs.StringVar(&c.AcceptUnsignedUntil, "accept-unsigned-until", "", "RFC 3339 time until which events may name unsigned impression IDs: set it to the upgrade to signed IDs plus the attribution window (empty: never)")
	fs.StringVar(&c.Snapshots, "snapshots", ".data/snapshots", "batch snapshot store (adrankctl batch run --store): a directory or redis://HOST:PORT[/DB]; serves batch-mode domains and the fallback of a failed ranker (empty: none)")
	fs.Float64Var(&c.StalenessSample, "staleness-sample", 0.1, "share of real-time requests whose pCTRs are compared with the batch snapshot's (the report's staleness)")
	fs.BoolVar(&c.UsePrecomputed, "use-precomputed", false, "Rank returns a fresh streamed answer to the same request (on with --kafka-brokers; use it on routers sharing the workers' Redis)")
}

func (c *Config) openStore(ctx context.Context) (store.Store, error) {
	if c.RedisAddr != "" {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return store.OpenRedis(cctx, c.RedisAddr, "adrank:")
	}
	if err := os.MkdirAll(filepath.Dir(c.StateFile), 0o755); err != nil {
		return nil, err
	}
	return store.OpenBolt(c.StateFile)
}

// Run serves RouterService until ctx ends, then drains: the server stops
// first, then the lab writes the impressions of the last requests.
func Run(ctx context.Context, c Config) error {
	if c.KafkaBrokers != "" && (c.StreamBatch <= 0 || c.StreamBatch > core.MaxEvents || c.StreamLinger < 10*time.Millisecond || c.ResultTTL <= 0) {
		return fmt.Errorf("--stream-batch %d, --stream-linger %v, --result-ttl %v: want 1 to %d, >= 10ms, > 0", c.StreamBatch, c.StreamLinger, c.ResultTTL, core.MaxEvents)
	}
	if c.Limits.Budget <= 0 || c.Window <= 0 || c.ShadowQueue <= 0 || c.ShadowTimeout <= 0 {
		return fmt.Errorf("--budget %v, --attribution-window %v, --shadow-queue %d and --shadow-timeout %v: want > 0",
			c.Limits.Budget, c.Window, c.ShadowQueue, c.ShadowTimeout)
	}
	log := c.Setup("routersvc")
	client, err := consulx.NewClient(c.ConsulAddr)
	if err != nil {
		return err
	}
	st, err := c.openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	ids := idsig.Random()
	if c.ImpressionKey != "" {
		if ids, err = idsig.Load(c.ImpressionKey); err != nil {
			return err
		}
	} else if c.RedisAddr != "" || c.KafkaBrokers != "" || c.UsePrecomputed {
		return errors.New("--impression-key is required with --redis-addr, --kafka-brokers or --use-precomputed: routers sharing state must sign impression IDs with the same keys")
	} else {
		log.Warn("no --impression-key: impression IDs are signed with a key made now; events for impressions served before a restart will be refused")
	}
	if c.AcceptUnsignedUntil != "" {
		until, err := time.Parse(time.RFC3339, c.AcceptUnsignedUntil)
		if err != nil {
			return fmt.Errorf("--accept-unsigned-until: %w", err)
		}
		ids.AcceptUnsignedUntil(until)
	}
	p := Parts{Store: st, Log: log, Limits: c.Limits, IDs: ids, Lab: lab.Options{
		Window: c.Window, FlushEvery: c.FlushEvery, ShadowQueue: c.ShadowQueue, ShadowTimeout: c.ShadowTimeout,
		SetExperiment: downstream.PutExperiment(client),
	}}
	opts := c.Options(consulx.RouterService, log)
	if opts.Tracing, err = tracing.New(ctx, "routersvc"); err != nil {
		return err
	}
	var tm *telemetry.Metrics
	dial := []grpc.DialOption{opts.Tracing.DialOption()}
	if opts.Metrics != nil {
		tm = telemetry.New(opts.Metrics.Reg)
		p.Lab.Observe = tm
		dial = append(dial, opts.Metrics.DialOptions()...)
	}
	var watch func(context.Context) error
	auctions := auctioninproc.New(log) // checks auction configs, for ListDomains
	if c.MLService {
		local, table, served, err := Local(c.World, c.Models, log)
		if err != nil {
			return err
		}
		log.Info("ML as one service: serving every model in-process", "models", served)
		p.Clients, p.Table = local, table
		watch = func(ctx context.Context) error {
			return downstream.WatchConfigs(ctx, client, log, table, auctions, local.SetAuctionConfigs)
		}
	} else {
		tls, err := c.TLS.DialOption()
		if err != nil {
			return err
		}
		disc := downstream.NewConsul(client, log, append(dial, tls)...)
		p.Clients, p.Table, watch = disc, disc.Table, disc.Run
		// What is served and clicked feeds featuresvc's real-time counters.
		p.Activity = activity.New(disc.FeatureInstances, activityEvery, activityTimeout, log)
		if c.Tokens != "" { // featuresvc takes the same tokens file: counting needs the events role
			tok, err := auth.Load(c.Tokens)
			if err != nil {
				return err
			}
			if secret, ok := tok.Secret(auth.Events); ok {
				p.Activity.Token(secret)
			}
		}
		auctions = disc.Auctions
	}
	r := New(p)
	var streamLag func() []telemetry.Lag // set once the stream worker exists
	if tm != nil {
		r.Core.OnOverload(tm.Overloaded)
		opts.Metrics.Reg.MustRegister(telemetry.NewCollector(telemetry.State{Domains: telemetry.EngineState(r.Core), Lag: func() []telemetry.Lag {
			if streamLag == nil {
				return nil
			}
			return streamLag()
		}}))
	}
	if c.Tokens != "" {
		tok, err := auth.Load(c.Tokens)
		if err != nil {
			return err
		}
		need := map[string]auth.Role{
			routerv1.RouterService_PromoteCanary_FullMethodName:         auth.Admin,
			routerv1.RouterService_RollbackCanary_FullMethodName:        auth.Admin,
			routerv1.RouterService_EvaluateOffPolicy_FullMethodName:     auth.Admin,
			routerv1.RouterService_ExportTrainingData_FullMethodName:    auth.Admin,
			routerv1.RouterService_ReportEvents_FullMethodName:          auth.Events,
			routerv1.RouterService_ReportEdgeImpressions_FullMethodName: auth.Events,
		}
		opts.ServerOptions = append(opts.ServerOptions, tok.ServerOptions(need)...)
	} else {
		log.Warn("no --tokens: canary promotion and rollback, off-policy evaluation, training data export and events are open to any caller")
	}
	srv, err := service.New(opts)
	if err != nil {
		return err
	}
	routerv1.RegisterRouterServiceServer(srv.GRPC(), r.GRPC)
	if c.KafkaBrokers != "" || c.UsePrecomputed {
		r.Core.UsePrecomputed(st)
	}
	r.Core.UseAuctionConfigs(downstream.AuctionConfigs(client))
	r.Core.UseAuctionErrors(auctions.ConfigError)
	if c.Snapshots != "" {
		snaps, err := snapshot.Open(ctx, c.Snapshots)
		if err != nil {
			return err
		}
		defer snaps.Close()
		sv := snapshots.New(snaps, func() []string { return slices.Collect(maps.Keys(p.Table.Snapshot().Domains)) },
			snapshots.Options{Sample: c.StalenessSample}, log)
		r.Core.UseSnapshots(sv)
		watch = alongside(watch, sv.Run)
	}
	if c.KafkaBrokers != "" {
		id := c.StreamID
		if id == "" {
			// Unique per host and port, and the same after a restart there.
			host, _ := os.Hostname()
			_, port, _ := net.SplitHostPort(srv.Addr())
			id = "adrank-stream-" + host + "-" + port
		}
		w := stream.New(r.Core, stream.Options{
			Brokers: strings.Split(c.KafkaBrokers, ","), Group: c.StreamGroup, TransactionalID: id, Topics: stream.DefaultTopics(),
			Batch: c.StreamBatch, Linger: c.StreamLinger, Record: r.Lab.RecordOnce, ResultTTL: c.ResultTTL, Log: log,
		})
		streamLag = func() []telemetry.Lag {
			var out []telemetry.Lag
			for _, l := range w.Lag() {
				out = append(out, telemetry.Lag{Topic: l.Topic, Records: l.Lag})
			}
			return out
		}
		r.GRPC.SetStreamLag(func() []*routerv1.StreamLag {
			var out []*routerv1.StreamLag
			for _, l := range w.Lag() {
				out = append(out, &routerv1.StreamLag{Topic: l.Topic, Group: c.StreamGroup, Lag: l.Lag})
			}
			return out
		})
		watch = alongside(watch, func(ctx context.Context) error {
			// Consume once the catalog and configs are read, as the server serves.
			select {
			case <-p.Table.Synced():
			case <-ctx.Done():
				return nil
			}
			return w.Run(ctx)
		})
	}
	return serve(srv.WatchContext(ctx), r, p.Table, srv, watch)
}

// How often the router sends impressions to featuresvc's counters (a click
// goes at once), and the bound on each call.
const (
	activityEvery   = 100 * time.Millisecond
	activityTimeout = time.Second
)

// alongside runs b with a, until both end (one's error ends the other).
func alongside(a, b func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		g, ctx := errgroup.WithContext(ctx)
		g.Go(func() error { return a(ctx) })
		g.Go(func() error { return b(ctx) })
		return g.Wait()
	}
}

// serve runs the watch, the lab and the server. On shutdown the server
// drains first, with the downstream connections still open (the watch owns
// them); then the lab writes what it recorded and the activity sink sends
// the last of it; then the watch stops and closes the connections.
func serve(ctx context.Context, r *Router, table *routing.Table, srv *service.Server, watch func(context.Context) error) error {
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx)) // keeps ctx's values
	defer stopWatch()
	labCtx, stopLab := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLab()
	srvCtx, stopSrv := context.WithCancel(ctx)
	defer stopSrv()
	watchDone, labDone, srvDone := make(chan error, 1), make(chan error, 1), make(chan error, 1)
	go func() { watchDone <- watch(watchCtx) }()
	go func() { labDone <- r.Run(labCtx) }()
	go func() {
		// Ready only once the catalog and the domain configs have been read.
		select {
		case <-table.Synced():
		case <-srvCtx.Done():
			srvDone <- nil
			return
		}
		srvDone <- srv.Run(srvCtx)
	}()
	var srvErr, watchErr error
	watchEnded := false
	select {
	case srvErr = <-srvDone:
	case watchErr = <-watchDone: // the watch failed: stop serving
		watchEnded = true
		stopSrv()
		srvErr = <-srvDone
	}
	stopLab()
	labErr := <-labDone
	stopWatch()
	if !watchEnded {
		watchErr = <-watchDone
	}
	for _, err := range []error{watchErr, srvErr, labErr} {
		if err != nil {
			return err
		}
	}
	return nil
}
