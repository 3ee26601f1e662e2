package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/timestamppb"

	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	rankerv1 "github.com/adrank/adrank/gen/adrank/ranker/v1"
	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/routersvc/adrank"
)

// libraryConfig is the monolith's configuration.
const libraryConfig = "monolith: the adrank library in the caller's process"

// floorConfig is the floor chain: the pipeline's topology, empty handlers
// (bench/cmd/floorsvc), the same Rank requests from the client.
const floorConfig = "floor chain: router, then 3 empty calls"

// The pipeline's configurations that #16's ratios compare.
const (
	grpcConfig   = "gRPC through the router"
	restConfig   = "REST through the gateway"
	shadowConfig = "gRPC, shadow v1 on every request"
)

// fullConfig is the pipeline whose router's store already holds
// o.stateImpressions (suite.fillState), set against configuration 1's
// fresh store; fullConfigNumber is its number (for --only).
const (
	fullConfig       = "gRPC through the router, its store filled"
	fullConfigNumber = 12
)

var floorProcs = []string{"floorsvc-router", "floorsvc-leaf1", "floorsvc-leaf2", "floorsvc-leaf3"}

// everyday is the rate at which CPU per request is also measured: a
// quarter of saturation, where the per-call cost of waking a server shows.
const everyday = 500

// config is one benchmarked configuration.
type config struct {
	name  string
	setup func() error // e.g. the experiment it needs
	call  call
	cpu   []string // the processes whose CPU it uses
}

// result is one configuration's medians.
type result struct {
	name       string
	saturation float64 // requests/s
	p50, p99   map[int]float64
	cpuPer1000 float64
	cpuBy      map[string]float64 // CPU ms per request, by process label
	// At the everyday rate (when measured): CPU ms per request, in all
	// and by process label.
	cpuEveryday   float64
	cpuByEveryday map[string]float64
	errors        int
}

// saturate runs a closed loop of workers for d and returns completed
// requests per second and errors.
func saturate(ctx context.Context, c call, workers int, d time.Duration) (float64, int) {
	var done, failed atomic.Int64
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for n := 0; ctx.Err() == nil; n++ {
				if err := c(context.Background(), rng, n); err != nil {
					failed.Add(1)
				} else {
					done.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(done.Load()) / time.Since(start).Seconds(), int(failed.Load())
}

// openLoop offers rate requests/s for d and returns latency percentiles in
// ms, measured from each request's scheduled send time.
func openLoop(ctx context.Context, c call, rate int, d time.Duration) (p50, p99 float64, failed int) {
	interval := time.Second / time.Duration(rate)
	total := int(d / interval)
	lat := make([]float64, 0, total)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs atomic.Int64
	start := time.Now()
	rng := rand.New(rand.NewPCG(uint64(rate), 2))
	for n := range total {
		at := start.Add(time.Duration(n) * interval)
		if w := time.Until(at); w > 0 {
			time.Sleep(w)
		}
		if ctx.Err() != nil {
			break
		}
		r := rand.New(rand.NewPCG(rng.Uint64(), uint64(n)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c(context.Background(), r, n)
			ms := float64(time.Since(at).Microseconds()) / 1000
			if err != nil {
				errs.Add(1)
			}
			mu.Lock()
			lat = append(lat, ms)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	q := func(p float64) float64 {
		if len(lat) == 0 {
			return math.NaN()
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	return q(0.5), q(0.99), int(errs.Load())
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func (s *suite) configs() ([]config, func(), error) {
	dial := func(addr string) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	router, err := dial(s.addr["router"])
	if err != nil {
		return nil, nil, err
	}
	ml, err := dial(s.addr["ml"])
	if err != nil {
		return nil, nil, err
	}
	rk, err := dial(s.addr["ranker"])
	if err != nil {
		return nil, nil, err
	}
	// The monolith: adrank as a library in this process, the way a
	// backend embeds it; its CPU is this process's ("self").
	lib, err := adrank.Open(adrank.Config{
		Models: filepath.Join(s.o.root, "models"), StateFile: filepath.Join(s.tmp, "library.db"),
		Production: map[string]string{"feed": "v2"}, Budget: s.callTimeout(),
	})
	if err != nil {
		router.Close()
		ml.Close()
		rk.Close()
		return nil, nil, fmt.Errorf("the library: %w", err)
	}
	closeAll := func() { router.Close(); ml.Close(); rk.Close(); _ = lib.Close() }
	reqs, err := newPool(1, 4096)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	s.pool = reqs
	library := func(ctx context.Context, _ *rand.Rand, _ int) error {
		ctx, cancel := context.WithTimeout(ctx, s.callTimeout())
		defer cancel()
		_, err := lib.Rank(ctx, reqs.rank())
		return err
	}
	rank := func(cc *grpc.ClientConn) call {
		client := routerv1.NewRouterServiceClient(cc)
		return func(ctx context.Context, _ *rand.Rand, _ int) error {
			ctx, cancel := context.WithTimeout(ctx, s.callTimeout())
			defer cancel()
			_, err := client.Rank(ctx, reqs.rank())
			return err
		}
	}
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512}, Timeout: s.callTimeout()}
	rest := func(ctx context.Context, _ *rand.Rand, _ int) error {
		body := reqs.body()
		resp, err := httpc.Post("http://"+s.addr["gateway"]+"/v1/rank", "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	}
	// The ranker alone scores the features featuresvc would give, fetched
	// once per distinct request shape up front.
	direct, err := s.directScorer(rk)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	// Process labels (suite.start): whose CPU each configuration uses.
	micro := []string{"featuresvc", "auctionsvc", "rankersvc-v2", "rankersvc-v1", "routersvc"}
	// exp puts an experiment in force, and waits until a request to the
	// router shows it: inForce judges the request's assignment.
	// Both the router and ML as one service follow the experiments in KV.
	routers := []routerv1.RouterServiceClient{routerv1.NewRouterServiceClient(router), routerv1.NewRouterServiceClient(ml)}
	// The stream router too: the experiment in force applies to it.
	stream, err := dial(s.addr["stream"])
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	floor, err := dial(s.addr["floor"])
	if err != nil {
		closeAll()
		stream.Close()
		return nil, nil, err
	}
	// featuresvc alone: GetFeatures as the router asks (1 user, 100 ads)
	// against an empty call to the same process (#18's target).
	faddr, err := s.healthyAddr("adrank-feature")
	if err != nil {
		closeAll()
		stream.Close()
		floor.Close()
		return nil, nil, err
	}
	fc, err := dial(faddr)
	if err != nil {
		closeAll()
		stream.Close()
		floor.Close()
		return nil, nil, err
	}
	full, err := dial(s.addr["full"])
	if err != nil {
		closeAll()
		stream.Close()
		floor.Close()
		fc.Close()
		return nil, nil, err
	}
	prevClose := closeAll
	closeAll = func() { prevClose(); stream.Close(); floor.Close(); fc.Close(); full.Close() }
	routers = append(routers, routerv1.NewRouterServiceClient(stream), routerv1.NewRouterServiceClient(full))
	exp := func(doc string, inForce func(*routerv1.Assignment) bool) func() error {
		return func() error {
			if err := s.kv("adrank/experiments/feed", doc); err != nil {
				return err
			}
			for _, r := range routers {
				if err := wait(context.Background(), "experiment "+doc+" in force", 30*time.Second, func() error {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					resp, err := r.Rank(ctx, reqs.rank())
					if err == nil && !inForce(resp.GetAssignment()) {
						err = fmt.Errorf("assignment %v", resp.GetAssignment())
					}
					return err
				}); err != nil {
					return err
				}
			}
			return nil
		}
	}
	none := exp(`{}`, func(a *routerv1.Assignment) bool {
		return a.GetStrategy() == routerv1.Strategy_STRATEGY_PRODUCTION && !a.GetShadowed()
	})
	configs := []config{
		{name: grpcConfig, setup: none, call: rank(router), cpu: micro},
		{name: restConfig, setup: none, call: rest, cpu: append(slices.Clone(micro), "gateway")},
		{name: shadowConfig, setup: exp(`{"shadow": {"versions": ["v1"], "fraction": 1}}`, (*routerv1.Assignment).GetShadowed), call: rank(router), cpu: micro},
		{name: "gRPC, A/B v2 against v1", setup: exp(`{"ab": {"salt": "bench", "arms": [{"version": "v2", "weight": 1}, {"version": "v1", "weight": 1}]}}`,
			func(a *routerv1.Assignment) bool { return a.GetStrategy() == routerv1.Strategy_STRATEGY_AB }), call: rank(router), cpu: micro},
		{name: "ML as one service (one process)", setup: none, call: rank(ml), cpu: []string{"routersvc-ml"}},
		{name: libraryConfig, setup: none, call: library, cpu: []string{self}},
		{name: "one ranker called directly", setup: none, call: direct, cpu: []string{"rankersvc-v2"}},
		{name: "empty gRPC call: one hop's floor", setup: none, call: empty(rk), cpu: []string{"rankersvc-v2"}},
		{name: featuresConfig, setup: none, call: getFeatures(fc), cpu: []string{"featuresvc"}},
		{name: featuresEmptyConfig, setup: none, call: empty(fc), cpu: []string{"featuresvc"}},
		{name: floorConfig, setup: func() error {
			return wait(context.Background(), "floor chain answering", 30*time.Second, func() error { return rank(floor)(context.Background(), nil, 0) })
		}, call: rank(floor), cpu: floorProcs},
		{name: fullConfig, setup: none, call: rank(full), cpu: append(slices.Clone(micro[:len(micro)-1]), "routersvc-full")},
	}
	if len(configs) < fullConfigNumber || configs[fullConfigNumber-1].name != fullConfig {
		closeAll()
		return nil, nil, fmt.Errorf("configuration %d is not %q", fullConfigNumber, fullConfig)
	}
	return configs, closeAll, nil
}

// The feature store's configurations: GetFeatures for one user and 100 ads,
// and an empty call to featuresvc, CPU counted in featuresvc alone.
const (
	featuresConfig      = "featuresvc: GetFeatures, 1 user and 100 ads"
	featuresEmptyConfig = "featuresvc: empty gRPC call"
)

// getFeatures asks featuresvc for one user's and 100 ads' features, users
// and ads drawn from the demo world's, with a context.
func getFeatures(cc *grpc.ClientConn) call {
	client := featuresv1.NewFeatureServiceClient(cc)
	return func(ctx context.Context, rng *rand.Rand, _ int) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		req := &featuresv1.GetFeaturesRequest{UserId: fmt.Sprintf("u%d", 1+rng.IntN(5000)), AdIds: make([]string, 100),
			Context: &featuresv1.RequestContext{Timestamp: timestamppb.Now(), Device: "mobile", Query: "sports"}}
		first := rng.IntN(900)
		for i := range req.AdIds {
			req.AdIds[i] = fmt.Sprintf("ad%d", first+i+1)
		}
		_, err := client.GetFeatures(ctx, req)
		return err
	}
}

// empty calls the health service: no work, so its latency is what one
// loopback gRPC hop costs on this machine.
func empty(cc *grpc.ClientConn) call {
	client := healthpb.NewHealthClient(cc)
	return func(ctx context.Context, _ *rand.Rand, _ int) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
}

func (s *suite) directScorer(rk *grpc.ClientConn) (call, error) {
	addr, err := s.healthyAddr("adrank-feature")
	if err != nil {
		return nil, err
	}
	fc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer fc.Close()
	features := featuresv1.NewFeatureServiceClient(fc)
	rng := rand.New(rand.NewPCG(9, 9))
	var reqs []*rankerv1.ScoreRequest
	for n := range 64 {
		r := request(rng, n)
		ids := make([]string, len(r.GetCandidates()))
		for i, c := range r.GetCandidates() {
			ids[i] = c.GetAdId()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		f, err := features.GetFeatures(ctx, &featuresv1.GetFeaturesRequest{UserId: r.GetUserId(), AdIds: ids, Context: &featuresv1.RequestContext{Device: "mobile", Country: "US"}})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("features for the direct ranker load: %w", err)
		}
		reqs = append(reqs, &rankerv1.ScoreRequest{Shared: f.GetShared(), Candidates: f.GetAdFeatures()})
	}
	client := rankerv1.NewRankerServiceClient(rk)
	return func(ctx context.Context, rng *rand.Rand, n int) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := client.Score(ctx, reqs[rng.IntN(len(reqs))])
		return err
	}, nil
}

// healthyAddr finds a healthy instance of a service in Consul.
func (s *suite) healthyAddr(service string) (string, error) {
	entries, _, err := s.consul.Health().Service(service, "", true, nil)
	if err != nil {
		return "", err
	}
	if len(entries) == 0 {
		return "", fmt.Errorf("no healthy %s in consul", service)
	}
	e := entries[0]
	return fmt.Sprintf("%s:%d", e.Service.Address, e.Service.Port), nil
}

func (s *suite) measure(ctx context.Context, c config) (result, error) {
	r := result{name: c.name, p50: map[int]float64{}, p99: map[int]float64{}}
	if err := c.setup(); err != nil {
		return r, err
	}
	// Warm up connections and caches.
	saturate(ctx, c.call, 16, 300*time.Millisecond)
	var sats, cpus []float64
	by := map[string][]float64{}
	for run := range s.o.runs {
		if run == 0 {
			defer s.profile(c)()
		}
		before := s.cpuByLabel(c.cpu)
		start := time.Now()
		tput, failed := saturate(ctx, c.call, 64, s.o.duration)
		n := tput * time.Since(start).Seconds()
		sats = append(sats, tput)
		var total float64
		for label, sec := range s.cpuByLabel(c.cpu) {
			d := sec - before[label]
			total += d
			by[label] = append(by[label], d/n*1000)
		}
		cpus = append(cpus, total/n*1000)
		r.errors += failed
	}
	r.saturation, r.cpuPer1000 = median(sats), median(cpus)
	r.cpuBy = map[string]float64{}
	for label, v := range by {
		r.cpuBy[label] = median(v)
	}
	everydayBy := map[string][]float64{}
	var everydayCPU []float64
	for _, rate := range s.o.rates {
		var p50s, p99s []float64
		for range s.o.runs {
			if rate != everyday {
				p50, p99, failed := openLoop(ctx, c.call, rate, s.o.duration)
				p50s, p99s = append(p50s, p50), append(p99s, p99)
				r.errors += failed
				continue
			}
			sm, failed := s.everydayRun(ctx, c)
			p50s, p99s = append(p50s, sm.p50), append(p99s, sm.p99)
			r.errors += failed
			everydayCPU = append(everydayCPU, sm.cpu)
			for label, d := range sm.by {
				everydayBy[label] = append(everydayBy[label], d)
			}
		}
		r.p50[rate], r.p99[rate] = median(p50s), median(p99s)
	}
	if len(everydayCPU) > 0 {
		r.cpuEveryday, r.cpuByEveryday = median(everydayCPU), map[string]float64{}
		for label, v := range everydayBy {
			r.cpuByEveryday[label] = median(v)
		}
	}
	return r, ctx.Err()
}

// profile starts CPU profiles of c's processes for the length of one run and
// returns a function that waits for them and writes them to o.profile.
func (s *suite) profile(c config) (wait func()) {
	if s.o.profile == "" {
		return func() {}
	}
	secs := max(1, int(s.o.duration.Seconds()))
	var wg sync.WaitGroup
	for _, p := range s.procs {
		if p.debug == "" || !slices.Contains(c.cpu, p.label) {
			continue
		}
		file := filepath.Join(s.o.profile, fmt.Sprintf("%s.%s.pprof", slug(c.name), p.label))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fetch(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.debug, secs), file); err != nil {
				fmt.Fprintf(os.Stderr, "adrankbench: profile %s: %v\n", file, err)
			}
		}()
	}
	return wg.Wait
}

func fetch(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}

// slug makes a configuration name a file name.
func slug(name string) string {
	return strings.Trim(strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || '0' <= r && r <= '9' {
			return r
		}
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return '-'
	}, name), "-")
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			return strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
		}
	}
	return "unknown CPU"
}
