// Package lab runs the router's experiments: it assigns each request a
// version (production, canary, A/B arm, bandit arm or an interleaved pair),
// records impressions and their assignment, joins click and conversion
// events to them, mirrors traffic to shadow versions, steps and guards
// canaries, and reports what it finds. Its state lives in a store.Store.
package lab

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/adrank/adrank/routersvc/internal/store"
)

// Options configure a Lab.
type Options struct {
	Store store.Store
	Log   *slog.Logger
	// Window is how long an impression can be joined to events (default 24h).
	Window time.Duration
	// ShadowQueue bounds the shadow queue (default 1024); ShadowWorkers
	// (default 2) drain it.
	ShadowQueue   int
	ShadowWorkers int
	// ShadowTimeout bounds one shadow call (default 1s).
	ShadowTimeout time.Duration
	// Refresh is how often bandit allocations and canary states are
	// recomputed from the store (default 500ms). Negative: never on its
	// own, only when the caller calls Lab.Refresh.
	Refresh time.Duration
	// FlushEvery bounds how long recorded impressions wait before they are
	// written (default 20ms).
	FlushEvery time.Duration
	// Experiments returns each domain's experiment, for the canary controller
	// and the bandit refresher.
	Experiments func() map[string]Domain
	// SetExperiment writes a domain's experiment document (canary promotion).
	SetExperiment func(ctx context.Context, domain string, doc []byte) error
	// Open, when set, checks an event's impression ID (its signature)
	// before the impression is looked up, and returns the plain ID that
	// impressions are stored under; an ID it refuses is Forged.
	Open func(impressionID string) (plain string, ok bool)
	// Observe hears what is recorded, for metrics (default: nothing).
	Observe Observer
	// Activity, when set, hears each impression once it is written (once
	// per request: not again for a request recorded again) and each
	// accepted click: the feature store's real-time counters. It must not
	// block.
	Activity func([]Activity)
	Now      func() time.Time
}

// Lab is the experiment runtime. Run owns its goroutines.
type Lab struct {
	o      Options
	rec    *recorder
	shadow chan shadowJob

	mu      sync.RWMutex
	bandits map[string]*banditState // domain -> allocation
	canary  map[string]canaryState  // domain -> state
}

// New returns a Lab; call Run.
func New(o Options) *Lab {
	if o.Observe == nil {
		o.Observe = nopObserver{}
	}
	if o.Window <= 0 {
		o.Window = 24 * time.Hour
	}
	if o.ShadowQueue <= 0 {
		o.ShadowQueue = 1024
	}
	if o.ShadowWorkers <= 0 {
		o.ShadowWorkers = 2
	}
	if o.ShadowTimeout <= 0 {
		o.ShadowTimeout = time.Second
	}
	if o.Refresh == 0 {
		o.Refresh = 500 * time.Millisecond
	}
	if o.FlushEvery <= 0 {
		o.FlushEvery = 20 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Experiments == nil {
		o.Experiments = func() map[string]Domain { return nil }
	}
	l := &Lab{
		o:       o,
		shadow:  make(chan shadowJob, o.ShadowQueue),
		bandits: map[string]*banditState{},
		canary:  map[string]canaryState{},
	}
	l.rec = newRecorder(o.Store, o.Log, o.FlushEvery, l.impressionTTL())
	l.rec.activity = o.Activity
	return l
}

// impressionTTL keeps impressions an hour past the window, so that late
// events are told "expired" rather than "unknown".
func (l *Lab) impressionTTL() time.Duration { return l.o.Window + time.Hour }

// Run runs the recorder, shadow workers, bandit refresher and canary
// controller until ctx ends, then flushes what is recorded.
func (l *Lab) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return l.rec.run(gctx) })
	for range l.o.ShadowWorkers {
		g.Go(func() error { l.shadowWorker(gctx); return nil })
	}
	g.Go(func() error {
		if l.o.Refresh < 0 {
			return nil
		}
		t := time.NewTicker(l.o.Refresh)
		defer t.Stop()
		for {
			l.Refresh(gctx)
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
			}
		}
	})
	return g.Wait()
}

// Flush writes what is recorded so far (tests and shutdown).
func (l *Lab) Flush(ctx context.Context) error { return l.rec.flush(ctx) }

// Refresh recomputes bandit allocations and steps or guards canaries from
// the store now. Run calls it every Options.Refresh; a caller that drives
// the lab's clock itself (the simulator's tests) calls it between steps.
func (l *Lab) Refresh(ctx context.Context) {
	for name, d := range l.o.Experiments() {
		if d.Exp == nil {
			continue
		}
		if d.Exp.Bandit != nil {
			l.refreshBandit(ctx, name, d)
		}
		if d.Exp.Canary != nil {
			l.controlCanary(ctx, name, d)
		}
	}
}

// Latency histogram bucket upper edges, in ms.
var latencyEdges = []float64{0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, math.Inf(1)}

func latencyBucket(d time.Duration) int {
	ms := float64(d.Microseconds()) / 1000
	for i, e := range latencyEdges {
		if ms <= e {
			return i
		}
	}
	return len(latencyEdges) - 1
}

// quantile returns the upper edge of the bucket where the q-quantile falls.
func quantile(counts []float64, q float64) float64 {
	var total float64
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return math.NaN()
	}
	var cum float64
	for i, c := range counts {
		cum += c
		if cum >= q*total {
			return latencyEdges[i]
		}
	}
	return math.Inf(1)
}
