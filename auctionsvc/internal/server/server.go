// Package server adapts the auction to gRPC, with each domain's auction
// config from Consul KV.
package server

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/adrank/adrank/auctionsvc/auction"
	"github.com/adrank/adrank/auctionsvc/internal/config"
	auctionv1 "github.com/adrank/adrank/gen/adrank/auction/v1"
	"github.com/adrank/adrank/platform/kvconfig"
)

// Server implements AuctionService.
type Server struct {
	auctionv1.UnimplementedAuctionServiceServer
	configs *kvconfig.Set[config.Config]
	current atomic.Pointer[map[string]kvconfig.Entry[config.Config]]
}

// New returns a server with no domain configs yet (every domain: GSP).
func New(log *slog.Logger) *Server {
	// A deleted auction config keeps its last good value: falling back to
	// a GSP with no reserve would make ads cheap, even free.
	s := &Server{configs: kvconfig.New(config.Prefix, log, config.Parse).KeepDeleted()}
	empty := map[string]kvconfig.Entry[config.Config]{}
	s.current.Store(&empty)
	return s
}

// SetConfigs takes the KV pairs under config.Prefix.
func (s *Server) SetConfigs(pairs api.KVPairs) {
	m := s.configs.Update(kvconfig.Names(config.Prefix, pairs))
	s.current.Store(&m)
}

// ConfigError is why domain's auction config in Consul KV is not the one in
// force (refused, or deleted with the last good one kept); "" when it is.
func (s *Server) ConfigError(domain string) string {
	return (*s.current.Load())[domain].Error
}

// Config returns the config in force for domain.
func (s *Server) Config(domain string) config.Config {
	if e, ok := (*s.current.Load())[domain]; ok && e.Valid {
		return e.Value
	}
	return config.Config{Type: auction.GSP}
}

// RunAuction implements AuctionService.
func (s *Server) RunAuction(_ context.Context, req *auctionv1.RunAuctionRequest) (*auctionv1.RunAuctionResponse, error) {
	cfg := s.Config(req.GetDomain())
	r := auction.Request{
		Type:            cfg.Type,
		Slots:           int(req.GetSlots()),
		ReserveMicros:   max(cfg.ReserveMicros, req.GetReserveMicros()),
		PositionFactors: cfg.PositionFactors,
		Bids:            make([]auction.Bid, len(req.GetBids())),
	}
	if req.GetReserveMicros() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "reserve_micros: %d, want >= 0", req.GetReserveMicros())
	}
	for i, b := range req.GetBids() {
		r.Bids[i] = auction.Bid{AdID: b.GetAdId(), BidMicros: b.GetBidMicros(), PCTR: b.GetPctr(), Quality: b.GetQuality()}
	}
	allocs, err := auction.Run(r)
	if errors.Is(err, auction.ErrInvalid) {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	} else if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	resp := &auctionv1.RunAuctionResponse{AuctionType: string(cfg.Type), Allocations: make([]*auctionv1.Allocation, len(allocs))}
	for i, a := range allocs {
		resp.Allocations[i] = &auctionv1.Allocation{
			AdId: a.AdID, Slot: int32(a.Slot), PriceMicros: a.PriceMicros, Ecpm: a.ECPM,
			RunnerUpEcpm: a.RunnerUpECPM, ReserveMicros: a.ReserveMicros, PositionFactor: a.PositionFactor,
		}
	}
	return resp, nil
}

// MaxBatch is the largest BatchRunAuction request.
const MaxBatch = 256

// BatchRunAuction implements AuctionService: RunAuction for each request, in
// order. An invalid request fails the batch, naming it.
func (s *Server) BatchRunAuction(ctx context.Context, req *auctionv1.BatchRunAuctionRequest) (*auctionv1.BatchRunAuctionResponse, error) {
	if n := len(req.GetRequests()); n > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "requests: %d requests, at most %d", n, MaxBatch)
	}
	resp := &auctionv1.BatchRunAuctionResponse{Responses: make([]*auctionv1.RunAuctionResponse, len(req.GetRequests()))}
	for i, r := range req.GetRequests() {
		one, err := s.RunAuction(ctx, r)
		if err != nil {
			st := status.Convert(err)
			return nil, status.Errorf(st.Code(), "requests[%d].%s", i, st.Message())
		}
		resp.Responses[i] = one
	}
	return resp, nil
}
