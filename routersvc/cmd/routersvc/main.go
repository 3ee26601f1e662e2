// Command routersvc composes the ranking pipeline per request: features, the
// domain's ranker version(s) chosen by its experiment, then the shared
// auction. It finds every service through Consul, registers itself as
// adrank-router, and keeps experiment state in a bbolt file (default) or
// Redis (--redis-addr, for several replicas).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/service"
	"github.com/adrank/adrank/routersvc/internal/lab"
	"github.com/adrank/adrank/routersvc/internal/router"
	"github.com/adrank/adrank/routersvc/internal/store"
)

type options struct {
	service.Flags
	budget    time.Duration
	stateFile string
	redisAddr string
	window    time.Duration
}

func main() {
	var o options
	fs := flag.NewFlagSet("routersvc", flag.ExitOnError)
	o.Register(fs, "127.0.0.1:9090")
	fs.DurationVar(&o.budget, "budget", 250*time.Millisecond, "default time budget of one Rank call (a sooner caller deadline wins)")
	fs.StringVar(&o.stateFile, "state-file", ".data/router.db", "experiment state file (bbolt), when --redis-addr is empty")
	fs.StringVar(&o.redisAddr, "redis-addr", "", "Redis host:port for experiment state shared by several router replicas")
	fs.DurationVar(&o.window, "attribution-window", 24*time.Hour, "how long an impression can be joined to click and conversion events")
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

func run(ctx context.Context, o options) error {
	if o.budget <= 0 || o.window <= 0 {
		return fmt.Errorf("--budget %v and --attribution-window %v: want > 0", o.budget, o.window)
	}
	log := o.Logger("routersvc")
	client, err := consulx.NewClient(o.ConsulAddr)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, o)
	if err != nil {
		return err
	}
	defer st.Close()
	disc := router.NewConsul(client, log)
	lb := lab.New(lab.Options{
		Store: st, Log: log, Window: o.window, Scorer: router.Scorer{Down: disc},
		Experiments:   router.LabDomains(disc.Table),
		SetExperiment: disc.SetExperiment,
	})
	srv, err := service.New(o.Options(consulx.RouterService, log))
	if err != nil {
		return err
	}
	routerv1.RegisterRouterServiceServer(srv.GRPC(), router.NewServer(disc.Table, disc, lb, o.budget, log))

	// The lab outlives the server's drain, so that the impressions of the
	// last requests are written: it stops when the server has stopped.
	labCtx, stopLab := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLab()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return disc.Run(gctx) })
	labDone := make(chan error, 1)
	go func() { labDone <- lb.Run(labCtx) }()
	g.Go(func() error {
		defer stopLab()
		// Ready only once the catalog and the domain configs have been read.
		select {
		case <-disc.Table.Synced():
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
