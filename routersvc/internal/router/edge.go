package router

import (
	"context"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/routersvc/internal/core"
	"github.com/adrank/adrank/routersvc/internal/lab"
)

// GetEdgePlan implements RouterService.
func (s *Server) GetEdgePlan(ctx context.Context, req *routerv1.GetEdgePlanRequest) (*routerv1.GetEdgePlanResponse, error) {
	p, err := s.core.EdgePlan(ctx, req.GetDomain())
	if err != nil {
		return nil, Status(err)
	}
	out := &routerv1.GetEdgePlanResponse{
		Domain: p.Domain, ProductionVersion: p.Production, ExperimentId: p.Experiment,
		AuctionConfig: string(p.AuctionConfig), ModelSha256: p.ModelSHA256,
	}
	if ab := p.AB; ab != nil {
		out.Ab = &routerv1.EdgeAB{Salt: ab.Salt}
		for _, a := range ab.Arms {
			out.Ab.Arms = append(out.Ab.Arms, &routerv1.EdgeArm{Version: a.Version, Weight: a.Weight})
		}
	}
	if c := p.Canary; c != nil {
		out.Canary = &routerv1.EdgeCanary{Version: c.Version, SharePercent: c.SharePercent, InternalUsers: c.InternalUsers, RolledBack: c.RolledBack}
	}
	return out, nil
}

// GetEdgeFeatures implements RouterService.
func (s *Server) GetEdgeFeatures(ctx context.Context, req *routerv1.GetEdgeFeaturesRequest) (*routerv1.GetEdgeFeaturesResponse, error) {
	f, err := s.core.EdgeFeatures(ctx, req.GetDomain(), req.GetUserId(), req.GetAdIds())
	if err != nil {
		return nil, Status(err)
	}
	out := &routerv1.GetEdgeFeaturesResponse{User: f.User, Ads: make([]*routerv1.EdgeAdFeatures, len(f.Ads))}
	for i, a := range f.Ads {
		out.Ads[i] = &routerv1.EdgeAdFeatures{AdId: req.GetAdIds()[i], Features: a}
	}
	return out, nil
}

// ReportEdgeImpressions implements RouterService.
func (s *Server) ReportEdgeImpressions(ctx context.Context, req *routerv1.ReportEdgeImpressionsRequest) (*routerv1.ReportEdgeImpressionsResponse, error) {
	served := make([]core.EdgeServed, len(req.GetServed()))
	for i, sv := range req.GetServed() {
		es := core.EdgeServed{RequestID: sv.GetRequestId(), UserID: sv.GetUserId(), Version: sv.GetVersion(), ModelSHA256: sv.GetModelSha256()}
		for _, r := range sv.GetResults() {
			es.Results = append(es.Results, core.EdgeResult{AdID: r.GetAdId(), Slot: int(r.GetSlot()), PriceMicros: r.GetPriceMicros(), ImpressionID: r.GetImpressionId()})
		}
		served[i] = es
	}
	outcomes, err := s.core.ReportEdgeImpressions(ctx, req.GetDomain(), served)
	if err != nil {
		return nil, Status(err)
	}
	out := &routerv1.ReportEdgeImpressionsResponse{Results: make([]*routerv1.EdgeServedResult, len(outcomes))}
	for i, o := range outcomes {
		out.Results[i] = &routerv1.EdgeServedResult{Result: eventResults[o.Result], Reason: o.Reason, ImpressionIds: o.ImpressionIDs}
		switch o.Result {
		case lab.Accepted:
			out.Accepted++
		case lab.Duplicate:
			out.Duplicates++
		default:
			out.Rejected++
		}
	}
	return out, nil
}
