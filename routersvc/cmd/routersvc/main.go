// Command routersvc composes the ranking pipeline per request: features, the
// domain's production ranker version, then the shared auction. It finds every
// service through Consul and registers itself as adrank-router.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/service"
	"github.com/adrank/adrank/routersvc/internal/router"
)

type options struct {
	service.Flags
	budget time.Duration
}

func main() {
	var o options
	fs := flag.NewFlagSet("routersvc", flag.ExitOnError)
	o.Register(fs, "127.0.0.1:9090")
	fs.DurationVar(&o.budget, "budget", 250*time.Millisecond, "default time budget of one Rank call (a sooner caller deadline wins)")
	_ = fs.Parse(os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "routersvc:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	if o.budget <= 0 {
		return fmt.Errorf("--budget %v: want > 0", o.budget)
	}
	log := o.Logger("routersvc")
	client, err := consulx.NewClient(o.ConsulAddr)
	if err != nil {
		return err
	}
	disc := router.NewConsul(client, log)
	srv, err := service.New(o.Options(consulx.RouterService, log))
	if err != nil {
		return err
	}
	routerv1.RegisterRouterServiceServer(srv.GRPC(), router.NewServer(disc.Table, disc, o.budget, log))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return disc.Run(gctx) })
	g.Go(func() error {
		// Ready only once the catalog and the domain configs have been read.
		select {
		case <-disc.Table.Synced():
		case <-gctx.Done():
			return nil
		}
		return srv.Run(gctx)
	})
	return g.Wait()
}
