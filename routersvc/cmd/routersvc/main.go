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
	"os"
	"os/signal"
	"syscall"

	"github.com/adrank/adrank/routersvc/internal/app"
)

func main() {
	var c app.Config
	fs := flag.NewFlagSet("routersvc", flag.ExitOnError)
	c.RegisterFlags(fs)
	_ = fs.Parse(os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "routersvc:", err)
		os.Exit(1)
	}
}
