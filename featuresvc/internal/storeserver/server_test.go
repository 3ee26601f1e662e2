package storeserver

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/adrank/adrank/featuresvc/internal/demo"
	"github.com/adrank/adrank/featuresvc/internal/features"
	"github.com/adrank/adrank/featuresvc/internal/store"
	"github.com/adrank/adrank/featuresvc/internal/table"
	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	"github.com/adrank/adrank/ml/featurespec"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/redistest"
)

// backends open the store each test runs against: the same tests are the
// acceptance suite of both.
var backends = map[string]func(t testing.TB) store.Store{
	"bolt": func(t testing.TB) store.Store {
		st, err := store.OpenBolt(filepath.Join(t.TempDir(), "f.db"), featurespec.Demo(), time.Now)
		if err != nil {
			t.Fatal(err)
		}
		return st
	},
	"redis": func(t testing.TB) store.Store {
		srv := redistest.Start(t)
		st, err := store.OpenRedis(context.Background(), srv.Addr, "test:", featurespec.Demo(), time.Now)
		if err != nil {
			t.Fatal(err)
		}
		return st
	},
}

// eachBackend runs f as a subtest against each backend.
func eachBackend(t *testing.T, f func(t *testing.T, open func(testing.TB) store.Store)) {
	for name, open := range backends {
		t.Run(name, func(t *testing.T) { f(t, open) })
	}
}

// demoServer is a Server with the demo world loaded through Parquet, on
// bbolt.
func demoServer(t testing.TB, w *world.World) (*Server, store.Store) {
	return demoServerOn(t, w, backends["bolt"])
}

// demoServerOn is demoServer on the store open returns.
func demoServerOn(t testing.TB, w *world.World, open func(testing.TB) store.Store) (*Server, store.Store) {
	t.Helper()
	st := open(t)
	t.Cleanup(func() { st.Close() })
	s := New(st, Options{TmpDir: t.TempDir(), MaxFileBytes: 1 << 30, Limits: table.DefaultLimits, Now: time.Now})
	for _, e := range st.Spec().Entities {
		data, err := demo.Parquet(w, e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.LoadBytes(context.Background(), e.Name, "parquet", data, time.Time{}, "demo"); err != nil {
			t.Fatal(err)
		}
	}
	return s, st
}

// byName is a response's values by column name, for the shared row and each
// ad's row.
func byName(tb *featuresv1.FeatureTable, row int) map[string]float64 {
	out := map[string]float64{}
	w := len(tb.GetNames())
	for i, n := range tb.GetNames() {
		out[n] = tb.GetValues()[row*w+i]
	}
	return out
}

func sameBits(a, b float64) bool {
	return math.Float64bits(a) == math.Float64bits(b) || (math.IsNaN(a) && math.IsNaN(b))
}

// The store, loaded with the demo world through Parquet, serves exactly what
// the world serves: every feature, bit for bit, for every user and ad, known
// or not, under several contexts. So the demo models score the same.
func TestStoreServesTheWorldBitForBit(t *testing.T) {
	eachBackend(t, testServesTheWorld)
}

func testServesTheWorld(t *testing.T, open func(testing.TB) store.Store) {
	w, err := world.New(world.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	s, _ := demoServerOn(t, w, open)
	ref := features.NewServer(w)
	var ads []string
	for _, d := range w.Config().Domains {
		for _, a := range w.Ads(d) {
			ads = append(ads, a.ID)
		}
	}
	ads = append(ads, "no-such-ad")
	users := []string{"no-such-user"}
	for _, u := range w.Users() {
		users = append(users, u.ID)
	}
	ctxs := []*featuresv1.RequestContext{
		nil,
		{Timestamp: timestamppb.New(time.Date(2026, 5, 1, 13, 30, 0, 0, time.UTC)), Device: "mobile", Query: "Cheap SPORTS shoes"},
		{Device: "tablet", Query: "travel finance"},
	}
	checked := 0
	for i, u := range users {
		req := &featuresv1.GetFeaturesRequest{UserId: u, AdIds: ads[(i*37)%len(ads):][:min(100, len(ads)-(i*37)%len(ads))], Context: ctxs[i%len(ctxs)]}
		if i < 3 { // every ad for a few users
			req.AdIds = ads[min(i*features.MaxAds, len(ads)):min((i+1)*features.MaxAds, len(ads))]
		}
		got, err := s.GetFeatures(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ref.GetFeatures(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if got.GetUserKnown() != want.GetUserKnown() {
			t.Fatalf("user %s: known %v, want %v", u, got.GetUserKnown(), want.GetUserKnown())
		}
		g, wn := byName(got.GetShared(), 0), byName(want.GetShared(), 0)
		if len(g) != len(wn)+4 { // and the user's counters, 2 windows of 2
			t.Fatalf("shared columns %v, want %v and the counters", got.GetShared().GetNames(), want.GetShared().GetNames())
		}
		if g["user_clicks_1h"] != 0 || g["user_impressions_24h"] != 0 {
			t.Fatalf("counters without activity: %v", g)
		}
		for n, v := range wn {
			if !sameBits(g[n], v) {
				t.Fatalf("user %s: %s = %v, want %v", u, n, g[n], v)
			}
		}
		for r := range req.AdIds {
			if got.GetAds()[r].GetKnown() != want.GetAds()[r].GetKnown() {
				t.Fatalf("ad %s: known differs", req.AdIds[r])
			}
			g, wn := byName(got.GetAdFeatures(), r), byName(want.GetAdFeatures(), r)
			if len(g) != len(wn)+8 { // and the ad's and the user x topic's counters
				t.Fatalf("ad columns %v, want %v and the counters", got.GetAdFeatures().GetNames(), want.GetAdFeatures().GetNames())
			}
			for n, v := range wn {
				if !sameBits(g[n], v) {
					t.Fatalf("user %s, ad %s: %s = %v, want %v", u, req.AdIds[r], n, g[n], v)
				}
				checked++
			}
		}
	}
	t.Logf("%d ad features compared, all equal", checked)
}

// Online writes change what is served at once, for a known row and for a new
// one; a write older than the row's last one changes nothing; a snapshot
// whose as_of is later supersedes them.
func TestPutFeaturesOverTheSnapshot(t *testing.T) {
	eachBackend(t, testPutFeaturesOverTheSnapshot)
}

func testPutFeaturesOverTheSnapshot(t *testing.T, open func(testing.TB) store.Store) {
	w, err := world.New(world.Config{Seed: 1, Users: 20, Advertisers: 5, AdsPerDomain: 10, Domains: []string{"feed"}})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := demoServerOn(t, w, open)
	ctx := context.Background()
	get := func(user string) map[string]float64 {
		r, err := s.GetFeatures(ctx, &featuresv1.GetFeaturesRequest{UserId: user})
		if err != nil {
			t.Fatal(err)
		}
		return byName(r.GetShared(), 0)
	}
	before := get("u1")
	t0 := time.Now() // after the snapshot: writes before its as_of change nothing
	put := func(user string, v float64, at time.Time) error {
		_, err := s.PutFeatures(ctx, &featuresv1.PutFeaturesRequest{Entity: "user", Rows: []*featuresv1.FeatureRow{
			{Key: []string{user}, Values: map[string]float64{"user_hist_ctr": v}, EventTime: timestamppb.New(at)},
		}})
		return err
	}
	if err := put("u1", 0.5, t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	after := get("u1")
	if after["user_hist_ctr"] != 0.5 || after["user_age"] != before["user_age"] {
		t.Fatalf("after the write: %v (before %v)", after, before)
	}
	if err := put("u1", 0.25, t0.Add(time.Second)); err != nil { // older: no effect
		t.Fatal(err)
	}
	if v := get("u1")["user_hist_ctr"]; v != 0.5 {
		t.Errorf("an older write overwrote a newer one: %v", v)
	}
	if err := put("newcomer", 0.1, t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	r, _ := s.GetFeatures(ctx, &featuresv1.GetFeaturesRequest{UserId: "newcomer"})
	if !r.GetUserKnown() || byName(r.GetShared(), 0)["user_hist_ctr"] != 0.1 || !math.IsNaN(byName(r.GetShared(), 0)["user_age"]) {
		t.Errorf("a new user's written feature: known %v, %v", r.GetUserKnown(), byName(r.GetShared(), 0))
	}
	// A write later than the next snapshot (writes may be up to an hour
	// ahead) stays in force over it.
	if err := put("u2", 0.75, time.Now().Add(30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	// A snapshot describing a later time supersedes the earlier writes.
	data, _ := demo.Parquet(w, featurespec.Demo().Entity("user"))
	if _, err := s.LoadBytes(ctx, "user", "parquet", data, t0.Add(10*time.Second), "later"); err != nil {
		t.Fatal(err)
	}
	if v := get("u1")["user_hist_ctr"]; v != before["user_hist_ctr"] {
		t.Errorf("after a later snapshot: %v, want the snapshot's %v", v, before["user_hist_ctr"])
	}
	if v := get("u2")["user_hist_ctr"]; v != 0.75 {
		t.Errorf("a write later than the snapshot was dropped: %v", v)
	}
	// NaN is "missing" where the policy serves missing values.
	if err := put("u2", math.NaN(), time.Now().Add(31*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if v := get("u2")["user_hist_ctr"]; !math.IsNaN(v) {
		t.Errorf("written as missing, served %v", v)
	}
}

// Every bad write is refused with INVALID_ARGUMENT naming the row and field,
// and nothing of the request is written.
func TestPutFeaturesRefusesBadRows(t *testing.T) {
	eachBackend(t, testPutFeaturesRefusesBadRows)
}

func testPutFeaturesRefusesBadRows(t *testing.T, open func(testing.TB) store.Store) {
	w, _ := world.New(world.Config{Seed: 1, Users: 5, Advertisers: 2, AdsPerDomain: 3, Domains: []string{"feed"}})
	s, _ := demoServerOn(t, w, open)
	ctx := context.Background()
	good := &featuresv1.FeatureRow{Key: []string{"u1"}, Values: map[string]float64{"user_hist_ctr": 0.9}}
	for _, tc := range []struct {
		name string
		req  *featuresv1.PutFeaturesRequest
		want string
	}{
		{"unknown entity", &featuresv1.PutFeaturesRequest{Entity: "users", Rows: []*featuresv1.FeatureRow{good}}, "entity"},
		{"no rows", &featuresv1.PutFeaturesRequest{Entity: "user"}, "rows"},
		{"unknown feature", &featuresv1.PutFeaturesRequest{Entity: "user", Rows: []*featuresv1.FeatureRow{good, {Key: []string{"u2"}, Values: map[string]float64{"user_hist_crt": 0.1}}}}, "row 2.user_hist_crt"},
		{"infinity", &featuresv1.PutFeaturesRequest{Entity: "user", Rows: []*featuresv1.FeatureRow{good, {Key: []string{"u2"}, Values: map[string]float64{"user_activity": math.Inf(1)}}}}, "row 2.user_activity"},
		{"out of bounds", &featuresv1.PutFeaturesRequest{Entity: "user", Rows: []*featuresv1.FeatureRow{{Key: []string{"u2"}, Values: map[string]float64{"user_activity": 1.5}}, good}}, "row 1.user_activity"},
		{"not an integer", &featuresv1.PutFeaturesRequest{Entity: "user", Rows: []*featuresv1.FeatureRow{{Key: []string{"u2"}, Values: map[string]float64{"user_age": 30.5}}}}, "row 1.user_age"},
		{"wrong key", &featuresv1.PutFeaturesRequest{Entity: "user_topic", Rows: []*featuresv1.FeatureRow{{Key: []string{"u2"}, Values: map[string]float64{"user_ad_interest": 0.1}}}}, "row 1.key"},
		{"NUL in a key", &featuresv1.PutFeaturesRequest{Entity: "user_topic", Rows: []*featuresv1.FeatureRow{{Key: []string{"u1\x00x", "y"}, Values: map[string]float64{"user_ad_interest": 0.1}}}}, "row 1.user_id"},
		{"oversize key", &featuresv1.PutFeaturesRequest{Entity: "user", Rows: []*featuresv1.FeatureRow{{Key: []string{strings.Repeat("k", 300)}, Values: map[string]float64{"user_age": 3}}}}, "row 1.user_id"},
		{"a string where a number is declared", &featuresv1.PutFeaturesRequest{Entity: "ad", Rows: []*featuresv1.FeatureRow{{Key: []string{"ad1"}, Strings: map[string]string{"ad_age_days": "3"}}}}, "row 1.ad_age_days"},
		{"far future", &featuresv1.PutFeaturesRequest{Entity: "user", Rows: []*featuresv1.FeatureRow{{Key: []string{"u2"}, Values: map[string]float64{"user_age": 3}, EventTime: timestamppb.New(time.Now().Add(48 * time.Hour))}}}, "row 1.event_time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.PutFeatures(ctx, tc.req)
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument {
				t.Fatalf("%v, want InvalidArgument", err)
			}
			fields := st.Message()
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, v := range br.GetFieldViolations() {
						fields += " | " + v.GetField()
					}
				}
			}
			if !strings.Contains(fields, tc.want) {
				t.Errorf("%q does not name %q", fields, tc.want)
			}
			r, _ := s.GetFeatures(ctx, &featuresv1.GetFeaturesRequest{UserId: "u1"})
			if byName(r.GetShared(), 0)["user_hist_ctr"] == 0.9 {
				t.Errorf("the request's valid row was written")
			}
		})
	}
}

// Activity counts for the user, the ad and the user x the ad's topic, and
// is served from the next request; it leaves the 1 h window after an hour.
func TestRecordActivityIsServed(t *testing.T) {
	w, err := world.New(world.Config{Seed: 1, Users: 20, Advertisers: 5, AdsPerDomain: 10, Domains: []string{"feed"}})
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	s, _ := demoServer(t, w)
	s.now = func() time.Time { return clock }
	ctx := context.Background()
	a1, _ := w.Ad("ad1")
	var sameTopic string // another ad of ad1's topic
	for _, a := range w.Ads("feed") {
		if a.ID != "ad1" && a.Topic == a1.Topic {
			sameTopic = a.ID
		}
	}
	act := func(user, ad string, imps, clicks uint32, at time.Time) {
		t.Helper()
		if _, err := s.RecordActivity(ctx, &featuresv1.RecordActivityRequest{Activity: []*featuresv1.Activity{
			{UserId: user, AdId: ad, Impressions: imps, Clicks: clicks, Time: timestamppb.New(at)},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	act("u1", "ad1", 3, 1, clock.Add(-2*time.Hour))
	act("u1", "ad1", 2, 1, clock)
	act("u2", "ad1", 1, 0, clock)
	ids := []string{"ad1", "ad2"}
	if sameTopic != "" {
		ids = append(ids, sameTopic)
	}
	r, err := s.GetFeatures(ctx, &featuresv1.GetFeaturesRequest{UserId: "u1", AdIds: ids})
	if err != nil {
		t.Fatal(err)
	}
	u := byName(r.GetShared(), 0)
	ad1 := byName(r.GetAdFeatures(), 0)
	for name, want := range map[string]float64{"user_impressions_1h": 2, "user_clicks_1h": 1, "user_impressions_24h": 5, "user_clicks_24h": 2} {
		if u[name] != want {
			t.Errorf("%s = %v, want %v", name, u[name], want)
		}
	}
	for name, want := range map[string]float64{"ad_impressions_1h": 3, "ad_clicks_1h": 1, "ad_impressions_24h": 6, "user_topic_clicks_24h": 2, "user_topic_impressions_1h": 2} {
		if ad1[name] != want {
			t.Errorf("ad1 %s = %v, want %v", name, ad1[name], want)
		}
	}
	if ad2 := byName(r.GetAdFeatures(), 1); ad2["ad_impressions_24h"] != 0 {
		t.Errorf("ad2 has activity it never had: %v", ad2)
	}
	if sameTopic != "" {
		if o := byName(r.GetAdFeatures(), 2); o["user_topic_clicks_24h"] != 2 || o["ad_clicks_24h"] != 0 {
			t.Errorf("%s, ad1's topic: user x topic clicks %v (want 2), ad clicks %v (want 0)", sameTopic, o["user_topic_clicks_24h"], o["ad_clicks_24h"])
		}
	}
	clock = clock.Add(61 * time.Minute)
	r, _ = s.GetFeatures(ctx, &featuresv1.GetFeaturesRequest{UserId: "u1"})
	if u := byName(r.GetShared(), 0); u["user_impressions_1h"] != 0 || u["user_impressions_24h"] != 5 {
		t.Errorf("61 minutes later: %v", u)
	}
	for name, req := range map[string]*featuresv1.RecordActivityRequest{
		"empty":      {},
		"no user":    {Activity: []*featuresv1.Activity{{AdId: "ad1", Impressions: 1, Time: timestamppb.New(clock)}}},
		"no time":    {Activity: []*featuresv1.Activity{{UserId: "u1", AdId: "ad1", Impressions: 1}}},
		"far future": {Activity: []*featuresv1.Activity{{UserId: "u1", AdId: "ad1", Impressions: 1, Time: timestamppb.New(clock.Add(time.Hour))}}},
	} {
		if _, err := s.RecordActivity(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}
