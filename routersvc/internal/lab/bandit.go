package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"time"

	"github.com/adrank/adrank/platform/experiment"
	"github.com/adrank/adrank/routersvc/internal/stats"
	"github.com/adrank/adrank/routersvc/internal/store"
)

type banditState struct {
	id     string // the experiment and its bandit section (see banditID)
	probs  []float64
	n, c   []float64
	policy string
	// at is when the allocation was computed, and took how long it took.
	at   time.Time
	took time.Duration
}

// banditID names an experiment's bandit section: an allocation is kept for
// it only while the section is the same.
func banditID(e *experiment.Experiment) string {
	b, _ := json.Marshal(e.Bandit)
	return e.ID() + "|" + string(b)
}

// banditAllocation is the current probability of each arm (uniform until
// the first refresh).
func (l *Lab) banditAllocation(domain string, e *experiment.Experiment) []float64 {
	l.mu.RLock()
	st := l.bandits[domain]
	l.mu.RUnlock()
	if st != nil && st.id == banditID(e) {
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
	b := e.Bandit
	k := len(b.Versions)
	n, c := make([]float64, k), make([]float64, k)
	for i, v := range b.Versions {
		n[i], c[i] = m[v+".n"], m[v+".c"]
		if len(b.PositionBias) > 0 {
			// Exposure, not impressions; impressions recorded before
			// exposure was (".n" beyond ".nw") count 1 each.
			n[i] = m[v+".w"] + math.Max(0, m[v+".n"]-m[v+".nw"])
		}
	}
	if b.HalfLife.Duration > 0 {
		if n, c, err = l.discount(ctx, domain, banditID(e), b.HalfLife.Duration, n, c); err != nil {
			l.o.Log.Warn("bandit refresh failed", "domain", domain, "error", err)
			return
		}
	}
	for i := range c {
		c[i] = math.Min(c[i], n[i])
	}
	l.mu.RLock()
	last := l.bandits[domain]
	l.mu.RUnlock()
	now := time.Now()
	if last != nil && last.id == banditID(e) && (slices.Equal(last.n, n) && slices.Equal(last.c, c) || now.Sub(last.at) < 10*last.took) {
		// Same counts, or the last allocation took long (many Thompson
		// arms): keep it, so that allocating takes at most a tenth of
		// the refresher's time.
		return
	}
	probs := Allocate(e.Bandit, n, c)
	st := &banditState{id: banditID(e), n: n, c: c, policy: e.Bandit.Policy, probs: probs, at: now, took: time.Since(now)}
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

// discounted is a bandit's counts discounted to At, kept in the store so
// that every replica allocates from the same ones, with the cumulative
// counts they were last brought up to.
type discounted struct {
	At   time.Time `json:"at"`
	CumN []float64 `json:"cum_n"`
	CumC []float64 `json:"cum_c"`
	N    []float64 `json:"n"`
	C    []float64 `json:"c"`
}

// discountKey names the discounted counts of a bandit section (id: its
// banditID), so that a changed section (another half-life, or exposure
// instead of impressions) starts them afresh.
func discountKey(domain, id string) string {
	sum := sha256.Sum256([]byte(id))
	return "banditdisc|" + domain + "|" + hex.EncodeToString(sum[:12])
}

// discount brings the bandit's discounted counts up to now: the counts at
// the last update lose half their weight per halfLife, and what was added
// since (cumN, cumC against the last cumulative counts) joins them. Any
// replica may do it; compare-and-swap makes one update win, and a replica
// whose counters are older than the stored ones uses the stored counts.
func (l *Lab) discount(ctx context.Context, domain, id string, halfLife time.Duration, cumN, cumC []float64) ([]float64, []float64, error) {
	key := discountKey(domain, id)
	k := len(cumN)
	for range 10 {
		raw, err := l.o.Store.Get(ctx, key)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, nil, err
		}
		var st discounted
		if raw != nil {
			if err := json.Unmarshal(raw, &st); err != nil {
				return nil, nil, err
			}
		}
		if len(st.N) != k || len(st.C) != k || len(st.CumN) != k || len(st.CumC) != k {
			st = discounted{CumN: make([]float64, k), CumC: make([]float64, k), N: make([]float64, k), C: make([]float64, k)}
		}
		now := l.o.Now()
		g := 1.0
		if !st.At.IsZero() && now.After(st.At) {
			g = math.Exp2(-now.Sub(st.At).Seconds() / halfLife.Seconds())
		}
		next := discounted{At: now, CumN: cumN, CumC: cumC, N: make([]float64, k), C: make([]float64, k)}
		stale := false
		for i := range k {
			if cumN[i] < st.CumN[i] || cumC[i] < st.CumC[i] {
				stale = true
			}
			next.N[i] = g*st.N[i] + math.Max(0, cumN[i]-st.CumN[i])
			next.C[i] = g*st.C[i] + math.Max(0, cumC[i]-st.CumC[i])
		}
		if stale { // another replica has read newer counters
			for i := range k {
				next.N[i], next.C[i] = g*st.N[i], g*st.C[i]
			}
			return next.N, next.C, nil
		}
		b, err := json.Marshal(next)
		if err != nil {
			return nil, nil, err
		}
		ok, err := l.o.Store.CompareAndSwap(ctx, key, raw, b)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			return next.N, next.C, nil
		}
	}
	return nil, nil, errors.New("discounted bandit counts kept changing")
}
