// Command floorsvc is the floor chain of make bench: adrank's topology (a
// client, a router, then three downstream calls one after another) with
// empty handlers and the services' own gRPC settings (platform/grpcx's
// interceptors, health and client options). What it costs is the physical
// floor of the design on the machine at hand, the yardstick the pipeline's
// latency and CPU per request are measured against (#16).
//
// Without --downstream it is a leaf: an empty health check. With it, its
// Rank calls each downstream's health check in turn and answers an empty
// response.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/grpcx"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	down := flag.String("downstream", "", "comma-separated addresses whose health check Rank calls, one after another (empty: a leaf)")
	flag.Parse()
	if err := run(*listen, *down); err != nil {
		fmt.Fprintln(os.Stderr, "floorsvc:", err)
		os.Exit(1)
	}
}

func run(listen, down string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, hs := grpcx.NewServer(log)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	var conns []*grpc.ClientConn
	defer func() {
		for _, cc := range conns {
			cc.Close()
		}
	}()
	if down != "" {
		c := &chain{}
		for _, addr := range strings.Split(down, ",") {
			cc, err := grpc.NewClient(addr, grpcx.ClientOptions()...)
			if err != nil {
				return err
			}
			conns = append(conns, cc)
			c.down = append(c.down, healthpb.NewHealthClient(cc))
		}
		routerv1.RegisterRouterServiceServer(srv, c)
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); srv.GracefulStop() }()
	return srv.Serve(lis)
}

// chain is the floor chain's router: its Rank makes the downstream calls a
// Rank makes (features, ranker, auction), each empty.
type chain struct {
	routerv1.UnimplementedRouterServiceServer
	down []healthpb.HealthClient
}

// Rank implements RouterService.
func (c *chain) Rank(ctx context.Context, _ *routerv1.RankRequest) (*routerv1.RankResponse, error) {
	for _, d := range c.down {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := d.Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err != nil {
			return nil, err
		}
	}
	return &routerv1.RankResponse{}, nil
}
