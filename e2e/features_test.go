package e2e

import (
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/consultest"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/redistest"
	"github.com/adrank/adrank/sim"
)

// featuresClient dials the cluster's featuresvc, found in Consul.
func (c *cluster) featuresClient(t *testing.T) featuresv1.FeatureServiceClient {
	t.Helper()
	entries, _, err := c.consul.Client.Health().Service(consulx.FeatureService, "", true, nil)
	if err != nil || len(entries) != 1 {
		t.Fatalf("featuresvc in Consul: %d instances, %v", len(entries), err)
	}
	cc, err := grpc.NewClient(fmt.Sprintf("%s:%d", entries[0].Service.Address, entries[0].Service.Port), c.dial)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return featuresv1.NewFeatureServiceClient(cc)
}

// A team's own user features, loaded with adrankctl: a file with errors is
// refused whole, naming rows and fields, and the demo snapshot keeps
// serving; a valid file becomes the serving snapshot at once, and the
// pipeline ranks with it.
func TestFeatureSnapshotsThroughAdrankctl(t *testing.T) {
	c := startCluster(t, [2]string{"feed/v1", "models/feed/v1.json"})
	fc := c.featuresClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	userRow := func(id string) (bool, map[string]float64) {
		r, err := fc.GetFeatures(ctx, &featuresv1.GetFeaturesRequest{UserId: id})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetUserKnown(), byName(r.GetShared())
	}
	out, err := c.adrankctl(t, "", "features", "status")
	if err != nil || !regexpLine(out, `user\s+1\s+5000\s+0\s+\d+\s`) {
		t.Fatalf("status before any load (%v):\n%s", err, out)
	}
	_, demoU1 := userRow("u1")

	dir := t.TempDir()
	bad := filepath.Join(dir, "users-bad.csv")
	if err := os.WriteFile(bad, []byte("user_id,user_age,user_activity,user_hist_ctr\nu1,30,0.5,0.9\nu2,31,1.5,0.1\nu3,thirty,0.5,0.1\nu1,40,0.5,0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = c.adrankctl(t, "", "features", "load", "--entity", "user", bad)
	if err == nil {
		t.Fatalf("a file with errors was loaded:\n%s", out)
	}
	for _, want := range []string{"3 errors", "row 2: user_activity: 1.5 above its maximum 1", `row 3: user_age: "thirty" is not a number`, `row 4: user_id: key "u1" already in row 1`} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal lacks %q:\n%s", want, out)
		}
	}
	if _, u1 := userRow("u1"); u1["user_hist_ctr"] != demoU1["user_hist_ctr"] {
		t.Errorf("a refused file changed what is served: %v", u1)
	}

	good := filepath.Join(dir, "users.csv")
	if err := os.WriteFile(good, []byte("user_id,user_age,user_activity,user_hist_ctr\nu1,30,0.5,0.9\nteam-user,,0.25,\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = c.adrankctl(t, "", "features", "load", "--entity", "user", good)
	if err != nil || !strings.Contains(out, "entity user now serves version 2 (2 rows, from users.csv)") {
		t.Fatalf("loading a valid file (%v):\n%s", err, out)
	}
	if known, u1 := userRow("u1"); !known || u1["user_hist_ctr"] != 0.9 || u1["user_age"] != 30 {
		t.Errorf("u1 after the load: %v", u1)
	}
	if known, _ := userRow("u2"); known {
		t.Errorf("u2 is not in the new snapshot but is still known")
	}
	if known, tu := userRow("team-user"); !known || tu["user_activity"] != 0.25 {
		t.Errorf("team-user after the load: %v %v", known, tu)
	}
	req := rankRequest("features-e2e", "feed")
	req.UserId = "team-user"
	resp, err := c.router.Rank(ctx, req)
	if err != nil || len(resp.GetResults()) == 0 || resp.GetDegraded() {
		t.Fatalf("ranking for the team's user: %v %v", resp, err)
	}
	out, err = c.adrankctl(t, "", "features", "status")
	if err != nil || !regexpLine(out, `user\s+2\s+2\s+0\s+\d+\s.*users\.csv`) {
		t.Errorf("status after the load (%v):\n%s", err, out)
	}

	// Online writes over REST: a bad row is 400 naming it, and nothing of
	// the request is written; a good one serves at once.
	code, body := c.post("/v1/features/user:put", []byte(`{"rows": [{"key": ["u1"], "values": {"user_hist_ctr": 0.5}}, {"key": ["u9"], "values": {"user_activity": 2}}]}`))
	if code != 400 || !strings.Contains(string(body), "row 2.user_activity") {
		t.Errorf("a bad online write: %d %s", code, body)
	}
	if _, u1 := userRow("u1"); u1["user_hist_ctr"] != 0.9 {
		t.Errorf("a refused write changed u1: %v", u1)
	}
	code, body = c.post("/v1/features/user:put", []byte(`{"rows": [{"key": ["u1"], "values": {"user_hist_ctr": 0.5}}]}`))
	if code != 200 {
		t.Fatalf("an online write: %d %s", code, body)
	}
	code, body = c.post("/v1/features:get", []byte(`{"user_id": "u1"}`))
	if code != 200 || !strings.Contains(string(body), `"user_known":true`) {
		t.Errorf("GetFeatures over REST: %d %s", code, body)
	}
	if _, u1 := userRow("u1"); u1["user_hist_ctr"] != 0.5 {
		t.Errorf("u1 after the online write: %v", u1)
	}
	code, body = c.get("/v1/features/status")
	if code != 200 || !strings.Contains(string(body), `"online_rows":"1"`) {
		t.Errorf("status over REST: %d %s", code, body)
	}
}

// regexpLine reports whether a line of out matches expr.
func regexpLine(out, expr string) bool {
	re := regexp.MustCompile(expr)
	for _, l := range strings.Split(out, "\n") {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}

func byName(tb *featuresv1.FeatureTable) map[string]float64 {
	out := map[string]float64{}
	for i, n := range tb.GetNames() {
		out[n] = tb.GetValues()[i]
	}
	return out
}

// The router feeds featuresvc's real-time counters: a request's impressions
// are counted, and a click reported to the router is served to the user's
// next request within 1 s (the bound; it takes milliseconds here:
// the router sends a click at once).
func TestClickIsCountedForTheNextRequest(t *testing.T) {
	c := startCluster(t, [2]string{"feed/v1", "models/feed/v1.json"})
	fc := c.featuresClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := rankRequest("counters-1", "feed")
	req.UserId = "u77"
	resp, err := c.router.Rank(ctx, req)
	if err != nil || len(resp.GetResults()) == 0 {
		t.Fatalf("rank: %v %v", resp, err)
	}
	first := resp.GetResults()[0]
	counts := func() (user, ad map[string]float64) {
		r, err := fc.GetFeatures(ctx, &featuresv1.GetFeaturesRequest{UserId: "u77", AdIds: []string{first.GetAdId()}})
		if err != nil {
			t.Fatal(err)
		}
		return byName(r.GetShared()), byName(r.GetAdFeatures())
	}
	// The impressions are written (every 100 ms) and then sent.
	eventually(t, settle, func() error {
		if u, _ := counts(); u["user_impressions_1h"] != float64(len(resp.GetResults())) {
			return fmt.Errorf("user_impressions_1h %v, want %d", u["user_impressions_1h"], len(resp.GetResults()))
		}
		return nil
	})
	if u, a := counts(); u["user_clicks_1h"] != 0 || a["ad_impressions_24h"] < 1 || a["user_topic_impressions_1h"] < 1 {
		t.Fatalf("before the click: user %v, ad %v", u, a)
	}
	r, err := c.router.ReportEvents(ctx, &routerv1.ReportEventsRequest{Events: []*routerv1.Event{{ImpressionId: first.GetImpressionId(), Type: routerv1.EventType_EVENT_TYPE_CLICK}}})
	if err != nil || r.GetAccepted() != 1 {
		t.Fatalf("click: %v %v", r, err)
	}
	clicked := time.Now()
	var took time.Duration
	for {
		u, a := counts()
		if u["user_clicks_1h"] == 1 && a["ad_clicks_1h"] == 1 && a["user_topic_clicks_24h"] == 1 {
			took = time.Since(clicked)
			break
		}
		if time.Since(clicked) > time.Second {
			t.Fatalf("1 s after the click it is not served: user %v, ad %v", u, a)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the click was served %s after ReportEvents returned", took.Round(time.Millisecond))
	// The same click again is a duplicate for the router, and not counted
	// again.
	r, err = c.router.ReportEvents(ctx, &routerv1.ReportEventsRequest{Events: []*routerv1.Event{{ImpressionId: first.GetImpressionId(), Type: routerv1.EventType_EVENT_TYPE_CLICK}}})
	if err != nil || r.GetDuplicates() != 1 {
		t.Fatalf("the click again: %v %v", r, err)
	}
	time.Sleep(300 * time.Millisecond) // three of the sink's intervals
	if u, _ := counts(); u["user_clicks_1h"] != 1 {
		t.Errorf("a duplicate click was counted: %v", u["user_clicks_1h"])
	}
}

// The loop from logs to a new model, through the real processes: serve
// traffic with production logging every request ("explore", epsilon 0),
// export the features as they were served and the clicks, train an XGBoost
// model on the export with the repository's training script, register it as
// a new version, shadow it, and compare it with production.
func TestLogsToANewModel(t *testing.T) {
	// Debian's python3-xgboost, as make models uses it (a python3 earlier on
	// PATH may lack it).
	const python = "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import xgboost").Run(); err != nil {
		t.Fatalf("%s with xgboost is needed (Debian's python3-xgboost; .ci/run installs it): %v", python, err)
	}
	c := startCluster(t, [2]string{"feed/v1", "models/feed/v1.json"})
	w, err := world.New(world.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	// 1. Serve, logging every request.
	c.putKV("adrank/experiments/feed", `{"explore": {"share": 1, "epsilon": 0, "keep": 100000}}`)
	eventually(t, settle, func() error {
		if e := c.report(t, "feed").GetExperiment(); !strings.Contains(e, "explore") {
			return fmt.Errorf("experiment %q", e)
		}
		return nil
	})
	res, err := sim.Run(context.Background(), c.router, w, sim.Config{Domain: "feed", Requests: 4000, Seed: 41, Concurrency: 4, RequestPrefix: "loop-"})
	if err != nil || res.Errors != 0 {
		t.Fatalf("traffic: %+v %v", res, err)
	}
	// 2. Export, once every impression and click is written.
	dir := t.TempDir()
	export := filepath.Join(dir, "train.csv")
	router := []string{"--router", c.routerAddr}
	eventually(t, settle, func() error {
		out, err := c.adrankctl(t, "", append([]string{"features", "export", "feed", "--out", export}, router...)...)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if want := fmt.Sprintf("%d rows, %d clicked, 0 skipped", res.Impressions, res.Clicks); !strings.Contains(out, want) {
			return fmt.Errorf("%s, want %s", strings.TrimSpace(out), want)
		}
		return nil
	})
	out, err := c.adrankctl(t, "", append([]string{"features", "export", "feed", "--out", filepath.Join(dir, "train.parquet")}, router...)...)
	if err != nil || !strings.Contains(out, fmt.Sprintf("%d rows", res.Impressions)) {
		t.Fatalf("Parquet export: %v %s", err, out)
	}
	rows := readCSV(t, export)
	// The features are those served at the moment: a user's counters grow
	// from one request to the next, in the export as they did when served.
	grew := 0
	last := map[string]float64{}
	for _, r := range rows {
		u := r["user_id"]
		n, err := strconv.ParseFloat(r["user_impressions_1h"], 64)
		if err != nil {
			t.Fatalf("user_impressions_1h %q: %v", r["user_impressions_1h"], err)
		}
		if prev, ok := last[u]; ok && n > prev {
			grew++
		}
		last[u] = n
	}
	if grew == 0 {
		t.Errorf("no user's impression count grew between requests in the export: the counters are not point-in-time")
	}
	// 3. Train.
	model := filepath.Join(dir, "v3.json")
	// The world's features and the real-time counters: a model uses them
	// like any other feature.
	features := append(append([]string{}, world.AllFeatures...), "user_impressions_1h", "user_clicks_24h", "ad_impressions_1h", "ad_clicks_24h", "user_topic_clicks_24h")
	cmd := exec.Command(python, filepath.Join(c.root, "ml/python/train_xgb.py"), "--export", export, "--model-out", model, "--rounds", "60",
		"--features", strings.Join(features, ","))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("training: %v\n%s", err, out)
	} else {
		t.Logf("%s", strings.TrimSpace(string(out)))
	}
	if b, err := os.ReadFile(model); err != nil || !strings.Contains(string(b), `"user_topic_clicks_24h"`) {
		t.Fatalf("the model does not name the counters it was trained on: %v", err)
	}
	// 4. Register it as v3; before it serves anyone, estimate its first
	// ad's CTR from the same logs (off-policy: with epsilon 0, from the
	// requests where it agrees with production).
	c.startRanker("feed/v3", model)
	out, err = c.adrankctl(t, "", append([]string{"ope", "--domain", "feed", "--candidate", "v3", "--output", "json"}, router...)...)
	var ope routerv1.EvaluateOffPolicyResponse
	if err != nil || protojson.Unmarshal([]byte(out), &ope) != nil || ope.GetRecords() != float64(res.Requests) {
		t.Fatalf("off-policy estimate of v3: %v\n%s", err, out)
	}
	t.Logf("off-policy: production's logged first-slot CTR %.4f; v3's estimate (SNIPS) %.4f [%.4f, %.4f], match rate %.2f",
		ope.GetLoggedCtr(), ope.GetSnips().GetValue(), ope.GetSnips().GetCiLow(), ope.GetSnips().GetCiHigh(), ope.GetMatchRate())
	// 5. Shadow it.
	c.putKV("adrank/experiments/feed", `{"shadow": {"versions": ["v3"], "fraction": 1}}`)
	eventually(t, settle, func() error {
		if e := c.report(t, "feed").GetExperiment(); !strings.Contains(e, "shadow") {
			return fmt.Errorf("experiment %q", e)
		}
		return nil
	})
	res2, err := sim.Run(context.Background(), c.router, w, sim.Config{Domain: "feed", Requests: 500, Seed: 42, Concurrency: 4, RequestPrefix: "loop-shadow-"})
	if err != nil || res2.Errors != 0 {
		t.Fatalf("shadowed traffic: %+v %v", res2, err)
	}
	// 6. Compare.
	var sh *routerv1.ShadowStats
	eventually(t, settle, func() error {
		s := c.report(t, "feed").GetShadow()
		if len(s) != 1 || s[0].GetCompared() < 450 {
			return fmt.Errorf("shadow %v", s)
		}
		sh = s[0]
		return nil
	})
	t.Logf("v3 (trained on %d exported rows) against production v1 over %v requests: top-k overlap %.2f, Kendall's tau %.2f, mean pCTR ratio %.2f, PSI %.2f",
		len(rows), sh.GetCompared(), sh.GetTopkOverlap(), sh.GetKendallTau(), sh.GetMeanPctrRatio(), sh.GetPsi())
	if sh.GetErrors() != 0 || !(sh.GetKendallTau() > 0) || !(sh.GetMeanPctrRatio() > 0.5 && sh.GetMeanPctrRatio() < 2) {
		t.Errorf("v3's shadow comparison: %v", sh)
	}
}

// readCSV reads an exported CSV: each row's cells by column name.
func readCSV(t *testing.T, path string) []map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil || len(recs) < 2 {
		t.Fatalf("%s: %d records, %v", path, len(recs), err)
	}
	var out []map[string]string
	for _, rec := range recs[1:] {
		m := map[string]string{}
		for i, name := range recs[0] {
			m[name] = rec[i]
		}
		out = append(out, m)
	}
	return out
}

// Several featuresvc replicas share one Redis store: a snapshot loaded once
// serves from every replica, an online write through one is read through
// the other, and every replica counts every click (the router sends the
// activity to each).
func TestFeatureReplicasShareRedis(t *testing.T) {
	redis := redistest.Start(t)
	c := startClusterOpts(t, clusterOptions{consul: consultest.Start, featuresArgs: []string{"--redis-addr", redis.Addr}},
		[2]string{"feed/v1", "models/feed/v1.json"})
	c.start("featuresvc", "--redis-addr", redis.Addr)
	var replicas []featuresv1.FeatureServiceClient
	eventually(t, settle, func() error {
		entries, _, err := c.consul.Client.Health().Service(consulx.FeatureService, "", true, nil)
		if err != nil || len(entries) != 2 {
			return fmt.Errorf("%d healthy featuresvc, want 2 (%v)", len(entries), err)
		}
		replicas = nil
		for _, e := range entries {
			cc, err := grpc.NewClient(fmt.Sprintf("%s:%d", e.Service.Address, e.Service.Port), c.dial)
			if err != nil {
				return err
			}
			t.Cleanup(func() { cc.Close() })
			replicas = append(replicas, featuresv1.NewFeatureServiceClient(cc))
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	user := func(r featuresv1.FeatureServiceClient, id string) map[string]float64 {
		resp, err := r.GetFeatures(ctx, &featuresv1.GetFeaturesRequest{UserId: id})
		if err != nil {
			t.Fatal(err)
		}
		return byName(resp.GetShared())
	}
	file := filepath.Join(t.TempDir(), "users.csv")
	if err := os.WriteFile(file, []byte("user_id,user_age,user_activity,user_hist_ctr\nu7,30,0.5,0.125\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := c.adrankctl(t, "", "features", "load", "--entity", "user", file)
	if err != nil || strings.Count(out, "now serves version") != 1 {
		t.Fatalf("loading into a shared store: want one load (%v):\n%s", err, out)
	}
	for i, r := range replicas {
		if u := user(r, "u7"); u["user_hist_ctr"] != 0.125 {
			t.Errorf("replica %d serves u7 as %v", i, u)
		}
	}
	if _, err := replicas[0].PutFeatures(ctx, &featuresv1.PutFeaturesRequest{Entity: "user", Rows: []*featuresv1.FeatureRow{{Key: []string{"u7"}, Values: map[string]float64{"user_hist_ctr": 0.25}}}}); err != nil {
		t.Fatal(err)
	}
	if u := user(replicas[1], "u7"); u["user_hist_ctr"] != 0.25 {
		t.Errorf("a write through one replica, read through the other: %v", u)
	}
	// A click reaches every replica's counters. Each attempt is a new user,
	// so that its counts are exact: the first attempts may come before the
	// router has seen the second replica.
	attempt := 0
	eventually(t, settle, func() error {
		attempt++
		req := rankRequest(fmt.Sprintf("replicas-%d", attempt), "feed")
		req.UserId = fmt.Sprintf("replica-user-%d", attempt)
		resp, err := c.router.Rank(ctx, req)
		if err != nil || len(resp.GetResults()) == 0 {
			return fmt.Errorf("rank: %v %v", resp, err)
		}
		if _, err := c.router.ReportEvents(ctx, &routerv1.ReportEventsRequest{Events: []*routerv1.Event{{ImpressionId: resp.GetResults()[0].GetImpressionId(), Type: routerv1.EventType_EVENT_TYPE_CLICK}}}); err != nil {
			return err
		}
		return wait(time.Second, func() error {
			for i, r := range replicas {
				if u := user(r, req.UserId); u["user_clicks_1h"] != 1 || u["user_impressions_1h"] != float64(len(resp.GetResults())) {
					return fmt.Errorf("replica %d counts %v clicks and %v impressions", i, u["user_clicks_1h"], u["user_impressions_1h"])
				}
			}
			return nil
		})
	})
}

// wait retries f for up to d, and returns its last error.
func wait(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
