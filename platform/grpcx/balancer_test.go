package grpcx

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
)

// backend is one instance on loopback that counts the health checks it
// serves, optionally after a delay or failing with UNAVAILABLE. While held,
// it answers nothing until release is closed.
type backend struct {
	addr    string
	calls   atomic.Int64
	delay   time.Duration
	fail    bool
	held    atomic.Bool
	release chan struct{}
}

func startBackends(t *testing.T, bs ...*backend) []resolver.Address {
	t.Helper()
	var addrs []resolver.Address
	for _, b := range bs {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		b.addr = lis.Addr().String()
		srv, hs := NewServer(slog.New(slog.DiscardHandler), grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
			b.calls.Add(1)
			if b.fail {
				return nil, status.Error(codes.Unavailable, "down")
			}
			if b.held.Load() {
				select {
				case <-b.release:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			select {
			case <-time.After(b.delay):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return next(ctx, req)
		}))
		hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Serve(lis) }()
		t.Cleanup(func() { srv.Stop(); <-done })
		addrs = append(addrs, resolver.Address{Addr: b.addr})
	}
	return addrs
}

// dial connects to the backends through BalancerName and waits until every
// one is ready.
func dial(t *testing.T, bs ...*backend) healthpb.HealthClient {
	t.Helper()
	addrs := startBackends(t, bs...)
	r := manual.NewBuilderWithScheme("test")
	r.InitialState(resolver.State{Addresses: addrs})
	cc, err := grpc.NewClient(r.Scheme()+":///backends", ClientOptions(grpc.WithResolvers(r))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Calls until each backend has answered one: all are ready.
	for {
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil && !bs[0].fail {
			t.Fatal(err)
		}
		all := true
		for _, b := range bs {
			all = all && b.calls.Load() > 0
		}
		if all {
			break
		}
	}
	for _, b := range bs {
		b.calls.Store(0)
	}
	return client
}

func check(t *testing.T, c healthpb.HealthClient, ctx context.Context) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// Sequential calls have nothing in flight: they go round robin, evenly.
func TestBalancerSpreadsEvenly(t *testing.T) {
	bs := []*backend{{}, {}, {}}
	c := dial(t, bs...)
	for range 300 {
		if err := check(t, c, context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range bs {
		if n := b.calls.Load(); n < 99 || n > 101 {
			t.Errorf("backend %d served %d of 300", i, n)
		}
	}
}

// The attempts of one logical call (a call and its hedge) go to different
// instances while there are any left, even when other calls come between
// them (round robin would send the second attempt to the first's instance).
func TestBalancerAvoidsEarlierAttempts(t *testing.T) {
	bs := []*backend{{}, {}}
	c := dial(t, bs...)
	for range 50 {
		att := &Attempts{}
		ctx := WithAttempts(context.Background(), att)
		for range 3 {
			if err := check(t, c, ctx); err != nil {
				t.Fatal(err)
			}
			if err := check(t, c, context.Background()); err != nil { // another caller
				t.Fatal(err)
			}
		}
		a := att.Addrs()
		if len(a) != 3 || a[0] == a[1] {
			t.Fatalf("attempts went to %v: the second repeats the first", a)
		}
	}
}

// A retry of UNAVAILABLE avoids the instance that failed: with one of
// three instances down, every call succeeds.
func TestBalancerRetriesElsewhere(t *testing.T) {
	down := &backend{fail: true}
	bs := []*backend{down, {}, {}}
	c := dial(t, bs...)
	for range 200 {
		if err := check(t, c, context.Background()); err != nil {
			t.Fatalf("a call failed: %v", err)
		}
	}
	if down.calls.Load() == 0 {
		t.Error("the failing instance was never tried: the test proves nothing")
	}
}

// Under concurrent load a stuck instance holds calls in flight, so new calls
// go to the other one: with one of two instances answering nothing, eight
// workers still get 200 answers from the fast one, and the stuck one holds
// no more than about half of them. Round robin would send every worker's
// second call to the stuck instance, and all eight would wait on it.
func TestBalancerSteersAwayFromAStuckInstance(t *testing.T) {
	stuck, fast := &backend{release: make(chan struct{})}, &backend{delay: time.Millisecond}
	c := dial(t, stuck, fast)
	stuck.held.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for fast.calls.Load() < 200 && ctx.Err() == nil {
				if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil && ctx.Err() == nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for fast.calls.Load() < 200 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	held := stuck.calls.Load()
	close(stuck.release)
	wg.Wait()
	t.Logf("stuck instance held %d calls while the fast one served %d", held, fast.calls.Load())
	if fast.calls.Load() < 200 {
		t.Fatalf("the fast instance served %d calls before the deadline, the stuck one held %d: the workers waited on the stuck one", fast.calls.Load(), held)
	}
	// A call goes to the stuck instance only while it holds no more calls
	// than the fast one, which has at most 8 minus those in flight; picks
	// made at the same moment can each add one more.
	if held > 6 {
		t.Errorf("the stuck instance holds %d of 8 workers' calls", held)
	}
}
