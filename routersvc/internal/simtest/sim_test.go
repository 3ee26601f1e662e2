package simtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rankerv1 "github.com/adrank/adrank/gen/adrank/ranker/v1"
	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/platform/redistest"
	rankerinproc "github.com/adrank/adrank/rankersvc/inproc"
	"github.com/adrank/adrank/routersvc/internal/stats"
	"github.com/adrank/adrank/routersvc/internal/store"
	"github.com/adrank/adrank/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A/A: two arms with the same model. Over 100 runs (fresh salt each,
// 800 requests) the fixed-horizon test at alpha = 0.05 should reject about
// 5 times: the count is Binomial(100, 0.05), and P(X >= 12) < 0.005. The
// always-valid p-value is more conservative still. SRM must not fire
// (p < 0.001) more than by chance.
func TestAAExperimentsAreRarelySignificant(t *testing.T) {
	r := newRig(t, rigOptions{versions: map[string]string{"v1": "feed/v1", "v1b": "feed/v1"}})
	const runs = 100
	fixed, always, cuped := map[string]int{}, map[string]int{}, map[string]float64{}
	var srm int
	for run := range runs {
		r.experiment("feed", fmt.Sprintf(`{"ab": {"salt": "aa-%d", "arms": [{"version": "v1", "weight": 1}, {"version": "v1b", "weight": 1}]}}`, run))
		r.run(sim.Config{Requests: 800, Seed: uint64(1000 + run), RequestPrefix: fmt.Sprintf("aa%d-", run)})
		ab := r.report("feed").GetAb()
		for _, test := range ab.GetTests() {
			if test.GetPValue() < 0.05 {
				fixed[test.GetMetric()]++
			}
			if test.GetAlwaysValidPValue() < 0.05 {
				always[test.GetMetric()]++
			}
			cuped[test.GetMetric()] += test.GetVarianceReduction() / runs
		}
		if ab.GetSrmFlagged() {
			srm++
		}
	}
	t.Logf("A/A over %d runs: fixed-horizon p < 0.05 in %v, always-valid p < 0.05 in %v, SRM flagged in %d; CUPED removed on average %v of the variance",
		runs, fixed, always, srm, cuped)
	if len(cuped) != 3 {
		t.Errorf("tests by metric: %v", cuped)
	}
	for m := range cuped { // every metric tested
		if fixed[m] >= 12 || always[m] > fixed[m] {
			t.Errorf("%s: false positives: fixed %d, always-valid %d of %d runs", m, fixed[m], always[m], runs)
		}
	}
	if srm > 1 {
		t.Errorf("SRM flagged in %d of %d runs", srm, runs)
	}
}

// A real lift (feed v2's better model, and a true 20% lift on top) is
// detected: the verdict says so with an always-valid p-value below alpha,
// and the confidence interval excludes 0.
func TestABDetectsARealLift(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.experiment("feed", `{"ab": {"salt": "lift", "arms": [{"version": "v1", "weight": 50}, {"version": "v2", "weight": 50}]}}`)
	res := r.run(sim.Config{Requests: 3000, Seed: 7, RequestPrefix: "lift-", Lift: map[string]float64{"v2": 1.2}})
	ab := r.report("feed").GetAb()
	test := ab.GetTests()[0]
	t.Logf("v1 %v, v2 %v: %v", ab.GetArms()[0], ab.GetArms()[1], test)
	if test.GetVerdict() != "treatment better" || test.GetAlwaysValidPValue() >= 0.05 || test.GetCiLow() <= 0 {
		t.Errorf("lift not detected: %v", test)
	}
	if ab.GetSrmFlagged() {
		t.Errorf("SRM flagged: p %g", ab.GetSrmPValue())
	}
	// The report counts what the simulator saw.
	var imps, clicks float64
	for _, a := range ab.GetArms() {
		imps += a.GetImpressions()
		clicks += a.GetClicks()
	}
	if int(imps) != res.Impressions || int(clicks) != res.Clicks {
		t.Errorf("report has %v impressions and %v clicks, the simulator %d and %d", imps, clicks, res.Impressions, res.Clicks)
	}
}

// Sample ratio mismatch: arms declared 50/50 but served 90/10 (a broken
// split, simulated by declaring weights the hash does not follow) is flagged.
func TestSRMIsFlagged(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.experiment("feed", `{"ab": {"salt": "srm", "arms": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}]}}`)
	r.run(sim.Config{Requests: 1500, Seed: 3, RequestPrefix: "srm-"})
	// The same counters judged against other declared weights.
	r.experiment("feed", `{"ab": {"salt": "srm", "arms": [{"version": "v1", "weight": 50}, {"version": "v2", "weight": 50}]}}`)
	ab := r.report("feed").GetAb()
	if !ab.GetSrmFlagged() || ab.GetSrmPValue() >= 0.001 {
		t.Errorf("SRM not flagged: chi2 %v p %v", ab.GetSrmChi2(), ab.GetSrmPValue())
	}
}

// Each bandit policy moves most traffic to the truly best of three versions
// (the same model, true lifts 0.6, 1.0 and 1.5), and more so as feedback
// arrives: the best arm's share grows from the first half to the second.
// The allocation is recomputed after every 100 requests, as a router
// refreshing every 500 ms would at 200 requests a second; the run is
// deterministic (one client, fixed seeds, refreshes between chunks).
func TestBanditFindsTheBestVersion(t *testing.T) {
	for _, policy := range []string{"thompson", "ucb1", "epsilon_greedy"} {
		t.Run(policy, func(t *testing.T) {
			r := newRig(t, rigOptions{versions: map[string]string{"v1": "feed/v2", "a": "feed/v2", "b": "feed/v2", "c": "feed/v2"}})
			r.experiment("feed", `{"bandit": {"policy": "`+policy+`", "versions": ["a", "b", "c"]}}`)
			r.refresh()
			lift := map[string]float64{"a": 0.6, "b": 1.0, "c": 1.5}
			const chunks = 40
			var best, total [2]int // first and second half
			for chunk := range chunks {
				res := r.run(sim.Config{Requests: 100, Seed: uint64(chunk), RequestPrefix: fmt.Sprintf("%s%d-", policy, chunk), Lift: lift})
				if c := res.ByVersion["c"]; c != nil {
					best[2*chunk/chunks] += c.Impressions
				}
				total[2*chunk/chunks] += res.Impressions
				r.refresh()
			}
			first, second := float64(best[0])/float64(total[0]), float64(best[1])/float64(total[1])
			overall := float64(best[0]+best[1]) / float64(total[0]+total[1])
			t.Logf("%s: best arm's share %.0f%% in the first half, %.0f%% in the second, %.0f%% overall; arms %v",
				policy, 100*first, 100*second, 100*overall, r.report("feed").GetBandit().GetArms())
			if overall < 0.6 || second <= first {
				t.Errorf("the best arm got %.0f%% overall (%.0f%% then %.0f%%)", 100*overall, 100*first, 100*second)
			}
		})
	}
}

// A model's quality drifts: arm a is the better one for the first 30
// chunks of 100 requests, then b is (the lifts swap). Discounted Thompson
// sampling (half-life 5 minutes, one chunk a minute) follows the switch;
// plain Thompson sampling, weighed down by a's long record, is slow to.
func TestDiscountedBanditTracksASwitch(t *testing.T) {
	const before, after = 30, 20
	share := map[string]float64{} // b's share of the last 10 chunks, by policy
	for _, doc := range []string{
		`{"bandit": {"policy": "thompson", "versions": ["a", "b"]}}`,
		`{"bandit": {"policy": "thompson", "versions": ["a", "b"], "halfLife": "5m"}}`,
	} {
		r := newRig(t, rigOptions{versions: map[string]string{"v1": "feed/v2", "a": "feed/v2", "b": "feed/v2"}})
		r.experiment("feed", doc)
		r.refresh()
		var late, lateB int
		for chunk := range before + after {
			lift := map[string]float64{"a": 1.5, "b": 0.8}
			if chunk >= before {
				lift = map[string]float64{"a": 0.8, "b": 1.5}
			}
			res := r.run(sim.Config{Requests: 100, Seed: uint64(chunk), RequestPrefix: fmt.Sprintf("sw%d-", chunk), Lift: lift})
			if chunk >= before+after-10 {
				late += res.Impressions
				if b := res.ByVersion["b"]; b != nil {
					lateB += b.Impressions
				}
			}
			r.clock.advance(time.Minute)
			r.refresh()
		}
		name := "thompson"
		if strings.Contains(doc, "halfLife") {
			name = "discounted thompson"
		}
		share[name] = float64(lateB) / float64(late)
	}
	t.Logf("b's share of impressions in the last 10 of the %d chunks after the switch: %.0f%% plain, %.0f%% discounted",
		after, 100*share["thompson"], 100*share["discounted thompson"])
	if share["discounted thompson"] < 0.8 || share["discounted thompson"] < share["thompson"]+0.2 {
		t.Errorf("discounting did not follow the switch: %v", share)
	}
}

// Interleaving finds the truly better of two close rankers (v2, a GBDT,
// against v2lr, a logistic regression on the same features) with far fewer
// impressions than an A/B test needs, by its always-valid verdict read
// after every 1,000 requests. The true lift is measured without sampling
// noise: the same requests served by each version alone, scored with the
// click model's expected clicks. From those same requests, the fixed-horizon
// sample size of each test at the same alpha and power is computed exactly
// (teamDraftPower), with no sampling noise either.
func TestInterleavingNeedsFarFewerImpressions(t *testing.T) {
	const slots, decay, trueRequests = 3, 0.7, 20000
	versions := map[string]string{"v1": "feed/v1", "v2": "feed/v2", "v2lr": "feed/v2lr"}
	expected := map[string]float64{}
	served := map[string][]sim.Served{}
	for _, v := range []string{"v2lr", "v2"} {
		r := newRig(t, rigOptions{versions: versions})
		r.experiment("feed", `{"production": "`+v+`"}`)
		res := r.run(sim.Config{Requests: trueRequests, Slots: slots, PositionDecay: decay, Seed: 99, RequestPrefix: "true-", Keep: true})
		tally := res.ByVersion[v]
		expected[v] = tally.Expected / float64(tally.Impressions)
		served[v] = res.Served
	}
	lift := expected["v2"]/expected["v2lr"] - 1
	abNeeds := 2 * stats.SampleSize(expected["v2lr"], lift, 0.01, 0.8, 1)
	pw, err := teamDraftPower(served["v2lr"], served["v2"], slots, decay)
	if err != nil {
		t.Fatal(err)
	}
	if !(pw.mu > 0) {
		t.Fatalf("v2's expected credit against v2lr is %v, want it positive (v2 is truly better by %.1f%%)", pw.mu, 100*lift)
	}
	fixed := pw.imps * stats.MeanSampleSize(pw.mu, pw.v, 0.01, 0.8)
	best := pw.imps * stats.MeanSampleSize(1, 1/pw.bestZ2, 0.01, 0.8)
	bound := pw.imps * stats.MeanSampleSize(1, 1/pw.clicksZ2, 0.01, 0.8)
	t.Logf("fixed horizon, alpha 0.01, power 0.8, exactly from the same %d requests: A/B %.0f impressions (impressions independent), interleaving %.0f (credit per click): %.1fx fewer. "+
		"Credit weighted by slot at its best %.3v: %.0f, %.1fx; at best with only the clicks' own noise left: %.0f, %.1fx. "+
		"%.1f%% of interleaved impressions are credited (after the agreed prefix); the rankings start with the same ad in %.1f%% of requests",
		trueRequests, abNeeds, fixed, abNeeds/fixed, pw.bestW, best, abNeeds/best, bound, abNeeds/bound, 100*pw.credited, 100*pw.firstAgreed)
	// Measured 4.8x (5.1x weighted at best, and no slot weighting of team
	// draft's clicks passes the bound): the 10x is out of reach on
	// this pair (docs/simulations.md). The computation is exact and the
	// seeds fixed, so 4 guards against a regression.
	if abNeeds/fixed < 4 {
		t.Errorf("at a fixed horizon interleaving needs %.0f impressions, not far fewer than A/B's %.0f", fixed, abNeeds)
	}

	r := newRig(t, rigOptions{versions: versions})
	r.experiment("feed", `{"interleave": {"a": "v2lr", "b": "v2", "fraction": 1, "alpha": 0.01}}`)
	imps := 0
	var in *routerv1.InterleaveReport
	found := map[string]int{} // impressions when each test first passed alpha
	for chunk := range 100 {
		imps += r.run(sim.Config{Requests: 1000, Slots: slots, PositionDecay: decay, Seed: uint64(chunk), RequestPrefix: fmt.Sprintf("il%d-", chunk)}).Impressions
		in = r.report("feed").GetInterleave()
		for name, p := range map[string]float64{"credit per click": in.GetAlwaysValidPValue(), "per request": in.GetPerRequestAlwaysValidPValue(), "sign test (fixed horizon)": in.GetPValue()} {
			if _, ok := found[name]; !ok && p < 0.01 {
				found[name] = imps
			}
		}
		if in.GetVerdict() != "no detectable difference yet" {
			break
		}
	}
	t.Logf("true CTR v2lr %.4f, v2 %.4f (lift %.1f%%): A/B needs %.0f impressions at alpha 0.01, power 0.8 (impressions independent: fewer than a user-level test needs); interleaving found %q after %d (always-valid p %.2g by credit per click, %.2g per request; sign test %.2g): %.1fx fewer. First below 0.01, in impressions: %v",
		expected["v2lr"], expected["v2"], 100*lift, abNeeds, in.GetVerdict(), imps, in.GetAlwaysValidPValue(), in.GetPerRequestAlwaysValidPValue(), in.GetPValue(), abNeeds/float64(imps), found)
	if in.GetVerdict() != "v2 better" {
		t.Fatalf("interleaving did not find v2 better within %d impressions: %v", imps, in)
	}
	// Measured 3.6x (one client and fixed seeds: the run is
	// deterministic); the target of 10x is not met.
	if float64(imps)*2.5 > abNeeds {
		t.Errorf("interleaving needed %d impressions, not far fewer than A/B's %.0f", imps, abNeeds)
	}
}

// Team-draft multileaving compares three rankers in one experiment: v1 (a
// logistic regression on fewer features), v2 (GBDT) and v2lr (logistic
// regression on v2's features). Each pair's verdict is always valid and
// Holm-adjusted over the three pairs; the clearly worse v1 is found worse
// than both, and no verdict points the wrong way.
func TestMultileavingComparesThreeRankers(t *testing.T) {
	r := newRig(t, rigOptions{versions: map[string]string{"v1": "feed/v1", "v2": "feed/v2", "v2lr": "feed/v2lr"}})
	r.experiment("feed", `{"interleave": {"versions": ["v1", "v2", "v2lr"], "fraction": 1}}`)
	imps := 0
	var in *routerv1.InterleaveReport
	verdict := func(a, b string) string {
		for _, p := range in.GetPairs() {
			if p.GetA() == a && p.GetB() == b {
				return p.GetVerdict()
			}
		}
		return ""
	}
	for chunk := range 30 {
		imps += r.run(sim.Config{Requests: 500, Seed: uint64(chunk), RequestPrefix: fmt.Sprintf("ml%d-", chunk)}).Impressions
		in = r.report("feed").GetInterleave()
		if verdict("v1", "v2") == "v2 better" && verdict("v1", "v2lr") == "v2lr better" {
			break
		}
	}
	for _, p := range in.GetPairs() {
		t.Logf("%s against %s: wins %v, ties %v, losses %v, credit %+v, always-valid p %.2g, Holm p %.2g: %s",
			p.GetA(), p.GetB(), p.GetWinsA(), p.GetTies(), p.GetWinsB(), p.GetCreditA(), p.GetAlwaysValidPValue(), p.GetHolmPValue(), p.GetVerdict())
	}
	t.Logf("after %d impressions", imps)
	if len(in.GetPairs()) != 3 || verdict("v1", "v2") != "v2 better" || verdict("v1", "v2lr") != "v2lr better" {
		t.Fatalf("multileaving did not find v1 worse than both: %v", in.GetPairs())
	}
	if v := verdict("v2", "v2lr"); v == "v2lr better" {
		t.Errorf("v2 against v2lr: %q, the wrong way", v)
	}
}

// failing wraps a ranker and fails a share of its calls.
type failing struct {
	rankerv1.RankerServiceServer
	mu   sync.Mutex
	rng  *rand.Rand
	rate float64
}

func (f *failing) Score(ctx context.Context, in *rankerv1.ScoreRequest) (*rankerv1.ScoreResponse, error) {
	f.mu.Lock()
	fail := f.rng.Float64() < f.rate
	f.mu.Unlock()
	if fail {
		return nil, status.Error(codes.Unavailable, "injected failure")
	}
	return f.RankerServiceServer.Score(ctx, in)
}

// A canary whose version returns errors is rolled back on its own, users
// never see the errors (production answers those requests), and afterwards
// no traffic goes to the canary.
func TestCanaryWithErrorsRollsBack(t *testing.T) {
	r := newRig(t, rigOptions{})
	f, err := model.Load("../../../models/feed/v2.json")
	if err != nil {
		t.Fatal(err)
	}
	r.pipe.SetRanker("feed", "v2", &failing{RankerServiceServer: rankerinproc.New("feed", "v2", f), rng: rand.New(rand.NewPCG(1, 1)), rate: 0.3})
	r.experiment("feed", `{"canary": {"version": "v2", "steps": [50, 100], "stepInterval": "1h", "guardrails": {"minRequests": 20}}}`)
	r.refresh() // the canary starts at its first step
	res := r.run(sim.Config{Requests: 400, Seed: 5, RequestPrefix: "canary-"})
	if res.Errors != 0 {
		t.Fatalf("%d requests failed: canary errors must fall back to production", res.Errors)
	}
	if res.ByStrategy[routerv1.Strategy_STRATEGY_CANARY] == 0 {
		t.Fatalf("no request went to the canary: %v", res.ByStrategy)
	}
	r.refresh() // the guardrails see the errors
	c := r.report("feed").GetCanary()
	if c.GetState() != "rolled_back" || !strings.Contains(c.GetReason(), "error rate") || c.GetSharePercent() != 0 {
		t.Fatalf("canary %v", c)
	}
	t.Logf("rolled back: %s", c.GetReason())
	after := r.run(sim.Config{Requests: 200, Seed: 6, RequestPrefix: "after-"})
	if after.ByStrategy[routerv1.Strategy_STRATEGY_CANARY] != 0 || after.ByVersion["v2"] != nil {
		t.Errorf("traffic still reaches the canary after rollback: %v", after.ByStrategy)
	}
}

// A healthy canary steps up on schedule to 100%, one step per interval and
// never sooner, and is promoted by hand. The lab's clock is the test's: it
// moves by the step interval between refreshes.
func TestCanaryStepsUpAndIsPromoted(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.experiment("feed", `{"canary": {"version": "v2", "steps": [10, 50, 100], "stepInterval": "5m", "internalUsers": ["u1"], "guardrails": {"minRequests": 5}}}`)
	r.refresh()
	resp, err := r.client.Rank(context.Background(), &routerv1.RankRequest{UserId: "u1", Domain: "feed", Slots: 1,
		Candidates: []*routerv1.Candidate{{AdId: "ad1", BidMicros: 1000}}})
	if err != nil || resp.GetAssignment().GetStrategy() != routerv1.Strategy_STRATEGY_CANARY {
		t.Fatalf("internal user not on the canary: %v %v", resp.GetAssignment(), err)
	}
	// Not promotable while it steps up.
	if _, err := r.client.PromoteCanary(context.Background(), &routerv1.PromoteCanaryRequest{Domain: "feed"}); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(status.Convert(err).Message(), "step 1 of 3") {
		t.Fatalf("promotion at the first step: %v", err)
	}
	var shares []float64
	var c *routerv1.CanaryReport
	for step := range 5 {
		r.run(sim.Config{Requests: 100, Seed: uint64(step), RequestPrefix: fmt.Sprintf("step%d-", step)})
		r.clock.advance(4 * time.Minute)
		r.refresh() // not yet: the interval has not passed
		if c = r.report("feed").GetCanary(); c.GetState() == "completed" {
			break
		}
		shares = append(shares, c.GetSharePercent())
		r.clock.advance(time.Minute)
		r.refresh()
	}
	if c.GetState() != "completed" || !slices.Equal(shares, []float64{10, 50, 100}) {
		t.Fatalf("canary %v, shares seen %v: want 10, 50, 100, then completed", c, shares)
	}
	if _, err := r.client.PromoteCanary(context.Background(), &routerv1.PromoteCanaryRequest{Domain: "feed"}); err != nil {
		t.Fatal(err)
	}
	if d := r.table.Snapshot().Domains["feed"]; d.ProductionVersion() != "v2" || d.Experiment.Canary != nil {
		t.Errorf("after promotion: production %q, canary %v", d.ProductionVersion(), d.Experiment.Canary)
	}
	if _, err := r.client.RollbackCanary(context.Background(), &routerv1.RollbackCanaryRequest{Domain: "feed"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("rollback without a canary: %v", err)
	}
}

// Shadow: the production answer is returned; the report compares the
// shadow with production. A shadow with production's very model agrees
// exactly; v1 against v2 differs.
func TestShadowComparesWithProduction(t *testing.T) {
	r := newRig(t, rigOptions{versions: map[string]string{"v1": "feed/v1", "v1b": "feed/v1", "v2": "feed/v2"}})
	r.experiment("feed", `{"shadow": {"versions": ["v1b", "v2"], "fraction": 1}}`)
	res := r.run(sim.Config{Requests: 300, Seed: 8, RequestPrefix: "shadow-"})
	if res.ByVersion["v1"].Impressions != res.Impressions {
		t.Fatalf("shadow versions answered requests: %v", res.ByVersion)
	}
	var rep *routerv1.GetExperimentReportResponse
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		rep = r.report("feed")
		if len(rep.GetShadow()) == 2 && rep.GetShadow()[0].GetCompared() == 300 && rep.GetShadow()[1].GetCompared() == 300 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	same, other := rep.GetShadow()[0], rep.GetShadow()[1]
	t.Logf("v1b: %v\nv2: %v", same, other)
	if same.GetCompared() != 300 || same.GetTopkOverlap() != 1 || same.GetKendallTau() != 1 || same.GetMeanPctrRatio() != 1 || same.GetPsi() != 0 || same.GetErrors() != 0 {
		t.Errorf("identical shadow: %v", same)
	}
	if other.GetCompared() != 300 || other.GetTopkOverlap() >= 1 || other.GetKendallTau() >= 0.99 || other.GetPsi() <= 0 {
		t.Errorf("different shadow: %v", other)
	}
}

// Events: idempotent, and unknown or expired impressions are rejected and
// counted.
func TestEvents(t *testing.T) {
	r := newRig(t, rigOptions{window: 300 * time.Millisecond})
	resp, err := r.client.Rank(context.Background(), &routerv1.RankRequest{UserId: "u9", Domain: "feed", Slots: 1,
		Candidates: []*routerv1.Candidate{{AdId: "ad1", BidMicros: 1000}}})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetResults()[0].GetImpressionId()
	click := &routerv1.Event{ImpressionId: id, Type: routerv1.EventType_EVENT_TYPE_CLICK}
	conv := &routerv1.Event{ImpressionId: id, Type: routerv1.EventType_EVENT_TYPE_CONVERSION, Value: 12.5}
	got, err := r.client.ReportEvents(context.Background(), &routerv1.ReportEventsRequest{Events: []*routerv1.Event{
		click, click, conv, {ImpressionId: "no-such-impression", Type: routerv1.EventType_EVENT_TYPE_CLICK},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetAccepted() != 2 || got.GetDuplicates() != 1 || got.GetRejected() != 1 || got.GetResults()[3] != routerv1.EventResult_EVENT_RESULT_UNKNOWN_IMPRESSION {
		t.Errorf("results %v", got)
	}
	r.clock.advance(400 * time.Millisecond) // past the 300 ms window
	late, err := r.client.ReportEvents(context.Background(), &routerv1.ReportEventsRequest{Events: []*routerv1.Event{
		{ImpressionId: id, Type: routerv1.EventType_EVENT_TYPE_CLICK, EventId: "second-click"},
	}})
	if err != nil || late.GetResults()[0] != routerv1.EventResult_EVENT_RESULT_EXPIRED {
		t.Errorf("late event: %v %v", late, err)
	}
	rep := r.report("feed")
	if rep.GetEventsRejected() != 2 || rep.GetEventsDuplicate() != 1 {
		t.Errorf("counted rejected %v, duplicate %v", rep.GetEventsRejected(), rep.GetEventsDuplicate())
	}
	for _, bad := range []*routerv1.Event{{Type: routerv1.EventType_EVENT_TYPE_CLICK}, {ImpressionId: id}, {ImpressionId: id, Type: routerv1.EventType_EVENT_TYPE_CONVERSION, Value: -1}} {
		if _, err := r.client.ReportEvents(context.Background(), &routerv1.ReportEventsRequest{Events: []*routerv1.Event{bad}}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: %v", bad, err)
		}
	}
}

// Bandit state stays correct with two router replicas sharing Redis: every
// impression and click of both is counted once. (Durability across a
// restart: TestBanditStateSurvivesARestart.)
func TestBanditStateIsSharedByReplicas(t *testing.T) {
	srv := redistest.Start(t)
	open := func() store.Store {
		s, err := store.OpenRedis(context.Background(), srv.Addr, "replicas:")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	versions := map[string]string{"v1": "feed/v1", "a": "feed/v2", "b": "feed/v2"}
	doc := `{"bandit": {"policy": "thompson", "versions": ["a", "b"]}}`
	r1, r2 := newRig(t, rigOptions{store: open(), versions: versions}), newRig(t, rigOptions{store: open(), versions: versions})
	r1.experiment("feed", doc)
	r2.experiment("feed", doc)
	var wg sync.WaitGroup
	results := make([]*sim.Result, 2)
	for i, r := range []*rig{r1, r2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := sim.Run(context.Background(), r.client, r.world, sim.Config{Domain: "feed", Requests: 600, Seed: uint64(i), Concurrency: 4, RequestPrefix: fmt.Sprintf("replica%d-", i)})
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		}()
	}
	wg.Wait()
	_ = r2.report("feed") // flushes r2's recorded impressions
	arms := r1.report("feed").GetBandit().GetArms()
	var imps, clicks float64
	for _, a := range arms {
		imps += a.GetImpressions()
		clicks += a.GetClicks()
	}
	want := results[0].Impressions + results[1].Impressions
	wantClicks := results[0].Clicks + results[1].Clicks
	if int(imps) != want || int(clicks) != wantClicks {
		t.Errorf("shared bandit counts %v impressions, %v clicks; the replicas served %d and saw %d", imps, clicks, want, wantClicks)
	}
}

// Bandit state survives a router restart: a new router on the same state
// file resumes with the same counts and allocation.
func TestBanditStateSurvivesARestart(t *testing.T) {
	path := t.TempDir() + "/state.db"
	versions := map[string]string{"v1": "feed/v1", "a": "feed/v2", "b": "feed/v2"}
	doc := `{"bandit": {"policy": "epsilon_greedy", "versions": ["a", "b"]}}`
	var before []*routerv1.BanditArm
	t.Run("first router", func(t *testing.T) {
		st, err := store.OpenBolt(path)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		r := newRig(t, rigOptions{store: st, versions: versions})
		r.experiment("feed", doc)
		r.refresh()
		r.run(sim.Config{Requests: 500, Seed: 4, RequestPrefix: "restart-", Lift: map[string]float64{"b": 1.5}})
		r.refresh()
		before = r.report("feed").GetBandit().GetArms()
	})
	st, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := newRig(t, rigOptions{store: st, versions: versions})
	r.experiment("feed", doc)
	r.refresh() // reads the stored counts
	after := r.report("feed").GetBandit().GetArms()
	for i := range before {
		if before[i].GetImpressions() != after[i].GetImpressions() || before[i].GetClicks() != after[i].GetClicks() || before[i].GetAllocation() != after[i].GetAllocation() {
			t.Errorf("arm %s before %v, after restart %v", before[i].GetVersion(), before[i], after[i])
		}
	}
	if before[0].GetImpressions() == 0 {
		t.Error("nothing was counted before the restart")
	}
}

// stuckRanker is a shadow that never answers until released.
type stuckRanker struct {
	rankerv1.UnimplementedRankerServiceServer
	release chan struct{}
}

func (s stuckRanker) Score(ctx context.Context, _ *rankerv1.ScoreRequest) (*rankerv1.ScoreResponse, error) {
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return nil, errors.New("stuck shadow")
}

// A stuck shadow never blocks the caller: with a shadow that never answers,
// one shadow worker and a queue of 8, every one of 100 requests is answered
// at once (waiting for the shadow would mean waiting forever), exactly 9
// jobs are taken (one by the worker, 8 by the queue), and the other 91 are
// dropped and counted.
func TestStuckShadowNeverBlocks(t *testing.T) {
	stuck := stuckRanker{release: make(chan struct{})}
	r := newRig(t, rigOptions{shadowQueue: 8})
	r.pipe.SetRanker("feed", "v2", stuck)
	t.Cleanup(func() { close(stuck.release) }) // before the rig's own cleanup: last in, first out
	r.experiment("feed", `{"shadow": {"versions": ["v2"], "fraction": 1}}`)
	for i := range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp, err := r.client.Rank(ctx, &routerv1.RankRequest{RequestId: fmt.Sprintf("stuck-%d", i), UserId: "u1", Domain: "feed", Slots: 2,
			Candidates: []*routerv1.Candidate{{AdId: "ad1", BidMicros: 1000}, {AdId: "ad2", BidMicros: 900}}})
		cancel()
		if err != nil || !resp.GetAssignment().GetShadowed() {
			t.Fatalf("request %d: %v %v", i, resp.GetAssignment(), err)
		}
	}
	sh := r.report("feed").GetShadow()[0]
	t.Logf("shadow compared %v, dropped %v, errors %v", sh.GetCompared(), sh.GetDropped(), sh.GetErrors())
	if sh.GetDropped() != 91 || sh.GetCompared() != 0 || sh.GetErrors() != 0 {
		t.Errorf("stuck shadow: dropped %v, compared %v, errors %v; want 91 dropped of 100, none compared", sh.GetDropped(), sh.GetCompared(), sh.GetErrors())
	}
}

// However short its interval, a canary steps up only once its guardrails
// have had the requests they need.
func TestCanaryWaitsForData(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.experiment("feed", `{"canary": {"version": "v2", "steps": [1, 100], "stepInterval": "1s", "guardrails": {"minRequests": 50}}}`)
	r.refresh()
	r.run(sim.Config{Requests: 50, Seed: 3, RequestPrefix: "few-"}) // about one canary request at 1%
	for range 5 {
		r.clock.advance(time.Hour)
		r.refresh()
	}
	if c := r.report("feed").GetCanary(); c.GetState() != "running" || c.GetSharePercent() != 1 {
		t.Fatalf("canary stepped up without data: %v", c)
	}
}

// The canary's CTR and revenue guardrails through the real router, checked
// at every refresh: healthy canaries (production's own model under another
// name) stay, and canaries whose CTR is truly 40% lower are rolled back for
// it. Each run has a canary version of its own, so the users it gets (hash
// of version and user) differ from run to run, as they would between real
// canaries. The rates themselves (false rollbacks at most alpha over 100
// looks; a 20% drop caught in at least 80% of runs) are simulated at scale
// in lab's TestGuardrailsAreAnytimeValid, on the guardrails' own decision.
func TestCanaryGuardrailsRollBackADrop(t *testing.T) {
	const runs, looks, perLook, alpha = 5, 20, 100, 0.05
	versions := map[string]string{"v1": "feed/v1"}
	for i := range 2 * runs {
		versions[fmt.Sprintf("c%d", i)] = "feed/v1"
	}
	r := newRig(t, rigOptions{versions: versions})
	// run serves one canary for up to looks x perLook requests, refreshing
	// after each perLook, and returns after how many canary impressions it
	// was rolled back (0: never), and why.
	run := func(i int, lift float64) (int, string) {
		v := fmt.Sprintf("c%d", i)
		r.experiment("feed", fmt.Sprintf(`{"canary": {"version": %q, "steps": [50], "stepInterval": "1000h", "guardrails": {"alpha": %g, "minRequests": 1}}}`, v, alpha))
		r.refresh()
		imps := 0
		for look := range looks {
			res := r.run(sim.Config{Requests: perLook, Seed: uint64(1000*i + look), RequestPrefix: fmt.Sprintf("g%d-%d-", i, look), Lift: map[string]float64{v: lift}})
			if tl := res.ByVersion[v]; tl != nil {
				imps += tl.Impressions
			}
			r.refresh()
			if c := r.report("feed").GetCanary(); c.GetState() == "rolled_back" {
				return imps, c.GetReason()
			}
		}
		return 0, ""
	}
	for i := range runs {
		if n, reason := run(i, 1); n > 0 {
			t.Errorf("healthy canary %d rolled back after %d impressions: %s", i, n, reason)
		}
	}
	for i := runs; i < 2*runs; i++ {
		n, reason := run(i, 0.6)
		t.Logf("canary %d, CTR 40%% lower: rolled back after %d canary impressions: %s", i, n, reason)
		// Fewer clicks are also less revenue: either guardrail may fire first.
		if n == 0 || !(strings.HasPrefix(reason, "CTR") || strings.HasPrefix(reason, "revenue per impression")) {
			t.Errorf("canary %d with a 40%% lower CTR not rolled back for its outcomes within %d requests: %q", i, looks*perLook, reason)
		}
	}
	c := r.report("feed").GetCanary()
	if p := min(c.GetDropPValues()["ctr"], c.GetDropPValues()["revenue_per_impression"]); len(c.GetDropPValues()) != 2 || p >= alpha/2 || c.GetAlpha() != alpha {
		t.Errorf("the report's guardrail p-values %v, alpha %v", c.GetDropPValues(), c.GetAlpha())
	}
}

// Off-policy evaluation: production (v1) serves with a logged share of its
// requests explored; the estimate of v2's first-slot click rate, from those
// logs alone, is then checked against the rate v2 actually gets when it
// serves the same kind of traffic (its expected clicks, without sampling
// noise, over 6,000 requests). Each of 40 seeds logs 1,500 requests, half
// of them explored; the 95% intervals must cover the truth in at least 90%
// of seeds.
func TestOffPolicyEvaluationCoversTheTruth(t *testing.T) {
	versions := map[string]string{"v1": "feed/v1", "v2": "feed/v2"}
	truthRig := newRig(t, rigOptions{versions: versions})
	truthRig.experiment("feed", `{"production": "v2"}`)
	served := truthRig.run(sim.Config{Requests: 6000, Seed: 500, RequestPrefix: "truth-"})
	truth := served.TopExpected / float64(served.Requests)
	const seeds = 40
	covered := map[string]int{}
	var width, logged map[string]float64 = map[string]float64{}, map[string]float64{}
	for seed := range seeds {
		r := newRig(t, rigOptions{versions: versions})
		r.experiment("feed", `{"explore": {"share": 1, "epsilon": 0.5}}`)
		res := r.run(sim.Config{Requests: 1500, Seed: uint64(600 + seed), RequestPrefix: fmt.Sprintf("ope%d-", seed)})
		if res.Impressions != 3*res.Requests {
			t.Fatalf("exploration changed how many ads are shown: %d impressions for %d requests", res.Impressions, res.Requests)
		}
		r.report("feed") // flush
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		e, err := r.client.EvaluateOffPolicy(ctx, &routerv1.EvaluateOffPolicyRequest{Domain: "feed", Candidate: "v2"})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if e.GetRecords() != 1500 || e.GetSkipped() != 0 {
			t.Fatalf("seed %d: %v records, %v skipped, want 1500 and 0", seed, e.GetRecords(), e.GetSkipped())
		}
		logged["ctr"] += e.GetLoggedCtr() / seeds
		logged["match"] += e.GetMatchRate() / seeds
		for name, iv := range map[string]*routerv1.OffPolicyEstimate{"ips": e.GetIps(), "snips": e.GetSnips(), "dr": e.GetDoublyRobust()} {
			if iv.GetCiLow() <= truth && truth <= iv.GetCiHigh() {
				covered[name]++
			}
			width[name] += (iv.GetCiHigh() - iv.GetCiLow()) / seeds
		}
		if seed == 0 {
			t.Logf("seed 0: %v", e)
		}
	}
	t.Logf("v2's true first-slot CTR %.4f; production's logged %.4f; v2 agrees with what was shown in %.0f%% of requests; intervals cover the truth in %v of %d seeds; mean widths %v",
		truth, logged["ctr"], 100*logged["match"], covered, seeds, width)
	for _, name := range []string{"ips", "snips", "dr"} {
		if covered[name] < seeds*9/10 {
			t.Errorf("%s covers v2's true CTR in %d of %d seeds", name, covered[name], seeds)
		}
	}
}
