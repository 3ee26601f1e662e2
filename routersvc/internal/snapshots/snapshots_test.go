package snapshots

import (
	"context"
	"io"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/adrank/adrank/platform/snapshot"
)

func TestColdStartRule(t *testing.T) {
	g := &generation{g: snapshot.Generation{Meta: snapshot.Meta{K: 2}}, prior: map[string]float64{"a": 0.3, "b": 0.01, "c": 0.9}, mean: 0.07}
	full := []snapshot.Entry{{AdID: "x", Pctr: 0.6}, {AdID: "y", Pctr: 0.2}}
	tests := []struct {
		name  string
		top   []snapshot.Entry
		ads   []string
		want  []float64
		found int
	}{
		{"in the top K: its pCTR", full, []string{"x", "y"}, []float64{0.6, 0.2}, 2},
		{"outside a full top K: the prior, capped at the K-th", full, []string{"a", "b", "c"}, []float64{0.2, 0.01, 0.2}, 0},
		{"an ad never scored: the mean of all pairs", full, []string{"new"}, []float64{0.07}, 0},
		{"a user the snapshot lacks: the priors", nil, []string{"a", "c", "new"}, []float64{0.3, 0.9, 0.07}, 0},
		{"a top K not full (fewer ads than K): no cap", full[:1], []string{"x", "c"}, []float64{0.6, 0.9}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, found := g.pctrs(tc.top, tc.ads)
			if !cmp.Equal(got, tc.want) || found != tc.found {
				t.Fatalf("pctrs = %v (found %d), want %v (%d)", got, found, tc.want, tc.found)
			}
		})
	}
}

// TestStalenessByAge compares live answers with a snapshot as it ages.
func TestStalenessByAge(t *testing.T) {
	ctx := context.Background()
	st, err := snapshot.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sh, err := st.Begin(ctx, snapshot.Meta{Domain: "feed", Generation: "g", Version: "v1", Shards: 1, K: 3}, 0)
	if err != nil {
		t.Fatal(err)
	}
	top := []snapshot.Entry{{AdID: "a", Pctr: 0.3}, {AdID: "b", Pctr: 0.2}, {AdID: "c", Pctr: 0.1}}
	if err := sh.Commit(ctx, snapshot.Chunk{Users: map[string][]snapshot.Entry{"u": top}, Ads: map[string]snapshot.AdStat{"d": {Sum: 0.05, N: 1}},
		Progress: snapshot.Progress{Pos: 1, Pairs: 4, Users: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sh.Finish(ctx, 3); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s := New(st, func() []string { return []string{"feed"} }, Options{Sample: 1, Now: func() time.Time { return now }}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.Refresh(ctx)
	ads := []string{"a", "b", "c", "d"}
	// Fresh: live agrees on the order, off by 0.01 on each pair.
	s.compare(ctx, observation{domain: "feed", user: "u", ads: ads, live: []float64{0.31, 0.21, 0.11, 0.01}, slots: 2})
	// Two days on: live has turned the order around.
	now = now.Add(48 * time.Hour)
	s.compare(ctx, observation{domain: "feed", user: "u", ads: ads, live: []float64{0.1, 0.2, 0.3, 0.4}, slots: 2})
	s.compare(ctx, observation{domain: "stranger", user: "u", ads: ads, live: []float64{1, 1, 1, 1}, slots: 2})
	got := s.Staleness("feed")
	want := []struct {
		age            string
		mae, topk, rho float64
	}{
		{"<1h", 0.01, 1, 1},
		// |0.3-0.1|, |0.2-0.2|, |0.1-0.3| over 3 pairs; live top 2 {d, c}
		// against snapshot top 2 {a, b}: none shared; order reversed.
		{"1d-3d", 0.4 / 3, 0, -1},
	}
	if len(got) != len(want) {
		t.Fatalf("staleness %+v", got)
	}
	for i, w := range want {
		g := got[i]
		if g.Age != w.age || g.Requests != 1 || g.Pairs != 3 || math.Abs(g.MeanAbsDiff-w.mae) > 1e-12 || g.TopKOverlap != w.topk || math.Abs(g.RankCorrelation-w.rho) > 1e-12 {
			t.Errorf("bucket %d: %+v, want %+v", i, g, w)
		}
	}
	if s.Staleness("stranger") != nil {
		t.Error("a domain without a snapshot has staleness")
	}
}
