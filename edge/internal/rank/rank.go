// Package rank is the edge client's ranking, compiled to WebAssembly: it
// scores cached candidates from on-device features with the server's model
// code, prices them with the server's auction rules, and names the
// impressions as the server does. It has no gRPC and no protobuf in it.
package rank

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/adrank/adrank/auctionsvc/auction"
	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/assign"
)

// Request is one ranking on the device.
type Request struct {
	Domain    string `json:"domain"`
	RequestID string `json:"request_id"`
	UserID    string `json:"user_id"`
	// User holds the user's features from the last sync; an absent one is
	// missing.
	User       map[string]float64 `json:"user"`
	Context    Context            `json:"context"`
	Candidates []Candidate        `json:"candidates"`
	Slots      int                `json:"slots"`
	// ReserveMicros is the caller's floor; the domain's own is Auction's.
	ReserveMicros int64   `json:"reserve_micros"`
	Auction       Auction `json:"auction"`
}

// Context is computed on the device.
type Context struct {
	TimestampMs int64  `json:"timestamp_ms"` // 0: unknown
	Device      string `json:"device"`       // mobile, desktop, tablet or ""
	Query       string `json:"query"`
}

// Candidate is one cached ad, with its features from the last sync.
type Candidate struct {
	AdID         string             `json:"ad_id"`
	AdvertiserID string             `json:"advertiser_id"`
	BidMicros    int64              `json:"bid_micros"`
	Quality      float64            `json:"quality"`
	Features     map[string]float64 `json:"features"`
}

// Auction is the domain's auction config (adrank/auction/<domain>).
type Auction struct {
	Type            string    `json:"type"`
	ReserveMicros   int64     `json:"reserve_micros"`
	PositionFactors []float64 `json:"position_factors"`
}

// Response is the ranking: every candidate's pCTR in request order, and
// the priced slots.
type Response struct {
	RequestID string    `json:"request_id"`
	Version   string    `json:"version"`
	Pctrs     []float64 `json:"pctrs"`
	Results   []Result  `json:"results"`
}

// Result is one filled slot.
type Result struct {
	AdID         string  `json:"ad_id"`
	Slot         int     `json:"slot"`
	Pctr         float64 `json:"pctr"`
	PriceMicros  int64   `json:"price_micros"`
	Ecpm         float64 `json:"ecpm"`
	ImpressionID string  `json:"impression_id"`
}

// Ranker ranks with one model version.
type Ranker struct {
	version string
	scorer  *model.Scorer
}

// Load parses a model file (and its feature spec, when the file has no
// names; nil otherwise).
func Load(version string, modelFile []byte, spec []string) (*Ranker, error) {
	m, err := model.ParseWithSpec(modelFile, spec)
	if err != nil {
		return nil, err
	}
	return &Ranker{version: version, scorer: model.NewScorer(m)}, nil
}

// Limits of a request, as the router's.
const (
	MaxCandidates = 1000
	MaxIDLength   = 256
)

// Rank scores and prices req's candidates.
func (r *Ranker) Rank(req Request) (Response, error) {
	if err := check(req); err != nil {
		return Response{}, err
	}
	c := world.Context{Device: req.Context.Device, Query: req.Context.Query}
	if req.Context.TimestampMs != 0 {
		c.Time = time.UnixMilli(req.Context.TimestampMs).UTC()
	}
	shared := world.ContextFeatures(c)
	for k, v := range req.User {
		shared[k] = v
	}
	own := make([]map[string]float64, len(req.Candidates))
	for i, cand := range req.Candidates {
		own[i] = cand.Features
	}
	pctrs := r.scorer.Score(shared, own)
	ar := auction.Request{
		Type: auction.Type(req.Auction.Type), Slots: req.Slots, ReserveMicros: max(req.Auction.ReserveMicros, req.ReserveMicros),
		PositionFactors: req.Auction.PositionFactors, Bids: make([]auction.Bid, len(req.Candidates)),
	}
	for i, cand := range req.Candidates {
		ar.Bids[i] = auction.Bid{AdID: cand.AdID, BidMicros: cand.BidMicros, PCTR: pctrs[i], Quality: cand.Quality}
	}
	allocs, err := auction.Run(ar)
	if err != nil {
		return Response{}, err
	}
	pctrOf := make(map[string]float64, len(pctrs))
	for i, cand := range req.Candidates {
		pctrOf[cand.AdID] = pctrs[i]
	}
	out := Response{RequestID: req.RequestID, Version: r.version, Pctrs: pctrs, Results: make([]Result, len(allocs))}
	for i, a := range allocs {
		out.Results[i] = Result{AdID: a.AdID, Slot: a.Slot, Pctr: pctrOf[a.AdID], PriceMicros: a.PriceMicros, Ecpm: a.ECPM,
			ImpressionID: assign.ImpressionID(req.Domain, req.UserID, req.RequestID, a.AdID, a.Slot)}
	}
	return out, nil
}

func check(req Request) error {
	switch {
	case req.Domain == "" || len(req.Domain) > MaxIDLength:
		return fmt.Errorf("domain: want 1 to %d characters", MaxIDLength)
	case req.RequestID == "" || len(req.RequestID) > MaxIDLength:
		return fmt.Errorf("request_id: want 1 to %d characters", MaxIDLength)
	case req.UserID == "" || len(req.UserID) > MaxIDLength:
		return fmt.Errorf("user_id: want 1 to %d characters", MaxIDLength)
	case len(req.Candidates) == 0 || len(req.Candidates) > MaxCandidates:
		return fmt.Errorf("candidates: want 1 to %d", MaxCandidates)
	case req.Slots < 1 || req.Slots > auction.MaxSlots:
		return fmt.Errorf("slots: want 1 to %d", auction.MaxSlots)
	}
	return nil
}

// Call is the JSON interface both WebAssembly builds export: a request in,
// a response or {"error": ...} out.
func (r *Ranker) Call(in []byte) []byte {
	var req Request
	if err := json.Unmarshal(in, &req); err != nil {
		return errJSON(fmt.Errorf("bad request JSON: %w", err))
	}
	resp, err := r.Rank(req)
	if err != nil {
		return errJSON(err)
	}
	b, err := json.Marshal(resp)
	if err != nil {
		return errJSON(err)
	}
	return b
}

// AssignJSON assigns user by a plan in JSON.
func AssignJSON(plan []byte, user string) []byte {
	var p assign.Plan
	if err := json.Unmarshal(plan, &p); err != nil {
		return errJSON(fmt.Errorf("bad plan JSON: %w", err))
	}
	if p.Production == "" {
		return errJSON(errors.New("plan: no production version"))
	}
	b, _ := json.Marshal(p.Assign(user))
	return b
}

func errJSON(err error) []byte {
	b, _ := json.Marshal(map[string]string{"error": err.Error()})
	return b
}
