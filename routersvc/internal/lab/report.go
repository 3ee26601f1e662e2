package lab

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/adrank/adrank/routersvc/internal/stats"
)

// Report is what the lab knows of a domain: version health, events, and
// its experiment's results. Every number is finite.
type Report struct {
	Domain, ProductionVersion, ExperimentID string
	Versions                                []VersionHealth
	EventsRejected, EventsDuplicate         float64
	// EventsForged are the rejected events whose impression ID the router
	// did not sign.
	EventsForged float64
	// RecordsDropped counts served requests this router could not write to
	// the state store (refused records); StateError is the last write error.
	RecordsDropped float64
	StateError     string
	Shadow         []ShadowStats
	// At most one of these is set: the experiment's strategy.
	Canary     *CanaryReport
	AB         *ABReport
	Bandit     *BanditReport
	Interleave *InterleaveReport
}

// VersionHealth is what the ranker calls to one version did.
type VersionHealth struct {
	Version                     string
	Requests, Errors, Fallbacks float64
	LatencyP50Ms, LatencyP99Ms  float64
}

// ShadowStats compares a shadow version with production on the same
// requests.
type ShadowStats struct {
	Version                                     string
	Compared, Dropped, Errors                   float64
	LatencyP50Ms, LatencyP99Ms                  float64
	TopKOverlap, KendallTau, MeanPctrRatio, PSI float64
}

// GroupStats are one experiment group's outcomes. Conversions and
// revenue count those of users in the group (interleaving's teams have no
// users); ConversionRate is conversions per click.
type GroupStats struct {
	Group, Version                              string
	Users, Impressions, Clicks, CTR             float64
	Conversions, ConversionValue, RevenueMicros float64
	RevenuePerUserMicros, ConversionRate        float64
}

// TestResult compares a treatment's metric with control's.
type TestResult struct {
	// Metric is "ctr", "revenue_per_user" (micros) or "conversion_rate"
	// (conversions per click).
	Metric                            string
	Control, Treatment                string
	Diff, CILow, CIHigh, RelativeLift float64
	PValue, AlwaysValidPValue         float64
	// VarianceReduction is the share of the difference's variance that
	// CUPED removed, using each user's history before the experiment.
	VarianceReduction float64
	// HolmPValue is AlwaysValidPValue adjusted for the other treatments
	// compared with the same control (Holm); the verdict rests on it.
	HolmPValue                                          float64
	Verdict                                             string
	NeededImpressionsPerArm, RemainingImpressionsPerArm float64
}

// ABReport is an A/B test's arms and tests.
type ABReport struct {
	Salt                           string
	Arms                           []GroupStats
	Weights                        []float64
	Tests                          []TestResult
	Alpha, MinimalDetectableEffect float64
	SRMChi2, SRMPValue             float64
	SRMFlagged                     bool
}

// CanaryReport is a canary's state and its groups.
type CanaryReport struct {
	Version         string
	State           CanaryState
	Step            int
	SharePercent    float64
	StepStartedAt   time.Time
	Reason          string
	Canary, Control GroupStats
	CTRPValue       float64
	// DropPValues are the guardrails' always-valid p-values against a
	// drop, by metric ("ctr", "revenue_per_impression"); each rolls the canary
	// back below Alpha / 2.
	DropPValues map[string]float64
	Alpha       float64
}

// BanditArm is one arm of a bandit.
type BanditArm struct {
	Version                               string
	Impressions, Clicks, Mean, Allocation float64
}

// BanditReport is a bandit's arms.
type BanditReport struct {
	Policy string
	Arms   []BanditArm
}

// InterleaveReport is an interleaving duel's tally and tests.
type InterleaveReport struct {
	A, B               string
	Fraction           float64
	WinsA, Ties, WinsB float64
	// CreditA is A's clicks minus B's over all interleaved requests.
	CreditA float64
	// PValue is the two-sided sign test of WinsA against WinsB (fixed
	// horizon, for reference).
	PValue float64
	// The always-valid p-values of per-request wins and of credit per
	// click; the verdict rests on the latter at Alpha.
	PerRequestAlwaysValidPValue, AlwaysValidPValue, Alpha float64
	// HolmPValue is AlwaysValidPValue adjusted for the other pairs of a
	// multileaving experiment; the verdict rests on it.
	HolmPValue float64
	Verdict    string
	// Versions are every interleaved version; with more than two, Pairs
	// compares each pair (the fields above are the first pair's).
	Versions []string
	Pairs    []InterleaveReport
}

// Report fills the experiment parts of a domain's report; the caller sets
// the config fields. versions are the domain's registered versions.
func (l *Lab) Report(ctx context.Context, domain string, d Domain, versions []string) (*Report, error) {
	r := &Report{Domain: domain, ProductionVersion: d.Production}
	h, err := l.o.Store.Counters(ctx, healthKey(domain))
	if err != nil {
		return nil, err
	}
	for _, v := range versions {
		lat := latencies(h, v)
		r.Versions = append(r.Versions, VersionHealth{
			Version: v, Requests: h[v+".requests"], Errors: h[v+".errors"], Fallbacks: h[v+".fallbacks"],
			LatencyP50Ms: stats.Finite(quantile(lat, 0.5)), LatencyP99Ms: stats.Finite(quantile(lat, 0.99)),
		})
	}
	ev, err := l.o.Store.Counters(ctx, eventsKey)
	if err != nil {
		return nil, err
	}
	r.EventsRejected, r.EventsDuplicate = ev["unknown"]+ev["expired"]+ev["forged"], ev["duplicate"]
	r.EventsForged = ev["forged"]
	r.RecordsDropped, r.StateError = l.rec.health()
	e := d.Exp
	if e == nil {
		return r, nil
	}
	r.ExperimentID = e.ID()
	if e.Shadow != nil {
		for _, v := range e.Shadow.Versions {
			s, err := l.shadowStats(ctx, domain, v)
			if err != nil {
				return nil, err
			}
			r.Shadow = append(r.Shadow, s)
		}
	}
	switch {
	case e.Canary != nil:
		r.Canary, err = l.canaryReport(ctx, domain, d)
	case e.AB != nil:
		r.AB, err = l.abReport(ctx, domain, d)
	case e.Bandit != nil:
		r.Bandit, err = l.banditReport(ctx, domain, d)
	case e.Interleave != nil:
		r.Interleave, err = l.interleaveReport(ctx, domain, d)
	}
	return r, err
}

func (l *Lab) group(ctx context.Context, domain, exp, group, version string) (GroupStats, stats.Sums, error) {
	g := groupKey(domain, exp, group)
	sums, err := l.o.Store.Group(ctx, g)
	if err != nil {
		return GroupStats{}, sums, err
	}
	out, err := l.o.Store.Counters(ctx, outcomesKey(g))
	if err != nil {
		return GroupStats{}, sums, err
	}
	ratio := sums.Ratio()
	return GroupStats{
		Group: group, Version: version, Users: ratio.Users, Impressions: ratio.N, Clicks: ratio.C, CTR: ratio.Mean(),
		Conversions: out["conversions"], ConversionValue: out["value"], RevenueMicros: out["revenue"],
		RevenuePerUserMicros: stats.Finite(stats.PerUser(stats.Revenue).Value(sums)),
		ConversionRate:       stats.Finite(conversionRate.Value(sums)),
	}, sums, nil
}

var (
	ctr            = stats.Metric{Num: stats.Clicks, Den: stats.Imps}
	conversionRate = stats.Metric{Num: stats.Conversions, Den: stats.Clicks}
	preCTR         = stats.Metric{Num: stats.PreClicks, Den: stats.PreImps}
)

// abMetrics are the metrics an A/B test compares, each with the covariate
// from the users' history that CUPED adjusts it by.
var abMetrics = []struct {
	name              string
	metric, covariate stats.Metric
}{
	{"ctr", ctr, preCTR},
	{"revenue_per_user", stats.PerUser(stats.Revenue), stats.PerUser(stats.PreRevenue)},
	{"conversion_rate", conversionRate, preCTR},
}

func (l *Lab) shadowStats(ctx context.Context, domain, v string) (ShadowStats, error) {
	m, err := l.o.Store.Counters(ctx, shadowKey(domain, v))
	if err != nil {
		return ShadowStats{}, err
	}
	lat := make([]float64, len(latencyEdges))
	for i := range lat {
		lat[i] = m[fmt.Sprintf("lat.%d", i)]
	}
	nb := len(stats.PSIBins) - 1
	prod, shadow := make([]float64, nb), make([]float64, nb)
	for i := range nb {
		prod[i], shadow[i] = m[fmt.Sprintf("prod_bin.%d", i)], m[fmt.Sprintf("shadow_bin.%d", i)]
	}
	s := ShadowStats{
		Version: v, Compared: m["compared"], Dropped: m["dropped"], Errors: m["errors"],
		LatencyP50Ms: stats.Finite(quantile(lat, 0.5)), LatencyP99Ms: stats.Finite(quantile(lat, 0.99)),
		PSI: stats.Finite(stats.PSI(prod, shadow)),
	}
	if m["compared"] > 0 {
		s.TopKOverlap = m["overlap"] / m["compared"]
	}
	if m["tau_n"] > 0 {
		s.KendallTau = m["tau"] / m["tau_n"]
	}
	if m["prod_sum"] > 0 {
		s.MeanPctrRatio = m["shadow_sum"] / m["prod_sum"]
	}
	return s, nil
}

func (l *Lab) canaryReport(ctx context.Context, domain string, d Domain) (*CanaryReport, error) {
	c := d.Exp.Canary
	st, _, err := l.loadCanary(ctx, domain, c)
	if err != nil {
		return nil, err
	}
	canary, cr, err := l.group(ctx, domain, d.Exp.ID(), "canary", c.Version)
	if err != nil {
		return nil, err
	}
	control, kr, err := l.group(ctx, domain, d.Exp.ID(), "control", d.Production)
	if err != nil {
		return nil, err
	}
	alpha := guardAlpha(c.Guardrails)
	_, ps := Guard(kr, cr, alpha, c.Guardrails.Drop)
	return &CanaryReport{
		Version: c.Version, State: st.State, Step: st.Step, SharePercent: st.share(c),
		StepStartedAt: st.StepStarted, Reason: st.Reason, Canary: canary, Control: control,
		CTRPValue: stats.Finite(stats.Compare(kr.Ratio(), cr.Ratio(), 0.05).P), DropPValues: ps, Alpha: alpha,
	}, nil
}

func (l *Lab) abReport(ctx context.Context, domain string, d Domain) (*ABReport, error) {
	ab := d.Exp.AB
	alpha, mde, power := ab.Alpha, ab.MDE, ab.Power
	if alpha == 0 {
		alpha = 0.05
	}
	if mde == 0 {
		mde = 0.05
	}
	if power == 0 {
		power = 0.8
	}
	r := &ABReport{Salt: ab.Salt, Alpha: alpha, MinimalDetectableEffect: mde}
	sums := make([]stats.Sums, len(ab.Arms))
	users := make([]float64, len(ab.Arms))
	for i, arm := range ab.Arms {
		g, s, err := l.group(ctx, domain, d.Exp.ID(), arm.Version, arm.Version)
		if err != nil {
			return nil, err
		}
		r.Arms = append(r.Arms, g)
		r.Weights = append(r.Weights, arm.Weight)
		sums[i], users[i] = s, s.Users
	}
	r.SRMChi2, r.SRMPValue = stats.SRM(users, r.Weights)
	r.SRMFlagged = r.SRMPValue < 0.001
	for _, m := range abMetrics {
		cuped := stats.NewCUPED(m.metric, m.covariate, sums...)
		var tests []TestResult
		for i := 1; i < len(ab.Arms); i++ {
			t := Test(ab.Arms[0].Version, ab.Arms[i].Version, sums[0], sums[i], cuped, alpha, mde, power)
			t.Metric = m.name
			tests = append(tests, t)
		}
		// Holm within each metric: its treatments share a control.
		holmVerdicts(tests, alpha)
		r.Tests = append(r.Tests, tests...)
	}
	return r, nil
}

// holmVerdicts adjusts the tests' always-valid p-values for each other
// (Holm) and decides each verdict on the adjusted one, so that with several
// treatments the chance of any false "better" or "worse" stays alpha.
func holmVerdicts(tests []TestResult, alpha float64) {
	ps := make([]float64, len(tests))
	for i, t := range tests {
		ps[i] = t.AlwaysValidPValue
	}
	for i, p := range stats.Holm(ps) {
		t := &tests[i]
		t.HolmPValue = p
		switch {
		case p >= alpha || math.IsNaN(p):
			t.Verdict = "no detectable difference yet"
		case t.Diff < 0:
			t.Verdict = "treatment worse"
		default:
			t.Verdict = "treatment better"
		}
	}
}

// Test compares treatment with control on cuped's metric, adjusted by its
// covariate: a fixed-horizon z-test, an always-valid p-value (mSPRT with
// mixing scale mde x the control's value), a verdict from the always-valid
// p-value (so that looking early is safe), the share of variance CUPED
// removed, and, for CTR, the impressions per arm a fixed-horizon test needs
// for the relative lift mde, inflated by the observed design effect. Alone,
// its HolmPValue is its always-valid p-value; holmVerdicts adjusts it among
// several.
func Test(controlName, treatmentName string, control, treatment stats.Sums, cuped stats.CUPED, alpha, mde, power float64) TestResult {
	m := cuped.Metric
	plain := stats.Difference(m.Estimate(control), m.Estimate(treatment))
	adj := stats.Difference(cuped.Estimate(control), cuped.Estimate(treatment))
	base := m.Value(control)
	c := stats.CompareDifference(base, adj, alpha)
	t := TestResult{
		Control: controlName, Treatment: treatmentName, Diff: stats.Finite(c.Diff), CILow: stats.Finite(c.CILow), CIHigh: stats.Finite(c.CIHigh),
		RelativeLift: stats.Finite(c.RelLift), PValue: stats.Finite(c.P), AlwaysValidPValue: 1, HolmPValue: 1, Verdict: "no detectable difference yet",
	}
	if plain.Var > 0 && adj.Var <= plain.Var {
		t.VarianceReduction = 1 - adj.Var/plain.Var
	}
	if !(base > 0) {
		return t
	}
	tau := mde * base
	avp := stats.AlwaysValidP(adj.Value, adj.Var, tau*tau)
	if !math.IsNaN(avp) {
		t.AlwaysValidPValue, t.HolmPValue = avp, avp
		if avp < alpha {
			t.Verdict = "treatment better"
			if c.Diff < 0 {
				t.Verdict = "treatment worse"
			}
		}
	}
	if m == ctr {
		cr := control.Ratio()
		deff := 1.0
		if v := cr.Var(); v > 0 && cr.N > 0 {
			deff = v / (base * (1 - base) / cr.N)
		}
		need := stats.SampleSize(base, mde, alpha, power, deff)
		t.NeededImpressionsPerArm = stats.Finite(need)
		t.RemainingImpressionsPerArm = stats.Finite(math.Max(0, need-math.Min(cr.N, treatment.S[stats.Imps])))
	}
	return t
}

func (l *Lab) banditReport(ctx context.Context, domain string, d Domain) (*BanditReport, error) {
	b := d.Exp.Bandit
	m, err := l.o.Store.Counters(ctx, banditKey(domain, d.Exp.ID()))
	if err != nil {
		return nil, err
	}
	probs := l.banditAllocation(domain, d.Exp)
	r := &BanditReport{Policy: b.Policy}
	for i, v := range b.Versions {
		n, c := m[v+".n"], m[v+".c"]
		arm := BanditArm{Version: v, Impressions: n, Clicks: c, Allocation: probs[i]}
		if n > 0 {
			arm.Mean = c / n
		}
		r.Arms = append(r.Arms, arm)
	}
	return r, nil
}

func (l *Lab) interleaveReport(ctx context.Context, domain string, d Domain) (*InterleaveReport, error) {
	in := d.Exp.Interleave
	alpha := in.Alpha
	if alpha == 0 {
		alpha = 0.05
	}
	teams := in.Teams()
	var pairs []InterleaveReport
	for i := range teams {
		for j := i + 1; j < len(teams); j++ {
			m, err := l.o.Store.Counters(ctx, pairKey(domain, d.Exp.ID(), i, j))
			if err != nil {
				return nil, err
			}
			p := InterleaveReport{A: teams[i], B: teams[j], Fraction: in.Fraction, WinsA: m["wins"], Ties: m["ties"], WinsB: m["losses"], Alpha: alpha}
			judge(&p, m["credit"], m["credit2"], m["credit_n"])
			pairs = append(pairs, p)
		}
	}
	if len(pairs) > 1 {
		// Several pairs: Holm over their always-valid p-values, so that
		// the chance of any false verdict stays alpha.
		ps := make([]float64, len(pairs))
		for i, p := range pairs {
			ps[i] = p.AlwaysValidPValue
		}
		for i, adj := range stats.Holm(ps) {
			pairs[i].HolmPValue = adj
			if adj >= alpha {
				pairs[i].Verdict = "no detectable difference yet"
			}
		}
	} else {
		pairs[0].HolmPValue = pairs[0].AlwaysValidPValue
	}
	r := pairs[0]
	r.Versions = teams
	if len(pairs) > 1 {
		r.Pairs = pairs
	}
	return &r, nil
}

// interleaveDelta is the true mean, in standard deviations of the
// per-request scores, that the interleaving tests' mixtures are centred on:
// rankers close enough to need interleaving differ by about a fiftieth
// (v2 against v2lr in the simulator: 0.019).
const interleaveDelta = 0.02

// judge sets r's tests from its tally and the per-request credit sums: the
// sign test (fixed horizon, for reference), an always-valid test on
// per-request wins, and one on credit per click (A's clicks minus B's in
// each request), on which the verdict rests: it uses the margin, not only
// the winner, of requests with several clicks.
func judge(r *InterleaveReport, credit, credit2, creditN float64) {
	n := r.WinsA + r.Ties + r.WinsB
	r.CreditA = credit
	r.PValue = stats.SignTest(int(r.WinsA), int(r.WinsB))
	r.PerRequestAlwaysValidPValue = stats.MeanZeroAlwaysValidP(r.WinsA-r.WinsB, r.WinsA+r.WinsB, n, interleaveDelta)
	// creditN, not n: requests from before credit was kept count in n.
	r.AlwaysValidPValue = stats.MeanZeroAlwaysValidP(credit, credit2, creditN, interleaveDelta)
	r.Verdict = "no detectable difference yet"
	if r.AlwaysValidPValue < r.Alpha {
		r.Verdict = r.A + " better"
		if credit < 0 {
			r.Verdict = r.B + " better"
		}
	}
}
