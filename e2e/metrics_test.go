package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protojson"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/consultest"
)

// scrape reads a process's /metrics.
func scrape(t *testing.T, p *proc) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + p.metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s /metrics: %v", p.name, err)
	}
	return fams
}

// value sums the samples of family name whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	sum, found := 0.0, false
metrics:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue metrics
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum, found
}

// Every service serves Prometheus metrics; the router's count what it did,
// through the real processes. The Grafana dashboard and the alert rules
// name only metrics that exist.
func TestMetrics(t *testing.T) {
	c := startClusterOpts(t, clusterOptions{consul: consultest.Start, metrics: true}, [2]string{"feed/v1", "models/feed/v1.json"}, [2]string{"feed/v2", "models/feed/v2.json"})
	// A canary, so that its state is exported.
	c.putKV("adrank/experiments/feed", `{"canary": {"version": "v2", "steps": [50, 100], "stepInterval": "1h"}}`)
	eventually(t, settle, func() error {
		if s := c.report(t, "feed").GetCanary().GetState(); s != "running" {
			return fmt.Errorf("canary %q", s)
		}
		return nil
	})
	const n = 20
	var first *routerv1.RankResponse
	for i := range n {
		body, err := protojson.Marshal(rankRequest(fmt.Sprintf("metrics-%d", i), "feed"))
		if err != nil {
			t.Fatal(err)
		}
		code, out := c.post("/v1/rank", body)
		if code != http.StatusOK {
			t.Fatalf("rank: %d %s", code, out)
		}
		if first == nil {
			first = &routerv1.RankResponse{}
			if err := protojson.Unmarshal(out, first); err != nil {
				t.Fatal(err)
			}
		}
	}
	events := fmt.Sprintf(`{"events": [{"impression_id": %q, "type": "EVENT_TYPE_CLICK"}, {"impression_id": %q, "type": "EVENT_TYPE_CLICK"}]}`,
		first.GetResults()[0].GetImpressionId(), strings.Repeat("ab", 16)+".AAAAAAAAAAAAAAAAAAAAAA")
	if code, out := c.post("/v1/events", []byte(events)); code != http.StatusOK {
		t.Fatalf("events: %d %s", code, out)
	}

	router, ranker, gateway := c.proc("routersvc"), c.proc("rankersvc"), c.proc("gateway")
	var rf map[string]*dto.MetricFamily
	// The lab's counters are per process and immediate; wait only for the
	// scrape to see the canary's state.
	eventually(t, settle, func() error {
		rf = scrape(t, router)
		if _, ok := value(rf, "adrank_canary_state", map[string]string{"domain": "feed", "state": "running"}); !ok {
			return fmt.Errorf("no canary state yet")
		}
		return nil
	})
	for _, tt := range []struct {
		name   string
		labels map[string]string
		min    float64
		max    float64
	}{
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Rank", "grpc_code": "OK"}, n, n},
		{"grpc_server_handling_seconds", map[string]string{"grpc_method": "Rank"}, n, n},
		{"grpc_client_handled_total", map[string]string{"grpc_method": "Score", "grpc_code": "OK"}, n, 2 * n},
		{"adrank_served_requests_total", map[string]string{"domain": "feed"}, n, n},
		{"adrank_ranker_call_duration_seconds", map[string]string{"domain": "feed", "outcome": "ok"}, n, 2 * n},
		{"adrank_impressions_total", map[string]string{"domain": "feed", "strategy": "canary"}, 3 * n, 3 * n},
		{"adrank_events_total", map[string]string{"domain": "feed", "type": "click"}, 1, 1},
		{"adrank_events_refused_total", map[string]string{"reason": "forged"}, 1, 1},
		{"adrank_events_refused_total", map[string]string{"reason": "unknown"}, 0, 0},
		{"adrank_version_healthy_instances", map[string]string{"domain": "feed", "version": "v1"}, 1, 1},
		{"adrank_version_production", map[string]string{"domain": "feed", "version": "v1"}, 1, 1},
		{"adrank_canary_share_percent", map[string]string{"domain": "feed", "version": "v2"}, 50, 50},
		{"adrank_config_error", map[string]string{"domain": "feed"}, 0, 0},
		{"adrank_overload_refusals_total", nil, 0, 0},
		{"go_goroutines", nil, 1, 1e6},
	} {
		got, ok := value(rf, tt.name, tt.labels)
		if !ok || got < tt.min || got > tt.max {
			t.Errorf("router %s%v = %v (found %v), want %v to %v", tt.name, tt.labels, got, ok, tt.min, tt.max)
		}
	}
	if ts, ok := value(rf, "adrank_consul_watch_last_success_timestamp_seconds", nil); !ok || ts <= 0 {
		t.Errorf("no Consul watch freshness: %v %v", ts, ok)
	}
	// The two rankers together served every Score call.
	scores := 0.0
	for _, p := range c.procs {
		if p.name == "rankersvc" {
			v, _ := value(scrape(t, p), "grpc_server_handled_total", map[string]string{"grpc_method": "Score", "grpc_code": "OK"})
			scores += v
		}
	}
	if want, _ := value(rf, "grpc_client_handled_total", map[string]string{"grpc_method": "Score", "grpc_code": "OK"}); scores != want {
		t.Errorf("rankers served %v Score calls, the router made %v", scores, want)
	}
	gf := scrape(t, gateway)
	if v, _ := value(gf, "adrank_http_requests_total", map[string]string{"method": "post", "code": "200"}); v < n+1 {
		t.Errorf("gateway counted %v successful POSTs, want at least %d", v, n+1)
	}
	for _, p := range []string{"featuresvc", "auctionsvc"} {
		if v, _ := value(scrape(t, c.proc(p)), "grpc_server_handled_total", map[string]string{"grpc_code": "OK"}); v < 1 {
			t.Errorf("%s counted no call", p)
		}
	}

	// The dashboard and the alerts name only metrics that exist: in these
	// scrapes, or, for series that appear only with an A/B test, a stream
	// worker or a first dropped shadow, among the router's declared ones
	// (the telemetry package's tests export those).
	known := map[string]bool{"adrank_experiment_srm_flagged": true, "adrank_stream_lag_records": true, "adrank_shadow_dropped_total": true}
	for _, fams := range []map[string]*dto.MetricFamily{rf, gf, scrape(t, ranker)} {
		for name, f := range fams {
			known[name] = true
			if f.GetType() == dto.MetricType_HISTOGRAM {
				known[name+"_bucket"], known[name+"_count"], known[name+"_sum"] = true, true, true
			}
		}
	}
	var exprs []string
	dash, err := os.ReadFile(filepath.Join(c.root, "deploy", "grafana", "adrank.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dash, &d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	rules, err := os.ReadFile(filepath.Join(c.root, "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	exprs = append(exprs, string(rules))
	names := regexp.MustCompile(`\b(adrank|grpc)_[a-z_]+`)
	checked := 0
	for _, e := range exprs {
		for _, name := range names.FindAllString(e, -1) {
			if strings.HasPrefix(name, "grpc_code") || strings.HasPrefix(name, "grpc_method") || strings.HasPrefix(name, "grpc_service") {
				continue // labels
			}
			checked++
			if !known[name] {
				t.Errorf("the dashboard or alerts use %s, which no service exports", name)
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d metric names checked in the dashboard and alerts", checked)
	}
	t.Logf("%d metric references in the dashboard and alerts, all exported; %d router families", checked, len(rf))
}
