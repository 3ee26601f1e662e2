// Command auctionsvc runs the auction every domain shares, registered in
// Consul as adrank-auction. Each domain's auction type, reserve and position
// factors come from Consul KV adrank/auction/<domain>, hot-reloaded.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"

	"github.com/adrank/adrank/auctionsvc/internal/config"
	"github.com/adrank/adrank/auctionsvc/internal/server"
	auctionv1 "github.com/adrank/adrank/gen/adrank/auction/v1"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/discovery"
	"github.com/adrank/adrank/platform/service"
)

func main() {
	var o service.Flags
	fs := flag.NewFlagSet("auctionsvc", flag.ExitOnError)
	o.Register(fs, "127.0.0.1:0")
	_ = fs.Parse(os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "auctionsvc:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o service.Flags) error {
	log := o.Setup("auctionsvc")
	client, err := consulx.NewClient(o.ConsulAddr)
	if err != nil {
		return err
	}
	srv, err := service.New(o.Options(consulx.AuctionService, log))
	if err != nil {
		return err
	}
	auction := server.New(log)
	auctionv1.RegisterAuctionServiceServer(srv.GRPC(), auction)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		discovery.WatchPrefix(srv.WatchContext(gctx), client, log, config.Prefix, func(pairs api.KVPairs) { auction.SetConfigs(pairs) })
		return nil
	})
	g.Go(func() error { return srv.Run(gctx) })
	return g.Wait()
}
