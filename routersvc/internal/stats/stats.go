// Package stats holds the statistics of adrank's experiments: a CTR test
// whose unit is the user (delta method), always-valid p-values (mSPRT),
// sample sizes, the sample-ratio-mismatch check, the sign test, and the
// ranking comparisons of shadow mode (top-k overlap, Kendall's tau, PSI).
package stats

import (
	"cmp"
	"math"
	"slices"

	"gonum.org/v1/gonum/stat/distuv"
)

var stdNormal = distuv.Normal{Mu: 0, Sigma: 1}

// Ratio holds user-level sums for a ratio metric such as CTR = clicks /
// impressions, where users (the unit of assignment) contribute several
// impressions each. Treating impressions as independent would understate the
// variance; the delta method on these sums does not.
type Ratio struct {
	Users float64 // users with at least one impression or click
	N     float64 // sum of impressions
	C     float64 // sum of clicks
	N2    float64 // sum over users of impressions squared
	C2    float64 // sum over users of clicks squared
	NC    float64 // sum over users of impressions x clicks
}

// Mean is C / N (the CTR), 0 without impressions.
func (r Ratio) Mean() float64 {
	if r.N == 0 {
		return 0
	}
	return r.C / r.N
}

// Var is the delta-method variance of Mean:
//
//	Var(C/N) ~ (s_c^2 - 2 R s_cn + R^2 s_n^2) / (m mu_n^2)
//
// with m users, R = C/N, mu_n = N/m and the per-user sample (co)variances s.
// It is NaN with fewer than 2 users.
func (r Ratio) Var() float64 {
	m := r.Users
	if m < 2 || r.N == 0 {
		return math.NaN()
	}
	R := r.C / r.N
	mun := r.N / m
	sc2 := (r.C2 - r.C*r.C/m) / (m - 1)
	sn2 := (r.N2 - r.N*r.N/m) / (m - 1)
	scn := (r.NC - r.C*r.N/m) / (m - 1)
	v := (sc2 - 2*R*scn + R*R*sn2) / (m * mun * mun)
	return math.Max(v, 0)
}

// Comparison is a two-sided test of treatment against control.
type Comparison struct {
	Control, Treatment float64 // means
	Diff               float64 // treatment - control
	SE                 float64
	Z                  float64
	P                  float64 // two-sided p-value, fixed horizon
	CILow, CIHigh      float64 // (1 - alpha) confidence interval of Diff
	RelLift            float64 // Diff / Control
}

// Compare tests the difference of two ratio means with a z-test on
// delta-method variances.
func Compare(control, treatment Ratio, alpha float64) Comparison {
	return CompareEstimates(Estimate{control.Mean(), control.Var()}, Estimate{treatment.Mean(), treatment.Var()}, alpha)
}

// CompareEstimates tests treatment against control with a z-test.
func CompareEstimates(control, treatment Estimate, alpha float64) Comparison {
	return CompareDifference(control.Value, Difference(control, treatment), alpha)
}

// CompareDifference is the z-test of an estimated difference d against a
// control whose value is base (for the relative lift).
func CompareDifference(base float64, d Estimate, alpha float64) Comparison {
	c := Comparison{Control: base, Treatment: base + d.Value, Diff: d.Value, SE: math.Sqrt(d.Var)}
	if c.Control > 0 {
		c.RelLift = c.Diff / c.Control
	}
	if !(c.SE > 0) {
		c.P, c.Z = math.NaN(), math.NaN()
		c.CILow, c.CIHigh = math.NaN(), math.NaN()
		return c
	}
	c.Z = c.Diff / c.SE
	c.P = 2 * stdNormal.Survival(math.Abs(c.Z))
	q := stdNormal.Quantile(1 - alpha/2)
	c.CILow, c.CIHigh = c.Diff-q*c.SE, c.Diff+q*c.SE
	return c
}

// MSPRTLambda is the mixture sequential probability ratio of Johari et al.
// ("Always valid inference", 2017) for an estimate diff with variance v,
// under a normal mixing distribution N(0, tau2) over the true difference:
//
//	Lambda = sqrt(v / (v + tau2)) exp(tau2 diff^2 / (2 v (v + tau2)))
//
// 1/Lambda is a p-value valid at every look; its running minimum stays valid.
func MSPRTLambda(diff, v, tau2 float64) float64 {
	if !(v > 0) || !(tau2 > 0) {
		return math.NaN()
	}
	return math.Sqrt(v/(v+tau2)) * math.Exp(tau2*diff*diff/(2*v*(v+tau2)))
}

// AlwaysValidP is min(1, 1/Lambda).
func AlwaysValidP(diff, v, tau2 float64) float64 {
	l := MSPRTLambda(diff, v, tau2)
	if math.IsNaN(l) {
		return math.NaN()
	}
	if math.IsInf(l, 1) {
		return 0
	}
	return math.Min(1, 1/l)
}

// DropAlwaysValidP is an always-valid p-value against a drop: for the null
// hypothesis that the true difference (treatment - control) is 0 or more,
// from an estimate diff with variance v. It is the mSPRT of AlwaysValidP
// with its normal mixture halved onto negative differences,
//
//	Lambda = 2 sqrt(v / (v + tau2)) exp(x^2 / 2) Phi(-x),  x = diff tau / sqrt(v (v + tau2)),
//
// still a mixture of likelihood ratios, so a martingale of mean 1 under a
// null difference of 0 (a supermartingale above 0), and min(1, 1/Lambda)
// stays valid at every look (Ville's inequality). It spends all of alpha on
// drops, so a guardrail that only ever rolls back on drops is twice as quick
// as the two-sided test at the same alpha.
func DropAlwaysValidP(diff, v, tau2 float64) float64 {
	if !(v > 0) || !(tau2 > 0) || math.IsNaN(diff) {
		return math.NaN()
	}
	x := diff * math.Sqrt(tau2/(v*(v+tau2)))
	if x > 30 { // Lambda < 2 / (x sqrt(2 pi)) < 1: no evidence of a drop
		return 1
	}
	l := 2 * math.Sqrt(v/(v+tau2)) * math.Exp(x*x/2) * stdNormal.CDF(-x)
	if math.IsInf(l, 1) {
		return 0
	}
	return math.Min(1, 1/l)
}

// MeanZeroAlwaysValidP is an always-valid p-value for the null that paired
// scores d (one per unit, such as an interleaved request's clicks for A
// minus B) have mean 0, from n units, the sum of d and the sum of d^2: the
// mSPRT of AlwaysValidP on their mean, mixing over true means of about
// delta standard deviations.
func MeanZeroAlwaysValidP(sum, sum2, n, delta float64) float64 {
	if n < 2 {
		return 1
	}
	mean := sum / n
	s2 := (sum2 - sum*sum/n) / (n - 1)
	p := AlwaysValidP(mean, s2/n, delta*delta*s2)
	if math.IsNaN(p) {
		return 1
	}
	return p
}

// SampleSize is the number of impressions per arm a two-sided test at alpha
// with the given power needs to detect a relative lift mde on a baseline
// rate p, inflated by the design effect (the ratio of the clustered to the
// binomial variance; 1 when impressions are independent):
//
//	n = (z_{1-alpha/2} + z_{power})^2 (p1 (1-p1) + p2 (1-p2)) / (p2 - p1)^2 x deff
func SampleSize(p, mde, alpha, power, deff float64) float64 {
	if !(p > 0 && p < 1) || !(mde != 0) {
		return math.NaN()
	}
	p2 := p * (1 + mde)
	za, zb := stdNormal.Quantile(1-alpha/2), stdNormal.Quantile(power)
	n := (za + zb) * (za + zb) * (p*(1-p) + p2*(1-p2)) / ((p2 - p) * (p2 - p))
	return math.Ceil(n * math.Max(deff, 1))
}

// MeanSampleSize is the number of observations a two-sided one-sample test
// at alpha with the given power needs to tell a mean mu from 0, when one
// observation has variance v (an interleaving experiment's per-request
// credit, say):
//
//	n = (z_{1-alpha/2} + z_{power})^2 v / mu^2
func MeanSampleSize(mu, v, alpha, power float64) float64 {
	if !(mu != 0) || !(v >= 0) {
		return math.NaN()
	}
	za, zb := stdNormal.Quantile(1-alpha/2), stdNormal.Quantile(power)
	return math.Ceil((za + zb) * (za + zb) * v / (mu * mu))
}

// SRM is the chi-square goodness-of-fit test of observed counts against the
// declared weights: a sample ratio mismatch when p is tiny.
func SRM(observed, weights []float64) (chi2, p float64) {
	var total, wsum float64
	for i := range observed {
		total += observed[i]
		wsum += weights[i]
	}
	if total == 0 || len(observed) < 2 {
		return 0, 1
	}
	for i, o := range observed {
		e := total * weights[i] / wsum
		chi2 += (o - e) * (o - e) / e
	}
	return chi2, distuv.ChiSquared{K: float64(len(observed) - 1)}.Survival(chi2)
}

// SignTest is the two-sided exact binomial test of wins against losses
// (ties left out) under p = 0.5.
func SignTest(wins, losses int) float64 {
	n := wins + losses
	if n == 0 {
		return 1
	}
	k := min(wins, losses)
	cdf := distuv.Binomial{N: float64(n), P: 0.5}.CDF(float64(k))
	return math.Min(1, 2*cdf)
}

// KendallTau is Kendall's tau-b between two score vectors of the same items.
func KendallTau(x, y []float64) float64 {
	var concordant, discordant, tiesX, tiesY float64
	for i := range x {
		for j := i + 1; j < len(x); j++ {
			dx, dy := x[i]-x[j], y[i]-y[j]
			switch {
			case dx == 0 && dy == 0:
			case dx == 0:
				tiesX++
			case dy == 0:
				tiesY++
			case (dx > 0) == (dy > 0):
				concordant++
			default:
				discordant++
			}
		}
	}
	d := math.Sqrt((concordant + discordant + tiesX) * (concordant + discordant + tiesY))
	if d == 0 {
		return math.NaN()
	}
	return (concordant - discordant) / d
}

// Spearman is the rank correlation of xs and ys (average ranks for ties);
// 0 when either is constant.
func Spearman(xs, ys []float64) float64 {
	rx, ry := ranks(xs), ranks(ys)
	n := float64(len(xs))
	mean := (n + 1) / 2
	var sxy, sxx, syy float64
	for i := range rx {
		dx, dy := rx[i]-mean, ry[i]-mean
		sxy += dx * dy
		sxx += dx * dx
		syy += dy * dy
	}
	if sxx == 0 || syy == 0 {
		return 0
	}
	return sxy / math.Sqrt(sxx*syy)
}

func ranks(v []float64) []float64 {
	idx := make([]int, len(v))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		switch {
		case v[a] < v[b]:
			return -1
		case v[a] > v[b]:
			return 1
		}
		return 0
	})
	r := make([]float64, len(v))
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && v[idx[j+1]] == v[idx[i]] {
			j++
		}
		avg := float64(i+j)/2 + 1
		for k := i; k <= j; k++ {
			r[idx[k]] = avg
		}
		i = j + 1
	}
	return r
}

// TopKOverlap is the share of the top k items by score a that are also in
// the top k by score b (ties broken by index).
func TopKOverlap(a, b []float64, k int) float64 {
	k = min(k, len(a))
	if k == 0 {
		return math.NaN()
	}
	ta, tb := topK(a, k), topK(b, k)
	in := map[int]bool{}
	for _, i := range ta {
		in[i] = true
	}
	n := 0
	for _, i := range tb {
		if in[i] {
			n++
		}
	}
	return float64(n) / float64(k)
}

func topK(s []float64, k int) []int {
	idx := make([]int, len(s))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(i, j int) int {
		switch {
		case s[i] > s[j]:
			return -1
		case s[i] < s[j]:
			return 1
		}
		return 0
	})
	return idx[:k]
}

// PSIBins are the edges of the score histograms PSI compares: pCTRs on a
// log scale from 1e-4 to 1, so that the low rates ads live at are resolved.
var PSIBins = []float64{0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0001}

// Bin returns the PSIBins bucket of a score.
func Bin(score float64) int {
	i, _ := slices.BinarySearch(PSIBins, score)
	if i < len(PSIBins) && PSIBins[i] == score {
		i++
	}
	return min(max(i-1, 0), len(PSIBins)-2)
}

// PSI is the population stability index of actual against expected
// histograms: sum (a - e) ln(a / e) over bins of shares, with empty bins
// smoothed to 1e-4 so that one empty bin does not make it infinite.
func PSI(expected, actual []float64) float64 {
	var te, ta float64
	for i := range expected {
		te += expected[i]
		ta += actual[i]
	}
	if te == 0 || ta == 0 {
		return math.NaN()
	}
	var psi float64
	for i := range expected {
		e := math.Max(expected[i]/te, 1e-4)
		a := math.Max(actual[i]/ta, 1e-4)
		psi += (a - e) * math.Log(a/e)
	}
	return psi
}

// Finite maps NaN and infinities to 0, for the wire (JSON has no NaN).
func Finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// Holm adjusts p-values for testing several hypotheses at once (Holm's
// step-down method): rejecting where the adjusted p is below alpha keeps
// the chance of any false rejection at alpha, under any dependence. Always-
// valid p-values stay always valid through it.
func Holm(ps []float64) []float64 {
	m := len(ps)
	order := make([]int, m)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(ps[a], ps[b]) })
	adj := make([]float64, m)
	running := 0.0
	for rank, i := range order {
		running = math.Max(running, math.Min(1, float64(m-rank)*ps[i]))
		adj[i] = running
	}
	return adj
}
