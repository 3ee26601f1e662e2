package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"google.golang.org/protobuf/types/known/timestamppb"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/consultest"
	"github.com/adrank/adrank/platform/idsig"
)

// browser starts headless Chromium (Debian's) and returns a context for it.
func browser(t testing.TB) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not on PATH: apt-get install -y chromium (.ci/run installs it)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("no-first-run", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// eval runs an async JavaScript expression in the page and decodes its
// JSON-able result into out.
func eval(t testing.TB, ctx context.Context, js string, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](`(async () => {`+js+`})()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("in the page: %v\n%s", err, js)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("page answered %.300s: %v", raw, err)
		}
	}
}

// startGateway starts one more gateway, with more flags, and returns its
// URL once it is healthy.
func (c *cluster) startGateway(args ...string) string {
	c.t.Helper()
	ports, err := consultest.FreePorts(1)
	if err != nil {
		c.t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	c.start("gateway", append([]string{"--listen", addr}, args...)...)
	url := "http://" + addr
	eventually(c.t, settle, func() error {
		resp, err := http.Get(url + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
	return url
}

// edgeCluster is a cluster with feed/v2 in production (feed/v1 too), the
// bundles of both, and a gateway serving them; it returns the gateway's URL
// and the bundles' folder.
func edgeCluster(t testing.TB) (*cluster, string, string) {
	c := startCluster(t)
	c.putKV("adrank/domains/feed", `{"production": "v2"}`)
	c.putKV("adrank/auction/feed", `{"type": "gsp", "reserve_micros": 10000, "position_factors": [1, 0.7, 0.5]}`)
	c.startRanker("feed/v1", "models/feed/v1.json")
	c.startRanker("feed/v2", "models/feed/v2.json")
	bundles := t.TempDir()
	for _, v := range []string{"v1", "v2"} {
		out, err := exec.Command(c.bin("adrankctl"), "edge", "build", "--domain", "feed", "--version", v, "--out", bundles,
			"--model", filepath.Join(c.root, "models", "feed", v+".json"), "--scorer", filepath.Join(c.root, "bin", "edge")).CombinedOutput()
		if err != nil {
			t.Fatalf("edge build %s: %v\n%s", v, err, out)
		}
	}
	gw := c.startGateway("--edge-dir", bundles, "--timeout", "10s")
	eventually(t, settle, func() error {
		d := c.domains()["feed"]
		if d.GetProductionVersion() != "v2" || versionOf(d, "v1") == nil {
			return fmt.Errorf("feed: %v", d)
		}
		return nil
	})
	return c, gw, bundles
}

// BenchmarkEdgeBrowser measures the edge budgets in a real browser (make
// bench-edge): the time from navigation to the first ranking (cold cache),
// and the time per candidate of the page's rank (scoring, auction and the
// JSON across the JavaScript boundary, in WebAssembly), over 200 users x 50
// candidates. The bundle's gzipped sizes are reported too.
func BenchmarkEdgeBrowser(b *testing.B) {
	_, gw, bundles := edgeCluster(b)
	for _, f := range []string{"scorer.wasm", "model.json", "wasm_exec.js", "features.json"} {
		data, err := os.ReadFile(filepath.Join(bundles, "feed", "v2", f))
		if err != nil {
			b.Fatal(err)
		}
		var gz bytes.Buffer
		w, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
		w.Write(data)
		w.Close()
		b.ReportMetric(float64(len(data)), f+"_bytes")
		b.ReportMetric(float64(gz.Len()), f+"_gzip_bytes")
	}
	for range b.N {
		ctx := browser(b)
		if err := chromedp.Do(ctx, chromedp.Navigate(gw+"/edge/demo.html")); err != nil {
			b.Fatal(err)
		}
		var m struct {
			FirstMs, PerCandidateNs float64
		}
		eval(b, ctx, `const e = new AdrankEdge({domain: "feed", userID: "u42", device: "mobile"});
			await e.start();
			const ads = Array.from({length: 50}, (_, j) => "ad" + (1 + j * 19));
			await e.sync(ads);
			const cands = ads.map((id, j) => ({ad_id: id, advertiser_id: "adv" + (j % 7 + 1), bid_micros: 150000 + 23000 * j}));
			e.rank({candidates: cands, slots: 3, record: false});
			const first = performance.now(); // since navigation
			const mem = {m: new Map(), getItem(k) { return this.m.has(k) ? this.m.get(k) : null; }, setItem(k, v) { this.m.set(k, v); }};
			const users = [];
			for (let i = 1; i <= 200; i++) {
				const u = new AdrankEdge({domain: "feed", userID: "u" + i, device: "mobile", storage: mem});
				u.manifest = e.manifest; u.bundle = e.bundle; u.assignment = e.assignment;
				await u.sync(ads);
				users.push(u);
			}
			for (const u of users.slice(0, 20)) u.rank({candidates: cands, slots: 3, record: false}); // warm up
			const t0 = performance.now();
			for (let r = 0; r < 5; r++) for (const u of users) u.rank({candidates: cands, slots: 3, record: false});
			const took = performance.now() - t0;
			return {FirstMs: first, PerCandidateNs: took * 1e6 / (5 * 200 * 50)};`, &m)
		b.ReportMetric(m.FirstMs, "first_rank_ms")
		b.ReportMetric(m.PerCandidateNs, "ns/candidate")
	}
}

// edgeResult is what the page's rank returns.
type edgeResult struct {
	Pctrs   []float64 `json:"pctrs"`
	Results []struct {
		AdID         string  `json:"ad_id"`
		Slot         int     `json:"slot"`
		Pctr         float64 `json:"pctr"`
		PriceMicros  int64   `json:"price_micros"`
		ImpressionID string  `json:"impression_id"`
	} `json:"results"`
	Error string `json:"error"`
}

// The edge client in a real browser: its scores, prices and order equal
// the router's, its assignment equals the router's, and offline it still
// ranks, sending what it showed and what was clicked, once, when online.
func TestEdgeInABrowser(t *testing.T) {
	c, gw, _ := edgeCluster(t)

	ctx := browser(t)
	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate(gw+"/edge/demo.html")); err != nil {
		t.Fatal(err)
	}
	var started struct {
		Version  string  `json:"version"`
		StartMs  float64 `json:"start_ms"`
		Strategy string  `json:"strategy"`
	}
	eval(t, ctx, `window.pg = new AdrankEdge({domain: "feed", userID: "u1", device: "mobile"});
		await pg.start();
		return {version: pg.bundle.version, start_ms: pg.timings.start_ms, strategy: pg.assignment.strategy};`, &started)
	t.Logf("page loaded and bundle started in %v (start itself %.0f ms): version %s", time.Since(start), started.StartMs, started.Version)
	if started.Version != "v2" || started.Strategy != "production" {
		t.Fatalf("started %+v", started)
	}

	// Parity: 1,000 users x 50 candidates, ranked in the page and by the
	// router, with the same request IDs, context and bids.
	const users, cands = 1000, 50
	when := time.Date(2026, 11, 26, 9, 30, 0, 0, time.UTC)
	var ads []string
	for j := range cands {
		ads = append(ads, fmt.Sprintf("ad%d", 1+(j*19)%1000))
	}
	adsJSON, _ := json.Marshal(ads)
	var page []edgeResult
	eval(t, ctx, fmt.Sprintf(`const ads = %s, out = [];
		// 1,000 users' features overflow localStorage's quota: keep them in memory.
		const mem = {m: new Map(), getItem(k) { return this.m.has(k) ? this.m.get(k) : null; }, setItem(k, v) { this.m.set(k, v); }};
		for (let i = 1; i <= %d; i++) {
			const e = new AdrankEdge({domain: "feed", userID: "u" + i, device: "mobile", storage: mem});
			e.manifest = pg.manifest; e.bundle = pg.bundle; e.assignment = pg.assignment;
			await e.sync(ads);
			out.push(e.rank({request_id: "parity-" + i, now: %d, slots: %d, record: false,
				candidates: ads.map((id, j) => ({ad_id: id, advertiser_id: "adv" + (j %% 7 + 1), bid_micros: 150000 + 23000 * j}))}));
		}
		return out;`, adsJSON, users, when.UnixMilli(), cands), &page)
	if len(page) != users {
		t.Fatalf("%d rankings from the page", len(page))
	}
	keys, err := idsig.Load(c.impressionKey)
	if err != nil {
		t.Fatal(err)
	}
	var worst float64
	for i := range users {
		req := &routerv1.RankRequest{RequestId: fmt.Sprintf("parity-%d", i+1), UserId: fmt.Sprintf("u%d", i+1), Domain: "feed", Slots: cands,
			Context: &routerv1.RequestContext{Timestamp: timestamppb.New(when), Device: routerv1.Device_DEVICE_MOBILE}}
		for j, id := range ads {
			req.Candidates = append(req.Candidates, &routerv1.Candidate{AdId: id, AdvertiserId: fmt.Sprintf("adv%d", j%7+1), BidMicros: int64(150000 + 23000*j)})
		}
		resp, err := rank(t, c, req)
		if err != nil {
			t.Fatal(err)
		}
		got := page[i]
		if got.Error != "" || len(got.Results) != len(resp.GetResults()) {
			t.Fatalf("user %d: page %d results (%s), router %d", i+1, len(got.Results), got.Error, len(resp.GetResults()))
		}
		for k, r := range resp.GetResults() {
			g := got.Results[k]
			d := math.Abs(g.Pctr - r.GetPctr())
			worst = math.Max(worst, d)
			if g.AdID != r.GetAdId() || g.Slot != int(r.GetSlot()) || g.PriceMicros != r.GetPriceMicros() || d > 1e-6 || keys.Sign(g.ImpressionID) != r.GetImpressionId() {
				t.Fatalf("user %d slot %d: page %+v, router %v", i+1, k+1, g, r)
			}
		}
	}
	t.Logf("%d users x %d candidates: same order, prices and impression IDs (the router's signed); largest pCTR difference %.2g", users, cands, worst)

	// Assignment: an A/B test; 10,000 users assigned in the page and by the router.
	c.putKV("adrank/experiments/feed", `{"ab": {"salt": "edge", "arms": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 3}]}}`)
	var arms []string
	eventually(t, settle, func() error {
		var m struct {
			Plan struct {
				AB *struct{} `json:"ab"`
			} `json:"plan"`
		}
		eval(t, ctx, `const r = await fetch("/v1/edge/feed/manifest"); return await r.json();`, &m)
		if m.Plan.AB == nil {
			return fmt.Errorf("the manifest has no A/B plan yet")
		}
		return nil
	})
	eval(t, ctx, `await pg.start(); const out = [];
		for (let i = 1; i <= 10000; i++) out.push(pg.assignFor("u" + i).version);
		return out;`, &arms)
	mismatch := assignmentsDiffer(t, c, arms)
	if mismatch != "" {
		t.Fatal(mismatch)
	}
	t.Logf("10,000 users: the page's arms equal the router's")

	// Offline: the page ranks from what it has, queues impressions and a
	// click, and sends them once back online; the A/B report counts them
	// once, and batches sent again change nothing.
	eval(t, ctx, `window.off = new AdrankEdge({domain: "feed", userID: "u42", device: "mobile"});
		await off.start(); await off.sync(["ad1", "ad2", "ad3"]); return null;`, nil)
	before := stableCounts(t, c)
	setOffline(t, ctx, true)
	var offline struct {
		Fetch   string `json:"fetch"`
		Version string `json:"version"`
		Shown   int    `json:"shown"`
		Pending struct {
			Impressions int `json:"impressions"`
			Events      int `json:"events"`
		} `json:"pending"`
	}
	eval(t, ctx, `let fetchErr = "";
		try { await fetch("/healthz", {cache: "no-store"}); } catch (x) { fetchErr = String(x); }
		// A fresh client, as after a reload: the manifest, bundle and
		// features it has kept.
		const e = new AdrankEdge({domain: "feed", userID: "u42", device: "mobile"});
		await e.start();
		window.off = e;
		const shown = [];
		for (let i = 0; i < 5; i++) {
			const r = e.rank({request_id: "offline-" + i, slots: 2, candidates: [
				{ad_id: "ad1", advertiser_id: "adv1", bid_micros: 900000}, {ad_id: "ad2", advertiser_id: "adv2", bid_micros: 800000},
				{ad_id: "ad3", advertiser_id: "adv3", bid_micros: 700000}]});
			shown.push(...r.results);
		}
		e.click(shown[0].impression_id); e.click(shown[1].impression_id);
		return {fetch: fetchErr, version: e.bundle.version, shown: shown.length, pending: e.pending()};`, &offline)
	t.Logf("offline: %+v", offline)
	if offline.Fetch == "" || offline.Shown != 10 || offline.Pending.Impressions != 5 || offline.Pending.Events != 2 {
		t.Fatalf("offline: %+v", offline)
	}
	setOffline(t, ctx, false)
	type sent struct {
		Impressions struct {
			Accepted   int `json:"accepted"`
			Duplicates int `json:"duplicates"`
		} `json:"impressions"`
		Events struct {
			Accepted   int `json:"accepted"`
			Duplicates int `json:"duplicates"`
		} `json:"events"`
	}
	var flushed, again sent
	eval(t, ctx, `window.queued = {served: JSON.parse(localStorage.getItem("adrank-edge:feed:impressions")),
			events: JSON.parse(localStorage.getItem("adrank-edge:feed:events"))};
		return await off.flush();`, &flushed)
	if flushed.Impressions.Accepted != 5 || flushed.Events.Accepted != 2 {
		t.Fatalf("flush: %+v", flushed)
	}
	after := stableCounts(t, c)
	arm := offline.Version
	if after[arm][0]-before[arm][0] != 10 || after[arm][1]-before[arm][1] != 2 {
		t.Fatalf("arm %s: impressions and clicks went %v -> %v, want +10 and +2", arm, before[arm], after[arm])
	}
	// Sent again: the impressions and the events (with the router's signed
	// IDs) count once; the events with the device's own, unsigned IDs are
	// refused as forged.
	var forged struct {
		Rejected int      `json:"rejected"`
		Results  []string `json:"results"`
	}
	eval(t, ctx, `const post = async (path, body) => (await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)})).json();
		const signed = queued.events.map((e) => Object.assign({}, e, {impression_id: off.signed(e.impression_id)}));
		if (signed.some((e, i) => e.impression_id === queued.events[i].impression_id)) throw new Error("no signed ID learnt");
		window.forged = await post("/v1/events", {events: queued.events});
		return {impressions: await post("/v1/edge/feed/impressions", {served: queued.served}), events: await post("/v1/events", {events: signed})};`, &again)
	if again.Impressions.Duplicates != 5 || again.Events.Duplicates != 2 {
		t.Fatalf("sent again: %+v", again)
	}
	eval(t, ctx, `return window.forged;`, &forged)
	if forged.Rejected != 2 || fmt.Sprint(forged.Results) != "[EVENT_RESULT_REJECTED EVENT_RESULT_REJECTED]" {
		t.Fatalf("events with the device's unsigned IDs: %+v, want both rejected", forged)
	}
	if counts := stableCounts(t, c); fmt.Sprint(counts) != fmt.Sprint(after) {
		t.Fatalf("batches sent again changed the counts: %v -> %v", after, counts)
	}

	// A malformed batch: 400 naming the field, and nothing counted.
	bad := `{"served": [{"request_id": "m1", "user_id": "u1", "version": "v2", "model_sha256": "` + strings.Repeat("ab", 32) +
		`", "results": [{"ad_id": "ad1", "slot": 0, "price_micros": 1, "impression_id": "` + strings.Repeat("0", 32) + `"}]}]}`
	resp, err := http.Post(gw+"/v1/edge/feed/impressions", "application/json", strings.NewReader(bad))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "served[0].results[0].slot") {
		t.Fatalf("malformed batch: %d %s", resp.StatusCode, body)
	}
	if counts := stableCounts(t, c); fmt.Sprint(counts) != fmt.Sprint(after) {
		t.Fatalf("a malformed batch changed the counts: %v -> %v", after, counts)
	}

	// A mismatched bundle (its files do not make its sha256), then a
	// corrupt one (a file whose bytes are not the manifest's): the client
	// refuses each with an error it can show and keeps ranking with the
	// last good bundle.
	var refused []struct {
		Error   string `json:"error"`
		Bundle  string `json:"bundle"`
		Results int    `json:"results"`
	}
	eval(t, ctx, `const hexOf = async (s) => Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s))), (b) => b.toString(16).padStart(2, "0")).join("");
		const realFetch = window.fetch, good = pg.bundle.bundle_sha256, out = [];
		for (const kind of ["mismatched", "corrupt"]) {
			window.fetch = async (url, opts) => {
				const r = await realFetch(url, opts);
				if (!String(url).endsWith("/manifest")) return r;
				const m = await r.json(), b = m.bundles[pg.bundle.version];
				b.files["model.json"].sha256 = "0".repeat(64);
				b.bundle_sha256 = "1".repeat(64); // a new bundle, whose files do not make this sha256
				if (kind === "corrupt") { // a consistent manifest whose model file's bytes differ
					const lines = Object.keys(b.files).sort().map((n) => n + " " + b.files[n].sha256 + "\n").join("");
					b.bundle_sha256 = await hexOf(lines);
				}
				return new Response(JSON.stringify(m), {status: 200});
			};
			pg.lastError = null;
			await pg.start();
			window.fetch = realFetch;
			const r = pg.rank({request_id: "after-" + kind, slots: 1, record: false, candidates: [{ad_id: "ad1", bid_micros: 900000}]});
			out.push({error: pg.lastError, bundle: pg.bundle.bundle_sha256 === good ? "last good" : "changed", results: r.results.length});
		}
		return out;`, &refused)
	for i, want := range []string{"bundle_sha256 does not match its files", "model.json has sha256"} {
		if r := refused[i]; !strings.Contains(r.Error, want) || r.Bundle != "last good" || r.Results != 1 {
			t.Fatalf("bundle %d: %+v, want refused saying %q, ranking with the last good bundle", i, r, want)
		}
	}
	t.Logf("refused bundles: %q; %q", refused[0].Error, refused[1].Error)
}

// setOffline switches the page's network off or on.
func setOffline(t *testing.T, ctx context.Context, off bool) {
	t.Helper()
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	_, err := chromedp.Call(ctx, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
		MatchedNetworkConditions: []*network.Conditions{{Offline: off, DownloadThroughput: -1, UploadThroughput: -1}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// stableCounts reads the A/B report's impressions and clicks per arm once
// two reads 500 ms apart agree (the router writes what it served every
// 100 ms).
func stableCounts(t *testing.T, c *cluster) map[string][2]float64 {
	t.Helper()
	var last map[string][2]float64
	eventually(t, settle, func() error {
		rep, err := c.tryReport("feed")
		if err != nil {
			return err
		}
		now := map[string][2]float64{}
		for _, a := range rep.GetAb().GetArms() {
			now[a.GetVersion()] = [2]float64{a.GetImpressions(), a.GetClicks()}
		}
		if fmt.Sprint(now) != fmt.Sprint(last) {
			last = now
			time.Sleep(500 * time.Millisecond)
			return fmt.Errorf("counts still moving: %v", now)
		}
		return nil
	})
	return last
}

// assignmentsDiffer ranks each user on the router and compares its arm
// with the page's.
func assignmentsDiffer(t *testing.T, c *cluster, arms []string) string {
	var mu sync.Mutex
	var diff []string
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				req := &routerv1.RankRequest{RequestId: fmt.Sprintf("assign-%d", i), UserId: fmt.Sprintf("u%d", i+1), Domain: "feed", Slots: 1,
					Candidates: []*routerv1.Candidate{{AdId: "ad1", BidMicros: 100000}}}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := c.router.Rank(ctx, req)
				cancel()
				mu.Lock()
				if err != nil || resp.GetAssignment().GetVersion() != arms[i] {
					diff = append(diff, fmt.Sprintf("u%d: page %s, router %s (%v)", i+1, arms[i], resp.GetAssignment().GetVersion(), err))
				}
				mu.Unlock()
			}
		}()
	}
	for i := range arms {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(diff) > 0 {
		return fmt.Sprintf("%d of %d users assigned differently, e.g. %s", len(diff), len(arms), strings.Join(diff[:min(5, len(diff))], "; "))
	}
	return ""
}
