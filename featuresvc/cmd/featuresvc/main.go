// Command featuresvc serves user, ad and request-context features of the
// seeded synthetic world, registered in Consul as adrank-feature.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/adrank/adrank/featuresvc/internal/features"
	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/service"
)

type options struct {
	service.Flags
	world world.Config
}

func main() {
	var o options
	o.world = world.DefaultConfig()
	fs := flag.NewFlagSet("featuresvc", flag.ExitOnError)
	o.Register(fs, "127.0.0.1:0")
	o.world.RegisterFlags(fs)
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
	w, err := world.New(o.world)
	if err != nil {
		return err
	}
	srv, err := service.New(o.Options(consulx.FeatureService, log))
	if err != nil {
		return err
	}
	featuresv1.RegisterFeatureServiceServer(srv.GRPC(), features.NewServer(w))
	return srv.Run(ctx)
}
