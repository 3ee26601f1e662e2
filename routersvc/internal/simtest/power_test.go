package simtest

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/adrank/adrank/routersvc/internal/lab"
	"github.com/adrank/adrank/sim"
)

// tdPower is what team-draft interleaving of two rankers needs, computed
// from the same requests served by each alone: per interleaved request, the
// credit D is B's clicks minus A's in the slots after the agreed prefix.
type tdPower struct {
	mu, v    float64 // D's mean and variance over requests, coins and clicks
	imps     float64 // impressions per interleaved request
	credited float64 // share of those after the agreed prefix
	// firstAgreed is the share of requests whose rankings start with the
	// same ad.
	firstAgreed float64
	// bestZ2 is mu^2/v for the best weighting of credit by slot, bestW.
	bestZ2 float64
	bestW  []float64
	// clicksZ2 is mu^2/v for the best weighting by slot when the only
	// variance left is the clicks' own (which ads, which team: none): what
	// no slot-weighted credit of team draft's clicks can exceed.
	clicksZ2 float64
}

// tdOutcome is one request under one sequence of coins: per slot, the
// expected credit and the variance of its click (0 in the agreed prefix).
type tdOutcome struct {
	e, within      []float64
	shown, credits int
}

// teamDraftOutcomes merges a and b (one request, each served alone) by
// lab.TeamDraft, as the router does, under each of the 2^slots equally
// likely coin sequences. A click on slot s has a true probability of the
// ad's P times decay^(s-1).
func teamDraftOutcomes(a, b sim.Served, slots int, decay float64) (out []tdOutcome, firstAgreed bool, err error) {
	if a.RequestID != b.RequestID || a.UserID != b.UserID {
		return nil, false, fmt.Errorf("request %s of %s against %s of %s", a.RequestID, a.UserID, b.RequestID, b.UserID)
	}
	p0 := map[string]float64{}
	lists := make([][]lab.Ranked, 2)
	for t, r := range []sim.Served{a, b} {
		for _, x := range slices.SortedFunc(slices.Values(r.Shown), func(x, y sim.Shown) int { return x.Slot - y.Slot }) {
			p0[x.AdID] = x.P
			lists[t] = append(lists[t], lab.Ranked{AdID: x.AdID})
		}
	}
	// As core's agreed: the first slots both fill with the same ads.
	agreed := 0
	for agreed < len(lists[0]) && agreed < len(lists[1]) && lists[0][agreed].AdID == lists[1][agreed].AdID {
		agreed++
	}
	// A merge of slots ads takes at most slots rounds.
	for c := range 1 << slots {
		picks := lab.TeamDraft(lists[0], lists[1], slots, func(round int) bool { return c>>round&1 == 1 })
		o := tdOutcome{e: make([]float64, slots), within: make([]float64, slots), shown: len(picks)}
		for j, pk := range picks[min(agreed, len(picks)):] {
			j += agreed
			p := p0[pk.AdID] * math.Pow(decay, float64(j))
			o.e[j], o.within[j] = p, p*(1-p)
			if pk.Team == 0 {
				o.e[j] = -p
			}
			o.credits++
		}
		out = append(out, o)
	}
	return out, agreed > 0, nil
}

// teamDraftPower computes tdPower exactly over the requests of a and b (the
// same requests: the same seed), from every coin sequence of each, and
// independent clicks. Nothing is sampled.
func teamDraftPower(a, b []sim.Served, slots int, decay float64) (tdPower, error) {
	if len(a) != len(b) || len(a) == 0 {
		return tdPower{}, fmt.Errorf("%d and %d requests, want the same requests", len(a), len(b))
	}
	var n, shown, credits, firsts float64
	mu, within := make([]float64, slots), make([]float64, slots)
	cross := mat.NewSymDense(slots, nil) // sum of e e'
	for i := range a {
		outs, first, err := teamDraftOutcomes(a[i], b[i], slots, decay)
		if err != nil {
			return tdPower{}, err
		}
		if first {
			firsts++
		}
		for _, o := range outs {
			for s := range slots {
				mu[s] += o.e[s]
				within[s] += o.within[s]
				for t := s; t < slots; t++ {
					cross.SetSym(s, t, cross.At(s, t)+o.e[s]*o.e[t])
				}
			}
			shown += float64(o.shown)
			credits += float64(o.credits)
			n++
		}
	}
	pw := tdPower{imps: shown / n, credited: credits / shown, firstAgreed: firsts / float64(len(a)), bestW: make([]float64, slots)}
	// M = diag(within) + Cov(e): credit weighted by w has mean w'mu and
	// variance w'Mw; unweighted, w is all ones; at best, w = M^-1 mu and
	// mu^2/v = mu'M^-1 mu. A slot without variance never carries credit
	// (its p is 0, so its e is 0 too): it adds nothing to mu or M, and is
	// left out of both.
	var live []int
	for s := range slots {
		mu[s] /= n
		within[s] /= n
		if within[s] > 0 {
			live = append(live, s)
		}
	}
	if len(live) == 0 {
		return pw, nil
	}
	m := mat.NewSymDense(len(live), nil)
	mv := mat.NewVecDense(len(live), nil)
	for i, s := range live {
		for j, t := range live[i:] {
			cov := cross.At(s, t)/n - mu[s]*mu[t]
			if s == t {
				cov += within[s]
			}
			m.SetSym(i, i+j, cov)
			pw.v += cov
			if j > 0 {
				pw.v += cov // M[t][s] too
			}
		}
		pw.mu += mu[s]
		mv.SetVec(i, mu[s])
		pw.clicksZ2 += mu[s] * mu[s] / within[s]
	}
	var chol mat.Cholesky
	if !chol.Factorize(m) {
		return tdPower{}, fmt.Errorf("the credit's covariance is not positive definite: %v", mat.Formatted(m))
	}
	var w mat.VecDense
	if err := chol.SolveVecTo(&w, mv); err != nil {
		return tdPower{}, err
	}
	for i, s := range live {
		pw.bestW[s] = w.AtVec(i)
		pw.bestZ2 += w.AtVec(i) * mu[s]
	}
	return pw, nil
}

// Requests worked by hand. "disjoint": only ad x can be clicked (0.3 where
// examined); when A picks first, x is in slot 1 (credit -0.3), otherwise
// B's u is and x follows in slot 2 (-0.3 x 0.7 = -0.21). "agreed first":
// both start with x, so slot 1 carries no credit; A's y (0.2) lands in slot
// 2 when B picks first (-0.14, half the coins), in slot 3 when A picks
// first twice (-0.2 x 0.49 = -0.098, a quarter), and nowhere otherwise.
func TestTeamDraftPower(t *testing.T) {
	shown := func(ids string, ps ...float64) []sim.Shown {
		var out []sim.Shown
		for i, id := range strings.Fields(ids) {
			out = append(out, sim.Shown{AdID: id, Slot: i + 1, P: ps[i]})
		}
		return out
	}
	// disjoint: per slot, mean credit mu, click variance w, and M.
	mu1, mu2, w1, w2 := -0.15, -0.105, (0.3*0.7)/2, (0.21*0.79)/2
	m11, m22, m12 := w1+0.3*0.3/2-mu1*mu1, w2+0.21*0.21/2-mu2*mu2, -mu1*mu2
	det := m11*m22 - m12*m12
	// agreed first: D is -0.14, -0.098 or 0 with chances 1/2, 1/4, 1/4.
	dMean, dSq := -0.14/2-0.098/4, 0.14*0.14/2+0.098*0.098/4
	agreedWithin := 0.14*0.86/2 + 0.098*0.902/4
	for _, c := range []struct {
		name                                 string
		a, b                                 []sim.Served
		mu, v, credited, first, best, clicks float64
	}{
		{"disjoint", []sim.Served{{RequestID: "r", Shown: shown("x y z", 0.3, 0, 0)}}, []sim.Served{{RequestID: "r", Shown: shown("u v w", 0, 0, 0)}},
			mu1 + mu2, m11 + m22 + 2*m12, 1, 0, (m22*mu1*mu1 - 2*m12*mu1*mu2 + m11*mu2*mu2) / det, mu1*mu1/w1 + mu2*mu2/w2},
		{"the same", []sim.Served{{RequestID: "r", Shown: shown("x y z", 0.3, 0.2, 0.1)}}, []sim.Served{{RequestID: "r", Shown: shown("x y z", 0.3, 0.2, 0.1)}},
			0, 0, 0, 1, 0, 0},
		{"agreed first", []sim.Served{{RequestID: "r", Shown: shown("x y z", 0.3, 0.2, 0)}}, []sim.Served{{RequestID: "r", Shown: shown("x v w", 0.3, 0, 0)}},
			dMean, agreedWithin + dSq - dMean*dMean, 2.0 / 3, 1, -1, (0.07*0.07)/(0.14*0.86/2) + (0.0245*0.0245)/(0.098*0.902/4)},
	} {
		t.Run(c.name, func(t *testing.T) {
			pw, err := teamDraftPower(c.a, c.b, 3, 0.7)
			if err != nil {
				t.Fatal(err)
			}
			checks := []struct {
				name      string
				got, want float64
			}{{"mu", pw.mu, c.mu}, {"v", pw.v, c.v}, {"credited", pw.credited, c.credited}, {"first agreed", pw.firstAgreed, c.first}, {"imps", pw.imps, 3}, {"clicks z2", pw.clicksZ2, c.clicks}}
			if c.best >= 0 {
				checks = append(checks, struct {
					name      string
					got, want float64
				}{"best z2", pw.bestZ2, c.best})
			}
			for _, f := range checks {
				if math.Abs(f.got-f.want) > 1e-12 {
					t.Errorf("%s = %v, want %v", f.name, f.got, f.want)
				}
			}
			// Weighting at best is never worse than not weighting, nor
			// better than the clicks' noise alone allows.
			if pw.v > 0 && (pw.bestZ2 < pw.mu*pw.mu/pw.v-1e-12 || pw.bestZ2 > pw.clicksZ2+1e-12) {
				t.Errorf("best z2 %v is outside [%v, %v]", pw.bestZ2, pw.mu*pw.mu/pw.v, pw.clicksZ2)
			}
		})
	}
	for _, b := range []sim.Served{{RequestID: "s", UserID: "u"}, {RequestID: "r", UserID: "v"}} {
		if _, err := teamDraftPower([]sim.Served{{RequestID: "r", UserID: "u"}}, []sim.Served{b}, 3, 0.7); err == nil {
			t.Errorf("request %s of %s was compared with r of u", b.RequestID, b.UserID)
		}
	}
}
