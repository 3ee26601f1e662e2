package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
)

// pageErrors collects the page's JavaScript exceptions and console errors.
type pageErrors struct {
	mu   sync.Mutex
	errs []string
}

func (p *pageErrors) listen(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				msg = "console.error: " + strings.Join(parts, " ")
			}
		}
		if msg != "" {
			p.mu.Lock()
			p.errs = append(p.errs, msg)
			p.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
}

func (p *pageErrors) get() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.errs...)
}

// artifacts is where browser tests keep their screenshots: $ADRANK_ARTIFACTS,
// else .artifacts in the repository (ignored by git).
func artifacts(t *testing.T, root string) string {
	t.Helper()
	dir := os.Getenv("ADRANK_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(root, ".artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The dashboard at /ui/, in a real browser, with experiments running: an
// A/B test and a shadow on feed (then a bandit), a canary and a refused
// auction config on stories. Its charts have data, it shows the config error, and the page
// throws no JavaScript error. Screenshots are kept as test artifacts.
func TestDashboardInABrowser(t *testing.T) {
	c := startCluster(t, [2]string{"feed/v1", "models/feed/v1.json"}, [2]string{"feed/v2", "models/feed/v2.json"},
		[2]string{"feed/v3", "models/feed/v2lr.json"}, [2]string{"stories/v1", "models/stories/v1.json"}, [2]string{"stories/v2", "models/stories/v1.json"})
	c.putKV("adrank/experiments/feed", `{"shadow": {"versions": ["v3"], "fraction": 1}, "ab": {"salt": "ui", "arms": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 1}]}}`)
	c.putKV("adrank/experiments/stories", `{"canary": {"version": "v2", "steps": [50, 100], "stepInterval": "1h"}}`)
	c.putKV("adrank/auction/stories", `{"type": "english"}`)
	eventually(t, settle, func() error {
		if c.report(t, "feed").GetAb() == nil || c.report(t, "stories").GetCanary() == nil {
			return fmt.Errorf("experiments not in force yet")
		}
		if e := c.domains()["stories"].GetAuctionConfigError(); e == "" {
			return fmt.Errorf("no auction config error yet")
		}
		return nil
	})
	gw := c.startGateway("--ui-sample", "200ms")

	// Traffic, with a click on every fifth impression, in rounds, so that
	// the samples see the counts grow.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	traffic := make(chan error, 1)
	go func() {
		for i := 0; ctx.Err() == nil; i++ {
			for _, domain := range []string{"feed", "stories"} {
				req := rankRequest(fmt.Sprintf("ui-%s-%d", domain, i), domain)
				req.UserId = fmt.Sprintf("u%d", i%500)
				rctx, rcancel := context.WithTimeout(ctx, settle)
				resp, err := c.router.Rank(rctx, req)
				if err == nil && i%5 == 0 {
					_, err = c.router.ReportEvents(rctx, &routerv1.ReportEventsRequest{Events: []*routerv1.Event{{ImpressionId: resp.GetResults()[0].GetImpressionId(), Type: routerv1.EventType_EVENT_TYPE_CLICK}}})
				}
				rcancel()
				if err != nil && ctx.Err() == nil {
					traffic <- err
					return
				}
			}
		}
		traffic <- nil
	}()

	page := browser(t)
	var errs pageErrors
	errs.listen(t, page)
	if err := chromedp.Do(page, chromedp.EmulateViewport(1280, 1000), chromedp.Navigate(gw+"/ui/?domain=feed&every=400")); err != nil {
		t.Fatal(err)
	}
	type chartState struct {
		Series  int `json:"series"`
		Points  int `json:"points"`
		NonNull int `json:"nonNull"`
	}
	var shown struct {
		Charts    map[string]chartState `json:"charts"`
		Refreshed int                   `json:"refreshed"`
		Errors    []string              `json:"errors"`
		Table     string                `json:"table"`
	}
	waitCharts := func(names ...string) {
		t.Helper()
		eventually(t, settle, func() error {
			shown.Charts = nil // json.Unmarshal would merge into the last answer's map
			eval(t, page, `return {charts: window.adrankUI.charts, refreshed: window.adrankUI.refreshed, errors: window.adrankUI.errors,
				table: document.querySelector("#domains").innerText};`, &shown)
			for _, n := range names {
				if s := shown.Charts[n]; s.Points < 3 || s.NonNull < 3 {
					return fmt.Errorf("chart %s: %+v (all: %v)", n, s, shown.Charts)
				}
			}
			return nil
		})
	}
	waitCharts("ab-ctr", "shadow-psi", "shadow-topk")
	if s := shown.Charts["ab-ctr"]; s.Series != 2 {
		t.Errorf("A/B chart has %d arms, want 2", s.Series)
	}
	for _, want := range []string{"feed", "stories", "A/B v1 50%", "canary v2 50.0%", "auction:", "shadow v3"} {
		if !strings.Contains(shown.Table, want) {
			t.Errorf("domains table lacks %q:\n%s", want, shown.Table)
		}
	}
	dir := artifacts(t, c.root)
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(page, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s (%d KiB)", path, len(png)/1024)
	}
	shot("ui-feed.png")

	// The other domain's tab: the canary's charts.
	// The page redraws its tabs on every refresh, so a tab found can be
	// replaced before the click lands ("Could not find node"): try again.
	clickTab := func(name string) {
		t.Helper()
		eventually(t, settle, func() error {
			ctx, cancel := context.WithTimeout(page, 5*time.Second)
			defer cancel()
			return chromedp.Do(ctx, chromedp.Click(`//nav[@id="tabs"]/button[text()="`+name+`"]`))
		})
	}
	clickTab("stories")
	waitCharts("canary-share", "canary-guardrail")
	shot("ui-stories.png")

	// feed moves to a bandit: its charts start over with the allocation.
	c.putKV("adrank/experiments/feed", `{"bandit": {"policy": "thompson", "versions": ["v1", "v2"]}}`)
	clickTab("feed")
	waitCharts("bandit-allocation")
	if s := shown.Charts["bandit-allocation"]; s.Series != 2 {
		t.Errorf("bandit chart has %d arms, want 2", s.Series)
	}
	shot("ui-feed-bandit.png")

	cancel()
	if err := <-traffic; err != nil {
		t.Fatalf("traffic: %v", err)
	}
	if e := append(errs.get(), shown.Errors...); len(e) > 0 {
		t.Fatalf("the page had JavaScript errors: %v", e)
	}
	t.Logf("charts %v after %d refreshes, no JavaScript error", shown.Charts, shown.Refreshed)
}
