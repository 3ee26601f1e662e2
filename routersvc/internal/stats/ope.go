package stats

import "math"

// Logged is one logged decision for off-policy evaluation: the reward the
// logged action got, the probability the logging policy gave it, whether
// the evaluated policy would have taken the same action, and a reward
// model's predictions for the evaluated policy's action and the logged one.
type Logged struct {
	Reward, Propensity float64
	Match              bool
	QTarget, QLogged   float64
}

// Interval is an estimate with its confidence interval.
type Interval struct {
	Value, Low, High float64
}

// OPEEstimates are the off-policy estimates of the evaluated policy's mean
// reward, each with a (1 - alpha) interval from the normal approximation:
//
//   - IPS: the mean of w r, w = [match] / propensity (unbiased);
//   - SNIPS: sum w r / sum w (self-normalised: a little bias, less
//     variance; delta-method interval);
//   - DR: the mean of q(target) + w (r - q(logged)) (doubly robust: unbiased
//     when the propensities are right, whatever the reward model, and of
//     less variance when the model is good).
//
// ESS is the effective sample size (sum w)^2 / sum w^2, and MatchRate the
// share of decisions the evaluated policy agrees with.
type OPEEstimates struct {
	N, MatchRate, ESS float64
	IPS, SNIPS, DR    Interval
}

// OPE estimates from logged decisions.
func OPE(logs []Logged, alpha float64) OPEEstimates {
	n := float64(len(logs))
	out := OPEEstimates{N: n}
	if n < 2 {
		nan := Interval{math.NaN(), math.NaN(), math.NaN()}
		out.IPS, out.SNIPS, out.DR = nan, nan, nan
		return out
	}
	z := stdNormal.Quantile(1 - alpha/2)
	ips, dr := make([]float64, len(logs)), make([]float64, len(logs))
	var sw, sw2, swr, matches float64
	for i, l := range logs {
		var w float64
		if l.Match && l.Propensity > 0 {
			w = 1 / l.Propensity
			matches++
		}
		ips[i] = w * l.Reward
		dr[i] = l.QTarget + w*(l.Reward-l.QLogged)
		sw += w
		sw2 += w * w
		swr += w * l.Reward
	}
	out.MatchRate = matches / n
	if sw2 > 0 {
		out.ESS = sw * sw / sw2
	}
	out.IPS = meanInterval(ips, z)
	out.DR = meanInterval(dr, z)
	if sw > 0 {
		v := swr / sw
		// Delta method: Var(sum w r / sum w) ~ sum (w (r - v))^2 / (sum w)^2.
		var s2 float64
		for _, l := range logs {
			if l.Match && l.Propensity > 0 {
				d := (l.Reward - v) / l.Propensity
				s2 += d * d
			}
		}
		se := math.Sqrt(s2) / sw
		out.SNIPS = Interval{v, v - z*se, v + z*se}
	} else {
		out.SNIPS = Interval{math.NaN(), math.NaN(), math.NaN()}
	}
	return out
}

func meanInterval(xs []float64, z float64) Interval {
	m, v := 0.0, 0.0
	for _, x := range xs {
		m += x
	}
	n := float64(len(xs))
	m /= n
	for _, x := range xs {
		v += (x - m) * (x - m)
	}
	se := math.Sqrt(v / (n - 1) / n)
	return Interval{m, m - z*se, m + z*se}
}
