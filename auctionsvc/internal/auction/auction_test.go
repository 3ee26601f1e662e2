package auction

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestGSPWorkedExamples(t *testing.T) {
	tests := []struct {
		name string
		req  Request
		want []Allocation
	}{
		{
			// eCPM (micros per impression): a 2,000,000 x 0.10 = 200,000;
			// b 1,000,000 x 0.15 = 150,000; c 3,000,000 x 0.02 = 60,000. Order a, b, c.
			// a pays 150,000/0.10 = 1,500,000; b pays 60,000/0.15 = 400,000.
			name: "two slots, three bidders",
			req: Request{Slots: 2, Bids: []Bid{
				{AdID: "c", BidMicros: 3_000_000, PCTR: 0.02},
				{AdID: "a", BidMicros: 2_000_000, PCTR: 0.10},
				{AdID: "b", BidMicros: 1_000_000, PCTR: 0.15},
			}},
			want: []Allocation{
				{AdID: "a", Slot: 1, PriceMicros: 1_500_000, ECPM: 200_000, RunnerUpECPM: 150_000},
				{AdID: "b", Slot: 2, PriceMicros: 400_000, ECPM: 150_000, RunnerUpECPM: 60_000},
			},
		},
		{
			// b's runner-up price 60,000/0.15 = 400,000 is under the reserve 500,000;
			// c bids under the reserve and drops out, so b has no runner-up and pays the reserve.
			name: "reserve price",
			req: Request{Slots: 3, ReserveMicros: 500_000, Bids: []Bid{
				{AdID: "a", BidMicros: 2_000_000, PCTR: 0.10},
				{AdID: "b", BidMicros: 1_000_000, PCTR: 0.15},
				{AdID: "c", BidMicros: 400_000, PCTR: 0.5},
			}},
			want: []Allocation{
				{AdID: "a", Slot: 1, PriceMicros: 1_500_000, ECPM: 200_000, RunnerUpECPM: 150_000, ReserveMicros: 500_000},
				{AdID: "b", Slot: 2, PriceMicros: 500_000, ECPM: 150_000, RunnerUpECPM: 0, ReserveMicros: 500_000},
			},
		},
		{
			name: "a lone bidder pays the reserve",
			req:  Request{Slots: 2, ReserveMicros: 250_000, Bids: []Bid{{AdID: "a", BidMicros: 900_000, PCTR: 0.3}}},
			want: []Allocation{{AdID: "a", Slot: 1, PriceMicros: 250_000, ECPM: 270_000, ReserveMicros: 250_000}},
		},
		{
			// 100,000/0.03 = 3,333,333.33... rounds up to 3,333,334.
			name: "prices round up to a whole micro",
			req: Request{Slots: 1, Bids: []Bid{
				{AdID: "a", BidMicros: 5_000_000, PCTR: 0.03},
				{AdID: "b", BidMicros: 1_000_000, PCTR: 0.1},
			}},
			want: []Allocation{{AdID: "a", Slot: 1, PriceMicros: 3_333_334, ECPM: 150_000, RunnerUpECPM: 100_000}},
		},
		{
			// Equal eCPMs: the lower ad ID wins and pays its own bid.
			name: "ties break by ad id",
			req: Request{Slots: 2, Bids: []Bid{
				{AdID: "z", BidMicros: 1_000_000, PCTR: 0.1},
				{AdID: "m", BidMicros: 500_000, PCTR: 0.2},
			}},
			want: []Allocation{
				{AdID: "m", Slot: 1, PriceMicros: 500_000, ECPM: 100_000, RunnerUpECPM: 100_000},
				{AdID: "z", Slot: 2, PriceMicros: 0, ECPM: 100_000},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := GSP(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b float64) bool { return a-b < 1e-6 && b-a < 1e-6 })); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestGSPRejects(t *testing.T) {
	tests := []struct {
		name string
		req  Request
	}{
		{"no slots", Request{Slots: 0, Bids: []Bid{{AdID: "a", BidMicros: 1, PCTR: 0.1}}}},
		{"negative reserve", Request{Slots: 1, ReserveMicros: -1}},
		{"empty ad id", Request{Slots: 1, Bids: []Bid{{BidMicros: 1, PCTR: 0.1}}}},
		{"duplicate ad id", Request{Slots: 1, Bids: []Bid{{AdID: "a", BidMicros: 1, PCTR: 0.1}, {AdID: "a", BidMicros: 2, PCTR: 0.1}}}},
		{"zero bid", Request{Slots: 1, Bids: []Bid{{AdID: "a", PCTR: 0.1}}}},
		{"pctr above 1", Request{Slots: 1, Bids: []Bid{{AdID: "a", BidMicros: 1, PCTR: 1.5}}}},
		{"NaN pctr", Request{Slots: 1, Bids: []Bid{{AdID: "a", BidMicros: 1, PCTR: nan()}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := GSP(tt.req); !errors.Is(err, ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

func nan() float64 { var z float64; return z / z }

// In "ties break by ad id" the last slot has no runner-up and no reserve, so
// GSP prices it at 0: domains set a reserve to avoid that. The property test
// pins the general rules on random input.
func TestGSPProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		req := Request{Slots: 1 + rng.IntN(5), ReserveMicros: int64(rng.IntN(3)) * 100_000}
		for j := range rng.IntN(12) {
			req.Bids = append(req.Bids, Bid{AdID: fmt.Sprintf("ad%d", j), BidMicros: 1 + rng.Int64N(3_000_000), PCTR: rng.Float64()})
		}
		got, err := GSP(req)
		if err != nil {
			t.Fatal(err)
		}
		bids := map[string]Bid{}
		for _, b := range req.Bids {
			bids[b.AdID] = b
		}
		if len(got) > req.Slots {
			t.Fatalf("case %d: %d allocations for %d slots", i, len(got), req.Slots)
		}
		for k, a := range got {
			b := bids[a.AdID]
			if a.PriceMicros > b.BidMicros {
				t.Fatalf("case %d: price %d above bid %d", i, a.PriceMicros, b.BidMicros)
			}
			if a.PriceMicros < req.ReserveMicros {
				t.Fatalf("case %d: price %d below reserve %d", i, a.PriceMicros, req.ReserveMicros)
			}
			if k > 0 && got[k-1].ECPM < a.ECPM {
				t.Fatalf("case %d: slot %d eCPM above slot %d", i, k+1, k)
			}
			// The price keeps the winner's eCPM at or above the runner-up's.
			if float64(a.PriceMicros)*b.PCTR < a.RunnerUpECPM-1e-6 && a.PriceMicros < b.BidMicros {
				t.Fatalf("case %d: price %d gives eCPM below runner-up %v", i, a.PriceMicros, a.RunnerUpECPM)
			}
		}
	}
}
