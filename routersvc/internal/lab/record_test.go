package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/adrank/adrank/routersvc/internal/stats"
	"github.com/adrank/adrank/routersvc/internal/store"
)

// refusing is a store that refuses some records (as a store refuses a key
// that is too large), or all of them (a store that is down).
type refusing struct {
	store.Store
	down atomic.Bool
}

var errTooLarge = errors.New("key too large")

func (r *refusing) check(op store.Op) error {
	if r.down.Load() {
		return errors.New("connection refused")
	}
	if strings.Contains(op.Once, "bad") {
		return errTooLarge
	}
	return nil
}

func (r *refusing) Apply(ctx context.Context, op store.Op) (bool, error) {
	if err := r.check(op); err != nil {
		return false, err
	}
	return r.Store.Apply(ctx, op)
}

func (r *refusing) ApplyAll(ctx context.Context, ops []store.Op) ([]bool, error) {
	for _, op := range ops {
		if err := r.check(op); err != nil {
			return nil, err
		}
	}
	return r.Store.ApplyAll(ctx, ops)
}

func served(req string) Served {
	return Served{Domain: "feed", UserID: "u1", RequestID: req, A: Assignment{Strategy: Production, Version: "v1", Group: "production", Propensity: 1},
		Results: []ServedResult{{ImpressionID: "imp-" + req, Slot: 1, Price: 10, Version: "v1"}}}
}

// One record the store refuses never blocks the others: they are written,
// it is dropped and counted; a store that is down loses nothing.
func TestRecorderIsolatesBadRecords(t *testing.T) {
	bolt, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	st := &refusing{Store: bolt}
	l := New(Options{Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx := context.Background()
	for i := range 10 {
		l.Record(served(fmt.Sprint("r", i)))
	}
	l.Record(served("bad"))
	if err := l.Flush(ctx); err == nil {
		t.Fatal("a refused record went unreported")
	}
	for i := range 10 {
		if _, err := bolt.Impression(ctx, fmt.Sprint("imp-r", i)); err != nil {
			t.Fatalf("good record %d not written: %v", i, err)
		}
	}
	dropped, why := l.rec.health()
	if dropped != 1 || !strings.Contains(why, "key too large") {
		t.Fatalf("dropped %v (%q), want 1", dropped, why)
	}
	// Later records are written: nothing is stuck.
	l.Record(served("r10"))
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// The store down: everything waits, and is written once it is back.
	st.down.Store(true)
	l.Record(served("r11"))
	if err := l.Flush(ctx); err == nil {
		t.Fatal("a failed write went unreported")
	}
	if d, _ := l.rec.health(); d != 1 {
		t.Fatalf("a store that is down made the recorder drop records: %v", d)
	}
	st.down.Store(false)
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := bolt.Impression(ctx, "imp-r11"); err != nil {
		t.Fatalf("record queued while the store was down: %v", err)
	}
}

// The same request sent again is counted once; an impression counts one
// click whatever the event IDs.
func TestRecordedOnceClickedOnce(t *testing.T) {
	bolt, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	l := New(Options{Store: bolt, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Window: time.Hour})
	ctx := context.Background()
	for range 3 {
		l.Record(served("same"))
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	g := groupKey("feed", "", "production")
	sums, err := bolt.Group(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if n := sums.S[stats.Imps]; n != 1 {
		t.Fatalf("a request sent 3 times counted %v impressions", n)
	}
	accepted := 0
	for i := range 50 {
		res, err := l.Event(ctx, Event{ImpressionID: "imp-same", EventID: fmt.Sprint("e", i)})
		if err != nil {
			t.Fatal(err)
		}
		if res == Accepted {
			accepted++
		}
	}
	if accepted != 1 {
		t.Fatalf("%d of 50 clicks on one impression counted, want 1", accepted)
	}
}

// The activity sink hears each impression once it is written, once per
// request (a request recorded again is not counted again, nor one the store
// refused), and each accepted click once.
func TestActivityIsReportedOnce(t *testing.T) {
	bolt, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	st := &refusing{Store: bolt}
	var mu sync.Mutex
	var got []Activity
	l := New(Options{Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Activity: func(a []Activity) {
		mu.Lock()
		got = append(got, a...)
		mu.Unlock()
	}})
	ctx := context.Background()
	s := served("r1")
	s.Results[0].AdID = "ad9"
	l.Record(s)
	l.Record(s) // a client's retry
	bad := served("bad")
	bad.Results[0].AdID = "ad9"
	l.Record(bad)
	_ = l.Flush(ctx)
	l.Record(s) // and again, after the first is in the store
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := l.Event(ctx, Event{ImpressionID: "imp-r1"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Event(ctx, Event{ImpressionID: "imp-r1", Conversion: true, Value: 3}); err != nil {
		t.Fatal(err)
	}
	var imps, clicks uint32
	for _, a := range got {
		if a.UserID != "u1" || a.AdID != "ad9" || a.At.IsZero() {
			t.Errorf("activity %+v", a)
		}
		imps += a.Impressions
		clicks += a.Clicks
	}
	if imps != 1 || clicks != 1 {
		t.Errorf("%d impressions and %d clicks reported, want 1 and 1: %+v", imps, clicks, got)
	}
}
