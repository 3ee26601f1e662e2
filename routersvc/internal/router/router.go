// Package router is RouterService over gRPC: it turns requests into the
// core's plain types, calls the core, and turns its answers into protos and
// its errors into status codes (Status, the one place they are mapped).
package router

import (
	"context"
	"errors"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/grpcx"
	"github.com/adrank/adrank/routersvc/internal/core"
	"github.com/adrank/adrank/routersvc/internal/lab"
)

// The core's ID bound is the request ID header's.
const (
	_ uint = core.MaxIDLength - grpcx.MaxRequestIDLength
	_ uint = grpcx.MaxRequestIDLength - core.MaxIDLength
)

// Server implements RouterService.
type Server struct {
	routerv1.UnimplementedRouterServiceServer
	core *core.Engine
	lag  func() []*routerv1.StreamLag
}

// SetStreamLag makes ListDomains report a stream worker's consumer lag.
func (s *Server) SetStreamLag(lag func() []*routerv1.StreamLag) { s.lag = lag }

// NewServer serves c.
func NewServer(c *core.Engine) *Server { return &Server{core: c} }

// kindCodes maps the core's kinds to status codes: the README's error table.
var kindCodes = map[core.Kind]codes.Code{
	core.KindInternal:           codes.Internal,
	core.KindInvalid:            codes.InvalidArgument,
	core.KindNotFound:           codes.NotFound,
	core.KindFailedPrecondition: codes.FailedPrecondition,
	core.KindUnavailable:        codes.Unavailable,
	core.KindOverloaded:         codes.ResourceExhausted,
	core.KindDeadline:           codes.DeadlineExceeded,
	core.KindCanceled:           codes.Canceled,
}

// Status maps an error of the core to a gRPC status error: the code of its
// kind, its message, and for KindInvalid every field violation as
// BadRequest details.
func Status(err error) error {
	if err == nil {
		return nil
	}
	var ce *core.Error
	if !errors.As(err, &ce) {
		return status.Error(kindCodes[core.KindOf(err)], core.Message(err))
	}
	st := status.New(kindCodes[ce.Kind], ce.Msg)
	if len(ce.Fields) > 0 {
		br := &errdetails.BadRequest{}
		for _, f := range ce.Fields {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: f.Field, Description: f.Description})
		}
		if d, err := st.WithDetails(br); err == nil {
			st = d
		}
	}
	return st.Err()
}

func invalid(field string, err error) error {
	return Status(&core.Error{Kind: core.KindInvalid, Msg: field + ": " + err.Error(), Fields: []core.FieldViolation{{Field: field, Description: err.Error()}}})
}

// Request is a RankRequest in the core's types.
func Request(req *routerv1.RankRequest) (*core.Request, error) {
	rc := req.GetContext()
	r := &core.Request{
		RequestID: req.GetRequestId(), Domain: req.GetDomain(), UserID: req.GetUserId(),
		Context:    core.PageContext{Device: core.Device(rc.GetDevice()), Country: rc.GetCountry(), Query: rc.GetQuery()},
		Candidates: make([]core.Candidate, len(req.GetCandidates())),
		Slots:      int(req.GetSlots()), ReserveMicros: req.GetReserveMicros(),
	}
	if ts := rc.GetTimestamp(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, invalid("context.timestamp", err)
		}
		r.Context.Timestamp = ts.AsTime()
	}
	for i, c := range req.GetCandidates() {
		r.Candidates[i] = core.Candidate{AdID: c.GetAdId(), AdvertiserID: c.GetAdvertiserId(), BidMicros: c.GetBidMicros(), Quality: c.GetQuality()}
	}
	return r, nil
}

var strategies = map[lab.Strategy]routerv1.Strategy{
	lab.Production:  routerv1.Strategy_STRATEGY_PRODUCTION,
	lab.Canary:      routerv1.Strategy_STRATEGY_CANARY,
	lab.AB:          routerv1.Strategy_STRATEGY_AB,
	lab.Bandit:      routerv1.Strategy_STRATEGY_BANDIT,
	lab.Interleaved: routerv1.Strategy_STRATEGY_INTERLEAVED,
}

var sources = map[core.Source]routerv1.Source{
	core.SourceRealtime:    routerv1.Source_SOURCE_REALTIME,
	core.SourcePrecomputed: routerv1.Source_SOURCE_PRECOMPUTED,
	core.SourceSnapshot:    routerv1.Source_SOURCE_SNAPSHOT,
}

// Response is the core's answer as a RankResponse.
func Response(r *core.Response) *routerv1.RankResponse {
	a := r.Assignment
	out := &routerv1.RankResponse{
		RequestId: r.RequestID, Domain: r.Domain, ModelVersion: r.ModelVersion, AuctionType: r.AuctionType,
		Results: make([]*routerv1.Result, len(r.Results)),
		Assignment: &routerv1.Assignment{
			Strategy: strategies[a.Strategy], Version: a.Version, OtherVersion: a.Other, Group: a.Group, Propensity: a.Propensity,
			FallbackReason: a.Fallback, Experiment: a.Experiment, Shadowed: len(a.Shadow) > 0,
		},
		Degraded: r.Degraded, DegradedReason: r.DegradedReason,
		Source: sources[r.Source], AgeMs: r.Age.Milliseconds(),
	}
	for i, x := range r.Results {
		out.Results[i] = &routerv1.Result{
			AdId: x.AdID, Slot: int32(x.Slot), Pctr: x.Pctr, PriceMicros: x.PriceMicros, ImpressionId: x.ImpressionID,
			Ecpm: x.Ecpm, RunnerUpEcpm: x.RunnerUpEcpm, ReserveMicros: x.ReserveMicros, Version: x.Version,
		}
	}
	return out
}

// Rank implements RouterService.
func (s *Server) Rank(ctx context.Context, req *routerv1.RankRequest) (*routerv1.RankResponse, error) {
	r, err := Request(req)
	if err != nil {
		return nil, err
	}
	resp, err := s.core.Rank(ctx, r)
	if err != nil {
		return nil, Status(err)
	}
	// Best effort: a caller that is not a gRPC server stream (a test, the
	// in-process client) has nowhere to put the header.
	_ = grpc.SetHeader(ctx, metadata.Pairs(ServerTimingHeader, serverTiming(resp.Timing)))
	return Response(resp), nil
}

// ServerTimingHeader is the response metadata in which Rank says where its
// time went, in the form of HTTP's Server-Timing (ms): the downstream calls
// as the core saw them (hop included), and the core's total. total - features - ranker - auction is the router's own
// overhead. The gateway passes it on as the Server-Timing HTTP header.
const ServerTimingHeader = "server-timing"

func serverTiming(t core.Timing) string {
	ms := func(d time.Duration) string { return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 3, 64) }
	return "features;dur=" + ms(t.Features) + ", ranker;dur=" + ms(t.Ranker) + ", auction;dur=" + ms(t.Auction) + ", total;dur=" + ms(t.Total)
}

// ListDomains implements RouterService.
func (s *Server) ListDomains(context.Context, *routerv1.ListDomainsRequest) (*routerv1.ListDomainsResponse, error) {
	resp := &routerv1.ListDomainsResponse{}
	for _, d := range s.core.Domains() {
		di := &routerv1.DomainInfo{Domain: d.Name, ConfigError: d.ConfigError, ProductionVersion: d.ProductionVersion, Mode: d.Mode, AuctionConfigError: d.AuctionConfigError}
		if si := d.Snapshot; si != nil {
			di.Snapshot = &routerv1.SnapshotInfo{
				Generation: si.Generation, Version: si.Version, CreatedAt: timestamppb.New(si.Created),
				AgeMs: si.Age.Milliseconds(), Users: si.Users, Pairs: si.Pairs, K: int32(si.K), Shards: int32(si.Shards),
				Generations: int32(si.Generations), Error: si.Err,
			}
			if !si.Completed.IsZero() {
				di.Snapshot.CompletedAt = timestamppb.New(si.Completed)
			}
		}
		if !d.ConfigLoadedAt.IsZero() {
			di.ConfigLoadedAt = timestamppb.New(d.ConfigLoadedAt)
		}
		for _, v := range d.Versions {
			di.Versions = append(di.Versions, &routerv1.VersionInfo{
				Version: v.Name, HealthyInstances: int32(v.Healthy), TotalInstances: int32(v.Total), ModelSha256: v.SHA256, ModelConflict: v.Conflict,
			})
		}
		resp.Domains = append(resp.Domains, di)
	}
	if s.lag != nil {
		resp.StreamLag = s.lag()
	}
	return resp, nil
}
