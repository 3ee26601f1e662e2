package core

import (
	"context"
	"time"

	"github.com/adrank/adrank/routersvc/internal/lab"
)

// Request is one Rank call.
type Request struct {
	// RequestID identifies the request; empty: the one in the context (the
	// first edge's), else a new one.
	RequestID     string
	Domain        string
	UserID        string
	Context       PageContext
	Candidates    []Candidate
	Slots         int
	ReserveMicros int64
}

// PageContext describes the page view the ads are for.
type PageContext struct {
	Timestamp time.Time // zero: not given
	Device    Device
	Country   string
	Query     string
}

// Device is the kind of device a page is viewed on.
type Device int

// Devices.
const (
	DeviceUnspecified Device = iota
	DeviceMobile
	DeviceDesktop
	DeviceTablet
)

// String is the device's name as featuresvc knows it ("" when unspecified).
func (d Device) String() string {
	switch d {
	case DeviceMobile:
		return "mobile"
	case DeviceDesktop:
		return "desktop"
	case DeviceTablet:
		return "tablet"
	}
	return ""
}

// Candidate is one ad that may be shown.
type Candidate struct {
	AdID         string
	AdvertiserID string
	BidMicros    int64
	Quality      float64
}

// Response is one Rank call's answer.
type Response struct {
	RequestID    string
	Domain       string
	ModelVersion string
	AuctionType  string
	Results      []Result
	Assignment   lab.Assignment
	// Degraded is set when the candidates were ranked from default features.
	Degraded       bool
	DegradedReason string
	// Source says whether the answer was ranked for this call or ahead of
	// time (then Age is how long ago).
	Source Source
	Age    time.Duration
	Timing Timing
}

// Result is one shown ad.
type Result struct {
	AdID          string
	Slot          int
	Pctr          float64
	PriceMicros   int64
	ImpressionID  string
	Ecpm          float64
	RunnerUpEcpm  float64
	ReserveMicros int64
	// Version is the model version that ranked the ad (with interleaving,
	// its team's).
	Version string
	// plainID is ImpressionID unsigned: what the impression is stored
	// under.
	plainID string
}

// Timing says where a Rank call's time went: its downstream calls, hop
// included, and the whole call.
type Timing struct {
	Features, Ranker, Auction, Total time.Duration
}

// FeatureQuery asks for the features of one request's candidates.
type FeatureQuery struct {
	UserID  string
	AdIDs   []string
	Context PageContext
}

// Table is a feature table: row r, column c is Values[r*len(Names)+c].
type Table struct {
	Names  []string
	Values []float64
	Rows   int
}

// FeatureSet is what the rankers score: the user and page features shared
// by every candidate (one row), and one row per candidate, in query order.
type FeatureSet struct {
	Shared, Candidates Table
}

// AuctionRequest asks the auction to allocate and price slots.
type AuctionRequest struct {
	Domain        string
	Slots         int
	ReserveMicros int64
	Bids          []Bid
}

// Bid is one candidate in the auction.
type Bid struct {
	AdID         string
	AdvertiserID string
	BidMicros    int64
	Pctr         float64
	Quality      float64
}

// Auction is the auction's answer: the winners by slot.
type Auction struct {
	Type        string
	Allocations []Allocation
}

// Allocation is one slot's winner and its price.
type Allocation struct {
	AdID          string
	Slot          int
	PriceMicros   int64
	Ecpm          float64
	RunnerUpEcpm  float64
	ReserveMicros int64
}

// Features gives the features of a request's candidates.
type Features interface {
	Features(ctx context.Context, q FeatureQuery) (FeatureSet, error)
}

// Rankers score candidates with one model version of a domain.
type Rankers interface {
	Score(ctx context.Context, domain, version string, f FeatureSet) ([]float64, error)
}

// Auctioneer runs the auction.
type Auctioneer interface {
	Auction(ctx context.Context, r AuctionRequest) (Auction, error)
}

// Hedger is implemented by Rankers whose instances are balanced: Hedge
// marks a context so that calls made with it (a first call and its hedge)
// go to different instances.
type Hedger interface {
	Hedge(ctx context.Context) context.Context
}

// Downstream is what the core calls. Errors should be *Error (another error
// counts as KindInternal).
type Downstream struct {
	Features Features
	Rankers  Rankers
	Auction  Auctioneer
}
