// Package auction allocates ad slots and prices them. It is plain Go with no
// service dependencies.
package auction

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
)

// Bid is one candidate in the auction.
type Bid struct {
	AdID      string
	BidMicros int64   // max cost per click
	PCTR      float64 // in [0, 1]
	Quality   float64 // multiplier; 0 means 1
}

// Allocation is one filled slot.
type Allocation struct {
	AdID          string
	Slot          int   // 1-based
	PriceMicros   int64 // cost per click
	ECPM          float64
	RunnerUpECPM  float64 // next eligible ad's eCPM; 0 if none
	ReserveMicros int64
}

// Request is one auction.
type Request struct {
	Slots         int
	ReserveMicros int64 // minimum cost per click
	Bids          []Bid
}

// Validate reports the first invalid field.
func (r Request) Validate() error {
	if r.Slots < 1 {
		return fmt.Errorf("slots: %d, want at least 1", r.Slots)
	}
	if r.ReserveMicros < 0 {
		return fmt.Errorf("reserve_micros: %d, want at least 0", r.ReserveMicros)
	}
	seen := make(map[string]bool, len(r.Bids))
	for i, b := range r.Bids {
		switch {
		case b.AdID == "":
			return fmt.Errorf("bids[%d].ad_id: empty", i)
		case seen[b.AdID]:
			return fmt.Errorf("bids[%d].ad_id: duplicate %q", i, b.AdID)
		case b.BidMicros <= 0:
			return fmt.Errorf("bids[%d].bid_micros: %d, want > 0", i, b.BidMicros)
		case !(b.PCTR >= 0 && b.PCTR <= 1):
			return fmt.Errorf("bids[%d].pctr: %v, want within [0, 1]", i, b.PCTR)
		case !(b.Quality >= 0) || math.IsInf(b.Quality, 0):
			return fmt.Errorf("bids[%d].quality: %v, want finite and >= 0", i, b.Quality)
		}
		seen[b.AdID] = true
	}
	return nil
}

// ErrInvalid wraps every validation error.
var ErrInvalid = errors.New("invalid auction request")

type ranked struct {
	Bid
	ecpm float64
}

// GSP runs a generalized second-price auction on eCPM = bid x pCTR x quality.
//
// Bids under the reserve, and bids with a zero eCPM, do not take part. The
// others are ordered by eCPM, ties broken by ad ID (ascending), and fill the
// slots in that order. The ad in slot k pays, per click, the least bid that
// would keep its eCPM at the next eligible ad's eCPM:
//
//	price = runner_up_ecpm / (pctr x quality)
//
// rounded up to a whole micro (so the price is never below what keeps the
// position), then clamped to [reserve, bid]. A lone bidder pays the reserve.
func GSP(req Request) ([]Allocation, error) {
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
	out := make([]Allocation, n)
	for k := range n {
		w := eligible[k]
		var runnerUp float64
		if k+1 < len(eligible) {
			runnerUp = eligible[k+1].ecpm
		}
		price := int64(math.Ceil(runnerUp/(w.PCTR*w.Quality) - 1e-6))
		price = max(price, req.ReserveMicros)
		price = min(price, w.BidMicros)
		out[k] = Allocation{
			AdID:          w.AdID,
			Slot:          k + 1,
			PriceMicros:   price,
			ECPM:          w.ecpm,
			RunnerUpECPM:  runnerUp,
			ReserveMicros: req.ReserveMicros,
		}
	}
	return out, nil
}
