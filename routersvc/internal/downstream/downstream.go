// Package downstream gives the core its features, rankers and auction:
// through gRPC clients found in Consul (Consul), or the same services'
// code called in process (Local). Both speak the services' protos; Adapt
// turns either into the core's interfaces.
package downstream

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	auctionv1 "github.com/adrank/adrank/gen/adrank/auction/v1"
	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	rankerv1 "github.com/adrank/adrank/gen/adrank/ranker/v1"
	"github.com/adrank/adrank/platform/grpcx"
	"github.com/adrank/adrank/routersvc/internal/core"
)

// Clients gives the clients of the services the core calls.
type Clients interface {
	Features() (featuresv1.FeatureServiceClient, error)
	Auction() (auctionv1.AuctionServiceClient, error)
	Ranker(domain, version string) (rankerv1.RankerServiceClient, error)
}

// Adapt turns c into the core's downstream.
func Adapt(c Clients) core.Downstream {
	a := adapter{c}
	return core.Downstream{Features: a, Rankers: a, Auction: a}
}

type adapter struct{ c Clients }

// fromStatus maps a service's status error to the core's kinds: a service
// that is down, overloaded or too slow keeps that meaning; anything else is
// ours to fix, KindInternal. The message a caller may see is a short
// summary; the service's own text (resolver and transport internals) is
// kept as the error's Detail, for logs.
func fromStatus(err error) error {
	st := status.Convert(err)
	kind, msg := core.KindInternal, "failed ("+st.Code().String()+")"
	switch st.Code() {
	case codes.Unavailable:
		kind, msg = core.KindUnavailable, "unavailable"
	case codes.ResourceExhausted:
		kind, msg = core.KindOverloaded, "overloaded"
	case codes.DeadlineExceeded:
		kind, msg = core.KindDeadline, "timed out"
	}
	return &core.Error{Kind: kind, Msg: msg, Detail: st.Message()}
}

func unavailable(err error) error { return core.Errorf(core.KindUnavailable, "%v", err) }

// Features implements core.Features.
func (a adapter) Features(ctx context.Context, q core.FeatureQuery) (core.FeatureSet, error) {
	c, err := a.c.Features()
	if err != nil {
		return core.FeatureSet{}, unavailable(err)
	}
	resp, err := c.GetFeatures(ctx, featuresRequest(q))
	if err != nil {
		return core.FeatureSet{}, fromStatus(err)
	}
	if n := len(q.AdIDs); len(resp.GetAds()) != n || int(resp.GetAdFeatures().GetRows()) != n {
		return core.FeatureSet{}, core.Errorf(core.KindInternal, "returned %d ads and %d rows for %d", len(resp.GetAds()), resp.GetAdFeatures().GetRows(), n)
	}
	return core.FeatureSet{Shared: table(resp.GetShared()), Candidates: table(resp.GetAdFeatures())}, nil
}

// FeaturesBatch implements core.BatchFeatures: one BatchGetFeatures call.
func (a adapter) FeaturesBatch(ctx context.Context, qs []core.FeatureQuery) ([]core.FeatureSet, error) {
	c, err := a.c.Features()
	if err != nil {
		return nil, unavailable(err)
	}
	req := &featuresv1.BatchGetFeaturesRequest{Requests: make([]*featuresv1.GetFeaturesRequest, len(qs))}
	for i, q := range qs {
		req.Requests[i] = featuresRequest(q)
	}
	resp, err := c.BatchGetFeatures(ctx, req)
	if err != nil {
		return nil, fromStatus(err)
	}
	if len(resp.GetResponses()) != len(qs) {
		return nil, core.Errorf(core.KindInternal, "returned %d responses for %d requests", len(resp.GetResponses()), len(qs))
	}
	out := make([]core.FeatureSet, len(qs))
	for i, r := range resp.GetResponses() {
		if n := len(qs[i].AdIDs); len(r.GetAds()) != n || int(r.GetAdFeatures().GetRows()) != n {
			return nil, core.Errorf(core.KindInternal, "responses[%d]: %d ads and %d rows for %d", i, len(r.GetAds()), r.GetAdFeatures().GetRows(), n)
		}
		out[i] = core.FeatureSet{Shared: table(r.GetShared()), Candidates: table(r.GetAdFeatures())}
	}
	return out, nil
}

func featuresRequest(q core.FeatureQuery) *featuresv1.GetFeaturesRequest {
	pc := &featuresv1.RequestContext{Device: q.Context.Device.String(), Country: q.Context.Country, Query: q.Context.Query}
	if !q.Context.Timestamp.IsZero() {
		pc.Timestamp = timestamppb.New(q.Context.Timestamp)
	}
	return &featuresv1.GetFeaturesRequest{UserId: q.UserID, AdIds: q.AdIDs, Context: pc}
}

// table shares t's slices: no copy.
func table(t *featuresv1.FeatureTable) core.Table {
	return core.Table{Names: t.GetNames(), Values: t.GetValues(), Rows: int(t.GetRows())}
}

func protoTable(t core.Table) *featuresv1.FeatureTable {
	return &featuresv1.FeatureTable{Names: t.Names, Values: t.Values, Rows: int32(t.Rows)}
}

// Score implements core.Rankers. The feature tables go to the ranker as
// they came from featuresvc: no copy, no re-encoding by name; the ranker
// checks their shape.
func (a adapter) Score(ctx context.Context, domain, version string, f core.FeatureSet) ([]float64, error) {
	c, err := a.c.Ranker(domain, version)
	if err != nil {
		return nil, unavailable(err)
	}
	resp, err := c.Score(ctx, &rankerv1.ScoreRequest{Shared: protoTable(f.Shared), Candidates: protoTable(f.Candidates)})
	if err != nil {
		return nil, fromStatus(err)
	}
	return resp.GetScores(), nil
}

// Hedge implements core.Hedger: calls made with the context share one
// grpcx.Attempts, so the balancer sends a hedge to another instance than
// the first call's.
func (a adapter) Hedge(ctx context.Context) context.Context {
	return grpcx.WithAttempts(ctx, &grpcx.Attempts{})
}

// Auction implements core.Auctioneer.
func (a adapter) Auction(ctx context.Context, r core.AuctionRequest) (core.Auction, error) {
	c, err := a.c.Auction()
	if err != nil {
		return core.Auction{}, unavailable(err)
	}
	resp, err := c.RunAuction(ctx, auctionRequest(r))
	if err != nil {
		return core.Auction{}, fromStatus(err)
	}
	return auction(resp), nil
}

// AuctionBatch implements core.BatchAuctioneer: one BatchRunAuction call.
func (a adapter) AuctionBatch(ctx context.Context, rs []core.AuctionRequest) ([]core.Auction, error) {
	c, err := a.c.Auction()
	if err != nil {
		return nil, unavailable(err)
	}
	req := &auctionv1.BatchRunAuctionRequest{Requests: make([]*auctionv1.RunAuctionRequest, len(rs))}
	for i, r := range rs {
		req.Requests[i] = auctionRequest(r)
	}
	resp, err := c.BatchRunAuction(ctx, req)
	if err != nil {
		return nil, fromStatus(err)
	}
	if len(resp.GetResponses()) != len(rs) {
		return nil, core.Errorf(core.KindInternal, "returned %d auctions for %d requests", len(resp.GetResponses()), len(rs))
	}
	out := make([]core.Auction, len(rs))
	for i, r := range resp.GetResponses() {
		out[i] = auction(r)
	}
	return out, nil
}

func auctionRequest(r core.AuctionRequest) *auctionv1.RunAuctionRequest {
	ar := &auctionv1.RunAuctionRequest{Domain: r.Domain, Slots: int32(r.Slots), ReserveMicros: r.ReserveMicros, Bids: make([]*auctionv1.Bid, len(r.Bids))}
	for i, b := range r.Bids {
		ar.Bids[i] = &auctionv1.Bid{AdId: b.AdID, AdvertiserId: b.AdvertiserID, BidMicros: b.BidMicros, Pctr: b.Pctr, Quality: b.Quality}
	}
	return ar
}

func auction(resp *auctionv1.RunAuctionResponse) core.Auction {
	out := core.Auction{Type: resp.GetAuctionType(), Allocations: make([]core.Allocation, len(resp.GetAllocations()))}
	for i, al := range resp.GetAllocations() {
		out.Allocations[i] = core.Allocation{
			AdID: al.GetAdId(), Slot: int(al.GetSlot()), PriceMicros: al.GetPriceMicros(),
			Ecpm: al.GetEcpm(), RunnerUpEcpm: al.GetRunnerUpEcpm(), ReserveMicros: al.GetReserveMicros(),
		}
	}
	return out
}
