package activity

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	"github.com/adrank/adrank/routersvc/internal/lab"
)

type fakeFeatures struct {
	featuresv1.FeatureServiceClient
	mu    sync.Mutex
	calls []int
	fail  bool
	got   chan struct{}
}

func (f *fakeFeatures) RecordActivity(_ context.Context, in *featuresv1.RecordActivityRequest, _ ...grpc.CallOption) (*featuresv1.RecordActivityResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return nil, errors.New("unavailable")
	}
	f.calls = append(f.calls, len(in.GetActivity()))
	select {
	case f.got <- struct{}{}:
	default:
	}
	return &featuresv1.RecordActivityResponse{}, nil
}

func sink(f *fakeFeatures, every time.Duration) *Sink {
	return New(func() ([]featuresv1.FeatureServiceClient, error) { return []featuresv1.FeatureServiceClient{f}, nil }, every, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// A click goes at once, not at the next interval; what is left when Run
// ends is sent; calls hold at most 10,000.
func TestSinkSendsClicksAtOnceAndDrains(t *testing.T) {
	f := &fakeFeatures{got: make(chan struct{}, 1)}
	s := sink(f, time.Hour) // no tick in this test
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	s.Add([]lab.Activity{{UserID: "u", AdID: "a", At: time.Now(), Clicks: 1}})
	select {
	case <-f.got:
	case <-time.After(10 * time.Second):
		t.Fatal("a click waited for the interval")
	}
	acts := make([]lab.Activity, 25_000)
	for i := range acts {
		acts[i] = lab.Activity{UserID: "u", AdID: "a", At: time.Now(), Impressions: 1}
	}
	s.Add(acts) // impressions only: they wait for the interval, or the end
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) != 4 || f.calls[0] != 1 || f.calls[1] != 10_000 || f.calls[3] != 5_000 {
		t.Errorf("calls %v, want [1 10000 10000 5000]", f.calls)
	}
	if sent, dropped := s.Stats(); sent != 25_001 || dropped != 0 {
		t.Errorf("sent %d, dropped %d", sent, dropped)
	}
}

// Activity that cannot be sent is dropped and counted, and so is activity
// beyond the queue's bound.
func TestSinkDropsWhatItCannotSend(t *testing.T) {
	f := &fakeFeatures{fail: true}
	s := sink(f, time.Hour)
	acts := make([]lab.Activity, MaxQueued+10)
	s.Add(acts)
	if _, dropped := s.Stats(); dropped != 10 {
		t.Errorf("over the bound: %d dropped, want 10", dropped)
	}
	s.send(context.Background())
	if sent, dropped := s.Stats(); sent != 0 || dropped != MaxQueued+10 {
		t.Errorf("featuresvc down: sent %d, dropped %d", sent, dropped)
	}
}

// Every featuresvc instance hears all the activity: each keeps its own
// counters.
func TestSinkSendsToEveryInstance(t *testing.T) {
	a, b := &fakeFeatures{got: make(chan struct{}, 1)}, &fakeFeatures{got: make(chan struct{}, 1)}
	s := New(func() ([]featuresv1.FeatureServiceClient, error) { return []featuresv1.FeatureServiceClient{a, b}, nil },
		time.Hour, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.Add([]lab.Activity{{UserID: "u", AdID: "a", At: time.Now(), Impressions: 3}})
	s.send(context.Background())
	for name, f := range map[string]*fakeFeatures{"a": a, "b": b} {
		if len(f.calls) != 1 || f.calls[0] != 1 {
			t.Errorf("instance %s: calls %v", name, f.calls)
		}
	}
}
