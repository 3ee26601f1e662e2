// Package features serves the synthetic world's features over gRPC, in
// process, for processes that serve every model themselves (featuresvc
// serves its store: package storeserver).
package features

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	"github.com/adrank/adrank/ml/world"
)

// MaxAds is the largest batch GetFeatures accepts.
const MaxAds = 1000

// Server implements FeatureService over a world.
type Server struct {
	featuresv1.UnimplementedFeatureServiceServer
	w *world.World
}

// NewServer serves w.
func NewServer(w *world.World) *Server { return &Server{w: w} }

// GetFeatures implements FeatureService. Unknown users and ads are served
// with their features absent.
func (s *Server) GetFeatures(_ context.Context, req *featuresv1.GetFeaturesRequest) (*featuresv1.GetFeaturesResponse, error) {
	c, err := Validate(req)
	if err != nil {
		return nil, err
	}
	u, userKnown := s.w.User(req.GetUserId()) // nil when unknown
	ids := req.GetAdIds()
	shared := &featuresv1.FeatureTable{Names: world.SharedColumns, Values: make([]float64, len(world.SharedColumns)), Rows: 1}
	world.SharedRow(u, c, shared.Values)
	w := len(world.AdColumns)
	ads := &featuresv1.FeatureTable{Names: world.AdColumns, Values: make([]float64, len(ids)*w), Rows: int32(len(ids))}
	resp := &featuresv1.GetFeaturesResponse{UserKnown: userKnown, Shared: shared, AdFeatures: ads, Ads: make([]*featuresv1.AdFeatures, len(ids))}
	for i, id := range ids {
		a, ok := s.w.Ad(id) // nil when unknown: its row is all missing
		world.AdRow(u, a, c, ads.Values[i*w:(i+1)*w])
		resp.Ads[i] = &featuresv1.AdFeatures{AdId: id, Known: ok}
	}
	return resp, nil
}

// MaxBatch is the largest BatchGetFeatures request.
const MaxBatch = 256

// BatchGetFeatures implements FeatureService: GetFeatures for each request,
// in order. An invalid request fails the batch, naming it.
func (s *Server) BatchGetFeatures(ctx context.Context, req *featuresv1.BatchGetFeaturesRequest) (*featuresv1.BatchGetFeaturesResponse, error) {
	return Batch(ctx, req, s.GetFeatures)
}

// Validate checks a GetFeatures request and converts its context.
func Validate(req *featuresv1.GetFeaturesRequest) (world.Context, error) {
	if n := len(req.GetAdIds()); n > MaxAds {
		return world.Context{}, status.Errorf(codes.InvalidArgument, "ad_ids: %d ads, at most %d", n, MaxAds)
	}
	c, err := Context(req.GetContext())
	if err != nil {
		return world.Context{}, status.Error(codes.InvalidArgument, err.Error())
	}
	return c, nil
}

// Batch answers each request of a batch with one, in order. An invalid
// request fails the batch, naming it.
func Batch(ctx context.Context, req *featuresv1.BatchGetFeaturesRequest, one func(context.Context, *featuresv1.GetFeaturesRequest) (*featuresv1.GetFeaturesResponse, error)) (*featuresv1.BatchGetFeaturesResponse, error) {
	if n := len(req.GetRequests()); n > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "requests: %d requests, at most %d", n, MaxBatch)
	}
	resp := &featuresv1.BatchGetFeaturesResponse{Responses: make([]*featuresv1.GetFeaturesResponse, len(req.GetRequests()))}
	for i, r := range req.GetRequests() {
		r, err := one(ctx, r)
		if err != nil {
			st := status.Convert(err) // its code: a store outage is not the caller's mistake
			return nil, status.Errorf(st.Code(), "requests[%d].%s", i, st.Message())
		}
		resp.Responses[i] = r
	}
	return resp, nil
}

// Context converts the request context.
func Context(pc *featuresv1.RequestContext) (world.Context, error) {
	var c world.Context
	if pc == nil {
		return c, nil
	}
	if ts := pc.GetTimestamp(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return c, fmt.Errorf("context.timestamp: %w", err)
		}
		c.Time = ts.AsTime()
	}
	switch pc.GetDevice() {
	case "", "mobile", "desktop", "tablet":
		c.Device = pc.GetDevice()
	default:
		return c, fmt.Errorf("context.device: unknown device %q", pc.GetDevice())
	}
	c.Country, c.Query = pc.GetCountry(), pc.GetQuery()
	return c, nil
}
