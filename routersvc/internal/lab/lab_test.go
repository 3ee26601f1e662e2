package lab

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/adrank/adrank/platform/experiment"
)

// Multileaving three rankings into four slots: each round's order comes
// from order(round), each team takes its best ad not yet shown, and a team
// whose list is spent is passed over.
func TestMultileave(t *testing.T) {
	rank := func(ids ...string) []Ranked {
		var out []Ranked
		for _, id := range ids {
			out = append(out, Ranked{AdID: id})
		}
		return out
	}
	lists := [][]Ranked{rank("x", "y"), rank("x", "z", "w"), rank("v")}
	orders := [][]int{{2, 0, 1}, {1, 2, 0}}
	got := Multileave(lists, 4, func(round int) []int { return orders[round] })
	want := []Pick{{Ranked{AdID: "v"}, 2}, {Ranked{AdID: "x"}, 0}, {Ranked{AdID: "z"}, 1}, {Ranked{AdID: "w"}, 1}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, c := range []struct {
		group string
		team  int
		ok    bool
	}{{"a", 0, true}, {"b", 1, true}, {"t2", 2, true}, {teamGroup(3, 4), 3, true}, {AgreedGroup, 0, false}, {"t99", 0, false}, {"tx", 0, false}} {
		if team, ok := teamOf(c.group); ok != c.ok || ok && team != c.team {
			t.Errorf("teamOf(%q) = %d %v", c.group, team, ok)
		}
	}
	if got := teamsOf("interleave:v1,v2,v3"); fmt.Sprint(got) != "[v1 v2 v3]" || teamsOf("ab:s:v1,v2") != nil {
		t.Errorf("teamsOf: %v", got)
	}
}

// Hundreds of arms: Thompson's allocation sums to 1, favours the arm that is
// clearly best, and is cheap enough to recompute every refresh.
func TestAllocateHundredsOfArms(t *testing.T) {
	const k = 300
	b := &experiment.Bandit{Policy: experiment.Thompson}
	n, c := make([]float64, k), make([]float64, k)
	for i := range k {
		n[i], c[i] = 1000, 100 // 10% each
	}
	c[123] = 200 // one arm at 20%
	start := time.Now()
	probs := Allocate(b, n, c)
	took := time.Since(start)
	var sum float64
	for _, p := range probs {
		sum += p
	}
	if math.Abs(sum-1) > 1e-9 || probs[123] < 0.99 {
		t.Errorf("sum %v, best arm %v", sum, probs[123])
	}
	t.Logf("Thompson allocation over %d arms took %v", k, took)
	for _, policy := range []string{experiment.UCB1, experiment.EpsilonGreedy} {
		p := Allocate(&experiment.Bandit{Policy: policy, Epsilon: 0.3}, n, c)
		if p[123] < 0.7 {
			t.Errorf("%s gives the best arm %v", policy, p[123])
		}
	}
	// Same counts, same allocation: replicas agree.
	if again := Allocate(b, n, c); fmt.Sprint(again) != fmt.Sprint(probs) {
		t.Error("Thompson allocation is not reproducible")
	}
}

func TestTeamDraft(t *testing.T) {
	rank := func(ids ...string) []Ranked {
		out := make([]Ranked, len(ids))
		for i, id := range ids {
			out[i] = Ranked{AdID: id}
		}
		return out
	}
	a, b := rank("x", "y", "z", "w"), rank("y", "w", "x", "v")
	// Round 0: A first (x), B (y). Round 1: B first (w), A (z).
	got := TeamDraft(a, b, 4, func(round int) bool { return round == 1 })
	want := []string{"x/0", "y/1", "w/1", "z/0"}
	for i, p := range got {
		if fmt.Sprintf("%s/%d", p.AdID, p.Team) != want[i] {
			t.Fatalf("pick %d: %s/%d, want %s (all %v)", i, p.AdID, p.Team, want[i], got)
		}
	}
	// Fewer ads than slots: stops when both lists run out.
	if got := TeamDraft(rank("x"), rank("x"), 3, func(int) bool { return false }); len(got) != 1 {
		t.Errorf("%v", got)
	}
}

// A/B assignment is sticky by user and follows the weights.
func TestAssignABIsStickyAndWeighted(t *testing.T) {
	l := New(Options{})
	e, err := experiment.Parse([]byte(`{"ab": {"salt": "s", "arms": [{"version": "v1", "weight": 20}, {"version": "v2", "weight": 80}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	d := Domain{Production: "v1", Exp: e, Healthy: func(string) bool { return true }}
	counts := map[string]int{}
	for u := range 20000 {
		user := fmt.Sprintf("u%d", u)
		a := l.Assign("feed", d, user, "r1")
		if b := l.Assign("feed", d, user, "r2"); b.Version != a.Version {
			t.Fatalf("user %s moved from %s to %s", user, a.Version, b.Version)
		}
		counts[a.Version]++
	}
	// Binomial(20000, 0.2): sd 57; allow 4 sd.
	if n := counts["v1"]; n < 4000-228 || n > 4000+228 {
		t.Errorf("v1 got %d of 20000 users, want about 4000", n)
	}
	// A version without a healthy instance falls back to production, and says so.
	healthy := d
	healthy.Healthy = func(v string) bool { return v == "v1" }
	for u := range 50 {
		user := fmt.Sprintf("u%d", u)
		planned := l.Assign("feed", d, user, "r").Version
		a := l.Assign("feed", healthy, user, "r")
		switch {
		case a.Version != "v1":
			t.Fatalf("%s served by %s", user, a.Version)
		case planned == "v2" && (a.Fallback == "" || a.Group != "fallback"):
			t.Fatalf("%s: no fallback reason: %+v", user, a)
		case planned == "v1" && a.Fallback != "":
			t.Fatalf("%s: fallback without cause: %+v", user, a)
		}
	}
}

// Thompson's allocation is exact (the probabilities stats computes, not
// draws in steps of 1/2000), and the document's minShare floors every arm,
// under every policy.
func TestAllocateExactWithFloor(t *testing.T) {
	n, c := []float64{1000, 1000, 1000}, []float64{100, 130, 60}
	exact := Allocate(&experiment.Bandit{Policy: experiment.Thompson}, n, c)
	if exact[2] <= 0 || exact[2] > 1e-6 || exact[1] < 0.97 {
		t.Errorf("Thompson allocation %v: the worst arm's share should be tiny but not 0, the best near 1", exact)
	}
	for _, policy := range []string{experiment.Thompson, experiment.UCB1, experiment.EpsilonGreedy} {
		got := Allocate(&experiment.Bandit{Policy: policy, Epsilon: 0.1, MinShare: 0.05}, n, c)
		var sum float64
		for _, p := range got {
			if p < 0.05-1e-12 {
				t.Errorf("%s: %v has an arm below the 0.05 floor", policy, got)
			}
			sum += p
		}
		if math.Abs(sum-1) > 1e-9 || got[1] < 0.8 {
			t.Errorf("%s: %v (sum %v)", policy, got, sum)
		}
	}
}

// Several treatments against one control: each verdict rests on the Holm-
// adjusted always-valid p-value, so a p that would pass alone does not
// when two others are tested with it.
func TestHolmVerdicts(t *testing.T) {
	tests := []TestResult{
		{Treatment: "b", Diff: 0.01, AlwaysValidPValue: 0.02},
		{Treatment: "c", Diff: -0.02, AlwaysValidPValue: 0.001},
		{Treatment: "d", Diff: 0.01, AlwaysValidPValue: 0.5},
	}
	holmVerdicts(tests, 0.05)
	// Sorted: 0.001 x3 = 0.003, 0.02 x2 = 0.04, 0.5 x1 = 0.5.
	want := []struct {
		p       float64
		verdict string
	}{{0.04, "treatment better"}, {0.003, "treatment worse"}, {0.5, "no detectable difference yet"}}
	for i, w := range want {
		if math.Abs(tests[i].HolmPValue-w.p) > 1e-12 || tests[i].Verdict != w.verdict {
			t.Errorf("%s: Holm p %v %q, want %v %q", tests[i].Treatment, tests[i].HolmPValue, tests[i].Verdict, w.p, w.verdict)
		}
	}
	// 0.03 passes alone, but not as the larger of two at 0.03.
	two := []TestResult{{Diff: 0.01, AlwaysValidPValue: 0.03}, {Diff: 0.01, AlwaysValidPValue: 0.03}}
	holmVerdicts(two, 0.05)
	if two[0].Verdict != "no detectable difference yet" || two[0].HolmPValue != 0.06 {
		t.Errorf("two tests at p 0.03: %+v", two)
	}
}
