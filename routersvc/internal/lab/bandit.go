package lab

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/adrank/adrank/platform/experiment"
)

// thompsonDraws is how many posterior draws estimate Thompson sampling's
// allocation (its propensities).
const thompsonDraws = 2000

type banditState struct {
	id     string
	probs  []float64
	n, c   []float64
	policy string
}

// banditAllocation is the current probability of each arm (uniform until
// the first refresh).
func (l *Lab) banditAllocation(domain string, e *experiment.Experiment) []float64 {
	l.mu.RLock()
	st := l.bandits[domain]
	l.mu.RUnlock()
	if st != nil && st.id == e.ID() {
		return st.probs
	}
	k := len(e.Bandit.Versions)
	probs := make([]float64, k)
	for i := range probs {
		probs[i] = 1 / float64(k)
	}
	return probs
}

func (l *Lab) refreshBandit(ctx context.Context, domain string, d Domain) {
	e := d.Exp
	m, err := l.o.Store.Counters(ctx, banditKey(domain, e.ID()))
	if err != nil {
		l.o.Log.Warn("bandit refresh failed", "domain", domain, "error", err)
		return
	}
	k := len(e.Bandit.Versions)
	n, c := make([]float64, k), make([]float64, k)
	for i, v := range e.Bandit.Versions {
		n[i], c[i] = m[v+".n"], math.Min(m[v+".c"], m[v+".n"])
	}
	st := &banditState{id: e.ID(), n: n, c: c, policy: e.Bandit.Policy, probs: Allocate(e.Bandit, n, c)}
	l.mu.Lock()
	l.bandits[domain] = st
	l.mu.Unlock()
}

// Allocate returns each arm's probability under the bandit's policy, given
// impressions n and clicks c per arm.
//
//   - thompson: the probability that the arm's Beta(1 + c, 1 + n - c)
//     posterior draw is the largest, estimated from 2000 joint draws. The
//     draws are seeded by the counts, so every replica with the same counts
//     computes the same allocation.
//   - ucb1: all traffic to the arm with the highest mean + sqrt(2 ln N / n)
//     (arms never tried first).
//   - epsilon_greedy: 1 - epsilon + epsilon/K to the best mean, epsilon/K to
//     each other arm.
func Allocate(b *experiment.Bandit, n, c []float64) []float64 {
	k := len(n)
	probs := make([]float64, k)
	switch b.Policy {
	case experiment.Thompson:
		var seed []byte
		for i := range n {
			seed = binary.LittleEndian.AppendUint64(seed, uint64(n[i]))
			seed = binary.LittleEndian.AppendUint64(seed, uint64(c[i]))
		}
		h := fnv.New64a()
		h.Write(seed)
		src := rand.New(rand.NewPCG(h.Sum64(), uint64(k)))
		betas := make([]distuv.Beta, k)
		for i := range betas {
			betas[i] = distuv.Beta{Alpha: 1 + c[i], Beta: 1 + n[i] - c[i], Src: src}
		}
		for range thompsonDraws {
			best, bestV := 0, -1.0
			for i := range betas {
				if v := betas[i].Rand(); v > bestV {
					best, bestV = i, v
				}
			}
			probs[best]++
		}
		for i := range probs {
			probs[i] /= thompsonDraws
		}
	case experiment.UCB1:
		var total float64
		for _, v := range n {
			total += v
		}
		best, bestV := 0, math.Inf(-1)
		for i := range n {
			v := math.Inf(1)
			if n[i] > 0 {
				v = c[i]/n[i] + math.Sqrt(2*math.Log(total)/n[i])
			}
			if v > bestV {
				best, bestV = i, v
			}
		}
		probs[best] = 1
	case experiment.EpsilonGreedy:
		eps := b.Epsilon
		if eps == 0 {
			eps = 0.1
		}
		best, bestV := 0, -1.0
		for i := range n {
			mean := 0.0
			if n[i] > 0 {
				mean = c[i] / n[i]
			}
			if mean > bestV {
				best, bestV = i, mean
			}
		}
		for i := range probs {
			probs[i] = eps / float64(k)
		}
		probs[best] += 1 - eps
	}
	return probs
}
