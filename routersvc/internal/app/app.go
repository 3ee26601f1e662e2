// Package app assembles the router from its parts: the one place that
// wires the routing table, the downstream, the experiment lab and the core.
// routersvc's main (microservices or ML as one service), the adrank
// library, the tests and the simulator's rig all build it here.
package app

import (
	"context"
	"errors"
	"log/slog"

	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/idsig"
	"github.com/adrank/adrank/routersvc/internal/activity"
	"github.com/adrank/adrank/routersvc/internal/core"
	"github.com/adrank/adrank/routersvc/internal/downstream"
	"github.com/adrank/adrank/routersvc/internal/lab"
	"github.com/adrank/adrank/routersvc/internal/router"
	"github.com/adrank/adrank/routersvc/internal/routing"
	"github.com/adrank/adrank/routersvc/internal/store"
)

// Parts are what a router is made of.
type Parts struct {
	Table   *routing.Table
	Clients downstream.Clients
	Store   store.Store
	Log     *slog.Logger
	Limits  core.Limits
	// Lab sets the lab's schedules, shadow queue and canary promotion; its
	// Store, Log, Experiments and Open are set from the parts.
	Lab lab.Options
	// IDs sign the impression IDs handed out and verify those events name;
	// nil: unsigned.
	IDs *idsig.Keys
	// Activity, when set, sends what is served and clicked to featuresvc's
	// real-time counters.
	Activity *activity.Sink
}

// Router is an assembled router.
type Router struct {
	Core *core.Engine
	Lab  *lab.Lab
	// GRPC is RouterService over the core.
	GRPC     *router.Server
	activity *activity.Sink
}

// New wires the parts.
func New(p Parts) *Router {
	o := p.Lab
	o.Store, o.Log, o.Experiments = p.Store, p.Log, core.LabDomains(p.Table)
	if p.IDs != nil {
		o.Open = p.IDs.Open
	}
	if p.Activity != nil {
		o.Activity = p.Activity.Add
	}
	lb := lab.New(o)
	c := core.New(p.Table, downstream.Adapt(p.Clients), lb, p.Limits, p.Log)
	c.SignImpressions(p.IDs)
	return &Router{Core: c, Lab: lb, GRPC: router.NewServer(c), activity: p.Activity}
}

// Run runs the experiment lab until ctx ends, then writes what it recorded;
// the activity sink outlives it, to send the last of it.
func (r *Router) Run(ctx context.Context) error {
	if r.activity == nil {
		return r.Lab.Run(ctx)
	}
	sinkCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- r.activity.Run(sinkCtx) }()
	err := r.Lab.Run(ctx)
	stop()
	return errors.Join(err, <-done)
}

// Local is the downstream of a process that serves every model itself:
// world w's features, a ranker for every model file models/<domain>/<version>.json,
// and the auction, all in process, with a routing table of those rankers.
// It returns the domain/version pairs served.
func Local(w world.Config, models string, log *slog.Logger) (*downstream.Local, *routing.Table, []string, error) {
	wd, err := world.New(w)
	if err != nil {
		return nil, nil, nil, err
	}
	local := downstream.NewLocal(wd, log)
	served, err := local.LoadModels(models)
	if err != nil {
		return nil, nil, nil, err
	}
	table := routing.NewTable(log, nil)
	table.SetRankers(local.Instances())
	return local, table, served, nil
}
