// Command auctionsvc runs the auction every domain shares, registered in
// Consul as adrank-auction.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/adrank/adrank/auctionsvc/internal/server"
	auctionv1 "github.com/adrank/adrank/gen/adrank/auction/v1"
	"github.com/adrank/adrank/platform/consulx"
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
	srv, err := service.New(o.Options(consulx.AuctionService, o.Logger("auctionsvc")))
	if err != nil {
		return err
	}
	auctionv1.RegisterAuctionServiceServer(srv.GRPC(), server.Server{})
	return srv.Run(ctx)
}
