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
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

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
	args = append(append([]string{"--listen", addr, "--state-file", filepath.Join(c.t.TempDir(), "router.db")}, routerLimits...), args...)
	c.start("routersvc", args...)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cc.Close() })
	client := routerv1.NewRouterServiceClient(cc)
	eventually(c.t, settle, func() error {
		load := steadyLoad(client, 1, 0)
		time.Sleep(50 * time.Millisecond)
		if res := load(); res.ok == 0 {
			return fmt.Errorf("router %s: no answer yet: %v", addr, res.firstErr)
		}
		return nil
	})
	return addr, client
}

// One of two instances of the production version answers 150 ms late. The
// router hedges (--hedge-after 25ms, the default): a call still unanswered
// after 25 ms goes once more, to the other instance, and the first answer
// wins. A second router with hedging off, on the same cluster, is the
// control: it proves the fault took (some of its calls wait the full
// 150 ms), and it is measured in blocks that alternate with the hedged
// router's, so that the machine's drift falls on both alike. The verdict is
// a ratio within the run: hedging must remove at least 90% of the calls
// that take as long as the fault.
func TestSlowRankerInstance(t *testing.T) {
	c := startCluster(t, demoRankers...)
	_, proxy := c.startRankerBehindProxy("feed/v1", "models/feed/v1.json")
	if n := len(c.rankerInstances("feed", "v1", true)); n != 2 {
		t.Fatalf("%d healthy feed/v1 instances, want 2", n)
	}
	_, unhedged := c.startRouter("--hedge-after", "0")
	const fault = 150 * time.Millisecond
	addLatency(t, proxy, fault)

	var hedged, control loadResult
	for range 4 {
		for _, r := range []struct {
			client routerv1.RouterServiceClient
			into   *loadResult
		}{{c.router, &hedged}, {unhedged, &control}} {
			stop := steadyLoad(r.client, 4, 2*time.Millisecond)
			time.Sleep(time.Second)
			res := stop()
			r.into.ok, r.into.failed, r.into.lat = r.into.ok+res.ok, r.into.failed+res.failed, append(r.into.lat, res.lat...)
			if r.into.firstErr == nil {
				r.into.firstErr = res.firstErr
			}
		}
	}
	slow := func(r loadResult) int {
		n := 0
		for _, d := range r.lat {
			if d >= fault {
				n++
			}
		}
		return n
	}
	t.Logf("hedging on: %d calls, %d failed, %d took %v or more, p99 %v; hedging off: %d calls, %d failed, %d took %v or more, p99 %v",
		hedged.ok, hedged.failed, slow(hedged), fault, hedged.p99(), control.ok, control.failed, slow(control), fault, control.p99())
	if hedged.failed != 0 || control.failed != 0 {
		t.Errorf("failed calls: %d hedged (first %v), %d unhedged (first %v)", hedged.failed, hedged.firstErr, control.failed, control.firstErr)
	}
	// The fault is real: without hedging, calls that met the slow instance
	// took its 150 ms. How many depends on how often the least-loaded
	// balancer still picks it; 10 is far below what it has picked in any run.
	if slow(control) < 10 {
		t.Fatalf("without hedging only %d calls took %v: the fault did not take", slow(control), fault)
	}
	// Hedged, a call costs the hedge delay plus a fast answer, not the slow
	// instance's 150 ms.
	if 10*slow(hedged) > slow(control) {
		t.Errorf("with hedging %d calls took %v or more, against %d without: hedging removed less than 90%% of them", slow(hedged), fault, slow(control))
	}
}

// The shadow version stops answering, then dies (kill -9), while every
// request is shadowed. What the product promises is that production never
// waits for a shadow, and the test proves exactly that, with no stopwatch:
//
//   - The shadow's connection goes through a proxy that holds every byte
//     (toxiproxy's timeout toxic with no timeout: the fault never ends), and
//     the router's shadow calls may wait 10 minutes. A production call that
//     waited for a shadow call, or for room in the shadow queue, would pass
//     its 10 s budget and fail.
//   - The fault is shown to be in the path before it is judged: a call of our
//     own through the proxy gets no answer, and the router's own shadow calls
//     fill its queue of 8 (so its workers are stuck) and compare nothing more.
//   - Then every shadowed production answer of the measured block must be
//     matched by exactly one shadow job dropped from the full queue, none
//     compared, and no production call may fail.
//
// After the kill, shadow calls fail at once: every shadow job of the block is
// then an error or a drop, and production again loses nothing.
func TestStuckOrDeadShadow(t *testing.T) {
	c := startCluster(t, [2]string{"feed/v1", "models/feed/v1.json"}, [2]string{"stories/v1", "models/stories/v1.json"})
	shadowProc, proxy := c.startRankerBehindProxy("feed/v2", "models/feed/v2.json")
	c.putKV("adrank/experiments/feed", `{"shadow": {"versions": ["v2"], "fraction": 1}}`)
	_, router := c.startRouter("--shadow-queue", "8", "--shadow-timeout", "10m")
	stats := func() *routerv1.ShadowStats { return c.shadowStats(router, "v2") }
	eventually(t, settle, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := router.Rank(ctx, rankRequest("shadow-probe", "feed"))
		if err != nil || !resp.GetAssignment().GetShadowed() {
			return fmt.Errorf("not shadowed yet: %v %v", resp.GetAssignment(), err)
		}
		return nil
	})
	block := func(d time.Duration) loadResult {
		load := steadyLoad(router, 4, 2*time.Millisecond)
		time.Sleep(d)
		return load()
	}
	noFailures := func(name string, r loadResult) {
		t.Helper()
		if r.failed != 0 || r.ok == 0 {
			t.Fatalf("%s: %d production calls answered, %d failed; first: %v", name, r.ok, r.failed, r.firstErr)
		}
		if r.shadowed != r.ok {
			t.Fatalf("%s: %d of %d answers shadowed, with a shadow fraction of 1", name, r.shadowed, r.ok)
		}
	}

	// warmUntil keeps a load on the router until the shadow counter that
	// count reads has moved, then returns the stats once they settle.
	warmUntil := func(name string, count func(*routerv1.ShadowStats) float64) *routerv1.ShadowStats {
		t.Helper()
		from := count(stats())
		warm := steadyLoad(router, 4, 2*time.Millisecond)
		eventually(t, settle, func() error {
			if count(stats()) == from {
				return fmt.Errorf("%s: the shadow counter has not moved", name)
			}
			return nil
		})
		noFailures(name, warm())
		return settledStats(t, stats)
	}

	// Healthy: the shadow is compared with production.
	mark := stats()
	healthy := block(time.Second)
	noFailures("healthy shadow", healthy)
	eventually(t, settle, func() error {
		if n := stats().GetCompared() - mark.GetCompared(); n == 0 {
			return fmt.Errorf("a healthy shadow compared nothing")
		}
		return nil
	})

	// Stuck: the proxy holds every byte, for good.
	if _, err := proxy.Toxics.AddToxicJson(strings.NewReader(`{"name": "stuck", "type": "timeout", "stream": "downstream", "attributes": {"timeout": 0}}`)); err != nil {
		t.Fatal(err)
	}
	probeStuck(t, proxy.Listen)
	// The router's own shadow connection is held too: its two workers stick,
	// the queue of 8 fills, and jobs are dropped.
	mark = warmUntil("stuck shadow, filling the queue", (*routerv1.ShadowStats).GetDropped)
	stuck := block(2 * time.Second)
	noFailures("stuck shadow", stuck)
	var after *routerv1.ShadowStats
	eventually(t, settle, func() error {
		if after = stats(); after.GetDropped()-mark.GetDropped() < float64(stuck.shadowed) {
			return fmt.Errorf("%.0f shadow jobs dropped for %d shadowed answers", after.GetDropped()-mark.GetDropped(), stuck.shadowed)
		}
		return nil
	})
	stuckDropped := after.GetDropped() - mark.GetDropped()
	if n := after.GetCompared() - mark.GetCompared(); stuckDropped != float64(stuck.shadowed) || n != 0 {
		t.Errorf("stuck shadow: %d shadowed answers, %.0f shadow jobs dropped, %.0f compared: want all dropped, none compared", stuck.shadowed, stuckDropped, n)
	}

	// Dead: the fault is lifted (the stuck calls end), then the shadow is
	// killed; its calls now fail at once.
	if err := proxy.Toxics.RemoveToxic(context.Background(), "stuck"); err != nil {
		t.Fatal(err)
	}
	if err := shadowProc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	mark = warmUntil("dead shadow, first failures", (*routerv1.ShadowStats).GetErrors)
	dead := block(2 * time.Second)
	noFailures("dead shadow", dead)
	eventually(t, settle, func() error {
		after = stats()
		if lost := after.GetErrors() + after.GetDropped() - mark.GetErrors() - mark.GetDropped(); lost < float64(dead.shadowed) {
			return fmt.Errorf("%.0f shadow jobs failed or dropped for %d shadowed answers", lost, dead.shadowed)
		}
		return nil
	})
	if n := after.GetCompared() - mark.GetCompared(); n != 0 {
		t.Errorf("a dead shadow compared %.0f requests", n)
	}
	t.Logf("production answers (p99): healthy %d (%v), stuck shadow %d (%v), dead shadow %d (%v); shadow jobs: stuck %.0f dropped; dead %.0f failed, %.0f dropped",
		healthy.ok, healthy.p99(), stuck.ok, stuck.p99(), dead.ok, dead.p99(),
		stuckDropped, after.GetErrors()-mark.GetErrors(), after.GetDropped()-mark.GetDropped())
}

// probeStuck shows that a fault holds the path through a proxy: a health
// check of our own through it, on a new connection, gets no answer before
// its deadline.
func probeStuck(t *testing.T, addr string) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a call through the stuck proxy ended with %v, not its deadline: the fault is not in the path", err)
	}
}

// settledStats waits until the recorded shadow stats stop moving (the
// router writes them every 100 ms) and returns them.
func settledStats(t *testing.T, stats func() *routerv1.ShadowStats) *routerv1.ShadowStats {
	t.Helper()
	prev := stats()
	eventually(t, settle, func() error {
		time.Sleep(300 * time.Millisecond)
		cur := stats()
		if !proto.Equal(cur, prev) {
			prev = cur
			return fmt.Errorf("shadow stats still moving")
		}
		return nil
	})
	return prev
}

// shadowStats reads the feed experiment report's stats of a shadow version.
func (c *cluster) shadowStats(router routerv1.RouterServiceClient, version string) *routerv1.ShadowStats {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rep, err := router.GetExperimentReport(ctx, &routerv1.GetExperimentReportRequest{Domain: "feed"})
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
// gRPC and REST: the excess is refused with RESOURCE_EXHAUSTED (HTTP 429),
// at a fraction of an admitted call's time (a refusal does no downstream
// work), and every call is either answered or refused: none times out. The
// router's budget is 10 s in these tests, so that how fast this machine answers
// admitted calls cannot turn them into timeouts; what is judged is the
// ratio between refused and admitted calls in the same run. Clients back
// off 5 ms after a refusal, as they should.
func TestOverload(t *testing.T) {
	c := startCluster(t, demoRankers...)
	routerAddr, router := c.startRouter("--max-inflight", "32")
	gateway := c.startGateway("--router-addr", routerAddr, "--timeout", "20s")
	body, err := protojson.Marshal(rankRequest("", "feed"))
	if err != nil {
		t.Fatal(err)
	}
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}, Timeout: 20 * time.Second}
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
					rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
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
	// Refused fast: a refusal costs no downstream work, so it takes a
	// fraction of an admitted call.
	if p(50, refused) > p(50, admitted) {
		t.Errorf("refusals take %v (p50), admitted calls %v: refusing is not fast", p(50, refused), p(50, admitted))
	}
}
