package discovery_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/adrank/adrank/platform/consultest"
	"github.com/adrank/adrank/platform/discovery"
	"github.com/adrank/adrank/platform/grpcx"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// latest records the last value a watch delivered.
type latest[T any] struct {
	mu sync.Mutex
	v  T
	n  int
}

func (l *latest[T]) set(v T) { l.mu.Lock(); l.v = v; l.n++; l.mu.Unlock() }
func (l *latest[T]) get() (T, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.v, l.n
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatchServiceAndPrefix(t *testing.T) {
	agent := consultest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()

	var insts latest[[]discovery.Instance]
	var kv latest[api.KVPairs]
	wg.Add(2)
	go func() { defer wg.Done(); discovery.WatchService(ctx, agent.Client, quiet, "svc", insts.set) }()
	go func() { defer wg.Done(); discovery.WatchPrefix(ctx, agent.Client, quiet, "cfg/", kv.set) }()

	waitFor(t, 30*time.Second, "first (empty) results", func() bool {
		_, a := insts.get()
		_, b := kv.get()
		return a > 0 && b > 0
	})
	reg := &api.AgentServiceRegistration{ID: "svc-1", Name: "svc", Address: "127.0.0.1", Port: 1234, Meta: map[string]string{"k": "v"},
		Check: &api.AgentServiceCheck{TTL: "1m", Status: api.HealthPassing}}
	if err := agent.Client.Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "registered instance, healthy", func() bool {
		v, _ := insts.get()
		return len(v) == 1 && v[0].Addr == "127.0.0.1:1234" && v[0].Healthy && v[0].Meta["k"] == "v"
	})
	if err := agent.Client.Agent().UpdateTTL("service:svc-1", "down", api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "instance unhealthy", func() bool {
		v, _ := insts.get()
		return len(v) == 1 && !v[0].Healthy
	})
	if _, err := agent.Client.KV().Put(&api.KVPair{Key: "cfg/a", Value: []byte("1")}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "kv pair", func() bool {
		v, _ := kv.get()
		return len(v) == 1 && string(v[0].Value) == "1"
	})
	if err := agent.Client.Agent().ServiceDeregister("svc-1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "instance gone", func() bool {
		v, _ := insts.get()
		return len(v) == 0
	})
}

// A Consul outage keeps the last known state, and the watch recovers when
// the agent is back.
func TestWatchSurvivesConsulRestart(t *testing.T) {
	agent := consultest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var kv latest[api.KVPairs]
	put := func(v string) {
		t.Helper()
		if _, err := agent.Client.KV().Put(&api.KVPair{Key: "cfg/a", Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	put("before")
	wg.Add(1)
	go func() { defer wg.Done(); discovery.WatchPrefix(ctx, agent.Client, quiet, "cfg/", kv.set) }()
	waitFor(t, 30*time.Second, "first value", func() bool { v, _ := kv.get(); return len(v) == 1 })

	agent.Stop()
	time.Sleep(500 * time.Millisecond)
	if v, _ := kv.get(); len(v) != 1 || string(v[0].Value) != "before" {
		t.Fatalf("state lost during the outage: %v", v)
	}
	if err := agent.Restart(); err != nil {
		t.Fatal(err)
	}
	put("after") // a dev agent comes back empty
	waitFor(t, 30*time.Second, "value after restart", func() bool {
		v, _ := kv.get()
		return len(v) == 1 && string(v[0].Value) == "after"
	})
}

// The resolver feeds a real ClientConn: calls go round robin over the pushed
// addresses, and follow updates.
func TestResolverBalancesAndFollowsUpdates(t *testing.T) {
	var addrs []string
	for range 2 {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		hs := health.NewServer()
		healthpb.RegisterHealthServer(srv, hs)
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
		addrs = append(addrs, lis.Addr().String())
	}
	res := discovery.NewResolver()
	res.Update("svc", addrs[:1])
	cc, err := grpc.NewClient(discovery.Target("svc"), grpcx.ClientOptions(grpc.WithResolvers(res))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)
	peers := func(n int) []string {
		seen := map[string]bool{}
		for range n {
			var p peer.Peer
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			seen[p.Addr.String()] = true
		}
		out := make([]string, 0, len(seen))
		for a := range seen {
			out = append(out, a)
		}
		slices.Sort(out)
		return out
	}
	if got := peers(10); !slices.Equal(got, addrs[:1]) {
		t.Fatalf("peers %v, want %v", got, addrs[:1])
	}
	res.Update("svc", addrs)
	want := slices.Clone(addrs)
	slices.Sort(want)
	waitFor(t, 30*time.Second, "both instances used", func() bool { return slices.Equal(peers(10), want) })
	res.Update("svc", addrs[1:])
	waitFor(t, 30*time.Second, "only the second instance used", func() bool { return slices.Equal(peers(10), addrs[1:]) })
	if got := fmt.Sprint(res.Addrs("svc")); got != fmt.Sprint(addrs[1:]) {
		t.Errorf("Addrs %s", got)
	}
}
