package rank

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/adrank/adrank/auctionsvc/auction"
	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/assign"
)

const modelPath = "../../../models/feed/v2.json"

// requests builds device requests for some users of the demo world: user
// and ad features as the sync serves them (no context), the context as
// the device computes it.
func requests(t testing.TB, users int) []Request {
	t.Helper()
	w, err := world.New(world.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var out []Request
	ads := w.Ads("feed")
	for i, u := range w.Users()[:users] {
		req := Request{
			Domain: "feed", RequestID: fmt.Sprintf("edge-%d", i), UserID: u.ID, User: world.UserFeatures(u), Slots: 3,
			Context: Context{TimestampMs: time.Date(2026, 11, 26, 8+i%12, 0, 0, 0, time.UTC).UnixMilli(), Device: world.Devices[i%3]},
			Auction: Auction{Type: "gsp", ReserveMicros: 10000, PositionFactors: []float64{1, 0.7, 0.5}},
		}
		for j := range 50 {
			a := ads[(i*7+j*13)%len(ads)]
			req.Candidates = append(req.Candidates, Candidate{AdID: a.ID, AdvertiserID: a.AdvertiserID, BidMicros: int64(100000 + 9000*j),
				Features: world.AdFeatures(u, a, world.Context{})})
		}
		out = append(out, req)
	}
	return out
}

// The edge ranking equals the server's pieces: the model over the
// features featuresvc serves for the same request, and the auction.
func TestRankEqualsTheServersPieces(t *testing.T) {
	data, err := os.ReadFile(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Load("v2", data, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := model.Load(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := world.New(world.DefaultConfig())
	for _, req := range requests(t, 50) {
		resp, err := r.Rank(req)
		if err != nil {
			t.Fatal(err)
		}
		// The server: featuresvc's features for the whole request context.
		u, _ := w.User(req.UserID)
		c := world.Context{Time: time.UnixMilli(req.Context.TimestampMs).UTC(), Device: req.Context.Device}
		shared := world.UserFeatures(u)
		for k, v := range world.ContextFeatures(c) {
			shared[k] = v
		}
		var own []map[string]float64
		bids := make([]auction.Bid, len(req.Candidates))
		for _, cand := range req.Candidates {
			a, _ := w.Ad(cand.AdID)
			own = append(own, world.AdFeatures(u, a, c))
		}
		want := model.NewScorer(f.Model).Score(shared, own)
		for i := range want {
			if math.Abs(resp.Pctrs[i]-want[i]) > 1e-12 {
				t.Fatalf("%s candidate %d: edge %v, server %v", req.UserID, i, resp.Pctrs[i], want[i])
			}
			bids[i] = auction.Bid{AdID: req.Candidates[i].AdID, BidMicros: req.Candidates[i].BidMicros, PCTR: want[i]}
		}
		allocs, err := auction.Run(auction.Request{Type: auction.GSP, Slots: 3, ReserveMicros: 10000, PositionFactors: []float64{1, 0.7, 0.5}, Bids: bids})
		if err != nil || len(allocs) != len(resp.Results) {
			t.Fatalf("auction %v %v, edge %v", allocs, err, resp.Results)
		}
		for i, a := range allocs {
			got := resp.Results[i]
			if got.AdID != a.AdID || got.Slot != a.Slot || got.PriceMicros != a.PriceMicros || got.ImpressionID != assign.ImpressionID("feed", req.UserID, req.RequestID, a.AdID, a.Slot) {
				t.Fatalf("slot %d: edge %+v, server %+v", i+1, got, a)
			}
		}
	}
}

func TestRankRefuses(t *testing.T) {
	data, _ := os.ReadFile(modelPath)
	r, err := Load("v2", data, nil)
	if err != nil {
		t.Fatal(err)
	}
	good := requests(t, 1)[0]
	for _, tc := range []struct {
		name string
		edit func(*Request)
		says string
	}{
		{"no request id", func(r *Request) { r.RequestID = "" }, "request_id"},
		{"no user", func(r *Request) { r.UserID = "" }, "user_id"},
		{"no candidates", func(r *Request) { r.Candidates = nil }, "candidates"},
		{"no slots", func(r *Request) { r.Slots = 0 }, "slots"},
		{"negative bid", func(r *Request) { r.Candidates[0].BidMicros = -1 }, "bid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := good
			req.Candidates = append([]Candidate(nil), good.Candidates...)
			tc.edit(&req)
			b, _ := json.Marshal(req)
			var out struct{ Error string }
			json.Unmarshal(r.Call(b), &out)
			if !strings.Contains(out.Error, tc.says) {
				t.Fatalf("error %q, want one naming %q", out.Error, tc.says)
			}
		})
	}
	if _, err := Load("v2", []byte(`{"format": "nope"}`), nil); err == nil {
		t.Fatal("a corrupt model loaded")
	}
}

// The wasip1 build, run by wazero, answers as the native code does.
func TestWASIBuildUnderWazero(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "scorer.wasm")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../../cmd/scorer-wasi")
	build.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	data, err := os.ReadFile(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := Load("v2", data, nil)
	var in, want bytes.Buffer
	for _, req := range requests(t, 20) {
		b, _ := json.Marshal(req)
		in.Write(b)
		in.WriteByte('\n')
		want.Write(r.Call(b))
		want.WriteByte('\n')
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	wasm, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(filepath.Dir(modelPath))
	var out, stderr bytes.Buffer
	cfg := wazero.NewModuleConfig().WithArgs("scorer-wasi", "v2", "/models/v2.json").WithStdin(&in).WithStdout(&out).WithStderr(&stderr).
		WithFSConfig(wazero.NewFSConfig().WithReadOnlyDirMount(abs, "/models"))
	if _, err := rt.InstantiateWithConfig(ctx, wasm, cfg); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	// The same numbers up to the last bits of exp (wasm's math.Exp is Go's
	// portable one, amd64's is assembly), the same slots and prices.
	got, exp := strings.Split(strings.TrimSpace(out.String()), "\n"), strings.Split(strings.TrimSpace(want.String()), "\n")
	if len(got) != len(exp) {
		t.Fatalf("%d answers for %d requests: %s", len(got), len(exp), stderr.String())
	}
	for i := range got {
		var a, b Response
		if err := json.Unmarshal([]byte(got[i]), &a); err != nil {
			t.Fatalf("answer %d: %v: %s", i, err, got[i])
		}
		json.Unmarshal([]byte(exp[i]), &b)
		for j := range b.Pctrs {
			if math.Abs(a.Pctrs[j]-b.Pctrs[j]) > 1e-12 {
				t.Fatalf("request %d candidate %d: wasip1 %v, native %v", i, j, a.Pctrs[j], b.Pctrs[j])
			}
		}
		if len(a.Results) != len(b.Results) {
			t.Fatalf("request %d: %v against %v", i, a.Results, b.Results)
		}
		for j := range b.Results {
			x, y := a.Results[j], b.Results[j]
			if x.AdID != y.AdID || x.Slot != y.Slot || x.PriceMicros != y.PriceMicros || x.ImpressionID != y.ImpressionID {
				t.Fatalf("request %d slot %d: wasip1 %+v, native %+v", i, j+1, x, y)
			}
		}
	}
}

// BenchmarkRankCall is the edge ranking's native time per candidate, by the
// same path as the browser's (JSON in, score, auction, JSON out), for
// comparison with BenchmarkEdgeBrowser (make bench-edge).
func BenchmarkRankCall(b *testing.B) {
	data, err := os.ReadFile(modelPath)
	if err != nil {
		b.Fatal(err)
	}
	r, err := Load("v2", data, nil)
	if err != nil {
		b.Fatal(err)
	}
	var reqs [][]byte
	for _, req := range requests(b, 200) {
		j, _ := json.Marshal(req)
		reqs = append(reqs, j)
	}
	b.ResetTimer()
	n := 0
	for i := range b.N {
		r.Call(reqs[i%len(reqs)])
		n += 50
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/candidate")
}

// The browser's module links no gRPC and no protobuf: they would double
// its size for nothing a device needs.
func TestScorerLinksNoGRPC(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "../../cmd/scorer")
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.Contains(pkg, "grpc") || strings.Contains(pkg, "protobuf") {
			t.Errorf("the scorer links %s", pkg)
		}
	}
	if !strings.Contains(string(out), "github.com/adrank/adrank/auctionsvc/auction") {
		t.Fatal("go list did not list the scorer's packages")
	}
}
