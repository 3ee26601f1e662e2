// Command rankersvc serves one model version for one domain and registers it
// in Consul as adrank-ranker with its domain, version and model sha256.
//
//	rankersvc --domain feed --version v3 --model models/feed/v2.json \
//	  --consul-addr 127.0.0.1:8500 --listen 127.0.0.1:0
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	rankerv1 "github.com/adrank/adrank/gen/adrank/ranker/v1"
	"github.com/adrank/adrank/ml/featurespec"
	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/names"
	"github.com/adrank/adrank/platform/service"
	"github.com/adrank/adrank/rankersvc/internal/ranker"
)

type options struct {
	service.Flags
	domain, version, model string
	featureSpec            string
}

func main() {
	var o options
	fs := flag.NewFlagSet("rankersvc", flag.ExitOnError)
	o.Register(fs, "127.0.0.1:0")
	fs.StringVar(&o.domain, "domain", "", "domain (ad surface) this ranker serves, e.g. feed (required)")
	fs.StringVar(&o.version, "version", "", "model version this ranker serves, e.g. v3 (required)")
	fs.StringVar(&o.model, "model", "", "model file, e.g. models/feed/v2.json (required)")
	fs.StringVar(&o.featureSpec, "feature-spec", "", "the feature store's spec (featuresvc --feature-spec); a model naming a feature it does not declare is refused. Default: the synthetic world's spec")
	_ = fs.Parse(os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "rankersvc:", err)
		os.Exit(1)
	}
}

func (o options) validate() error {
	var errs []error
	if !names.Valid(o.domain) {
		errs = append(errs, fmt.Errorf("--domain %q: want %s", o.domain, names.Pattern))
	}
	if !names.Valid(o.version) {
		errs = append(errs, fmt.Errorf("--version %q: want %s", o.version, names.Pattern))
	}
	if o.model == "" {
		errs = append(errs, errors.New("--model is required"))
	}
	return errors.Join(errs...)
}

func run(ctx context.Context, o options) error {
	if err := o.validate(); err != nil {
		return err
	}
	log := o.Setup("rankersvc").With("domain", o.domain, "version", o.version)
	// Load before listening: a bad model never registers.
	f, err := model.Load(o.model)
	if err != nil {
		return err
	}
	// A feature the store does not declare (a typo, say) would be missing on
	// every request, silently: such a model is refused, with the names.
	spec, err := featurespec.Load(o.featureSpec)
	if err != nil {
		return err
	}
	if err := spec.CheckModel(o.model, f.Features()); err != nil {
		return err
	}
	log.Info("model loaded", "path", f.Path, "format", f.Format(), "sha256", f.SHA256, "features", len(f.Features()))
	opts := o.Options(consulx.RankerService, log)
	opts.Tags = []string{"domain=" + o.domain, "version=" + o.version}
	opts.Meta = map[string]string{
		consulx.MetaDomain:      o.domain,
		consulx.MetaVersion:     o.version,
		consulx.MetaModelSHA256: f.SHA256,
		consulx.MetaModelFormat: f.Format(),
	}
	srv, err := service.New(opts)
	if err != nil {
		return err
	}
	rankerv1.RegisterRankerServiceServer(srv.GRPC(), ranker.NewServer(o.domain, o.version, f))
	return srv.Run(ctx)
}
