package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	"github.com/adrank/adrank/platform/consulx"
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
	if err != nil || !regexpLine(out, `user\s+1\s+5000\s+0\s`) {
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
	if err != nil || !regexpLine(out, `user\s+2\s+2\s+0\s.*users\.csv`) {
		t.Errorf("status after the load (%v):\n%s", err, out)
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
