// Package telemetry is the router's Prometheus metrics: what the lab
// records (served responses and impressions per arm, events, shadow drops,
// ranker calls per domain and version), overload refusals, and, read at
// scrape time, each domain's state (healthy instances, config errors,
// canary state, SRM) and the stream worker's Kafka lag.
package telemetry

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/adrank/adrank/platform/metrics"
	"github.com/adrank/adrank/routersvc/internal/lab"
)

// Metrics counts what the router does. It implements lab.Observer.
type Metrics struct {
	served      *prometheus.CounterVec
	impressions *prometheus.CounterVec
	events      *prometheus.CounterVec
	refused     *prometheus.CounterVec
	shadow      *prometheus.CounterVec
	ranker      *prometheus.HistogramVec
	overload    prometheus.Counter
}

// New registers the router's counters on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		served: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "adrank_served_requests_total",
			Help: "Rank responses recorded, by domain, strategy and serving version."}, []string{"domain", "strategy", "version"}),
		impressions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "adrank_impressions_total",
			Help: "Impressions served, by domain, strategy and the version that placed the ad (the experiment arm)."}, []string{"domain", "strategy", "version"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "adrank_events_total",
			Help: "Accepted clicks and conversions, by domain, strategy, the impression's version and type."}, []string{"domain", "strategy", "version", "type"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "adrank_events_refused_total",
			Help: "Refused events, by reason: unknown, expired, forged, duplicate."}, []string{"reason"}),
		shadow: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "adrank_shadow_dropped_total",
			Help: "Shadow comparisons dropped because the shadow queue was full."}, []string{"domain", "version"}),
		ranker: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "adrank_ranker_call_duration_seconds",
			Help: "Ranker calls made by the router, by domain, version and outcome (ok or error).", Buckets: metrics.Buckets},
			[]string{"domain", "version", "outcome"}),
		overload: prometheus.NewCounter(prometheus.CounterOpts{Name: "adrank_overload_refusals_total",
			Help: "Rank calls refused with RESOURCE_EXHAUSTED because too many were in flight."}),
	}
	for _, r := range []string{"unknown", "expired", "forged", "duplicate"} {
		m.refused.WithLabelValues(r)
	}
	reg.MustRegister(m.served, m.impressions, m.events, m.refused, m.shadow, m.ranker, m.overload)
	return m
}

// Served implements lab.Observer.
func (m *Metrics) Served(s lab.Served) {
	strategy := string(s.A.Strategy)
	m.served.WithLabelValues(s.Domain, strategy, s.A.Version).Inc()
	for _, r := range s.Results {
		m.impressions.WithLabelValues(s.Domain, strategy, r.Version).Inc()
	}
	for _, c := range s.Calls {
		outcome := "ok"
		if c.Failed {
			outcome = "error"
		}
		m.ranker.WithLabelValues(s.Domain, c.Version, outcome).Observe(c.Latency.Seconds())
	}
}

// Event implements lab.Observer.
func (m *Metrics) Event(domain, strategy, version string, conversion bool) {
	typ := "click"
	if conversion {
		typ = "conversion"
	}
	m.events.WithLabelValues(domain, strategy, version, typ).Inc()
}

// EventRefused implements lab.Observer.
func (m *Metrics) EventRefused(reason string) { m.refused.WithLabelValues(reason).Inc() }

// ShadowDropped implements lab.Observer.
func (m *Metrics) ShadowDropped(domain, version string) {
	m.shadow.WithLabelValues(domain, version).Inc()
}

// Overloaded counts a refused Rank call.
func (m *Metrics) Overloaded() { m.overload.Inc() }

// scrapeTimeout bounds the state read at one scrape.
const scrapeTimeout = 5 * time.Second

// State is what the state collector reads at scrape time.
type State struct {
	// Domains lists each domain's state.
	Domains func(ctx context.Context) ([]Domain, error)
	// Lag is the stream worker's lag per topic and partition (nil: no
	// worker).
	Lag func() []Lag
}

// Domain is one domain's state at a scrape.
type Domain struct {
	Name        string
	Versions    []Version
	ConfigError string // the domain's, the experiment's or the auction's
	// Canary, when a canary runs: its version, state and share (percent).
	CanaryVersion, CanaryState string
	CanaryShare                float64
	// SRMFlagged: an A/B test's sample ratio mismatch.
	Experiment string
	SRMFlagged bool
}

// Version is one ranker version of a domain.
type Version struct {
	Name             string
	Healthy, Total   int
	ProductionOrNone bool // serves the domain's production traffic
}

// Lag is the stream worker's group's lag on one topic.
type Lag struct {
	Topic   string
	Records int64
}

var (
	healthyDesc = prometheus.NewDesc("adrank_version_healthy_instances", "Healthy ranker instances of a domain's version.", []string{"domain", "version"}, nil)
	totalDesc   = prometheus.NewDesc("adrank_version_instances", "Registered ranker instances of a domain's version.", []string{"domain", "version"}, nil)
	prodDesc    = prometheus.NewDesc("adrank_version_production", "1 for the version serving a domain's production traffic.", []string{"domain", "version"}, nil)
	configDesc  = prometheus.NewDesc("adrank_config_error", "1 while a domain has a config error (a refused or deleted config).", []string{"domain"}, nil)
	canaryDesc  = prometheus.NewDesc("adrank_canary_state", "1 for a domain's canary's current state (running, completed, rolled_back, promoted).", []string{"domain", "version", "state"}, nil)
	shareDesc   = prometheus.NewDesc("adrank_canary_share_percent", "A domain's canary's share of users, in percent.", []string{"domain", "version"}, nil)
	srmDesc     = prometheus.NewDesc("adrank_experiment_srm_flagged", "1 when an A/B test's sample ratio mismatch test flags it (p < 0.001).", []string{"domain", "experiment"}, nil)
	lagDesc     = prometheus.NewDesc("adrank_stream_lag_records", "Records the stream worker's group has not yet consumed, per topic.", []string{"topic"}, nil)
	scrapeDesc  = prometheus.NewDesc("adrank_state_scrape_error", "1 when the last scrape could not read the domains' state.", nil, nil)
)

// Collector reads State at scrape time.
type Collector struct{ s State }

// NewCollector returns a collector over s.
func NewCollector(s State) *Collector { return &Collector{s: s} }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{healthyDesc, totalDesc, prodDesc, configDesc, canaryDesc, shareDesc, srmDesc, lagDesc, scrapeDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	domains, err := c.s.Domains(ctx)
	gauge(scrapeDesc, b2f(err != nil))
	for _, d := range domains {
		for _, v := range d.Versions {
			gauge(healthyDesc, float64(v.Healthy), d.Name, v.Name)
			gauge(totalDesc, float64(v.Total), d.Name, v.Name)
			gauge(prodDesc, b2f(v.ProductionOrNone), d.Name, v.Name)
		}
		gauge(configDesc, b2f(d.ConfigError != ""), d.Name)
		if d.CanaryState != "" {
			gauge(canaryDesc, 1, d.Name, d.CanaryVersion, d.CanaryState)
			gauge(shareDesc, d.CanaryShare, d.Name, d.CanaryVersion)
		}
		if d.Experiment != "" {
			gauge(srmDesc, b2f(d.SRMFlagged), d.Name, d.Experiment)
		}
	}
	if c.s.Lag != nil {
		for _, l := range c.s.Lag() {
			gauge(lagDesc, float64(l.Records), l.Topic)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
