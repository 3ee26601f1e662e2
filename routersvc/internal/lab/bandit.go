package lab

import (
	"context"
	"math"
	"slices"
	"time"

	"github.com/adrank/adrank/platform/experiment"
	"github.com/adrank/adrank/routersvc/internal/stats"
)

type banditState struct {
	id     string
	probs  []float64
	n, c   []float64
	policy string
	// at is when the allocation was computed, and took how long it took.
	at   time.Time
	took time.Duration
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
	l.mu.RLock()
	last := l.bandits[domain]
	l.mu.RUnlock()
	now := time.Now()
	if last != nil && last.id == e.ID() && (slices.Equal(last.n, n) && slices.Equal(last.c, c) || now.Sub(last.at) < 10*last.took) {
		// Same counts, or the last allocation took long (many Thompson
		// arms): keep it, so that allocating takes at most a tenth of
		// the refresher's time.
		return
	}
	probs := Allocate(e.Bandit, n, c)
	st := &banditState{id: e.ID(), n: n, c: c, policy: e.Bandit.Policy, probs: probs, at: now, took: time.Since(now)}
	l.mu.Lock()
	l.bandits[domain] = st
	l.mu.Unlock()
}

// Allocate returns each arm's probability under the bandit's policy, given
// impressions n and clicks c per arm.
//
//   - thompson: the probability that the arm's Beta(1 + c, 1 + n - c)
//     posterior draw is the largest, computed by quadrature to
//     stats.ThompsonPrecision (not estimated from draws), so the logged
//     propensity is the probability the request was assigned with, and
//     every replica with the same counts computes the same allocation.
//   - ucb1: all traffic to the arm with the highest mean + sqrt(2 ln N / n)
//     (arms never tried first).
//   - epsilon_greedy: 1 - epsilon + epsilon/K to the best mean, epsilon/K to
//     each other arm.
//
// Then every arm gets at least the document's minShare (stats.Floor), so
// no propensity falls below it.
func Allocate(b *experiment.Bandit, n, c []float64) []float64 {
	k := len(n)
	probs := make([]float64, k)
	switch b.Policy {
	case experiment.Thompson:
		alpha, beta := make([]float64, k), make([]float64, k)
		for i := range n {
			alpha[i], beta[i] = 1+c[i], 1+n[i]-c[i]
		}
		probs = stats.ThompsonProbabilities(alpha, beta)
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
	return stats.Floor(probs, b.MinShare)
}
