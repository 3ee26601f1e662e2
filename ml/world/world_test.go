package world

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestNewIsDeterministic(t *testing.T) {
	a, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := New(DefaultConfig())
	if diff := cmp.Diff(a.Users()[:50], b.Users()[:50]); diff != "" {
		t.Errorf("same seed, different users:\n%s", diff)
	}
	other := DefaultConfig()
	other.Seed++
	c, _ := New(other)
	if cmp.Equal(a.Users()[0], c.Users()[0]) {
		t.Error("different seeds gave the same first user")
	}
	if got := len(a.Ads("feed")) + len(a.Ads("stories")); got != 2000 {
		t.Errorf("%d ads, want 2000", got)
	}
	if _, ok := a.Ad("ad1"); !ok {
		t.Error("ad1 missing")
	}
	if ad, _ := a.Ad("ad1001"); ad.Domain != "stories" {
		t.Errorf("ad1001 is in %q, want stories", ad.Domain)
	}
}

func TestNewRejects(t *testing.T) {
	for _, cfg := range []Config{
		{Seed: 1, Users: 0, Advertisers: 1, AdsPerDomain: 1, Domains: []string{"feed"}},
		{Seed: 1, Users: 1, Advertisers: 1, AdsPerDomain: 1, Domains: []string{"video"}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestFeaturesAreMissingNotZero(t *testing.T) {
	w, _ := New(DefaultConfig())
	u, _ := w.User("u1")
	a, _ := w.Ad("ad1")
	c := Context{Device: "mobile", Time: time.Date(2026, 1, 1, 6, 0, 0, 0, time.UTC)}

	if f := UserFeatures(nil); f != nil {
		t.Errorf("unknown user has features %v", f)
	}
	if f := AdFeatures(u, nil, c); f != nil {
		t.Errorf("unknown ad has features %v", f)
	}
	cold := AdFeatures(nil, a, c)
	if _, ok := cold[FUserAdInterest]; ok {
		t.Error("user x ad cross present for an unknown user")
	}
	if _, ok := cold[FAdHistCTR]; !ok {
		t.Error("ad feature missing for a known ad")
	}
	if got := AdFeatures(u, a, c)[FUserAdInterest]; got != u.Interests[a.Topic] {
		t.Errorf("interest %v, want %v", got, u.Interests[a.Topic])
	}

	ctx := ContextFeatures(c)
	if ctx[FMobile] != 1 || ctx[FDesktop] != 0 || math.Abs(ctx[FHourSin]-1) > 1e-12 {
		t.Errorf("context features %v", ctx)
	}
	unknown := ContextFeatures(Context{})
	for _, f := range []string{FHourSin, FHourCos, FMobile, FDesktop, FTablet} {
		if _, ok := unknown[f]; ok {
			t.Errorf("%s present for an unknown context", f)
		}
	}
}

func TestSampleLogFollowsTheClickModel(t *testing.T) {
	w, _ := New(DefaultConfig())
	log, err := w.SampleLog(LogOptions{Domain: "feed", N: 50000, Seed: 7, ColdUserShare: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	var clicks, prob float64
	var cold int
	for _, im := range log {
		if im.Clicked {
			clicks++
		}
		prob += im.TrueProb
		if _, ok := im.Shared[FUserAge]; !ok {
			cold++
		}
	}
	// Observed clicks vs expected: the sum of Bernoulli(p) has sd <= sqrt(sum p);
	// allow 4 sd.
	if d := math.Abs(clicks - prob); d > 4*math.Sqrt(prob) {
		t.Errorf("%v clicks, expected %.0f", clicks, prob)
	}
	if ctr := clicks / 50000; ctr < 0.02 || ctr > 0.2 {
		t.Errorf("CTR %.3f is not ad-like", ctr)
	}
	// Cold users: Binomial(50000, 0.1), sd 67; allow 5 sd.
	if cold < 5000-335 || cold > 5000+335 {
		t.Errorf("%d cold-user impressions, want about 5000", cold)
	}
}

func TestColumnsCoverEveryFeatureOnce(t *testing.T) {
	cols := append(slices.Clone(SharedColumns), AdColumns...)
	slices.Sort(cols)
	all := slices.Sorted(slices.Values(AllFeatures))
	if !slices.Equal(cols, all) {
		t.Errorf("shared + ad columns %v, want every feature once: %v", cols, all)
	}
}
