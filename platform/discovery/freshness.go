package discovery

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Freshness keeps when each watch last heard from Consul: a blocking query
// that answered, changed or not (one answers at least every WaitTime). As a
// Prometheus collector it exports the times, so that staleness is
// time() - adrank_consul_watch_last_success_timestamp_seconds.
type Freshness struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// NewFreshness returns an empty Freshness.
func NewFreshness() *Freshness { return &Freshness{last: map[string]time.Time{}} }

type freshnessKey struct{}

// WithFreshness makes the watches run with ctx report to f.
func WithFreshness(ctx context.Context, f *Freshness) context.Context {
	return context.WithValue(ctx, freshnessKey{}, f)
}

func heard(ctx context.Context, what string) {
	if f, ok := ctx.Value(freshnessKey{}).(*Freshness); ok {
		f.mu.Lock()
		f.last[what] = time.Now()
		f.mu.Unlock()
	}
}

var freshDesc = prometheus.NewDesc("adrank_consul_watch_last_success_timestamp_seconds",
	"When each Consul watch last had an answer (Unix seconds); blocking queries answer at least every 30 s.", []string{"watch"}, nil)

// Describe implements prometheus.Collector.
func (f *Freshness) Describe(ch chan<- *prometheus.Desc) { ch <- freshDesc }

// Collect implements prometheus.Collector.
func (f *Freshness) Collect(ch chan<- prometheus.Metric) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for what, t := range f.last {
		ch <- prometheus.MustNewConstMetric(freshDesc, prometheus.GaugeValue, float64(t.UnixNano())/1e9, what)
	}
}
