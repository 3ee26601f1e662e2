package stats

import (
	"math/rand/v2"
	"testing"
)

// A synthetic logging policy: K actions, each with its own reward rate;
// the logger takes action 0 with probability 1 - eps + eps/K and each
// other with eps/K; the target policy always takes action 1. Over 400
// seeds the 95% intervals of IPS, SNIPS and DR cover the target's true
// value in about 95% of them (at least 90%), and DR, with a reward model
// that is right on average, is the tightest.
func TestOPECoverage(t *testing.T) {
	const k, eps, n, seeds = 5, 0.3, 3000, 400
	rates := []float64{0.10, 0.14, 0.06, 0.08, 0.12}
	truth := rates[1]
	covered := map[string]int{}
	width := map[string]float64{}
	for seed := range seeds {
		rng := rand.New(rand.NewPCG(uint64(seed), 17))
		logs := make([]Logged, n)
		for i := range logs {
			a := 0
			if rng.Float64() < eps {
				a = rng.IntN(k)
			}
			p := eps / k
			if a == 0 {
				p += 1 - eps
			}
			r := 0.0
			if rng.Float64() < rates[a] {
				r = 1
			}
			// A reward model off by up to 30% either way, per decision.
			noisy := func(x float64) float64 { return x * (0.7 + 0.6*rng.Float64()) }
			logs[i] = Logged{Reward: r, Propensity: p, Match: a == 1, QTarget: noisy(rates[1]), QLogged: noisy(rates[a])}
		}
		e := OPE(logs, 0.05)
		for name, iv := range map[string]Interval{"ips": e.IPS, "snips": e.SNIPS, "dr": e.DR} {
			if iv.Low <= truth && truth <= iv.High {
				covered[name]++
			}
			width[name] += (iv.High - iv.Low) / seeds
		}
	}
	t.Logf("coverage of %d seeds: %v; mean interval widths %v", seeds, covered, width)
	for _, name := range []string{"ips", "snips", "dr"} {
		if covered[name] < seeds*90/100 {
			t.Errorf("%s covers the truth in %d of %d seeds", name, covered[name], seeds)
		}
	}
	if width["dr"] >= width["ips"] {
		t.Errorf("DR is no tighter than IPS: %v", width)
	}
}
