package server

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	auctionv1 "github.com/adrank/adrank/gen/adrank/auction/v1"
)

func TestRunAuctionUsesTheDomainConfig(t *testing.T) {
	s := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.SetConfigs(api.KVPairs{
		{Key: "adrank/auction/feed", Value: []byte(`{"type": "first_price", "reserve_micros": 300000}`)},
		{Key: "adrank/auction/stories", Value: []byte(`{"type": "nonsense"}`)},
	})
	bids := []*auctionv1.Bid{{AdId: "a", BidMicros: 1_000_000, Pctr: 0.1}, {AdId: "b", BidMicros: 400_000, Pctr: 0.1}}
	tests := []struct {
		domain    string
		reserve   int64
		wantType  string
		wantPrice []int64
	}{
		{"feed", 0, "first_price", []int64{1_000_000, 400_000}},
		{"feed", 500_000, "first_price", []int64{1_000_000}}, // the request's reserve is higher: b drops out
		{"stories", 0, "gsp", []int64{400_000, 0}},           // a rejected config: the default GSP
		{"video", 100_000, "gsp", []int64{400_000, 100_000}}, // no config: GSP, the request's reserve
	}
	for _, tt := range tests {
		resp, err := s.RunAuction(context.Background(), &auctionv1.RunAuctionRequest{Domain: tt.domain, Slots: 2, ReserveMicros: tt.reserve, Bids: bids})
		if err != nil {
			t.Fatal(err)
		}
		var prices []int64
		for _, a := range resp.GetAllocations() {
			prices = append(prices, a.GetPriceMicros())
		}
		if resp.GetAuctionType() != tt.wantType || len(prices) != len(tt.wantPrice) {
			t.Errorf("%s/%d: type %q prices %v, want %q %v", tt.domain, tt.reserve, resp.GetAuctionType(), prices, tt.wantType, tt.wantPrice)
			continue
		}
		for i := range prices {
			if prices[i] != tt.wantPrice[i] {
				t.Errorf("%s/%d: prices %v, want %v", tt.domain, tt.reserve, prices, tt.wantPrice)
			}
		}
	}
	if _, err := s.RunAuction(context.Background(), &auctionv1.RunAuctionRequest{Domain: "feed", Slots: 0}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("slots 0: %v", err)
	}
}
