package consulx_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/adrank/adrank/platform/consultest"
	"github.com/adrank/adrank/platform/consulx"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A dev agent forgets everything when it restarts; the registrar notices and
// registers the instance again, with its tags, meta and check.
func TestRegistrarReRegistersAfterAgentRestart(t *testing.T) {
	agent := consultest.Start(t)
	reg := consulx.Registration{Name: "adrank-test", Addr: "127.0.0.1:4321", Tags: []string{"domain=feed"},
		Meta: map[string]string{"version": "v1"}, DeregisterAfter: 2 * time.Minute}
	r := consulx.NewRegistrar(agent.Client, reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	r.Every = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()

	registered := func() bool {
		svc, _, err := agent.Client.Agent().Service(reg.ID(), nil)
		return err == nil && svc.Meta["version"] == "v1" && len(svc.Tags) == 1
	}
	waitFor(t, registered)
	checks, err := agent.Client.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := checks[reg.ID()+"-grpc"]; !ok || c.Type != "grpc" || c.ServiceID != reg.ID() {
		t.Errorf("check %+v", c)
	}

	agent.Stop()
	if err := agent.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, registered)

	dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
	defer dcancel()
	if err := r.Deregister(dctx); err != nil {
		t.Fatal(err)
	}
	// Run is still going: its next ticks must not register the instance again.
	time.Sleep(3 * r.Every)
	if _, _, err := agent.Client.Agent().Service(reg.ID(), nil); err == nil {
		t.Error("registered again after Deregister")
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("not registered within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
