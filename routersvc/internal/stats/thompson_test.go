package stats

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mathext"
	"gonum.org/v1/gonum/stat/distuv"
)

// pBBeatsA is P(X_B > X_A) for Beta(aA, bA) and Beta(aB, bB) with integer
// aB, in closed form (Evan Miller, "Formulas for Bayesian A/B testing").
func pBBeatsA(aA, bA, aB, bB float64) float64 {
	var total float64
	for i := 0.0; i < aB; i++ {
		total += math.Exp(mathext.Lbeta(aA+i, bA+bB) - math.Log(bB+i) - mathext.Lbeta(1+i, bB) - mathext.Lbeta(aA, bA))
	}
	return total
}

func TestThompsonTwoArmsClosedForm(t *testing.T) {
	for _, tt := range []struct{ nA, cA, nB, cB float64 }{
		{0, 0, 0, 0}, {10, 1, 10, 2}, {100, 7, 120, 15}, {1000, 31, 1000, 33}, {5000, 400, 200, 30}, {3, 3, 3, 0},
	} {
		aA, bA, aB, bB := 1+tt.cA, 1+tt.nA-tt.cA, 1+tt.cB, 1+tt.nB-tt.cB
		got := ThompsonProbabilities([]float64{aA, aB}, []float64{bA, bB})
		want := pBBeatsA(aA, bA, aB, bB)
		if math.Abs(got[1]-want) > ThompsonPrecision || math.Abs(got[0]+got[1]-1) > 1e-12 {
			t.Errorf("%+v: P(B best) %.12f, closed form %.12f (diff %.2g)", tt, got[1], want, got[1]-want)
		}
	}
}

// Three and more arms against a million joint draws: within 5 standard
// errors (a false failure about once in 3.5 million runs per arm).
func TestThompsonManyArmsMonteCarlo(t *testing.T) {
	alpha := []float64{1 + 30, 1 + 40, 1 + 35, 1 + 5}
	beta := []float64{1 + 970, 1 + 960, 1 + 965, 1 + 95}
	got := ThompsonProbabilities(alpha, beta)
	rng := rand.New(rand.NewPCG(7, 11))
	dists := make([]distuv.Beta, len(alpha))
	for i := range dists {
		dists[i] = distuv.Beta{Alpha: alpha[i], Beta: beta[i], Src: rng}
	}
	const draws = 1_000_000
	counts := make([]float64, len(alpha))
	for range draws {
		best, bestV := 0, -1.0
		for i := range dists {
			if v := dists[i].Rand(); v > bestV {
				best, bestV = i, v
			}
		}
		counts[best]++
	}
	for i := range got {
		p := counts[i] / draws
		se := math.Sqrt(math.Max(p*(1-p), 1e-6) / draws)
		if math.Abs(got[i]-p) > 5*se {
			t.Errorf("arm %d: exact %.5f, a million draws %.5f (se %.5f)", i, got[i], p, se)
		}
	}
}

// Sharp posteriors (millions of impressions) and lopsided ones: finite,
// summing to 1, and ordered as the means are.
func TestThompsonSharpPosteriors(t *testing.T) {
	for _, tt := range []struct{ alpha, beta []float64 }{
		{[]float64{1 + 50_000, 1 + 50_400}, []float64{1 + 950_000, 1 + 949_600}},
		{[]float64{1 + 5e6, 1 + 5.001e6, 1 + 4.9e6}, []float64{1 + 95e6, 1 + 94.999e6, 1 + 95.1e6}},
		{[]float64{1, 1 + 900}, []float64{1 + 1000, 1 + 100}},
	} {
		got := ThompsonProbabilities(tt.alpha, tt.beta)
		var sum float64
		for _, p := range got {
			if math.IsNaN(p) || p < 0 || p > 1 {
				t.Fatalf("%v: %v", tt, got)
			}
			sum += p
		}
		if math.Abs(sum-1) > 1e-12 || got[1] <= got[0] {
			t.Errorf("%v: %v (sum %v)", tt, got, sum)
		}
		// Two arms: against the normal approximation, excellent here.
		if len(got) == 2 && tt.alpha[0] > 1000 {
			m0, m1 := distuv.Beta{Alpha: tt.alpha[0], Beta: tt.beta[0]}, distuv.Beta{Alpha: tt.alpha[1], Beta: tt.beta[1]}
			z := (m1.Mean() - m0.Mean()) / math.Hypot(m0.StdDev(), m1.StdDev())
			if want := distuv.UnitNormal.CDF(z); math.Abs(got[1]-want) > 1e-3 {
				t.Errorf("%v: P(arm 1 best) %.6f, normal approximation %.6f", tt, got[1], want)
			}
		}
	}
}

func TestFloor(t *testing.T) {
	got := Floor([]float64{1, 0, 0}, 0.05)
	want := []float64{0.9, 0.05, 0.05}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-12 {
			t.Fatalf("Floor = %v, want %v", got, want)
		}
	}
}
