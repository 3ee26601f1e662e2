package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
)

// adrankctl versions and report: tables for people, and with --output json
// the router's own answer.
func TestAdrankctlVersionsAndReport(t *testing.T) {
	c := startCluster(t, [2]string{"feed/v1", "models/feed/v1.json"}, [2]string{"feed/v2", "models/feed/v2.json"})
	c.putKV("adrank/experiments/feed", `{"ab": {"salt": "ctl", "arms": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 1}]}}`)
	eventually(t, settle, func() error {
		if id := c.report(t, "feed").GetExperimentId(); id != "ab:ctl:v1,v2" {
			return fmt.Errorf("experiment %q", id)
		}
		return nil
	})
	for i := range 40 {
		req := rankRequest(fmt.Sprintf("ctl-%d", i), "feed")
		req.UserId = fmt.Sprintf("u%d", i)
		if _, err := rank(t, c, req); err != nil {
			t.Fatal(err)
		}
	}
	router := []string{"--router", c.routerAddr}

	out, err := c.adrankctl(t, "", append([]string{"versions"}, router...)...)
	if err != nil {
		t.Fatalf("versions: %v\n%s", err, out)
	}
	for _, want := range []string{"DOMAIN", "VERSION", "HEALTHY", "feed", "v1", "production", "1/1", "v2", "stories"} {
		if !strings.Contains(out, want) {
			t.Errorf("versions table lacks %q:\n%s", want, out)
		}
	}
	out, err = c.adrankctl(t, "", append([]string{"versions", "--output", "json"}, router...)...)
	if err != nil {
		t.Fatalf("versions --output json: %v\n%s", err, out)
	}
	var got routerv1.ListDomainsResponse
	if err := protojson.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("versions JSON: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	want, err := c.router.ListDomains(ctx, &routerv1.ListDomainsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, &got, protocmp.Transform(), protocmp.IgnoreFields(&routerv1.SnapshotInfo{}, "age_ms")); diff != "" {
		t.Errorf("versions JSON differs from ListDomains (-router +adrankctl):\n%s", diff)
	}

	// Wait for the impressions to be written, then read the report both ways.
	eventually(t, settle, func() error {
		var n float64
		for _, a := range c.report(t, "feed").GetAb().GetArms() {
			n += a.GetImpressions()
		}
		if n < 120 {
			return fmt.Errorf("%v impressions", n)
		}
		return nil
	})
	out, err = c.adrankctl(t, "", append([]string{"report", "feed"}, router...)...)
	if err != nil {
		t.Fatalf("report: %v\n%s", err, out)
	}
	for _, want := range []string{"experiment ab:ctl:v1,v2", "A/B test (salt ctl", "IMPRESSIONS", "sample ratio", "ALWAYS-VALID P", "v1", "v2"} {
		if !strings.Contains(out, want) {
			t.Errorf("report table lacks %q:\n%s", want, out)
		}
	}
	out, err = c.adrankctl(t, "", append([]string{"report", "feed", "--output", "json"}, router...)...)
	if err != nil {
		t.Fatalf("report --output json: %v\n%s", err, out)
	}
	var rep routerv1.GetExperimentReportResponse
	if err := protojson.Unmarshal([]byte(out), &rep); err != nil || len(rep.GetAb().GetArms()) != 2 {
		t.Fatalf("report JSON: %v\n%s", err, out)
	}
	// Mistakes get a clear error and a non-zero exit.
	if out, err := c.adrankctl(t, "", append([]string{"report", "nope"}, router...)...); err == nil || !strings.Contains(out, "NotFound") {
		t.Errorf("report of an unknown domain: %v\n%s", err, out)
	}
	if out, err := c.adrankctl(t, "", append([]string{"versions", "--output", "yaml"}, router...)...); err == nil || !strings.Contains(out, "want table or json") {
		t.Errorf("--output yaml: %v\n%s", err, out)
	}
}

// Off-policy evaluation through the real processes: production logs what it
// serves, and adrankctl ope (gRPC) and GET /v1/domains/feed/ope (REST)
// estimate v2 from it before v2 serves anyone. Mistakes get clear errors.
func TestOffPolicyEvaluation(t *testing.T) {
	c := startCluster(t, [2]string{"feed/v1", "models/feed/v1.json"}, [2]string{"feed/v2", "models/feed/v2.json"})
	router := []string{"--router", c.routerAddr}
	// Nothing logged yet.
	if out, err := c.adrankctl(t, "", append([]string{"ope", "--domain", "feed", "--candidate", "v2"}, router...)...); err == nil || !strings.Contains(out, "explore") {
		t.Errorf("ope without logs: %v\n%s", err, out)
	}
	c.putKV("adrank/experiments/feed", `{"explore": {"share": 1, "epsilon": 0.5}}`)
	eventually(t, settle, func() error {
		if e := c.report(t, "feed").GetExperiment(); !strings.Contains(e, "explore") {
			return fmt.Errorf("experiment %q", e)
		}
		return nil
	})
	var clicks []*routerv1.Event
	for i := range 200 {
		req := rankRequest(fmt.Sprintf("ope-%d", i), "feed")
		req.UserId = fmt.Sprintf("u%d", i)
		resp, err := rank(t, c, req)
		if err != nil {
			t.Fatal(err)
		}
		if s := resp.GetAssignment().GetStrategy(); s != routerv1.Strategy_STRATEGY_PRODUCTION {
			t.Fatalf("strategy %v", s)
		}
		if i%4 == 0 { // a click on the first ad of every fourth request
			clicks = append(clicks, &routerv1.Event{ImpressionId: resp.GetResults()[0].GetImpressionId(), Type: routerv1.EventType_EVENT_TYPE_CLICK})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	if r, err := c.router.ReportEvents(ctx, &routerv1.ReportEventsRequest{Events: clicks}); err != nil || r.GetAccepted() != 50 {
		t.Fatalf("clicks: %v %v", r, err)
	}
	var got routerv1.EvaluateOffPolicyResponse
	eventually(t, settle, func() error {
		out, err := c.adrankctl(t, "", append([]string{"ope", "--domain", "feed", "--candidate", "v2", "--output", "json"}, router...)...)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if err := protojson.Unmarshal([]byte(out), &got); err != nil {
			return err
		}
		if got.GetRecords() != 200 {
			return fmt.Errorf("%v records", got.GetRecords())
		}
		return nil
	})
	for name, e := range map[string]*routerv1.OffPolicyEstimate{"ips": got.GetIps(), "snips": got.GetSnips(), "dr": got.GetDoublyRobust()} {
		if !(e.GetCiLow() <= e.GetValue() && e.GetValue() <= e.GetCiHigh() && e.GetCiHigh() > e.GetCiLow()) {
			t.Errorf("%s: %v", name, e)
		}
	}
	if got.GetMatchRate() <= 0 || got.GetProductionVersion() != "v1" || got.GetSkipped() != 0 || got.GetClicks() != 50 {
		t.Errorf("estimate %v", &got)
	}
	out, err := c.adrankctl(t, "", append([]string{"ope", "--domain", "feed", "--candidate", "v2"}, router...)...)
	if err != nil || !strings.Contains(out, "doubly robust") || !strings.Contains(out, "200 requests") {
		t.Errorf("ope table: %v\n%s", err, out)
	}
	code, body := c.get("/v1/domains/feed/ope?candidate=v2")
	var rest routerv1.EvaluateOffPolicyResponse
	if err := protojson.Unmarshal(body, &rest); code != 200 || err != nil || rest.GetRecords() != 200 || rest.GetIps().GetValue() != got.GetIps().GetValue() {
		t.Errorf("REST: %d %v\n%s", code, err, body)
	}
	// A version without a ranker, and no candidate: clear errors.
	if code, body := c.get("/v1/domains/feed/ope?candidate=v9"); code != 400 || !strings.Contains(string(body), "no healthy instance") {
		t.Errorf("unknown candidate: %d %s", code, body)
	}
	if code, body := c.get("/v1/domains/feed/ope"); code != 400 || !strings.Contains(string(body), "candidate") {
		t.Errorf("no candidate: %d %s", code, body)
	}
}
