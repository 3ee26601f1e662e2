package service_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/adrank/adrank/platform/consultest"
	"github.com/adrank/adrank/platform/service"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// slowTest answers UnaryCall after a delay, standing in for a slow request.
type slowTest struct {
	testgrpc.UnimplementedTestServiceServer
	started chan struct{}
}

func (s *slowTest) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	close(s.started)
	time.Sleep(300 * time.Millisecond)
	return &testpb.SimpleResponse{}, nil
}

func TestRegisterServeAndDrain(t *testing.T) {
	agent := consultest.Start(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := service.New(service.Options{Name: "adrank-test", Listen: "127.0.0.1:0", ConsulAddr: agent.Addr, Grace: 5 * time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	slow := &slowTest{started: make(chan struct{})}
	testgrpc.RegisterTestServiceServer(srv.GRPC(), slow)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()

	// Registered with a passing gRPC health check.
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, _, err := agent.Client.Health().Service("adrank-test", "", true, nil)
		if err == nil && len(entries) == 1 {
			if e := entries[0]; e.Service.ID != "adrank-test-"+srv.Addr() {
				t.Fatalf("instance id %q", e.Service.ID)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not registered healthy: %v %v", entries, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Health goes NOT_SERVING first, and an in-flight request still finishes
	// although shutdown starts under it.
	cc, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	watch, err := healthpb.NewHealthClient(cc).Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v %v, want SERVING", r, err)
	}
	callDone := make(chan error, 1)
	go func() {
		_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(context.Background(), &testpb.SimpleRequest{})
		callDone <- err
	}()
	<-slow.started
	cancel()
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health %v %v, want NOT_SERVING", r, err)
	}
	wcancel() // an open stream would hold the drain until the grace period
	if err := <-callDone; err != nil {
		t.Fatalf("in-flight call failed during drain: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if entries, _, _ := agent.Client.Health().Service("adrank-test", "", false, nil); len(entries) != 0 {
		t.Errorf("still registered after shutdown: %d", len(entries))
	}
}
