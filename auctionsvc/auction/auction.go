// Package auction allocates ad slots and prices them. It is plain Go with no
// service dependencies.
//
// Allocation: candidates whose bid reaches the reserve take part; they are
// ordered by eCPM = bid x pCTR x quality (micros per impression, quality 1 when
// unset), ties broken by ad ID ascending, and fill the slots in that order.
// Slot k shows its ad to a share of the page's attention given by its position
// factor a_k (the relative click-through of the slot; a_1 >= a_2 >= ...).
//
// Prices are per click, in micros. Writing e_j for the eCPM of the j-th ranked
// ad (0 past the last one) and a_j = 0 past the last slot, the ad in slot k
// pays:
//
//   - GSP (default): the least bid that keeps its eCPM at the next ad's,
//     e_{k+1} / (pCTR_k x quality_k);
//   - VCG: its externality on the ads below it,
//     sum_{j=k..n} (a_j - a_{j+1}) e_{j+1}, divided by its expected clicks
//     a_k x pCTR_k x quality_k (n = number of filled slots);
//   - first price: its bid.
//
// Rounding: a price is rounded up to a whole micro, so that it never falls
// below what keeps the position; a fraction under 1e-6 micro is floating-point
// noise and rounds down. Then it is clamped to [reserve, bid]: never above the
// bid, never below the reserve, and a lone bidder pays the reserve (GSP, VCG).
package auction

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
)

// Type is an auction type.
type Type string

// Auction types.
const (
	GSP        Type = "gsp"
	VCG        Type = "vcg"
	FirstPrice Type = "first_price"
)

// DefaultDecay is the position factor ratio between consecutive slots when
// no factors are configured, and past the configured ones.
const DefaultDecay = 0.7

// Bid is one candidate in the auction.
type Bid struct {
	AdID      string
	BidMicros int64   // max cost per click
	PCTR      float64 // in [0, 1]
	Quality   float64 // multiplier; 0 means 1
}

// Allocation is one filled slot, with what explains its price.
type Allocation struct {
	AdID           string
	Slot           int   // 1-based
	PriceMicros    int64 // cost per click
	ECPM           float64
	RunnerUpECPM   float64 // the next-ranked eligible ad's eCPM; 0 if none
	ReserveMicros  int64
	PositionFactor float64
}

// Request is one auction.
type Request struct {
	Type            Type // empty means GSP
	Slots           int
	ReserveMicros   int64     // minimum cost per click
	PositionFactors []float64 // a_1, a_2, ...; missing ones decay by DefaultDecay
	Bids            []Bid
}

// ErrInvalid wraps every validation error.
var ErrInvalid = errors.New("invalid auction request")

// Bounds of a request: no sum over its bids or prices can overflow.
const (
	MaxSlots = 1000
	MaxBids  = 10_000
	// MaxMicros bounds a bid and a reserve (a million currency units).
	MaxMicros = 1_000_000_000_000
	// MaxAdID bounds an ad ID's length in bytes.
	MaxAdID = 256
)

// Validate reports the first invalid field.
func (r Request) Validate() error {
	switch r.Type {
	case "", GSP, VCG, FirstPrice:
	default:
		return fmt.Errorf("type: unknown auction type %q", r.Type)
	}
	if r.Slots < 1 || r.Slots > MaxSlots {
		return fmt.Errorf("slots: %d, want 1 to %d", r.Slots, MaxSlots)
	}
	if r.ReserveMicros < 0 || r.ReserveMicros > MaxMicros {
		return fmt.Errorf("reserve_micros: %d, want 0 to %d", r.ReserveMicros, int64(MaxMicros))
	}
	if err := CheckPositionFactors(r.PositionFactors); err != nil {
		return err
	}
	if len(r.Bids) > MaxBids {
		return fmt.Errorf("bids: %d, at most %d", len(r.Bids), MaxBids)
	}
	seen := make(map[string]bool, len(r.Bids))
	for i, b := range r.Bids {
		switch {
		case b.AdID == "":
			return fmt.Errorf("bids[%d].ad_id: empty", i)
		case len(b.AdID) > MaxAdID:
			return fmt.Errorf("bids[%d].ad_id: longer than %d bytes", i, MaxAdID)
		case seen[b.AdID]:
			return fmt.Errorf("bids[%d].ad_id: duplicate %q", i, b.AdID)
		case b.BidMicros <= 0 || b.BidMicros > MaxMicros:
			return fmt.Errorf("bids[%d].bid_micros: %d, want 1 to %d", i, b.BidMicros, int64(MaxMicros))
		case !(b.PCTR >= 0 && b.PCTR <= 1):
			return fmt.Errorf("bids[%d].pctr: %v, want within [0, 1]", i, b.PCTR)
		case !(b.Quality >= 0 && b.Quality <= 1e6):
			return fmt.Errorf("bids[%d].quality: %v, want within [0, 1e6]", i, b.Quality)
		}
		seen[b.AdID] = true
	}
	return nil
}

// CheckPositionFactors accepts factors in (0, 1], non-increasing.
func CheckPositionFactors(fs []float64) error {
	for i, f := range fs {
		if !(f > 0 && f <= 1) {
			return fmt.Errorf("position_factors[%d]: %v, want within (0, 1]", i, f)
		}
		if i > 0 && f > fs[i-1] {
			return fmt.Errorf("position_factors[%d]: %v is above the slot before it (%v)", i, f, fs[i-1])
		}
	}
	return nil
}

// PositionFactor returns a_k (k 1-based) for the configured factors: the
// configured value, or the last one decayed by DefaultDecay per slot beyond
// it (1, 0.7, 0.49, ... when none are configured).
func PositionFactor(fs []float64, k int) float64 {
	if k <= len(fs) {
		return fs[k-1]
	}
	if len(fs) == 0 {
		return math.Pow(DefaultDecay, float64(k-1))
	}
	return fs[len(fs)-1] * math.Pow(DefaultDecay, float64(k-len(fs)))
}

type ranked struct {
	Bid
	ecpm float64
}

// Run runs the auction.
func Run(req Request) ([]Allocation, error) {
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	eligible := make([]ranked, 0, len(req.Bids))
	for _, b := range req.Bids {
		if b.Quality == 0 {
			b.Quality = 1
		}
		e := float64(b.BidMicros) * b.PCTR * b.Quality
		if b.BidMicros < req.ReserveMicros || e <= 0 {
			continue
		}
		eligible = append(eligible, ranked{b, e})
	}
	slices.SortFunc(eligible, func(a, b ranked) int {
		if c := cmp.Compare(b.ecpm, a.ecpm); c != 0 {
			return c
		}
		return cmp.Compare(a.AdID, b.AdID)
	})
	n := min(req.Slots, len(eligible))
	ecpm := func(j int) float64 { // e_j, 1-based
		if j <= len(eligible) {
			return eligible[j-1].ecpm
		}
		return 0
	}
	alpha := func(j int) float64 { // a_j, 1-based
		if j <= req.Slots {
			return PositionFactor(req.PositionFactors, j)
		}
		return 0
	}
	out := make([]Allocation, n)
	for k := 1; k <= n; k++ {
		w := eligible[k-1]
		var price float64
		switch req.Type {
		case "", GSP:
			price = ecpm(k+1) / (w.PCTR * w.Quality)
		case VCG:
			var externality float64
			for j := k; j <= n; j++ {
				externality += (alpha(j) - alpha(j+1)) * ecpm(j+1)
			}
			price = externality / (alpha(k) * w.PCTR * w.Quality)
		case FirstPrice:
			price = float64(w.BidMicros)
		}
		p := min(max(roundUp(price), req.ReserveMicros), w.BidMicros)
		out[k-1] = Allocation{
			AdID:           w.AdID,
			Slot:           k,
			PriceMicros:    p,
			ECPM:           w.ecpm,
			RunnerUpECPM:   ecpm(k + 1),
			ReserveMicros:  req.ReserveMicros,
			PositionFactor: alpha(k),
		}
	}
	return out, nil
}

// roundUp rounds a price up to a whole micro; a fraction under 1e-6 micro is
// floating-point noise and rounds down.
func roundUp(x float64) int64 {
	if x <= 0 || math.IsNaN(x) {
		return 0
	}
	if x >= math.MaxInt64/2 {
		return math.MaxInt64 / 2
	}
	f := math.Floor(x)
	if x-f < 1e-6 {
		return int64(f)
	}
	return int64(f) + 1
}

// Revenue is the expected revenue per impression of an allocation, in
// micros: the sum over slots of price x position factor x pCTR.
func Revenue(allocs []Allocation, bids []Bid) float64 {
	pctr := make(map[string]float64, len(bids))
	for _, b := range bids {
		pctr[b.AdID] = b.PCTR
	}
	var r float64
	for _, a := range allocs {
		r += float64(a.PriceMicros) * a.PositionFactor * pctr[a.AdID]
	}
	return r
}
