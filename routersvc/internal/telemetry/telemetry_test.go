package telemetry

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/adrank/adrank/routersvc/internal/lab"
)

func TestObserver(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.Served(lab.Served{Domain: "feed", A: lab.Assignment{Strategy: lab.Interleaved, Version: "v1", Other: "v2"},
		Results: []lab.ServedResult{{Version: "v1"}, {Version: "v2"}, {Version: "v1"}},
		Calls:   []lab.Call{{Version: "v1", Latency: 3 * time.Millisecond}, {Version: "v2", Latency: time.Second, Failed: true}}})
	m.Event("feed", "interleaved", "v2", false)
	m.Event("feed", "interleaved", "v2", true)
	m.EventRefused("forged")
	m.ShadowDropped("feed", "v3")
	m.Overloaded()
	want := `
# HELP adrank_impressions_total Impressions served, by domain, strategy and the version that placed the ad (the experiment arm).
# TYPE adrank_impressions_total counter
adrank_impressions_total{domain="feed",strategy="interleaved",version="v1"} 2
adrank_impressions_total{domain="feed",strategy="interleaved",version="v2"} 1
# HELP adrank_events_total Accepted clicks and conversions, by domain, strategy, the impression's version and type.
# TYPE adrank_events_total counter
adrank_events_total{domain="feed",strategy="interleaved",type="click",version="v2"} 1
adrank_events_total{domain="feed",strategy="interleaved",type="conversion",version="v2"} 1
# HELP adrank_shadow_dropped_total Shadow comparisons dropped because the shadow queue was full.
# TYPE adrank_shadow_dropped_total counter
adrank_shadow_dropped_total{domain="feed",version="v3"} 1
# HELP adrank_overload_refusals_total Rank calls refused with RESOURCE_EXHAUSTED because too many were in flight.
# TYPE adrank_overload_refusals_total counter
adrank_overload_refusals_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "adrank_impressions_total", "adrank_events_total", "adrank_shadow_dropped_total", "adrank_overload_refusals_total"); err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(m.refused.WithLabelValues("forged")); got != 1 {
		t.Errorf("forged %v", got)
	}
	if got := testutil.ToFloat64(m.refused.WithLabelValues("unknown")); got != 0 {
		t.Errorf("unknown %v", got)
	}
	if n := testutil.CollectAndCount(m.ranker); n != 2 {
		t.Errorf("%d ranker series, want v1 ok and v2 error", n)
	}
}

func TestCollector(t *testing.T) {
	state := State{
		Domains: func(context.Context) ([]Domain, error) {
			return []Domain{{
				Name: "feed", Versions: []Version{{Name: "v1", Healthy: 2, Total: 3, ProductionOrNone: true}, {Name: "v2", Healthy: 1, Total: 1}},
				ConfigError: "deleted", CanaryVersion: "v2", CanaryState: "rolled_back", CanaryShare: 5, Experiment: "ab:s:v1,v2", SRMFlagged: true,
			}}, nil
		},
		Lag: func() []Lag { return []Lag{{Topic: "adrank.rank.requests", Records: 42}} },
	}
	want := `
# HELP adrank_canary_state 1 for a domain's canary's current state (running, completed, rolled_back, promoted).
# TYPE adrank_canary_state gauge
adrank_canary_state{domain="feed",state="rolled_back",version="v2"} 1
# HELP adrank_config_error 1 while a domain has a config error (a refused or deleted config).
# TYPE adrank_config_error gauge
adrank_config_error{domain="feed"} 1
# HELP adrank_experiment_srm_flagged 1 when an A/B test's sample ratio mismatch test flags it (p < 0.001).
# TYPE adrank_experiment_srm_flagged gauge
adrank_experiment_srm_flagged{domain="feed",experiment="ab:s:v1,v2"} 1
# HELP adrank_stream_lag_records Records the stream worker's group has not yet consumed, per topic.
# TYPE adrank_stream_lag_records gauge
adrank_stream_lag_records{topic="adrank.rank.requests"} 42
# HELP adrank_version_healthy_instances Healthy ranker instances of a domain's version.
# TYPE adrank_version_healthy_instances gauge
adrank_version_healthy_instances{domain="feed",version="v1"} 2
adrank_version_healthy_instances{domain="feed",version="v2"} 1
# HELP adrank_version_production 1 for the version serving a domain's production traffic.
# TYPE adrank_version_production gauge
adrank_version_production{domain="feed",version="v1"} 1
adrank_version_production{domain="feed",version="v2"} 0
# HELP adrank_state_scrape_error 1 when the last scrape could not read the domains' state.
# TYPE adrank_state_scrape_error gauge
adrank_state_scrape_error 0
`
	if err := testutil.CollectAndCompare(NewCollector(state), strings.NewReader(want), "adrank_canary_state", "adrank_config_error",
		"adrank_experiment_srm_flagged", "adrank_stream_lag_records", "adrank_version_healthy_instances", "adrank_version_production", "adrank_state_scrape_error"); err != nil {
		t.Error(err)
	}
	// A store that cannot be read: the scrape says so.
	broken := NewCollector(State{Domains: func(context.Context) ([]Domain, error) { return nil, errors.New("store down") }})
	if err := testutil.CollectAndCompare(broken, strings.NewReader("# HELP adrank_state_scrape_error 1 when the last scrape could not read the domains' state.\n# TYPE adrank_state_scrape_error gauge\nadrank_state_scrape_error 1\n"), "adrank_state_scrape_error"); err != nil {
		t.Error(err)
	}
}
