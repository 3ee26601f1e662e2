package stats

import (
	"math/rand/v2"
	"testing"
)

// Interleaving's two always-valid tests on the same requests: per request
// (which team got more clicks) and credit per click (by how many). When
// requests often get several clicks (a long list: Poisson(2) clicks, each
// the better team's with probability 0.53), credit per click keeps the
// margin and needs fewer requests; with at most one click a request, the
// two are the same test.
func TestCreditPerClickUsesTheMargin(t *testing.T) {
	const runs, cap = 200, 20_000
	rng := rand.New(rand.NewPCG(21, 22))
	var perClick, perRequest int // requests needed, summed over runs
	for range runs {
		var sum, sum2, wins, losses, n float64
		doneClick, doneReq := 0, 0
		for r := 1; r <= cap && (doneClick == 0 || doneReq == 0); r++ {
			k := 0 // Poisson(2), by multiplying uniforms until below exp(-2)
			for p := rng.Float64(); p > 0.1353352832366127; p *= rng.Float64() {
				k++
			}
			if k == 0 {
				continue
			}
			var d float64
			for range k {
				if rng.Float64() < 0.53 {
					d++
				} else {
					d--
				}
			}
			n++
			sum += d
			sum2 += d * d
			switch {
			case d > 0:
				wins++
			case d < 0:
				losses++
			}
			if r%100 != 0 {
				continue
			}
			if doneClick == 0 && MeanZeroAlwaysValidP(sum, sum2, n, 0.05) < 0.05 {
				doneClick = r
			}
			if doneReq == 0 && MeanZeroAlwaysValidP(wins-losses, wins+losses, n, 0.05) < 0.05 {
				doneReq = r
			}
		}
		if doneClick == 0 {
			doneClick = cap
		}
		if doneReq == 0 {
			doneReq = cap
		}
		perClick += doneClick
		perRequest += doneReq
	}
	t.Logf("mean requests to a verdict: credit per click %d, per request %d", perClick/runs, perRequest/runs)
	if float64(perClick) > 0.9*float64(perRequest) {
		t.Errorf("credit per click needed %d requests in all, per request %d", perClick, perRequest)
	}
}
