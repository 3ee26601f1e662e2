package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/consultest"
)

// startRankerBehindProxy starts a ranker that Consul knows only by the
// address of a fault-injecting TCP proxy (toxiproxy, as a library) in front
// of it, and waits until it is healthy. The service has no test hooks: the
// faults are on the wire.
func (c *cluster) startRankerBehindProxy(dv, modelPath string) (*proc, *toxiproxy.Proxy) {
	c.t.Helper()
	ports, err := consultest.FreePorts(2)
	if err != nil {
		c.t.Fatal(err)
	}
	upstream, front := "127.0.0.1:"+strconv.Itoa(ports[0]), "127.0.0.1:"+strconv.Itoa(ports[1])
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	proxy := toxiproxy.NewProxy(server, dv, front, upstream)
	if err := proxy.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(proxy.Stop) // runs after the ranker's own cleanup: last in, first out
	p := c.startRanker(dv, modelPath, "--listen", upstream, "--advertise", front)
	return p, proxy
}

// addLatency delays every byte the proxied ranker sends back by d.
func addLatency(t *testing.T, p *toxiproxy.Proxy, d time.Duration) {
	t.Helper()
	js := fmt.Sprintf(`{"name": "latency", "type": "latency", "stream": "downstream", "attributes": {"latency": %d}}`, d.Milliseconds())
	if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		t.Fatal(err)
	}
}

// startRouter starts one more router on the cluster, with extra flags, and
// returns its address and a client.
func (c *cluster) startRouter(args ...string) (string, routerv1.RouterServiceClient) {
	c.t.Helper()
	ports, err := consultest.FreePorts(1)
	if err != nil {
		c.t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	c.start("routersvc", append([]string{"--listen", addr, "--state-file", filepath.Join(c.t.TempDir(), "router.db")}, args...)...)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cc.Close() })
	client := routerv1.NewRouterServiceClient(cc)
	eventually(c.t, 10*time.Second, func() error {
		load := steadyLoad(client, 1, 0)
		time.Sleep(50 * time.Millisecond)
		if res := load(); res.ok == 0 {
			return fmt.Errorf("router %s: no answer yet: %v", addr, res.firstErr)
		}
		return nil
	})
	return addr, client
}

// One of two instances of the production version answers 50 ms late. The
// router hedges (--hedge-after 25ms, the default): a call still unanswered
// after 25 ms goes once more, to the other instance, and the first answer
// wins. A router with hedging off, on the same cluster and load, shows the
// fault is real.
func TestSlowRankerInstance(t *testing.T) {
	c := startCluster(t, demoRankers...)
	_, proxy := c.startRankerBehindProxy("feed/v1", "models/feed/v1.json")
	if n := len(c.rankerInstances("feed", "v1", true)); n != 2 {
		t.Fatalf("%d healthy feed/v1 instances, want 2", n)
	}
	_, unhedged := c.startRouter("--hedge-after", "0")
	addLatency(t, proxy, 50*time.Millisecond)

	const budget = 250 * time.Millisecond // routersvc --budget default
	measure := func(client routerv1.RouterServiceClient) loadResult {
		stop := steadyLoad(client, 4, 2*time.Millisecond)
		time.Sleep(4 * time.Second)
		return stop()
	}
	hedged, control := measure(c.router), measure(unhedged)
	t.Logf("hedging on: %d calls, %d failed, p99 %v; hedging off: %d calls, %d failed, p99 %v",
		hedged.ok, hedged.failed, hedged.p99(), control.ok, control.failed, control.p99())
	if hedged.failed != 0 || control.failed != 0 {
		t.Errorf("failed calls: %d hedged (first %v), %d unhedged (first %v)", hedged.failed, hedged.firstErr, control.failed, control.firstErr)
	}
	// The fault is real: without hedging, calls that met the slow instance
	// took its 50 ms. (How many depends on how well the balancer steers
	// around it; in runs here, enough to put the p99 past 50 ms.)
	if slices.Max(control.lat) < 50*time.Millisecond {
		t.Fatalf("without hedging no call took 50 ms (slowest %v): the fault did not take", slices.Max(control.lat))
	}
	// Hedged, the slowest calls cost the hedge delay plus a fast answer, not
	// the slow instance's 50 ms; and far less than the budget.
	if p := hedged.p99(); p >= 50*time.Millisecond || p > budget {
		t.Errorf("with hedging p99 is %v, want under the injected 50 ms (and the %v budget)", p, budget)
	}
}

// The shadow version answers 200 ms late, then dies (kill -9), while every
// request is shadowed. Production's p99 stays within 5% of its baseline (a
// healthy shadow): shadow calls run off the request path, from a bounded
// queue. Baseline and slow blocks alternate, so that drift of the shared
// machine falls on both alike.
func TestSlowOrDeadShadow(t *testing.T) {
	c := startCluster(t, [2]string{"feed/v1", "models/feed/v1.json"}, [2]string{"stories/v1", "models/stories/v1.json"})
	shadowProc, proxy := c.startRankerBehindProxy("feed/v2", "models/feed/v2.json")
	c.putKV("adrank/experiments/feed", `{"shadow": {"versions": ["v2"], "fraction": 1}}`)
	eventually(t, 5*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := c.router.Rank(ctx, rankRequest("shadow-probe", "feed"))
		if err != nil || !resp.GetAssignment().GetShadowed() {
			return fmt.Errorf("not shadowed yet: %v %v", resp.GetAssignment(), err)
		}
		return nil
	})
	block := func() loadResult {
		load := steadyLoad(c.router, 4, 2*time.Millisecond)
		time.Sleep(1500 * time.Millisecond)
		return load()
	}
	var base, slow, dead loadResult
	add := func(to *loadResult, r loadResult) {
		to.ok, to.failed, to.lat = to.ok+r.ok, to.failed+r.failed, append(to.lat, r.lat...)
		if to.firstErr == nil {
			to.firstErr = r.firstErr
		}
	}
	// lost counts the shadow calls dropped from the full queue or failed,
	// from the report, once the block's stragglers are done and flushed.
	lost := func() float64 {
		time.Sleep(400 * time.Millisecond)
		st := c.shadowStats("v2")
		return st.GetDropped() + st.GetErrors()
	}
	var lostBase, lostSlow float64
	before := lost()
	for range 4 {
		add(&base, block())
		after := lost()
		lostBase, before = lostBase+after-before, after
		addLatency(t, proxy, 200*time.Millisecond)
		add(&slow, block())
		if err := proxy.Toxics.RemoveToxic(context.Background(), "latency"); err != nil {
			t.Fatal(err)
		}
		after = lost()
		lostSlow, before = lostSlow+after-before, after
	}
	if err := shadowProc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		add(&dead, block())
	}
	lostDead := lost() - before
	t.Logf("production p99: baseline %v (%d calls), shadow 200 ms late %v (%d calls), shadow dead %v (%d calls)",
		base.p99(), len(base.lat), slow.p99(), len(slow.lat), dead.p99(), len(dead.lat))
	t.Logf("shadow calls dropped or failed: %.0f in the baseline blocks, %.0f in the slow blocks, %.0f after the kill", lostBase, lostSlow, lostDead)
	// The faults were real: the slow and the dead shadow lost calls that the
	// healthy one kept.
	if lostSlow <= lostBase || lostDead <= lostBase {
		t.Errorf("shadow calls lost: %.0f slow, %.0f dead, against %.0f healthy: the faults did not take", lostSlow, lostDead, lostBase)
	}
	for name, r := range map[string]loadResult{"baseline": base, "slow shadow": slow, "dead shadow": dead} {
		if r.failed != 0 {
			t.Errorf("%s: %d production calls failed; first: %v", name, r.failed, r.firstErr)
		}
	}
	// Within 5% of the baseline, plus 1 ms for the scheduling noise of a
	// shared 2-core machine: a shadow on the request path would add 200 ms.
	limit := base.p99()*105/100 + time.Millisecond
	for name, r := range map[string]loadResult{"slow shadow": slow, "dead shadow": dead} {
		if r.p99() > limit {
			t.Errorf("%s: production p99 %v, over %v (baseline %v + 5%% + 1 ms)", name, r.p99(), limit, base.p99())
		}
	}
}

// shadowStats reads the feed experiment report's stats of a shadow version.
func (c *cluster) shadowStats(version string) *routerv1.ShadowStats {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rep, err := c.router.GetExperimentReport(ctx, &routerv1.GetExperimentReportRequest{Domain: "feed"})
	if err != nil {
		c.t.Fatal(err)
	}
	for _, s := range rep.GetShadow() {
		if s.GetVersion() == version {
			return s
		}
	}
	c.t.Fatalf("no shadow stats for %s in %v", version, rep)
	return nil
}

// More concurrent requests than the router admits (--max-inflight 32), over
// gRPC and REST: the excess is refused at once with RESOURCE_EXHAUSTED
// (HTTP 429), nothing times out, and admitted requests keep their p99 within
// the 250 ms budget. Clients back off 5 ms after a refusal, as they should.
func TestOverload(t *testing.T) {
	c := startCluster(t, demoRankers...)
	routerAddr, router := c.startRouter("--max-inflight", "32")
	ports, err := consultest.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	gateway := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	c.start("gateway", "--listen", strings.TrimPrefix(gateway, "http://"), "--router-addr", routerAddr)
	eventually(t, 10*time.Second, func() error {
		resp, err := http.Get(gateway + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
	body, err := protojson.Marshal(rankRequest("", "feed"))
	if err != nil {
		t.Fatal(err)
	}
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}, Timeout: 2 * time.Second}
	type outcome struct {
		took time.Duration
		code codes.Code
	}
	var mu sync.Mutex
	var outcomes []outcome
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for w := range 128 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				start := time.Now()
				var code codes.Code
				if w%2 == 0 {
					rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
					_, err := router.Rank(rctx, rankRequest(fmt.Sprintf("overload-%d-%d", w, n), "feed"))
					rcancel()
					code = status.Code(err)
				} else {
					resp, err := httpc.Post(gateway+"/v1/rank", "application/json", bytes.NewReader(body))
					switch {
					case err != nil:
						code = codes.Unknown
					case resp.StatusCode == http.StatusOK:
						code = codes.OK
					case resp.StatusCode == http.StatusTooManyRequests:
						code = codes.ResourceExhausted
					default:
						code = codes.Internal
					}
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
				mu.Lock()
				outcomes = append(outcomes, outcome{time.Since(start), code})
				mu.Unlock()
				if code != codes.OK {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	var admitted, refused []time.Duration
	other := map[codes.Code]int{}
	for _, o := range outcomes {
		switch o.code {
		case codes.OK:
			admitted = append(admitted, o.took)
		case codes.ResourceExhausted:
			refused = append(refused, o.took)
		default:
			other[o.code]++
		}
	}
	p := func(q int, d []time.Duration) time.Duration {
		if len(d) == 0 {
			return 0
		}
		s := slices.Sorted(slices.Values(d))
		return s[min(len(s)-1, len(s)*q/100)]
	}
	t.Logf("%d admitted (p50 %v, p99 %v), %d refused (p50 %v, p99 %v), other %v",
		len(admitted), p(50, admitted), p(99, admitted), len(refused), p(50, refused), p(99, refused), other)
	if len(other) != 0 {
		t.Errorf("calls that were neither answered nor refused: %v", other)
	}
	if len(refused) == 0 || len(admitted) == 0 {
		t.Fatalf("%d admitted, %d refused: the load did not exceed the limit", len(admitted), len(refused))
	}
	if p99 := p(99, admitted); p99 > 250*time.Millisecond {
		t.Errorf("admitted p99 %v, over the 250 ms budget", p99)
	}
	// Refused fast: a refusal costs no downstream work, so it takes a
	// fraction of an admitted call.
	if p(50, refused) > p(50, admitted) {
		t.Errorf("refusals take %v (p50), admitted calls %v: refusing is not fast", p(50, refused), p(50, admitted))
	}
}
