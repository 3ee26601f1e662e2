package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/consultest"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/idsig"
	"github.com/adrank/adrank/platform/syncbuf"
	"github.com/adrank/adrank/platform/tlsx"
	"github.com/adrank/adrank/platform/tlsx/tlstest"
)

// root is the repository root (the folder holding go.work).
func root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.work above the working directory")
		}
		dir = parent
	}
}

// proc is one service process.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan struct{}
	err  error
	// metricsAddr serves the process's /metrics (clusterOptions.metrics).
	metricsAddr string
}

// exitCode waits up to d for the process to exit and returns its exit code.
func (p *proc) exitCode(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("%s did not exit within %v", p.name, d)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("%s: %v", p.name, p.err)
	}
	return 0
}

// cluster is Consul plus the adrank services, as real processes.
type cluster struct {
	t          testing.TB
	root       string
	consul     *consultest.Agent
	routerAddr string
	gatewayURL string
	router     routerv1.RouterServiceClient
	procs      []*proc
	routerProc *proc
	routerArgs []string
	// impressionKey is the routers' impression ID keys file.
	impressionKey string
	// snapshots is the router's batch snapshot store (a directory).
	snapshots string
	// common are flags every service gets (TLS); http and dial reach the
	// gateway and the router accordingly.
	common []string
	// metrics: each service gets a --metrics-addr.
	metrics bool
	// env is more environment for every service.
	env  []string
	http *http.Client
	dial grpc.DialOption
}

// startCluster starts Consul, writes the domain configs, and starts
// featuresvc, auctionsvc, the given rankers ("domain/version" -> model
// path), the router and the gateway, and waits until the gateway is healthy.
func startCluster(t testing.TB, rankers ...[2]string) *cluster {
	t.Helper()
	return startClusterWith(t, consultest.Start, rankers...)
}

// startClusterWith starts the cluster on the agent startConsul returns.
func startClusterWith(t testing.TB, startConsul func(testing.TB) *consultest.Agent, rankers ...[2]string) *cluster {
	t.Helper()
	return startClusterOpts(t, clusterOptions{consul: startConsul}, rankers...)
}

// clusterOptions vary how a cluster starts.
type clusterOptions struct {
	consul func(testing.TB) *consultest.Agent
	// tls: every service serves TLS only, with one certificate for
	// 127.0.0.1 signed by this CA, and calls the others verifying theirs.
	tls *tlstest.PKI
	// metrics: every service serves Prometheus metrics on a port of its
	// own (proc.metricsAddr).
	metrics bool
	// env is more environment for every service (OTEL_*, say), args more
	// flags.
	env  []string
	args []string
	// featuresArgs are more flags for featuresvc.
	featuresArgs []string
}

func startClusterOpts(t testing.TB, o clusterOptions, rankers ...[2]string) *cluster {
	t.Helper()
	c := &cluster{t: t, root: root(t), http: http.DefaultClient, dial: grpc.WithTransportCredentials(insecure.NewCredentials()), metrics: o.metrics, env: o.env}
	scheme := "http"
	c.common = append(c.common, o.args...)
	if o.tls != nil {
		cert, key := o.tls.Server(t, "adrank", "127.0.0.1")
		c.common = append(c.common, "--tls-cert", cert, "--tls-key", key, "--tls-ca", o.tls.CAFile)
		cfg, err := tlsx.Config{CA: o.tls.CAFile}.ClientConfig()
		if err != nil {
			t.Fatal(err)
		}
		c.http = &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		c.dial = grpc.WithTransportCredentials(credentials.NewTLS(cfg))
		scheme = "https"
	}
	for _, b := range []string{"featuresvc", "rankersvc", "auctionsvc", "routersvc", "gateway"} {
		if _, err := os.Stat(c.bin(b)); err != nil {
			t.Fatalf("%s is missing: run `make build` first", c.bin(b))
		}
	}
	c.consul = o.consul(t)
	c.putKV("adrank/domains/feed", `{"production": "v1"}`)
	c.putKV("adrank/domains/stories", `{"production": "v1"}`)
	ports, err := consultest.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	c.routerAddr = "127.0.0.1:" + strconv.Itoa(ports[0])
	gatewayAddr := "127.0.0.1:" + strconv.Itoa(ports[1])
	c.gatewayURL = scheme + "://" + gatewayAddr
	c.start("featuresvc", o.featuresArgs...)
	c.start("auctionsvc")
	// Features and the auction healthy in Consul before anything ranks: a
	// test's first Rank must not race their first health check.
	for _, name := range []string{consulx.FeatureService, consulx.AuctionService} {
		eventually(t, settle, func() error {
			entries, _, err := c.consul.Client.Health().Service(name, "", true, nil)
			if err != nil || len(entries) == 0 {
				return fmt.Errorf("%s: %d healthy instances, %v", name, len(entries), err)
			}
			return nil
		})
	}
	for _, r := range rankers {
		c.startRanker(r[0], r[1])
	}
	c.snapshots = filepath.Join(t.TempDir(), "snapshots")
	c.impressionKey = filepath.Join(t.TempDir(), "impression.key")
	if err := os.WriteFile(c.impressionKey, []byte(idsig.NewKey()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.routerArgs = append([]string{"--listen", c.routerAddr, "--state-file", filepath.Join(t.TempDir(), "router.db")}, routerLimits...)
	c.routerProc = c.start("routersvc", c.routerArgs...)
	c.start("gateway", "--listen", gatewayAddr)
	cc, err := grpc.NewClient(c.routerAddr, c.dial)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	c.router = routerv1.NewRouterServiceClient(cc)
	eventually(t, settle, func() error {
		code, body, err := c.tryDo(http.MethodGet, "/healthz", nil)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("healthz: %d %s", code, body)
		}
		return nil
	})
	return c
}

func (c *cluster) bin(name string) string { return filepath.Join(c.root, "bin", name) }

// start runs a service binary with the cluster's Consul; it is stopped with
// SIGTERM when the test ends.
func (c *cluster) start(name string, args ...string) *proc {
	c.t.Helper()
	args = append(append([]string{"--consul-addr", c.consul.Addr, "--grace", "3s"}, c.common...), args...)
	if name == "routersvc" && !slices.Contains(args, "--snapshots") {
		// The test's own store, never the repository's .data.
		args = append([]string{"--snapshots", c.snapshots}, args...)
	}
	if name == "routersvc" && !slices.Contains(args, "--impression-key") {
		// One key for the cluster's routers, kept across their restarts.
		args = append([]string{"--impression-key", c.impressionKey}, args...)
	}
	var metricsAddr string
	if c.metrics {
		ports, err := consultest.FreePorts(1)
		if err != nil {
			c.t.Fatal(err)
		}
		metricsAddr = "127.0.0.1:" + strconv.Itoa(ports[0])
		args = append(args, "--metrics-addr", metricsAddr)
	}
	p := &proc{name: name, cmd: exec.Command(c.bin(name), args...), out: &syncbuf.Buffer{}, done: make(chan struct{}), metricsAddr: metricsAddr}
	p.cmd.Dir = c.root
	if len(c.env) > 0 {
		p.cmd.Env = append(os.Environ(), c.env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	c.procs = append(c.procs, p)
	c.t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if c.t.Failed() {
			c.t.Logf("--- %s output:\n%s", p.name, p.out.String())
		}
	})
	return p
}

// startRanker starts a ranker for domain/version with the given model path
// (relative to the repository root) and more flags (later flags win), and
// waits until Consul sees it healthy.
func (c *cluster) startRanker(dv, modelPath string, args ...string) *proc {
	c.t.Helper()
	domain, version, ok := cut(dv)
	if !ok {
		c.t.Fatalf("bad ranker spec %q", dv)
	}
	before := len(c.rankerInstances(domain, version, true))
	p := c.start("rankersvc", append([]string{"--domain", domain, "--version", version, "--model", modelPath, "--listen", "127.0.0.1:0"}, args...)...)
	eventually(c.t, settle, func() error {
		if n := len(c.rankerInstances(domain, version, true)); n <= before {
			return fmt.Errorf("%s: %d healthy instances, want > %d", dv, n, before)
		}
		return nil
	})
	return p
}

func cut(dv string) (string, string, bool) {
	for i := range dv {
		if dv[i] == '/' {
			return dv[:i], dv[i+1:], true
		}
	}
	return "", "", false
}

func (c *cluster) rankerInstances(domain, version string, passing bool) []*api.ServiceEntry {
	c.t.Helper()
	entries, _, err := c.consul.Client.Health().Service(consulx.RankerService, "", passing, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	var out []*api.ServiceEntry
	for _, e := range entries {
		if e.Service.Meta[consulx.MetaDomain] == domain && e.Service.Meta[consulx.MetaVersion] == version {
			out = append(out, e)
		}
	}
	return out
}

func (c *cluster) putKV(key, value string) {
	c.t.Helper()
	if _, err := c.consul.Client.KV().Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) get(path string) (int, []byte) {
	c.t.Helper()
	return c.do(http.MethodGet, path, nil)
}

func (c *cluster) post(path string, body []byte) (int, []byte) {
	c.t.Helper()
	return c.do(http.MethodPost, path, body)
}

func (c *cluster) do(method, path string, body []byte) (int, []byte) {
	c.t.Helper()
	code, b, err := c.tryDo(method, path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	return code, b
}

func (c *cluster) tryDo(method, path string, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.gatewayURL+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	client := c.http
	if client == nil { // a cluster made by hand (TestRunScript)
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// domains calls ListDomains over gRPC and indexes the answer.
func (c *cluster) domains() map[string]*routerv1.DomainInfo {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.router.ListDomains(ctx, &routerv1.ListDomainsRequest{})
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[string]*routerv1.DomainInfo{}
	for _, d := range resp.GetDomains() {
		out[d.GetDomain()] = d
	}
	return out
}

func versionOf(d *routerv1.DomainInfo, v string) *routerv1.VersionInfo {
	for _, vi := range d.GetVersions() {
		if vi.GetVersion() == v {
			return vi
		}
	}
	return nil
}

// routerLimits are the time limits of the tests' routers: far above any
// answer's time here (the defaults are a 250 ms budget and a 100 ms features
// timeout). What the tests judge is what the pipeline answers, and a slow or
// busy machine must not turn answers into timeouts or degraded ones; the
// limits themselves have their own tests.
var routerLimits = []string{"--budget", "10s", "--features-timeout", "5s"}

// settle bounds how long a change may take to reach every process (a KV
// write, a registration, a kill seen by Consul's 1 s health check, a batch
// of impressions written every 100 ms). It is generous on purpose: waiting
// costs nothing when the change arrives sooner, and how soon it arrives
// depends on the machine, so the tests log it rather than assert it.
const settle = 30 * time.Second

// eventually retries f every 20 ms until it returns nil or d passes.
func eventually(t testing.TB, d time.Duration, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := f()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("not within %v: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
