package auction

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// Worked examples, derived by hand in the comments.
func TestWorkedExamples(t *testing.T) {
	// eCPM (micros per impression): a 2,000,000 x 0.10 = 200,000;
	// b 1,000,000 x 0.15 = 150,000; c 3,000,000 x 0.02 = 60,000. Order a, b, c.
	abc := []Bid{
		{AdID: "c", BidMicros: 3_000_000, PCTR: 0.02},
		{AdID: "a", BidMicros: 2_000_000, PCTR: 0.10},
		{AdID: "b", BidMicros: 1_000_000, PCTR: 0.15},
	}
	// Three slots: a 1,000,000 x 0.20 = 200,000; b 800,000 x 0.20 = 160,000;
	// c 2,000,000 x 0.05 = 100,000; d 500,000 x 0.08 = 40,000.
	abcd := []Bid{
		{AdID: "a", BidMicros: 1_000_000, PCTR: 0.20},
		{AdID: "b", BidMicros: 800_000, PCTR: 0.20},
		{AdID: "c", BidMicros: 2_000_000, PCTR: 0.05},
		{AdID: "d", BidMicros: 500_000, PCTR: 0.08},
	}
	alloc := func(ad string, slot int, price int64, ecpm, runnerUp float64, reserve int64, alpha float64) Allocation {
		return Allocation{AdID: ad, Slot: slot, PriceMicros: price, ECPM: ecpm, RunnerUpECPM: runnerUp, ReserveMicros: reserve, PositionFactor: alpha}
	}
	tests := []struct {
		name string
		req  Request
		want []Allocation
	}{
		{
			// GSP: a pays 150,000 / 0.10 = 1,500,000; b pays 60,000 / 0.15 = 400,000.
			name: "GSP, two slots",
			req:  Request{Type: GSP, Slots: 2, PositionFactors: []float64{1, 0.5}, Bids: abc},
			want: []Allocation{alloc("a", 1, 1_500_000, 200_000, 150_000, 0, 1), alloc("b", 2, 400_000, 150_000, 60_000, 0, 0.5)},
		},
		{
			// VCG, a = (1, 0.5), a_3 = 0:
			// a: (1 - 0.5) x 150,000 + (0.5 - 0) x 60,000 = 105,000 per impression,
			//    / (1 x 0.10) = 1,050,000 per click;
			// b: (0.5 - 0) x 60,000 = 30,000, / (0.5 x 0.15) = 400,000 per click.
			name: "VCG, two slots",
			req:  Request{Type: VCG, Slots: 2, PositionFactors: []float64{1, 0.5}, Bids: abc},
			want: []Allocation{alloc("a", 1, 1_050_000, 200_000, 150_000, 0, 1), alloc("b", 2, 400_000, 150_000, 60_000, 0, 0.5)},
		},
		{
			// GSP with reserve 400,000: a 160,000/0.2 = 800,000; b 100,000/0.2 = 500,000;
			// c 40,000/0.05 = 800,000. All above the reserve.
			name: "GSP, three slots, reserve",
			req:  Request{Type: GSP, Slots: 3, ReserveMicros: 400_000, PositionFactors: []float64{1, 0.6, 0.3}, Bids: abcd},
			want: []Allocation{
				alloc("a", 1, 800_000, 200_000, 160_000, 400_000, 1),
				alloc("b", 2, 500_000, 160_000, 100_000, 400_000, 0.6),
				alloc("c", 3, 800_000, 100_000, 40_000, 400_000, 0.3),
			},
		},
		{
			// VCG, a = (1, 0.6, 0.3), a_4 = 0, e_4 = 40,000:
			// c: 0.3 x 40,000 = 12,000, / (0.3 x 0.05) = 800,000;
			// b: 0.3 x 100,000 + 0.3 x 40,000 = 42,000, / (0.6 x 0.2) = 350,000 -> reserve 400,000;
			// a: 0.4 x 160,000 + 0.3 x 100,000 + 0.3 x 40,000 = 106,000, / (1 x 0.2) = 530,000.
			name: "VCG, three slots, reserve",
			req:  Request{Type: VCG, Slots: 3, ReserveMicros: 400_000, PositionFactors: []float64{1, 0.6, 0.3}, Bids: abcd},
			want: []Allocation{
				alloc("a", 1, 530_000, 200_000, 160_000, 400_000, 1),
				alloc("b", 2, 400_000, 160_000, 100_000, 400_000, 0.6),
				alloc("c", 3, 800_000, 100_000, 40_000, 400_000, 0.3),
			},
		},
		{
			// d bids 500,000, under the reserve 600,000, and drops out: c has no
			// runner-up. GSP: c pays the reserve. b: 100,000/0.2 = 500,000 -> 600,000.
			name: "GSP, reserve removes a bidder",
			req:  Request{Type: GSP, Slots: 3, ReserveMicros: 600_000, PositionFactors: []float64{1, 0.6, 0.3}, Bids: abcd},
			want: []Allocation{
				alloc("a", 1, 800_000, 200_000, 160_000, 600_000, 1),
				alloc("b", 2, 600_000, 160_000, 100_000, 600_000, 0.6),
				alloc("c", 3, 600_000, 100_000, 0, 600_000, 0.3),
			},
		},
		{
			name: "first price",
			req:  Request{Type: FirstPrice, Slots: 2, Bids: abc},
			want: []Allocation{alloc("a", 1, 2_000_000, 200_000, 150_000, 0, 1), alloc("b", 2, 1_000_000, 150_000, 60_000, 0, 0.7)},
		},
		{
			name: "a lone bidder pays the reserve (GSP)",
			req:  Request{Slots: 2, ReserveMicros: 250_000, Bids: []Bid{{AdID: "a", BidMicros: 900_000, PCTR: 0.3}}},
			want: []Allocation{alloc("a", 1, 250_000, 270_000, 0, 250_000, 1)},
		},
		{
			name: "a lone bidder pays the reserve (VCG)",
			req:  Request{Type: VCG, Slots: 2, ReserveMicros: 250_000, Bids: []Bid{{AdID: "a", BidMicros: 900_000, PCTR: 0.3}}},
			want: []Allocation{alloc("a", 1, 250_000, 270_000, 0, 250_000, 1)},
		},
		{
			// 100,000 / 0.03 = 3,333,333.33... rounds up to 3,333,334.
			name: "prices round up to a whole micro",
			req: Request{Slots: 1, Bids: []Bid{
				{AdID: "a", BidMicros: 5_000_000, PCTR: 0.03},
				{AdID: "b", BidMicros: 1_000_000, PCTR: 0.1},
			}},
			want: []Allocation{alloc("a", 1, 3_333_334, 150_000, 100_000, 0, 1)},
		},
		{
			// A quality factor of 2 doubles b's eCPM to 160,000, above a's 100,000.
			// b pays 100,000 / (0.1 x 2) = 500,000.
			name: "quality factor",
			req: Request{Slots: 1, Bids: []Bid{
				{AdID: "a", BidMicros: 1_000_000, PCTR: 0.1},
				{AdID: "b", BidMicros: 800_000, PCTR: 0.1, Quality: 2},
			}},
			want: []Allocation{alloc("b", 1, 500_000, 160_000, 100_000, 0, 1)},
		},
		{
			// Equal eCPMs: the lower ad ID wins and pays its own bid (the runner-up's
			// eCPM equals its own). The last slot has no runner-up and no reserve: 0.
			name: "ties break by ad id",
			req: Request{Slots: 2, Bids: []Bid{
				{AdID: "z", BidMicros: 1_000_000, PCTR: 0.1},
				{AdID: "m", BidMicros: 500_000, PCTR: 0.2},
			}},
			want: []Allocation{alloc("m", 1, 500_000, 100_000, 100_000, 0, 1), alloc("z", 2, 0, 100_000, 0, 0, 0.7)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Run(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestRevenueOfTheWorkedExample(t *testing.T) {
	bids := []Bid{
		{AdID: "c", BidMicros: 3_000_000, PCTR: 0.02},
		{AdID: "a", BidMicros: 2_000_000, PCTR: 0.10},
		{AdID: "b", BidMicros: 1_000_000, PCTR: 0.15},
	}
	// GSP: 1,500,000 x 1 x 0.1 + 400,000 x 0.5 x 0.15 = 180,000.
	// VCG: 1,050,000 x 1 x 0.1 + 400,000 x 0.5 x 0.15 = 135,000.
	for typ, want := range map[Type]float64{GSP: 180_000, VCG: 135_000} {
		allocs, err := Run(Request{Type: typ, Slots: 2, PositionFactors: []float64{1, 0.5}, Bids: bids})
		if err != nil {
			t.Fatal(err)
		}
		if got := Revenue(allocs, bids); math.Abs(got-want) > 1e-6 {
			t.Errorf("%s revenue %v, want %v", typ, got, want)
		}
	}
}

func TestRejects(t *testing.T) {
	ok := []Bid{{AdID: "a", BidMicros: 1, PCTR: 0.1}}
	tests := []struct {
		name string
		req  Request
	}{
		{"unknown type", Request{Type: "dutch", Slots: 1, Bids: ok}},
		{"no slots", Request{Slots: 0, Bids: ok}},
		{"too many slots", Request{Slots: MaxSlots + 1, Bids: ok}},
		{"negative reserve", Request{Slots: 1, ReserveMicros: -1}},
		{"position factor above 1", Request{Slots: 1, PositionFactors: []float64{1.5}}},
		{"increasing position factors", Request{Slots: 2, PositionFactors: []float64{0.5, 0.8}}},
		{"empty ad id", Request{Slots: 1, Bids: []Bid{{BidMicros: 1, PCTR: 0.1}}}},
		{"duplicate ad id", Request{Slots: 1, Bids: []Bid{{AdID: "a", BidMicros: 1, PCTR: 0.1}, {AdID: "a", BidMicros: 2, PCTR: 0.1}}}},
		{"zero bid", Request{Slots: 1, Bids: []Bid{{AdID: "a", PCTR: 0.1}}}},
		{"pctr above 1", Request{Slots: 1, Bids: []Bid{{AdID: "a", BidMicros: 1, PCTR: 1.5}}}},
		{"NaN pctr", Request{Slots: 1, Bids: []Bid{{AdID: "a", BidMicros: 1, PCTR: math.NaN()}}}},
		{"negative quality", Request{Slots: 1, Bids: []Bid{{AdID: "a", BidMicros: 1, PCTR: 0.1, Quality: -1}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Run(tt.req); !errors.Is(err, ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestPositionFactor(t *testing.T) {
	tests := []struct {
		fs   []float64
		k    int
		want float64
	}{
		{nil, 1, 1}, {nil, 3, 0.49}, {[]float64{1, 0.5}, 2, 0.5}, {[]float64{1, 0.5}, 4, 0.5 * 0.49},
	}
	for _, tt := range tests {
		if got := PositionFactor(tt.fs, tt.k); math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("PositionFactor(%v, %d) = %v, want %v", tt.fs, tt.k, got, tt.want)
		}
	}
}

// checkProperties asserts what must hold for every auction: prices within
// [reserve, bid], allocation in eCPM order with no ad twice, no more slots
// than asked, and VCG revenue at most GSP revenue for the same input.
func checkProperties(t *testing.T, req Request) {
	t.Helper()
	bids := map[string]Bid{}
	for _, b := range req.Bids {
		bids[b.AdID] = b
	}
	revenue := map[Type]float64{}
	for _, typ := range []Type{GSP, VCG, FirstPrice} {
		req.Type = typ
		got, err := Run(req)
		if err != nil {
			if errors.Is(err, ErrInvalid) {
				return
			}
			t.Fatalf("%s: %v", typ, err)
		}
		if len(got) > req.Slots {
			t.Fatalf("%s: %d allocations for %d slots", typ, len(got), req.Slots)
		}
		seen := map[string]bool{}
		for k, a := range got {
			b, ok := bids[a.AdID]
			if !ok || seen[a.AdID] {
				t.Fatalf("%s: slot %d has ad %q (unknown or repeated)", typ, k+1, a.AdID)
			}
			seen[a.AdID] = true
			if a.Slot != k+1 {
				t.Fatalf("%s: allocation %d has slot %d", typ, k, a.Slot)
			}
			if a.PriceMicros > b.BidMicros {
				t.Fatalf("%s: %s pays %d above its bid %d", typ, a.AdID, a.PriceMicros, b.BidMicros)
			}
			if a.PriceMicros < req.ReserveMicros {
				t.Fatalf("%s: %s pays %d below the reserve %d", typ, a.AdID, a.PriceMicros, req.ReserveMicros)
			}
			if math.IsNaN(a.ECPM) || math.IsInf(a.ECPM, 0) || math.IsNaN(a.RunnerUpECPM) || math.IsInf(a.RunnerUpECPM, 0) {
				t.Fatalf("%s: slot %d has eCPM %v, runner-up %v", typ, k+1, a.ECPM, a.RunnerUpECPM)
			}
			if k > 0 && got[k-1].ECPM < a.ECPM {
				t.Fatalf("%s: slot %d has a higher eCPM than slot %d", typ, k+1, k)
			}
		}
		// Every eligible ad left out ranks below every allocated one.
		if len(got) > 0 {
			last := got[len(got)-1].ECPM
			for _, b := range req.Bids {
				q := b.Quality
				if q == 0 {
					q = 1
				}
				if e := float64(b.BidMicros) * b.PCTR * q; !seen[b.AdID] && b.BidMicros >= req.ReserveMicros && e > last {
					t.Fatalf("%s: %s (eCPM %v) left out above the last slot's %v", typ, b.AdID, e, last)
				}
			}
		}
		revenue[typ] = Revenue(got, req.Bids)
		if math.IsNaN(revenue[typ]) || math.IsInf(revenue[typ], 0) {
			t.Fatalf("%s: revenue %v", typ, revenue[typ])
		}
	}
	if revenue[VCG] > revenue[GSP]+1e-6 {
		t.Fatalf("VCG revenue %v above GSP revenue %v", revenue[VCG], revenue[GSP])
	}
}

func TestProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 3000 {
		req := Request{Slots: 1 + rng.IntN(6), ReserveMicros: int64(rng.IntN(4)) * 100_000}
		if rng.IntN(2) == 0 {
			a := 1.0
			for range 1 + rng.IntN(5) {
				req.PositionFactors = append(req.PositionFactors, a)
				a *= rng.Float64()
				a = math.Max(a, 1e-3)
			}
		}
		for j := range rng.IntN(12) {
			b := Bid{AdID: fmt.Sprintf("ad%d", j), BidMicros: 1 + rng.Int64N(3_000_000), PCTR: rng.Float64()}
			if rng.IntN(3) == 0 {
				b.Quality = 0.5 + rng.Float64()
			}
			req.Bids = append(req.Bids, b)
		}
		checkProperties(t, req)
	}
}

// FuzzAuction: no input panics, and every valid input keeps the properties.
func FuzzAuction(f *testing.F) {
	f.Add(uint8(2), uint32(0), []byte{10, 20, 30, 40, 50, 60})
	f.Add(uint8(3), uint32(400_000), []byte{1, 255, 7, 0, 200, 3, 3, 3, 9, 9})
	f.Add(uint8(1), uint32(1), []byte{})
	f.Fuzz(func(t *testing.T, slots uint8, reserve uint32, raw []byte) {
		req := Request{Slots: int(slots), ReserveMicros: int64(reserve)}
		if len(raw) > 0 && raw[0]%2 == 0 {
			a := 1.0
			for i := 0; i < int(raw[0]%5); i++ {
				req.PositionFactors = append(req.PositionFactors, a)
				a *= 0.8
			}
		}
		// Three bytes per bid: bid (scaled), pCTR (scaled), quality (0 = unset).
		for i := 0; i+2 < len(raw) && i < 3*64; i += 3 {
			req.Bids = append(req.Bids, Bid{
				AdID:      fmt.Sprintf("ad%d", i/3),
				BidMicros: int64(raw[i])*37_000 + 1,
				PCTR:      float64(raw[i+1]) / 255,
				Quality:   float64(raw[i+2]) / 64,
			})
		}
		checkProperties(t, req)
	})
}

// FuzzAuctionExtremes feeds any int64 bid and reserve and any float64
// pCTR and quality (NaN, infinities, huge and tiny values): a request is
// valid only when every field is within its bound (checked apart from
// Validate), and a valid one keeps the properties with every number finite.
func FuzzAuctionExtremes(f *testing.F) {
	le := binary.LittleEndian
	seed := func(slots uint16, reserve int64, bids ...[3]uint64) {
		var raw []byte
		for _, b := range bids {
			raw = le.AppendUint64(raw, b[0])
			raw = le.AppendUint64(raw, b[1])
			raw = le.AppendUint64(raw, b[2])
		}
		f.Add(slots, reserve, raw)
	}
	seed(2, 0, [3]uint64{MaxMicros, math.Float64bits(1), math.Float64bits(1e6)}, [3]uint64{MaxMicros, math.Float64bits(1), math.Float64bits(1e6)})
	seed(1, MaxMicros, [3]uint64{MaxMicros + 1, math.Float64bits(0.5), 0})
	seed(3, -1, [3]uint64{1, math.Float64bits(math.NaN()), math.Float64bits(math.Inf(1))})
	seed(1, math.MaxInt64, [3]uint64{math.MaxUint64, math.Float64bits(5e-324), math.Float64bits(1e300)})
	f.Fuzz(func(t *testing.T, slots uint16, reserve int64, raw []byte) {
		req := Request{Slots: int(slots), ReserveMicros: reserve}
		valid := req.Slots >= 1 && req.Slots <= MaxSlots && reserve >= 0 && reserve <= MaxMicros
		for i := 0; i+24 <= len(raw) && i < 24*64; i += 24 {
			b := Bid{
				AdID:      fmt.Sprintf("ad%d", i/24),
				BidMicros: int64(le.Uint64(raw[i:])),
				PCTR:      math.Float64frombits(le.Uint64(raw[i+8:])),
				Quality:   math.Float64frombits(le.Uint64(raw[i+16:])),
			}
			valid = valid && b.BidMicros >= 1 && b.BidMicros <= MaxMicros && b.PCTR >= 0 && b.PCTR <= 1 && b.Quality >= 0 && b.Quality <= 1e6
			req.Bids = append(req.Bids, b)
		}
		if err := req.Validate(); (err == nil) != valid {
			t.Fatalf("Validate: %v, but the request is valid: %v (%+v)", err, valid, req)
		}
		checkProperties(t, req)
	})
}
