package lab

import (
	"context"
	"fmt"
	"math"

	"google.golang.org/protobuf/types/known/timestamppb"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/routersvc/internal/stats"
)

// Report fills the experiment parts of a domain's report; the caller sets
// the config fields. versions are the domain's registered versions.
func (l *Lab) Report(ctx context.Context, domain string, d Domain, versions []string) (*routerv1.GetExperimentReportResponse, error) {
	r := &routerv1.GetExperimentReportResponse{Domain: domain, ProductionVersion: d.Production}
	h, err := l.o.Store.Counters(ctx, healthKey(domain))
	if err != nil {
		return nil, err
	}
	for _, v := range versions {
		lat := latencies(h, v)
		r.Versions = append(r.Versions, &routerv1.VersionHealth{
			Version: v, Requests: h[v+".requests"], Errors: h[v+".errors"], Fallbacks: h[v+".fallbacks"],
			LatencyP50Ms: finite(quantile(lat, 0.5)), LatencyP99Ms: finite(quantile(lat, 0.99)),
		})
	}
	ev, err := l.o.Store.Counters(ctx, eventsKey)
	if err != nil {
		return nil, err
	}
	r.EventsRejected, r.EventsDuplicate = ev["unknown"]+ev["expired"], ev["duplicate"]
	e := d.Exp
	if e == nil {
		return r, nil
	}
	r.ExperimentId = e.ID()
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
		r.Ab, err = l.abReport(ctx, domain, d)
	case e.Bandit != nil:
		r.Bandit, err = l.banditReport(ctx, domain, d)
	case e.Interleave != nil:
		r.Interleave, err = l.interleaveReport(ctx, domain, d)
	}
	return r, err
}

// finite maps NaN and infinities to 0 for the wire (JSON has no NaN).
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

func (l *Lab) group(ctx context.Context, domain, exp, group, version string) (*routerv1.GroupStats, stats.Ratio, error) {
	g := groupKey(domain, exp, group)
	ratio, err := l.o.Store.Group(ctx, g)
	if err != nil {
		return nil, ratio, err
	}
	out, err := l.o.Store.Counters(ctx, outcomesKey(g))
	if err != nil {
		return nil, ratio, err
	}
	return &routerv1.GroupStats{
		Group: group, Version: version, Users: ratio.Users, Impressions: ratio.N, Clicks: ratio.C, Ctr: ratio.Mean(),
		Conversions: out["conversions"], ConversionValue: out["value"], RevenueMicros: out["revenue"],
	}, ratio, nil
}

func (l *Lab) shadowStats(ctx context.Context, domain, v string) (*routerv1.ShadowStats, error) {
	m, err := l.o.Store.Counters(ctx, shadowKey(domain, v))
	if err != nil {
		return nil, err
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
	s := &routerv1.ShadowStats{
		Version: v, Compared: m["compared"], Dropped: m["dropped"], Errors: m["errors"],
		LatencyP50Ms: finite(quantile(lat, 0.5)), LatencyP99Ms: finite(quantile(lat, 0.99)),
		Psi: finite(stats.PSI(prod, shadow)),
	}
	if m["compared"] > 0 {
		s.TopkOverlap = m["overlap"] / m["compared"]
	}
	if m["tau_n"] > 0 {
		s.KendallTau = m["tau"] / m["tau_n"]
	}
	if m["prod_sum"] > 0 {
		s.MeanPctrRatio = m["shadow_sum"] / m["prod_sum"]
	}
	return s, nil
}

func (l *Lab) canaryReport(ctx context.Context, domain string, d Domain) (*routerv1.CanaryReport, error) {
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
	return &routerv1.CanaryReport{
		Version: c.Version, State: st.State, Step: int32(st.Step), SharePercent: st.share(c),
		StepStartedAt: timestamppb.New(st.StepStarted), Reason: st.Reason, Canary: canary, Control: control,
		CtrPValue: finite(stats.Compare(kr, cr, 0.05).P),
	}, nil
}

func (l *Lab) abReport(ctx context.Context, domain string, d Domain) (*routerv1.ABReport, error) {
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
	r := &routerv1.ABReport{Salt: ab.Salt, Alpha: alpha, MinimalDetectableEffect: mde}
	ratios := make([]stats.Ratio, len(ab.Arms))
	users := make([]float64, len(ab.Arms))
	for i, arm := range ab.Arms {
		g, ratio, err := l.group(ctx, domain, d.Exp.ID(), arm.Version, arm.Version)
		if err != nil {
			return nil, err
		}
		r.Arms = append(r.Arms, g)
		r.Weights = append(r.Weights, arm.Weight)
		ratios[i], users[i] = ratio, ratio.Users
	}
	r.SrmChi2, r.SrmPValue = stats.SRM(users, r.Weights)
	r.SrmFlagged = r.SrmPValue < 0.001
	control := ratios[0]
	for i := 1; i < len(ab.Arms); i++ {
		r.Tests = append(r.Tests, Test(ab.Arms[0].Version, ab.Arms[i].Version, control, ratios[i], alpha, mde, power))
	}
	return r, nil
}

// Test compares treatment with control: a fixed-horizon z-test, an
// always-valid p-value (mSPRT with mixing scale mde x control CTR), a
// verdict from the always-valid p-value (so that looking early is safe), and
// the impressions per arm a fixed-horizon test needs for the relative lift
// mde, inflated by the observed design effect.
func Test(controlName, treatmentName string, control, treatment stats.Ratio, alpha, mde, power float64) *routerv1.Test {
	c := stats.Compare(control, treatment, alpha)
	t := &routerv1.Test{
		Control: controlName, Treatment: treatmentName, Diff: c.Diff, CiLow: finite(c.CILow), CiHigh: finite(c.CIHigh),
		RelativeLift: c.RelLift, PValue: finite(c.P), AlwaysValidPValue: 1, Verdict: "no detectable difference yet",
	}
	base := c.Control
	if !(base > 0) {
		return t
	}
	tau := mde * base
	avp := stats.AlwaysValidP(c.Diff, c.SE*c.SE, tau*tau)
	if !math.IsNaN(avp) {
		t.AlwaysValidPValue = avp
		if avp < alpha {
			t.Verdict = "treatment better"
			if c.Diff < 0 {
				t.Verdict = "treatment worse"
			}
		}
	}
	deff := 1.0
	if v := control.Var(); v > 0 && control.N > 0 {
		deff = v / (base * (1 - base) / control.N)
	}
	need := stats.SampleSize(base, mde, alpha, power, deff)
	t.NeededImpressionsPerArm = finite(need)
	t.RemainingImpressionsPerArm = finite(math.Max(0, need-math.Min(control.N, treatment.N)))
	return t
}

func (l *Lab) banditReport(ctx context.Context, domain string, d Domain) (*routerv1.BanditReport, error) {
	b := d.Exp.Bandit
	m, err := l.o.Store.Counters(ctx, banditKey(domain, d.Exp.ID()))
	if err != nil {
		return nil, err
	}
	probs := l.banditAllocation(domain, d.Exp)
	r := &routerv1.BanditReport{Policy: b.Policy}
	for i, v := range b.Versions {
		n, c := m[v+".n"], m[v+".c"]
		arm := &routerv1.BanditArm{Version: v, Impressions: n, Clicks: c, Allocation: probs[i]}
		if n > 0 {
			arm.Mean = c / n
		}
		r.Arms = append(r.Arms, arm)
	}
	return r, nil
}

func (l *Lab) interleaveReport(ctx context.Context, domain string, d Domain) (*routerv1.InterleaveReport, error) {
	in := d.Exp.Interleave
	m, err := l.o.Store.Counters(ctx, duelKey(domain, d.Exp.ID()))
	if err != nil {
		return nil, err
	}
	r := &routerv1.InterleaveReport{A: in.A, B: in.B, Fraction: in.Fraction, WinsA: m["wins"], Ties: m["ties"], WinsB: m["losses"]}
	r.PValue = stats.SignTest(int(r.WinsA), int(r.WinsB))
	r.Verdict = "no detectable difference yet"
	if r.PValue < 0.05 {
		r.Verdict = in.A + " better"
		if r.WinsB > r.WinsA {
			r.Verdict = in.B + " better"
		}
	}
	return r, nil
}
