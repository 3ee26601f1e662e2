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
