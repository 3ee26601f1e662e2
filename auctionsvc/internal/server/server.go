// Package server adapts the auction to gRPC.
package server

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/adrank/adrank/auctionsvc/internal/auction"
	auctionv1 "github.com/adrank/adrank/gen/adrank/auction/v1"
)

// Server implements AuctionService.
type Server struct {
	auctionv1.UnimplementedAuctionServiceServer
}

// RunAuction implements AuctionService with a generalized second-price auction.
func (Server) RunAuction(_ context.Context, req *auctionv1.RunAuctionRequest) (*auctionv1.RunAuctionResponse, error) {
	r := auction.Request{Slots: int(req.GetSlots()), ReserveMicros: req.GetReserveMicros(), Bids: make([]auction.Bid, len(req.GetBids()))}
	for i, b := range req.GetBids() {
		r.Bids[i] = auction.Bid{AdID: b.GetAdId(), BidMicros: b.GetBidMicros(), PCTR: b.GetPctr(), Quality: b.GetQuality()}
	}
	allocs, err := auction.GSP(r)
	if errors.Is(err, auction.ErrInvalid) {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	} else if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	resp := &auctionv1.RunAuctionResponse{AuctionType: "gsp", Allocations: make([]*auctionv1.Allocation, len(allocs))}
	for i, a := range allocs {
		resp.Allocations[i] = &auctionv1.Allocation{
			AdId: a.AdID, Slot: int32(a.Slot), PriceMicros: a.PriceMicros,
			Ecpm: a.ECPM, RunnerUpEcpm: a.RunnerUpECPM, ReserveMicros: a.ReserveMicros,
		}
	}
	return resp, nil
}
