// Command adranksim drives a running router with simulated users: Rank
// calls for users and ads of the synthetic world, clicks sampled from its
// hidden click model, events reported back. Then it prints the domain's
// experiment report.
//
//	adranksim --router 127.0.0.1:9090 --domain feed --requests 20000 --lift v2=1.1
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/sim"
)

type liftFlag map[string]float64

func (l liftFlag) String() string { return fmt.Sprint(map[string]float64(l)) }

func (l liftFlag) Set(s string) error {
	v, f, ok := strings.Cut(s, "=")
	x, err := strconv.ParseFloat(f, 64)
	if !ok || err != nil || x < 0 {
		return fmt.Errorf("want VERSION=FACTOR, got %q", s)
	}
	l[v] = x
	return nil
}

func main() {
	cfg := sim.Config{Lift: liftFlag{}}
	addr := flag.String("router", "127.0.0.1:9090", "router gRPC address")
	flag.StringVar(&cfg.Domain, "domain", "feed", "domain")
	flag.IntVar(&cfg.Requests, "requests", 10000, "Rank calls")
	flag.IntVar(&cfg.Concurrency, "concurrency", 4, "simulated clients")
	flag.Uint64Var(&cfg.Seed, "seed", 1, "seed")
	flag.Var(liftFlag(cfg.Lift), "lift", "true quality multiplier VERSION=FACTOR (repeatable)")
	flag.StringVar(&cfg.RequestPrefix, "prefix", fmt.Sprintf("sim-%d-", time.Now().Unix()), "request ID prefix")
	token := flag.String("token", os.Getenv("ADRANK_TOKEN"), "bearer token for the events (default $ADRANK_TOKEN), for a router started with --tokens")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*token)
	}
	if err := run(ctx, *addr, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "adranksim:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr string, cfg sim.Config) error {
	w, err := world.New(world.DefaultConfig())
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	client := routerv1.NewRouterServiceClient(cc)
	start := time.Now()
	res, err := sim.Run(ctx, client, w, cfg)
	if err != nil {
		return err
	}
	took := time.Since(start)
	fmt.Printf("%d requests in %v (%.0f/s): %d impressions, %d clicks, %d conversions; events accepted %d, duplicate %d, rejected %d; errors %d\n",
		res.Requests, took.Round(time.Millisecond), float64(res.Requests)/took.Seconds(), res.Impressions, res.Clicks, res.Conversions,
		res.Accepted, res.Duplicates, res.Rejected, res.Errors)
	for v, t := range res.ByVersion {
		fmt.Printf("  %s: %d impressions, %d clicks (CTR %.4f, expected %.4f)\n", v, t.Impressions, t.Clicks,
			float64(t.Clicks)/float64(t.Impressions), t.Expected/float64(t.Impressions))
	}
	time.Sleep(200 * time.Millisecond) // the router writes impressions in batches
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rep, err := client.GetExperimentReport(rctx, &routerv1.GetExperimentReportRequest{Domain: cfg.Domain})
	if err != nil {
		return err
	}
	out, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(rep)
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}
