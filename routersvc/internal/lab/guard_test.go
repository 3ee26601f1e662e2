package lab

import (
	"math/rand/v2"
	"slices"
	"testing"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/adrank/adrank/routersvc/internal/stats"
)

// population is users who differ in how often they click (so outcomes are
// clustered by user, as real ones are), each with a history from before any
// experiment: the covariate CUPED uses.
type population struct {
	rng   *rand.Rand
	users []float64    // each user's click probability
	pre   []stats.Unit // each user's history
}

func newPopulation(seed uint64) *population {
	s := &population{rng: rand.New(rand.NewPCG(seed, 7))}
	for range 5000 {
		p := 0.02 + 0.3*s.rng.Float64()*s.rng.Float64() // mean 0.095
		var h stats.Unit
		for range s.rng.IntN(60) {
			h[stats.PreImps]++
			if s.rng.Float64() < p {
				h[stats.PreClicks]++
				h[stats.PreRevenue] += float64(200_000 + s.rng.IntN(800_000))
			}
		}
		s.users, s.pre = append(s.users, p), append(s.pre, h)
	}
	return s
}

// groups are an experiment's groups as the store keeps them.
type groups struct {
	units []map[int]stats.Unit
	sums  []stats.Sums
}

func newGroups(n int) *groups {
	g := &groups{units: make([]map[int]stats.Unit, n), sums: make([]stats.Sums, n)}
	for i := range g.units {
		g.units[i] = map[int]stats.Unit{}
	}
	return g
}

// serve serves requests from random users, each to its group, with 3
// slots; lift multiplies a group's click probability.
func (s *population) serve(g *groups, groupOf []int, lift []float64, requests int) {
	for range requests {
		u := s.rng.IntN(len(s.users))
		k := groupOf[u]
		p := s.users[u] * lift[k]
		old, seen := g.units[k][u]
		nu := old
		if !seen {
			nu[stats.PreImps], nu[stats.PreClicks], nu[stats.PreRevenue] = s.pre[u][stats.PreImps], s.pre[u][stats.PreClicks], s.pre[u][stats.PreRevenue]
		}
		for slot := range 3 {
			nu[stats.Imps]++
			if s.rng.Float64() < p*[]float64{1, 0.7, 0.49}[slot] {
				nu[stats.Clicks]++
				nu[stats.Revenue] += float64(200_000 + s.rng.IntN(800_000))
				if s.rng.Float64() < 0.1 {
					nu[stats.Conversions]++
				}
			}
		}
		g.units[k][u] = nu
		g.sums[k].Move(old, nu, !seen)
	}
}

// split assigns each user to one of k groups at random: a fresh salt.
func (s *population) split(k int) []int {
	out := make([]int, len(s.users))
	for i := range out {
		out[i] = s.rng.IntN(k)
	}
	return out
}

// canary returns after how many canary impressions a canary (group 1) was
// rolled back by Guard, the guardrails' own decision, called after every
// look as the lab does at every refresh (0: not within looks x perLook
// requests), and why; and whether the fixed-horizon one-sided z-test at
// alpha would have rolled it back at any of the looks until then.
//
// steps are the canary's shares, each for an equal part of the looks: as
// in the lab, a user's place is fixed (a uniform draw below the share puts
// them in the canary), so stepping up moves users from control to canary.
func (s *population) canary(lift, alpha float64, looks, perLook int, steps ...float64) (int, string, bool) {
	if len(steps) == 0 {
		steps = []float64{0.5}
	}
	g := newGroups(2)
	place := make([]float64, len(s.users))
	for i := range place {
		place[i] = s.rng.Float64()
	}
	split := make([]int, len(s.users))
	zAlpha := distuv.UnitNormal.Quantile(alpha)
	peeked := false
	for look := range looks {
		share := steps[look*len(steps)/looks]
		for i, p := range place {
			split[i] = 0
			if p < share {
				split[i] = 1
			}
		}
		s.serve(g, split, []float64{1, lift}, perLook)
		peeked = peeked || stats.Compare(g.sums[0].Ratio(), g.sums[1].Ratio(), alpha).Z < zAlpha
		if reason, _ := Guard(g.sums[0], g.sums[1], alpha, 0); reason != "" {
			return int(g.sums[1].S[stats.Imps]), reason, peeked
		}
	}
	return 0, "", peeked
}

// A healthy canary, checked at every one of 100 looks, is rolled back no
// more often than alpha (the issue allows alpha + 2 points; Binomial(200,
// 0.05) exceeds 14 with probability 0.08, so the bound is alpha + 2
// points = 14); one whose CTR is 20% lower is rolled back in at least 80%
// of runs. The fixed-horizon one-sided z-test the guardrail used before,
// looked at as often, is shown beside it.
func TestGuardrailsAreAnytimeValid(t *testing.T) {
	const runs, looks, perLook, alpha = 200, 100, 100, 0.05
	sim := newPopulation(1)
	healthy, peeking := 0, 0
	for range runs {
		n, reason, peeked := sim.canary(1, alpha, looks, perLook)
		if n > 0 {
			healthy++
			t.Logf("healthy canary rolled back after %d impressions: %s", n, reason)
		}
		if peeked {
			peeking++
		}
	}
	var took []int
	var reasons = map[string]int{}
	for range runs {
		if n, reason, _ := sim.canary(0.8, alpha, looks, perLook); n > 0 {
			took = append(took, n)
			reasons[reason[:3]]++
		}
	}
	slices.Sort(took)
	median := 0
	if len(took) > 0 {
		median = took[len(took)/2]
	}
	t.Logf("%d healthy canaries, %d looks of %d requests each: %d rolled back (%.1f%%), against %d (%.1f%%) by the fixed-horizon test looked at as often; 20%% lower CTR: %d of %d rolled back, after a median of %d canary impressions (by %v)",
		runs, looks, perLook, healthy, 100*float64(healthy)/runs, peeking, 100*float64(peeking)/runs, len(took), runs, median, reasons)
	if float64(healthy) > (alpha+0.02)*runs || peeking <= 2*healthy {
		t.Errorf("%d of %d healthy canaries rolled back", healthy, runs)
	}
	if float64(len(took)) < 0.8*runs {
		t.Errorf("%d of %d canaries 20%% worse rolled back", len(took), runs)
	}

	// Stepping up 10, 25, 50, 100% moves users from control to canary
	// mid-way: the guardrails must not mistake that for a drop (a
	// per-user sum would: moved users are counted for less time in the
	// canary).
	stepped := 0
	for range runs {
		if n, reason, _ := sim.canary(1, alpha, looks, perLook, 0.1, 0.25, 0.5, 1); n > 0 {
			stepped++
			t.Logf("healthy stepping canary rolled back after %d impressions: %s", n, reason)
		}
	}
	t.Logf("%d healthy canaries stepping 10, 25, 50, 100%%: %d rolled back", runs, stepped)
	if float64(stepped) > (alpha+0.02)*runs {
		t.Errorf("%d of %d healthy stepping canaries rolled back", stepped, runs)
	}
}

// A/A tests of every metric, CUPED included, through Test (what the report
// computes): each test's false-positive rate at alpha = 0.05 is within
// alpha +- 2 points over 2,000 experiments (the count is Binomial(2000,
// 0.05): sd 0.49 points, so 2 points is 4 sd), the always-valid p-value's is
// at most alpha, and CUPED removes variance on CTR and revenue per user.
func TestAAFalsePositivesByMetric(t *testing.T) {
	const runs, requests, alpha = 2000, 1500, 0.05
	pop := newPopulation(2)
	fixed, always := map[string]int{}, map[string]int{}
	reduction := map[string]float64{}
	for range runs {
		g := newGroups(2)
		pop.serve(g, pop.split(2), []float64{1, 1}, requests)
		for _, m := range abMetrics {
			tr := Test("a", "b", g.sums[0], g.sums[1], stats.NewCUPED(m.metric, m.covariate, g.sums...), alpha, 0.05, 0.8)
			if tr.PValue < alpha {
				fixed[m.name]++
			}
			if tr.AlwaysValidPValue < alpha {
				always[m.name]++
			}
			reduction[m.name] += tr.VarianceReduction / runs
		}
	}
	for _, m := range abMetrics {
		rate := float64(fixed[m.name]) / runs
		t.Logf("%s: fixed-horizon false positives %.1f%%, always-valid %.1f%%; CUPED removed %.0f%% of the variance",
			m.name, 100*rate, 100*float64(always[m.name])/runs, 100*reduction[m.name])
		if rate < alpha-0.02 || rate > alpha+0.02 || float64(always[m.name])/runs > alpha {
			t.Errorf("%s: false positives %d fixed, %d always-valid of %d", m.name, fixed[m.name], always[m.name], runs)
		}
	}
	if reduction["ctr"] < 0.02 || reduction["revenue_per_user"] < 0.02 {
		t.Errorf("CUPED removed too little: %v", reduction)
	}
}
