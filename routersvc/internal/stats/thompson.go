package stats

import (
	"math"
	"slices"

	"gonum.org/v1/gonum/integrate/quad"
	"gonum.org/v1/gonum/stat/distuv"
)

// window is how many standard deviations from its mean an arm's density is
// integrated.
const window = 12

// ThompsonPrecision bounds the error of ThompsonProbabilities: each
// probability is within it of the exact integral (checked in the tests
// against the closed form for two arms and against the sum of all arms).
const ThompsonPrecision = 1e-9

// ThompsonProbabilities returns, for Beta(alpha[i], beta[i]) posteriors,
// the probability that each arm's draw is the largest: Thompson sampling's
// allocation, exactly rather than from a finite number of draws, so that
// logged propensities are the ones used.
//
// P_i = ∫ f_i(x) ∏_{j≠i} F_j(x) dx over [0, 1], by Gauss-Legendre
// quadrature (16 nodes) on intervals cut at every arm's mean ± t standard
// deviations (t up to 12), so that even sharp posteriors (millions of
// impressions) are integrated where their mass is.
func ThompsonProbabilities(alpha, beta []float64) []float64 {
	k := len(alpha)
	probs := make([]float64, k)
	if k == 0 {
		return probs
	}
	if k == 1 {
		probs[0] = 1
		return probs
	}
	dists := make([]distuv.Beta, k)
	lo, hi := make([]float64, k), make([]float64, k) // where each arm's mass is
	cuts := []float64{0, 1}
	for i := range dists {
		dists[i] = distuv.Beta{Alpha: alpha[i], Beta: beta[i]}
		mean, sd := dists[i].Mean(), dists[i].StdDev()
		lo[i], hi[i] = mean-window*sd, mean+window*sd
		for _, t := range []float64{0, 1, 2, 3, 4.5, 7, window} {
			for _, x := range []float64{mean - t*sd, mean + t*sd} {
				if x > 0 && x < 1 {
					cuts = append(cuts, x)
				}
			}
		}
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	const nodes = 16
	xs, ws := make([]float64, nodes), make([]float64, nodes)
	pdf, cdf := make([]float64, k), make([]float64, k)
	prefix, suffix := make([]float64, k+1), make([]float64, k+1)
	for c := 1; c < len(cuts); c++ {
		a, b := cuts[c-1], cuts[c]
		if b-a <= 0 {
			continue
		}
		quad.Legendre{}.FixedLocations(xs, ws, a, b)
		for n, x := range xs {
			for i := range dists {
				// Beyond the window an arm's density is below e^-72 of its
				// peak for a near-normal posterior (and small-count ones
				// are wide enough that the window covers [0, 1]).
				switch {
				case x < lo[i]:
					pdf[i], cdf[i] = 0, 0
				case x > hi[i]:
					pdf[i], cdf[i] = 0, 1
				default:
					pdf[i], cdf[i] = dists[i].Prob(x), dists[i].CDF(x)
				}
			}
			prefix[0], suffix[k] = 1, 1
			for i := range k {
				prefix[i+1] = prefix[i] * cdf[i]
			}
			for i := k - 1; i >= 0; i-- {
				suffix[i] = suffix[i+1] * cdf[i]
			}
			for i := range dists {
				if pdf[i] != 0 {
					probs[i] += ws[n] * pdf[i] * prefix[i] * suffix[i+1]
				}
			}
		}
	}
	// Quadrature leaves the sum a hair off 1; spread that evenly.
	var sum float64
	for _, p := range probs {
		sum += p
	}
	for i := range probs {
		probs[i] = math.Max(0, probs[i]/sum)
	}
	return probs
}

// Floor gives every arm at least min of the mass and shares the rest as
// probs do: min + (1 - k·min)·p_i. min must be within [0, 1/k].
func Floor(probs []float64, min float64) []float64 {
	if min <= 0 {
		return probs
	}
	out := make([]float64, len(probs))
	rest := 1 - float64(len(probs))*min
	for i, p := range probs {
		out[i] = min + rest*p
	}
	return out
}
