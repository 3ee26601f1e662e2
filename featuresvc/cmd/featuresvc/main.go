// Command featuresvc is adrank's feature store, registered in Consul as
// adrank-feature. It serves the entities of a feature spec (--feature-spec;
// default the synthetic world's) from a bbolt file (--store), loaded with
// snapshots (adrankctl features load) and online writes (PutFeatures). With
// --demo it loads the seeded synthetic world into every entity that has no
// snapshot yet, through the same validation as anyone's files.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/adrank/adrank/featuresvc/internal/demo"
	"github.com/adrank/adrank/featuresvc/internal/ingest"
	"github.com/adrank/adrank/featuresvc/internal/store"
	"github.com/adrank/adrank/featuresvc/internal/storeserver"
	"github.com/adrank/adrank/featuresvc/internal/table"
	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	"github.com/adrank/adrank/ml/featurespec"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/auth"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/service"
)

type options struct {
	service.Flags
	world                  world.Config
	spec                   string
	store                  string
	demo                   bool
	maxBytes               int64
	maxRows                int
	maxKeys                int
	kafka                  ingest.Options
	brokers                string
	redisAddr, redisPrefix string
	tokens                 string
}

func main() {
	var o options
	o.world = world.DefaultConfig()
	fs := flag.NewFlagSet("featuresvc", flag.ExitOnError)
	o.Register(fs, "127.0.0.1:0")
	o.world.RegisterFlags(fs)
	fs.StringVar(&o.spec, "feature-spec", "", "feature spec file (JSON); default: the synthetic world's spec")
	fs.StringVar(&o.store, "store", "", "the store's bbolt file; default: a temporary file, removed at exit")
	fs.StringVar(&o.tokens, "tokens", "", "bearer tokens file (lines: ROLE TOKEN), as routersvc's: loading snapshots and online writes need the admin role, counting activity the events role; empty: open to any caller")
	fs.StringVar(&o.redisAddr, "redis-addr", "", "keep the store in Redis instead, shared by several featuresvc replicas (host:port)")
	fs.StringVar(&o.redisPrefix, "redis-prefix", "adrank:features:", "prefix of the store's Redis keys")
	fs.BoolVar(&o.demo, "demo", true, "load the synthetic world (--seed, --users, --ads-per-domain) into every entity without a snapshot")
	fs.Int64Var(&o.maxBytes, "max-file-bytes", 2<<30, "largest snapshot file accepted")
	fs.IntVar(&o.maxRows, "max-rows", table.DefaultLimits.MaxRows, "most rows a snapshot file may hold")
	host, _ := os.Hostname()
	fs.StringVar(&o.brokers, "kafka-brokers", "", "Kafka brokers (comma-separated): apply online feature writes from --features-topic; empty: none")
	fs.StringVar(&o.kafka.Topic, "features-topic", "adrank.features", "topic of online feature writes (PutFeaturesRequest records)")
	fs.StringVar(&o.kafka.Group, "kafka-group", "adrank-features-"+host, "consumer group; each featuresvc with its own store needs its own group, to get every write")
	fs.StringVar(&o.kafka.DeadLetter, "dead-letter-topic", "adrank.deadletter", "where refused feature writes go, with the reason in their headers")
	fs.IntVar(&o.maxKeys, "max-counter-keys", storeserver.DefaultMaxCounterKeys, "most keys each entity's real-time counters hold (activity for more is dropped and counted)")
	_ = fs.Parse(os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "featuresvc:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	log := o.Setup("featuresvc")
	spec, err := featurespec.Load(o.spec)
	if err != nil {
		return err
	}
	var st store.Store
	tmpDir := ""
	switch {
	case o.redisAddr != "":
		if st, err = store.OpenRedis(ctx, o.redisAddr, o.redisPrefix, spec, time.Now); err != nil {
			return err
		}
		if tmpDir, err = os.MkdirTemp("", "featuresvc-"); err != nil { // uploads are spooled here
			return err
		}
		defer os.RemoveAll(tmpDir)
	default:
		path := o.store
		if path == "" {
			if tmpDir, err = os.MkdirTemp("", "featuresvc-"); err != nil {
				return err
			}
			defer os.RemoveAll(tmpDir)
			path = filepath.Join(tmpDir, "features.db")
		}
		tmpDir = filepath.Dir(path)
		if st, err = store.OpenBolt(path, spec, time.Now); err != nil {
			return err
		}
	}
	defer st.Close()
	fsrv := storeserver.New(st, storeserver.Options{
		TmpDir: tmpDir, MaxFileBytes: o.maxBytes, Limits: table.Limits{MaxRows: o.maxRows}, Now: time.Now,
		MaxCounterKeys: o.maxKeys,
	})
	if o.demo {
		if err := loadDemo(ctx, o.world, st, fsrv, log.Info); err != nil {
			return err
		}
	}
	opts := o.Options(consulx.FeatureService, log)
	if o.tokens != "" {
		tok, err := auth.Load(o.tokens)
		if err != nil {
			return err
		}
		need := map[string]auth.Role{
			featuresv1.FeatureService_LoadSnapshot_FullMethodName:   auth.Admin,
			featuresv1.FeatureService_PutFeatures_FullMethodName:    auth.Admin,
			featuresv1.FeatureService_RecordActivity_FullMethodName: auth.Events,
		}
		opts.ServerOptions = append(opts.ServerOptions, tok.ServerOptions(need)...)
	} else {
		log.Warn("no --tokens: snapshot loads, online writes and activity counts are open to any caller")
	}
	srv, err := service.New(opts)
	if err != nil {
		return err
	}
	featuresv1.RegisterFeatureServiceServer(srv.GRPC(), fsrv)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(ctx) })
	g.Go(func() error { return fsrv.RunSweeper(ctx, time.Minute) })
	if o.brokers != "" {
		k := o.kafka
		k.Brokers, k.Log = strings.Split(o.brokers, ","), log
		g.Go(func() error { return ingest.New(k, fsrv.PutFeatures).Run(ctx) })
	}
	return g.Wait()
}

// loadDemo loads the synthetic world into each entity without a snapshot.
func loadDemo(ctx context.Context, cfg world.Config, st store.Store, fsrv *storeserver.Server, info func(string, ...any)) error {
	sts, err := st.Status(ctx)
	if err != nil {
		return err
	}
	var w *world.World
	for _, s := range sts {
		if s.Snapshot != nil {
			continue
		}
		if w == nil {
			var err error
			if w, err = world.New(cfg); err != nil {
				return err
			}
		}
		data, err := demo.Parquet(w, st.Spec().Entity(s.Entity))
		if err != nil {
			return fmt.Errorf("--demo: %w", err)
		}
		m, err := fsrv.LoadBytes(ctx, s.Entity, "parquet", data, time.Time{}, fmt.Sprintf("demo world, seed %d", cfg.Seed))
		if err != nil {
			return fmt.Errorf("--demo: %w", err)
		}
		info("demo snapshot loaded", "entity", s.Entity, "rows", m.Rows, "bytes", len(data))
	}
	return nil
}
