package stats

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Reference values from scipy 1.10.1 (stats.chisquare, stats.binomtest,
// stats.kendalltau, stats.norm), computed when these tests were written.

func near(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol {
		t.Errorf("%s = %.12g, want %.12g (tolerance %g)", what, got, want, tol)
	}
}

// With one impression per user the delta method is the plain two-proportion
// z-test with sample variances: p(1-p) m/(m-1) / m.
func TestCompareOneImpressionPerUser(t *testing.T) {
	bern := func(m, clicks float64) Ratio { return Ratio{Users: m, N: m, C: clicks, N2: m, C2: clicks, NC: clicks} }
	c := Compare(bern(1000, 100), bern(1000, 130), 0.05)
	near(t, "diff", c.Diff, 0.03, 1e-12)
	near(t, "z", c.Z, 2.1040159953562423, 1e-9)
	near(t, "p", c.P, 0.03537705174766031, 1e-9)
	near(t, "relative lift", c.RelLift, 0.3, 1e-12)
	se := math.Sqrt(9.009009009009009e-05 + 0.0001132132132132132)
	near(t, "ci low", c.CILow, 0.03-1.959963984540054*se, 1e-9)
	near(t, "ci high", c.CIHigh, 0.03+1.959963984540054*se, 1e-9)
}

// With several impressions per user, the delta-method variance matches the
// variance of the CTR across bootstrap resamples of users.
func TestDeltaMethodMatchesTheBootstrap(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	type user struct{ n, c float64 }
	users := make([]user, 2000)
	for i := range users {
		n := float64(1 + rng.IntN(20))
		p := 0.02 + 0.2*rng.Float64()*rng.Float64() // users differ: clustering
		var c float64
		for range int(n) {
			if rng.Float64() < p {
				c++
			}
		}
		users[i] = user{n, c}
	}
	var r Ratio
	for _, u := range users {
		r.Users++
		r.N += u.n
		r.C += u.c
		r.N2 += u.n * u.n
		r.C2 += u.c * u.c
		r.NC += u.n * u.c
	}
	var sum, sum2 float64
	const B = 2000
	for range B {
		var n, c float64
		for range users {
			u := users[rng.IntN(len(users))]
			n += u.n
			c += u.c
		}
		sum += c / n
		sum2 += (c / n) * (c / n)
	}
	boot := sum2/B - (sum/B)*(sum/B)
	// The bootstrap variance itself is uncertain by about sqrt(2/B) = 3%.
	if ratio := r.Var() / boot; ratio < 0.9 || ratio > 1.1 {
		t.Errorf("delta-method variance %.3g, bootstrap %.3g (ratio %.3f)", r.Var(), boot, ratio)
	}
	// The naive binomial variance understates it here.
	naive := r.Mean() * (1 - r.Mean()) / r.N
	if r.Var() < 1.2*naive {
		t.Errorf("clustered variance %.3g not above the naive %.3g", r.Var(), naive)
	}
}

func TestSRM(t *testing.T) {
	chi2, p := SRM([]float64{5100, 4900}, []float64{50, 50})
	near(t, "chi2", chi2, 4, 1e-12)
	near(t, "p", p, 0.04550026389635857, 1e-12)
	chi2, p = SRM([]float64{3300, 3400, 3300}, []float64{1, 2, 1})
	near(t, "chi2 (3 arms)", chi2, 1024, 1e-9)
	if p > 1e-200 {
		t.Errorf("p = %g, want about 4.4e-223", p)
	}
}

func TestSignTest(t *testing.T) {
	near(t, "60 of 100", SignTest(60, 40), 0.05688793364098088, 1e-12)
	near(t, "3 of 20", SignTest(3, 17), 0.0025768280029296875, 1e-12)
	near(t, "symmetric", SignTest(17, 3), 0.0025768280029296875, 1e-12)
	near(t, "none", SignTest(0, 0), 1, 0)
}

func TestKendallTau(t *testing.T) {
	near(t, "no ties", KendallTau([]float64{1, 2, 3, 4, 5}, []float64{1, 3, 2, 5, 4}), 0.6, 1e-12)
	near(t, "ties (tau-b)", KendallTau([]float64{1, 1, 2, 3}, []float64{1, 2, 2, 3}), 0.8, 1e-12)
	near(t, "reversed", KendallTau([]float64{1, 2, 3}, []float64{3, 2, 1}), -1, 1e-12)
}

func TestSampleSize(t *testing.T) {
	near(t, "n", SampleSize(0.05, 0.1, 0.05, 0.8, 1), math.Ceil(31230.692462975057), 0)
	near(t, "design effect", SampleSize(0.05, 0.1, 0.05, 0.8, 2), math.Ceil(2*31230.692462975057), 0)
	// (1.959964 + 0.841621)^2 = 7.848879: a mean of 0.1 at variance 1.
	near(t, "mean", MeanSampleSize(0.1, 1, 0.05, 0.8), 785, 0)
	near(t, "negative mean", MeanSampleSize(-0.1, 1, 0.05, 0.8), 785, 0)
	if n := MeanSampleSize(0, 1, 0.05, 0.8); !math.IsNaN(n) {
		t.Errorf("a mean of 0 needs %v observations, want NaN", n)
	}
}

func TestTopKAndPSI(t *testing.T) {
	near(t, "overlap", TopKOverlap([]float64{0.9, 0.8, 0.1, 0.2}, []float64{0.9, 0.1, 0.8, 0.2}, 2), 0.5, 0)
	near(t, "same", PSI([]float64{1, 2, 3}, []float64{2, 4, 6}), 0, 1e-12)
	// Shares (0.5, 0.5) vs (0.9, 0.1): 0.4 ln(1.8) + (-0.4) ln(0.2) = 0.87889...
	near(t, "shift", PSI([]float64{5, 5}, []float64{9, 1}), 0.4*math.Log(1.8)-0.4*math.Log(0.2), 1e-12)
	if b := Bin(0.0005); b != 0 {
		t.Errorf("Bin(0.0005) = %d", b)
	}
	if b := Bin(0.001); b != 1 {
		t.Errorf("Bin(0.001) = %d", b)
	}
	if b := Bin(1); b != len(PSIBins)-2 {
		t.Errorf("Bin(1) = %d", b)
	}
}

// Always-valid p-values: under no difference, the chance that the running
// minimum ever falls below alpha over many looks stays at most alpha, while
// peeking at the fixed-horizon p-value would reject far more often.
func TestAlwaysValidPUnderTheNull(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	const runs, looks, perLook, alpha = 1000, 40, 200, 0.05
	const p = 0.1
	var avFalse, peekFalse int
	for range runs {
		var na, ca, nb, cb float64
		avMin, peek := 1.0, false
		for range looks {
			for range perLook {
				na++
				nb++
				if rng.Float64() < p {
					ca++
				}
				if rng.Float64() < p {
					cb++
				}
			}
			pa, pb := ca/na, cb/nb
			v := pa*(1-pa)/na + pb*(1-pb)/nb
			avMin = math.Min(avMin, AlwaysValidP(pb-pa, v, 0.01*0.01))
			if 2*stdNormal.Survival(math.Abs(pb-pa)/math.Sqrt(v)) < alpha {
				peek = true
			}
		}
		if avMin < alpha {
			avFalse++
		}
		if peek {
			peekFalse++
		}
	}
	// avFalse ~ Binomial(1000, <= 0.05): sd about 7; allow 3 sd over alpha.
	if avFalse > runs*alpha+21 {
		t.Errorf("always-valid p rejected %d of %d null runs, want <= %d", avFalse, runs, int(runs*alpha))
	}
	if peekFalse < 2*avFalse || peekFalse < runs*alpha*2 {
		t.Errorf("peeking rejected only %d (always-valid %d): the test cannot tell them apart", peekFalse, avFalse)
	}
	t.Logf("false positives over %d looks: always-valid %d/%d, peeking at fixed-horizon p %d/%d", looks, avFalse, runs, peekFalse, runs)

	// And it does find a real difference.
	if p := AlwaysValidP(0.02, 0.004*0.004, 0.01*0.01); p > 0.01 {
		t.Errorf("a 5-sigma difference has always-valid p %g", p)
	}
}

func TestSpearman(t *testing.T) {
	tests := []struct {
		x, y []float64
		want float64
	}{
		{[]float64{1, 2, 3, 4}, []float64{10, 20, 30, 40}, 1},
		{[]float64{1, 2, 3, 4}, []float64{4, 3, 2, 1}, -1},
		{[]float64{1, 2, 3}, []float64{5, 5, 5}, 0},
		// ranks (1,2,3,4,5) against (2,1,4,3,5): 1 - 6*4/(5*24) = 0.8
		{[]float64{1, 2, 3, 4, 5}, []float64{0.2, 0.1, 0.4, 0.3, 0.5}, 0.8},
		// ties take average ranks: (1.5,1.5,3) against (1,2,3): 0.866
		{[]float64{1, 1, 2}, []float64{1, 2, 3}, math.Sqrt(3) / 2},
	}
	for _, tc := range tests {
		if got := Spearman(tc.x, tc.y); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("Spearman(%v, %v) = %v, want %v", tc.x, tc.y, got, tc.want)
		}
	}
}

func TestHolm(t *testing.T) {
	for _, tt := range []struct{ ps, want []float64 }{
		// Sorted 0.005, 0.01, 0.03, 0.04: times 4, 3, 2, 1, then running max.
		{[]float64{0.01, 0.04, 0.03, 0.005}, []float64{0.03, 0.06, 0.06, 0.02}},
		{[]float64{0.2}, []float64{0.2}},
		{[]float64{0.6, 0.9}, []float64{1, 1}},
		{nil, []float64{}},
	} {
		got := Holm(tt.ps)
		if len(got) != len(tt.want) {
			t.Fatalf("Holm(%v) = %v", tt.ps, got)
		}
		for i := range got {
			if math.Abs(got[i]-tt.want[i]) > 1e-12 {
				t.Errorf("Holm(%v) = %v, want %v", tt.ps, got, tt.want)
				break
			}
		}
	}
}
