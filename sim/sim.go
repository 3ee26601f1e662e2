// Package sim is adrank's load-and-click simulator. It draws users and
// candidate ads from the synthetic world, sends real Rank calls to a router,
// samples clicks (and conversions) from the world's hidden click model, and
// reports them back as events. The true quality of each version is under the
// caller's control: a version's Lift multiplies the click probability of the
// ads it placed, so tests know which version is truly better and by how much.
package sim

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/ml/world"
)

// Client is the part of RouterServiceClient the simulator uses.
type Client interface {
	Rank(ctx context.Context, in *routerv1.RankRequest, opts ...grpc.CallOption) (*routerv1.RankResponse, error)
	ReportEvents(ctx context.Context, in *routerv1.ReportEventsRequest, opts ...grpc.CallOption) (*routerv1.ReportEventsResponse, error)
}

// Config shapes one simulation.
type Config struct {
	Domain     string
	Requests   int
	Users      int // the first Users users of the world take part (0: all)
	Candidates int // per request (default 20)
	Slots      int // per request (default 3)
	Seed       uint64
	// Lift multiplies the click probability of ads placed by a version
	// (missing versions: 1).
	Lift map[string]float64
	// PositionDecay is the click-through ratio between consecutive slots
	// (default 0.7).
	PositionDecay float64
	// ConversionRate is the share of clicks that convert (default 0.1).
	ConversionRate float64
	// EventBatch is how many events go in one ReportEvents call (default 200).
	EventBatch int
	// RequestPrefix makes request IDs unique across runs.
	RequestPrefix string
	// Concurrency is the number of simulated clients (default 1, which is
	// fully deterministic).
	Concurrency int
	// Timeout bounds each call (default 5s).
	Timeout time.Duration
	// RetryFor is how long a failed event batch is resent (default 30s).
	RetryFor time.Duration
	// Keep keeps every answered request's shown ads in Result.Served.
	Keep bool
}

// Served is one answered request as the simulated user saw it.
type Served struct {
	RequestID, UserID string
	Shown             []Shown
}

// Shown is one shown ad. P is its true click probability before the
// position factor and any lift; slot s multiplies it by PositionDecay^(s-1).
type Shown struct {
	AdID, Version string
	Slot          int
	P             float64
}

// Tally counts what one version served. Expected is the sum of the true
// click probabilities: the clicks to expect, without sampling noise.
type Tally struct {
	Impressions, Clicks int
	Expected            float64
}

// Result is what a simulation saw.
type Result struct {
	Requests, Errors, Impressions, Clicks, Conversions int
	// Events acknowledged by the router, by outcome.
	Accepted, Duplicates, Rejected int
	ByVersion                      map[string]*Tally
	ByStrategy                     map[routerv1.Strategy]int
	// TopExpected sums, over answered requests, the true click
	// probability of the first slot's ad: the first-slot click rate
	// without sampling noise is TopExpected / (Requests - Errors).
	TopExpected float64
	// Served, with Config.Keep, are the answered requests in the order
	// they were sent (with one client, that of the request IDs).
	Served []Served
}

func (c *Config) defaults() {
	if c.Candidates == 0 {
		c.Candidates = 20
	}
	if c.Slots == 0 {
		c.Slots = 3
	}
	if c.PositionDecay == 0 {
		c.PositionDecay = 0.7
	}
	if c.ConversionRate == 0 {
		c.ConversionRate = 0.1
	}
	if c.EventBatch == 0 {
		c.EventBatch = 200
	}
	if c.Concurrency == 0 {
		c.Concurrency = 1
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.RetryFor == 0 {
		c.RetryFor = 30 * time.Second
	}
}

// Run simulates cfg.Requests requests against c.
func Run(ctx context.Context, c Client, w *world.World, cfg Config) (*Result, error) {
	cfg.defaults()
	ads := w.Ads(cfg.Domain)
	users := w.Users()
	if cfg.Users > 0 && cfg.Users < len(users) {
		users = users[:cfg.Users]
	}
	if len(ads) < cfg.Candidates || len(users) == 0 {
		return nil, fmt.Errorf("domain %q has %d ads for %d candidates", cfg.Domain, len(ads), cfg.Candidates)
	}
	res := &Result{ByVersion: map[string]*Tally{}, ByStrategy: map[routerv1.Strategy]int{}}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	for worker := range cfg.Concurrency {
		g.Go(func() error {
			// Requests and users' clicks draw from streams of their own,
			// so that a seed gives the same requests whatever the router
			// answers: runs that serve different versions can be compared
			// request by request.
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(worker)))
			clicks := rand.New(rand.NewPCG(cfg.Seed, uint64(worker)|1<<63))
			var events []*routerv1.Event
			// flush sends the pending events, resending a failed batch (events
			// are idempotent) until it is acknowledged or RetryFor passes.
			flush := func() error {
				if len(events) == 0 {
					return nil
				}
				var resp *routerv1.ReportEventsResponse
				var err error
				for start := time.Now(); ; {
					cctx, cancel := context.WithTimeout(gctx, cfg.Timeout)
					resp, err = c.ReportEvents(cctx, &routerv1.ReportEventsRequest{Events: events})
					cancel()
					if err == nil || gctx.Err() != nil || time.Since(start) > cfg.RetryFor {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if err != nil {
					return fmt.Errorf("report events: %w", err)
				}
				mu.Lock()
				res.Accepted += int(resp.GetAccepted())
				res.Duplicates += int(resp.GetDuplicates())
				res.Rejected += int(resp.GetRejected())
				mu.Unlock()
				events = events[:0]
				return nil
			}
			start := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
			for n := worker; n < cfg.Requests; n += cfg.Concurrency {
				u := users[rng.IntN(len(users))]
				wc := world.RandomContext(rng, start)
				req := &routerv1.RankRequest{
					RequestId: fmt.Sprintf("%s%d", cfg.RequestPrefix, n), UserId: u.ID, Domain: cfg.Domain, Slots: int32(cfg.Slots),
					Context: context_(wc),
				}
				byID := map[string]*world.Ad{}
				for _, i := range rng.Perm(len(ads))[:cfg.Candidates] {
					a := ads[i]
					byID[a.ID] = a
					req.Candidates = append(req.Candidates, &routerv1.Candidate{
						AdId: a.ID, AdvertiserId: a.AdvertiserID, BidMicros: int64(500_000 * math.Exp(0.5*rng.NormFloat64())),
					})
				}
				cctx, cancel := context.WithTimeout(gctx, cfg.Timeout)
				resp, err := c.Rank(cctx, req)
				cancel()
				mu.Lock()
				res.Requests++
				if err != nil {
					res.Errors++
					mu.Unlock()
					// Back off, as a client should: a router that is down
					// would otherwise eat the rest of the run in a moment.
					select {
					case <-gctx.Done():
					case <-time.After(10 * time.Millisecond):
					}
					continue
				}
				res.ByStrategy[resp.GetAssignment().GetStrategy()]++
				mu.Unlock()
				kept := Served{RequestID: req.RequestId, UserID: u.ID}
				for _, r := range resp.GetResults() {
					p0 := world.ClickProb(u, byID[r.GetAdId()], wc)
					if cfg.Keep {
						kept.Shown = append(kept.Shown, Shown{AdID: r.GetAdId(), Version: r.GetVersion(), Slot: int(r.GetSlot()), P: p0})
					}
					p := p0 * math.Pow(cfg.PositionDecay, float64(r.GetSlot()-1))
					if l, ok := cfg.Lift[r.GetVersion()]; ok {
						p *= l
					}
					clicked := clicks.Float64() < math.Min(p, 1)
					converted := clicked && clicks.Float64() < cfg.ConversionRate
					mu.Lock()
					t := res.ByVersion[r.GetVersion()]
					if t == nil {
						t = &Tally{}
						res.ByVersion[r.GetVersion()] = t
					}
					t.Impressions++
					t.Expected += math.Min(p, 1)
					if r.GetSlot() == 1 {
						res.TopExpected += math.Min(p, 1)
					}
					res.Impressions++
					if clicked {
						t.Clicks++
						res.Clicks++
					}
					if converted {
						res.Conversions++
					}
					mu.Unlock()
					if clicked {
						events = append(events, &routerv1.Event{ImpressionId: r.GetImpressionId(), Type: routerv1.EventType_EVENT_TYPE_CLICK})
					}
					if converted {
						events = append(events, &routerv1.Event{ImpressionId: r.GetImpressionId(), Type: routerv1.EventType_EVENT_TYPE_CONVERSION,
							Value: math.Round(20*math.Exp(0.5*clicks.NormFloat64())*100) / 100})
					}
				}
				if cfg.Keep {
					mu.Lock()
					res.Served = append(res.Served, kept)
					mu.Unlock()
				}
				if len(events) >= cfg.EventBatch {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			return flush()
		})
	}
	return res, g.Wait()
}

func context_(c world.Context) *routerv1.RequestContext {
	rc := &routerv1.RequestContext{Country: c.Country, Query: c.Query}
	if !c.Time.IsZero() {
		rc.Timestamp = timestamppb.New(c.Time)
	}
	switch c.Device {
	case "mobile":
		rc.Device = routerv1.Device_DEVICE_MOBILE
	case "desktop":
		rc.Device = routerv1.Device_DEVICE_DESKTOP
	case "tablet":
		rc.Device = routerv1.Device_DEVICE_TABLET
	}
	return rc
}
