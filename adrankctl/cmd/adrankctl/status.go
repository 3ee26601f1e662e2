package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/tlsx"
)

// routerFlags are the flags of the commands that call the router.
type routerFlags struct {
	addr    string
	token   string
	output  string
	tls     tlsx.Config
	timeout time.Duration // 0: callTimeout
}

func (r *routerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.addr, "router", "127.0.0.1:9090", "router gRPC address")
	fs.StringVar(&r.token, "token", os.Getenv("ADRANK_TOKEN"), "bearer token (default $ADRANK_TOKEN), for a router started with --tokens")
	fs.StringVar(&r.output, "output", "table", "table or json")
	r.tls.RegisterClient(fs)
}

// dial connects to the router; call with the returned context, which
// carries the token and callTimeout.
func (r *routerFlags) dial(ctx context.Context) (routerv1.RouterServiceClient, context.Context, func(), error) {
	if r.output != "table" && r.output != "json" {
		return nil, nil, nil, fmt.Errorf("--output %q: want table or json", r.output)
	}
	creds, err := r.tls.DialOption()
	if err != nil {
		return nil, nil, nil, err
	}
	cc, err := grpc.NewClient(r.addr, creds)
	if err != nil {
		return nil, nil, nil, err
	}
	timeout := r.timeout
	if timeout <= 0 {
		timeout = callTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	if r.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+r.token)
	}
	return routerv1.NewRouterServiceClient(cc), ctx, func() { cancel(); cc.Close() }, nil
}

// printJSON writes m as the REST API writes it.
func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// routerCommand parses the flags of a command that calls the router, with
// more of its own (more may be nil), and returns the positional arguments.
func routerCommand(name string, args []string, stderr io.Writer, more func(*flag.FlagSet)) (*routerFlags, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	rf := &routerFlags{}
	rf.register(fs)
	if more != nil {
		more(fs)
	}
	pos, err := parseArgs(fs, args)
	return rf, pos, err
}

func runVersions(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	rf, pos, err := routerCommand("versions", args, stderr, nil)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return errors.New("usage: adrankctl versions [DOMAIN] [--router ADDR] [--output table|json]")
	}
	client, ctx, done, err := rf.dial(ctx)
	if err != nil {
		return err
	}
	defer done()
	resp, err := client.ListDomains(ctx, &routerv1.ListDomainsRequest{})
	if err != nil {
		return err
	}
	if len(pos) == 1 {
		var keep []*routerv1.DomainInfo
		for _, d := range resp.GetDomains() {
			if d.GetDomain() == pos[0] {
				keep = append(keep, d)
			}
		}
		if len(keep) == 0 {
			return fmt.Errorf("domain %q is not known to the router", pos[0])
		}
		resp.Domains = keep
	}
	if rf.output == "json" {
		return printJSON(stdout, resp)
	}
	return versionsTable(stdout, resp)
}

func versionsTable(w io.Writer, resp *routerv1.ListDomainsResponse) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tVERSION\tROLE\tHEALTHY\tMODEL\tMODE\tNOTES")
	for _, d := range resp.GetDomains() {
		notes := []string{}
		for _, e := range []struct{ what, msg string }{{"config", d.GetConfigError()}, {"auction config", d.GetAuctionConfigError()}} {
			if e.msg != "" {
				notes = append(notes, e.what+": "+e.msg)
			}
		}
		if s := d.GetSnapshot(); s != nil && s.GetGeneration() != "" {
			notes = append(notes, fmt.Sprintf("snapshot %s (%s, %d users, %s old)", s.GetGeneration(), s.GetVersion(), s.GetUsers(), age(s.GetAgeMs())))
		}
		if len(d.GetVersions()) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t%s\t%s\n", d.GetDomain(), d.GetMode(), strings.Join(notes, "; "))
		}
		for i, v := range d.GetVersions() {
			role := ""
			if v.GetVersion() == d.GetProductionVersion() {
				role = "production"
			}
			n := notes
			if i > 0 {
				n = nil
			}
			if v.GetModelConflict() != "" {
				n = append(n, v.GetModelConflict())
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%.12s\t%s\t%s\n", d.GetDomain(), v.GetVersion(), role, v.GetHealthyInstances(), v.GetTotalInstances(),
				v.GetModelSha256(), d.GetMode(), strings.Join(n, "; "))
		}
	}
	for _, l := range resp.GetStreamLag() {
		fmt.Fprintf(tw, "stream lag\t%s\t%s\t%d\t\t\t\n", l.GetTopic(), l.GetGroup(), l.GetLag())
	}
	return tw.Flush()
}

func age(ms int64) string {
	switch {
	case ms < 60_000:
		return fmt.Sprintf("%ds", ms/1000)
	case ms < 3_600_000:
		return fmt.Sprintf("%dm", ms/60_000)
	}
	return fmt.Sprintf("%.1fh", float64(ms)/3_600_000)
}

func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	rf, pos, err := routerCommand("report", args, stderr, nil)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: adrankctl report DOMAIN [--router ADDR] [--output table|json]")
	}
	client, ctx, done, err := rf.dial(ctx)
	if err != nil {
		return err
	}
	defer done()
	r, err := client.GetExperimentReport(ctx, &routerv1.GetExperimentReportRequest{Domain: pos[0]})
	if err != nil {
		return err
	}
	if rf.output == "json" {
		return printJSON(stdout, r)
	}
	return reportTables(stdout, r)
}

func pct(x float64) string { return fmt.Sprintf("%.2f%%", 100*x) }

func reportTables(w io.Writer, r *routerv1.GetExperimentReportResponse) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	exp := r.GetExperimentId()
	if exp == "" {
		exp = "none"
	}
	fmt.Fprintf(tw, "domain %s: production %s, experiment %s\n", r.GetDomain(), r.GetProductionVersion(), exp)
	if e := r.GetConfigError(); e != "" {
		fmt.Fprintf(tw, "experiment config refused: %s\n", e)
	}
	group := func(g *routerv1.GroupStats) string {
		return fmt.Sprintf("%s\t%s\t%.0f\t%.0f\t%.0f\t%s\t%.0f\t%.0f", g.GetGroup(), g.GetVersion(), g.GetUsers(), g.GetImpressions(), g.GetClicks(), pct(g.GetCtr()), g.GetConversions(), g.GetRevenueMicros()/1e6)
	}
	const groupHead = "GROUP\tVERSION\tUSERS\tIMPRESSIONS\tCLICKS\tCTR\tCONVERSIONS\tREVENUE"
	if ab := r.GetAb(); ab != nil {
		fmt.Fprintf(tw, "\nA/B test (salt %s, alpha %g, MDE %s)\n%s\tWEIGHT\n", ab.GetSalt(), ab.GetAlpha(), pct(ab.GetMinimalDetectableEffect()), groupHead)
		for i, a := range ab.GetArms() {
			weight := 0.0
			if i < len(ab.GetWeights()) {
				weight = ab.GetWeights()[i]
			}
			fmt.Fprintf(tw, "%s\t%g\n", group(a), weight)
		}
		srm := "ok"
		if ab.GetSrmFlagged() {
			srm = "FLAGGED: the arms' traffic does not match their weights; do not trust these results"
		}
		fmt.Fprintf(tw, "sample ratio: chi2 %.2f, p %.3g: %s\n\nMETRIC\tCONTROL\tTREATMENT\tDIFF\t95%% CI\tLIFT\tCUPED\tP\tALWAYS-VALID P\tHOLM P\tVERDICT\tIMPRESSIONS STILL NEEDED\n", ab.GetSrmChi2(), ab.GetSrmPValue(), srm)
		for _, t := range ab.GetTests() {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%+.4g\t[%+.4g, %+.4g]\t%+.1f%%\t-%.0f%% var\t%.3g\t%.3g\t%.3g\t%s\t%.0f\n", t.GetMetric(), t.GetControl(), t.GetTreatment(), t.GetDiff(), t.GetCiLow(), t.GetCiHigh(),
				100*t.GetRelativeLift(), 100*t.GetVarianceReduction(), t.GetPValue(), t.GetAlwaysValidPValue(), t.GetHolmPValue(), t.GetVerdict(), t.GetRemainingImpressionsPerArm())
		}
	}
	if c := r.GetCanary(); c != nil {
		fmt.Fprintf(tw, "\ncanary %s: %s, step %d at %.1f%% of users", c.GetVersion(), c.GetState(), c.GetStep(), c.GetSharePercent())
		if c.GetReason() != "" {
			fmt.Fprintf(tw, " (%s)", c.GetReason())
		}
		fmt.Fprintf(tw, "; always-valid p against a drop: CTR %.3g, revenue per impression %.3g (rolled back below %g)\n%s\n%s\n%s\n",
			pOr1(c.GetDropPValues(), "ctr"), pOr1(c.GetDropPValues(), "revenue_per_impression"), c.GetAlpha()/2, groupHead, group(c.GetCanary()), group(c.GetControl()))
	}
	if b := r.GetBandit(); b != nil {
		fmt.Fprintf(tw, "\nbandit (%s)\nVERSION\tIMPRESSIONS\tCLICKS\tMEAN\tALLOCATION\n", b.GetPolicy())
		for _, a := range b.GetArms() {
			fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.4f\t%s\n", a.GetVersion(), a.GetImpressions(), a.GetClicks(), a.GetMean(), pct(a.GetAllocation()))
		}
	}
	if in := r.GetInterleave(); in != nil {
		fmt.Fprintf(tw, "\ninterleaving %s vs %s on %s of requests: wins %.0f / ties %.0f / wins %.0f, credit per click %+.0f, always-valid p %.3g (per request %.3g, sign test %.3g): %s\n",
			in.GetA(), in.GetB(), pct(in.GetFraction()), in.GetWinsA(), in.GetTies(), in.GetWinsB(), in.GetCreditA(),
			in.GetAlwaysValidPValue(), in.GetPerRequestAlwaysValidPValue(), in.GetPValue(), in.GetVerdict())
		if len(in.GetPairs()) > 0 {
			fmt.Fprintf(tw, "multileaving %s, pair by pair:\nA\tB\tWINS A\tTIES\tWINS B\tCREDIT A\tALWAYS-VALID P\tHOLM P\tVERDICT\n", strings.Join(in.GetVersions(), ", "))
			for _, p := range in.GetPairs() {
				fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.0f\t%+.0f\t%.3g\t%.3g\t%s\n", p.GetA(), p.GetB(), p.GetWinsA(), p.GetTies(), p.GetWinsB(), p.GetCreditA(),
					p.GetAlwaysValidPValue(), p.GetHolmPValue(), p.GetVerdict())
			}
		}
	}
	if len(r.GetShadow()) > 0 {
		fmt.Fprintln(tw, "\nSHADOW\tCOMPARED\tDROPPED\tERRORS\tP99 MS\tTOP-K OVERLAP\tKENDALL TAU\tPCTR RATIO\tPSI")
		for _, s := range r.GetShadow() {
			fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%.1f\t%.3f\t%.3f\t%.3f\t%.3f\n", s.GetVersion(), s.GetCompared(), s.GetDropped(), s.GetErrors(), s.GetLatencyP99Ms(),
				s.GetTopkOverlap(), s.GetKendallTau(), s.GetMeanPctrRatio(), s.GetPsi())
		}
	}
	if len(r.GetVersions()) > 0 {
		fmt.Fprintln(tw, "\nVERSION\tREQUESTS\tERRORS\tFALLBACKS\tP50 MS\tP99 MS")
		for _, v := range r.GetVersions() {
			fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%.1f\t%.1f\n", v.GetVersion(), v.GetRequests(), v.GetErrors(), v.GetFallbacks(), v.GetLatencyP50Ms(), v.GetLatencyP99Ms())
		}
	}
	fmt.Fprintf(tw, "\nevents: %.0f refused (%.0f forged), %.0f duplicates; edge impressions refused %.0f; records dropped %.0f\n",
		r.GetEventsRejected(), r.GetEventsForged(), r.GetEventsDuplicate(), r.GetEdgeImpressionsRejected(), r.GetRecordsDropped())
	if e := r.GetStateError(); e != "" {
		fmt.Fprintf(tw, "state store: %s\n", e)
	}
	return tw.Flush()
}

// pOr1 is ps[k], or 1 when the test has no data yet.
func pOr1(ps map[string]float64, k string) float64 {
	if p, ok := ps[k]; ok {
		return p
	}
	return 1
}

func runOPE(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var domain, candidate *string
	var alpha *float64
	var timeout *time.Duration
	rf, pos, err := routerCommand("ope", args, stderr, func(fs *flag.FlagSet) {
		domain = fs.String("domain", "", "the domain (required)")
		candidate = fs.String("candidate", "", "the version to evaluate; its ranker must be registered (required)")
		alpha = fs.Float64("alpha", 0.05, "the intervals are 1 - alpha")
		timeout = fs.Duration("timeout", 2*time.Minute, "how long the router may take: it scores every logged request again")
	})
	if err != nil {
		return err
	}
	if len(pos) > 0 || *domain == "" || *candidate == "" {
		return errors.New("usage: adrankctl ope --domain DOMAIN --candidate VERSION [--alpha 0.05] [--router ADDR] [--output table|json]")
	}
	rf.timeout = *timeout
	client, ctx, done, err := rf.dial(ctx)
	if err != nil {
		return err
	}
	defer done()
	r, err := client.EvaluateOffPolicy(ctx, &routerv1.EvaluateOffPolicyRequest{Domain: *domain, Candidate: *candidate, Alpha: *alpha})
	if err != nil {
		return err
	}
	if rf.output == "json" {
		return printJSON(stdout, r)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "off-policy evaluation of %s/%s on %.0f requests production (%s) served and logged (%.0f skipped)\n",
		r.GetDomain(), r.GetCandidate(), r.GetRecords(), r.GetProductionVersion(), r.GetSkipped())
	fmt.Fprintf(tw, "shown first: CTR %s; %s agrees with it in %s of requests; effective sample size %.0f\n\n",
		pct(r.GetLoggedCtr()), r.GetCandidate(), pct(r.GetMatchRate()), r.GetEffectiveSampleSize())
	fmt.Fprintf(tw, "ESTIMATOR\tFIRST-SLOT CTR\t%g%% CI\n", 100*(1-r.GetAlpha()))
	for _, e := range []struct {
		name string
		est  *routerv1.OffPolicyEstimate
	}{{"IPS", r.GetIps()}, {"self-normalised IPS", r.GetSnips()}, {"doubly robust", r.GetDoublyRobust()}} {
		fmt.Fprintf(tw, "%s\t%s\t[%s, %s]\n", e.name, pct(e.est.GetValue()), pct(e.est.GetCiLow()), pct(e.est.GetCiHigh()))
	}
	return tw.Flush()
}
