package counters

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// Against a brute-force count over every event kept, the windowed counts
// are exact up to the bucket: every event within the last 59 buckets counts,
// none older than 60 does.
func TestWindowsAgainstBruteForce(t *testing.T) {
	windows := []time.Duration{time.Hour, 24 * time.Hour}
	s := New(windows, 10)
	rng := rand.New(rand.NewPCG(1, 2))
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	type ev struct {
		at          time.Time
		imps, click uint32
	}
	var evs []ev
	now := t0
	for step := range 5000 {
		now = now.Add(time.Duration(rng.IntN(120)) * time.Second)
		at := now
		if step%10 == 0 { // some arrive late, by up to 30 minutes
			at = now.Add(-time.Duration(rng.IntN(1800)) * time.Second)
		}
		e := ev{at: at, imps: uint32(1 + rng.IntN(3)), click: uint32(rng.IntN(2))}
		evs = append(evs, e)
		s.Add("k", e.at, e.imps, e.click)
		if step%97 != 0 {
			continue
		}
		got := make([]Counts, 2)
		s.Get("k", now, got)
		for i, d := range windows {
			bucket := d / Buckets
			var lo, hi Counts // counts within 59 buckets (must count), within 60 (may)
			for _, e := range evs {
				age := now.Truncate(bucket).Sub(e.at.Truncate(bucket))
				if age < 0 {
					continue
				}
				if age < 59*bucket+1 {
					lo.Impressions += uint64(e.imps)
					lo.Clicks += uint64(e.click)
				}
				if age < 60*bucket {
					hi.Impressions += uint64(e.imps)
					hi.Clicks += uint64(e.click)
				}
			}
			if got[i].Impressions < lo.Impressions || got[i].Impressions > hi.Impressions || got[i].Clicks < lo.Clicks || got[i].Clicks > hi.Clicks {
				t.Fatalf("step %d, window %s: %+v, want between %+v and %+v", step, d, got[i], lo, hi)
			}
		}
	}
}

func TestBoundAndSweep(t *testing.T) {
	s := New([]time.Duration{time.Hour}, 3)
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	for i := range 5 {
		ok := s.Add("k"+strconv.Itoa(i), t0, 1, 0)
		if ok != (i < 3) {
			t.Errorf("key %d: added %v", i, ok)
		}
	}
	if keys, dropped := s.Stats(); keys != 3 || dropped != 2 {
		t.Errorf("keys %d, dropped %d", keys, dropped)
	}
	s.Add("k0", t0.Add(50*time.Minute), 1, 1)
	if held := s.Sweep(t0.Add(90 * time.Minute)); held != 1 {
		t.Errorf("after the sweep %d keys held, want 1 (k0, active 40 minutes ago)", held)
	}
	if !s.Add("new", t0.Add(91*time.Minute), 1, 0) {
		t.Error("a new key was refused after the sweep made room")
	}
	got := make([]Counts, 1)
	s.Get("k0", t0.Add(100*time.Minute), got)
	if got[0] != (Counts{Impressions: 1, Clicks: 1}) {
		t.Errorf("k0: %+v, want the one activity 50 minutes ago", got[0])
	}
}

// Counts past 32 bits in one bucket neither wrap nor leave a remainder when
// the bucket expires.
func TestLargeCounts(t *testing.T) {
	s := New([]time.Duration{time.Hour}, 10)
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	for range 5000 {
		s.Add("k", t0, 1_000_000, 0)
	}
	got := make([]Counts, 1)
	s.Get("k", t0, got)
	if got[0].Impressions != 5_000_000_000 {
		t.Errorf("%d impressions, want 5e9", got[0].Impressions)
	}
	s.Get("k", t0.Add(2*time.Hour), got)
	if got[0].Impressions != 0 {
		t.Errorf("%d impressions after the window, want 0", got[0].Impressions)
	}
}
