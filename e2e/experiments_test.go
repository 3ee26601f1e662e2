package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/consultest"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/redistest"
	"github.com/adrank/adrank/sim"
)

// adrankctl runs bin/adrankctl against the cluster's Consul and router.
func (c *cluster) adrankctl(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(c.bin("adrankctl"), args...)
	cmd.Env = append(os.Environ(), "CONSUL_HTTP_ADDR="+c.consul.Addr)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *cluster) report(t *testing.T, domain string) *routerv1.GetExperimentReportResponse {
	t.Helper()
	rep, err := c.tryReport(domain)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// tryReport reads a domain's experiment report over REST.
func (c *cluster) tryReport(domain string) (*routerv1.GetExperimentReportResponse, error) {
	code, out, err := c.tryDo(http.MethodGet, "/v1/domains/"+domain+"/experiment", nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET experiment report: %d %s", code, out)
	}
	rep := &routerv1.GetExperimentReportResponse{}
	return rep, protojson.Unmarshal(out, rep)
}

// Experiments declared in Consul with adrankctl, served by the real
// pipeline, fed back with events, reported over REST.
func TestExperiments(t *testing.T) {
	c := startCluster(t, demoRankers...)
	w, err := world.New(world.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}

	t.Run("adrankctl validates and writes experiments", func(t *testing.T) {
		bad := `{"ab": {"salt": "x", "arms": [{"version": "v1", "weight": 1}, {"version": "v9", "weight": 1}]}}`
		if out, err := c.adrankctl(t, bad, "experiment", "validate", "feed"); err == nil || !strings.Contains(out, `unknown version "v9"`) {
			t.Errorf("validate accepted an unknown version: %v %s", err, out)
		}
		if out, err := c.adrankctl(t, bad, "experiment", "set", "feed", "-"); err == nil || !strings.Contains(out, "not written") {
			t.Errorf("set wrote an invalid document: %v %s", err, out)
		}
		path := filepath.Join(t.TempDir(), "ab.json")
		doc := `{"ab": {"salt": "e2e", "arms": [{"version": "v1", "weight": 50}, {"version": "v2", "weight": 50}]}, "shadow": {"versions": ["v2"], "fraction": 0.5}}`
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := c.adrankctl(t, "", "experiment", "set", "feed", path); err != nil {
			t.Fatalf("set: %v %s", err, out)
		}
		out, err := c.adrankctl(t, "", "experiment", "get", "feed")
		if err != nil || !strings.Contains(out, `"salt": "e2e"`) {
			t.Fatalf("get: %v %s", err, out)
		}
		eventually(t, settle, func() error {
			if id := c.report(t, "feed").GetExperimentId(); id != "ab:e2e:v1,v2" {
				return fmt.Errorf("experiment %q", id)
			}
			return nil
		})
	})

	t.Run("A/B with feedback through the real pipeline", func(t *testing.T) {
		res, err := sim.Run(context.Background(), c.router, w, sim.Config{Domain: "feed", Requests: 1500, Seed: 11, Concurrency: 4,
			RequestPrefix: "e2e-ab-", Lift: map[string]float64{"v2": 1.3}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Errors != 0 || res.Rejected != 0 || res.ByStrategy[routerv1.Strategy_STRATEGY_AB] != 1500 {
			t.Fatalf("simulation: %+v", res)
		}
		var rep *routerv1.GetExperimentReportResponse
		awaitCounts(t, "A/B impressions and clicks", []int{res.Impressions, res.Clicks}, func() ([]int, error) {
			var err error
			if rep, err = c.tryReport("feed"); err != nil {
				return nil, err
			}
			return armCounts(rep.GetAb().GetArms()), nil
		})
		ab := rep.GetAb()
		test := ab.GetTests()[0]
		if test.GetVerdict() != "treatment better" || ab.GetSrmFlagged() {
			t.Errorf("A/B: %v (SRM p %v)", test, ab.GetSrmPValue())
		}
		if len(rep.GetShadow()) != 1 || rep.GetShadow()[0].GetCompared() == 0 {
			t.Errorf("shadow: %v", rep.GetShadow())
		}
		t.Logf("A/B over the real pipeline: %v", test)
	})

	t.Run("events over REST are idempotent; unknown ones are rejected", func(t *testing.T) {
		body, _ := protojson.Marshal(rankRequest("req-events", "feed"))
		code, out := c.post("/v1/rank", body)
		if code != http.StatusOK {
			t.Fatalf("rank: %d %s", code, out)
		}
		var rank struct {
			Results []struct {
				ImpressionID string `json:"impression_id"`
			} `json:"results"`
			Assignment struct {
				Strategy string `json:"strategy"`
			} `json:"assignment"`
		}
		if err := json.Unmarshal(out, &rank); err != nil {
			t.Fatal(err)
		}
		if rank.Assignment.Strategy != "STRATEGY_AB" {
			t.Errorf("assignment %+v", rank.Assignment)
		}
		events := fmt.Sprintf(`{"events": [{"impression_id": %q, "type": "EVENT_TYPE_CLICK"}, {"impression_id": %q, "type": "EVENT_TYPE_CONVERSION", "value": 19.9}, {"impression_id": "nope", "type": "EVENT_TYPE_CLICK"}]}`,
			rank.Results[0].ImpressionID, rank.Results[0].ImpressionID)
		for i, want := range []string{`"accepted":2`, `"duplicates":2`} {
			code, out := c.post("/v1/events", []byte(events))
			if code != http.StatusOK || !strings.Contains(strings.ReplaceAll(string(out), " ", ""), want) || !strings.Contains(string(out), `"rejected":1`) {
				t.Errorf("send %d: %d %s, want %s", i+1, code, out, want)
			}
		}
		if code, out := c.post("/v1/events", []byte(`{"events": [{"type": "EVENT_TYPE_CLICK"}]}`)); code != http.StatusBadRequest || !strings.Contains(string(out), "impression_id") {
			t.Errorf("bad event: %d %s", code, out)
		}
	})

	t.Run("interleaving and a bandit on the real pipeline", func(t *testing.T) {
		for _, tc := range []struct{ doc, id string }{
			{`{"interleave": {"a": "v1", "b": "v2", "fraction": 1}}`, "interleave:v1,v2"},
			{`{"bandit": {"policy": "epsilon_greedy", "versions": ["v1", "v2"]}}`, "bandit:epsilon_greedy:v1,v2"},
		} {
			if out, err := c.adrankctl(t, tc.doc, "experiment", "set", "feed"); err != nil {
				t.Fatalf("%v %s", err, out)
			}
			eventually(t, settle, func() error {
				if id := c.report(t, "feed").GetExperimentId(); id != tc.id {
					return fmt.Errorf("experiment %q", id)
				}
				return nil
			})
			res, err := sim.Run(context.Background(), c.router, w, sim.Config{Domain: "feed", Requests: 400, Seed: 12, Concurrency: 4, RequestPrefix: tc.id + "-"})
			if err != nil || res.Errors != 0 || res.Rejected != 0 {
				t.Fatalf("%s: %v %+v", tc.id, err, res)
			}
			var rep *routerv1.GetExperimentReportResponse
			eventually(t, settle, func() error {
				if rep = c.report(t, "feed"); rep.GetInterleave() != nil && rep.GetInterleave().GetWinsA()+rep.GetInterleave().GetWinsB()+rep.GetInterleave().GetTies() == 0 {
					return fmt.Errorf("no interleaved comparison recorded yet")
				}
				return nil
			})
			if in := rep.GetInterleave(); in != nil {
				if res.ByStrategy[routerv1.Strategy_STRATEGY_INTERLEAVED] != 400 || in.GetWinsA()+in.GetWinsB()+in.GetTies() == 0 {
					t.Errorf("interleave: %v, strategies %v", in, res.ByStrategy)
				}
				if res.ByVersion["v1"] == nil || res.ByVersion["v2"] == nil {
					t.Errorf("both teams should place ads: %v", res.ByVersion)
				}
			}
			if rep.GetBandit() != nil {
				awaitCounts(t, "bandit impressions", []int{res.Impressions}, func() ([]int, error) {
					rep, err := c.tryReport("feed")
					var imps float64
					for _, a := range rep.GetBandit().GetArms() {
						imps += a.GetImpressions()
					}
					return []int{int(imps)}, err
				})
				if res.ByStrategy[routerv1.Strategy_STRATEGY_BANDIT] != 400 {
					t.Errorf("bandit: %v", res.ByStrategy)
				}
			}
		}
	})

	t.Run("canary: rollback and promotion through adrankctl", func(t *testing.T) {
		canary := `{"canary": {"version": "v2", "steps": [20, 100], "stepInterval": "1h"}}`
		if out, err := c.adrankctl(t, canary, "experiment", "set", "feed"); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		eventually(t, settle, func() error {
			if s := c.report(t, "feed").GetCanary().GetState(); s != "running" {
				return fmt.Errorf("canary state %q", s)
			}
			return nil
		})
		if out, err := c.adrankctl(t, "", "canary", "rollback", "feed", "--reason", "suspicious dashboards", "--router", c.routerAddr); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		cr := c.report(t, "feed").GetCanary()
		if cr.GetState() != "rolled_back" || cr.GetReason() != "suspicious dashboards" || cr.GetSharePercent() != 0 {
			t.Errorf("after rollback: %v", cr)
		}
		// A rolled-back canary is never promoted.
		if out, err := c.adrankctl(t, "", "canary", "promote", "feed", "--router", c.routerAddr); err == nil || !strings.Contains(out, "rolled back") {
			t.Fatalf("promotion after a rollback: %v %s", err, out)
		}
		// A new canary section starts a new canary, which is then promoted.
		if out, err := c.adrankctl(t, strings.Replace(canary, "[20, 100]", "[30, 100]", 1), "experiment", "set", "feed"); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		eventually(t, settle, func() error {
			if s := c.report(t, "feed").GetCanary(); s.GetState() != "running" || s.GetSharePercent() != 30 {
				return fmt.Errorf("canary %v", s)
			}
			return nil
		})
		// Not while it steps up: at 30%, without the guardrails' data.
		if out, err := c.adrankctl(t, "", "canary", "promote", "feed", "--router", c.routerAddr); err == nil || !strings.Contains(out, "step 1 of 2") {
			t.Fatalf("promotion at the first step: %v %s", err, out)
		}
		// A canary that has passed its last step, with the requests its
		// guardrails need, is.
		done := `{"canary": {"version": "v2", "steps": [100], "stepInterval": "1s", "guardrails": {"minRequests": 5}}}`
		if out, err := c.adrankctl(t, done, "experiment", "set", "feed"); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		eventually(t, settle, func() error {
			if _, err := rank(t, c, rankRequest(fmt.Sprintf("canary-%d", time.Now().UnixNano()), "feed")); err != nil {
				return err
			}
			if s := c.report(t, "feed").GetCanary(); s.GetState() != "completed" {
				return fmt.Errorf("canary %v", s)
			}
			return nil
		})
		if out, err := c.adrankctl(t, "", "canary", "promote", "feed", "--router", c.routerAddr); err != nil || !strings.Contains(out, "production is now v2") {
			t.Fatalf("%v %s", err, out)
		}
		eventually(t, settle, func() error {
			if p := c.domains()["feed"].GetProductionVersion(); p != "v2" {
				return fmt.Errorf("production %q", p)
			}
			return nil
		})
	})

	t.Run("an arm without a healthy instance falls back to production and says so", func(t *testing.T) {
		doc := `{"production": "v1", "ab": {"salt": "fallback", "arms": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 1}]}}`
		if out, err := c.adrankctl(t, doc, "experiment", "set", "feed"); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		insts := c.rankerInstances("feed", "v2", true)
		if len(insts) != 1 {
			t.Fatalf("%d feed/v2 instances", len(insts))
		}
		if err := c.rankerOnPort(t, insts[0].Service.Port).cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		eventually(t, settle, func() error {
			var fallbacks int
			for i := range 40 {
				resp, err := rank(t, c, rankRequest(fmt.Sprintf("fb-%d", i), "feed"))
				if err != nil {
					return err
				}
				if a := resp.GetAssignment(); strings.Contains(a.GetFallbackReason(), `"v2"`) {
					if resp.GetModelVersion() != "v1" {
						return fmt.Errorf("fallback served by %s", resp.GetModelVersion())
					}
					fallbacks++
				}
			}
			if fallbacks == 0 {
				return fmt.Errorf("no request said it fell back")
			}
			return nil
		})
	})
}

// Two router replicas share a real Redis: a bandit experiment driven through
// both counts every impression and click of both, once. Both are registered
// in Consul as adrank-router, so a client balances over them. So it is for
// the microservices' routers, and for ML as one service (each replica
// serves every model itself).
func TestRouterReplicasShareRedis(t *testing.T) {
	for _, arch := range []struct {
		name    string
		rankers [][2]string
		args    []string
	}{
		{"microservices", demoRankers, nil},
		{"ML as one service", nil, []string{"--ml-service"}},
	} {
		t.Run(arch.name, func(t *testing.T) { replicasShareRedis(t, arch.rankers, arch.args) })
	}
}

func replicasShareRedis(t *testing.T, rankers [][2]string, args []string) {
	c := startCluster(t, rankers...)
	rs := redistest.Start(t)
	ports, err := consultest.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	var clients []routerv1.RouterServiceClient
	var addrs []string
	for _, p := range ports {
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		addrs = append(addrs, addr)
		c.start("routersvc", append(append([]string{"--listen", addr, "--redis-addr", rs.Addr}, args...), routerLimits...)...)
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		clients = append(clients, routerv1.NewRouterServiceClient(cc))
	}
	eventually(t, settle, func() error {
		entries, _, err := c.consul.Client.Health().Service(consulx.RouterService, "", true, nil)
		if err != nil {
			return err
		}
		passing := map[string]bool{}
		for _, e := range entries {
			passing[fmt.Sprintf("%s:%d", e.Service.Address, e.Service.Port)] = true
		}
		for _, addr := range addrs {
			if !passing[addr] {
				return fmt.Errorf("replica %s is not a passing %s instance in Consul (passing: %v)", addr, consulx.RouterService, passing)
			}
		}
		return nil
	})
	c.putKV("adrank/experiments/feed", `{"bandit": {"policy": "thompson", "versions": ["v1", "v2"]}}`)
	for _, client := range clients {
		eventually(t, settle, func() error {
			rep, err := client.GetExperimentReport(context.Background(), &routerv1.GetExperimentReportRequest{Domain: "feed"})
			if err != nil {
				return err
			}
			if rep.GetExperimentId() != "bandit:thompson:v1,v2" {
				return fmt.Errorf("experiment %q", rep.GetExperimentId())
			}
			return nil
		})
	}
	w, err := world.New(world.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	results := make([]*sim.Result, 2)
	var wg sync.WaitGroup
	for i, client := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := sim.Run(context.Background(), client, w, sim.Config{Domain: "feed", Requests: 600, Seed: uint64(20 + i),
				Concurrency: 3, RequestPrefix: fmt.Sprintf("replica%d-", i), Lift: map[string]float64{"v2": 1.3}})
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		}()
	}
	wg.Wait()
	want := []int{results[0].Impressions + results[1].Impressions, results[0].Clicks + results[1].Clicks}
	for i, client := range clients {
		var rep *routerv1.GetExperimentReportResponse
		awaitCounts(t, fmt.Sprintf("replica %d: impressions and clicks of both", i), want, func() ([]int, error) {
			var err error
			if rep, err = client.GetExperimentReport(context.Background(), &routerv1.GetExperimentReportRequest{Domain: "feed"}); err != nil {
				return nil, err
			}
			return armCounts(rep.GetBandit().GetArms()), nil
		})
		if i == 0 {
			t.Logf("bandit over two replicas: %v", rep.GetBandit().GetArms())
		}
	}
}

// A router restarted in the middle of an experiment loses and double-counts
// nothing: after the simulator's events are acknowledged (it resends a
// failed batch; events are idempotent), the report's counts equal what it
// was served and sent.
func TestRouterRestartMidExperiment(t *testing.T) {
	c := startCluster(t, demoRankers...)
	c.putKV("adrank/experiments/feed", `{"ab": {"salt": "restart", "arms": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 1}]}}`)
	eventually(t, settle, func() error {
		if id := c.report(t, "feed").GetExperimentId(); id != "ab:restart:v1,v2" {
			return fmt.Errorf("experiment %q", id)
		}
		return nil
	})
	w, err := world.New(world.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var res *sim.Result
	simDone := make(chan error, 1)
	go func() {
		var err error
		res, err = sim.Run(context.Background(), c.router, w, sim.Config{Domain: "feed", Requests: 3000, Seed: 31, Concurrency: 2,
			RequestPrefix: "restart-", EventBatch: 20, Timeout: time.Second})
		simDone <- err
	}()
	// Restart once the experiment is under way (a count, not a time, so a
	// fast machine does not finish first): 300 impressions recorded.
	eventually(t, settle, func() error {
		var imps float64
		for _, a := range c.report(t, "feed").GetAb().GetArms() {
			imps += a.GetImpressions()
		}
		if imps < 300 {
			return fmt.Errorf("%v impressions recorded", imps)
		}
		return nil
	})
	if err := c.routerProc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := c.routerProc.exitCode(t, 15*time.Second); code != 0 {
		t.Fatalf("router exit code %d", code)
	}
	c.routerProc = c.start("routersvc", c.routerArgs...)
	if err := <-simDone; err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || res.Errors == res.Requests {
		t.Fatalf("the restart should fail some requests and not all: %d of %d", res.Errors, res.Requests)
	}
	t.Logf("%d requests, %d failed during the restart; %d impressions, %d clicks, %d conversions served and sent",
		res.Requests, res.Errors, res.Impressions, res.Clicks, res.Conversions)
	awaitCounts(t, "impressions, clicks and conversions", []int{res.Impressions, res.Clicks, res.Conversions}, func() ([]int, error) {
		rep, err := c.tryReport("feed")
		var imps, clicks, convs float64
		for _, a := range rep.GetAb().GetArms() {
			imps += a.GetImpressions()
			clicks += a.GetClicks()
			convs += a.GetConversions()
		}
		return []int{int(imps), int(clicks), int(convs)}, err
	})
	// Every event is in exactly one acknowledged batch: accepted, or a
	// duplicate when a resent batch had already been applied.
	if res.Rejected != 0 || res.Accepted+res.Duplicates != res.Clicks+res.Conversions {
		t.Errorf("events: accepted %d + duplicates %d, rejected %d; sent %d", res.Accepted, res.Duplicates, res.Rejected, res.Clicks+res.Conversions)
	}
}

// kill -9 one of two feed/v1 instances under steady load: no Rank call
// fails, because UNAVAILABLE is retried on the other instance within the
// deadline, and the dead one leaves routing.
func TestRankerCrashUnderLoad(t *testing.T) {
	c := startCluster(t, append(demoRankers, [2]string{"feed/v1", "models/feed/v1.json"})...)
	insts := c.rankerInstances("feed", "v1", true)
	if len(insts) != 2 {
		t.Fatalf("%d feed/v1 instances", len(insts))
	}
	victim := c.rankerOnPort(t, insts[0].Service.Port)
	l := startLoad(c.router, 4, 0)
	// Counts and events, not times: 200 calls before the kill; after it,
	// calls until the dead instance has left routing, then 200 more.
	atLeast := func(n int64) {
		eventually(t, settle, func() error {
			if s := l.seen(); s.ok+s.failed < n {
				return fmt.Errorf("%d calls so far", s.ok+s.failed)
			}
			return nil
		})
	}
	atLeast(200)
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	eventually(t, settle, func() error {
		if h := versionOf(c.domains()["feed"], "v1").GetHealthyInstances(); h != 1 {
			return fmt.Errorf("%d healthy feed/v1 instances", h)
		}
		return nil
	})
	left := l.seen()
	atLeast(left.ok + left.failed + 200)
	r := l.stop()
	t.Logf("%d Rank calls succeeded, %d failed around the kill; p99 %v", r.ok, r.failed, r.p99())
	if r.failed != 0 {
		t.Errorf("%d calls failed; first: %v", r.failed, r.firstErr)
	}
}

// loadResult is what a steady load saw.
type loadResult struct {
	ok, failed int64
	degraded   int64 // answers flagged degraded
	shadowed   int64 // answers whose request was mirrored to a shadow
	firstErr   any
	lat        []time.Duration // of every call, successful or not
}

// p99 is the 99th percentile latency.
func (r loadResult) p99() time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(r.lat))
	return s[min(len(s)-1, len(s)*99/100)]
}

// steadyLoad sends Rank calls to the cluster's router from workers, each
// pausing between calls, until stop is called.
func (c *cluster) steadyLoad(workers int, pause time.Duration) (stop func() loadResult) {
	return steadyLoad(c.router, workers, pause)
}

// steadyLoad sends Rank calls from workers, each pausing between calls,
// until stop is called; stop returns what they saw.
func steadyLoad(router routerv1.RouterServiceClient, workers int, pause time.Duration) (stop func() loadResult) {
	return startLoad(router, workers, pause).stop
}

// load is a steady load in progress.
type load struct {
	mu     sync.Mutex
	res    loadResult
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startLoad(router routerv1.RouterServiceClient, workers int, pause time.Duration) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
				start := time.Now()
				resp, err := router.Rank(rctx, rankRequest(fmt.Sprintf("load-%p-%d-%d", l, w, n), "feed"))
				took := time.Since(start)
				rcancel()
				l.mu.Lock()
				res := &l.res
				res.lat = append(res.lat, took)
				if err != nil {
					res.failed++
					if res.firstErr == nil {
						res.firstErr = err.Error()
					}
				} else {
					res.ok++
				}
				if resp.GetDegraded() {
					res.degraded++
				}
				if resp.GetAssignment().GetShadowed() {
					res.shadowed++
				}
				l.mu.Unlock()
				time.Sleep(pause)
			}
		}()
	}
	return l
}

// seen returns the counts so far (without latencies).
func (l *load) seen() loadResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.res
	r.lat = nil
	return r
}

// stop ends the load and returns all it saw.
func (l *load) stop() loadResult {
	l.cancel()
	l.wg.Wait()
	return l.res
}

// armCounts adds up the impressions and clicks of a report's arms.
func armCounts[A interface {
	GetImpressions() float64
	GetClicks() float64
}](arms []A) []int {
	var imps, clicks float64
	for _, a := range arms {
		imps += a.GetImpressions()
		clicks += a.GetClicks()
	}
	return []int{int(imps), int(clicks)}
}

// awaitCounts waits until the counts the router reports reach those the test
// saw (the router writes what it counts in batches, every 100 ms), then
// requires them equal: a count past the test's means something was counted
// twice.
func awaitCounts(t *testing.T, what string, want []int, got func() ([]int, error)) {
	t.Helper()
	var g []int
	eventually(t, settle, func() error {
		var err error
		if g, err = got(); err != nil {
			return err // not answering yet (a restarted router)
		}
		for i := range want {
			if g[i] < want[i] {
				return fmt.Errorf("%s: reported %v, want %v", what, g, want)
			}
		}
		return nil
	})
	if !slices.Equal(g, want) {
		t.Errorf("%s: reported %v, want %v", what, g, want)
	}
}

// Consul down for 30 s under steady load: no Rank call fails (the router
// keeps the last known instances and configs), and once the agent is back
// every service is registered again without a restart.
func TestConsulOutage(t *testing.T) {
	c := startClusterWith(t, consultest.StartPersistent, demoRankers...)
	registered := func() (map[string]int, error) {
		out := map[string]int{}
		for _, name := range []string{"adrank-feature", "adrank-ranker", "adrank-auction", "adrank-router"} {
			entries, _, err := c.consul.Client.Health().Service(name, "", true, nil)
			if err != nil {
				return nil, err
			}
			out[name] = len(entries)
		}
		return out, nil
	}
	before, err := registered()
	if err != nil {
		t.Fatal(err)
	}
	stop := c.steadyLoad(2, 5*time.Millisecond)
	time.Sleep(time.Second)
	c.consul.Stop()
	time.Sleep(30 * time.Second)
	if err := c.consul.Restart(); err != nil {
		t.Fatal(err)
	}
	// Every service re-registers on its own, with healthy checks.
	eventually(t, 30*time.Second, func() error {
		now, err := registered()
		if err != nil {
			return err
		}
		for name, n := range before {
			if now[name] != n {
				return fmt.Errorf("%s: %d healthy instances, %d before the outage", name, now[name], n)
			}
		}
		return nil
	})
	time.Sleep(time.Second)
	r := stop()
	t.Logf("%d Rank calls succeeded, %d failed across a 30 s Consul outage; p99 %v; registrations %v", r.ok, r.failed, r.p99(), before)
	if r.failed != 0 {
		t.Errorf("%d calls failed; first: %v", r.failed, r.firstErr)
	}
}
