package router

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/routersvc/internal/lab"
	"github.com/adrank/adrank/routersvc/internal/routing"
)

// MaxEvents bounds a ReportEvents batch.
const MaxEvents = 1000

var eventResults = map[int]routerv1.EventResult{
	lab.Accepted:          routerv1.EventResult_EVENT_RESULT_ACCEPTED,
	lab.Duplicate:         routerv1.EventResult_EVENT_RESULT_DUPLICATE,
	lab.UnknownImpression: routerv1.EventResult_EVENT_RESULT_UNKNOWN_IMPRESSION,
	lab.Expired:           routerv1.EventResult_EVENT_RESULT_EXPIRED,
}

// ReportEvents implements RouterService.
func (s *Server) ReportEvents(ctx context.Context, req *routerv1.ReportEventsRequest) (*routerv1.ReportEventsResponse, error) {
	if err := validateEvents(req); err != nil {
		return nil, err
	}
	return s.reportEvents(ctx, req)
}

func validateEvents(req *routerv1.ReportEventsRequest) error {
	var v violations
	switch n := len(req.GetEvents()); {
	case n == 0:
		v.add("events", "at least one event is required")
	case n > MaxEvents:
		v.add("events", "%d events, at most %d", n, MaxEvents)
	}
	for i, e := range req.GetEvents() {
		f := fmt.Sprintf("events[%d]", i)
		if e.GetImpressionId() == "" || len(e.GetImpressionId()) > MaxIDLength {
			v.add(f+".impression_id", "is required, at most %d bytes", MaxIDLength)
		}
		switch e.GetType() {
		case routerv1.EventType_EVENT_TYPE_CLICK:
			if e.GetValue() != 0 {
				v.add(f+".value", "a click has no value")
			}
		case routerv1.EventType_EVENT_TYPE_CONVERSION:
			if val := e.GetValue(); !(val >= 0) || math.IsInf(val, 0) {
				v.add(f+".value", "is %v, want a finite value >= 0", val)
			}
		default:
			v.add(f+".type", "want EVENT_TYPE_CLICK or EVENT_TYPE_CONVERSION")
		}
		if len(e.GetEventId()) > MaxIDLength {
			v.add(f+".event_id", "longer than %d bytes", MaxIDLength)
		}
	}
	return v.err()
}

func (s *Server) reportEvents(ctx context.Context, req *routerv1.ReportEventsRequest) (*routerv1.ReportEventsResponse, error) {
	// Events are applied concurrently (each atomically), so that the store
	// can share transactions among them.
	results := make([]int, len(req.GetEvents()))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, e := range req.GetEvents() {
		g.Go(func() error {
			res, err := s.lab.Event(gctx, lab.Event{
				ImpressionID: e.GetImpressionId(), Conversion: e.GetType() == routerv1.EventType_EVENT_TYPE_CONVERSION,
				Value: e.GetValue(), EventID: e.GetEventId(),
			})
			results[i] = res
			return err
		})
	}
	if err := g.Wait(); err != nil {
		// Whatever was applied stays applied; resending the batch is safe.
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, status.Errorf(codes.Unavailable, "experiment state store: %v (events are idempotent: resend the batch)", err)
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

func (s *Server) domain(name string) (*routing.Domain, error) {
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "domain: is required")
	}
	d, ok := s.table.Snapshot().Domains[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "domain %q is not known", name)
	}
	return d, nil
}

// GetExperimentReport implements RouterService.
func (s *Server) GetExperimentReport(ctx context.Context, req *routerv1.GetExperimentReportRequest) (*routerv1.GetExperimentReportResponse, error) {
	d, err := s.domain(req.GetDomain())
	if err != nil {
		return nil, err
	}
	r, err := s.lab.Report(ctx, d.Name, LabDomain(d), slices.Sorted(maps.Keys(d.Versions)))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "experiment state store: %v", err)
	}
	r.Experiment, r.ConfigError = string(d.ExperimentRaw), d.ExperimentError
	if !d.ExperimentLoadedAt.IsZero() {
		r.ConfigLoadedAt = timestamppb.New(d.ExperimentLoadedAt)
	}
	return r, nil
}

// PromoteCanary implements RouterService.
func (s *Server) PromoteCanary(ctx context.Context, req *routerv1.PromoteCanaryRequest) (*routerv1.PromoteCanaryResponse, error) {
	d, err := s.domain(req.GetDomain())
	if err != nil {
		return nil, err
	}
	v, err := s.lab.PromoteCanary(ctx, d.Name, LabDomain(d))
	if err != nil {
		return nil, canaryError(err)
	}
	return &routerv1.PromoteCanaryResponse{ProductionVersion: v}, nil
}

// RollbackCanary implements RouterService.
func (s *Server) RollbackCanary(ctx context.Context, req *routerv1.RollbackCanaryRequest) (*routerv1.RollbackCanaryResponse, error) {
	d, err := s.domain(req.GetDomain())
	if err != nil {
		return nil, err
	}
	if err := s.lab.RollbackCanary(ctx, d.Name, LabDomain(d), req.GetReason()); err != nil {
		return nil, canaryError(err)
	}
	return &routerv1.RollbackCanaryResponse{}, nil
}

func canaryError(err error) error {
	if errors.Is(err, lab.ErrNoCanary) {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return status.Errorf(codes.Unavailable, "canary: %v", err)
}
