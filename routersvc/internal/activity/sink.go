// Package activity sends the router's served impressions and accepted
// clicks to featuresvc's real-time counters (RecordActivity), to every
// instance (each keeps its own counters), in batches: a click at once,
// impressions at least every interval. Counting is best
// effort: activity that cannot be sent (featuresvc down, the queue full) is
// dropped and counted, never retried into a pile-up, and never slows a
// request.
package activity

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	"github.com/adrank/adrank/routersvc/internal/lab"
)

// Bounds.
const (
	// MaxQueued is the most activity waiting to be sent; beyond, it is
	// dropped.
	MaxQueued = 100_000
	// batch is the most activity per call (featuresvc's bound).
	batch = 10_000
)

// Sink queues activity and sends it. Add is safe for concurrent use; Run
// sends until its context ends, then sends what is left.
type Sink struct {
	features func() ([]featuresv1.FeatureServiceClient, error)
	log      *slog.Logger
	every    time.Duration
	timeout  time.Duration

	mu      sync.Mutex
	queue   []*featuresv1.Activity
	kick    chan struct{}
	dropped atomic.Uint64
	sent    atomic.Uint64
	logged  time.Time // the last drop logged; s.mu
	token   string    // bearer token of the calls, if any
}

// Token makes the calls carry a bearer token (featuresvc started with
// --tokens needs the events role). Call it before Run.
func (s *Sink) Token(secret string) { s.token = secret }

// New sends to every featuresvc instance features returns (each keeps its
// own counters), at least every interval, each call within timeout.
func New(features func() ([]featuresv1.FeatureServiceClient, error), every, timeout time.Duration, log *slog.Logger) *Sink {
	return &Sink{features: features, log: log, every: every, timeout: timeout, kick: make(chan struct{}, 1)}
}

// Add queues activity; a click is sent at once.
func (s *Sink) Add(acts []lab.Activity) {
	if len(acts) == 0 {
		return
	}
	click := false
	s.mu.Lock()
	for _, a := range acts {
		if len(s.queue) >= MaxQueued {
			s.dropped.Add(1)
			continue
		}
		s.queue = append(s.queue, &featuresv1.Activity{UserId: a.UserID, AdId: a.AdID, Impressions: a.Impressions, Clicks: a.Clicks, Time: timestamppb.New(a.At)})
		click = click || a.Clicks > 0
	}
	s.mu.Unlock()
	if click {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// Stats are the activity sent and dropped so far, counted per instance.
func (s *Sink) Stats() (sent, dropped uint64) { return s.sent.Load(), s.dropped.Load() }

// Run sends queued activity until ctx ends, then once more.
func (s *Sink) Run(ctx context.Context) error {
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.send(context.WithoutCancel(ctx))
			return nil
		case <-t.C:
		case <-s.kick:
		}
		s.send(ctx)
	}
}

func (s *Sink) send(ctx context.Context) {
	s.mu.Lock()
	q := s.queue
	s.queue = nil
	s.mu.Unlock()
	if len(q) == 0 {
		return
	}
	clients, err := s.features()
	if err != nil {
		s.drop(len(q), err)
		return
	}
	if s.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.token)
	}
	for _, client := range clients {
		for rest := q; len(rest) > 0; {
			n := min(len(rest), batch)
			cctx, cancel := context.WithTimeout(ctx, s.timeout)
			_, err := client.RecordActivity(cctx, &featuresv1.RecordActivityRequest{Activity: rest[:n]})
			cancel()
			if err != nil {
				s.drop(len(rest), err)
				break
			}
			s.sent.Add(uint64(n))
			rest = rest[n:]
		}
	}
}

// drop counts dropped activity, and logs it at most every 10 s.
func (s *Sink) drop(n int, err error) {
	s.dropped.Add(uint64(n))
	s.mu.Lock()
	quiet := time.Since(s.logged) < 10*time.Second
	if !quiet {
		s.logged = time.Now()
	}
	s.mu.Unlock()
	if !quiet {
		s.log.Warn("activity for the feature store's counters dropped", "activity", n, "dropped in all", s.dropped.Load(), "error", err)
	}
}
