// Command adrankbench benchmarks the pipeline as separate processes on
// loopback (make bench). It starts Consul and every service from bin/, then
// for each configuration measures throughput at saturation (closed loop),
// p50 and p99 at fixed offered rates (open loop, latency measured from the
// scheduled send time, so a stall is not hidden), and the services' CPU
// seconds per 1,000 requests (from /proc). Requests carry 50 candidates and
// 3 slots on feed's GBDT model. It writes the results between markers in
// BENCHMARKS.md and a latency plot to docs/latency.svg.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/consultest"
	"github.com/adrank/adrank/platform/idsig"
)

type options struct {
	root     string
	duration time.Duration
	rates    []int
	runs     int
	smoke    bool
	profile  string
	only     []int
	procs    int
	// stateImpressions are written into the store of a second router
	// before it starts (configuration fullConfigNumber).
	stateImpressions int
	// pairs is how many rounds each of #16's ratios is measured in
	// alternation (pairs.go); 0 skips it.
	pairs int
	out   string
	svg   string
}

func main() {
	var o options
	var rates string
	flag.StringVar(&o.root, "root", ".", "repository root (bin/, models/)")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "length of each measurement")
	flag.StringVar(&rates, "rates", "250,500,1000,2000", "offered rates (requests/s) for the latency measurements")
	flag.IntVar(&o.runs, "runs", 3, "runs per measurement; the median is reported")
	flag.StringVar(&o.profile, "profile", "", "directory for CPU profiles of every service, taken during each configuration's first saturation run (pprof)")
	flag.IntVar(&o.stateImpressions, "state-impressions", 5_000_000, fmt.Sprintf("impressions written into the store of the router that configuration %d measures against a fresh one (#16: flat with state); 0: none", fullConfigNumber))
	flag.IntVar(&o.pairs, "pairs", 5, "rounds of each of #16's ratios measured in alternation, its two configurations back to back (0: none)")
	flag.IntVar(&o.procs, "gomaxprocs", 0, "GOMAXPROCS of every service (0: Go's default, one per CPU)")
	flag.Func("only", fmt.Sprintf("measure only configurations N[,M...] (1-%d; %d: the streaming measurement alone), one after another in this run, and write nothing", fullConfigNumber, fullConfigNumber+1), func(v string) error {
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				return fmt.Errorf("%q: want configuration numbers", v)
			}
			o.only = append(o.only, n)
		}
		return nil
	})
	flag.BoolVar(&o.smoke, "smoke", false, "a short run that proves the suite works; writes nothing")
	flag.StringVar(&o.out, "out", "BENCHMARKS.md", "file whose <!-- bench:start --> ... <!-- bench:end --> section is rewritten")
	flag.StringVar(&o.svg, "svg", "docs/latency.svg", "latency plot")
	flag.Parse()
	for _, r := range strings.Split(rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "adrankbench: bad rate %q\n", r)
			os.Exit(2)
		}
		o.rates = append(o.rates, n)
	}
	if o.smoke {
		o.duration, o.rates, o.runs, o.pairs = 700*time.Millisecond, []int{100}, 1, min(o.pairs, 1)
		o.stateImpressions = min(o.stateImpressions, 20_000)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "adrankbench:", err)
		os.Exit(1)
	}
}

// proc is one started process.
type proc struct {
	label string // the binary plus what tells instances apart, e.g. "rankersvc-v2"
	debug string // pprof address, when profiling
	cmd   *exec.Cmd
	out   bytes.Buffer
}

type suite struct {
	o      options
	tmp    string // state files
	pool   *pool  // the requests, built up front
	procs  []*proc
	consul *api.Client
	addr   map[string]string
	filled stateFill
}

func (s *suite) start(label string, env []string, args ...string) (*proc, error) {
	name, _, _ := strings.Cut(label, "-")
	p := &proc{label: label}
	if s.o.profile != "" && name != "devbroker" {
		ports, err := consultest.FreePorts(1)
		if err != nil {
			return nil, err
		}
		p.debug = fmt.Sprintf("127.0.0.1:%d", ports[0])
		args = append(args, "--debug-addr", p.debug)
	}
	p.cmd = exec.Command(filepath.Join(s.o.root, "bin", name), args...)
	p.cmd.Dir = s.o.root
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, &p.out
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	s.procs = append(s.procs, p)
	return p, nil
}

func (s *suite) stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		_ = s.procs[i].cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range s.procs {
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
	}
	if s.tmp != "" {
		_ = os.RemoveAll(s.tmp) // the state files: gigabytes with a filled store
	}
}

// self is the label of this process: the load generator, and the library
// when the monolith is measured.
const self = "self"

// cpuByLabel returns the user+system CPU seconds of each process with one
// of these labels.
func (s *suite) cpuByLabel(labels []string) map[string]float64 {
	out := map[string]float64{}
	if slices.Contains(labels, self) {
		if sec, ok := cpuSeconds(os.Getpid()); ok {
			out[self] = sec
		}
	}
	for _, p := range s.procs {
		if !slices.Contains(labels, p.label) || p.cmd.Process == nil {
			continue
		}
		if sec, ok := cpuSeconds(p.cmd.Process.Pid); ok {
			out[p.label] += sec
		}
	}
	return out
}

// cpuSeconds is a process's user+system CPU time, from /proc.
func cpuSeconds(pid int) (float64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// Fields after the ")" that ends the command name; utime, stime are 14, 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100, true // USER_HZ
}

func wait(ctx context.Context, what string, d time.Duration, ok func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := ok()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *suite) setup(ctx context.Context) error {
	tmp, err := os.MkdirTemp("", "adrankbench")
	if err != nil {
		return err
	}
	s.tmp = tmp
	// The router whose store holds millions of impressions, written before
	// it starts, and before ports are chosen (they could be taken while
	// the store fills).
	full := filepath.Join(tmp, "full.db")
	if err := s.fillState(ctx, full); err != nil {
		return err
	}
	ports, err := consultest.FreePorts(16)
	if err != nil {
		return err
	}
	p := func(i int) string { return strconv.Itoa(ports[i]) }
	s.addr = map[string]string{"consul": "127.0.0.1:" + p(0), "router": "127.0.0.1:" + p(5), "gateway": "127.0.0.1:" + p(6), "ml": "127.0.0.1:" + p(7), "ranker": "127.0.0.1:" + p(8),
		"kafka": "127.0.0.1:" + p(9), "stream": "127.0.0.1:" + p(10), "floor": "127.0.0.1:" + p(11), "full": "127.0.0.1:" + p(15)}
	bin, err := consulBinary(s.o.root)
	if err != nil {
		return err
	}
	c := exec.Command(bin, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-log-level", "error", "-dns-port", "-1",
		"-http-port", p(0), "-grpc-port", p(1), "-serf-lan-port", p(2), "-serf-wan-port", p(3), "-server-port", p(4))
	s.procs = append(s.procs, &proc{label: "consul", cmd: c})
	if err := c.Start(); err != nil {
		return err
	}
	cfg := api.DefaultConfig()
	cfg.Address = s.addr["consul"]
	if s.consul, err = api.NewClient(cfg); err != nil {
		return err
	}
	if err := wait(ctx, "consul leader", 30*time.Second, func() error {
		l, err := s.consul.Status().Leader()
		if err == nil && l == "" {
			err = errors.New("no leader")
		}
		return err
	}); err != nil {
		return err
	}
	if err := s.kv("adrank/domains/feed", `{"production": "v2"}`); err != nil {
		return err
	}
	env := []string{"CONSUL_HTTP_ADDR=" + s.addr["consul"]}
	if s.o.procs > 0 {
		env = append(env, fmt.Sprintf("GOMAXPROCS=%d", s.o.procs))
	}
	// The smoke proves that the suite works, not how fast this machine is:
	// its time limits are far above any answer's time, so that a slow or
	// busy machine cannot turn answers into timeouts.
	// One impression key for the routers (the stream worker's router
	// needs one: it shares its answers through Kafka and the store).
	key := filepath.Join(tmp, "impression.key")
	if err := os.WriteFile(key, []byte(idsig.NewKey()+"\n"), 0o600); err != nil {
		return err
	}
	routerLimits := []string{"--impression-key", key}
	var gatewayLimits []string
	if s.o.smoke {
		routerLimits = append(routerLimits, "--budget", "10s", "--features-timeout", "5s")
		gatewayLimits = []string{"--timeout", "20s"}
	}
	starts := [][]string{
		{"featuresvc"},
		{"auctionsvc"},
		{"rankersvc-v2", "--domain", "feed", "--version", "v2", "--model", "models/feed/v2.json", "--listen", s.addr["ranker"]},
		{"rankersvc-v1", "--domain", "feed", "--version", "v1", "--model", "models/feed/v1.json"},
		append([]string{"routersvc", "--listen", s.addr["router"], "--state-file", filepath.Join(tmp, "router.db")}, routerLimits...),
		// The gateway fronts the microservices' router only: ML as one
		// service registers as a router too.
		append([]string{"gateway", "--listen", s.addr["gateway"], "--router-addr", s.addr["router"]}, gatewayLimits...),
		append([]string{"routersvc-ml", "--ml-service", "--listen", s.addr["ml"], "--state-file", filepath.Join(tmp, "ml.db")}, routerLimits...),
		// The streaming deployment: the development broker and a router
		// running the stream worker (which also serves Rank, answering
		// streamed requests from its precomputed answers).
		append([]string{"routersvc-stream", "--listen", s.addr["stream"], "--state-file", filepath.Join(tmp, "stream.db"),
			"--kafka-brokers", s.addr["kafka"], "--stream-id", "bench"}, routerLimits...),
		append([]string{"routersvc-full", "--listen", s.addr["full"], "--state-file", full}, routerLimits...),
	}
	if _, err := s.start("devbroker", env, "--port", p(9), "--partitions", "4"); err != nil {
		return err
	}
	// The floor chain: a router whose Rank calls three empty health
	// checks, one after another, on three leaves.
	var leaves []string
	for i := range 3 {
		addr := "127.0.0.1:" + p(12+i)
		leaves = append(leaves, addr)
		if _, err := s.start(fmt.Sprintf("floorsvc-leaf%d", i+1), env, "--listen", addr); err != nil {
			return err
		}
	}
	if _, err := s.start("floorsvc-router", env, "--listen", s.addr["floor"], "--downstream", strings.Join(leaves, ",")); err != nil {
		return err
	}
	for _, a := range starts {
		if _, err := s.start(a[0], env, append(a[1:], "--log-level", "WARN")...); err != nil {
			return err
		}
	}
	// Every service healthy in Consul (every routersvc registers as a
	// router: the microservices', ML as one service, the stream worker's
	// and the filled one), then the gateway answering.
	want := map[string]int{"adrank-feature": 1, "adrank-auction": 1, "adrank-ranker": 2, "adrank-router": 4}
	if err := wait(ctx, "services healthy in consul", 30*time.Second, func() error {
		for name, n := range want {
			entries, _, err := s.consul.Health().Service(name, "", true, nil)
			if err != nil {
				return err
			}
			if len(entries) < n {
				return fmt.Errorf("%s: %d healthy, want %d", name, len(entries), n)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	return wait(ctx, "gateway healthy", 30*time.Second, func() error {
		resp, err := http.Get("http://" + s.addr["gateway"] + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
}

// fillState writes o.stateImpressions into the state file at path with
// bin/statefill, when configuration fullConfigNumber is to be measured, and
// keeps the file's size.
func (s *suite) fillState(ctx context.Context, path string) error {
	if s.o.stateImpressions <= 0 || (len(s.o.only) > 0 && !slices.Contains(s.o.only, fullConfigNumber)) {
		return nil
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, filepath.Join(s.o.root, "bin", "statefill"), "--state-file", path, "--impressions", strconv.Itoa(s.o.stateImpressions))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("statefill: %w: %s", err, out)
	}
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	s.filled = stateFill{impressions: s.o.stateImpressions, bytes: info.Size(), took: time.Since(start), path: path}
	fmt.Printf("%-40s %d impressions, %.0f MB, written in %v\n", "state for configuration "+strconv.Itoa(fullConfigNumber), s.filled.impressions, float64(s.filled.bytes)/1e6, s.filled.took.Round(time.Second))
	return nil
}

// stateFill is what fillState wrote.
type stateFill struct {
	impressions int
	bytes       int64
	took        time.Duration
	path        string
}

// callTimeout bounds each call the load generator makes: far above any
// answer's time in the smoke, as the services' own limits are there.
func (s *suite) callTimeout() time.Duration {
	if s.o.smoke {
		return 20 * time.Second
	}
	return 2 * time.Second
}

func (s *suite) kv(key, value string) error {
	_, err := s.consul.KV().Put(&api.KVPair{Key: key, Value: []byte(value)}, nil)
	return err
}

func consulBinary(root string) (string, error) {
	if b := os.Getenv("CONSUL_BIN"); b != "" {
		return b, nil
	}
	if b, err := exec.LookPath("consul"); err == nil {
		return b, nil
	}
	b := filepath.Join(root, "bin", "consul")
	_, err := os.Stat(b)
	return b, err
}

// request is a Rank request with 50 feed candidates and 3 slots.
func request(rng *rand.Rand, n int) *routerv1.RankRequest {
	req := &routerv1.RankRequest{RequestId: fmt.Sprintf("bench-%d-%d", n, rng.Uint64()), UserId: fmt.Sprintf("u%d", 1+rng.IntN(5000)),
		Domain: "feed", Slots: 3, Context: &routerv1.RequestContext{Device: routerv1.Device_DEVICE_MOBILE, Country: "US"}}
	for _, i := range rng.Perm(1000)[:50] {
		req.Candidates = append(req.Candidates, &routerv1.Candidate{AdId: fmt.Sprintf("ad%d", i+1), AdvertiserId: "adv1", BidMicros: 100_000 + rng.Int64N(900_000)})
	}
	return req
}

// call is one request against a configuration.
type call func(ctx context.Context, rng *rand.Rand, n int) error
