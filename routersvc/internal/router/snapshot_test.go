package router

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/discovery"
	"github.com/adrank/adrank/platform/snapshot"
	"github.com/adrank/adrank/routersvc/internal/core"
	"github.com/adrank/adrank/routersvc/internal/snapshots"
)

// withSnapshot writes a generation of feed by version v2 in which u1's top
// 2 are ad0 (0.5) and ad1 (0.2), and ad2 was scored 0.05 on average, and
// returns the engine option that serves it.
func withSnapshot(t *testing.T) func(*core.Engine) {
	t.Helper()
	ctx := context.Background()
	st, err := snapshot.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sh, err := st.Begin(ctx, snapshot.Meta{Domain: "feed", Generation: "g1", Version: "v2", Shards: 1, K: 2}, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = sh.Commit(ctx, snapshot.Chunk{
		Users:    map[string][]snapshot.Entry{"u1": {{AdID: "ad0", Pctr: 0.5}, {AdID: "ad1", Pctr: 0.2}}},
		Ads:      map[string]snapshot.AdStat{"ad0": {Sum: 0.4, N: 1}, "ad1": {Sum: 0.1, N: 1}, "ad2": {Sum: 0.05, N: 1}},
		Progress: snapshot.Progress{Pos: 1, Pairs: 3, Users: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := sh.Finish(ctx, 3); err != nil || !ok {
		t.Fatal(ok, err)
	}
	sv := snapshots.New(st, func() []string { return []string{"feed", "stories"} }, snapshots.Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	sv.Refresh(ctx)
	return func(e *core.Engine) { e.UseSnapshots(sv) }
}

func TestRankFromSnapshot(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "ranker down")
	tests := []struct {
		name     string
		down     *fakeDown
		healthy  bool
		config   string
		snapshot bool
		// want: where the pCTRs come from, and the degraded reason's words
		source   routerv1.Source
		version  string
		degraded string
	}{
		{"batch mode", &fakeDown{}, false, `{"production": "v1", "mode": "batch"}`, true, routerv1.Source_SOURCE_SNAPSHOT, "v2", ""},
		{"ranker fails", &fakeDown{rankerErr: unavailable}, true, `{"production": "v1"}`, true, routerv1.Source_SOURCE_SNAPSHOT, "v2", "ranker feed/v1 failed"},
		{"no healthy ranker", &fakeDown{}, false, `{"production": "v1"}`, true, routerv1.Source_SOURCE_SNAPSHOT, "v2", `no healthy instance of production version "v1"`},
		{"features fail", &fakeDown{featuresErr: unavailable}, true, `{"production": "v1"}`, true, routerv1.Source_SOURCE_SNAPSHOT, "v2", "features unavailable"},
		{"real time, snapshot unused", &fakeDown{}, true, `{"production": "v1"}`, true, routerv1.Source_SOURCE_REALTIME, "v1", ""},
		{"batch mode without a snapshot", &fakeDown{}, true, `{"production": "v1", "mode": "batch"}`, false, routerv1.Source_SOURCE_REALTIME, "v1", "has no batch snapshot: ranked in real time"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opts []func(*core.Engine)
			if tc.snapshot {
				opts = append(opts, withSnapshot(t))
			}
			client := serveWith(t, tc.down, []discovery.Instance{inst("feed", "v1", tc.healthy)}, map[string]string{"feed": tc.config},
				core.Limits{Budget: time.Second, FeaturesTimeout: 200 * time.Millisecond}, opts...)
			req := request()
			resp, err := client.Rank(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetSource() != tc.source || resp.GetModelVersion() != tc.version {
				t.Fatalf("source %v version %s, want %v %s", resp.GetSource(), resp.GetModelVersion(), tc.source, tc.version)
			}
			if resp.GetDegraded() != (tc.degraded != "") || !strings.Contains(resp.GetDegradedReason(), tc.degraded) {
				t.Fatalf("degraded %v %q, want one saying %q", resp.GetDegraded(), resp.GetDegradedReason(), tc.degraded)
			}
			if tc.source != routerv1.Source_SOURCE_SNAPSHOT {
				return
			}
			if tc.degraded != "" && !strings.Contains(resp.GetDegradedReason(), "batch snapshot g1 (v2,") {
				t.Fatalf("the reason %q does not name the snapshot", resp.GetDegradedReason())
			}
			// ad0 and ad1 from u1's top K; ad2, outside it, its prior
			// (0.05, under the K-th's 0.2). The fake auction fills one slot
			// with the best bid x pCTR: a high bid makes each ad win once.
			want := map[string]float64{"ad0": 0.5, "ad1": 0.2, "ad2": 0.05}
			for i, c := range req.GetCandidates() {
				for j, o := range req.GetCandidates() {
					o.BidMicros = 1000
					if j == i {
						o.BidMicros = 1_000_000
					}
				}
				resp, err := client.Rank(context.Background(), req)
				if err != nil {
					t.Fatal(err)
				}
				r := resp.GetResults()[0]
				if r.GetAdId() != c.GetAdId() || r.GetPctr() != want[c.GetAdId()] || r.GetVersion() != "v2" {
					t.Fatalf("%s won with pCTR %v version %s; want %s, %v, v2", r.GetAdId(), r.GetPctr(), r.GetVersion(), c.GetAdId(), want[c.GetAdId()])
				}
			}
			if resp.GetAgeMs() < 0 || resp.GetAgeMs() > time.Minute.Milliseconds() {
				t.Fatalf("age %d ms", resp.GetAgeMs())
			}
		})
	}
}

func TestRankWithoutSnapshotStillFails(t *testing.T) {
	client := serveWith(t, &fakeDown{rankerErr: status.Error(codes.Unavailable, "down")}, []discovery.Instance{inst("feed", "v1", true)},
		map[string]string{"feed": `{"production": "v1"}`}, core.Limits{Budget: time.Second})
	_, err := client.Rank(context.Background(), request())
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err %v, want Unavailable", err)
	}
}

func TestListDomainsShowsTheSnapshot(t *testing.T) {
	client := serveWith(t, &fakeDown{}, []discovery.Instance{inst("feed", "v1", true)}, map[string]string{"feed": `{"production": "v1", "mode": "batch"}`},
		core.Limits{Budget: time.Second}, withSnapshot(t))
	resp, err := client.ListDomains(context.Background(), &routerv1.ListDomainsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	d := resp.GetDomains()[0]
	s := d.GetSnapshot()
	if d.GetMode() != "batch" || s.GetGeneration() != "g1" || s.GetVersion() != "v2" || s.GetUsers() != 1 || s.GetPairs() != 3 ||
		s.GetK() != 2 || s.GetGenerations() != 1 || s.GetCreatedAt() == nil || s.GetCompletedAt() == nil || s.GetAgeMs() < 0 {
		t.Fatalf("domain %v", d)
	}
}
