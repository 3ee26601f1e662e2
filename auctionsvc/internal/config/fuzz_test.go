package config

import (
	"math"
	"testing"

	"github.com/adrank/adrank/auctionsvc/auction"
)

// FuzzParse: no document panics, and an accepted one has a known type, a
// reserve within [0, auction.MaxMicros], and at most auction.MaxSlots
// finite position factors within (0, 1], non-increasing (checked apart from
// Parse).
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"type": "vcg", "reserve_micros": 10000, "position_factors": [1, 0.7, 0.5]}`))
	f.Add([]byte(`{"type": "first_price", "reserve_micros": 1000000000000}`))
	f.Add([]byte(`{"reserve_micros": 1000000000001}`))
	f.Add([]byte(`{"position_factors": [1e-320, 1e-321]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("feed", data)
		if err != nil {
			return
		}
		switch c.Type {
		case auction.GSP, auction.VCG, auction.FirstPrice:
		default:
			t.Fatalf("accepted type %q", c.Type)
		}
		if c.ReserveMicros < 0 || c.ReserveMicros > 1_000_000_000_000 || len(c.PositionFactors) > auction.MaxSlots {
			t.Fatalf("accepted reserve %d, %d factors", c.ReserveMicros, len(c.PositionFactors))
		}
		for i, x := range c.PositionFactors {
			if math.IsNaN(x) || x <= 0 || x > 1 || (i > 0 && x > c.PositionFactors[i-1]) {
				t.Fatalf("accepted factors %v", c.PositionFactors)
			}
		}
	})
}
