package stats

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/integrate/quad"
)

// clustered draws one user's impressions and clicks: users differ in how
// much they see and how often they click; pre is the same user's earlier
// period, whose clicks share the user's propensity.
func clustered(rng *rand.Rand, lift float64) Unit {
	p := 0.02 + 0.2*rng.Float64()*rng.Float64()
	var u Unit
	draw := func(nv, cv, rv Var, q float64, most int) {
		n := 1 + rng.IntN(most)
		u[nv] = float64(n)
		for range n {
			if rng.Float64() < q {
				u[cv]++
				u[rv] += float64(500 + rng.IntN(1000))
			}
		}
	}
	draw(Imps, Clicks, Revenue, math.Min(1, p*lift), 20)
	draw(PreImps, PreClicks, PreRevenue, p, 200) // a longer history
	return u
}

func sumsOf(units []Unit) Sums {
	var s Sums
	for _, u := range units {
		s.Move(Unit{}, u, true)
	}
	return s
}

// The generic delta method agrees with Ratio's, and Fields round-trip
// through the names the stores use (including earlier versions' names).
func TestSumsAgreeWithRatio(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	units := make([]Unit, 500)
	for i := range units {
		units[i] = clustered(rng, 1)
	}
	s := sumsOf(units)
	e := Metric{Num: Clicks, Den: Imps}.Estimate(s)
	r := s.Ratio()
	near(t, "CTR", e.Value, r.Mean(), 1e-15)
	near(t, "variance", e.Var, r.Var(), 1e-15)
	if back := SumsFromFields(s.Fields()); back != s {
		t.Errorf("fields do not round-trip")
	}
	old := SumsFromFields(map[string]float64{"Users": 3, "N": 5, "C": 4, "N2": 13, "C2": 6, "NC": 7})
	if old.Ratio() != (Ratio{Users: 3, N: 5, C: 4, N2: 13, C2: 6, NC: 7}) {
		t.Errorf("earlier names read as %+v", old.Ratio())
	}
	// A mean per user: the plain variance of the mean.
	rpu := PerUser(Revenue).Estimate(s)
	var sum, sum2 float64
	for _, u := range units {
		sum += u[Revenue]
		sum2 += u[Revenue] * u[Revenue]
	}
	m := float64(len(units))
	near(t, "revenue per user", rpu.Value, sum/m, 1e-9)
	near(t, "its variance", rpu.Var, (sum2-sum*sum/m)/(m-1)/m, 1e-6)
}

// CUPED: over many A/A pairs of groups, the adjusted difference is
// unbiased, its stated variance matches its spread, and it removes about
// the share of variance the covariate explains; with an uninformative
// covariate it removes nothing.
func TestCUPED(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const runs, users = 400, 400
	ctr := Metric{Num: Clicks, Den: Imps}
	pre := Metric{Num: PreClicks, Den: PreImps}
	var diffs, plainDiffs []float64
	var statedVar, statedPlain float64
	for range runs {
		var a, b []Unit
		for range users {
			a = append(a, clustered(rng, 1))
			b = append(b, clustered(rng, 1))
		}
		sa, sb := sumsOf(a), sumsOf(b)
		c := NewCUPED(ctr, pre, sa, sb)
		d := Difference(c.Estimate(sa), c.Estimate(sb))
		p := Difference(ctr.Estimate(sa), ctr.Estimate(sb))
		diffs, plainDiffs = append(diffs, d.Value), append(plainDiffs, p.Value)
		statedVar += d.Var / runs
		statedPlain += p.Var / runs
	}
	mean, v := meanVar(diffs)
	_, pv := meanVar(plainDiffs)
	t.Logf("A/A CUPED differences: mean %.2g, variance %.3g (stated %.3g); unadjusted variance %.3g (stated %.3g): %.0f%% removed",
		mean, v, statedVar, pv, statedPlain, 100*(1-v/pv))
	// The mean of 400 differences has sd sqrt(v/400): allow 4 sd.
	if math.Abs(mean) > 4*math.Sqrt(v/runs) {
		t.Errorf("adjusted difference biased: mean %g", mean)
	}
	// The sample variance of 400 draws is within 20% of the truth (sd 7%).
	if r := v / statedVar; r < 0.8 || r > 1.25 {
		t.Errorf("stated variance %g, observed %g", statedVar, v)
	}
	if v > 0.85*pv {
		t.Errorf("CUPED removed only %.0f%% of the variance", 100*(1-v/pv))
	}

	// A covariate that says nothing of the user.
	var a, b []Unit
	for range 2000 {
		ua, ub := clustered(rng, 1), clustered(rng, 1)
		ua[PreClicks], ub[PreClicks] = float64(rng.IntN(3)), float64(rng.IntN(3))
		a, b = append(a, ua), append(b, ub)
	}
	sa, sb := sumsOf(a), sumsOf(b)
	c := NewCUPED(ctr, pre, sa, sb)
	d, p := Difference(c.Estimate(sa), c.Estimate(sb)), Difference(ctr.Estimate(sa), ctr.Estimate(sb))
	if r := d.Var / p.Var; r < 0.97 || r > 1.001 {
		t.Errorf("an uninformative covariate changed the variance by a factor %g (theta %g)", r, c.Theta)
	}
}

func meanVar(xs []float64) (float64, float64) {
	var s, s2 float64
	for _, x := range xs {
		s += x
		s2 += x * x
	}
	n := float64(len(xs))
	return s / n, (s2 - s*s/n) / (n - 1)
}

// DropAlwaysValidP is the half-normal mixture's likelihood ratio (checked by
// quadrature), valid under repeated looks at a null difference of 0, and
// quicker to find a drop than the two-sided test at the same alpha.
func TestDropAlwaysValidP(t *testing.T) {
	for _, c := range []struct{ diff, v, tau2 float64 }{
		{-0.01, 1e-5, 1e-4}, {0.003, 1e-5, 1e-4}, {-0.002, 4e-6, 4e-6}, {0, 1e-4, 1e-4},
	} {
		// Lambda = int_{-inf}^0 LR(theta) 2 phi(theta / tau) / tau dtheta.
		tau := math.Sqrt(c.tau2)
		f := func(th float64) float64 {
			return math.Exp((th*c.diff-th*th/2)/c.v) * 2 * math.Exp(-th*th/(2*c.tau2)) / (tau * math.Sqrt(2*math.Pi))
		}
		lambda := quad.Fixed(f, -12*tau, 0, 2000, nil, 0)
		near(t, "1/Lambda", DropAlwaysValidP(c.diff, c.v, c.tau2), math.Min(1, 1/lambda), 1e-6)
	}
	if p := DropAlwaysValidP(0.5, 1e-6, 1e-4); p != 1 {
		t.Errorf("a large rise: p %g, want 1", p)
	}
	if p := DropAlwaysValidP(-0.5, 1e-6, 1e-4); p != 0 {
		t.Errorf("a large drop: p %g, want 0", p)
	}

	// 1,000 null sequences of 100 looks: P(any p < alpha) <= alpha.
	rng := rand.New(rand.NewPCG(11, 12))
	const runs, looks, perLook, alpha = 1000, 100, 100, 0.05
	var null, drop, twoSidedDrop int
	var dropLooks, twoSidedLooks int // looks until found, summed over drop runs (looks when never)
	for run := range runs {
		lift := 1.0
		if run%2 == 1 { // every other run a true drop of 20%
			lift = 0.8
		}
		var na, ca, nb, cb float64
		rejected, twoSided := false, false
		for look := range looks {
			for range perLook {
				na++
				nb++
				if rng.Float64() < 0.1 {
					ca++
				}
				if rng.Float64() < 0.1*lift {
					cb++
				}
			}
			pa, pb := ca/na, cb/nb
			v := pa*(1-pa)/na + pb*(1-pb)/nb
			tau2 := 0.2 * pa * 0.2 * pa
			if !rejected && DropAlwaysValidP(pb-pa, v, tau2) < alpha {
				rejected = true
				if lift < 1 {
					dropLooks += look + 1
				}
			}
			if !twoSided && pb < pa && AlwaysValidP(pb-pa, v, tau2) < alpha {
				twoSided = true
				twoSidedLooks += look + 1
			}
		}
		if lift < 1 && !rejected {
			dropLooks += looks
		}
		if lift < 1 && !twoSided {
			twoSidedLooks += looks
		}
		switch {
		case lift == 1 && rejected:
			null++
		case lift < 1 && rejected:
			drop++
		}
		if lift < 1 && twoSided {
			twoSidedDrop++
		}
	}
	t.Logf("over %d looks: null rejected %d/%d; a 20%% drop found %d/%d after %.1f looks on average (two-sided at the same alpha: %d after %.1f)",
		looks, null, runs/2, drop, runs/2, float64(dropLooks)/(runs/2), twoSidedDrop, float64(twoSidedLooks)/(runs/2))
	// null ~ Binomial(500, <= 0.05): mean 25, sd 4.9; allow 3 sd.
	if null > 25+15 {
		t.Errorf("null rejected %d of %d", null, runs/2)
	}
	if drop < runs/2*8/10 || float64(dropLooks) > 0.95*float64(twoSidedLooks) {
		t.Errorf("drops found %d of %d after %d looks in all (two-sided: %d after %d)", drop, runs/2, dropLooks, twoSidedDrop, twoSidedLooks)
	}
}
