package lab

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/adrank/adrank/platform/experiment"
)

// regret plays the setting of Chapelle & Li ("An empirical evaluation of
// Thompson sampling", 2011, section 4): K Bernoulli arms, the best with mean
// 0.5 and the others 0.5 - eps, and feedback delayed: the policy sees the
// rewards only every delay steps, in a batch, as a router sees clicks only
// at its next refresh. It returns the cumulative regret after steps.
//
// UCB1 and epsilon-greedy draw each step from Allocate, the lab's own
// allocation, frozen between updates. Thompson sampling draws each step from
// the posteriors frozen between updates: the same distribution as drawing
// from Allocate's exact allocation (stats tests check it to 1e-9), at a
// fraction of the cost, so that a million steps take seconds.
func regret(policy string, k int, eps float64, steps, delay int, seed uint64) float64 {
	rng := rand.New(rand.NewPCG(seed, 99))
	mu := make([]float64, k)
	for i := range mu {
		mu[i] = 0.5 - eps
	}
	best := rng.IntN(k)
	mu[best] = 0.5
	n, c := make([]float64, k), make([]float64, k)         // what the policy has seen
	pendN, pendC := make([]float64, k), make([]float64, k) // rewards not yet delivered
	b := &experiment.Bandit{Policy: policy, Epsilon: 0.1}
	var probs []float64
	var betas []distuv.Beta
	var total float64
	for t := range steps {
		if t%delay == 0 {
			for i := range n {
				n[i] += pendN[i]
				c[i] += pendC[i]
				pendN[i], pendC[i] = 0, 0
			}
			if policy == experiment.Thompson {
				betas = betas[:0]
				for i := range n {
					betas = append(betas, distuv.Beta{Alpha: 1 + c[i], Beta: 1 + n[i] - c[i], Src: rng})
				}
			} else {
				probs = Allocate(b, n, c)
			}
		}
		arm := 0
		if policy == experiment.Thompson {
			top := -1.0
			for i, d := range betas {
				if x := d.Rand(); x > top {
					arm, top = i, x
				}
			}
		} else {
			u := rng.Float64()
			for arm = 0; arm < k-1 && u >= probs[arm]; arm++ {
				u -= probs[arm]
			}
		}
		pendN[arm]++
		if rng.Float64() < mu[arm] {
			pendC[arm]++
		}
		total += mu[best] - mu[arm]
	}
	return total
}

var regretPolicies = []string{experiment.Thompson, experiment.UCB1, experiment.EpsilonGreedy}

// With delayed, batched feedback, Thompson sampling's regret is well below
// UCB1's (whose batches all go to one arm) and epsilon-greedy's (which
// explores a tenth of the time for ever), as Chapelle & Li found. Means of
// 10 seeds of 20,000 steps, 10 arms, eps 0.1, feedback every 100 steps.
func TestThompsonHasTheLeastRegret(t *testing.T) {
	mean := map[string]float64{}
	for _, p := range regretPolicies {
		for seed := range 10 {
			mean[p] += regret(p, 10, 0.1, 20_000, 100, uint64(seed)) / 10
		}
	}
	t.Logf("regret after 20,000 steps: %v", mean)
	if mean[experiment.Thompson] >= 0.8*mean[experiment.UCB1] || mean[experiment.Thompson] >= 0.8*mean[experiment.EpsilonGreedy] {
		t.Errorf("Thompson sampling's regret %v is not well below the others'", mean)
	}
}

// BenchmarkRegret is the regret table of `make sim` (docs/simulations.md):
// run with -benchtime 1x. It measures regret, not speed.
func BenchmarkRegret(b *testing.B) {
	const seeds = 5
	var out strings.Builder
	fmt.Fprintf(&out, "\nregret (mean of %d seeds): K arms, the best 0.5 and the others 0.5 - eps, feedback every delay steps\n", seeds)
	fmt.Fprintf(&out, "%-4s %-9s %-5s %-6s %12s %12s %15s\n", "K", "steps", "eps", "delay", "thompson", "ucb1", "epsilon_greedy")
	for range b.N {
		for _, k := range []int{10, 100} {
			steps := 1_000_000
			if k == 100 {
				steps = 100_000 // a hundred posterior draws a step
			}
			for _, eps := range []float64{0.1, 0.02} {
				for _, delay := range []int{10, 100, 1000} {
					fmt.Fprintf(&out, "%-4d %-9d %-5g %-6d", k, steps, eps, delay)
					for _, p := range regretPolicies {
						var r float64
						for seed := range seeds {
							r += regret(p, k, eps, steps, delay, uint64(seed)) / seeds
						}
						fmt.Fprintf(&out, " %12.0f", r)
					}
					out.WriteString("\n")
				}
			}
		}
	}
	b.Log(out.String())
}
