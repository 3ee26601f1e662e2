package simtest

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/adrank/adrank/routersvc/internal/lab"
	"github.com/adrank/adrank/sim"
)

// tdPower is what team-draft interleaving of two rankers needs, computed
// from requests each served alone: per interleaved request, the credit D is
// B's clicks minus A's in the slots after the agreed prefix.
type tdPower struct {
	mu, v    float64 // D's mean and variance over requests, coins and clicks
	imps     float64 // impressions per interleaved request
	credited float64 // share of those after the agreed prefix
	// bestZ2 is mu^2/v for the best weighting of credit by slot, bestW.
	bestZ2 float64
	bestW  []float64
	// clicks is the part of v that the clicks' own Bernoulli noise makes:
	// what is left when every other variance (which ads, which team) is
	// gone, so mu^2/clicks bounds what any credit of these clicks reaches.
	clicks float64
}

// teamDraftPower computes tdPower exactly: for each request (the same in a
// and b: the same seed), every sequence of team-draft coins (lab.TeamDraft,
// as the router merges), each ad's true click probability times decay per
// slot, and independent clicks. Nothing is sampled.
func teamDraftPower(a, b []sim.Served, slots int, decay float64) (tdPower, error) {
	if len(a) != len(b) || len(a) == 0 {
		return tdPower{}, fmt.Errorf("%d and %d requests, want the same requests", len(a), len(b))
	}
	const rounds = 4 // coins of rounds beyond the slots' need change nothing
	var n float64
	mu := make([]float64, slots)      // per slot: mean credit
	within := make([]float64, slots)  // mean click variance
	cross := make([][]float64, slots) // E[e_s e_t]
	for s := range cross {
		cross[s] = make([]float64, slots)
	}
	var shown, credited float64
	for i := range a {
		if a[i].RequestID != b[i].RequestID {
			return tdPower{}, fmt.Errorf("request %d: %s against %s", i, a[i].RequestID, b[i].RequestID)
		}
		p0 := map[string]float64{}
		lists := make([][]lab.Ranked, 2)
		for t, r := range []sim.Served{a[i], b[i]} {
			sh := slices.SortedFunc(slices.Values(r.Shown), func(x, y sim.Shown) int { return x.Slot - y.Slot })
			for _, x := range sh {
				p0[x.AdID] = x.P
				lists[t] = append(lists[t], lab.Ranked{AdID: x.AdID})
			}
		}
		agreed := 0
		for agreed < len(lists[0]) && agreed < len(lists[1]) && lists[0][agreed].AdID == lists[1][agreed].AdID {
			agreed++
		}
		for c := range 1 << rounds {
			picks := lab.TeamDraft(lists[0], lists[1], slots, func(round int) bool { return round < rounds && c>>round&1 == 1 })
			e := make([]float64, slots)
			for j, pk := range picks {
				shown++
				if j < agreed {
					continue
				}
				credited++
				p := p0[pk.AdID] * math.Pow(decay, float64(j))
				if pk.Team == 0 {
					e[j] -= p
				} else {
					e[j] += p
				}
				within[j] += p * (1 - p)
			}
			for s := range slots {
				mu[s] += e[s]
				for t := range slots {
					cross[s][t] += e[s] * e[t]
				}
			}
			n++
		}
	}
	// M = diag(within) + Cov(e): the variance of credit weighted by w is
	// w'Mw, its mean w'mu; unweighted w is all ones, the best is M^-1 mu.
	m := make([][]float64, slots)
	for s := range slots {
		mu[s] /= n
		within[s] /= n
	}
	var pw tdPower
	for s := range slots {
		m[s] = make([]float64, slots)
		for t := range slots {
			m[s][t] = cross[s][t]/n - mu[s]*mu[t]
		}
		m[s][s] += within[s]
		pw.mu += mu[s]
		pw.clicks += within[s]
		for t := range slots {
			pw.v += m[s][t]
		}
	}
	// Slots that never carry credit (variance 0) get no weight.
	var live []int
	for s := range slots {
		if m[s][s] > 0 {
			live = append(live, s)
		}
	}
	sub, y := make([][]float64, len(live)), make([]float64, len(live))
	for i, s := range live {
		y[i] = mu[s]
		for _, t := range live {
			sub[i] = append(sub[i], m[s][t])
		}
	}
	w, err := solve(sub, y)
	if err != nil {
		return tdPower{}, err
	}
	pw.bestW = make([]float64, slots)
	for i, s := range live {
		pw.bestW[s] = w[i]
		pw.bestZ2 += w[i] * mu[s] // mu' M^-1 mu
	}
	pw.imps, pw.credited = shown/n, credited/shown
	return pw, nil
}

// solve solves m x = y by Gaussian elimination with partial pivoting.
func solve(m [][]float64, y []float64) ([]float64, error) {
	k := len(y)
	a := make([][]float64, k)
	for i := range k {
		a[i] = append(slices.Clone(m[i]), y[i])
	}
	for col := range k {
		piv := col
		for r := col + 1; r < k; r++ {
			if math.Abs(a[r][col]) > math.Abs(a[piv][col]) {
				piv = r
			}
		}
		if a[piv][col] == 0 {
			return nil, fmt.Errorf("singular matrix %v", m)
		}
		a[col], a[piv] = a[piv], a[col]
		for r := range k {
			if r != col {
				f := a[r][col] / a[col][col]
				for c := col; c <= k; c++ {
					a[r][c] -= f * a[col][c]
				}
			}
		}
	}
	x := make([]float64, k)
	for i := range k {
		x[i] = a[i][k] / a[i][i]
	}
	return x, nil
}

// userCorrelation is the intra-class correlation of clicks within a user:
// the covariance of the expected CTRs of two requests of the same user (the
// user's lasting part), over the variance of one click. It sets the design
// effect 1 + (m-1) rho of a test that randomizes users, each seeing m
// impressions.
func userCorrelation(served []sim.Served, decay float64) float64 {
	byUser := map[string][]float64{}
	var sum, n, clickVar float64
	for _, r := range served {
		var x float64
		for _, s := range r.Shown {
			p := s.P * math.Pow(decay, float64(s.Slot-1))
			x += p
			clickVar += p * (1 - p)
		}
		if len(r.Shown) > 0 {
			x /= float64(len(r.Shown))
			byUser[r.UserID] = append(byUser[r.UserID], x)
			sum += x
			n++
		}
	}
	mean := sum / n
	var cov, pairs float64
	for _, xs := range byUser {
		for i := range xs {
			for j := i + 1; j < len(xs); j++ {
				cov += (xs[i] - mean) * (xs[j] - mean)
				pairs++
			}
		}
	}
	// A click's variance: Bernoulli around its own p, plus the spread of
	// the p's themselves.
	var spread float64
	for _, xs := range byUser {
		for _, x := range xs {
			spread += (x - mean) * (x - mean)
		}
	}
	return (cov / pairs) / (clickVar/float64(countShown(served)) + spread/n)
}

func countShown(served []sim.Served) int {
	k := 0
	for _, r := range served {
		k += len(r.Shown)
	}
	return k
}

// One request worked by hand: only ad x can be clicked (0.3 where
// examined). When A picks first, x is in slot 1 (credit -0.3); otherwise B's
// u is, and x follows in slot 2 (-0.3 x 0.7). The variance is the clicks'
// mean Bernoulli variance plus that of the two means, 0.045 either side.
func TestTeamDraftPower(t *testing.T) {
	shown := func(ids string, ps ...float64) []sim.Shown {
		var out []sim.Shown
		for i, id := range strings.Fields(ids) {
			out = append(out, sim.Shown{AdID: id, Slot: i + 1, P: ps[i]})
		}
		return out
	}
	for _, c := range []struct {
		name                 string
		a, b                 []sim.Shown
		mu, v, credited, imp float64
	}{
		{"disjoint", shown("x y z", 0.3, 0, 0), shown("u v w", 0, 0, 0), -0.255, (0.3*0.7+0.21*0.79)/2 + 0.045*0.045, 1, 3},
		{"the same", shown("x y z", 0.3, 0.2, 0.1), shown("x y z", 0.3, 0.2, 0.1), 0, 0, 0, 3},
		{"agreed first", shown("x y z", 0.3, 0, 0), shown("x v w", 0.3, 0, 0), 0, 0, 2.0 / 3, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			pw, err := teamDraftPower([]sim.Served{{RequestID: "r", Shown: c.a}}, []sim.Served{{RequestID: "r", Shown: c.b}}, 3, 0.7)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []struct {
				name      string
				got, want float64
			}{{"mu", pw.mu, c.mu}, {"v", pw.v, c.v}, {"credited", pw.credited, c.credited}, {"imps", pw.imps, c.imp}} {
				if math.Abs(f.got-f.want) > 1e-12 {
					t.Errorf("%s = %v, want %v", f.name, f.got, f.want)
				}
			}
		})
	}
	if _, err := teamDraftPower([]sim.Served{{RequestID: "r"}}, []sim.Served{{RequestID: "s"}}, 3, 0.7); err == nil {
		t.Error("different requests were compared")
	}
}
