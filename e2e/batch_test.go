package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/snapshot"
	"github.com/adrank/adrank/platform/syncbuf"
)

// jobSummary is the JSON line `adrankctl batch run` prints when it ends.
type jobSummary struct {
	Generation      string `json:"generation"`
	Complete        bool   `json:"complete"`
	ResumedAt       int64  `json:"resumed_at"`
	Scored          int64  `json:"scored"`
	GenerationPairs int64  `json:"generation_pairs"`
	GenerationUsers int64  `json:"generation_users"`
}

func runJob(t *testing.T, root string, args ...string) jobSummary {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "bin", "adrankctl"), append([]string{"batch", "run", "--progress", "none"}, args...)...)
	cmd.Dir = root
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("adrankctl batch run %v: %v\n%s", args, err, stderr.String())
	}
	var s jobSummary
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("summary %q: %v", out, err)
	}
	return s
}

// A batch job killed with SIGKILL halfway leaves the previous generation
// serving; run again, it resumes from its checkpoint and ends with the same
// snapshot, pair for pair, as a run that was never interrupted, every pair
// counted once.
func TestBatchJobKilledResumes(t *testing.T) {
	root := root(t)
	store := t.TempDir()
	// 2,000 users x 1,000 ads: 2 million pairs, a few seconds of scoring.
	common := []string{"--domain", "feed", "--version", "v2", "--store", store, "--users", "2000", "--k", "20"}
	straight := runJob(t, root, append(common, "--generation", "straight")...)
	if !straight.Complete || straight.GenerationPairs != 2_000_000 || straight.GenerationUsers != 2000 {
		t.Fatalf("uninterrupted run: %+v", straight)
	}

	args := append([]string{"batch", "run", "--generation", "killed", "--progress", "log", "--progress-every", "50ms",
		"--commit-every", "50ms", "--workers", "1"}, common...)
	cmd := exec.Command(filepath.Join(root, "bin", "adrankctl"), args...)
	cmd.Dir = root
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once its progress lines say it is between a fifth and a half
	// through its users.
	var log syncbuf.Buffer
	sc := bufio.NewScanner(stderr)
	killed := false
	for sc.Scan() {
		log.Write(append(sc.Bytes(), '\n'))
		var line struct {
			Msg  string `json:"msg"`
			Done int64  `json:"done"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "progress" && line.Done >= 400 {
			if line.Done > 1000 {
				t.Fatalf("the job was past half way (%d users) before the kill:\n%s", line.Done, log.String())
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
			break
		}
	}
	go io.Copy(io.Discard, stderr)
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("the job ended before the kill:\n%s", log.String())
	}

	st, err := snapshot.OpenDir(store)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	latest, ok, err := st.Latest(ctx, "feed")
	if err != nil || !ok || latest.Generation != "straight" {
		t.Fatalf("after the kill the latest generation is %+v (%v, %v); want the previous one, straight", latest, ok, err)
	}

	resumed := runJob(t, root, append(common, "--generation", "killed")...)
	t.Logf("killed at about a quarter; resumed at user %d and scored %d more pairs", resumed.ResumedAt, resumed.Scored)
	if !resumed.Complete || resumed.ResumedAt == 0 || resumed.Scored >= 2_000_000 ||
		resumed.GenerationPairs != 2_000_000 || resumed.GenerationUsers != 2000 {
		t.Fatalf("resumed run: %+v", resumed)
	}
	gens, err := st.Generations(ctx, "feed")
	if err != nil || len(gens) != 2 || gens[0].Generation != "killed" {
		t.Fatalf("generations %+v, %v", gens, err)
	}
	w, err := world.New(world.Config{Seed: 42, Users: 2000, Advertisers: 200, AdsPerDomain: 1000, Domains: []string{"feed", "stories"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range w.Users() {
		a, _, err1 := st.Lookup(ctx, gens[1], u.ID)
		b, _, err2 := st.Lookup(ctx, gens[0], u.ID)
		if err1 != nil || err2 != nil || len(a) != 20 || !cmp.Equal(a, b) {
			t.Fatalf("user %s: uninterrupted %v, resumed %v (%v, %v)", u.ID, a, b, err1, err2)
		}
	}
}

// A batch snapshot through the real processes: the job writes it, the
// router lists it and measures its staleness while the domain is real time,
// serves a batch-mode domain from it, and falls back to it, degraded, when
// the production ranker dies.
func TestBatchDeployment(t *testing.T) {
	c := startCluster(t)
	ranker := c.startRanker("feed/v1", "models/feed/v1.json")
	c.startRanker("stories/v1", "models/stories/v1.json")
	c.routerProc.cmd.Process.Signal(syscall.SIGTERM)
	<-c.routerProc.done
	c.routerArgs = append(c.routerArgs, "--staleness-sample", "1")
	c.routerProc = c.start("routersvc", c.routerArgs...)

	// The data team's file: users u1..u60, every feed ad, as CSV.
	var b strings.Builder
	b.WriteString("user_id,ad_id\n")
	for u := 1; u <= 60; u++ {
		for a := 1; a <= 1000; a++ {
			fmt.Fprintf(&b, "u%d,ad%d\n", u, a)
		}
	}
	pairs := filepath.Join(t.TempDir(), "pairs.csv")
	if err := os.WriteFile(pairs, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// Scored by the production version, v1, so that the staleness compares
	// like with like.
	job := runJob(t, c.root, "--domain", "feed", "--version", "v1", "--store", c.snapshots, "--input", pairs, "--generation", "g1")
	if !job.Complete || job.GenerationPairs != 60_000 || job.GenerationUsers != 60 {
		t.Fatalf("job: %+v", job)
	}

	// Listed, with its age and size, over REST too.
	took := eventually(t, settle, func() error {
		s := c.domains()["feed"].GetSnapshot()
		if s.GetGeneration() != "g1" || s.GetVersion() != "v1" || s.GetUsers() != 60 || s.GetPairs() != 60_000 || s.GetK() != 100 {
			return fmt.Errorf("feed's snapshot: %v", s)
		}
		return nil
	})
	t.Logf("the router listed the new generation after %v", took)
	code, body := c.get("/v1/domains")
	if code != http.StatusOK || !strings.Contains(string(body), `"generation":"g1"`) || !strings.Contains(string(body), `"mode":"realtime"`) {
		t.Fatalf("GET /v1/domains: %d %s", code, body)
	}

	// Real time: every answer is compared with the snapshot.
	for i := range 20 {
		resp, err := rank(t, c, rankRequest(fmt.Sprintf("rt-%d", i), "feed"))
		if err != nil || resp.GetSource() != routerv1.Source_SOURCE_REALTIME || resp.GetDegraded() {
			t.Fatalf("real-time answer: %v, %v", resp, err)
		}
	}
	eventually(t, settle, func() error {
		rep, err := c.tryReport("feed")
		if err != nil {
			return err
		}
		if len(rep.GetStaleness()) != 1 {
			return fmt.Errorf("staleness %v", rep.GetStaleness())
		}
		s := rep.GetStaleness()[0]
		// u42's top 100 holds some of the 20 candidates: pairs to compare.
		if s.GetAge() != "<1h" || s.GetRequests() != 20 || s.GetPairs() == 0 || s.GetMeanAbsDiff() <= 0 || s.GetTopkOverlap() < 0 || s.GetTopkOverlap() > 1 {
			return fmt.Errorf("staleness %v", s)
		}
		t.Logf("staleness of a fresh snapshot against live pCTRs of the same model (the live ones see the request's hour and device): %v", s)
		return nil
	})

	// What the snapshot holds for u42.
	st, err := snapshot.OpenDir(c.snapshots)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	gen, _, err := st.Latest(ctx, "feed")
	if err != nil {
		t.Fatal(err)
	}
	top, ok, err := st.Lookup(ctx, gen, "u42")
	if err != nil || !ok {
		t.Fatalf("u42 in the snapshot: %v, %v", ok, err)
	}
	want := map[string]float64{}
	for _, e := range top {
		want[e.AdID] = e.Pctr
	}
	// Candidates from u42's top 100, so that the answers' pCTRs are the
	// snapshot's own.
	req := rankRequest("batch-0", "feed")
	for i, e := range top[:20] {
		req.Candidates[i].AdId = e.AdID
	}

	// Batch mode: the snapshot's pCTRs, the auction online.
	c.putKV("adrank/domains/feed", `{"production": "v1", "mode": "batch"}`)
	eventually(t, settle, func() error {
		resp, err := rank(t, c, req)
		if err != nil {
			return err
		}
		if resp.GetSource() != routerv1.Source_SOURCE_SNAPSHOT || resp.GetModelVersion() != "v1" || resp.GetDegraded() {
			return fmt.Errorf("source %v version %s degraded %q", resp.GetSource(), resp.GetModelVersion(), resp.GetDegradedReason())
		}
		for _, r := range resp.GetResults() {
			if r.GetPctr() != want[r.GetAdId()] {
				t.Fatalf("%s: pCTR %v, the snapshot's %v", r.GetAdId(), r.GetPctr(), want[r.GetAdId()])
			}
		}
		checkResponse(t, req, resp)
		return nil
	})

	// Real time again, then the production ranker dies: the snapshot
	// answers, degraded, and says how old it is.
	c.putKV("adrank/domains/feed", `{"production": "v1"}`)
	eventually(t, settle, func() error {
		resp, err := rank(t, c, rankRequest("rt-again", "feed"))
		if err != nil || resp.GetSource() != routerv1.Source_SOURCE_REALTIME {
			return fmt.Errorf("%v, %v", resp.GetSource(), err)
		}
		return nil
	})
	if err := ranker.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-ranker.done
	var last *routerv1.RankResponse
	took = eventually(t, settle, func() error {
		// Until Consul marks the instance critical the router still calls
		// it (and fails); after, it has no healthy instance. Both answer
		// from the snapshot.
		resp, err := rank(t, c, rankRequest(fmt.Sprintf("down-%d", time.Now().UnixNano()), "feed"))
		if err != nil {
			return err
		}
		if resp.GetSource() != routerv1.Source_SOURCE_SNAPSHOT || !resp.GetDegraded() || !strings.Contains(resp.GetDegradedReason(), "batch snapshot g1") ||
			!strings.Contains(resp.GetDegradedReason(), `no healthy instance of production version "v1"`) {
			return fmt.Errorf("source %v degraded %q", resp.GetSource(), resp.GetDegradedReason())
		}
		last = resp
		return nil
	})
	t.Logf("with feed/v1 dead, answered from the snapshot after %v: %q, age %d ms", took, last.GetDegradedReason(), last.GetAgeMs())
	if last.GetAgeMs() <= 0 || len(last.GetResults()) == 0 {
		t.Fatalf("fallback answer: %v", last)
	}
	checkResponse(t, rankRequest("down", "feed"), last)
}
