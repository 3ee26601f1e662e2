package router

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/routersvc/internal/core"
	"github.com/adrank/adrank/routersvc/internal/lab"
	"github.com/adrank/adrank/routersvc/internal/stats"
)

var eventResults = map[lab.EventResult]routerv1.EventResult{
	lab.Accepted:          routerv1.EventResult_EVENT_RESULT_ACCEPTED,
	lab.Duplicate:         routerv1.EventResult_EVENT_RESULT_DUPLICATE,
	lab.UnknownImpression: routerv1.EventResult_EVENT_RESULT_UNKNOWN_IMPRESSION,
	lab.Expired:           routerv1.EventResult_EVENT_RESULT_EXPIRED,
	lab.Rejected:          routerv1.EventResult_EVENT_RESULT_REJECTED,
	lab.Forged:            routerv1.EventResult_EVENT_RESULT_REJECTED,
}

// ReportEvents implements RouterService.
func (s *Server) ReportEvents(ctx context.Context, req *routerv1.ReportEventsRequest) (*routerv1.ReportEventsResponse, error) {
	results, err := s.core.ReportEvents(ctx, Events(req))
	if err != nil {
		return nil, Status(err)
	}
	resp := &routerv1.ReportEventsResponse{Results: make([]routerv1.EventResult, len(results))}
	for i, res := range results {
		resp.Results[i] = eventResults[res]
		switch res {
		case lab.Accepted:
			resp.Accepted++
		case lab.Duplicate:
			resp.Duplicates++
		default:
			resp.Rejected++
		}
	}
	return resp, nil
}

// Events are a ReportEventsRequest's events in the core's types.
func Events(req *routerv1.ReportEventsRequest) []core.Event {
	events := make([]core.Event, len(req.GetEvents()))
	for i, e := range req.GetEvents() {
		events[i] = core.Event{ImpressionID: e.GetImpressionId(), Type: core.EventType(e.GetType()), Value: e.GetValue(), EventID: e.GetEventId()}
	}
	return events
}

// GetExperimentReport implements RouterService.
func (s *Server) GetExperimentReport(ctx context.Context, req *routerv1.GetExperimentReportRequest) (*routerv1.GetExperimentReportResponse, error) {
	r, err := s.core.Report(ctx, req.GetDomain())
	if err != nil {
		return nil, Status(err)
	}
	return Report(r), nil
}

// PromoteCanary implements RouterService.
func (s *Server) PromoteCanary(ctx context.Context, req *routerv1.PromoteCanaryRequest) (*routerv1.PromoteCanaryResponse, error) {
	v, err := s.core.PromoteCanary(ctx, req.GetDomain())
	if err != nil {
		return nil, Status(err)
	}
	return &routerv1.PromoteCanaryResponse{ProductionVersion: v}, nil
}

// RollbackCanary implements RouterService.
func (s *Server) RollbackCanary(ctx context.Context, req *routerv1.RollbackCanaryRequest) (*routerv1.RollbackCanaryResponse, error) {
	if err := s.core.RollbackCanary(ctx, req.GetDomain(), req.GetReason()); err != nil {
		return nil, Status(err)
	}
	return &routerv1.RollbackCanaryResponse{}, nil
}

// Report is the core's report as a proto.
func Report(r *core.Report) *routerv1.GetExperimentReportResponse {
	out := &routerv1.GetExperimentReportResponse{
		Domain: r.Domain, ProductionVersion: r.ProductionVersion, Experiment: r.Experiment, ExperimentId: r.ExperimentID,
		ConfigError: r.ConfigError, EventsRejected: r.EventsRejected, EventsDuplicate: r.EventsDuplicate,
		EdgeImpressionsRejected: r.EdgeRejected, RecordsDropped: r.RecordsDropped, StateError: r.StateError,
		EventsForged: r.EventsForged,
	}
	if !r.ConfigLoadedAt.IsZero() {
		out.ConfigLoadedAt = timestamppb.New(r.ConfigLoadedAt)
	}
	for _, s := range r.Staleness {
		out.Staleness = append(out.Staleness, &routerv1.Staleness{
			Age: s.Age, Requests: s.Requests, Pairs: s.Pairs, MeanAbsDiff: s.MeanAbsDiff,
			TopkOverlap: s.TopKOverlap, RankCorrelation: s.RankCorrelation,
		})
	}
	for _, v := range r.Versions {
		out.Versions = append(out.Versions, &routerv1.VersionHealth{
			Version: v.Version, Requests: v.Requests, Errors: v.Errors, Fallbacks: v.Fallbacks,
			LatencyP50Ms: v.LatencyP50Ms, LatencyP99Ms: v.LatencyP99Ms,
		})
	}
	for _, s := range r.Shadow {
		out.Shadow = append(out.Shadow, &routerv1.ShadowStats{
			Version: s.Version, Compared: s.Compared, Dropped: s.Dropped, Errors: s.Errors,
			LatencyP50Ms: s.LatencyP50Ms, LatencyP99Ms: s.LatencyP99Ms,
			TopkOverlap: s.TopKOverlap, KendallTau: s.KendallTau, MeanPctrRatio: s.MeanPctrRatio, Psi: s.PSI,
		})
	}
	if c := r.Canary; c != nil {
		out.Canary = &routerv1.CanaryReport{
			Version: c.Version, State: string(c.State), Step: int32(c.Step), SharePercent: c.SharePercent,
			StepStartedAt: timestamppb.New(c.StepStartedAt), Reason: c.Reason,
			Canary: groupStats(c.Canary), Control: groupStats(c.Control), CtrPValue: c.CTRPValue,
			DropPValues: c.DropPValues, Alpha: c.Alpha,
		}
	}
	if ab := r.AB; ab != nil {
		p := &routerv1.ABReport{
			Salt: ab.Salt, Weights: ab.Weights, Alpha: ab.Alpha, MinimalDetectableEffect: ab.MinimalDetectableEffect,
			SrmChi2: ab.SRMChi2, SrmPValue: ab.SRMPValue, SrmFlagged: ab.SRMFlagged,
		}
		for _, g := range ab.Arms {
			p.Arms = append(p.Arms, groupStats(g))
		}
		for _, t := range ab.Tests {
			p.Tests = append(p.Tests, Test(t))
		}
		out.Ab = p
	}
	if b := r.Bandit; b != nil {
		p := &routerv1.BanditReport{Policy: b.Policy}
		for _, a := range b.Arms {
			p.Arms = append(p.Arms, &routerv1.BanditArm{Version: a.Version, Impressions: a.Impressions, Clicks: a.Clicks, Mean: a.Mean, Allocation: a.Allocation})
		}
		out.Bandit = p
	}
	if in := r.Interleave; in != nil {
		out.Interleave = interleaveReport(in)
	}
	return out
}

func groupStats(g lab.GroupStats) *routerv1.GroupStats {
	return &routerv1.GroupStats{
		Group: g.Group, Version: g.Version, Users: g.Users, Impressions: g.Impressions, Clicks: g.Clicks, Ctr: g.CTR,
		Conversions: g.Conversions, ConversionValue: g.ConversionValue, RevenueMicros: g.RevenueMicros,
		RevenuePerUserMicros: g.RevenuePerUserMicros, ConversionRate: g.ConversionRate,
	}
}

// Test is one A/B comparison as a proto.
func Test(t lab.TestResult) *routerv1.Test {
	return &routerv1.Test{
		Metric: t.Metric, VarianceReduction: t.VarianceReduction, Control: t.Control, Treatment: t.Treatment, Diff: t.Diff, CiLow: t.CILow, CiHigh: t.CIHigh, RelativeLift: t.RelativeLift,
		PValue: t.PValue, AlwaysValidPValue: t.AlwaysValidPValue, HolmPValue: t.HolmPValue, Verdict: t.Verdict,
		NeededImpressionsPerArm: t.NeededImpressionsPerArm, RemainingImpressionsPerArm: t.RemainingImpressionsPerArm,
	}
}

// EvaluateOffPolicy implements RouterService.
func (s *Server) EvaluateOffPolicy(ctx context.Context, req *routerv1.EvaluateOffPolicyRequest) (*routerv1.EvaluateOffPolicyResponse, error) {
	r, err := s.core.EvaluateOffPolicy(ctx, req.GetDomain(), req.GetCandidate(), req.GetAlpha())
	if err != nil {
		return nil, Status(err)
	}
	est := func(iv stats.Interval) *routerv1.OffPolicyEstimate {
		return &routerv1.OffPolicyEstimate{Value: stats.Finite(iv.Value), CiLow: stats.Finite(iv.Low), CiHigh: stats.Finite(iv.High)}
	}
	return &routerv1.EvaluateOffPolicyResponse{
		Domain: r.Domain, Candidate: r.Candidate, ProductionVersion: r.Production,
		Records: r.Records, Clicks: r.Clicks, LoggedCtr: r.LoggedCTR, Skipped: r.Skipped,
		MatchRate: r.MatchRate, EffectiveSampleSize: r.ESS,
		Ips: est(r.IPS), Snips: est(r.SNIPS), DoublyRobust: est(r.DR), Alpha: r.Alpha,
	}, nil
}

func interleaveReport(in *lab.InterleaveReport) *routerv1.InterleaveReport {
	out := &routerv1.InterleaveReport{
		A: in.A, B: in.B, Fraction: in.Fraction, WinsA: in.WinsA, Ties: in.Ties, WinsB: in.WinsB, PValue: in.PValue, Verdict: in.Verdict,
		CreditA: in.CreditA, AlwaysValidPValue: in.AlwaysValidPValue, PerRequestAlwaysValidPValue: in.PerRequestAlwaysValidPValue, Alpha: in.Alpha,
		HolmPValue: in.HolmPValue, Versions: in.Versions,
	}
	for i := range in.Pairs {
		out.Pairs = append(out.Pairs, interleaveReport(&in.Pairs[i]))
	}
	return out
}

// exportBatch is how many training rows each message carries.
const exportBatch = 500

// ExportTrainingData implements RouterService.
func (s *Server) ExportTrainingData(req *routerv1.ExportTrainingDataRequest, stream grpc.ServerStreamingServer[routerv1.ExportTrainingDataResponse]) error {
	msg := &routerv1.ExportTrainingDataResponse{}
	first := true
	skipped, err := s.core.ExportTrainingRows(stream.Context(), req.GetDomain(), func(names []string, r core.TrainingRow) error {
		if first {
			msg.FeatureNames, first = names, false
		}
		msg.Rows = append(msg.Rows, &routerv1.TrainingRow{
			RequestId: r.RequestID, UserId: r.UserID, AdId: r.AdID, Version: r.Version, Time: timestamppb.New(r.At),
			Slot: int32(r.Slot), Values: r.Values, Click: r.Click,
		})
		if len(msg.Rows) < exportBatch {
			return nil
		}
		err := stream.Send(msg)
		msg = &routerv1.ExportTrainingDataResponse{}
		return err
	})
	if err != nil {
		return Status(err)
	}
	msg.Skipped = int64(skipped)
	return stream.Send(msg)
}
