// Package adrank is adrank as a Go library: the seed article's monolith, in
// which the ranking runs inside the backend's own process. An Engine does
// what the router service does (features, the domain's ranker versions as
// its experiment assigns them, the auction, recording impressions and
// events, reports) as plain function calls, with no network hop and no
// Consul. Its experiment state lives in an embedded bbolt file.
//
// This is the exported API of the router module for use in process; the
// service itself (routersvc) and this package share the same code.
package adrank

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	auctioninproc "github.com/adrank/adrank/auctionsvc/inproc"
	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/idsig"
	"github.com/adrank/adrank/routersvc/internal/app"
	"github.com/adrank/adrank/routersvc/internal/core"
	"github.com/adrank/adrank/routersvc/internal/lab"
	"github.com/adrank/adrank/routersvc/internal/routing"
	"github.com/adrank/adrank/routersvc/internal/store"
)

// Config configures an Engine. The zero value of each field has a default.
type Config struct {
	// Models is the folder of model files <domain>/<version>.json
	// (default "models").
	Models string
	// World is the feature data (default: the demo world).
	World *world.Config
	// StateFile is the bbolt file of experiment state (default
	// ".data/adrank.db").
	StateFile string
	// Production is each domain's production version (default "v1" for every
	// domain that has a model).
	Production map[string]string
	// Experiments are the domains' experiment documents, as in Consul KV
	// under adrank/experiments/ (default: none).
	Experiments map[string][]byte
	// Auctions are the domains' auction configs, as in Consul KV under
	// adrank/auction/ (default: GSP without a reserve).
	Auctions map[string][]byte
	// Budget bounds one Rank call (default 250ms); a sooner deadline in its
	// context wins.
	Budget time.Duration
	// ImpressionKey is a file of impression ID keys (see routersvc
	// --impression-key): the IDs Rank hands out are signed, and events for
	// IDs not signed are refused. Empty: IDs are not signed, for a program
	// that is the engine's only caller.
	ImpressionKey string
	Log           *slog.Logger
}

// Engine ranks in process. It is safe for concurrent use; Close it to write
// what it has recorded.
type Engine struct {
	r     *app.Router
	table *routing.Table
	st    store.Store
	stop  context.CancelFunc
	done  chan error

	mu   sync.Mutex
	exps map[string][]byte
}

// Open loads the models and the world, opens the state file and starts the
// experiment runtime.
func Open(cfg Config) (*Engine, error) {
	if cfg.Models == "" {
		cfg.Models = "models"
	}
	w := world.DefaultConfig()
	if cfg.World != nil {
		w = *cfg.World
	}
	if cfg.StateFile == "" {
		cfg.StateFile = filepath.Join(".data", "adrank.db")
	}
	if cfg.Budget <= 0 {
		cfg.Budget = 250 * time.Millisecond
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	local, table, served, err := app.Local(w, cfg.Models, cfg.Log)
	if err != nil {
		return nil, err
	}
	var pairs api.KVPairs
	for d, c := range cfg.Auctions {
		pairs = append(pairs, &api.KVPair{Key: auctioninproc.ConfigPrefix + d, Value: c})
	}
	local.SetAuctionConfigs(pairs)
	configs := map[string][]byte{}
	for _, dv := range served {
		d := filepath.Dir(dv)
		if _, ok := cfg.Production[d]; !ok {
			configs[d] = []byte(`{"production": "v1"}`)
		}
	}
	for d, v := range cfg.Production {
		configs[d] = fmt.Appendf(nil, `{"production": %q}`, v)
	}
	table.SetConfigs(configs)
	for d := range configs {
		if e := table.Snapshot().Domains[d].ConfigError; e != "" {
			return nil, fmt.Errorf("production version of %s: %s", d, e)
		}
	}
	e := &Engine{table: table, exps: maps.Clone(cfg.Experiments), done: make(chan error, 1)}
	if e.exps == nil {
		e.exps = map[string][]byte{}
	}
	table.SetExperiments(e.exps)
	for d := range e.exps {
		if msg := table.Snapshot().Domains[d].ExperimentError; msg != "" {
			return nil, fmt.Errorf("experiment of %s: %s", d, msg)
		}
	}
	if err := os.MkdirAll(filepath.Dir(cfg.StateFile), 0o755); err != nil {
		return nil, err
	}
	var ids *idsig.Keys
	if cfg.ImpressionKey != "" {
		if ids, err = idsig.Load(cfg.ImpressionKey); err != nil {
			return nil, err
		}
	}
	if e.st, err = store.OpenBolt(cfg.StateFile); err != nil {
		return nil, err
	}
	e.r = app.New(app.Parts{
		Table: table, Clients: local, Store: e.st, Log: cfg.Log, Limits: core.Limits{Budget: cfg.Budget}, IDs: ids,
		Lab: lab.Options{SetExperiment: func(_ context.Context, domain string, doc []byte) error { return e.SetExperiment(domain, doc) }},
	})
	ctx, stop := context.WithCancel(context.Background())
	e.stop = stop
	go func() { e.done <- e.r.Run(ctx) }()
	return e, nil
}

// Rank ranks and prices the candidates for one request, as RouterService.Rank
// does. Its errors are gRPC status errors with the same codes.
func (e *Engine) Rank(ctx context.Context, req *routerv1.RankRequest) (*routerv1.RankResponse, error) {
	return e.r.GRPC.Rank(ctx, req)
}

// ReportEvents joins click and conversion events to served impressions.
func (e *Engine) ReportEvents(ctx context.Context, req *routerv1.ReportEventsRequest) (*routerv1.ReportEventsResponse, error) {
	return e.r.GRPC.ReportEvents(ctx, req)
}

// Report is a domain's experiment report, with everything served so far.
func (e *Engine) Report(ctx context.Context, domain string) (*routerv1.GetExperimentReportResponse, error) {
	if err := e.r.Core.Flush(ctx); err != nil {
		return nil, err
	}
	return e.r.GRPC.GetExperimentReport(ctx, &routerv1.GetExperimentReportRequest{Domain: domain})
}

// Domains lists the domains, their versions and experiments.
func (e *Engine) Domains(ctx context.Context) (*routerv1.ListDomainsResponse, error) {
	return e.r.GRPC.ListDomains(ctx, &routerv1.ListDomainsRequest{})
}

// SetExperiment puts a domain's experiment document in force (nil removes
// it). An invalid document is refused with the reason, and the one in force
// keeps serving.
func (e *Engine) SetExperiment(domain string, doc []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	next := maps.Clone(e.exps)
	if doc == nil {
		delete(next, domain)
	} else {
		next[domain] = doc
	}
	e.table.SetExperiments(next)
	if d := e.table.Snapshot().Domains[domain]; d != nil && d.ExperimentError != "" {
		e.table.SetExperiments(e.exps)
		return errors.New(d.ExperimentError)
	}
	e.exps = next
	return nil
}

// Close stops the experiment runtime, writes what it recorded and closes
// the state file.
func (e *Engine) Close() error {
	e.stop()
	err := <-e.done
	return errors.Join(err, e.st.Close())
}
